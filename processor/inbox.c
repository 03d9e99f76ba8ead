/* inbox.c - reading, claiming, heartbeats and hand-back on the requests stream
 * (see inbox.h).
 *
 * Recovery uses XPENDING + XCLAIM rather than XAUTOCLAIM because XAUTOCLAIM does
 * not return the delivery counts, and the delivery count is how an entry that
 * kills every processor that takes it (a poison entry) is recognised and
 * dead-lettered instead of being run again forever. XCLAIM with a min-idle-time
 * is atomic, so two processors that both saw an entry in XPENDING cannot both
 * get it.
 *
 * An entry must be called upstream by one processor at a time. Three rules keep
 * it so when Redis was away for longer than CLAIM_IDLE_MS (every heartbeat
 * stopped, so every entry looks abandoned on the way back):
 *   - a processor heartbeats as soon as its write connection is back, and takes
 *     over idle entries only once that connection has been up for
 *     CLAIM_IDLE_MS; reconnects are at most CLAIM_IDLE_MS / 4 apart (see
 *     processor_run), so every live processor renews its entries first;
 *   - heartbeats and hand-backs touch only entries that this consumer still
 *     holds (a Lua script checks the owner), never taking one back;
 *   - an entry that now belongs to someone else is dropped here (see
 *     processor_drop), and its outcome is never written by us (outbox.c). */
#include "inbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "admit.h"
#include "clock.h"
#include "cmd.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "processor.h"
#include "rlink.h"
#include "script.h"
#include "stream.h"

/* Wait after a failed read before the next one, so an error cannot spin. */
#define INBOX_ERROR_PAUSE_MS 1000

struct inbox {
    struct processor *p;   /* borrowed: the owner */
    int read_busy;         /* an XREADGROUP is outstanding */
    int read_paused;       /* after an error, until read_retry fires */
    size_t read_reserved;  /* slots promised to the outstanding XREADGROUP */
    long long read_client; /* CLIENT ID of the read connection, -1: unknown */
    int claim_due;         /* the claim tick fired: look for idle entries */
    int handback_due;      /* the hand-back tick fired: look for handed-back ones */
    int claim_busy;
    size_t claim_reserved; /* slots promised to the claim in progress */
    long long claim_after; /* monotonic ms: no idle claims before (see above) */
    struct event *read_retry, *claim_tick, *heartbeat_tick, *handback_tick;
};

/* An XCLAIM in flight: the ids sent and their delivery counts before it. */
struct inbox_claim {
    struct inbox *in;
    size_t n;
    int from_handback; /* some came from INBOX_HANDBACK_CONSUMER */
    char (*ids)[JOB_ID_MAX];
    const char **idp; /* idp[i] is ids[i], for stream_id_index */
    long long *deliveries;
};

/* The argc of a fixed command written as an array literal. */
#define INBOX_ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Lua: 1 if the entry ARGV[i] is pending on consumer ARGV[2] of group ARGV[1]. */
#define INBOX_OWNED_LUA                                                                  \
    "local function owned(id)\n"                                                         \
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)\n"                  \
    "  return p[1] ~= nil and p[1][2] == ARGV[2]\n"                                      \
    "end\n"

/* KEYS[1] requests; ARGV group, consumer, ids... Resets the idle time of the ids
 * this consumer holds (XCLAIM 0 JUSTID: not a delivery) and returns the others,
 * which someone else took over (or finished) meanwhile. */
static const char inbox_beat_lua[] = INBOX_OWNED_LUA
    "local a, lost = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}, {}\n"
    "for i = 3, #ARGV do\n"
    "  if owned(ARGV[i]) then a[#a + 1] = ARGV[i] else lost[#lost + 1] = ARGV[i] end\n"
    "end\n"
    "if #a > 5 then\n"
    "  a[#a + 1] = 'JUSTID'\n"
    "  redis.call(unpack(a))\n"
    "end\n"
    "return lost\n";

/* KEYS[1] requests; ARGV group, consumer, the hand-back consumer, its IDLE, then
 * (id, delivery count) pairs. Moves the entries this consumer holds to the
 * hand-back consumer with the given delivery count; returns how many moved. */
