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

struct mg_connection;
struct server;
struct worker;

/* Answers the request on conn; returns the HTTP status sent. w (borrowed) is the
 * calling thread's worker, NULL if it could not be made. */
int intake_handle(struct mg_connection *conn, struct server *srv, struct worker *w);

#endif
