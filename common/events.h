/* events.h - a chat's events: one per state change, kept in the trace's own hash
 * ({prefix}trace:{id}) and written by whoever makes the change, in the same script:
 *
 *   queued      the api's intake, in the record it writes (event 1, not
 *               published: the trace id is not out yet, so no one listens)
 *   processing  the processor's admission of an attempt, or the wait room's
 *               dispatch that counts one; with the attempt number
 *   retrying    the processor, when an attempt failed and another will follow;
 *               with the attempt that failed and the wait in ms
 *   delta       the processor, while a chat that asked for "stream": true is
 *               answered: "delta <text>", the text that came since the last
 *               delta (everything after the first space, spaces and newlines
 *               included). A retried attempt's deltas start the answer over,
 *               after its retrying event. Not final.
 *   completed, failed (and any other final status)
 *               the handler's finalize, when it writes the final record
 *
 * Event n (1, 2, ...) is the hash field "ev:n" = "type[ attempt[ delay_ms]]"; the
 * field "ev" holds the last n. n is the id of the server-sent event
 * (GET /chat/{traceId}/events), which a client resumes from. In the hash rather
 * than a stream of its own: a Redis stream costs about 4.7 KiB per chat (a
 * listpack node allocated whole), these fields a few dozen bytes, with no key,
 * TTL or expiry of their own.
 *
 * Each event is also PUBLISHed, its type as the message, on the channel
 * {prefix}events:{traceId}, so that an api holding a client waiting for that chat
 * wakes at once (api/await.h); a PUBLISH to a channel nobody listens on costs
 * Redis a lookup. */
#ifndef CHATQ_EVENTS_H
#define CHATQ_EVENTS_H

#define EVENTS_LAST "ev"   /* trace hash: the number of the last event */
#define EVENTS_FIELD "ev:" /* trace hash: "ev:n" is event n */
#define EVENTS_ATTEMPT "attempt"
#define EVENTS_DELAY_MS "delay_ms"

#define EVENTS_QUEUED "queued"
#define EVENTS_PROCESSING "processing"
#define EVENTS_RETRYING "retrying"
#define EVENTS_DELTA "delta"
#define EVENTS_DELTA_TEXT "delta" /* the SSE data member that carries the text */

/* chat_event(key, channel, type[, attempt[, delay_ms]]): appends the event to the
 * trace hash key (which must exist: the callers have just read or written it) and
 * publishes its type on channel. Returns the event's number. The field's number is
 * made with string.format: Lua turns a number into a string with printf's floating
 * point, several times the work. */
#define EVENTS_LUA                                                                       \
    "local function chat_event(key, channel, typ, ...)\n"                                \
    "  local n = redis.call('HINCRBY', key, '" EVENTS_LAST "', 1)\n"                     \
    "  local v = typ\n"                                                                  \
    "  if select('#', ...) > 0 then v = table.concat({typ, ...}, ' ') end\n"             \
    "  redis.call('HSET', key, '" EVENTS_FIELD "' .. string.format('%d', n), v)\n"       \
    "  redis.call('PUBLISH', channel, typ)\n"                                            \
    "  return n\n"                                                                       \
    "end\n"

/* 1 if an event (or status) of this type ends the chat: anything but queued,
 * processing, retrying and delta, so that a final status added later (cancelled)
 * needs no change here. */
int events_final(const char *type);

#endif
