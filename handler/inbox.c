/* inbox.c - reading and taking over results (see inbox.h).
 *
 * Takeover uses XPENDING + XCLAIM rather than XAUTOCLAIM because XAUTOCLAIM does
 * not return the delivery counts, and the count is how a result that fails on
 * every delivery (its trace key holds the wrong type, say) is recognised and
 * dead-lettered instead of being taken over every claim interval for ever.
 * XCLAIM with a min-idle-time is atomic, so two handlers that both saw an entry
 * in XPENDING cannot both get it. */
#include "inbox.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "cmd.h"
#include "finalize.h"
#include "log.h"
#include "stream.h"

/* How much longer than its BLOCK a read may take to answer before the
 * connection is given up as dead. */
#define INBOX_REPLY_SLACK_MS 5000
/* On stop, how long the unblocked read may take to answer. */
#define INBOX_UNBLOCK_WAIT_MS 1000

void inbox_init(struct inbox *in, const struct inbox_settings *set,
                const struct rconn_url *url, const struct keys *keys,
                struct finalize *fin, const volatile sig_atomic_t *stop,
                const sigset_t *waitmask)
{
    memset(in, 0, sizeof(*in));
    in->set = *set;
    in->url = url;
    in->keys = keys;
    in->fin = fin;
    in->stop = stop;
    in->waitmask = waitmask;
    in->client_id = -1;
    stream_consumer_name(in->consumer, sizeof(in->consumer), "handler");
}

static void inbox_disconnect(struct inbox *in)
{
    redisFree(in->c);
    in->c = NULL;
    in->client_id = -1;
}

int inbox_connect(struct inbox *in, char *err, size_t errlen)
{
    /* The command timeout must outlast the XREADGROUP BLOCK. */
    in->c = rconn_connect(in->url, (int)(in->set.block_ms + INBOX_REPLY_SLACK_MS), err,
                          errlen);
    if (in->c == NULL)
        return -1;
    if (stream_group_ensure(in->c, in->keys->results, KEYS_GROUP_HANDLERS, err, errlen) !=
        0) {
        inbox_disconnect(in);
        return -1;
    }
    redisReply *r = redisCommand(in->c, "CLIENT ID");
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "CLIENT ID failed: %s",
                 r ? (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply")
                   : in->c->errstr);
        freeReplyObject(r);
        inbox_disconnect(in);
        return -1;
    }
    in->client_id = r->integer;
    freeReplyObject(r);
    in->next_claim = 0;
    in->own_pending = 1; /* what a lost connection left half done, first */
    return 0;
}

/* ---- taking over abandoned results -------------------------------------------- */

/* The ids XPENDING listed and how often each was delivered so far. */
struct inbox_pending {
    size_t n;
    const char **ids; /* borrowed from the XPENDING reply */
    long long *deliveries;
};

/* XCLAIMs what XPENDING listed and finalizes it; an entry whose delivery now
 * goes past MAX_DELIVERIES is dead-lettered instead. Returns 0 or -1. */
