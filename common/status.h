/* status.h - one snapshot of the whole system as Redis sees it, for chatq-stat
 * and the api's status page: the live workers (workers.h), each stream's group
 * (length, lag, pending, pending per consumer, oldest pending), the dead letters,
 * the finished-chat counters and Redis's memory. Rates are the caller's: the
 * difference of two snapshots' counters over their time.
 *
 * Cheap enough to run every second: two pipelined round trips of a fixed
 * number of commands (plus one HGETALL per live worker), no SCAN, no KEYS. */
#ifndef CHATQ_STATUS_H
#define CHATQ_STATUS_H

#include <stddef.h>

#include <jansson.h>

#include "keys.h"

struct redisContext;

/* How many of the latest dead letters a snapshot carries. */
#define STATUS_DEAD_LATEST 5

/* Returns a new JSON object (caller json_decref), or NULL with the reason in err
 * (the connection failed: the caller drops it). Its members:
 *   time          Redis's clock, Unix ms
 *   workers       [{consumer, role, host, pid, version, started, beat, ttl_ms,
 *                   in_flight, done, failed, last_error, last_error_at}], live only
 *   groups        [{stream, group, length, added, lag, pending, oldest_pending_ms,
 *                   consumers: [{name, pending, idle_ms}]}] for requests/processors
 *                 and results/handlers
 *   dead          {length, added, latest: [{id, source, reason, trace}]}
 *   totals        {completed, failed}: records written, for ever
 *   parked        backoffs waiting in {prefix}delayed
 *   redis         {used_memory, maxmemory, maxmemory_policy}
 * Numbers are integers; a stream or group that does not exist yet counts 0. */
json_t *status_collect(struct redisContext *c, const struct keys *keys, char *err,
                       size_t errlen);

#endif
