/* live.h - the processor as a live worker in Redis: its heartbeat hash (see
 * workers.h), refreshed from the event loop on the write connection, and the
 * periodic sweep of dead consumers out of the "processors" group. */
#ifndef CHATQ_PROCESSOR_LIVE_H
#define CHATQ_PROCESSOR_LIVE_H

struct processor;
struct live;

/* Returns a new live (free with live_free) whose timers run, or NULL. p is
 * borrowed and must outlive it. */
struct live *live_new(struct processor *p);

/* Safe with NULL. */
void live_free(struct live *l);

/* The write connection is (again) up: beat at once. */
void live_on_write_up(struct live *l);

/* A chat ended for good here: completed (ok) or failed with code and message. */
void live_finished(struct live *l, int ok, const char *code, const char *message);

/* The processor is leaving cleanly: no more beats or sweeps, and its heartbeat is
 * removed (queued on the write connection before it closes). */
void live_leave(struct live *l);

#endif
