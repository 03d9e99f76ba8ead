/* cancel.c - the one cancel script (see cancel.h). */
#include "cancel.h"

#include <string.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "events.h"
#include "keys.h"
#include "log.h"
#include "quota.h"
#include "record.h"
#include "server.h"
#include "uuid.h"
#include "webhook.h"
#include "worker.h"

/* KEYS: the trace hash, the webhooks stream (a chat with a webhook gets its
 * chat.cancelled delivery queued in the same step, see webhook.h), the trace's
 * events channel (its waiters and event streams hear the final status, events.h).
 * ARGV: the cancel channel, the trace id, the time, the owner of the request, "1" to
 * forget, the prefix of the quota hashes. Returns a cancel_result. A cancelled chat
 * is final: it frees its in-flight slot (quota.h) as the handler's finalize does for
 * the others. A record of another
 * key (or already deleted) is answered as if it did not exist. Sent with EVAL (see
 * handler/finalize.c). */
/* clang-format off */
static const char cancel_script[] = WEBHOOK_LUA EVENTS_LUA QUOTA_RELEASE_LUA
    "local st = redis.call('HGET', KEYS[1], '" REC_STATUS "')\n"
    "if not st or redis.call('HGET', KEYS[1], '" REC_DELETED "') == '1' then\n"
    "  return 0\n"
    "end\n"
    "if (redis.call('HGET', KEYS[1], '" REC_OWNER "') or '') ~= ARGV[4] then\n"
    "  return 0\n"
    "end\n"
    "if st == 'processing' then\n"
    "  webhook_enqueue(KEYS[2], KEYS[1], '" CHAT_CANCELLED_NAME "', ARGV[3])\n"
    "  redis.call('HSET', KEYS[1], '" REC_STATUS "', '" CHAT_CANCELLED_NAME "',\n"
    "             '" REC_TIMESTAMP "', ARGV[3])\n"
    /* Kept (for its TTL) so that its outcome, still to come, finds a final record
     * rather than none, which would make it a dead letter. */
    "  if ARGV[5] == '1' then\n"
    "    redis.call('HSET', KEYS[1], '" REC_DELETED "', '1')\n"
    "  end\n"
    "  chat_event(KEYS[1], KEYS[3], '" CHAT_CANCELLED_NAME "')\n"
    "  quota_release(ARGV[6], KEYS[1])\n"
    "  redis.call('PUBLISH', ARGV[1], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "if ARGV[5] == '1' then redis.call('DEL', KEYS[1]) end\n"
    "return 2\n";
/* clang-format on */

enum cancel_result cancel_run(struct worker *w, const char *trace, int forget)
{
    char key[KEYS_MAX + UUID_LEN + 1], now[CLOCK_ISO_LEN], channel[KEYS_MAX];
    char events[KEYS_MAX + UUID_LEN + 1];
    keys_trace(&w->srv->keys, trace, key, sizeof(key));
    keys_events(&w->srv->keys, trace, events, sizeof(events));
    keys_cancel(&w->srv->keys, channel, sizeof(channel));
    clock_iso8601(now, clock_now_ms());
    const char *argv[] = {"EVAL",
                          cancel_script,
                          "3",
                          key,
                          w->srv->keys.webhooks,
                          events,
                          channel,
                          trace,
                          now,
                          w->owner,
                          forget ? "1" : "0",
                          w->srv->keys.quota_prefix};
    /* Safe to repeat: a second run finds the record final. */
    redisReply *rep = worker_command(w, trace, 12, argv);
    enum cancel_result v = CANCEL_FAILED;
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer >= CANCEL_NONE &&
        rep->integer <= CANCEL_FINAL)
        v = (enum cancel_result)rep->integer;
    else if (rep != NULL)
        log_warn(trace, "Redis refused the cancel: %s",
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    if (v == CANCEL_NOW)
        log_info(trace, "cancelled by the client%s", forget ? " (deleted)" : "");
    return v;
}
