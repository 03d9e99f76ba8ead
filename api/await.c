/* await.c - the subscriber thread, the table of watched chats, and await_final (see
 * await.h). */
#include "await.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "events.h"
#include "keys.h"
#include "log.h"
#include "rconn.h"
#include "record.h"
#include "server.h"
#include "uuid.h"
#include "worker.h"

#define AWAIT_BUCKETS 16384 /* power of two */

/* A chat somebody waits for. Everything but the condition variable is guarded by
 * the table's lock; requested, inflight and the dirty links are the subscriber
 * thread's view of Redis. */
struct await_entry {
    char trace[UUID_LEN + 1];
    struct await_entry *next;       /* bucket chain */
    struct await_entry *dirty_next; /* on the subscriber's to-do list */
    int dirty;
    int waiters;            /* watches of this chat */
    int requested;          /* the last command sent for it was SUBSCRIBE */
    int inflight;           /* SUBSCRIBE / UNSUBSCRIBE sent, not yet confirmed */
    int confirmed;          /* subscribed: every later PUBLISH reaches us */
    int final;              /* a final event was announced */
    unsigned long long seq; /* announcements received */
    pthread_cond_t cond;
};

struct await_watch {
    struct await *a;
    struct await_entry *e;
    unsigned long long gen; /* the subscriber's connection it was ready on */
    unsigned long long seq; /* the last announcement this watch saw */
};

struct await {
    struct server *srv; /* borrowed */
    pthread_mutex_t lock;
    struct await_entry *buckets[AWAIT_BUCKETS];
    struct await_entry *dirty; /* entries whose subscription must change */
    int connected;             /* the subscriber's connection is up */
    unsigned long long gen;    /* bumped whenever it drops */
    int stopping;
    atomic_int waiting; /* await_enter places taken */
    int wake_fd;        /* eventfd: the subscriber has work */
    pthread_t thread;
    int started;
};

/* ---- the table ----------------------------------------------------------------- */

static size_t await_hash(const char *trace)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = trace; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (size_t)(h & (AWAIT_BUCKETS - 1));
}

static struct await_entry *await_find(struct await *a, const char *trace)
{
    struct await_entry *e = a->buckets[await_hash(trace)];
    while (e != NULL && strcmp(e->trace, trace) != 0)
        e = e->next;
    return e;
}

