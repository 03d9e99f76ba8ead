/* webhook.h - the contract between the scripts that make a chat final and the
 * webhook sender (chatq-webhook): the fields of a {prefix}webhooks entry, and the
 * one Lua function that enqueues a delivery.
 *
 *   webhook_enqueue(stream, tracekey, status, timestamp, finish_reason)
 *
 * Called by a script just before it writes a trace's final record (status, when
 * it finished, and the upstream's finish_reason if any), in the same script, so
 * the delivery is queued if and only if the record is final: a failing XADD (the
 * key holds another type) stops the script before the record is written. When the
 * trace hash has a webhook URL it XADDs to stream the entry below and returns the
 * entry id; else false. Its type is "chat." .. status (completed, failed, or any
 * final status added later: cancelled); for a chat of the OpenAI Responses front
 * (REC_FRONT_RESPONSES) it is OpenAI's "response." .. status, with a completion
 * cut short by the length limit "response.incomplete", as GET /v1/responses/{id}
 * shows it (the sender then writes OpenAI's event shape, webhook/send.c).
 *
 * A {prefix}webhooks entry: trace, url, type, event (the webhook-id: "msg_" and the
 * trace id, the same on every attempt, so a receiver can drop a duplicate),
 * timestamp (when the chat finished, ISO-8601), attempts (deliveries already
 * tried and failed). */
#ifndef CHATQ_WEBHOOK_H
#define CHATQ_WEBHOOK_H

#include "record.h"

#define WEBHOOK_F_TRACE "trace"
#define WEBHOOK_F_URL "url"
#define WEBHOOK_F_TYPE "type"
#define WEBHOOK_F_EVENT "event"
#define WEBHOOK_F_TIMESTAMP "timestamp"
#define WEBHOOK_F_ATTEMPTS "attempts"

#define WEBHOOK_EVENT_PREFIX "msg_"
#define WEBHOOK_TYPE_PREFIX "chat."
#define WEBHOOK_RESPONSE_PREFIX "response."

#define WEBHOOK_LUA                                                                      \
    "local function webhook_enqueue(stream, tracekey, status, timestamp, finish)\n"      \
    "  local v = redis.call('HMGET', tracekey, '" REC_WEBHOOK "', '" REC_TRACE "',\n"    \
    "                       '" REC_FRONT "')\n"                                          \
    "  if not v[1] or v[1] == '' or not v[2] then return false end\n"                    \
    "  local typ = '" WEBHOOK_TYPE_PREFIX "' .. (status or '')\n"                        \
    "  if v[3] == '" REC_FRONT_RESPONSES "' then\n"                                      \
    "    if status == 'completed' and finish == 'length' then status = 'incomplete' "    \
    "end\n"                                                                              \
    "    typ = '" WEBHOOK_RESPONSE_PREFIX "' .. (status or '')\n"                        \
    "  end\n"                                                                            \
    "  return redis.call('XADD', stream, '*', '" WEBHOOK_F_TRACE "', v[2],\n"            \
    "    '" WEBHOOK_F_URL "', v[1], '" WEBHOOK_F_TYPE "', typ,\n"                        \
    "    '" WEBHOOK_F_EVENT "', '" WEBHOOK_EVENT_PREFIX "' .. v[2],\n"                   \
    "    '" WEBHOOK_F_TIMESTAMP "', timestamp or '', '" WEBHOOK_F_ATTEMPTS "', '0')\n"   \
    "end\n"

#endif
