/* finalize.c - see finalize.h. */
#include "finalize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cmd.h"
#include "log.h"
#include "record.h"
#include "stream.h"

/* KEYS: trace hash, results stream, dead-letter stream. ARGV: group, entry id,
 * ttl, the status a pending record has, the dead-letter cap, then the entry's
 * field/value pairs. Returns {written (0/1), the status found ('' when there
 * was no record)}. A result for a trace that has no record (an entry written
 * into the requests stream by hand, or a record that expired) cannot be shown
 * to anyone: it goes to the dead-letter stream for a human to look at.
 *
 * Sent with EVAL rather than EVALSHA: Redis caches the compiled script by its
 * hash either way, and EVAL cannot fail with NOSCRIPT after a Redis restart,
 * which spares a reload path for a few hundred bytes per result. */
#define FINALIZE_ORPHAN_REASON                                                           \
    "no such trace: never accepted by the api, or its record expired"

static const char finalize_script[] =
    "local st = redis.call('HGET', KEYS[1], '" REC_STATUS "')\n"
    "local wrote = 0\n"
    "if st == ARGV[4] then\n"
    "  redis.call('HSET', KEYS[1], unpack(ARGV, 6))\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
    "  wrote = 1\n"
    "elseif not st then\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',\n"
    "             '" REC_DEAD_SOURCE "', KEYS[2], '" REC_DEAD_ID "', ARGV[2],\n"
    "             '" REC_DEAD_REASON "', '" FINALIZE_ORPHAN_REASON "',\n"
    "             unpack(ARGV, 6))\n"
    "end\n"
    "redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[2], ARGV[2])\n"
    "return {wrote, st or ''}\n";

void finalize_init(struct finalize *f, const struct keys *keys, long long ttl_s,
                   long long dead_max)
{
    memset(f, 0, sizeof(*f));
    f->keys = keys;
    f->ttl_s = ttl_s;
    f->dead_max = dead_max;
}

/* What was sent for one entry, so that its replies can be read back in order. */
enum finalize_kind {
    FINALIZE_SKIP,   /* nothing sent */
    FINALIZE_ACK,    /* XACK: 1 reply */
    FINALIZE_SCRIPT, /* EVAL: 1 reply */
    FINALIZE_DEAD,   /* MULTI XADD XACK XDEL EXEC: 5 replies */
};

static void finalize_append_script(struct finalize *f, redisContext *c,
                                   const struct stream_entry *e, const char *tracekey)
{
    struct cmd cmd;
    cmd_init(&cmd, "EVAL");
    cmd_addz(&cmd, finalize_script);
    cmd_addz(&cmd, "3");
    cmd_addz(&cmd, tracekey);
    cmd_addz(&cmd, f->keys->results);
    cmd_addz(&cmd, f->keys->dead);
    cmd_addz(&cmd, KEYS_GROUP_HANDLERS);
    cmd_addz(&cmd, e->id);
    cmd_addll(&cmd, f->ttl_s);
    cmd_addz(&cmd, record_status_name(CHAT_PROCESSING));
    cmd_addll(&cmd, f->dead_max);
    /* The entry's pairs verbatim: the result record is the hash record. */
    for (size_t i = 0; i < e->fields->elements; i++)
        cmd_add(&cmd, e->fields->element[i]->str, e->fields->element[i]->len);
    redisAppendCommandArgv(c, cmd.argc, cmd.argv, cmd.len);
    cmd_free(&cmd);
}

/* A result entry nobody can use: keep it for a human in the dead-letter stream. */
static void finalize_append_dead(struct finalize *f, redisContext *c,
                                 const struct stream_entry *e, const char *reason)
{
    struct cmd cmd;
    cmd_init(&cmd, "XADD");
    cmd_addz(&cmd, f->keys->dead);
    cmd_addz(&cmd, "MAXLEN");
    cmd_addz(&cmd, "~");
    cmd_addll(&cmd, f->dead_max);
    cmd_addz(&cmd, "*");
    cmd_addz(&cmd, REC_DEAD_SOURCE);
    cmd_addz(&cmd, f->keys->results);
    cmd_addz(&cmd, REC_DEAD_ID);
    cmd_addz(&cmd, e->id);
    cmd_addz(&cmd, REC_DEAD_REASON);
    cmd_addz(&cmd, reason);
    const redisReply *fl = e->fields;
    for (size_t i = 0; i + 1 < fl->elements; i += 2) {
        cmd_add(&cmd, fl->element[i]->str, fl->element[i]->len);
        cmd_add(&cmd, fl->element[i + 1]->str, fl->element[i + 1]->len);
    }
    redisAppendCommand(c, "MULTI");
    redisAppendCommandArgv(c, cmd.argc, cmd.argv, cmd.len);
    cmd_free(&cmd);
    redisAppendCommand(c, "XACK %s %s %s", f->keys->results, KEYS_GROUP_HANDLERS, e->id);
    redisAppendCommand(c, "XDEL %s %s", f->keys->results, e->id);
    redisAppendCommand(c, "EXEC");
}

