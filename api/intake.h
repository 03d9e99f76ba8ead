/* intake.h - POST /chat, the first hop of the data path: read and validate the
 * body, then record the pending trace and queue the request on the requests stream
 * in one atomic MULTI/EXEC round trip, and answer 202 once Redis confirmed it. */
#ifndef CHATQ_API_INTAKE_H
#define CHATQ_API_INTAKE_H

struct mg_connection;
struct server;
struct worker;

/* Answers the request on conn; returns the HTTP status sent. w (borrowed) is the
 * calling thread's worker, NULL if it could not be made. */
int intake_handle(struct mg_connection *conn, struct server *srv, struct worker *w);

#endif