static const char inbox_back_lua[] = INBOX_OWNED_LUA
    "local n = 0\n"
    "for i = 5, #ARGV, 2 do\n"
    "  if owned(ARGV[i]) then\n"
    "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[i], 'IDLE', ARGV[4],\n"
    "               'RETRYCOUNT', ARGV[i + 1], 'JUSTID')\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

static struct script inbox_beat_script = {inbox_beat_lua, ""};
static struct script inbox_back_script = {inbox_back_lua, ""};

static void inbox_timer(struct event *ev, long long ms)
{
    struct timeval tv = clock_timeval(ms);
    evtimer_add(ev, &tv);
}

size_t inbox_reserved(const struct inbox *in)
{
    return in->read_reserved + in->claim_reserved;
}

int inbox_claiming(const struct inbox *in)
{
    return in->claim_busy;
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

static void inbox_group_ensure(struct inbox *in, redisAsyncContext *ac)
{
    const char *argv[] = {
        "XGROUP", "CREATE", in->p->keys.requests, KEYS_GROUP_PROCESSORS, "0", "MKSTREAM"};
    redisAsyncCommandArgv(ac, inbox_on_group, NULL, INBOX_ARGC(argv), argv, NULL);
}

static void inbox_on_client_id(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct inbox *in = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_INTEGER)
        in->read_client = r->integer;
}

/* CLIENT LIST then tells whose connection is whose (and that this processor is
 * up and reading: the tests wait for that). */
static void inbox_name_connection(struct inbox *in, redisAsyncContext *ac)
{
    const char *argv[] = {"CLIENT", "SETNAME", in->p->consumer};
    redisAsyncCommandArgv(ac, NULL, NULL, INBOX_ARGC(argv), argv, NULL);
}

void inbox_on_read_up(struct inbox *in)
{
    redisAsyncContext *ac = rlink_ctx(in->p->rd);
    if (ac == NULL)
        return;
    in->read_client = -1;
    /* Redis may have come back empty (no persistence): the group would be gone and
     * every XREADGROUP would fail with NOGROUP. Sent ahead of the first read on the
     * same connection, so it is in place before that read. */
    inbox_group_ensure(in, ac);
    /* The id lets the write connection CLIENT UNBLOCK the read at shutdown. */
    redisAsyncCommand(ac, inbox_on_client_id, in, "CLIENT ID");
    inbox_name_connection(in, ac);
    processor_pump(in->p);
}

void inbox_on_read_down(struct inbox *in)
{
    /* Entries the lost reply carried are pending on this consumer; the claim loop
     * takes them back once they are CLAIM_IDLE_MS idle. */
    in->read_busy = 0;
    in->read_reserved = 0;
    in->read_client = -1;
    processor_pump(in->p);
}

/* ---- reading new entries ------------------------------------------------------- */

/* Hands back entries that arrived while stopping: a read or claim that was already
 * on its way. deliveries: their counts, or NULL for fresh reads (1 each). */
