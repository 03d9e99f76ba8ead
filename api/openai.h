/* openai.h - the OpenAI front, so that the official SDKs work unchanged with their
 * base URL pointed at chatq. The same pipeline as POST /chat: the same atomic
 * intake write (intake_store), the same record, processors and handlers; only the
 * shapes of the requests and answers differ. The routes:
 *   POST   /v1/responses               create; background: true answers queued at
 *                                      once, otherwise waits (await.h) for the end
 *   GET    /v1/responses/{id}          the Response object of any trace
 *   POST   /v1/responses/{id}/cancel   cancel (cancel.h)
 *   DELETE /v1/responses/{id}          cancel if running, then forget
 *   POST   /v1/chat/completions        create and wait; a chat.completion object
 * Ids are "resp_" / "chatcmpl-" and the trace id's 32 hex digits, so both fronts
 * read one record: resp_<hex> of a POST /chat trace is its Response object. */
#ifndef CHATQ_API_OPENAI_H
#define CHATQ_API_OPENAI_H

#include "uuid.h"

struct chat_result;
struct mg_connection;
struct reply;
struct server;
struct worker;

#define OPENAI_RESP_PREFIX "resp_"
#define OPENAI_CHAT_PREFIX "chatcmpl-"
/* The response header carrying the chat's trace id on every answer about one. */
#define OPENAI_TRACE_HEADER "x-chatq-trace-id"
/* Suggested in openai-poll-after-ms on queued and in-progress answers. */
#define OPENAI_POLL_AFTER_MS 500

/* Answers any request under /v1; returns the HTTP status sent. w (borrowed) is the
 * calling thread's worker, or NULL. */
int openai_handle(struct mg_connection *conn, struct server *srv, struct worker *w);

/* The trace id behind an id "<prefix><32 hex digits>" (any case) into trace.
 * Returns 0, or -1 if id is not such an id. */
int openai_trace_of(const char *id, const char *prefix, char trace[UUID_LEN + 1]);

/* Appends the Response object of a trace's record to r (pure, for the unit tests). */
void openai_render_response(const struct chat_result *res, const char *trace,
                            struct reply *r);

/* Appends the chat.completion object of a completed trace's record to r. */
void openai_render_completion(const struct chat_result *res, const char *trace,
                              struct reply *r);

/* The HTTP status a waiting call answers a failed chat with: the upstream's 4xx
 * (its message and code go along), 429 when the upstream's rate limit or quota
 * ended it, 504 when its deadline passed, else 502. */
int openai_failed_status(const struct chat_result *res);

#endif
