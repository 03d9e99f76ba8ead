/* worker.c - a civetweb worker thread's Redis connection (see worker.h). */
#include "worker.h"

#include <poll.h>
#include <stdlib.h>

#include <hiredis/hiredis.h>

#include "log.h"
#include "metrics.h"
#include "rconn.h"
#include "server.h"

struct worker *worker_new(struct server *srv)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->srv = srv;
    return w;
}

void worker_free(struct worker *w)
{
    if (w == NULL)
        return;
    if (w->redis != NULL)
        redisFree(w->redis);
    free(w);
}

/* Logs a Redis failure at warn for the first thread that sees the outage and at
 * debug for the others, until some thread connects again. */
static void worker_log_down(struct worker *w, const char *trace, const char *what,
                            const char *why)
{
    char where[300];
    rconn_url_describe(&w->srv->redis, where, sizeof(where));
    metrics_inc(metrics_api_redis_errors);
    if (atomic_exchange(&w->srv->redis_down, 1) == 0)
        log_warn(trace,
                 "Redis %s unavailable (%s: %s); failing requests until it is back",
                 where, what, why);
    else
        log_debug(trace, "Redis still unavailable (%s: %s)", what, why);
}

struct redisContext *worker_redis(struct worker *w, const char *trace)
{
    if (w->redis != NULL) {
        w->reused = 1;
        return w->redis;
    }
    char err[256];
    w->reused = 0;
    w->redis = rconn_connect(&w->srv->redis, w->srv->redis_timeout_ms, err, sizeof(err));
    if (w->redis == NULL) {
        worker_log_down(w, trace, "connect", err);
        return NULL;
    }
    if (atomic_exchange(&w->srv->redis_down, 0) == 1) {
        log_info(trace, "Redis is reachable again");
        metrics_inc(metrics_redis_reconnects);
    }
    return w->redis;
}

int worker_redis_failed(struct worker *w, const char *trace, const char *what)
{
    int retry = 0;
    if (w->redis == NULL)
        return 0;
    /* An EOF on a connection that sat idle means the server closed it before this
     * command was sent; only a Redis dying right between executing and answering
     * could make that wrong, and then the retry writes the same trace again. */
    if (w->reused && w->redis->err == REDIS_ERR_EOF) {
        log_debug(trace, "Redis closed this thread's connection (%s); reconnecting",
                  what);
        retry = 1;
    } else {
        worker_log_down(w, trace, what,
                        w->redis->errstr[0] != '\0' ? w->redis->errstr
                                                    : "connection lost");
    }
    redisFree(w->redis);
    w->redis = NULL;
    return retry;
}

struct redisReply *worker_command(struct worker *w, const char *trace, int argc,
                                  const char **argv)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        redisContext *redis = worker_redis(w, trace);
        if (redis == NULL)
            return NULL;
        redisReply *reply = redisCommandArgv(redis, argc, argv, NULL);
        if (reply != NULL)
            return reply;
        if (!worker_redis_failed(w, trace, argv[0]))
            return NULL;
    }
    return NULL;
}

/* 1 if Redis closed this idle connection (it restarted, or dropped it as idle): with
 * no request outstanding, a readable socket can only hold an end of file or an
 * error. Seen before sending, that failure costs a reconnect, not a fate unknown. */
static int worker_idle_closed(const redisContext *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, 0) != 0;
}

enum worker_fate worker_command_once(struct worker *w, const char *trace, int argc,
                                     const char **argv, const size_t *argvlen,
                                     redisReply **reply)
{
    *reply = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        redisContext *redis = worker_redis(w, trace);
        if (redis != NULL && w->reused && worker_idle_closed(redis)) {
            log_debug(trace, "Redis closed this thread's idle connection; reconnecting");
            redisFree(w->redis);
            w->redis = NULL;
            redis = worker_redis(w, trace);
        }
        if (redis == NULL)
            return WORKER_NOT_SENT;
        if (redisAppendCommandArgv(redis, argc, argv, argvlen) != REDIS_OK) {
            worker_redis_failed(w, trace, argv[0]);
            return WORKER_NOT_SENT;
        }
        int done = 0;
        while (!done && redisBufferWrite(redis, &done) == REDIS_OK)
            ;
        if (!done) {
            /* Not (all) written: Redis never runs a command it did not get whole.
             * The one retry is for a connection that died while idle. */
            if (worker_redis_failed(w, trace, argv[0]))
                continue;
            return WORKER_NOT_SENT;
        }
        void *r = NULL;
        if (redisGetReply(redis, &r) != REDIS_OK) {
            worker_redis_failed(w, trace, argv[0]);
            return WORKER_UNKNOWN;
        }
        *reply = r;
        return WORKER_ANSWERED;
    }
    return WORKER_NOT_SENT;
}
