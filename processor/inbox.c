/* inbox.c - reading, claiming, heartbeats and hand-back on the requests stream
 * (see inbox.h).
 *
 * Recovery uses XPENDING + XCLAIM rather than XAUTOCLAIM because XAUTOCLAIM does
 * not return the delivery counts, and the delivery count is how an entry that
 * kills every processor that takes it (a poison entry) is recognised and
 * dead-lettered instead of being run again forever. XCLAIM with a min-idle-time
 * is atomic, so two processors that both saw an entry in XPENDING cannot both
 * get it. */
#include "inbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "keys.h"
#include "log.h"
#include "processor.h"
#include "rlink.h"
#include "stream.h"

/* Wait after a failed read before the next one, so an error cannot spin. */
#define INBOX_ERROR_PAUSE_MS 1000

/* An XCLAIM in flight: the ids sent and their delivery counts before it. */
struct inbox_claim {
    struct processor *p;
    size_t n;
    char (*ids)[JOB_ID_MAX];
    long long *deliveries;
};

/* The argc of a fixed command written as an array literal. */
#define INBOX_ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A command with a variable number of ids: fixed words, the ids, then tail
 * words. Borrowed strings; freed with inbox_argv_free after sending. */
struct inbox_argv {
    const char **argv;
    size_t *lens;
    int argc;
};

static int inbox_argv_init(struct inbox_argv *a, size_t cap)
{
    a->argc = 0;
    a->argv = malloc(cap * sizeof(*a->argv));
    a->lens = malloc(cap * sizeof(*a->lens));
    if (a->argv == NULL || a->lens == NULL) {
        free(a->argv);
        free(a->lens);
        a->argv = NULL; /* callers free an argv they see set */
        a->lens = NULL;
        return -1;
    }
    return 0;
}

static void inbox_argv_add(struct inbox_argv *a, const char *s)
{
    a->argv[a->argc] = s;
    a->lens[a->argc] = strlen(s);
    a->argc++;
}

static void inbox_argv_free(struct inbox_argv *a)
{
    free(a->argv);
    free(a->lens);
}

static void inbox_ms(char *buf, size_t len, long long ms)
{
    snprintf(buf, len, "%lld", ms);
}

/* ---- group and connection identity --------------------------------------------- */

static void inbox_on_group(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    (void)privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
        log_warn(NULL, "XGROUP CREATE failed: %s", r->str);
}

static void inbox_group_ensure(struct processor *p, redisAsyncContext *ac)
{
    const char *argv[] = {"XGROUP", "CREATE",  p->keys.requests, KEYS_GROUP_PROCESSORS,
                          "0",      "MKSTREAM"};
    redisAsyncCommandArgv(ac, inbox_on_group, NULL, INBOX_ARGC(argv), argv, NULL);
}

static void inbox_on_client_id(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct processor *p = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_INTEGER)
        p->read_client = r->integer;
}

void inbox_on_read_up(struct processor *p)
{
    redisAsyncContext *ac = rlink_ctx(p->rd);
    if (ac == NULL)
        return;
    p->read_client = -1;
    /* Redis may have come back empty (no persistence): the group would be gone and
     * every XREADGROUP would fail with NOGROUP. Sent ahead of the first read on the
     * same connection, so it is in place before that read. */
    inbox_group_ensure(p, ac);
    /* The id lets the write connection CLIENT UNBLOCK the read at shutdown. */
    redisAsyncCommand(ac, inbox_on_client_id, p, "CLIENT ID");
    processor_pump(p);
}

void inbox_on_read_down(struct processor *p)
{
    /* Entries the lost reply carried are pending on this consumer; the claim loop
     * takes them back once they are CLAIM_IDLE_MS idle. */
    p->read_busy = 0;
    p->read_reserved = 0;
    p->read_client = -1;
    processor_pump(p);
}

/* ---- reading new entries ------------------------------------------------------- */