static void inbox_hand_back_arrivals(struct inbox *in, const redisReply *entries,
                                     const long long *deliveries)
{
    size_t n = entries->elements, k = 0;
    const char **ids = malloc((n + 1) * sizeof(*ids));
    long long *counts = malloc((n + 1) * sizeof(*counts));
    if (ids == NULL || counts == NULL) {
        log_warn(NULL, "%zu entries read during shutdown stay pending until reclaimed",
                 n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct stream_entry e;
        if (stream_entry_at(entries, i, &e) != 0 || e.fields == NULL)
            continue;
        ids[k] = e.id;
        counts[k] = deliveries ? deliveries[i] : 1;
        k++;
    }
    if (k > 0)
        inbox_hand_back(in, ids, counts, k);
out:
    free(ids);
    free(counts);
}

static void inbox_on_read(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct inbox *in = privdata;
    struct processor *p = in->p;
    redisReply *r = reply;

    in->read_busy = 0;
    in->read_reserved = 0;
    if (r == NULL)
        return; /* connection lost: inbox_on_read_down follows */

    if (r->type == REDIS_REPLY_ERROR) {
        log_warn(NULL, "XREADGROUP failed: %s; trying again in %d ms", r->str,
                 INBOX_ERROR_PAUSE_MS);
        if (strncmp(r->str, "NOGROUP", 7) == 0)
            inbox_group_ensure(in, ac);
        in->read_paused = 1;
        inbox_timer(in->read_retry, INBOX_ERROR_PAUSE_MS);
        return;
    }

    const redisReply *entries = stream_read_entries(r);
    if (entries != NULL && p->stopping) {
        /* The read was already on its way when the shutdown began. */
        inbox_hand_back_arrivals(in, entries, NULL);
    } else if (entries != NULL) {
        for (size_t i = 0; i < entries->elements; i++) {
            struct stream_entry e;
            if (stream_entry_at(entries, i, &e) == 0)
                processor_accept(p, e.id, e.fields, 1);
        }
    }
    processor_pump(p);
}

static void inbox_read(struct inbox *in, size_t free_slots)
{
    struct processor *p = in->p;
    redisAsyncContext *ac = rlink_ctx(p->rd);
    if (ac == NULL)
        return;
    struct cmd c;
    cmd_init(&c, "XREADGROUP");
    cmd_addz(&c, "GROUP");
    cmd_addz(&c, KEYS_GROUP_PROCESSORS);
    cmd_addz(&c, p->consumer);
    cmd_addz(&c, "COUNT");
    cmd_addll(&c, (long long)(free_slots < INBOX_READ_MAX ? free_slots : INBOX_READ_MAX));
    cmd_addz(&c, "BLOCK");
    cmd_addll(&c, INBOX_BLOCK_MS);
    cmd_addz(&c, "STREAMS");
    cmd_addz(&c, p->keys.requests);
    cmd_addz(&c, ">");
    if (redisAsyncCommandArgv(ac, inbox_on_read, in, c.argc, c.argv, c.len) == REDIS_OK) {
        in->read_busy = 1;
        in->read_reserved = free_slots < INBOX_READ_MAX ? free_slots : INBOX_READ_MAX;
    }
    cmd_free(&c);
}

static void inbox_on_read_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct inbox *in = arg;
    in->read_paused = 0;
    processor_pump(in->p);
}

/* ---- taking over abandoned and handed-back entries ----------------------------- */

static void inbox_claim_free(struct inbox_claim *c)
{
    if (c == NULL)
        return;
    free(c->ids);
    free(c->idp);
    free(c->deliveries);
    free(c);
}

/* Deletes the hand-back consumer once it holds nothing, so that it does not stay
 * listed in XINFO CONSUMERS after everything handed back was taken. */
static void inbox_retire_consumer(struct inbox *in, redisAsyncContext *ac,
                                  const char *consumer, redisCallbackFn *fn)
{
    const char *argv[] = {
        "EVAL",  stream_retire_script, "1", in->p->keys.requests, KEYS_GROUP_PROCESSORS,
        consumer};
    redisAsyncCommandArgv(ac, fn, in, INBOX_ARGC(argv), argv, NULL);
}

static void inbox_on_claimed(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct inbox_claim *c = privdata;
    struct inbox *in = c->in;
    struct processor *p = in->p;
    redisReply *r = reply;
    long long *before = NULL;

    in->claim_busy = 0;
    in->claim_reserved = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_warn(NULL, "XCLAIM failed: %s", r->str);
        goto out;
    }

    size_t hint = 0, taken = 0;
    metrics_inc(metrics_claims);
    before = calloc(r->elements + 1, sizeof(*before));
    for (size_t i = 0; i < r->elements; i++) {
        struct stream_entry e;
        if (stream_entry_at(r, i, &e) != 0)
            continue;
        long at = stream_id_index(c->idp, c->n, e.id, &hint);
        long long d = (at >= 0 ? c->deliveries[at] : 0) + 1;
        if (before)
            before[i] = d;
        if (e.fields == NULL) {
            /* Deleted from the stream meanwhile (Redis before 7 still returns it):
             * nothing left to do but to stop it being pending. */
            const char *argv[] = {"XACK", p->keys.requests, KEYS_GROUP_PROCESSORS, e.id};
            redisAsyncCommandArgv(ac, NULL, NULL, INBOX_ARGC(argv), argv, NULL);
            continue;
        }
        if (p->stopping)
            continue;
        processor_accept(p, e.id, e.fields, d);
        taken++;
    }
    /* Claimed while a shutdown began: hand them straight back, as a read would. */
    if (p->stopping && before != NULL)
        inbox_hand_back_arrivals(in, r, before);
    metrics_add(&metrics_takeovers, (long long)taken, NULL, NULL);
    if (taken > 0)
        log_info(NULL, "took over %zu entries%s", taken,
                 c->from_handback ? " (some handed back by a stopping processor)" : "");
    if (c->from_handback)
        inbox_retire_consumer(in, ac, INBOX_HANDBACK_CONSUMER, NULL);
