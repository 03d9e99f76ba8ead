/* finalize.c - see finalize.h. */
#include "finalize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cmd.h"
#include "clock.h"
#include "deadletter.h"
#include "evalsha.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "quota.h"
#include "record.h"
#include "stream.h"
#include "uuid.h"
#include "webhook.h"

/* KEYS: trace hash, results stream, dead-letter stream, stats hash, webhooks stream,
 * the trace's events channel (events.h: the final status is announced as an event).
 * ARGV: group, entry id, ttl, the status a pending record has, the dead-letter cap,
 * the prefix of the quota hashes, then the entry's field/value pairs. Returns {written
 * (0/1), the status found ('' when there was no record)}. A result for a trace that has
 * no record (an entry written into the requests stream by hand, or a record that expired)
 * cannot be shown to anyone: it goes to the dead-letter stream for a human to look at. A
 * script that fails (the trace key holds another type: WRONGTYPE) stops before the XACK,
 * so the entry stays pending; the delivery limit ends that.
 *
 * A trace that is final frees its gateway key's in-flight slot (the api's intake
 * took it, see api/intake.c) in the same step, so a client that sees its chat
 * final may send the next at once; a duplicate frees nothing more. A trace with a
 * webhook gets its delivery queued in the same step as its final record
 * (webhook.h), so neither is ever written without the other.
 *
 * Sent by its SHA1 (evalsha.h): whole, Redis hashed its few kilobytes for every
 * result. Each batch begins with SCRIPT LOAD on the same connection, which runs
 * before the batch's EVALSHAs: they cannot meet an empty script cache, not even
 * after a Redis restart, and a batch of many results hashes it once. Until the
 * first batch's load answered, the script goes whole.
 *
 * The stats hash counts the records written, by their final status: Redis-wide
 * totals from which chatq-stat and the status page derive completions and
 * failures per second, whichever handler wrote them. */
#define FINALIZE_ORPHAN_REASON                                                           \
    "no such trace: never accepted by the api, or its record expired"

static const char finalize_script[] =
    DEADLETTER_LUA QUOTA_RELEASE_LUA WEBHOOK_LUA EVENTS_LUA
    "local st = redis.call('HGET', KEYS[1], '" REC_STATUS "')\n"
    "local wrote = 0\n"
    "if st == ARGV[4] then\n"
    "  local fin = {}\n"
    "  for i = 7, #ARGV - 1, 2 do fin[ARGV[i]] = ARGV[i + 1] end\n"
    "  webhook_enqueue(KEYS[5], KEYS[1], fin['" REC_STATUS "'],\n"
    "                  fin['" REC_TIMESTAMP "'], fin['" REC_FINISH_REASON "'])\n"
    "  redis.call('HSET', KEYS[1], unpack(ARGV, 7))\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
    "  quota_release(ARGV[6], KEYS[1])\n"
    "  if fin['" REC_STATUS "'] then\n"
    "    redis.call('HINCRBY', KEYS[4], fin['" REC_STATUS "'], 1)\n"
    "    chat_event(KEYS[1], KEYS[6], fin['" REC_STATUS "'])\n"
    "  end\n"
    "  wrote = 1\n"
    "elseif not st then\n"
    "  dead_letter(KEYS[3], ARGV[5], KEYS[2], ARGV[2],\n"
    "              '" FINALIZE_ORPHAN_REASON "', '', ARGV, 7)\n"
    "end\n"
    "redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[2], ARGV[2])\n"
    "return {wrote, st or ''}\n";

/* KEYS: results stream, dead-letter stream. ARGV: group, entry id, the
 * dead-letter cap, reason, deliveries ('' when not counted), the prefix of the
 * quota hashes, the trace hash's key ('' when the entry names none), then the
 * entry's field/value pairs. The dead letter and the
 * acknowledgement in one step: the entry is acknowledged only once its dead letter
 * is written. Its trace will not become final through this entry, so its in-flight
 * slot is freed now rather than when it lapses. */