static void inbox_on_read(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct processor *p = privdata;
    redisReply *r = reply;

    p->read_busy = 0;
    p->read_reserved = 0;
    if (r == NULL)
        return; /* connection lost: inbox_on_read_down follows */

    if (r->type == REDIS_REPLY_ERROR) {
        log_warn(NULL, "XREADGROUP failed: %s; trying again in %d ms", r->str,
                 INBOX_ERROR_PAUSE_MS);
        if (strncmp(r->str, "NOGROUP", 7) == 0)
            inbox_group_ensure(p, ac);
        p->read_paused = 1;
        struct timeval tv = {.tv_sec = INBOX_ERROR_PAUSE_MS / 1000,
                             .tv_usec = (INBOX_ERROR_PAUSE_MS % 1000) * 1000};
        evtimer_add(p->read_retry, &tv);
        return;
    }

    const redisReply *entries = stream_read_entries(r);
    size_t n = entries ? entries->elements : 0;
    const char **back = NULL;
    size_t nback = 0;
    if (n > 0 && p->stopping)
        back = malloc(n * sizeof(*back));

    for (size_t i = 0; i < n; i++) {
        struct stream_entry e;
        if (stream_entry_at(entries, i, &e) != 0)
            continue;
        if (p->stopping) {
            /* The read was already on its way when the shutdown began. */
            if (back)
                back[nback++] = e.id;
            continue;
        }
        processor_accept(p, e.id, e.fields, 1);
    }
    if (nback > 0)
        inbox_hand_back(p, back, nback);
    else if (p->stopping && n > 0)
        log_warn(NULL, "%zu entries read during shutdown stay pending until reclaimed",
                 n);
    free(back);
    processor_pump(p);
}

static void inbox_read(struct processor *p, size_t free_slots)
{
    redisAsyncContext *ac = rlink_ctx(p->rd);
    if (ac == NULL)
        return;
    size_t count = free_slots < INBOX_READ_MAX ? free_slots : INBOX_READ_MAX;
    char scount[32], sblock[32];
    snprintf(scount, sizeof(scount), "%zu", count);
    snprintf(sblock, sizeof(sblock), "%d", INBOX_BLOCK_MS);
    const char *argv[] = {"XREADGROUP",     "GROUP", KEYS_GROUP_PROCESSORS,
                          p->consumer,      "COUNT", scount,
                          "BLOCK",          sblock,  "STREAMS",
                          p->keys.requests, ">"};
    if (redisAsyncCommandArgv(ac, inbox_on_read, p, INBOX_ARGC(argv), argv, NULL) != REDIS_OK)
        return;
    p->read_busy = 1;
    p->read_reserved = count;
}

static void inbox_on_read_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct processor *p = arg;
    p->read_paused = 0;
    processor_pump(p);
}

/* ---- taking over abandoned entries --------------------------------------------- */

static void inbox_claim_free(struct inbox_claim *c)
{
    if (c == NULL)
        return;
    free(c->ids);
    free(c->deliveries);
    free(c);
}

/* Deliveries before the XCLAIM of id, searching from *hint: XCLAIM answers in the
 * order of the ids it was given, so the search is usually one step. */
static long long inbox_claim_deliveries(const struct inbox_claim *c, const char *id,
                                        size_t *hint)
{
    for (size_t k = 0; k < c->n; k++) {
        size_t i = (*hint + k) % c->n;
        if (strcmp(c->ids[i], id) == 0) {
            *hint = i + 1;
            return c->deliveries[i];
        }
    }
    return 0;
}

static void inbox_on_claimed(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct inbox_claim *c = privdata;
    struct processor *p = c->p;
    redisReply *r = reply;

    p->claim_busy = 0;
    p->claim_reserved = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_warn(NULL, "XCLAIM failed: %s", r->str);
        goto out;
    }

    size_t hint = 0, taken = 0, nback = 0;
    /* Claimed while a shutdown began: hand them straight back, as a read would. */
    const char **back = p->stopping ? malloc(r->elements * sizeof(*back) + 1) : NULL;
    for (size_t i = 0; i < r->elements; i++) {
        struct stream_entry e;
        if (stream_entry_at(r, i, &e) != 0)
            continue;
        if (e.fields == NULL) {
            /* Deleted from the stream meanwhile (Redis before 7 still returns it):
             * nothing left to do but to stop it being pending. */
            const char *argv[] = {"XACK", p->keys.requests, KEYS_GROUP_PROCESSORS, e.id};
            redisAsyncCommandArgv(ac, NULL, NULL, INBOX_ARGC(argv), argv, NULL);
            continue;
        }
        if (p->stopping) {
            if (back)
                back[nback++] = e.id;
            continue;
        }
        long long before = inbox_claim_deliveries(c, e.id, &hint);
        processor_accept(p, e.id, e.fields, before + 1);
        taken++;
    }
    if (nback > 0)
        inbox_hand_back(p, back, nback);
    free(back);
    if (taken > 0)
        log_info(NULL, "took over %zu entries left idle for %lld ms or more", taken,
                 p->cfg->claim_idle_ms);
out:
    inbox_claim_free(c);
    processor_pump(p);
}

