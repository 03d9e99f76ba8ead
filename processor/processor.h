/* processor.h - the processor's settings and its state: the job slots and their
 * life (read or claimed -> upstream attempts and backoff waits -> result written
 * -> slot free), the two Redis links, and shutdown. What is done on Redis lives
 * in inbox.c (reads, claims, heartbeats, hand-backs: the requests stream's
 * bookkeeping; struct inbox) and outbox.c (results and dead letters; struct
 * outbox). */
#ifndef CHATQ_PROCESSOR_H
#define CHATQ_PROCESSOR_H

#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "config.h"
#include "keys.h"
#include "outcome.h"
#include "rconn.h"
#include "retry.h"
#include "upstream.h"
#include "uuid.h"

struct event;
struct event_base;
struct inbox;
struct live;
struct outbox;
struct pace;
struct pace_limit;
struct redisReply;
struct rlink;

/* Filled by main.c's table of struct config_var; strings borrowed from there. */
struct config {
    struct config_common common;
    const char *api_key; /* secret: never printed, logged or stored */
    const char *base_url;
    const char *ca_file; /* NULL: the system's CAs */
    long long concurrency;
    long long timeout_ms;
    long long connect_timeout_ms;
    long long max_attempts;
    long long retry_base_ms;
    long long retry_max_ms;
    long long retry_after_max_ms;
    long long max_response_bytes;
    long long max_completion_bytes;
    long long claim_idle_ms;
    long long max_deliveries;
    long long dead_letter_max;
    long long shutdown_grace_ms;
    long long rpm, tpm;         /* shared budget per key and model; 0: none */
    long long burst_ms;         /* how much of a minute's budget may go at once */
    long long tokens_estimate;  /* completion tokens assumed before the answer */
    long long park_min_ms;      /* waits this long or longer are parked in Redis */
    long long adaptive;         /* 1: AIMD on the calls kept in flight */
    const char *limits;         /* "model=rpm:tpm,..." overriding rpm and tpm */
    long long worker_ttl_ms;    /* the heartbeat's TTL (live.h) */
    long long consumer_idle_ms; /* dead consumers idle this long are swept; 0: never */
};

/* A stream id is two 64-bit numbers and a dash. */
#define JOB_ID_MAX 48

enum job_state {
    JOB_FREE,
    JOB_ADMITTING,  /* the next attempt is being counted in Redis (admit.h) */
    JOB_RUNNING,    /* an upstream attempt is in flight */
    JOB_WAITING,    /* backing off before the next attempt */
    JOB_WRITING,    /* the outcome (or dead letter) is queued or sent to Redis */
    JOB_WRITE_WAIT, /* Redis refused the write; trying again after a wait */
    JOB_PARKING     /* its entry is being moved to the wait room or delayed set */
};

/* What a dead letter carries instead of a chat: the original entry, copied. */
struct job_dead {
    const char *code; /* static: invalid_request or delivery_limit_exceeded */
    char *reason;
    size_t nfields; /* field/value strings, alternating */
    char **fields;
    size_t *lens;
};

/* One slot. Everything a job keeps is its own copy: hiredis frees a reply as
 * soon as its callback returns. */
struct job {
    struct processor *p;
    enum job_state state;
    unsigned gen;       /* bumped each time the slot is taken: stale answers ignored */
    int admit_sent;     /* JOB_ADMITTING: the count is on the wire */
    int cancel;         /* JOB_ADMITTING: cancelled meanwhile, start no attempt */
    int attempts;       /* the latest attempt's number, counted across processors */
    long long deadline; /* Unix ms past which no attempt starts; 0: none */
    long long admitted; /* > 0: a dispatch counted this attempt already (pace.h) */
    long long estimate; /* tokens counted against the budget before the answer */
    long long park_wait_ms; /* JOB_PARKING: the wait, kept in the slot if parking fails */
    int write_sent;         /* JOB_WRITING: on the wire, the script's reply pending */
    int write_tries;        /* writes Redis refused so far */
    long long deliveries;   /* of the entry, this one included, hand-backs not */
    char id[JOB_ID_MAX];
    char trace[UUID_LEN + 1]; /* "" if the entry had no well-formed trace */
    char *model;              /* owned */
    char *user;               /* owned; NULL: anonymous */
    char *accepted;           /* owned; NULL if the entry had none */
    char finished[CLOCK_ISO_LEN];
    struct upstream_xfer xfer;
    size_t delta_sent;      /* bytes of a streamed attempt's text written (deltas.h) */
    long long delta_ms;     /* monotonic ms of the last delta written; 0: none */
    struct outcome outcome; /* the final one, once known */
    struct job_dead *dead;  /* owned; set when this slot carries a dead letter */
    struct event *timer;    /* the backoff or write-retry wait, or (running) the next
                               delta's; made once per slot */
    struct job *next;       /* free list or write queue */
};