static const char finalize_dead_script[] = DEADLETTER_LUA QUOTA_RELEASE_LUA
    "dead_letter(KEYS[2], ARGV[3], KEYS[1], ARGV[2], ARGV[4], ARGV[5], ARGV, 8)\n"
    "if ARGV[7] ~= '' then quota_release(ARGV[6], ARGV[7]) end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "return 1\n";

void finalize_init(struct finalize *f, const struct keys *keys, long long ttl_s,
                   long long dead_max)
{
    memset(f, 0, sizeof(*f));
    evalsha_init(&f->lua, finalize_script);
    f->keys = keys;
    f->ttl_s = ttl_s;
    f->dead_max = dead_max;
}

/* What was sent for one entry, so that its replies can be read back in order. */
enum finalize_kind {
    FINALIZE_SKIP,   /* nothing sent */
    FINALIZE_ACK,    /* XACK: 1 reply */
    FINALIZE_SCRIPT, /* EVAL: 1 reply */
    FINALIZE_DEAD,   /* EVAL of the dead-letter script: 1 reply */
};

/* One entry of a batch: what was sent for it, and what its reply is logged with. */
struct finalize_item {
    enum finalize_kind kind;
    const char *id; /* borrowed from the entries reply */
    struct chat_result res;
};

static void finalize_append_script(struct finalize *f, redisContext *c,
                                   const struct stream_entry *e, const char *trace,
                                   const char *tracekey)
{
    char eventskey[KEYS_MAX + 128];
    struct cmd cmd;
    keys_events(f->keys, trace, eventskey, sizeof(eventskey));
    evalsha_cmd(&cmd, &f->lua);
    cmd_addz(&cmd, "6");
    cmd_addz(&cmd, tracekey);
    cmd_addz(&cmd, f->keys->results);
    cmd_addz(&cmd, f->keys->dead);
    cmd_addz(&cmd, f->keys->stats);
    cmd_addz(&cmd, f->keys->webhooks);
    cmd_addz(&cmd, eventskey);
    cmd_addz(&cmd, KEYS_GROUP_HANDLERS);
    cmd_addz(&cmd, e->id);
    cmd_addll(&cmd, f->ttl_s);
    cmd_addz(&cmd, record_status_name(CHAT_PROCESSING));
    cmd_addll(&cmd, f->dead_max);
    cmd_addz(&cmd, f->keys->quota_prefix);
    /* The entry's pairs verbatim: the result record is the hash record. */
    for (size_t i = 0; i < e->fields->elements; i++)
        cmd_add(&cmd, e->fields->element[i]->str, e->fields->element[i]->len);
    redisAppendCommandArgv(c, cmd.argc, cmd.argv, cmd.len);
    cmd_free(&cmd);
}

/* A result entry nobody can use: keep it for a human in the dead-letter stream.
 * deliveries is the count to record, or 0 when it was not counted; trace is the
 * trace id the entry names, or NULL. */
static void finalize_append_dead(struct finalize *f, redisContext *c,
                                 const struct stream_entry *e, const char *reason,
                                 long long deliveries, const char *trace)
{
    char tracekey[KEYS_MAX + 128] = "";
    struct cmd cmd;
    /* Only an id that looks like ours names a key: an entry written by hand could
     * name anything. */
    if (trace != NULL && uuid_valid(trace))
        keys_trace(f->keys, trace, tracekey, sizeof(tracekey));
    cmd_init(&cmd, "EVAL");
    cmd_addz(&cmd, finalize_dead_script);
    cmd_addz(&cmd, "2");
    cmd_addz(&cmd, f->keys->results);
    cmd_addz(&cmd, f->keys->dead);
    cmd_addz(&cmd, KEYS_GROUP_HANDLERS);
    cmd_addz(&cmd, e->id);
    cmd_addll(&cmd, f->dead_max);
    cmd_addz(&cmd, reason);
    if (deliveries > 0)
        cmd_addll(&cmd, deliveries);
    else
        cmd_addz(&cmd, "");
    cmd_addz(&cmd, f->keys->quota_prefix);
    cmd_addz(&cmd, tracekey);
    const redisReply *fl = e->fields;
    for (size_t i = 0; i + 1 < fl->elements; i += 2) {
        cmd_add(&cmd, fl->element[i]->str, fl->element[i]->len);
        cmd_add(&cmd, fl->element[i + 1]->str, fl->element[i + 1]->len);
    }
    redisAppendCommandArgv(c, cmd.argc, cmd.argv, cmd.len);
    cmd_free(&cmd);
}