static void await_unlink(struct await *a, struct await_entry *e)
{
    struct await_entry **pp = &a->buckets[await_hash(e->trace)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    pthread_cond_destroy(&e->cond);
    free(e);
}

/* Puts e on the subscriber's to-do list (under the lock). */
static void await_mark(struct await *a, struct await_entry *e)
{
    if (e->dirty)
        return;
    e->dirty = 1;
    e->dirty_next = a->dirty;
    a->dirty = e;
}

static void await_kick(struct await *a)
{
    uint64_t one = 1;
    if (write(a->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn(NULL, "cannot wake the subscriber thread: %s", strerror(errno));
}

/* An absolute CLOCK_MONOTONIC time for pthread_cond_timedwait. */
static struct timespec await_abs(long long deadline_ms)
{
    struct timespec ts = {deadline_ms / 1000, (deadline_ms % 1000) * 1000000L};
    return ts;
}

/* ---- the subscriber thread ------------------------------------------------------ */

/* Sends what the to-do list asks for (under the lock; c is only ever written by
 * the subscriber thread). Returns 0, or -1 if the connection failed. */
static int await_send_changes(struct await *a, redisContext *c)
{
    char channel[KEYS_MAX + UUID_LEN + 1];
    int sent = 0;
    while (a->dirty != NULL) {
        struct await_entry *e = a->dirty;
        a->dirty = e->dirty_next;
        e->dirty = 0;
        e->dirty_next = NULL;
        const char *verb = NULL;
        if (e->waiters > 0 && !e->requested) {
            verb = "SUBSCRIBE";
            e->requested = 1;
        } else if (e->waiters == 0 && e->requested) {
            verb = "UNSUBSCRIBE";
            e->requested = 0;
            e->confirmed = 0;
        } else if (e->waiters == 0 && e->inflight == 0) {
            await_unlink(a, e);
            continue;
        }
        if (verb == NULL)
            continue;
        keys_events(&a->srv->keys, e->trace, channel, sizeof(channel));
        const char *argv[2] = {verb, channel};
        if (redisAppendCommandArgv(c, 2, argv, NULL) != REDIS_OK)
            return -1;
        e->inflight++;
        sent = 1;
    }
    int done = !sent;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return -1;
    return 0;
}

/* One reply from the subscribed connection: a message, or the confirmation of a
 * (un)subscription. */
static void await_on_reply(struct await *a, const redisReply *r)
{
    size_t plen = strlen(a->srv->keys.events_prefix);
    if (r->type == REDIS_REPLY_ERROR) {
        /* e.g. an ACL without the channels: waits then end at their deadline */
        log_error(NULL, "subscriber: Redis refused a subscription: %s", r->str);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING || r->element[1]->len <= plen)
        return;
    const char *kind = r->element[0]->str, *trace = r->element[1]->str + plen;
    pthread_mutex_lock(&a->lock);
    struct await_entry *e = await_find(a, trace);
    if (e == NULL) {
        pthread_mutex_unlock(&a->lock);
        return;
    }
    if (strcmp(kind, "message") == 0) {
        e->seq++;
        if (r->element[2]->type == REDIS_REPLY_STRING && events_final(r->element[2]->str))
            e->final = 1;
        pthread_cond_broadcast(&e->cond);
    } else if (strcmp(kind, "subscribe") == 0 || strcmp(kind, "unsubscribe") == 0) {
        if (e->inflight > 0)
            e->inflight--;
        if (e->inflight == 0 && e->requested) {
            e->confirmed = 1;
            pthread_cond_broadcast(&e->cond);
        } else if (e->inflight == 0 && e->waiters == 0) {
            await_mark(a, e); /* freed by the next await_send_changes */
        }
    }
    pthread_mutex_unlock(&a->lock);
}

/* The connection is up: every watched chat is subscribed again. */
static void await_connected(struct await *a)
{
    pthread_mutex_lock(&a->lock);
    a->connected = 1;
    for (size_t i = 0; i < AWAIT_BUCKETS; i++)
        for (struct await_entry *e = a->buckets[i]; e != NULL; e = e->next)
            await_mark(a, e);
    pthread_mutex_unlock(&a->lock);
}

/* The connection is gone, and with it every subscription and whatever was
 * published meanwhile: wake every waiter to read again (AWAIT_LOST). */
static void await_disconnected(struct await *a)
{
    pthread_mutex_lock(&a->lock);
    a->connected = 0;
    a->gen++;
    a->dirty = NULL;
    for (size_t i = 0; i < AWAIT_BUCKETS; i++) {
        struct await_entry *e = a->buckets[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            e->dirty = 0;
            e->dirty_next = NULL;
            e->requested = e->inflight = e->confirmed = 0;
            if (e->waiters == 0)
                await_unlink(a, e);
            else
                pthread_cond_broadcast(&e->cond);
        }
    }
    pthread_mutex_unlock(&a->lock);
}

/* Waits for the wake-up eventfd (and, with c, for the connection) up to ms.
 * Returns poll's revents of c's descriptor (0 without c). */
static short await_poll(struct await *a, redisContext *c, int ms)
{
    struct pollfd p[2] = {{.fd = a->wake_fd, .events = POLLIN},
                          {.fd = c != NULL ? c->fd : -1, .events = POLLIN}};
    if (poll(p, 2, ms) <= 0)
        return 0;
    if (p[0].revents & POLLIN) {
        uint64_t n;
        if (read(a->wake_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
            log_warn(NULL, "subscriber wake-up read failed: %s", strerror(errno));
    }
    return p[1].revents;
}

int await_stopping(struct await *a)
{
    if (a == NULL)
        return 0;
    pthread_mutex_lock(&a->lock);
    int stopping = a->stopping;
    pthread_mutex_unlock(&a->lock);
    return stopping;
}

static void *await_run(void *arg)
{
    struct await *a = arg;
    redisContext *c = NULL;
    long long backoff = 0;
    char err[256], where[300];
    int down_logged = 0;

    rconn_url_describe(&a->srv->redis, where, sizeof(where));
    while (!await_stopping(a)) {
        if (c == NULL) {
            c = rconn_connect(&a->srv->redis, a->srv->redis_timeout_ms, err, sizeof(err));
            if (c == NULL) {
                if (!down_logged)
                    log_warn(NULL, "subscriber: Redis %s unavailable (%s); retrying",
                             where, err);
                down_logged = 1;
                backoff = rconn_backoff_ms(backoff);
                await_poll(a, NULL, (int)backoff);
                continue;
            }
            if (down_logged)
                log_info(NULL, "subscriber: connected to Redis %s again", where);
            down_logged = 0;
            backoff = 0;
            await_connected(a);
        }
        pthread_mutex_lock(&a->lock);
        int rc = await_send_changes(a, c);
        pthread_mutex_unlock(&a->lock);
        short ev = rc == 0 ? await_poll(a, c, 1000) : POLLERR;
        if (ev != 0 && rc == 0 && redisBufferRead(c) == REDIS_OK) {
            void *reply = NULL;
            while ((rc = redisGetReplyFromReader(c, &reply)) == REDIS_OK &&
                   reply != NULL) {
                await_on_reply(a, reply);
                freeReplyObject(reply);
                reply = NULL;
            }
        } else if (ev != 0) {
            rc = -1;
        }
        if (rc != 0) {
            log_warn(NULL,
                     "subscriber: lost its Redis connection (%s); waiting clients "
                     "read their chats again",
                     c->errstr[0] ? c->errstr : "closed");
            down_logged = 1;
            redisFree(c);
            c = NULL;
            await_disconnected(a);
        }
    }
    redisFree(c);
    return NULL;
}

/* ---- set-up --------------------------------------------------------------------- */

struct await *await_new(struct server *srv)
{
    struct await *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->srv = srv;
    a->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->wake_fd < 0) {
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->lock, NULL);
    atomic_init(&a->waiting, 0);
    return a;
}

int await_start(struct await *a, char *err, size_t errlen)
{
    int rc = pthread_create(&a->thread, NULL, await_run, a);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the subscriber thread: %s", strerror(rc));
        return -1;
    }
    a->started = 1;
    return 0;
}

void await_stop(struct await *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    a->stopping = 1;
    for (size_t i = 0; i < AWAIT_BUCKETS; i++)
        for (struct await_entry *e = a->buckets[i]; e != NULL; e = e->next)
            pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&a->lock);
    await_kick(a);
    if (a->started)
        pthread_join(a->thread, NULL);
    a->started = 0;
}

void await_free(struct await *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < AWAIT_BUCKETS; i++)
        while (a->buckets[i] != NULL)
            await_unlink(a, a->buckets[i]);
    pthread_mutex_destroy(&a->lock);
    close(a->wake_fd);
    free(a);
}

/* ---- waiting -------------------------------------------------------------------- */

int await_enter(struct await *a)
{
    if (a == NULL || await_stopping(a))
        return 0;
    if (atomic_fetch_add(&a->waiting, 1) < a->srv->wait_threads)
        return 1;
    atomic_fetch_sub(&a->waiting, 1);
    return 0;
}

void await_leave(struct await *a)
{
    if (a != NULL)
        atomic_fetch_sub(&a->waiting, 1);
}

int await_waiting(const struct await *a)
{
    return a != NULL ? atomic_load(&a->waiting) : 0;
}

struct await_watch *await_watch(struct await *a, const char *trace)
{
    struct await_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    pthread_mutex_lock(&a->lock);
    struct await_entry *e = await_find(a, trace);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL) {
            pthread_mutex_unlock(&a->lock);
            free(w);
            return NULL;
        }
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&e->cond, &attr);
        pthread_condattr_destroy(&attr);
        snprintf(e->trace, sizeof(e->trace), "%s", trace);
        size_t b = await_hash(e->trace);
        e->next = a->buckets[b];
        a->buckets[b] = e;
    }
    e->waiters++;
    int kick = !e->requested && a->connected;
    if (kick)
        await_mark(a, e);
    pthread_mutex_unlock(&a->lock);
    if (kick)
        await_kick(a);
    w->a = a;
    w->e = e;
    return w;
}

