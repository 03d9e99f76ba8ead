/* rconn.h - Redis URLs and connections (blocking and async) made from them. */
#ifndef CHATQ_RCONN_H
#define CHATQ_RCONN_H

#include <stddef.h>

struct redisContext;
struct redisAsyncContext;

struct rconn_url {
    char host[256];
    int port;
    char user[128];
    char pass[256]; /* secret: never logged */
    int db;
};

/* Parses redis://[[user]:pass@]host[:port][/db]; returns 0, or -1 with the
 * reason in err (which never contains the password). */
int rconn_url_parse(const char *url, struct rconn_url *out, char *err, size_t errlen);

/* host:port/db, for logs. */
void rconn_url_describe(const struct rconn_url *u, char *out, size_t outlen);

/* Connects, authenticates and selects the db. Commands time out after
 * timeout_ms (0: never, for a connection that blocks on XREADGROUP). Returns a
 * new context (caller frees with redisFree), or NULL with the reason in err. */
struct redisContext *rconn_connect(const struct rconn_url *u, int timeout_ms, char *err,
                                   size_t errlen);

/* Queues AUTH and SELECT, as the URL asks, ahead of anything else sent on a
 * freshly connected async context. Their replies are checked and logged; a
 * failure disconnects. Returns 0, or -1 if they could not be queued. */
int rconn_async_prepare(struct redisAsyncContext *ac, const struct rconn_url *u);

/* The wait before the next attempt to reach Redis: 100 ms after the first
 * failure (prev <= 0), then doubling up to 5 s. Every reconnect loop uses it, so
 * they all back off alike. */
#define RCONN_BACKOFF_MIN_MS 100
#define RCONN_BACKOFF_MAX_MS 5000
long long rconn_backoff_ms(long long prev);

/* 1 if the reply is NULL (connection lost) or a Redis error. */
struct redisReply;
int rconn_reply_failed(const struct redisReply *r);

#endif