/* The last error a finalize of entry id met, or NULL. */
static const char *finalize_failure_find(const struct finalize *f, const char *id)
{
    for (size_t i = 0; i < FINALIZE_FAILURES; i++)
        if (strcmp(f->failures[i].id, id) == 0)
            return f->failures[i].error;
    return NULL;
}

/* Remembers why a finalize of entry id failed, for its dead letter should it
 * come to that; the oldest memory makes room. */
static void finalize_failure_note(struct finalize *f, const char *id, const char *error)
{
    struct finalize_failure *slot = NULL;
    for (size_t i = 0; i < FINALIZE_FAILURES && slot == NULL; i++)
        if (strcmp(f->failures[i].id, id) == 0)
            slot = &f->failures[i];
    if (slot == NULL) {
        slot = &f->failures[f->next_failure];
        f->next_failure = (f->next_failure + 1) % FINALIZE_FAILURES;
    }
    snprintf(slot->id, sizeof(slot->id), "%s", id);
    snprintf(slot->error, sizeof(slot->error), "%s", error);
    f->last_error = slot->error;
}

/* From acceptance to the outcome, for the log; -1 if either time is unreadable. */
static long long finalize_duration_ms(const struct chat_result *res)
{
    long long a, b;
    if (clock_iso8601_parse(res->accepted, &a) != 0 ||
        clock_iso8601_parse(res->timestamp, &b) != 0)
        return -1;
    return b - a;
}

static void finalize_log(struct finalize *f, const struct chat_result *res,
                         const redisReply *r)
{
    long long wrote = r->element[0]->integer;
    const char *found = r->element[1]->str;
    if (wrote) {
        f->stats.written++;
        metrics_inc(metrics_results_written);
        if (res->status == CHAT_COMPLETED)
            log_info(res->trace,
                     "event=completed model=%s total_tokens=%lld attempts=%lld "
                     "duration_ms=%lld",
                     res->model ? res->model : "?", res->total_tokens, res->attempts,
                     finalize_duration_ms(res));
        else
            log_info(res->trace,
                     "event=failed code=%s attempts=%lld duration_ms=%lld "
                     "message=\"%.300s\"",
                     res->error_code ? res->error_code : "?", res->attempts,
                     finalize_duration_ms(res),
                     res->error_message ? res->error_message : "");
    } else if (found[0]) {
        f->stats.duplicate++;
        metrics_inc(metrics_results_duplicate);
        log_info(res->trace, "event=duplicate duplicate result ignored: trace already %s",
                 found);
    } else {
        f->stats.orphan++;
        metrics_inc(metrics_results_orphan);
        log_warn(res->trace, "result for an unknown or expired trace moved to %s",
                 f->keys->dead);
    }
}

/* A result delivered more than MAX_DELIVERIES times without being written: the
 * trace cannot be written (that is why), so the result goes to the dead-letter
 * stream with the count and the last error this handler saw. */
static void finalize_append_over(struct finalize *f, redisContext *c,
                                 const struct stream_entry *e, struct chat_result *res,
                                 long long deliveries)
{
    char err[128], reason[FINALIZE_ERROR_MAX + 96];
    record_result_parse(e->fields, res, err, sizeof(err)); /* for the trace id only */
    const char *last = finalize_failure_find(f, e->id);
    if (last != NULL)
        snprintf(reason, sizeof(reason),
                 "delivered %lld times without being written; last error: %s", deliveries,
                 last);
    else
        snprintf(reason, sizeof(reason), "delivered %lld times without being written",
                 deliveries);
    log_error(res->trace, "result %s moved to %s, its trace never written: %s", e->id,
              f->keys->dead, reason);
    f->stats.gave_up++;
    metrics_inc(metrics_dead_letters);
    finalize_append_dead(f, c, e, reason, deliveries, res->trace);
}

