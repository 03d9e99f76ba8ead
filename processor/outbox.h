/* outbox.h - every outcome leaves the processor here: the result entry (or a dead
 * letter for an entry that cannot be processed), then the ack and the delete of
 * the request entry, in one Lua script on the write connection. The script
 * acknowledges only after its writes succeeded, and writes only while this
 * consumer still holds the entry. A write whose connection dropped waits in a
 * queue and goes again after the reconnect (a duplicate result is harmless: the
 * handler keeps the first final one); a write Redis refused (a key of the wrong
 * type, out of memory) is tried again with a backoff, keeping its slot and its
 * heartbeat, so nothing is called upstream twice while an operator mends it. */
#ifndef CHATQ_PROCESSOR_OUTBOX_H
#define CHATQ_PROCESSOR_OUTBOX_H

struct processor;
struct outbox;
struct job;

/* Longest wait between tries of a refused write. */
#define OUTBOX_RETRY_MAX_MS 30000
#define OUTBOX_RETRY_MIN_MS 250

/* Returns a new, empty outbox, or NULL. p is borrowed and must outlive it. */
struct outbox *outbox_new(struct processor *p);

/* Safe with NULL. Jobs still queued belong to the processor's slots. */
void outbox_free(struct outbox *o);

/* Queues the job's outcome (job->outcome, or job->dead for a dead letter) and
 * sends it if the write connection is up. The slot is released once the script's
 * reply confirms it. */
void outbox_push(struct outbox *o, struct job *job);

/* A refused write's wait is over: queue and send it again. */
void outbox_retry(struct outbox *o, struct job *job);

/* Sends everything queued; called when the write connection is (again) up. */
void outbox_flush(struct outbox *o);

/* Takes every job that is queued but not sent out of the queue; returns the
 * first (linked through job->next). For the end of a shutdown. */
struct job *outbox_take_unsent(struct outbox *o);

#endif
