/* queue.h - the Redis side of the sender: the {prefix}webhooks stream and its
 * consumer group "webhooks", the retry schedule, and the dead-letter stream.
 *
 * An event is queued by the script that made its chat final (webhook.h). A
 * sender reads it with XREADGROUP, so while it is being delivered it is pending
 * under that sender's consumer; a sender killed mid-delivery leaves it pending,
 * and any sender takes it over with XAUTOCLAIM once it has been idle for
 * CLAIM_IDLE_MS (longer than a delivery may take), then delivers it again with
 * the same webhook-id. Every end of an attempt is one script that first checks
 * the entry is still this consumer's (a sender that was presumed dead and came
 * back must not reschedule an event that another sender now holds):
 *   delivered, or 410: XACK + XDEL;
 *   failed, attempts left: the event (its attempts counted) goes to
 *     {prefix}webhooks:delayed (a sorted set by due time, Unix ms) and its fields
 *     to {prefix}webhooks:delayed:entries, then XACK + XDEL;
 *   failed for the last time, or refused: a dead letter (deadletter.h), XACK +
 *     XDEL.
 * Due events go back into the stream with one script (XADD, ZREM, HDEL), so a
 * retry is never lost nor doubled by a crash in between. */
#ifndef CHATQ_WEBHOOK_QUEUE_H
#define CHATQ_WEBHOOK_QUEUE_H

#include <stddef.h>

#include "keys.h"
#include "rconn.h"

struct redisContext;
struct redisReply;

struct queue {
    const struct rconn_url *url; /* borrowed */
    const struct keys *keys;     /* borrowed */
    long long claim_idle_ms;
    long long dead_max;
    char consumer[256];
    struct redisContext *c; /* owned; NULL while disconnected */
    int own_pending;        /* after a connect: this consumer's pending entries first */
};

void queue_init(struct queue *q, const struct rconn_url *url, const struct keys *keys,
                long long claim_idle_ms, long long dead_max);

/* Connects and makes sure the group exists. Returns 0, or -1 with the reason in
 * err (never the password). */
int queue_connect(struct queue *q, char *err, size_t errlen);

/* Called for each entry read or claimed: id and fields are borrowed from the
 * reply for the duration of the call. */
typedef void queue_take_fn(const char *id, const struct redisReply *fields, void *arg);

/* Reads up to count new entries (after a connect, this consumer's own pending
 * ones first), waiting up to block_ms (0: not at all). Returns how many were
 * handed to take, or -1 when the connection was lost (then closed). */
int queue_read(struct queue *q, long long count, long long block_ms, queue_take_fn *take,
               void *arg);

/* Takes over up to count entries idle for CLAIM_IDLE_MS (a sender died holding
 * them). Returns how many, or -1 when the connection was lost. */
int queue_claim(struct queue *q, long long count, queue_take_fn *take, void *arg);

/* Moves the retries due by now_ms back into the stream. Returns how many, or -1
 * when the connection was lost. */
int queue_promote(struct queue *q, long long now_ms);

enum queue_end { QUEUE_DONE, QUEUE_RETRY, QUEUE_DEAD };

/* Ends an attempt of entry id (fields: its field/value pairs, n strings):
 * QUEUE_DONE acknowledges it; QUEUE_RETRY schedules it for due_ms (Unix) as
 * event with attempts; QUEUE_DEAD dead-letters it with reason and attempts. Returns
 * 1 when done, 0 when the entry is no longer this consumer's (nothing changed),
 * -1 on failure (logged; the entry stays pending and is taken over later). */
int queue_end(struct queue *q, const char *id, enum queue_end how, const char *event,
              long long due_ms, long long attempts, const char *reason,
              const char *const *fields, size_t n);

/* Retires the consumer if it holds nothing, then disconnects. */
void queue_close(struct queue *q);

#endif
