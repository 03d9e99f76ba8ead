/* queue.c - see queue.h. Blocking hiredis: every step is one round trip, and the
 * deliveries themselves run between steps on curl's multi handle. */
#include "queue.h"

#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cmd.h"
#include "deadletter.h"
#include "log.h"
#include "stream.h"
#include "webhook.h"

/* How much longer than its BLOCK a read may take before the connection is given
 * up as dead. */
#define QUEUE_REPLY_SLACK_MS 5000
#define QUEUE_BLOCK_MAX_MS 1000
/* Due retries moved back into the stream per promote. */
#define QUEUE_PROMOTE_BATCH 256

/* KEYS: stream, delayed zset, delayed entries hash, dead. ARGV: group, consumer,
 * entry id, how ('done', 'retry', 'dead'), due (Unix ms), event (the zset member),
 * dead-letter cap, reason, attempts, then the entry's field/value pairs. Returns 1,
 * or 0 when the entry is not this consumer's any more (nothing is changed). */
static const char queue_end_script[] = DEADLETTER_LUA
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)\n"
    "if p[1] == nil or p[1][2] ~= ARGV[2] then return 0 end\n"
    "if ARGV[4] == 'retry' then\n"
    "  local f = {}\n"
    "  for i = 10, #ARGV - 1, 2 do\n"
    "    f[#f + 1] = ARGV[i]\n"
    "    if ARGV[i] == '" WEBHOOK_F_ATTEMPTS "' then f[#f + 1] = ARGV[9]\n"
    "    else f[#f + 1] = ARGV[i + 1] end\n"
    "  end\n"
    "  redis.call('HSET', KEYS[3], ARGV[6], cjson.encode(f))\n"
    "  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])\n"
    "elseif ARGV[4] == 'dead' then\n"
    "  dead_letter(KEYS[4], ARGV[7], KEYS[1], ARGV[3], ARGV[8], ARGV[9], ARGV, 10)\n"
    "end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('XDEL', KEYS[1], ARGV[3])\n"
    "return 1\n";

/* KEYS: delayed zset, delayed entries hash, stream. ARGV: now (Unix ms), batch.
 * Returns how many retries went back into the stream. */
