/* rlink.c - a self-healing async Redis connection (see rlink.h). */
#include "rlink.h"

#include <stdlib.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "rconn.h"

/* hiredis 0.14 has no connect timeout on async contexts: a host that drops SYNs
 * would leave the link connecting for minutes. */
#define RLINK_CONNECT_TIMEOUT_MS 5000

struct rlink {
    struct event_base *base;     /* borrowed */
    const char *name;            /* borrowed */
    const struct rconn_url *url; /* borrowed */
    struct rlink_handlers h;
    redisAsyncContext *ac; /* NULL while down */
    int connected;         /* ac has completed its TCP connect */
    int closing;           /* rlink_close: no more reconnects */
    int in_outage;         /* an outage was logged; log the recovery */
    long long backoff_ms;
    long long max_backoff_ms;
    struct event *retry; /* the reconnect timer */
};

static void rlink_connect(struct rlink *l);

static void rlink_schedule(struct rlink *l, const char *why)
{
    if (l->closing)
        return;
    if (!l->in_outage) {
        log_warn(NULL, "Redis %s connection to %s:%d is down (%s); reconnecting", l->name,
                 l->url->host, l->url->port, why);
        l->in_outage = 1;
    }
    l->backoff_ms = rconn_backoff_ms(l->backoff_ms);
    if (l->backoff_ms > l->max_backoff_ms)
        l->backoff_ms = l->max_backoff_ms;
    struct timeval tv = clock_timeval(l->backoff_ms);
    evtimer_add(l->retry, &tv);
}

static void rlink_on_connect(const redisAsyncContext *ac, int status)
{
    struct rlink *l = ac->data;
    if (l == NULL)
        return;
    evtimer_del(l->retry);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns, without a disconnect
         * callback: the link is down from here. */
        l->ac = NULL;
        l->connected = 0;
        rlink_schedule(l, ac->errstr);
        if (l->h.down)
            l->h.down(l, l->h.arg);
        return;
    }
    l->connected = 1;
    l->backoff_ms = 0;
    /* A peer that vanished without a FIN (host down, cable pulled) is noticed by
     * TCP keepalive; hiredis 0.14 has no command timeout on async contexts. */
    redisEnableKeepAlive((redisContext *)&ac->c);
    if (l->in_outage) {
        log_info(NULL, "Redis %s connection to %s:%d is back", l->name, l->url->host,
                 l->url->port);
        metrics_inc(metrics_redis_reconnects);
        l->in_outage = 0;
    }
    if (l->h.up)
        l->h.up(l, l->h.arg);
}

static void rlink_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rlink *l = ac->data;
    if (l == NULL)
        return;
    l->ac = NULL;
    l->connected = 0;
    if (!l->closing)
        rlink_schedule(l, status == REDIS_OK ? "closed" : ac->errstr);
    if (l->h.down)
        l->h.down(l, l->h.arg);
}

static void rlink_connect(struct rlink *l)
{
    redisAsyncContext *ac = redisAsyncConnect(l->url->host, l->url->port);
    if (ac == NULL) {
        rlink_schedule(l, "out of memory");
        return;
    }
    if (ac->err) {
        rlink_schedule(l, ac->errstr);
        redisAsyncFree(ac);
        return;
    }
    ac->data = l;
    if (redisLibeventAttach(ac, l->base) != REDIS_OK ||
        redisAsyncSetConnectCallback(ac, rlink_on_connect) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(ac, rlink_on_disconnect) != REDIS_OK ||
        rconn_async_prepare(ac, l->url) != 0) {
        rlink_schedule(l, "cannot set up the connection");
        ac->data = NULL;
        redisAsyncFree(ac);
        return;
    }
    l->ac = ac;
    struct timeval tv = clock_timeval(RLINK_CONNECT_TIMEOUT_MS);
    evtimer_add(l->retry, &tv);
}

/* Drops a context that never connected; hiredis frees such a context without
 * calling any callback. */
static void rlink_abandon(struct rlink *l)
{
    redisAsyncContext *ac = l->ac;
    l->ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

static void rlink_on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rlink *l = arg;
    if (l->closing)
        return;
    if (l->ac == NULL) {
        rlink_connect(l);
        return;
    }
    if (!l->connected) {
        /* The connect timed out. */
        rlink_abandon(l);
        rlink_schedule(l, "connect timed out");
        if (l->h.down)
            l->h.down(l, l->h.arg);
    }
}

struct rlink *rlink_new(struct event_base *base, const char *name,
                        const struct rconn_url *url, long long max_backoff_ms,
                        const struct rlink_handlers *h)
{
    struct rlink *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->base = base;
    l->name = name;
    l->url = url;
    l->max_backoff_ms = max_backoff_ms > 0 ? max_backoff_ms : RCONN_BACKOFF_MAX_MS;
    l->h = *h;
    l->retry = evtimer_new(base, rlink_on_retry, l);
    if (l->retry == NULL) {
        free(l);
        return NULL;
    }
    rlink_connect(l);
    return l;
}

redisAsyncContext *rlink_ctx(struct rlink *l)
{
    if (l->ac == NULL || !l->connected || l->closing)
        return NULL;
    /* While hiredis tears a context down it hands NULL replies to callbacks,
     * which may try to send more: such a context no longer takes commands. */
    if (l->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING))
        return NULL;
    return l->ac;
}

void rlink_close(struct rlink *l)
{
    if (l->closing)
        return;
    l->closing = 1;
    evtimer_del(l->retry);
    if (l->ac == NULL) {
        if (l->h.down)
            l->h.down(l, l->h.arg);
        return;
    }
    if (!l->connected) {
        /* Still connecting: there is nothing worth waiting for. */
        rlink_abandon(l);
        if (l->h.down)
            l->h.down(l, l->h.arg);
        return;
    }
    redisAsyncDisconnect(l->ac);
}

int rlink_closed(const struct rlink *l)
{
    return l->closing && l->ac == NULL;
}

void rlink_free(struct rlink *l)
{
    if (l == NULL)
        return;
    l->closing = 1;
    /* No handler may run on a half-freed owner. */
    l->h.up = l->h.down = NULL;
    if (l->ac) {
        redisAsyncContext *ac = l->ac;
        /* A context that never connected gets no disconnect callback to clear
         * l->ac, so clear it here either way. */
        l->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    event_free(l->retry);
    free(l);
}
