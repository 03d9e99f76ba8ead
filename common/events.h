/* events.h - a chat's event stream: {prefix}events:{traceId}, one entry per state
 * change, written by whoever makes the change, in the same script as the change:
 *
 *   queued      the api's intake (which creates the stream, with the trace's TTL)
 *   processing  the processor's admission of an attempt, or the wait room's
 *               dispatch that counts one; field "attempt"
 *   retrying    the processor, when an attempt failed and another will follow;
 *               fields "attempt" (the one that failed) and "delay_ms"
 *   completed, failed (and any other final status)
 *               the handler's finalize, when it writes the final record
 *
 * Each entry is also PUBLISHed, its type as the message, on the channel of the
 * same name, so that an api holding a client waiting for that chat wakes at once
 * (api/await.h); a PUBLISH to a channel nobody listens on costs Redis a lookup.
 * Only the intake creates the stream: every later writer appends with NOMKSTREAM,
 * so a chat whose stream is gone (expired, or made before streams existed) never
 * gains one without a TTL. The stream entry id is the id of the server-sent event
 * (GET /chat/{traceId}/events), which a client resumes from. */
#ifndef CHATQ_EVENTS_H
#define CHATQ_EVENTS_H

#define EVENTS_TYPE "type"
#define EVENTS_ATTEMPT "attempt"
#define EVENTS_DELAY_MS "delay_ms"

#define EVENTS_QUEUED "queued"
#define EVENTS_PROCESSING "processing"
#define EVENTS_RETRYING "retrying"

/* chat_event(key, ttl, type, field, value, ...): appends the event and publishes
 * its type. ttl (seconds) > 0: creates the stream if need be and sets its TTL;
 * nil or 0: appends only to an existing stream (NOMKSTREAM). Returns the entry
 * id, or false when nothing was appended. */
#define EVENTS_LUA                                                                       \
    "local function chat_event(key, ttl, typ, ...)\n"                                    \
    "  local id\n"                                                                       \
    "  if ttl and tonumber(ttl) > 0 then\n"                                              \
    "    id = redis.call('XADD', key, '*', '" EVENTS_TYPE "', typ, ...)\n"               \
    "    redis.call('EXPIRE', key, ttl)\n"                                               \
    "  else\n"                                                                           \
    "    id = redis.call('XADD', key, 'NOMKSTREAM', '*', '" EVENTS_TYPE "', typ, ...)\n" \
    "  end\n"                                                                            \
    "  if id then redis.call('PUBLISH', key, typ) end\n"                                 \
    "  return id\n"                                                                      \
    "end\n"

/* 1 if an event (or status) of this type ends the chat: anything but queued,
 * processing and retrying, so that a final status added later (cancelled) needs no
 * change here. */
int events_final(const char *type);

#endif