static void inbox_on_pending(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct processor *p = privdata;
    redisReply *r = reply;
    struct inbox_claim *c = NULL;
    struct inbox_argv a = {0};

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOGROUP", 7) != 0)
            log_warn(NULL, "XPENDING failed: %s", r->str);
        goto out;
    }
    if (p->stopping)
        goto out; /* taking more work now would only mean handing it back */

    c = calloc(1, sizeof(*c));
    if (c == NULL || r->elements == 0)
        goto out;
    c->p = p;
    c->ids = malloc(r->elements * sizeof(*c->ids));
    c->deliveries = malloc(r->elements * sizeof(*c->deliveries));
    if (c->ids == NULL || c->deliveries == NULL)
        goto out;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 ||
            e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[1]->type != REDIS_REPLY_STRING ||
            e->element[3]->type != REDIS_REPLY_INTEGER ||
            e->element[0]->len >= JOB_ID_MAX)
            continue;
        /* Our own entry can look idle only if heartbeats failed (Redis was away);
         * the job holding it is still alive. */
        if (strcmp(e->element[1]->str, p->consumer) == 0 &&
            processor_holds(p, e->element[0]->str))
            continue;
        memcpy(c->ids[c->n], e->element[0]->str, e->element[0]->len + 1);
        c->deliveries[c->n] = e->element[3]->integer;
        c->n++;
    }
    if (c->n == 0)
        goto out;

    char idle[32];
    inbox_ms(idle, sizeof(idle), p->cfg->claim_idle_ms);
    if (inbox_argv_init(&a, 5 + c->n) != 0)
        goto out;
    inbox_argv_add(&a, "XCLAIM");
    inbox_argv_add(&a, p->keys.requests);
    inbox_argv_add(&a, KEYS_GROUP_PROCESSORS);
    inbox_argv_add(&a, p->consumer);
    inbox_argv_add(&a, idle);
    for (size_t i = 0; i < c->n; i++)
        inbox_argv_add(&a, c->ids[i]);
    if (redisAsyncCommandArgv(ac, inbox_on_claimed, c, a.argc, a.argv, a.lens) !=
        REDIS_OK)
        goto out;
    /* Still claiming: the slots stay promised until XCLAIM answers. */
    p->claim_reserved = c->n;
    c = NULL;
    inbox_argv_free(&a);
    return;

out:
    if (a.argv)
        inbox_argv_free(&a);
    inbox_claim_free(c);
    p->claim_busy = 0;
    p->claim_reserved = 0;
    processor_pump(p);
}

static void inbox_claim(struct processor *p, size_t free_slots)
{
    redisAsyncContext *ac = rlink_ctx(p->wr);
    if (ac == NULL)
        return;
    size_t count = free_slots < INBOX_CLAIM_MAX ? free_slots : INBOX_CLAIM_MAX;
    char idle[32], scount[32];
    inbox_ms(idle, sizeof(idle), p->cfg->claim_idle_ms);
    snprintf(scount, sizeof(scount), "%zu", count);
    const char *argv[] = {
        "XPENDING", p->keys.requests, KEYS_GROUP_PROCESSORS, "IDLE", idle, "-", "+",
        scount};
    if (redisAsyncCommandArgv(ac, inbox_on_pending, p, INBOX_ARGC(argv), argv, NULL) != REDIS_OK)
        return;
    p->claim_due = 0;
    p->claim_busy = 1;
    p->claim_reserved = count;
}

static void inbox_on_claim_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct processor *p = arg;
    p->claim_due = 1;
    processor_pump(p);
}

void inbox_pump(struct processor *p)
{
    if (p->stopping)
        return;
    /* Abandoned entries are older than anything new, so a due claim goes first; a
     * read holding every free slot returns within INBOX_BLOCK_MS and lets it in. */
    size_t free_slots = processor_free_slots(p);
    if (p->claim_due && !p->claim_busy && free_slots > 0)
        inbox_claim(p, free_slots);
    free_slots = processor_free_slots(p);
    if (!p->read_busy && !p->read_paused && free_slots > 0)
        inbox_read(p, free_slots);
}

/* ---- keeping and handing back own entries -------------------------------------- */

/* XCLAIM <requests> processors <me> 0 <ids...> <tail...>, in chunks. */
static void inbox_xclaim_ids(struct processor *p, const char *const *ids, size_t n,
                             const char *const *tail, int ntail)
{
    redisAsyncContext *ac = rlink_ctx(p->wr);
    if (ac == NULL)
        return;
    for (size_t at = 0; at < n; at += INBOX_CLAIM_MAX) {
        size_t chunk = n - at < INBOX_CLAIM_MAX ? n - at : INBOX_CLAIM_MAX;
        struct inbox_argv a;
        if (inbox_argv_init(&a, 5 + chunk + (size_t)ntail) != 0)
            return;
        inbox_argv_add(&a, "XCLAIM");
        inbox_argv_add(&a, p->keys.requests);
        inbox_argv_add(&a, KEYS_GROUP_PROCESSORS);
        inbox_argv_add(&a, p->consumer);
        inbox_argv_add(&a, "0");
        for (size_t i = 0; i < chunk; i++)
            inbox_argv_add(&a, ids[at + i]);
        for (int i = 0; i < ntail; i++)
            inbox_argv_add(&a, tail[i]);
        redisAsyncCommandArgv(ac, NULL, NULL, a.argc, a.argv, a.lens);
        inbox_argv_free(&a);
    }
}

