/* status.c - see status.h. */
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "stream.h"

/* The commands of the first round trip, in the order they are sent. */
enum {
    ST_TIME,
    ST_WORKERS,
    ST_GROUPS_REQ,
    ST_GROUPS_RES,
    ST_STREAM_REQ,
    ST_STREAM_RES,
    ST_STREAM_DEAD,
    ST_DEAD_LATEST,
    ST_TOTALS,
    ST_PENDING_REQ,
    ST_PENDING_RES,
    ST_CONSUMERS_REQ,
    ST_CONSUMERS_RES,
    ST_MEMORY,
    ST_N
};

/* An integer member of a field/value array (XINFO's replies), or 0. */
static long long status_int(const redisReply *map, const char *name)
{
    if (map == NULL || map->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i + 1 < map->elements; i += 2) {
        const redisReply *k = map->element[i], *v = map->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || strcmp(k->str, name) != 0)
            continue;
        if (v->type == REDIS_REPLY_INTEGER)
            return v->integer;
        if (v->type == REDIS_REPLY_STRING)
            return atoll(v->str);
        return 0;
    }
    return 0;
}

/* A line "name:value" of an INFO reply, into out ("" when absent). */
static void status_info_field(const redisReply *r, const char *name, char *out,
                              size_t len)
{
    out[0] = '\0';
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        return;
    size_t n = strlen(name);
    for (const char *p = r->str; p != NULL && *p; p = strchr(p, '\n')) {
        if (*p == '\n')
            p++;
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            size_t vl = strcspn(v, "\r\n");
            snprintf(out, len, "%.*s", (int)vl, v);
            return;
        }
    }
}

/* The Unix ms an entry id was made at. */
static long long status_id_ms(const char *id)
{
    return id != NULL ? atoll(id) : 0;
}

static json_t *status_group(const char *stream, const char *group,
                            const redisReply *groups, const redisReply *info,
                            const redisReply *pending, const redisReply *consumers,
                            long long now)
{
    const redisReply *g = NULL;
    for (size_t i = 0;
         groups && groups->type == REDIS_REPLY_ARRAY && i < groups->elements; i++) {
        const char *name = stream_field(groups->element[i], "name", NULL);
        if (name != NULL && strcmp(name, group) == 0)
            g = groups->element[i];
    }
    long long oldest = 0;
    if (pending && pending->type == REDIS_REPLY_ARRAY && pending->elements >= 2 &&
        pending->element[1]->type == REDIS_REPLY_STRING) {
        oldest = now - status_id_ms(pending->element[1]->str);
        if (oldest < 0)
            oldest = 0;
    }
    json_t *cs = json_array();
    for (size_t i = 0;
         consumers && consumers->type == REDIS_REPLY_ARRAY && i < consumers->elements;
         i++) {
        const redisReply *c = consumers->element[i];
        const char *name = stream_field(c, "name", NULL);
        if (name == NULL)
            continue;
        json_array_append_new(cs,
                              json_pack("{s:s, s:I, s:I}", "name", name, "pending",
                                        (json_int_t)status_int(c, "pending"), "idle_ms",
                                        (json_int_t)status_int(c, "idle")));
    }
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:o}", "stream", stream,
                     "group", group, "length", (json_int_t)status_int(info, "length"),
                     "added", (json_int_t)status_int(info, "entries-added"), "lag",
                     (json_int_t)status_int(g, "lag"), "pending",
                     (json_int_t)status_int(g, "pending"), "oldest_pending_ms",
                     (json_int_t)oldest, "consumers", cs);
}

static json_t *status_dead(const redisReply *info, const redisReply *latest)
{
    json_t *arr = json_array();
    for (size_t i = 0;
         latest && latest->type == REDIS_REPLY_ARRAY && i < latest->elements; i++) {
        struct stream_entry e;
        if (stream_entry_at(latest, i, &e) != 0)
            continue;
        const char *source = stream_field(e.fields, "source", NULL);
        const char *reason = stream_field(e.fields, "reason", NULL);
        const char *trace = stream_field(e.fields, "trace", NULL);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "id", e.id, "source",
                                             source ? source : "", "reason",
                                             reason ? reason : "", "trace",
                                             trace ? trace : ""));
    }
    return json_pack("{s:I, s:I, s:o}", "length", (json_int_t)status_int(info, "length"),
                     "added", (json_int_t)status_int(info, "entries-added"), "latest",
                     arr);
}

/* A worker's hash as an object: the counters as numbers, the rest as text. */
static json_t *status_worker(const redisReply *h)
{
    static const char *const numbers[] = {"pid",    "in_flight", "done",
                                          "failed", "beat",      "ttl_ms"};
    json_t *o = json_object();
    for (size_t i = 0; h && h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2) {
        const char *k = h->element[i]->str, *v = h->element[i + 1]->str;
        if (k == NULL || v == NULL)
            continue;
        int num = 0;
        for (size_t n = 0; n < sizeof(numbers) / sizeof(numbers[0]); n++)
            num |= strcmp(k, numbers[n]) == 0;
        json_object_set_new(o, k, num ? json_integer(atoll(v)) : json_string(v));
    }
    return o;
}

