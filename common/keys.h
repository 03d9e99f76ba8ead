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
 *   {prefix}quota:{owner}  hash: a gateway key's quota state, its request rate and
 *                                its chats not final yet (quota.h); written by the
 *                                api's intake, released by the handler and by cancels
 *   {prefix}worker:{consumer}  hash: a live worker's heartbeat, with a short TTL
 *   {prefix}workers      sorted set: consumer names by heartbeat expiry (Unix ms)
 *   {prefix}stats        hash: chats finished for good, by final status (counters)
 *   {prefix}webhooks     stream: webhook deliveries due, read by group "webhooks"
 *   {prefix}webhooks:delayed          zset: deliveries waiting for a retry, by due time
 *   {prefix}webhooks:delayed:entries  hash: their fields (webhook.h)
 *   {prefix}events:{id}  pub/sub channel (not a key): a trace's events (events.h) */
#ifndef CHATQ_KEYS_H
#define CHATQ_KEYS_H

#include <stddef.h>

#define KEYS_GROUP_PROCESSORS "processors"
#define KEYS_GROUP_HANDLERS "handlers"
#define KEYS_GROUP_WEBHOOKS "webhooks"

#define KEYS_PREFIX_MAX 64
#define KEYS_MAX 128

struct keys {
    char requests[KEYS_MAX];
    char results[KEYS_MAX];
    char dead[KEYS_MAX];
    char trace_prefix[KEYS_MAX];
    char idem_prefix[KEYS_MAX];
    char quota_prefix[KEYS_MAX];
    char worker_prefix[KEYS_MAX];
    char workers[KEYS_MAX];
    char stats[KEYS_MAX];
    char webhooks[KEYS_MAX];
    char webhooks_delayed[KEYS_MAX];
    char webhooks_entries[KEYS_MAX];
    char events_prefix[KEYS_MAX];
};

/* Returns 0, or -1 if the prefix is longer than KEYS_PREFIX_MAX. */
int keys_init(struct keys *k, const char *prefix);

/* Writes the hash key of a trace; out must hold KEYS_MAX + the id's length. */
void keys_trace(const struct keys *k, const char *trace, char *out, size_t outlen);

/* Writes the name of the cancel channel; out must hold KEYS_MAX. */
void keys_cancel(const struct keys *k, char *out, size_t outlen);

/* Writes the key of an Idempotency-Key's value; out must hold KEYS_MAX + its length. */
void keys_idem(const struct keys *k, const char *key, char *out, size_t outlen);

/* Writes the key of owner's quota hash; out must hold KEYS_MAX + the owner's length. */
void keys_quota(const struct keys *k, const char *owner, char *out, size_t outlen);
/* Writes the events channel of a trace (events.h); out must hold KEYS_MAX + the
 * id's length. */
void keys_events(const struct keys *k, const char *trace, char *out, size_t outlen);

#endif