void await_unwatch(struct await_watch *w)
{
    if (w == NULL)
        return;
    struct await *a = w->a;
    pthread_mutex_lock(&a->lock);
    int kick = --w->e->waiters == 0 && a->connected;
    if (kick)
        await_mark(a, w->e);
    else if (w->e->waiters == 0 && !w->e->requested && w->e->inflight == 0)
        await_unlink(a, w->e); /* never subscribed (Redis away): nothing to undo */
    pthread_mutex_unlock(&a->lock);
    if (kick)
        await_kick(a);
    free(w);
}

int await_ready(struct await_watch *w, long long deadline_ms)
{
    struct await *a = w->a;
    long long down_until = clock_mono_ms() + a->srv->redis_timeout_ms;
    int rc;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        long long now = clock_mono_ms();
        if (a->stopping || now >= deadline_ms) {
            rc = 0;
            break;
        }
        if (w->e->confirmed) {
            w->gen = a->gen;
            w->seq = w->e->seq;
            rc = 1;
            break;
        }
        if (!a->connected && now >= down_until) {
            rc = -1;
            break;
        }
        long long until = deadline_ms < down_until ? deadline_ms : down_until;
        if (a->connected)
            until = deadline_ms;
        struct timespec ts = await_abs(until);
        pthread_cond_timedwait(&w->e->cond, &a->lock, &ts);
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

int await_next(struct await_watch *w, long long deadline_ms)
{
    struct await *a = w->a;
    int rc;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        if (a->stopping) {
            rc = AWAIT_TIMEOUT;
            break;
        }
        if (a->gen != w->gen || !w->e->confirmed) {
            rc = AWAIT_LOST;
            break;
        }
        if (w->e->seq != w->seq) {
            w->seq = w->e->seq;
            rc = AWAIT_NEWS;
            break;
        }
        if (clock_mono_ms() >= deadline_ms) {
            rc = AWAIT_TIMEOUT;
            break;
        }
        struct timespec ts = await_abs(deadline_ms);
        pthread_cond_timedwait(&w->e->cond, &a->lock, &ts);
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

int await_final_seen(const struct await_watch *w)
{
    pthread_mutex_lock(&w->a->lock);
    int final = w->e->final;
    pthread_mutex_unlock(&w->a->lock);
    return final;
}

/* ---- await_final ----------------------------------------------------------------- */

/* Reads the trace's status: 1 final (or no record), 0 not yet, -1 Redis failed.
 * Gives the connection back to the pool afterwards. */
static int await_check(struct worker *w, const char *trace)
{
    char key[KEYS_MAX + UUID_LEN + 1];
    keys_trace(&w->srv->keys, trace, key, sizeof(key));
    const char *argv[3] = {"HGET", key, REC_STATUS};
    redisReply *r = worker_command(w, trace, 3, argv);
    int rc = -1;
    if (r == NULL)
        rc = -1;
    else if (r->type == REDIS_REPLY_NIL)
        rc = 1;
    else if (r->type == REDIS_REPLY_STRING)
        rc = events_final(r->str);
    else
        log_warn(trace, "Redis refused HGET: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "not a string");
    freeReplyObject(r);
    worker_release(w);
    return rc;
}

int await_final(struct server *srv, struct worker *w, const char *trace,
                long long deadline_ms)
{
    struct await *a = srv->await;
    int rc = await_check(w, trace);
    if (rc != 0 || clock_mono_ms() >= deadline_ms || !await_enter(a))
        return rc;
    struct await_watch *watch = await_watch(a, trace);
    rc = 0;
    while (watch != NULL) {
        rc = await_ready(watch, deadline_ms);
        if (rc <= 0)
            break;
        rc = await_check(w, trace);
        if (rc != 0)
            break;
        int news;
        do
            news = await_next(watch, deadline_ms);
        while (news == AWAIT_NEWS && !await_final_seen(watch));
        if (news != AWAIT_LOST) {
            rc = news == AWAIT_NEWS;
            break;
        }
    }
    await_unwatch(watch);
    await_leave(a);
    return rc;
}
