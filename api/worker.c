/* worker.c - a civetweb worker thread's Redis connection (see worker.h). */
#include "worker.h"

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>

#include <hiredis/hiredis.h>
#include <hiredis/sds.h>

#include "clock.h"
#include "cmd.h"
#include "log.h"
#include "metrics.h"
#include "rconn.h"
#include "server.h"

/* At most max connections are open at once, idle or in use: a thread that needs
 * one while all are taken waits for one to come back. Without that bound a burst
 * of waiting clients arriving together (each reads its chat before it sleeps)
 * opened thousands of connections at once, and Redis (maxclients 10 000) refused
 * or timed out most of them. */
struct worker_pool {
    pthread_mutex_t lock;
    pthread_cond_t freed; /* a connection came back, or one may be opened */
    int n, max, open;
    redisContext **idle; /* n of them, the most recently used last */
};

struct worker_pool *worker_pool_new(int max)
{
    struct worker_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->idle = calloc((size_t)(max > 0 ? max : 1), sizeof(*p->idle));
    if (p->idle == NULL) {
        free(p);
        return NULL;
    }
    p->max = max > 0 ? max : 1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->freed, &attr);
    pthread_condattr_destroy(&attr);
    return p;
}

void worker_pool_free(struct worker_pool *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->n; i++)
        redisFree(p->idle[i]);
    pthread_cond_destroy(&p->freed);
    pthread_mutex_destroy(&p->lock);
    free(p->idle);
    free(p);
}

/* 1 if Redis closed this idle connection (it restarted, or dropped it as idle): with
 * no request outstanding, a readable socket can only hold an end of file or an
 * error. Seen before sending, that failure costs a reconnect, not a fate unknown. */
static int worker_idle_closed(const redisContext *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, 0) != 0;
}

/* A connection that was counted as open is closed (or was never made). */
static void worker_pool_drop(struct worker_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->open--;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}

/* Takes an idle connection that Redis has not closed meanwhile into *c (closed
 * ones, after a Redis restart or CLIENT KILL, are dropped: a command sent on one
 * would end in a fate unknown). Returns 1 with *c; 0 when the caller may open a new
 * one (already counted: worker_pool_drop if that fails); -1 when every connection
 * stayed in use for timeout_ms. */
static int worker_pool_take(struct worker_pool *p, long long timeout_ms, redisContext **c)
{
    struct timespec until = clock_timespec(clock_mono_ms() + timeout_ms);
    int rc = -1;
    *c = NULL;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->n > 0) {
            *c = p->idle[--p->n];
            pthread_mutex_unlock(&p->lock);
            if (!worker_idle_closed(*c))
                return 1;
            redisFree(*c);
            *c = NULL;
            pthread_mutex_lock(&p->lock);
            p->open--;
            continue;
        }
        if (p->open < p->max) {
            p->open++;
            rc = 0;
            break;
        }
        if (pthread_cond_timedwait(&p->freed, &p->lock, &until) != 0)
            break;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* Keeps c (steals it) for the next request. */
static void worker_pool_put(struct worker_pool *p, redisContext *c)
{
    pthread_mutex_lock(&p->lock);
    p->idle[p->n++] = c;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}

/* Closes the thread's connection for good. */
static void worker_close(struct worker *w)
{
    redisFree(w->redis);
    w->redis = NULL;
    worker_pool_drop(w->srv->pool);
}

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
        worker_close(w);
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
    long long patience = w->patience_ms > 0 ? w->patience_ms : w->srv->redis_timeout_ms;
    int got = worker_pool_take(w->srv->pool, patience, &w->redis);
    if (got == 1) {
        w->reused = 1;
        return w->redis;
    }
    if (got < 0) {
        log_warn(trace, "all %d Redis connections stayed busy for %lld ms",
                 w->srv->threads, patience);
        return NULL;
    }
    char err[256];
    w->reused = 0;
    w->redis = rconn_connect(&w->srv->redis, w->srv->redis_timeout_ms, err, sizeof(err));
    if (w->redis == NULL) {
        worker_pool_drop(w->srv->pool);
        worker_log_down(w, trace, "connect", err);
        return NULL;
    }
    if (atomic_exchange(&w->srv->redis_down, 0) == 1) {
        log_info(trace, "Redis is reachable again");
        metrics_inc(metrics_redis_reconnects);
    }
    return w->redis;
}

void worker_release(struct worker *w)
{
    if (w == NULL || w->redis == NULL)
        return;
    worker_pool_put(w->srv->pool, w->redis);
    w->redis = NULL;
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
    worker_close(w);
    return retry;
}

/* hiredis keeps its reader's buffer, grown to the largest reply read, until the
 * connection's next read, and only then frees it: after a GET of a large answer
 * every worker thread would sit on megabytes while idle. Do now what hiredis does
 * then. */
static void worker_reader_shrink(redisContext *c)
{
    redisReader *r = c->reader;
    if (r == NULL || r->buf == NULL || r->len != 0 || sdsavail(r->buf) <= r->maxbuf)
        return;
    sds empty = sdsempty();
    if (empty == NULL)
        return;
    sdsfree(r->buf);
    r->buf = empty;
    r->pos = 0;
}

/* Puts the command in the connection's output buffer (cmd_resp: formatted here,
 * not by hiredis); REDIS_OK or REDIS_ERR (out of memory). */
static int worker_append(redisContext *redis, const char *trace, int argc,
                         const char **argv, const size_t *argvlen)
{
    size_t len = 0;
    char *buf = cmd_resp(argc, argv, argvlen, &len);
    if (buf == NULL) {
        log_error(trace, "out of memory formatting a Redis command");
        return REDIS_ERR;
    }
    int rc = redisAppendFormattedCommand(redis, buf, len);
    free(buf);
    return rc;
}

struct redisReply *worker_command(struct worker *w, const char *trace, int argc,
                                  const char **argv)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        redisContext *redis = worker_redis(w, trace);
        if (redis == NULL)
            return NULL;
        if (worker_append(redis, trace, argc, argv, NULL) != REDIS_OK)
            return NULL;
        void *reply = NULL;
        if (redisGetReply(redis, &reply) == REDIS_OK && reply != NULL) {
            worker_reader_shrink(redis);
            return reply;
        }
        if (!worker_redis_failed(w, trace, argv[0]))
            return NULL;
    }
    return NULL;
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
            worker_close(w);
            redis = worker_redis(w, trace);
        }
        if (redis == NULL)
            return WORKER_NOT_SENT;
        if (worker_append(redis, trace, argc, argv, argvlen) != REDIS_OK) {
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
        worker_reader_shrink(redis);
        *reply = r;
        return WORKER_ANSWERED;
    }
    return WORKER_NOT_SENT;
}
