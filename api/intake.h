/* intake.h - POST /chat, the first hop of the data path: read and validate the
 * body (and the Idempotency-Key header), then queue the request on the requests
 * stream, record the pending trace and the key in one Lua script (all or nothing),
 * and answer 202 once Redis confirmed it. A key seen before answers with its
 * chat's trace id instead of writing again.
 *
 * A failure before the script left whole is 503 (nothing written); after, 504
 * (the script may run: a slow Redis runs it when it gets to it). */
#ifndef CHATQ_API_INTAKE_H
#define CHATQ_API_INTAKE_H

#include <stddef.h>

#include "uuid.h"

struct chat_request;
struct mg_connection;
struct server;
struct worker;

enum intake_read_result {
    INTAKE_READ_OK,
    INTAKE_READ_TOO_LARGE,
    INTAKE_READ_SHORT,   /* the client closed, or sent a broken chunk */
    INTAKE_READ_TIMEOUT, /* the client sent nothing for timeout_ms (civetweb's
                            request_timeout_ms, which must be the same) */
    INTAKE_READ_NOMEM,
};

/* Reads the whole request body, at most max bytes, into *body: first stack (of
 * stacklen bytes), then a new heap buffer if it does not fit (the caller frees *body
 * when it is not stack). Never holds more than max + 1 bytes, whatever the client
 * sends or claims. */
enum intake_read_result intake_read(struct mg_connection *conn, size_t max,
                                    int timeout_ms, char *stack, size_t stacklen,
                                    char **body, size_t *bodylen);

enum intake_store_result {
    INTAKE_STORED,      /* written now, under req->trace */
    INTAKE_REPLAYED,    /* the key's earlier, same request: its trace id returned */
    INTAKE_CONFLICT,    /* the key was used for another request: nothing written */
    INTAKE_OVER_QUOTA,  /* over a limit of the gateway key: nothing written */
    INTAKE_NOT_WRITTEN, /* Redis not reached, or it refused the write: nothing written */
    INTAKE_NO_MEMORY,   /* Redis refused the write: maxmemory reached; nothing written */
    INTAKE_UNKNOWN,     /* sent, not confirmed: written, or to be written, or not */
};

/* The names of the limits in a 429's body. */
#define INTAKE_LIMIT_RPM "requests_per_minute"
#define INTAKE_LIMIT_INFLIGHT "chats_in_flight"

/* A refusal over a quota: which limit, and in how long to try again. */
struct intake_over {
    const char *limit; /* INTAKE_LIMIT_RPM or INTAKE_LIMIT_INFLIGHT */
    long long retry_ms;
};

/* Writes the requests-stream entry, the pending hash (with its TTL) and, if idem
 * (the Idempotency-Key, or NULL) is given, the key's record, with one script: all
 * or nothing, so no trace is ever pending without work queued for it, nor queued
 * without a record to answer GETs; the same script checks and charges the gateway
 * key's quotas (w->limits). trace receives the trace id to answer with; a refusal
 * over a quota, its limit in over. Every front writes through here. */
enum intake_store_result intake_store(struct worker *w, const struct chat_request *req,
                                      const char *idem, char trace[UUID_LEN + 1],
                                      struct intake_over *over);

/* Answers the request on conn; returns the HTTP status sent. w (borrowed) is the
 * calling thread's worker, NULL if it could not be made. */
int intake_handle(struct mg_connection *conn, struct server *srv, struct worker *w);

#endif
