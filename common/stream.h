/* stream.h - Redis stream helpers: consumer groups, consumer names, and reading
 * the entries out of XREADGROUP / XCLAIM / XAUTOCLAIM replies. */
#ifndef CHATQ_STREAM_H
#define CHATQ_STREAM_H

#include <stddef.h>

struct redisContext;
struct redisReply;

/* Creates group on the stream at id 0 (MKSTREAM), so entries written before
 * the first consumer started are still delivered; an existing group is fine.
 * Returns 0, or -1 with the reason in err. */
int stream_group_ensure(struct redisContext *c, const char *key, const char *group,
                        char *err, size_t errlen);

/* Whether group exists on the stream key (the readiness probes' question): 1 if
 * it does; 0 if not (the stream or the group is missing), -1 if Redis failed;
 * on 0 and -1 why says what is missing or what failed. */
int stream_group_exists(struct redisContext *c, const char *key, const char *group,
                        char *why, size_t whylen);

/* "role-host-pid": unique per process, on one machine or many. */
void stream_consumer_name(char *out, size_t outlen, const char *role);

/* A Lua script (KEYS[1] stream; ARGV[1] group, ARGV[2] consumer) that deletes
 * the consumer if, and only if, it holds no pending entries: XGROUP DELCONSUMER
 * would make those unclaimable, i.e. lost. Returns 1 if deleted, 0 if kept.
 * Run by a process on a clean exit, so restarts leave no trail of consumers. */
extern const char stream_retire_script[];

/* Runs stream_retire_script on a blocking connection; returns 1, 0, or -1. */
int stream_consumer_retire(struct redisContext *c, const char *key, const char *group,
                           const char *consumer);

/* The entries array in an XREADGROUP reply (first stream), or NULL if none. */
const struct redisReply *stream_read_entries(const struct redisReply *r);

struct stream_entry {
    const char *id;
    const struct redisReply *fields; /* NULL when the entry was deleted meanwhile */
};

/* Entry i of an entries array; returns 0, or -1 if it is malformed. */
int stream_entry_at(const struct redisReply *entries, size_t i, struct stream_entry *out);

/* The position of id in ids[0..n), looked for from *hint on, or -1. XCLAIM
 * answers in the order of the ids it was given, so when its entries are looked up
 * in that list one after the other, each is found at the first look. */
long stream_id_index(const char *const *ids, size_t n, const char *id, size_t *hint);

/* The value of field name in a field/value array (stream entry or HGETALL), or
 * NULL. Borrowed from the reply; len, if not NULL, receives its length. */
const char *stream_field(const struct redisReply *fields, const char *name, size_t *len);

#endif