out:
    free(before);
    inbox_claim_free(c);
    processor_pump(p);
}

static void inbox_on_pending(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct inbox *in = privdata;
    struct processor *p = in->p;
    redisReply *r = reply;
    struct inbox_claim *c = NULL;
    struct cmd x;

    cmd_init(&x, "XCLAIM");
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
    c->in = in;
    c->ids = malloc(r->elements * sizeof(*c->ids));
    c->idp = malloc(r->elements * sizeof(*c->idp));
    c->deliveries = malloc(r->elements * sizeof(*c->deliveries));
    if (c->ids == NULL || c->idp == NULL || c->deliveries == NULL)
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
        if (strcmp(e->element[1]->str, INBOX_HANDBACK_CONSUMER) == 0)
            c->from_handback = 1;
        memcpy(c->ids[c->n], e->element[0]->str, e->element[0]->len + 1);
        c->idp[c->n] = c->ids[c->n];
        c->deliveries[c->n] = e->element[3]->integer;
        c->n++;
    }
    if (c->n == 0)
        goto out;

    cmd_addz(&x, p->keys.requests);
    cmd_addz(&x, KEYS_GROUP_PROCESSORS);
    cmd_addz(&x, p->consumer);
    cmd_addll(&x, p->cfg->claim_idle_ms);
    for (size_t i = 0; i < c->n; i++)
        cmd_addz(&x, c->ids[i]);
    if (x.overflow ||
        redisAsyncCommandArgv(ac, inbox_on_claimed, c, x.argc, x.argv, x.len) != REDIS_OK)
        goto out;
    /* Still claiming: the slots stay promised until XCLAIM answers. */
    in->claim_reserved = c->n;
    cmd_free(&x);
    return;

out:
    cmd_free(&x);
    inbox_claim_free(c);
    in->claim_busy = 0;
    in->claim_reserved = 0;
    processor_pump(p);
}

/* XPENDING of entries idle for CLAIM_IDLE_MS, or (handback) of those parked on
 * the hand-back consumer; inbox_on_pending claims what it finds. */
static void inbox_claim(struct inbox *in, size_t free_slots, int handback)
{
    struct processor *p = in->p;
    redisAsyncContext *ac = rlink_ctx(p->wr);
    if (ac == NULL)
        return;
    size_t count = free_slots < INBOX_CLAIM_MAX ? free_slots : INBOX_CLAIM_MAX;
    struct cmd c;
    cmd_init(&c, "XPENDING");
    cmd_addz(&c, p->keys.requests);
    cmd_addz(&c, KEYS_GROUP_PROCESSORS);
    cmd_addz(&c, "IDLE");
    cmd_addll(&c, p->cfg->claim_idle_ms);
    cmd_addz(&c, "-");
    cmd_addz(&c, "+");
    cmd_addll(&c, (long long)count);
    if (handback)
        cmd_addz(&c, INBOX_HANDBACK_CONSUMER);
    if (redisAsyncCommandArgv(ac, inbox_on_pending, in, c.argc, c.argv, c.len) ==
        REDIS_OK) {
        /* An idle claim finds handed-back entries too. */
        if (!handback)
            in->claim_due = 0;
        in->handback_due = 0;
        in->claim_busy = 1;
        in->claim_reserved = count;
    }
    cmd_free(&c);
}

static void inbox_on_claim_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct inbox *in = arg;
    in->claim_due = 1;
    processor_pump(in->p);
}

static void inbox_on_handback_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct inbox *in = arg;
    in->handback_due = 1;
    processor_pump(in->p);
}