static const char queue_promote_script[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,\n"
    "                       tonumber(ARGV[2]))\n"
    "for _, m in ipairs(due) do\n"
    "  local v = redis.call('HGET', KEYS[2], m)\n"
    "  if v then redis.call('XADD', KEYS[3], '*', unpack(cjson.decode(v))) end\n"
    "  redis.call('ZREM', KEYS[1], m)\n"
    "  redis.call('HDEL', KEYS[2], m)\n"
    "end\n"
    "return #due\n";

void queue_init(struct queue *q, const struct rconn_url *url, const struct keys *keys,
                long long claim_idle_ms, long long dead_max)
{
    memset(q, 0, sizeof(*q));
    q->url = url;
    q->keys = keys;
    q->claim_idle_ms = claim_idle_ms;
    q->dead_max = dead_max;
    stream_consumer_name(q->consumer, sizeof(q->consumer), "webhook");
}

static void queue_disconnect(struct queue *q)
{
    redisFree(q->c);
    q->c = NULL;
}

int queue_connect(struct queue *q, char *err, size_t errlen)
{
    q->c = rconn_connect(q->url, QUEUE_BLOCK_MAX_MS + QUEUE_REPLY_SLACK_MS, err, errlen);
    if (q->c == NULL)
        return -1;
    if (stream_group_ensure(q->c, q->keys->webhooks, KEYS_GROUP_WEBHOOKS, err, errlen) !=
        0) {
        queue_disconnect(q);
        return -1;
    }
    q->own_pending = 1;
    return 0;
}

static const char *queue_why(const struct queue *q, const redisReply *r)
{
    if (r == NULL)
        return q->c->errstr[0] ? q->c->errstr : "connection lost";
    return r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply";
}

/* Hands each entry of an entries array to take; returns how many. */
static int queue_hand(const redisReply *entries, queue_take_fn *take, void *arg)
{
    int n = 0;
    for (size_t i = 0; entries != NULL && i < entries->elements; i++) {
        struct stream_entry e;
        if (stream_entry_at(entries, i, &e) != 0 || e.fields == NULL)
            continue;
        take(e.id, e.fields, arg);
        n++;
    }
    return n;
}

int queue_read(struct queue *q, long long count, long long block_ms, queue_take_fn *take,
               void *arg)
{
    redisReply *r;
    const char *from = q->own_pending ? "0" : ">";
    if (block_ms > QUEUE_BLOCK_MAX_MS)
        block_ms = QUEUE_BLOCK_MAX_MS;
    /* Without BLOCK the read answers at once; BLOCK 0 would wait for ever. */
    if (block_ms > 0 && !q->own_pending)
        r = redisCommand(
            q->c, "XREADGROUP GROUP %s %s COUNT %lld BLOCK %lld STREAMS %s %s",
            KEYS_GROUP_WEBHOOKS, q->consumer, count, block_ms, q->keys->webhooks, from);
    else
        r = redisCommand(q->c, "XREADGROUP GROUP %s %s COUNT %lld STREAMS %s %s",
                         KEYS_GROUP_WEBHOOKS, q->consumer, count, q->keys->webhooks,
                         from);
    if (rconn_reply_failed(r)) {
        log_warn(NULL, "XREADGROUP failed: %s", queue_why(q, r));
        freeReplyObject(r);
        queue_disconnect(q);
        return -1;
    }
    q->own_pending = 0;
    int n = queue_hand(stream_read_entries(r), take, arg);
    freeReplyObject(r);
    return n;
}

int queue_claim(struct queue *q, long long count, queue_take_fn *take, void *arg)
{
    redisReply *r =
        redisCommand(q->c, "XAUTOCLAIM %s %s %s %lld 0-0 COUNT %lld", q->keys->webhooks,
                     KEYS_GROUP_WEBHOOKS, q->consumer, q->claim_idle_ms, count);
    if (rconn_reply_failed(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        log_warn(NULL, "XAUTOCLAIM failed: %s", queue_why(q, r));
        int lost = r == NULL;
        freeReplyObject(r);
        if (lost)
            queue_disconnect(q);
        return lost ? -1 : 0;
    }
    int n = queue_hand(r->element[1], take, arg);
    if (n > 0)
        log_info(NULL, "took over %d webhook deliveries idle for %lld ms or more", n,
                 q->claim_idle_ms);
    freeReplyObject(r);
    return n;
}

int queue_promote(struct queue *q, long long now_ms)
{
    redisReply *r = redisCommand(q->c, "EVAL %s 3 %s %s %s %lld %d", queue_promote_script,
                                 q->keys->webhooks_delayed, q->keys->webhooks_entries,
                                 q->keys->webhooks, now_ms, QUEUE_PROMOTE_BATCH);
    if (rconn_reply_failed(r) || r->type != REDIS_REPLY_INTEGER) {
        log_warn(NULL, "moving due webhook retries failed: %s", queue_why(q, r));
        int lost = r == NULL;
        freeReplyObject(r);
        if (lost)
            queue_disconnect(q);
        return lost ? -1 : 0;
    }
    int n = (int)r->integer;
    freeReplyObject(r);
    return n;
}

int queue_end(struct queue *q, const char *id, enum queue_end how, const char *event,
              long long due_ms, long long attempts, const char *reason,
              const char *const *fields, size_t n)
{
    static const char *const names[] = {"done", "retry", "dead"};
    struct cmd c;
    redisReply *r = NULL;
    int rc = -1;
    if (q->c == NULL) {
        log_warn(NULL,
                 "Redis is away: webhook delivery %s stays pending and is sent "
                 "again once taken over",
                 id);
        return -1;
    }
    cmd_init(&c, "EVAL");
    cmd_addz(&c, queue_end_script);
    cmd_addz(&c, "4");
    cmd_addz(&c, q->keys->webhooks);
    cmd_addz(&c, q->keys->webhooks_delayed);
    cmd_addz(&c, q->keys->webhooks_entries);
    cmd_addz(&c, q->keys->dead);
    cmd_addz(&c, KEYS_GROUP_WEBHOOKS);
    cmd_addz(&c, q->consumer);
    cmd_addz(&c, id);
    cmd_addz(&c, names[how]);
    cmd_addll(&c, due_ms);
    cmd_addz(&c, event);
    cmd_addll(&c, q->dead_max);
    cmd_addz(&c, reason ? reason : "");
    cmd_addll(&c, attempts);
    for (size_t i = 0; i < n; i++)
        cmd_addz(&c, fields[i]);
    if (c.overflow) {
        log_error(NULL, "out of memory building the end of webhook delivery %s", id);
        goto out;
    }
    r = redisCommandArgv(q->c, c.argc, c.argv, c.len);
    if (rconn_reply_failed(r) || r->type != REDIS_REPLY_INTEGER) {
        log_warn(NULL,
                 "ending webhook delivery %s failed (%s); it stays pending and is "
                 "taken over after CLAIM_IDLE_MS",
                 id, queue_why(q, r));
        if (r == NULL)
            queue_disconnect(q);
        goto out;
    }
    rc = (int)r->integer;
out:
    freeReplyObject(r);
    cmd_free(&c);
    return rc;
}

void queue_close(struct queue *q)
{
    if (q->c != NULL && stream_consumer_retire(q->c, q->keys->webhooks,
                                               KEYS_GROUP_WEBHOOKS, q->consumer) == 0)
        log_info(NULL, "consumer %s kept: it still holds pending deliveries",
                 q->consumer);
    queue_disconnect(q);
}
