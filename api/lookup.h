/* lookup.h - GET /chat/{traceId}/response, the last hop: read the trace's hash with
 * one HGETALL and answer with what it says (processing, completed or failed). */
#ifndef CHATQ_API_LOOKUP_H
#define CHATQ_API_LOOKUP_H

struct chat_result;
struct mg_connection;
struct redisReply;
struct reply;
struct worker;

/* Reads the trace's hash into *hash (a new reply, caller frees: an array, maybe
 * empty). Returns 0, or -1 if Redis is unavailable or refused (logged). */
int lookup_fetch(struct worker *w, const char *trace, struct redisReply **hash);

/* 1 if the trace was made with the key of this request (or both without one): any
 * other is answered as if it did not exist. */
int lookup_owned(const struct worker *w, const struct redisReply *hash);

/* Answers the request on conn for trace (a well-formed, lower-case UUID); returns
 * the HTTP status sent. w (borrowed) is the calling thread's worker, or NULL. */
int lookup_handle(struct mg_connection *conn, struct worker *w, const char *trace);

/* POST /chat/{traceId}/cancel and DELETE /chat/{traceId}: cancels the chat (cancel.h)
 * and answers what GET would now, 404 trace_not_found for no such trace. */
int lookup_cancel(struct mg_connection *conn, struct worker *w, const char *trace);

/* Appends the JSON a client sees for res to r (pure, for the unit tests):
 *   processing: {traceId, status}
 *   completed:  {traceId, response, status, model, usage{...}, timestamp}
 *   failed:     {traceId, status, error{code, message}, timestamp}
 *   cancelled:  {traceId, status, timestamp}
 * Fields the record lacks are left out (usage when none of its counts is known). */
void lookup_render(const struct chat_result *res, const char *trace, struct reply *r);

#endif