/* Decides what entry i needs and appends it to the pipeline; over is its
 * delivery count if it went past the limit, else 0. */
static enum finalize_kind finalize_append(struct finalize *f, redisContext *c,
                                          const redisReply *entries, size_t i,
                                          long long over, struct finalize_item *item,
                                          char *tracekey, size_t tracekeylen)
{
    struct stream_entry e;
    char err[128];
    struct chat_result *res = &item->res;
    if (stream_entry_at(entries, i, &e) != 0)
        return FINALIZE_SKIP;
    item->id = e.id;
    if (e.fields == NULL) {
        /* Deleted after it was delivered: nothing to write, just stop owning it. */
        redisAppendCommand(c, "XACK %s %s %s", f->keys->results, KEYS_GROUP_HANDLERS,
                           e.id);
        return FINALIZE_ACK;
    }
    if (over > 0) {
        finalize_append_over(f, c, &e, res, over);
        return FINALIZE_DEAD;
    }
    int bad = record_result_parse(e.fields, res, err, sizeof(err)) != 0;
    if (!bad && (res->trace == NULL || res->trace[0] == '\0')) {
        snprintf(err, sizeof(err), "missing field '%s'", REC_TRACE);
        bad = 1;
    }
    if (bad) {
        log_warn(res->trace, "malformed result %s moved to %s: %s", e.id, f->keys->dead,
                 err);
        f->stats.dead++;
        metrics_inc(metrics_dead_letters);
        finalize_append_dead(f, c, &e, err, 0, res->trace);
        return FINALIZE_DEAD;
    }
    keys_trace(f->keys, res->trace, tracekey, tracekeylen);
    finalize_append_script(f, c, &e, res->trace, tracekey);
    return FINALIZE_SCRIPT;
}

int finalize_entries(struct finalize *f, redisContext *c, const redisReply *entries,
                     const long long *over)
{
    size_t n = entries->elements;
    if (n == 0)
        return 0;

    int rc = -1;
    long long t0 = clock_mono_ms();
    struct finalize_item *items = calloc(n, sizeof(*items));
    char tracekey[KEYS_MAX + 128];
    if (items == NULL) {
        log_error(NULL, "out of memory for a batch of %zu results", n);
        goto out;
    }

    redisAppendCommand(c, "SCRIPT LOAD %s", finalize_script);
    for (size_t i = 0; i < n; i++)
        items[i].kind = finalize_append(f, c, entries, i, over ? over[i] : 0, &items[i],
                                        tracekey, sizeof(tracekey));

    redisReply *load = NULL;
    if (redisGetReply(c, (void **)&load) != REDIS_OK) {
        log_warn(NULL, "Redis connection lost while finalizing: %s", c->errstr);
        goto out;
    }
    if (evalsha_learn(&f->lua, load) != 0 && load->type == REDIS_REPLY_ERROR)
        log_error(NULL, "Redis refused to load the finalize script: %s", load->str);
    freeReplyObject(load);
    for (size_t i = 0; i < n; i++) {
        struct finalize_item *it = &items[i];
        if (it->kind == FINALIZE_SKIP)
            continue;
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            log_warn(NULL, "Redis connection lost while finalizing: %s", c->errstr);
            goto out;
        }
        if (it->kind == FINALIZE_SCRIPT && r->type == REDIS_REPLY_ARRAY &&
            r->elements == 2)
            finalize_log(f, &it->res, r);
        else if (r->type == REDIS_REPLY_ERROR || it->kind == FINALIZE_SCRIPT) {
            const char *why = r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply";
            log_error(it->res.trace, "Redis refused a finalize step for result %s: %s",
                      it->id, why);
            if (it->kind == FINALIZE_SCRIPT)
                finalize_failure_note(f, it->id, why);
        }
        freeReplyObject(r);
    }
    metrics_observe(&metrics_handler_write_duration, (clock_mono_ms() - t0) / 1000.0);
    rc = 0;
out:
    free(items);
    return rc;
}
