/* outbox.h - every outcome leaves the processor here: the result entry, the ack
 * and the delete of the request entry in one MULTI/EXEC on the write connection,
 * or the same with a dead letter for an entry that cannot be processed. A write
 * whose connection dropped waits in a queue and goes again after the reconnect
 * (a duplicate result is harmless: the handler keeps the first final one). */
#ifndef CHATQ_PROCESSOR_OUTBOX_H
#define CHATQ_PROCESSOR_OUTBOX_H

struct processor;
struct job;

/* Queues the job's outcome (job->outcome, or job->dead for a dead letter) and
 * sends it if the write connection is up. The slot is released once EXEC's reply
 * confirms it. */
void outbox_push(struct processor *p, struct job *job);

/* Sends everything queued; called when the write connection is (again) up. */
void outbox_flush(struct processor *p);

/* Takes every job that is queued but not sent out of the queue; returns the
 * first (linked through job->next). For the end of a shutdown. */
struct job *outbox_take_unsent(struct processor *p);

#endif