json_t *status_collect(redisContext *c, const struct keys *keys, char *err, size_t errlen)
{
    redisReply *r[ST_N] = {0};
    redisReply **hashes = NULL;
    json_t *out = NULL, *workers = NULL;
    size_t nlive = 0;
    char worker_key[KEYS_MAX + 256];

    redisAppendCommand(c, "TIME");
    redisAppendCommand(c, "ZRANGE %s 0 -1 WITHSCORES", keys->workers);
    redisAppendCommand(c, "XINFO GROUPS %s", keys->requests);
    redisAppendCommand(c, "XINFO GROUPS %s", keys->results);
    redisAppendCommand(c, "XINFO STREAM %s", keys->requests);
    redisAppendCommand(c, "XINFO STREAM %s", keys->results);
    redisAppendCommand(c, "XINFO STREAM %s", keys->dead);
    redisAppendCommand(c, "XREVRANGE %s + - COUNT %d", keys->dead, STATUS_DEAD_LATEST);
    redisAppendCommand(c, "HGETALL %s", keys->stats);
    redisAppendCommand(c, "XPENDING %s %s", keys->requests, KEYS_GROUP_PROCESSORS);
    redisAppendCommand(c, "XPENDING %s %s", keys->results, KEYS_GROUP_HANDLERS);
    redisAppendCommand(c, "XINFO CONSUMERS %s %s", keys->requests, KEYS_GROUP_PROCESSORS);
    redisAppendCommand(c, "XINFO CONSUMERS %s %s", keys->results, KEYS_GROUP_HANDLERS);
    redisAppendCommand(c, "INFO memory");
    for (int i = 0; i < ST_N; i++) {
        void *rep = NULL;
        if (redisGetReply(c, &rep) != REDIS_OK) {
            snprintf(err, errlen, "%s", c->errstr[0] ? c->errstr : "connection lost");
            goto out;
        }
        r[i] = rep;
    }
    const redisReply *t = r[ST_TIME];
    if (t->type != REDIS_REPLY_ARRAY || t->elements != 2) {
        snprintf(err, errlen, "TIME: %s",
                 t->type == REDIS_REPLY_ERROR ? t->str : "unexpected reply");
        goto out;
    }
    long long now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;

    /* The live workers: a score (expiry) still ahead. */
    const redisReply *z = r[ST_WORKERS];
    size_t nz = z->type == REDIS_REPLY_ARRAY ? z->elements / 2 : 0;
    hashes = calloc(nz + 1, sizeof(*hashes));
    if (hashes == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nz; i++) {
        if (atoll(z->element[2 * i + 1]->str) < now)
            continue;
        snprintf(worker_key, sizeof(worker_key), "%s%s", keys->worker_prefix,
                 z->element[2 * i]->str);
        redisAppendCommand(c, "HGETALL %s", worker_key);
        nlive++;
    }
    for (size_t i = 0; i < nlive; i++) {
        void *rep = NULL;
        if (redisGetReply(c, &rep) != REDIS_OK) {
            snprintf(err, errlen, "%s", c->errstr[0] ? c->errstr : "connection lost");
            goto out;
        }
        hashes[i] = rep;
    }
    workers = json_array();
    for (size_t i = 0; i < nlive; i++)
        if (hashes[i]->type == REDIS_REPLY_ARRAY && hashes[i]->elements > 0)
            json_array_append_new(workers, status_worker(hashes[i]));

    json_t *groups = json_pack(
        "[o, o]",
        status_group("requests", KEYS_GROUP_PROCESSORS, r[ST_GROUPS_REQ],
                     r[ST_STREAM_REQ], r[ST_PENDING_REQ], r[ST_CONSUMERS_REQ], now),
        status_group("results", KEYS_GROUP_HANDLERS, r[ST_GROUPS_RES], r[ST_STREAM_RES],
                     r[ST_PENDING_RES], r[ST_CONSUMERS_RES], now));
    char used[32], maxmem[32], policy[64];
    status_info_field(r[ST_MEMORY], "used_memory", used, sizeof(used));
    status_info_field(r[ST_MEMORY], "maxmemory", maxmem, sizeof(maxmem));
    status_info_field(r[ST_MEMORY], "maxmemory_policy", policy, sizeof(policy));
    out = json_pack("{s:I, s:o, s:o, s:o, s:{s:I, s:I}, s:{s:I, s:I, s:s}}", "time",
                    (json_int_t)now, "workers", workers, "groups", groups, "dead",
                    status_dead(r[ST_STREAM_DEAD], r[ST_DEAD_LATEST]), "totals",
                    "completed", (json_int_t)status_int(r[ST_TOTALS], "completed"),
                    "failed", (json_int_t)status_int(r[ST_TOTALS], "failed"), "redis",
                    "used_memory", (json_int_t)atoll(used), "maxmemory",
                    (json_int_t)atoll(maxmem), "maxmemory_policy", policy);
    workers = NULL; /* stolen by json_pack's "o", even when it failed */
    if (out == NULL)
        snprintf(err, errlen, "out of memory");
out:
    json_decref(workers);
    for (size_t i = 0; hashes != NULL && i < nlive; i++)
        freeReplyObject(hashes[i]);
    free(hashes);
    for (int i = 0; i < ST_N; i++)
        freeReplyObject(r[i]);
    return out;
}
