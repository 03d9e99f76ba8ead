/* inbox.h - the processor's side of the requests stream as a member of the
 * "processors" group: reading new entries (XREADGROUP on the read connection),
 * taking over entries that another processor left behind (XPENDING + XCLAIM),
 * keeping its own entries from being taken (heartbeat), and handing entries
 * back on shutdown. Writes of outcomes are outbox.h's. */
#ifndef CHATQ_PROCESSOR_INBOX_H
#define CHATQ_PROCESSOR_INBOX_H

#include <stddef.h>

struct processor;
struct inbox;

/* Longest XREADGROUP batch and the most ids in one XPENDING, XCLAIM or script. */
#define INBOX_READ_MAX 512
#define INBOX_CLAIM_MAX 1000
#define INBOX_BLOCK_MS 2000

/* The consumer that handed-back entries are parked on until a live processor
 * takes them: the stopping processor then holds nothing and leaves the group. */
#define INBOX_HANDBACK_CONSUMER "handed-back"

/* XCLAIM's IDLE on hand-back: far beyond any CLAIM_IDLE_MS, so that every other
 * processor sees the entries as free to take. */
#define INBOX_HANDBACK_IDLE_MS 1000000000LL

/* How often a processor looks for handed-back entries. */
#define INBOX_HANDBACK_POLL_MS 1000

/* Returns a new inbox with its timers (claim, heartbeat, hand-back poll), or
 * NULL. p is borrowed and must outlive it. */
struct inbox *inbox_new(struct processor *p);

/* Frees the timers and the inbox. Safe with NULL. */
void inbox_free(struct inbox *in);

/* Slots promised to the outstanding read and claim. */
size_t inbox_reserved(const struct inbox *in);

/* 1 while a claim is in flight: it may still bring entries (to hand back). */
int inbox_claiming(const struct inbox *in);

/* The read connection is (again) up: make sure the group exists (Redis may have
 * restarted empty) and learn the connection's client id. */
void inbox_on_read_up(struct inbox *in);

/* The read connection went down: the outstanding read, if any, is lost. */
void inbox_on_read_down(struct inbox *in);

/* The write connection is (again) up: heartbeat at once, and take over idle
 * entries only once the link has been up for CLAIM_IDLE_MS, so that every other
 * live processor has reconnected and renewed its own entries first. */
void inbox_on_write_up(struct inbox *in);

/* Starts a claim and/or a read if there are free slots and none is outstanding. */
void inbox_pump(struct inbox *in);

/* Stops claiming and reading; unblocks and closes the read connection. */
void inbox_stop(struct inbox *in);

/* Parks the entries on INBOX_HANDBACK_CONSUMER, each with its delivery count
 * set back to deliveries[i] - 1: a hand-back is not a failed delivery, so
 * rolling restarts never make a chat look like poison. Only entries this
 * consumer still holds move. ids and deliveries borrowed. */
void inbox_hand_back(struct inbox *in, const char *const *ids,
                     const long long *deliveries, size_t n);

/* On a clean exit: removes this processor's consumer from the group unless it
 * still holds pending entries (see stream_retire_script). */
void inbox_retire(struct inbox *in);

#endif