static void finalize_log(struct finalize *f, const struct chat_result *res,
                         const redisReply *r)
{
    long long wrote = r->element[0]->integer;
    const char *found = r->element[1]->str;
    if (wrote) {
        f->stats.written++;
        if (res->status == CHAT_COMPLETED)
            log_info(res->trace, "completed model=%s total_tokens=%lld attempts=%lld",
                     res->model ? res->model : "?", res->total_tokens, res->attempts);
        else
            log_info(res->trace, "failed code=%s attempts=%lld message=\"%.300s\"",
                     res->error_code ? res->error_code : "?", res->attempts,
                     res->error_message ? res->error_message : "");
    } else if (found[0]) {
        f->stats.duplicate++;
        log_info(res->trace, "duplicate result ignored: trace already %s", found);
    } else {
        f->stats.orphan++;
        log_warn(res->trace, "result for an unknown or expired trace moved to %s",
                 f->keys->dead);
    }
}

/* Decides what one entry needs and appends it to the pipeline. */
static enum finalize_kind finalize_append(struct finalize *f, redisContext *c,
                                          const redisReply *entries, size_t i,
                                          struct chat_result *res, char *tracekey,
                                          size_t tracekeylen)
{
    struct stream_entry e;
    char err[128];
    if (stream_entry_at(entries, i, &e) != 0)
        return FINALIZE_SKIP;
    if (e.fields == NULL) {
        /* Deleted after it was delivered: nothing to write, just stop owning it. */
        redisAppendCommand(c, "XACK %s %s %s", f->keys->results, KEYS_GROUP_HANDLERS,
                           e.id);
        return FINALIZE_ACK;
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
        finalize_append_dead(f, c, &e, err);
        return FINALIZE_DEAD;
    }
    keys_trace(f->keys, res->trace, tracekey, tracekeylen);
    finalize_append_script(f, c, &e, tracekey);
    return FINALIZE_SCRIPT;
}

int finalize_entries(struct finalize *f, redisContext *c, const redisReply *entries)
{
    size_t n = entries->elements;
    if (n == 0)
        return 0;

    int rc = -1;
    enum finalize_kind *kinds = calloc(n, sizeof(*kinds));
    struct chat_result *results = calloc(n, sizeof(*results));
    char tracekey[KEYS_MAX + 128];
    if (kinds == NULL || results == NULL) {
        log_error(NULL, "out of memory for a batch of %zu results", n);
        goto out;
    }

    for (size_t i = 0; i < n; i++)
        kinds[i] = finalize_append(f, c, entries, i, &results[i], tracekey, sizeof(tracekey));

    for (size_t i = 0; i < n; i++) {
        int replies = kinds[i] == FINALIZE_DEAD ? 5 : kinds[i] == FINALIZE_SKIP ? 0 : 1;
        for (int k = 0; k < replies; k++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) {
                log_warn(NULL, "Redis connection lost while finalizing: %s", c->errstr);
                goto out;
            }
            if (kinds[i] == FINALIZE_SCRIPT && r->type == REDIS_REPLY_ARRAY &&
                r->elements == 2)
                finalize_log(f, &results[i], r);
            else if (r->type == REDIS_REPLY_ERROR || kinds[i] == FINALIZE_SCRIPT)
                log_error(results[i].trace, "Redis refused a finalize step: %s",
                          r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            freeReplyObject(r);
        }
    }
    rc = 0;
out:
    free(kinds);
    free(results);
    return rc;
}
