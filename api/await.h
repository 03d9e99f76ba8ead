/* await.h - waiting for a trace to be final, for the calls that answer with the
 * result itself (POST /v1/chat/completions, POST /v1/responses without background).
 *
 * The chat is already durably queued when the wait begins: a caller that goes away,
 * or a wait that ends, loses nothing; the result stays readable by its id. */
#ifndef CHATQ_API_AWAIT_H
#define CHATQ_API_AWAIT_H

struct server;
struct worker;

/* Blocks until the trace's status is final or the monotonic deadline (clock_mono_ms)
 * passes, or the server begins to stop. Returns 1 final (or the record is gone), 0
 * timed out, -1 Redis error (logged). w (borrowed) is the calling thread's. */
int await_final(struct server *srv, struct worker *w, const char *trace,
                long long deadline_ms);

#endif
