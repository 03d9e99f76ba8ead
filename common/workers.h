/* workers.h - live workers in Redis, and the consumers dead ones leave behind.
 *
 * Each processor and handler keeps a heartbeat hash {prefix}worker:{consumer}
 * (fields below) with a TTL of WORKER_TTL_MS, refreshed every third of it, and
 * its name in the sorted set {prefix}workers scored by when that heartbeat
 * expires (Redis's clock, Unix ms), so that one command lists the live ones:
 *
 *   ZRANGEBYSCORE chatq:workers <now ms> +inf
 *
 * A worker that stops removes both; one that is killed drops out of that
 * listing when its score passes and its hash expires, within WORKER_TTL_MS. Each
 * beat also trims the scores that have passed, so the set holds only the living
 * and those dead for less than WORKER_TTL_MS.
 *
 * A killed worker's consumer stays in its group (XINFO CONSUMERS) for ever
 * unless someone deletes it; the sweep does, for a consumer that holds no
 * pending entry, has been idle for CONSUMER_IDLE_MS and has no heartbeat. Never
 * one with pending entries: XGROUP DELCONSUMER would make them unclaimable. */
#ifndef CHATQ_WORKERS_H
#define CHATQ_WORKERS_H

#include "clock.h"
#include "keys.h"

struct cmd;
struct redisContext;
struct redisReply;

/* The settings, for the config tables of the processor and the handler. */
#define CONFIG_WORKER_TTL_VAR(dst)                                                       \
    {                                                                                    \
        "WORKER_TTL_MS", "worker-ttl-ms", CONFIG_INT, "15000",                           \
            "TTL of this worker's heartbeat in Redis ({prefix}worker:{consumer}), "      \
            "refreshed every third of it; a killed worker vanishes from the live list "  \
            "within it",                                                                 \
            &(dst), 1000, 3600000, 0                                                     \
    }

#define CONFIG_CONSUMER_IDLE_VAR(dst)                                                    \
    {                                                                                    \
        "CONSUMER_IDLE_MS", "consumer-idle-ms", CONFIG_INT, "300000",                    \
            "a consumer of this worker's group that holds nothing, has been idle this "  \
            "long and has no heartbeat (its worker died) is deleted; 0: never",          \
            &(dst), 0, 86400000, 0                                                       \
    }

#define WORKERS_ERROR_MAX 256
#define WORKERS_HOST_MAX 128

/* One worker's heartbeat. The counters are the owner's to update between beats. */
struct workers {
    const struct keys *keys; /* borrowed */
    const char *consumer;    /* borrowed: the consumer name, also the worker's */
    const char *role;        /* static: "processor", "handler" */
    char host[WORKERS_HOST_MAX];
    long pid;
    char started[CLOCK_ISO_LEN];
    long long ttl_ms;
    long long in_flight; /* requests held now */
    long long done;      /* chats finished well (processor) / records written (handler) */
    long long failed;    /* chats failed for good / results dead-lettered */
    char last_error[WORKERS_ERROR_MAX]; /* "" until there is one */
    char last_error_at[CLOCK_ISO_LEN];
    char key[KEYS_MAX + 256]; /* {prefix}worker:{consumer} */
};

/* Everything borrowed must outlive w. */
void workers_init(struct workers *w, const struct keys *keys, const char *consumer,
                  const char *role, long long ttl_ms);

/* Remembers the latest error ("code: message", or message alone when code is
 * NULL; cut to fit) with the time. */
void workers_error(struct workers *w, const char *code, const char *message);

/* How often to beat: a third of the TTL, so two beats may be lost in a row. */
long long workers_beat_ms(const struct workers *w);

/* Starts c (cmd_free it) as the heartbeat: one EVAL writing the hash, its TTL and
 * the score. Strings are borrowed from w until c is sent. */
void workers_beat_cmd(const struct workers *w, struct cmd *c);

/* Starts c (cmd_free it) as the goodbye of a stopping worker: its hash and score
 * removed. */
void workers_leave_cmd(const struct workers *w, struct cmd *c);

/* Starts c (cmd_free it) as one sweep of group on stream: deletes its consumers
 * that hold nothing, have been idle for idle_ms and have no heartbeat. Answers the
 * array of names deleted. Strings borrowed until sent. */
void workers_sweep_cmd(const struct keys *keys, const char *stream, const char *group,
                       long long idle_ms, struct cmd *c);

/* The wait until the next sweep: about half of idle_ms (at most 30 s), spread by
 * r (uniform in [0, 1)) over 0.5x-1.5x so that many workers do not sweep at once. */
long long workers_sweep_wait_ms(long long idle_ms, double r);

/* Logs the consumers a sweep's reply says it deleted. */
void workers_sweep_log(const struct redisReply *r, const char *group);

/* The same on a blocking connection (the handler's). Each returns 0, or -1 if
 * Redis failed (logged for a sweep; a beat's failure is the caller's to see). */
int workers_beat_sync(struct redisContext *c, const struct workers *w);
int workers_leave_sync(struct redisContext *c, const struct workers *w);
int workers_sweep_sync(struct redisContext *c, const struct keys *keys,
                       const char *stream, const char *group, long long idle_ms);

#endif
