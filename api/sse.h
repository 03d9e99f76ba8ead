/* sse.h - GET /chat/{traceId}/events: a chat's events (common/events.h) as
 * server-sent events (text/event-stream).
 *
 * One event per state change, its id the event's number (1, 2, ...):
 *   event: queued      data: {"traceId","status":"queued"}
 *   event: processing  data: {"traceId","status":"processing","attempt":N}
 *   event: retrying    data: {"traceId","status":"retrying","attempt":N,"delay_ms":D}
 *   event: completed / failed / (any final status)
 *                      data: the final record, as GET /chat/{traceId}/response
 * A client that reconnects with Last-Event-ID gets exactly the events after that
 * one. A comment line (": keep-alive") goes out every EVENTS_HEARTBEAT_MS while
 * nothing happens, so proxies keep the connection open (and a client that left is
 * noticed). The stream ends, and the connection closes, after the final event; a
 * reconnect after it gets 204, which tells a browser's EventSource to stop. The
 * stream is a waiting client (await.h): past WAIT_THREADS of them, 503. */
#ifndef CHATQ_API_SSE_H
#define CHATQ_API_SSE_H

struct mg_connection;
struct worker;

/* Serves the request on conn for trace (a well-formed, lower-case UUID); returns
 * the HTTP status. w (borrowed) is the calling thread's worker, or NULL. */
int sse_handle(struct mg_connection *conn, struct worker *w, const char *trace);

/* 1 if id is an event number ("3"), as Last-Event-ID must be. */
int sse_id_valid(const char *id);

#endif
