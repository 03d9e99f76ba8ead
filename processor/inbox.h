/* inbox.h - the processor's side of the requests stream as a member of the
 * "processors" group: reading new entries (XREADGROUP on the read connection),
 * taking over entries that another processor left behind (XPENDING + XCLAIM),
 * keeping its own entries from being taken (heartbeat), and handing entries
 * back on shutdown. Writes of outcomes are outbox.h's. */
#ifndef CHATQ_PROCESSOR_INBOX_H
#define CHATQ_PROCESSOR_INBOX_H

#include <stddef.h>

struct processor;

/* Longest XREADGROUP batch and the most ids in one XPENDING or XCLAIM. */
#define INBOX_READ_MAX 512
#define INBOX_CLAIM_MAX 1000
#define INBOX_BLOCK_MS 2000

/* XCLAIM's IDLE on hand-back: far beyond any CLAIM_IDLE_MS, so that every other
 * processor's next XPENDING sees the entries as abandoned. */
#define INBOX_HANDBACK_IDLE_MS 1000000000LL

/* Creates the timers (claim, heartbeat); returns 0 or -1. */
int inbox_start(struct processor *p);

/* The read connection is (again) up: make sure the group exists (Redis may have
 * restarted empty) and learn the connection's client id. */
void inbox_on_read_up(struct processor *p);

/* The read connection went down: the outstanding read, if any, is lost. */
void inbox_on_read_down(struct processor *p);

/* Starts a claim and/or a read if there are free slots and none is outstanding. */
void inbox_pump(struct processor *p);

/* Stops claiming and reading; unblocks and closes the read connection. */
void inbox_stop(struct processor *p);

/* XCLAIMs the entries back to this consumer with a huge idle time so that other
 * processors take them over at once. ids borrowed. */
void inbox_hand_back(struct processor *p, const char *const *ids, size_t n);

/* On a clean exit: removes this processor's consumer from the group unless it
 * still holds pending entries (see stream_retire_script). */
void inbox_retire(struct processor *p);

/* Frees the timers. */
void inbox_free(struct processor *p);

#endif