void inbox_pump(struct inbox *in)
{
    struct processor *p = in->p;
    if (p->stopping)
        return;
    /* Abandoned entries are older than anything new, so a due claim goes first; a
     * read holding every free slot returns within INBOX_BLOCK_MS and lets it in. */
    size_t free_slots = processor_free_slots(p);
    if (!in->claim_busy && free_slots > 0) {
        if (in->claim_due && clock_mono_ms() >= in->claim_after)
            inbox_claim(in, free_slots, 0);
        else if (in->handback_due)
            inbox_claim(in, free_slots, 1);
    }
    free_slots = processor_free_slots(p);
    if (!in->read_busy && !in->read_paused && free_slots > 0)
        inbox_read(in, free_slots);
}

/* ---- keeping and handing back own entries -------------------------------------- */

static void inbox_beat(struct inbox *in);

static void inbox_on_beat(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct inbox *in = privdata;
    const redisReply *r = reply;
    if (r == NULL)
        return;
    if (script_missing(&inbox_beat_script, r)) {
        inbox_beat(in); /* now sent whole */
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        log_warn(NULL, "heartbeat failed: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        return;
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            processor_drop(in->p, r->element[i]->str);
}

/* A request may rightly stay in flight longer than CLAIM_IDLE_MS (a 60 s upstream
 * timeout, backoff waits). The heartbeat resets the idle time of every entry we
 * still hold without counting a delivery, so no other processor takes work that
 * is still alive here; entries we no longer hold are dropped. */
static void inbox_beat(struct inbox *in)
{
    struct processor *p = in->p;
    redisAsyncContext *ac = rlink_ctx(p->wr);
    if (ac == NULL)
        return;
    size_t i = 0;
    while (i < p->nused) {
        struct cmd c;
        size_t n = 0;
        script_cmd(&c, &inbox_beat_script);
        cmd_addz(&c, "1");
        cmd_addz(&c, p->keys.requests);
        cmd_addz(&c, KEYS_GROUP_PROCESSORS);
        cmd_addz(&c, p->consumer);
        for (; i < p->nused && n < INBOX_CLAIM_MAX; i++) {
            if (p->jobs[i].state != JOB_FREE) {
                cmd_addz(&c, p->jobs[i].id);
                n++;
            }
        }
        if (n > 0 && !c.overflow)
            redisAsyncCommandArgv(ac, inbox_on_beat, in, c.argc, c.argv, c.len);
        cmd_free(&c);
    }
}

static void inbox_on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct inbox *in = arg;
    inbox_beat(in);
    /* Attempts whose count Redis refused are asked for again at the same pace. */
    admit_flush(in->p);
}

void inbox_on_write_up(struct inbox *in)
{
    redisAsyncContext *ac = rlink_ctx(in->p->wr);
    if (ac != NULL)
        inbox_name_connection(in, ac);
    inbox_beat(in);
    in->claim_after = clock_mono_ms() + in->p->cfg->claim_idle_ms;
}

static void inbox_on_handed_back(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    (void)privdata;
    const redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_INTEGER)
        log_info(NULL, "handed back %lld unfinished entries for other processors",
                 r->integer);
    else if (r && r->type == REDIS_REPLY_ERROR) {
        script_missing(&inbox_back_script, r);
        log_warn(NULL,
                 "hand-back failed (the entries are taken over after "
                 "CLAIM_IDLE_MS): %s",
                 r->str);
    }
}

void inbox_hand_back(struct inbox *in, const char *const *ids,
                     const long long *deliveries, size_t n)
{
    struct processor *p = in->p;
    redisAsyncContext *ac = rlink_ctx(p->wr);
    char(*counts)[24] = NULL;
    if (ac == NULL)
        goto away;
    counts = malloc((n + 1) * sizeof(*counts));
    if (counts == NULL)
        goto away;
    for (size_t at = 0; at < n; at += INBOX_CLAIM_MAX) {
        size_t chunk = n - at < INBOX_CLAIM_MAX ? n - at : INBOX_CLAIM_MAX;
        struct cmd c;
        script_cmd(&c, &inbox_back_script);
        cmd_addz(&c, "1");
        cmd_addz(&c, p->keys.requests);
        cmd_addz(&c, KEYS_GROUP_PROCESSORS);
        cmd_addz(&c, p->consumer);
        cmd_addz(&c, INBOX_HANDBACK_CONSUMER);
        cmd_addll(&c, INBOX_HANDBACK_IDLE_MS);
        for (size_t i = at; i < at + chunk; i++) {
            /* The delivery being handed back does not count. */
            long long d = deliveries[i] > 0 ? deliveries[i] - 1 : 0;
            snprintf(counts[i], sizeof(counts[i]), "%lld", d);
            cmd_addz(&c, ids[i]);
            cmd_addz(&c, counts[i]);
        }
        if (!c.overflow)
            redisAsyncCommandArgv(ac, inbox_on_handed_back, in, c.argc, c.argv, c.len);
        cmd_free(&c);
    }
    free(counts);
    return;
away:
    log_warn(NULL,
             "cannot hand back %zu entries (Redis is away); they are taken "
             "over after CLAIM_IDLE_MS",
             n);
}

