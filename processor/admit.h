/* admit.h - the step before every upstream attempt: the attempt is counted in the
 * trace's record ({prefix}trace:{id}, field "tries"), across every processor, every
 * takeover and every hand-back, and refused once UPSTREAM_MAX_ATTEMPTS attempts
 * were begun. A chat whose processors keep dying mid-call therefore reaches the
 * upstream at most UPSTREAM_MAX_ATTEMPTS times in all (bounded spend).
 *
 * A chat the client cancelled (its record says "cancelled") gets no attempt: this
 * check before every attempt is what stops one whose cancel message this processor
 * never heard (it was away, or took the chat over afterwards).
 *
 * The count is a Lua script on the write connection; the transfer starts when its
 * answer is in (processor_admitted). While Redis is away no attempt starts: it
 * cannot be counted. */
#ifndef CHATQ_PROCESSOR_ADMIT_H
#define CHATQ_PROCESSOR_ADMIT_H

struct processor;
struct job;

/* processor_admitted's verdicts besides a positive attempt number. */
#define ADMIT_EXHAUSTED 0  /* UPSTREAM_MAX_ATTEMPTS attempts were begun already */
#define ADMIT_UNCOUNTED -1 /* no record (expired, or written by hand): not counted */
#define ADMIT_PARKED -2    /* the budget said wait: moved to the wait room (pace.h) */
#define ADMIT_LOST -3      /* the entry is no longer this consumer's */
#define ADMIT_CANCELLED -4 /* the client cancelled the chat: no attempt */

/* Registers the script (script.h); once, before the first connection. */
void admit_register(void);

/* Asks to begin job's next attempt (job->state must be JOB_ADMITTING); the answer
 * comes to processor_admitted, now or once the write connection is up. */
void admit_send(struct processor *p, struct job *job);

/* Sends what waited for the write connection; called when it is (again) up. */
void admit_flush(struct processor *p);

#endif
