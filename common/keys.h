/* keys.h - the Redis key and group names: the contract between the binaries.
 *
 *   {prefix}requests     stream: accepted chats, read by group "processors"
 *   {prefix}results      stream: outcomes, read by group "handlers"
 *   {prefix}dead         stream: entries that could not be processed (capped)
 *   {prefix}trace:{id}   hash:   a trace's record (fields in record.h), with a TTL
 *   {prefix}idem:{key}   string: "{traceId}:{fingerprint}" of a POST's Idempotency-Key,
 *                                with the record's TTL (written by the api's intake)
 *   {prefix}cancel       pub/sub channel: the trace id of each chat just cancelled,
 *                                published by the api, heard by every processor
 *   {prefix}quota:rpm:{owner}    string: a gateway key's request-rate state (GCRA: the
 *                                theoretical arrival time, Unix ms), expires when idle
 *   {prefix}quota:inflight:{owner}
 *                                sorted set: a gateway key's chats not final yet, trace
 *                                ids scored by the Unix ms their slot lapses at (written
 *                                by the api's intake, released by the handler) */
#ifndef CHATQ_KEYS_H
#define CHATQ_KEYS_H

#include <stddef.h>

#define KEYS_GROUP_PROCESSORS "processors"
#define KEYS_GROUP_HANDLERS "handlers"

#define KEYS_PREFIX_MAX 64
#define KEYS_MAX 128

struct keys {
    char requests[KEYS_MAX];
    char results[KEYS_MAX];
    char dead[KEYS_MAX];
    char trace_prefix[KEYS_MAX];
    char idem_prefix[KEYS_MAX];
    char quota_rpm_prefix[KEYS_MAX];
    char quota_inflight_prefix[KEYS_MAX];
};

/* Returns 0, or -1 if the prefix is longer than KEYS_PREFIX_MAX. */
int keys_init(struct keys *k, const char *prefix);

/* Writes the hash key of a trace; out must hold KEYS_MAX + the id's length. */
void keys_trace(const struct keys *k, const char *trace, char *out, size_t outlen);

/* Writes the name of the cancel channel; out must hold KEYS_MAX. */
void keys_cancel(const struct keys *k, char *out, size_t outlen);

/* Writes the key of an Idempotency-Key's value; out must hold KEYS_MAX + its length. */
void keys_idem(const struct keys *k, const char *key, char *out, size_t outlen);

/* Writes the key of a quota of owner (prefix: quota_rpm_prefix or
 * quota_inflight_prefix); out must hold KEYS_MAX + the owner's length. */
void keys_quota(const char *prefix, const char *owner, char *out, size_t outlen);

#endif