static void inbox_on_retired(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    const redisReply *r = reply;
    struct inbox *in = privdata;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        log_info(NULL, "consumer %s kept: it still holds pending entries",
                 in->p->consumer);
}

void inbox_retire(struct inbox *in)
{
    redisAsyncContext *ac = rlink_ctx(in->p->wr);
    if (ac != NULL)
        inbox_retire_consumer(in, ac, in->p->consumer, inbox_on_retired);
}

/* ---- lifecycle ----------------------------------------------------------------- */

static struct event *inbox_tick(struct inbox *in, long long ms, event_callback_fn fn)
{
    struct event *ev = event_new(in->p->base, -1, EV_PERSIST, fn, in);
    struct timeval tv = clock_timeval(ms);
    if (ev && event_add(ev, &tv) != 0) {
        event_free(ev);
        ev = NULL;
    }
    return ev;
}

struct inbox *inbox_new(struct processor *p)
{
    struct inbox *in = calloc(1, sizeof(*in));
    if (in == NULL)
        return NULL;
    script_register(&inbox_beat_script);
    script_register(&inbox_back_script);
    long long claim_ms = p->cfg->claim_idle_ms / 2;
    long long beat_ms = p->cfg->claim_idle_ms / 3;
    long long back_ms =
        INBOX_HANDBACK_POLL_MS < claim_ms ? INBOX_HANDBACK_POLL_MS : claim_ms;
    in->p = p;
    in->read_client = -1;
    in->claim_due = 1;    /* look for abandoned work once the link has been up long */
    in->handback_due = 1; /* ... and for handed-back work right away */
    in->read_retry = evtimer_new(p->base, inbox_on_read_retry, in);
    in->claim_tick = inbox_tick(in, claim_ms > 100 ? claim_ms : 100, inbox_on_claim_tick);
    in->heartbeat_tick = inbox_tick(in, beat_ms > 50 ? beat_ms : 50, inbox_on_heartbeat);
    in->handback_tick =
        inbox_tick(in, back_ms > 100 ? back_ms : 100, inbox_on_handback_tick);
    if (in->read_retry == NULL || in->claim_tick == NULL || in->heartbeat_tick == NULL ||
        in->handback_tick == NULL) {
        inbox_free(in);
        return NULL;
    }
    return in;
}

void inbox_stop(struct inbox *in)
{
    struct processor *p = in->p;
    event_del(in->claim_tick);
    event_del(in->handback_tick);
    event_del(in->read_retry);
    /* A read blocked in Redis would hold the read connection's close for up to
     * INBOX_BLOCK_MS; unblocking makes it answer (nil) at once. */
    redisAsyncContext *wac = rlink_ctx(p->wr);
    if (in->read_busy && in->read_client >= 0 && wac) {
        char id[32];
        snprintf(id, sizeof(id), "%lld", in->read_client);
        const char *argv[] = {"CLIENT", "UNBLOCK", id};
        redisAsyncCommandArgv(wac, NULL, NULL, INBOX_ARGC(argv), argv, NULL);
    }
    rlink_close(p->rd);
}

void inbox_free(struct inbox *in)
{
    if (in == NULL)
        return;
    if (in->read_retry)
        event_free(in->read_retry);
    if (in->claim_tick)
        event_free(in->claim_tick);
    if (in->heartbeat_tick)
        event_free(in->heartbeat_tick);
    if (in->handback_tick)
        event_free(in->handback_tick);
    free(in);
}
