/* worker.c - a civetweb worker thread's Redis connection (see worker.h). */
#include "worker.h"

#include <stdlib.h>

#include <hiredis/hiredis.h>

#include "log.h"
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
    if (atomic_exchange(&w->srv->redis_down, 1) == 0)
        log_warn(trace, "Redis %s unavailable (%s: %s); answering 503 until it is back",
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
    if (atomic_exchange(&w->srv->redis_down, 0) == 1)
        log_info(trace, "Redis is reachable again");
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
