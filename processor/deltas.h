/* deltas.h - the text of a streamed answer, appended to the chat's events as it
 * arrives ("delta <text>", events.h) so that a client of GET .../events sees it
 * before the call ends.
 *
 * Coalesced: a chat writes at most one delta per DELTAS_INTERVAL_MS, or sooner
 * once DELTAS_BYTES are waiting, so an upstream that sends a token per packet
 * costs Redis a bounded number of writes per chat; what waits is sent by the
 * slot's timer. The last of it goes (deltas_flush) before the attempt's outcome
 * is acted on, on the same write connection as the result, so the deltas always
 * come before the final event. News, not state, like the retrying event: while
 * Redis is away they are dropped (the final record still has the whole answer).
 * A retried attempt's deltas start the answer over, after its retrying event. */
#ifndef CHATQ_PROCESSOR_DELTAS_H
#define CHATQ_PROCESSOR_DELTAS_H

#define DELTAS_INTERVAL_MS 50
#define DELTAS_BYTES 512

struct processor;
struct job;

/* Registers the script (script.h); once, before the first connection. */
void deltas_register(void);

/* The streamed text of job's running attempt grew: writes what is new now, or
 * arms the slot's timer to write it soon. */
void deltas_offer(struct processor *p, struct job *job);

/* Writes whatever of the text has not been written yet. */
void deltas_flush(struct processor *p, struct job *job);

#endif