/* A request may rightly stay in flight longer than CLAIM_IDLE_MS (a 60 s upstream
 * timeout, backoff waits). XCLAIM with min-idle 0 and JUSTID resets the idle time
 * of every entry we hold without counting a delivery, so no other processor
 * takes work that is still alive here. */
static void inbox_on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct processor *p = arg;
    size_t n = 0;
    const char **ids = malloc((p->nused + 1) * sizeof(*ids));
    if (ids == NULL)
        return;
    for (size_t i = 0; i < p->nused; i++)
        if (p->jobs[i].state != JOB_FREE)
            ids[n++] = p->jobs[i].id;
    static const char *const tail[] = {"JUSTID"};
    if (n > 0)
        inbox_xclaim_ids(p, ids, n, tail, 1);
    free(ids);
}

void inbox_hand_back(struct processor *p, const char *const *ids, size_t n)
{
    if (rlink_ctx(p->wr) == NULL) {
        log_warn(NULL,
                 "cannot hand back %zu entries (Redis is away); they are taken "
                 "over after CLAIM_IDLE_MS",
                 n);
        return;
    }
    char idle[32];
    inbox_ms(idle, sizeof(idle), INBOX_HANDBACK_IDLE_MS);
    const char *const tail[] = {"IDLE", idle, "JUSTID"};
    inbox_xclaim_ids(p, ids, n, tail, 3);
    log_info(NULL, "handed back %zu unfinished entries for other processors", n);
}

static void inbox_on_retired(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    const redisReply *r = reply;
    struct processor *p = privdata;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        log_info(NULL, "consumer %s kept: it still holds pending entries", p->consumer);
}

void inbox_retire(struct processor *p)
{
    redisAsyncContext *ac = rlink_ctx(p->wr);
    if (ac == NULL)
        return;
    const char *argv[] = {"EVAL",         stream_retire_script, "1",
                          p->keys.requests, KEYS_GROUP_PROCESSORS, p->consumer};
    redisAsyncCommandArgv(ac, inbox_on_retired, p, INBOX_ARGC(argv), argv, NULL);
}

/* ---- lifecycle ----------------------------------------------------------------- */

static struct event *inbox_tick(struct processor *p, long long ms, event_callback_fn fn)
{
    struct event *ev = event_new(p->base, -1, EV_PERSIST, fn, p);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (ev && event_add(ev, &tv) != 0) {
        event_free(ev);
        ev = NULL;
    }
    return ev;
}

int inbox_start(struct processor *p)
{
    long long claim_ms = p->cfg->claim_idle_ms / 2;
    long long beat_ms = p->cfg->claim_idle_ms / 3;
    p->read_client = -1;
    p->claim_due = 1; /* look for abandoned work right away */
    p->read_retry = evtimer_new(p->base, inbox_on_read_retry, p);
    p->claim_tick = inbox_tick(p, claim_ms > 100 ? claim_ms : 100, inbox_on_claim_tick);
    p->heartbeat_tick = inbox_tick(p, beat_ms > 50 ? beat_ms : 50, inbox_on_heartbeat);
    return p->read_retry && p->claim_tick && p->heartbeat_tick ? 0 : -1;
}

void inbox_stop(struct processor *p)
{
    if (p->claim_tick)
        event_del(p->claim_tick);
    if (p->read_retry)
        event_del(p->read_retry);
    /* A read blocked in Redis would hold the read connection's close for up to
     * INBOX_BLOCK_MS; unblocking makes it answer (nil) at once. */
    redisAsyncContext *wac = rlink_ctx(p->wr);
    if (p->read_busy && p->read_client >= 0 && wac) {
        char id[32];
        snprintf(id, sizeof(id), "%lld", p->read_client);
        const char *argv[] = {"CLIENT", "UNBLOCK", id};
        redisAsyncCommandArgv(wac, NULL, NULL, INBOX_ARGC(argv), argv, NULL);
    }
    rlink_close(p->rd);
}

void inbox_free(struct processor *p)
{
    if (p->read_retry)
        event_free(p->read_retry);
    if (p->claim_tick)
        event_free(p->claim_tick);
    if (p->heartbeat_tick)
        event_free(p->heartbeat_tick);
    p->read_retry = p->claim_tick = p->heartbeat_tick = NULL;
}
