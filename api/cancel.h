/* cancel.h - cancelling a chat, for both fronts (POST /chat/{traceId}/cancel, DELETE
 * /chat/{traceId}, POST /v1/responses/{id}/cancel, DELETE /v1/responses/{id}).
 *
 * One Lua script: a record still processing becomes cancelled (and, when asked,
 * deleted), and the trace id is published on {prefix}cancel, where every processor
 * listens and aborts the call it holds for it. The handler writes an outcome only
 * into a record still processing (handler/finalize.c), so a cancel racing the
 * completion leaves exactly one final state: whichever came first. */
#ifndef CHATQ_API_CANCEL_H
#define CHATQ_API_CANCEL_H

struct worker;

enum cancel_result {
    CANCEL_FAILED = -1, /* Redis unavailable or refused (logged) */
    CANCEL_NONE = 0,    /* no such record for this key (or deleted already) */
    CANCEL_NOW = 1,     /* it was processing: cancelled now */
    CANCEL_FINAL = 2,   /* it had ended already: left as it was (deleted if asked) */
};

/* Cancels trace (a well-formed, lower-case UUID) for the key of w's request; with
 * forget, a running chat is also marked deleted and an ended one removed. Safe to
 * repeat. w (borrowed) is the calling thread's worker. */
enum cancel_result cancel_run(struct worker *w, const char *trace, int forget);

#endif