static int inbox_claim_pending(struct inbox *in, const struct inbox_pending *p)
{
    int rc = -1;
    long long *over = NULL;
    redisReply *r = NULL;
    struct cmd cmd;
    cmd_init(&cmd, "XCLAIM");
    cmd_addz(&cmd, in->keys->results);
    cmd_addz(&cmd, KEYS_GROUP_HANDLERS);
    cmd_addz(&cmd, in->consumer);
    cmd_addll(&cmd, in->set.claim_idle_ms);
    for (size_t i = 0; i < p->n; i++)
        cmd_addz(&cmd, p->ids[i]);
    if (cmd.overflow) {
        log_error(NULL, "out of memory for a claim of %zu results", p->n);
        goto out;
    }
    r = redisCommandArgv(in->c, cmd.argc, cmd.argv, cmd.len);
    if (rconn_reply_failed(r) || r->type != REDIS_REPLY_ARRAY) {
        log_warn(NULL, "XCLAIM failed: %s",
                 r ? (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply")
                   : in->c->errstr);
        goto out;
    }
    over = calloc(r->elements + 1, sizeof(*over));
    if (over == NULL) {
        log_error(NULL, "out of memory for a claim of %zu results", r->elements);
        goto out; /* claimed and not finalized: taken over again later */
    }
    size_t hint = 0, nover = 0;
    for (size_t i = 0; i < r->elements; i++) {
        struct stream_entry e;
        if (stream_entry_at(r, i, &e) != 0)
            continue;
        long at = stream_id_index(p->ids, p->n, e.id, &hint);
        long long delivery = (at >= 0 ? p->deliveries[at] : 0) + 1;
        if (delivery > in->set.max_deliveries) {
            over[i] = delivery;
            nover++;
        }
    }
    if (r->elements > 0)
        log_info(NULL, "claimed %zu results left idle for %lld ms or more", r->elements,
                 in->set.claim_idle_ms);
    if (nover > 0)
        log_warn(NULL, "%zu of them delivered more than MAX_DELIVERIES (%lld) times",
                 nover, in->set.max_deliveries);
    rc = finalize_entries(in->fin, in->c, r, over);
out:
    free(over);
    freeReplyObject(r);
    cmd_free(&cmd);
    return rc;
}

/* Lists up to a batch of results idle for CLAIM_IDLE_MS with their delivery
 * counts. Returns a new reply (freeReplyObject) with p filled from it, or NULL
 * (logged) when the connection failed. */
static redisReply *inbox_list_pending(struct inbox *in, struct inbox_pending *p)
{
    redisReply *r =
        redisCommand(in->c, "XPENDING %s %s IDLE %lld - + %lld", in->keys->results,
                     KEYS_GROUP_HANDLERS, in->set.claim_idle_ms, in->set.batch);
    if (rconn_reply_failed(r) || r->type != REDIS_REPLY_ARRAY) {
        log_warn(NULL, "XPENDING failed: %s",
                 r ? (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply")
                   : in->c->errstr);
        freeReplyObject(r);
        return NULL;
    }
    p->n = 0;
    p->ids = malloc((r->elements + 1) * sizeof(*p->ids));
    p->deliveries = malloc((r->elements + 1) * sizeof(*p->deliveries));
    if (p->ids == NULL || p->deliveries == NULL) {
        log_error(NULL, "out of memory for %zu pending results", r->elements);
        return r; /* p->n == 0: nothing claimed this time */
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 ||
            e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[3]->type != REDIS_REPLY_INTEGER)
            continue;
        p->ids[p->n] = e->element[0]->str;
        p->deliveries[p->n] = e->element[3]->integer;
        p->n++;
    }
    return r;
}

/* Takes over results another handler (or this one, before a lost connection)
 * read but never finished, page by page: what is claimed is no longer idle, so
 * the next XPENDING lists the next ones. Returns 0 or -1. */
static int inbox_claim(struct inbox *in)
{
    for (;;) {
        struct inbox_pending p = {0};
        redisReply *r = inbox_list_pending(in, &p);
        if (r == NULL)
            return -1;
        int rc = p.n > 0 ? inbox_claim_pending(in, &p) : 0;
        int more = p.n > 0 && r->elements == (size_t)in->set.batch;
        free(p.ids);
        free(p.deliveries);
        freeReplyObject(r);
        if (rc != 0)
            return -1;
        if (!more || *in->stop)
            return 0;
    }
}

/* ---- reading new results ------------------------------------------------------ */

/* Asks Redis, from a second short connection, to end the read blocked on ours:
 * it then answers (nil, or the entries it had just delivered) at once. */
static void inbox_unblock(struct inbox *in)
{
    char err[512];
    redisContext *u = rconn_connect(in->url, INBOX_UNBLOCK_WAIT_MS, err, sizeof(err));
    redisReply *r = u ? redisCommand(u, "CLIENT UNBLOCK %lld", in->client_id) : NULL;
    if (rconn_reply_failed(r))
        log_warn(NULL, "cannot unblock the read (%s); giving it %d ms",
                 r ? r->str : (u ? u->errstr : err), INBOX_UNBLOCK_WAIT_MS);
    freeReplyObject(r);
    redisFree(u);
}

/* Waits for the reply to the command already sent on in->c, in ppoll with the
 * stop signals open. A stop meanwhile unblocks the read and waits a little for
 * its answer. Returns a new reply (NULL-free: freeReplyObject), or NULL (logged)
 * when the connection failed or stayed silent. */
static redisReply *inbox_await(struct inbox *in)
{
    redisContext *c = in->c;
    long long deadline = clock_mono_ms() + in->set.block_ms + INBOX_REPLY_SLACK_MS;
    int unblocked = 0;
    for (;;) {
        void *reply = NULL;
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK)
            break;
        if (reply != NULL)
            return reply;
        if (*in->stop && !unblocked) {
            inbox_unblock(in);
            unblocked = 1;
            long long soon = clock_mono_ms() + INBOX_UNBLOCK_WAIT_MS;
            deadline = soon < deadline ? soon : deadline;
        }
        long long left = deadline - clock_mono_ms();
        if (left <= 0) {
            log_warn(NULL, "no answer from Redis for %lld ms; reconnecting",
                     in->set.block_ms + INBOX_REPLY_SLACK_MS);
            return NULL;
        }
        struct timespec ts = clock_timespec(left);
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int n = ppoll(&pfd, 1, &ts, in->waitmask);
        if (n < 0 && errno != EINTR) {
            log_warn(NULL, "waiting for Redis failed: %s", strerror(errno));
            return NULL;
        }
        if (n > 0 && redisBufferRead(c) != REDIS_OK)
            break;
    }
    log_warn(NULL, "XREADGROUP failed: %s", c->errstr[0] ? c->errstr : "connection lost");
    return NULL;
}