struct processor {
    const struct config *cfg;
    struct keys keys;
    struct rconn_url url;
    char consumer[160];
    struct event_base *base;
    struct upstream *up;
    struct rlink *rd;  /* only XREADGROUP ... BLOCK: it holds up whatever is behind it */
    struct rlink *wr;  /* results, acks, claims, heartbeats, dead letters */
    struct rlink *sub; /* SUBSCRIBEd to the cancel channel, nothing else */
    struct retry_policy policy;
    uint64_t rng;

    struct job *jobs; /* cfg->concurrency slots */
    size_t njobs;     /* cfg->concurrency */
    size_t nused;     /* jobs[0..nused) have been set up; the rest never used yet */
    struct job *free_jobs;
    size_t nfree;
    struct event *pump; /* runs processor_on_pump once the current callbacks are done */
    struct inbox *in;   /* reads, claims, heartbeats, hand-backs */
    struct pace *pace;  /* the wait room's dispatch */
    struct pace_limit *limits; /* UPSTREAM_LIMITS, parsed */
    size_t nlimits;
    char budget_id[17]; /* names this upstream key in budget keys, never the key */
    /* Adaptive concurrency (AIMD): slots this processor lets itself use, cut by
     * 30 % when the upstream sheds load (timeouts, 5xx; once a second at most),
     * grown back by one per limit's worth of successes while it sheds, by one per
     * success once it has not for 5 s; between 1 and PROCESSOR_CONCURRENCY. */
    double climit;
    long long climit_cut_ms; /* monotonic ms of the last cut: one per second at most */
    struct outbox *out;      /* outcome writes */
    struct live *live;       /* the heartbeat hash and the consumer sweep */

    /* shutdown */
    int stopping;
    int deadline_passed;
    int closing; /* the write connection's close, the very last step, has begun */
    struct event *grace, *hard_stop;
};

/* Returns a new processor ready to run (free with processor_free), or NULL with
 * the reason in err. cfg is borrowed and must outlive it. */
struct processor *processor_new(const struct config *cfg, char *err, size_t errlen);

/* Borrowed: for the owner's own events (signals). */
struct event_base *processor_base(struct processor *p);

/* Connects to Redis and runs until processor_stop's shutdown has finished.
 * Returns 0, or -1. */
int processor_run(struct processor *p);

/* Begins a graceful shutdown; called again, skips the rest of the grace period. */
void processor_stop(struct processor *p);

/* Safe with NULL. */
void processor_free(struct processor *p);

/* A job as the privdata of an async command: the slot and its generation, so
 * that a slot released and taken again meanwhile ignores an answer meant for its
 * previous entry. */
struct job_ticket;

/* A new ticket for job, or NULL (out of memory); one never sent is free()d. */
struct job_ticket *job_ticket_new(struct job *job);

/* Frees t and returns its job if that is still the same entry, in state; else
 * NULL. */
struct job *job_ticket_redeem(struct job_ticket *t, enum job_state state);

/* The answer of admit.h for job's next attempt: its number (> 0), ADMIT_EXHAUSTED
 * or ADMIT_UNCOUNTED. Starts the transfer, or ends the chat. */
void processor_admitted(struct processor *p, struct job *job, long long verdict);

/* The answer of pace.h's park for job: 1 moved (the slot is free now), 0 the entry
 * is no longer ours, -1 it could not be parked (the wait happens in the slot). */
void processor_parked(struct processor *p, struct job *job, int moved);

/* Slots neither in use nor promised to an outstanding read or claim. */
size_t processor_free_slots(const struct processor *p);

/* Takes on an entry read or claimed from the requests stream (fields borrowed
 * from the reply; deliveries counts this one). A slot must be free. */
void processor_accept(struct processor *p, const char *id,
                      const struct redisReply *fields, long long deliveries);

/* 1 if one of this process's jobs holds the entry. */
int processor_holds(const struct processor *p, const char *id);

/* The entry now belongs to another consumer (taken over while Redis was away):
 * stop our copy of it, without writing anything. Nothing if no job holds it or
 * its write is already under way (the write script drops it then). */
void processor_drop(struct processor *p, const char *id);

/* The client cancelled the chat of trace: a call in flight for it is aborted (its
 * transfer removed) and a backoff wait ended; either way no further attempt. */
void processor_cancel(struct processor *p, const char *trace);

/* The write of job's outcome is confirmed (or failed for good): frees the slot. */
void processor_release(struct processor *p, struct job *job);

/* Asks for processor_on_pump to run once the current callbacks are done: reads,
 * claims and shutdown progress are decided there, after a batch of changes. */
void processor_pump(struct processor *p);

/* A uniform random number in [0, 1). */
double processor_random(struct processor *p);

#endif
