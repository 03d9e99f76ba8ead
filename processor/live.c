/* live.c - see live.h. */
#include "live.h"

#include <stddef.h>
#include <stdlib.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "cmd.h"
#include "keys.h"
#include "log.h"
#include "processor.h"
#include "rlink.h"
#include "workers.h"

struct live {
    struct processor *p; /* borrowed: the owner */
    struct workers w;
    struct event *beat, *sweep;
    int failing; /* the last beat failed: logged once per run of failures */
};

static void live_on_beat(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct live *l = privdata;
    const redisReply *r = reply;
    if (r == NULL)
        return; /* the connection went: the next beat after it is back */
    if (r->type == REDIS_REPLY_ERROR) {
        if (!l->failing)
            log_warn(NULL, "worker heartbeat failed: %s", r->str);
        l->failing = 1;
        return;
    }
    l->failing = 0;
}

static void live_send(struct live *l, struct cmd *c, redisCallbackFn *fn)
{
    redisAsyncContext *ac = rlink_ctx(l->p->wr);
    if (ac != NULL && !c->overflow)
        redisAsyncCommandArgv(ac, fn, l, c->argc, c->argv, c->len);
    cmd_free(c);
}

static void live_beat(struct live *l)
{
    struct processor *p = l->p;
    struct cmd c;
    l->w.in_flight = (long long)(p->njobs - p->nfree);
    workers_beat_cmd(&l->w, &c);
    live_send(l, &c, live_on_beat);
}

static void live_on_beat_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    live_beat(arg);
}

static void live_on_swept(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    (void)privdata;
    workers_sweep_log(reply, KEYS_GROUP_PROCESSORS);
}

static void live_sweep_later(struct live *l)
{
    struct timeval tv = clock_timeval(
        workers_sweep_wait_ms(l->p->cfg->consumer_idle_ms, processor_random(l->p)));
    evtimer_add(l->sweep, &tv);
}

static void live_on_sweep_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct live *l = arg;
    struct processor *p = l->p;
    struct cmd c;
    workers_sweep_cmd(&p->keys, p->keys.requests, KEYS_GROUP_PROCESSORS,
                      p->cfg->consumer_idle_ms, &c);
    live_send(l, &c, live_on_swept);
    live_sweep_later(l);
}

struct live *live_new(struct processor *p)
{
    struct live *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->p = p;
    workers_init(&l->w, &p->keys, p->consumer, "processor", p->cfg->worker_ttl_ms);
    l->beat = event_new(p->base, -1, EV_PERSIST, live_on_beat_tick, l);
    l->sweep = evtimer_new(p->base, live_on_sweep_tick, l);
    struct timeval tv = clock_timeval(workers_beat_ms(&l->w));
    if (l->beat == NULL || l->sweep == NULL || event_add(l->beat, &tv) != 0) {
        live_free(l);
        return NULL;
    }
    if (p->cfg->consumer_idle_ms > 0)
        live_sweep_later(l);
    return l;
}

void live_free(struct live *l)
{
    if (l == NULL)
        return;
    if (l->beat)
        event_free(l->beat);
    if (l->sweep)
        event_free(l->sweep);
    free(l);
}

void live_on_write_up(struct live *l)
{
    live_beat(l);
}

void live_finished(struct live *l, int ok, const char *code, const char *message)
{
    if (ok) {
        l->w.done++;
        return;
    }
    l->w.failed++;
    workers_error(&l->w, code, message);
}

void live_leave(struct live *l)
{
    struct cmd c;
    event_del(l->beat);
    event_del(l->sweep);
    workers_leave_cmd(&l->w, &c);
    live_send(l, &c, NULL);
}