/* One XREADGROUP and the writes it brings. from is ">" for new results, or "0" for
 * those this consumer read before but did not finish (a lost connection), which
 * Redis answers at once. Returns the number of entries, or -1 on a lost connection. */
static int inbox_read(struct inbox *in, const char *from)
{
    redisContext *c = in->c;
    int done = 0;
    if (redisAppendCommand(c,
                           "XREADGROUP GROUP %s %s COUNT %lld BLOCK %lld STREAMS %s %s",
                           KEYS_GROUP_HANDLERS, in->consumer, in->set.batch,
                           in->set.block_ms, in->keys->results, from) != REDIS_OK)
        return -1;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK) {
            log_warn(NULL, "XREADGROUP failed: %s", c->errstr);
            return -1;
        }
    redisReply *r = inbox_await(in);
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_ERROR) {
        log_warn(NULL, "XREADGROUP failed: %s", r->str);
        freeReplyObject(r);
        return -1;
    }
    const redisReply *entries = stream_read_entries(r);
    int rc = entries ? finalize_entries(in->fin, c, entries, NULL) : 0;
    if (rc == 0)
        rc = entries ? (int)entries->elements : 0;
    freeReplyObject(r);
    return rc;
}

int inbox_step(struct inbox *in)
{
    int rc = 0;
    if (clock_mono_ms() >= in->next_claim) {
        rc = inbox_claim(in);
        in->next_claim = clock_mono_ms() + in->set.claim_idle_ms / 2;
    }
    if (rc == 0 && !*in->stop) {
        /* Once: an entry that keeps failing must not hold the loop here. */
        rc = inbox_read(in, in->own_pending ? "0" : ">");
        in->own_pending = 0;
    }
    if (rc < 0) {
        inbox_disconnect(in);
        return -1;
    }
    return 0;
}

void inbox_close(struct inbox *in)
{
    if (in->c != NULL && stream_consumer_retire(in->c, in->keys->results,
                                                KEYS_GROUP_HANDLERS, in->consumer) == 0)
        log_info(NULL, "consumer %s kept: it still holds pending results", in->consumer);
    inbox_disconnect(in);
}
