/* stream.c - see stream.h. */
#include "stream.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "rconn.h"

int stream_group_ensure(redisContext *c, const char *key, const char *group, char *err,
                        size_t errlen)
{
    redisReply *r = redisCommand(c, "XGROUP CREATE %s %s 0 MKSTREAM", key, group);
    int rc = 0;
    if (r == NULL) {
        snprintf(err, errlen, "XGROUP CREATE %s: %s", key, c->errstr);
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0) {
        snprintf(err, errlen, "XGROUP CREATE %s: %s", key, r->str);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

int stream_group_exists(redisContext *c, const char *key, const char *group, char *why,
                        size_t whylen)
{
    redisReply *r = redisCommand(c, "XINFO GROUPS %s", key);
    int rc = 0;
    if (r == NULL) {
        snprintf(why, whylen, "Redis is unreachable: %s", c->errstr);
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "no such key") != NULL) {
        snprintf(why, whylen, "stream %s does not exist yet", key);
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "XINFO GROUPS %s: %s", key, r->str);
        rc = -1;
    } else if (r->type == REDIS_REPLY_ARRAY) {
        /* Each group is a flat name/value array, as a stream entry's fields. */
        for (size_t i = 0; i < r->elements && rc == 0; i++) {
            const char *name = stream_field(r->element[i], "name", NULL);
            if (name != NULL && strcmp(name, group) == 0)
                rc = 1;
        }
        if (rc == 0)
            snprintf(why, whylen, "group %s of stream %s does not exist yet", group, key);
    }
    freeReplyObject(r);
    return rc;
}

const char stream_retire_script[] =
    "if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then\n"
    "  return 0\n"
    "end\n"
    "return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) >= 0 and 1 "
    "or 0\n";

int stream_consumer_retire(redisContext *c, const char *key, const char *group,
                           const char *consumer)
{
    redisReply *r =
        redisCommand(c, "EVAL %s 1 %s %s %s", stream_retire_script, key, group, consumer);
    int rc =
        rconn_reply_failed(r) || r->type != REDIS_REPLY_INTEGER ? -1 : (int)r->integer;
    freeReplyObject(r);
    return rc;
}

void stream_consumer_name(char *out, size_t outlen, const char *role)
{
    char host[128];
    if (gethostname(host, sizeof(host)) != 0)
        strcpy(host, "unknown");
    host[sizeof(host) - 1] = '\0';
    snprintf(out, outlen, "%s-%s-%ld", role, host, (long)getpid());
}

const redisReply *stream_read_entries(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements == 0)
        return NULL;
    const redisReply *s = r->element[0];
    if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
        s->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    return s->element[1];
}

int stream_entry_at(const redisReply *entries, size_t i, struct stream_entry *out)
{
    const redisReply *e = entries->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return -1;
    out->id = e->element[0]->str;
    out->fields = e->element[1]->type == REDIS_REPLY_ARRAY ? e->element[1] : NULL;
    return 0;
}

long stream_id_index(const char *const *ids, size_t n, const char *id, size_t *hint)
{
    for (size_t k = 0; k < n; k++) {
        size_t i = (*hint + k) % n;
        if (strcmp(ids[i], id) == 0) {
            *hint = i + 1;
            return (long)i;
        }
    }
    return -1;
}

const char *stream_field(const redisReply *fields, const char *name, size_t *len)
{
    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(k->str, name) == 0) {
            if (len)
                *len = v->len;
            return v->str;
        }
    }
    return NULL;
}
