/* workers.c - see workers.h. */
#include "workers.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "cmd.h"
#include "log.h"
#include "rconn.h"
#include "version.h"

/* KEYS: the worker's hash, the workers set. ARGV: TTL ms, consumer, then the
 * hash's field/value pairs. Redis's clock, not the worker's, scores the set, so
 * workers on hosts whose clocks disagree are listed alike. */
static const char workers_beat_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ttl = tonumber(ARGV[1])\n"
    "redis.call('HSET', KEYS[1], 'beat', now, unpack(ARGV, 3))\n"
    "redis.call('PEXPIRE', KEYS[1], ttl)\n"
    "redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)\n"
    "return now\n";

/* KEYS: the worker's hash, the workers set. ARGV: consumer. */
static const char workers_leave_lua[] = "redis.call('DEL', KEYS[1])\n"
                                        "redis.call('ZREM', KEYS[2], ARGV[1])\n"
                                        "return 1\n";

/* KEYS: the stream. ARGV: group, the heartbeat keys' prefix, idle ms. The
 * pending count, the idle time and the heartbeat are read in the same atomic
 * step as the delete, so an entry cannot be claimed by the consumer in between
 * and lost with it. A missing stream or group is nothing to sweep. */
static const char workers_sweep_lua[] =
    "local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])\n"
    "local gone = {}\n"
    "if type(cs) ~= 'table' or cs.err then return gone end\n"
    "local idle = tonumber(ARGV[3])\n"
    "for _, c in ipairs(cs) do\n"
    "  local f = {}\n"
    "  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end\n"
    "  if f.pending == 0 and f.idle >= idle and\n"
    "     redis.call('EXISTS', ARGV[2] .. f.name) == 0 then\n"
    "    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f.name)\n"
    "    gone[#gone + 1] = f.name\n"
    "  end\n"
    "end\n"
    "return gone\n";

void workers_init(struct workers *w, const struct keys *keys, const char *consumer,
                  const char *role, long long ttl_ms)
{
    memset(w, 0, sizeof(*w));
    w->keys = keys;
    w->consumer = consumer;
    w->role = role;
    w->ttl_ms = ttl_ms;
    if (gethostname(w->host, sizeof(w->host)) != 0)
        strcpy(w->host, "unknown");
    w->host[sizeof(w->host) - 1] = '\0';
    w->pid = (long)getpid();
    clock_iso8601(w->started, clock_now_ms());
    snprintf(w->key, sizeof(w->key), "%s%s", keys->worker_prefix, consumer);
}

void workers_error(struct workers *w, const char *code, const char *message)
{
    if (code != NULL)
        snprintf(w->last_error, sizeof(w->last_error), "%s: %s", code,
                 message ? message : "");
    else
        snprintf(w->last_error, sizeof(w->last_error), "%s", message ? message : "");
    clock_iso8601(w->last_error_at, clock_now_ms());
}

long long workers_beat_ms(const struct workers *w)
{
    return w->ttl_ms / 3;
}

static void workers_script(struct cmd *c, const char *lua, const char *nkeys)
{
    cmd_init(c, "EVAL");
    cmd_addz(c, lua);
    cmd_addz(c, nkeys);
}

void workers_beat_cmd(const struct workers *w, struct cmd *c)
{
    workers_script(c, workers_beat_lua, "2");
    cmd_addz(c, w->key);
    cmd_addz(c, w->keys->workers);
    cmd_addll(c, w->ttl_ms);
    cmd_addz(c, w->consumer);
    cmd_addz(c, "consumer");
    cmd_addz(c, w->consumer);
    cmd_addz(c, "role");
    cmd_addz(c, w->role);
    cmd_addz(c, "host");
    cmd_addz(c, w->host);
    cmd_addz(c, "pid");
    cmd_addll(c, w->pid);
    cmd_addz(c, "version");
    cmd_addz(c, CHATQ_VERSION);
    cmd_addz(c, "started");
    cmd_addz(c, w->started);
    cmd_addz(c, "ttl_ms");
    cmd_addll(c, w->ttl_ms);
    cmd_addz(c, "in_flight");
    cmd_addll(c, w->in_flight);
    cmd_addz(c, "done");
    cmd_addll(c, w->done);
    cmd_addz(c, "failed");
    cmd_addll(c, w->failed);
    cmd_addz(c, "last_error");
    cmd_addz(c, w->last_error);
    cmd_addz(c, "last_error_at");
    cmd_addz(c, w->last_error_at);
}

void workers_leave_cmd(const struct workers *w, struct cmd *c)
{
    workers_script(c, workers_leave_lua, "2");
    cmd_addz(c, w->key);
    cmd_addz(c, w->keys->workers);
    cmd_addz(c, w->consumer);
}

void workers_sweep_cmd(const struct keys *keys, const char *stream, const char *group,
                       long long idle_ms, struct cmd *c)
{
    workers_script(c, workers_sweep_lua, "1");
    cmd_addz(c, stream);
    cmd_addz(c, group);
    cmd_addz(c, keys->worker_prefix);
    cmd_addll(c, idle_ms);
}

long long workers_sweep_wait_ms(long long idle_ms, double r)
{
    long long base = idle_ms / 2;
    if (base > 30000)
        base = 30000;
    if (base < 100)
        base = 100;
    return (long long)((double)base * (0.5 + r));
}

void workers_sweep_log(const redisReply *r, const char *group)
{
    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        log_warn(NULL, "sweeping dead consumers of %s failed: %s", group, r->str);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            log_info(NULL,
                     "deleted consumer %s from group %s: it held nothing, idle, no "
                     "heartbeat",
                     r->element[i]->str, group);
}

/* Sends cmd on c and frees it; returns the reply (new), or NULL. */
static redisReply *workers_send(redisContext *c, struct cmd *cmd)
{
    redisReply *r = NULL;
    if (!cmd->overflow)
        r = redisCommandArgv(c, cmd->argc, cmd->argv, cmd->len);
    cmd_free(cmd);
    return r;
}

int workers_beat_sync(redisContext *c, const struct workers *w)
{
    struct cmd cmd;
    workers_beat_cmd(w, &cmd);
    redisReply *r = workers_send(c, &cmd);
    int rc = rconn_reply_failed(r) ? -1 : 0;
    if (r && r->type == REDIS_REPLY_ERROR)
        log_warn(NULL, "worker heartbeat failed: %s", r->str);
    freeReplyObject(r);
    return rc;
}

int workers_leave_sync(redisContext *c, const struct workers *w)
{
    struct cmd cmd;
    workers_leave_cmd(w, &cmd);
    redisReply *r = workers_send(c, &cmd);
    int rc = rconn_reply_failed(r) ? -1 : 0;
    freeReplyObject(r);
    return rc;
}

int workers_sweep_sync(redisContext *c, const struct keys *keys, const char *stream,
                       const char *group, long long idle_ms)
{
    struct cmd cmd;
    workers_sweep_cmd(keys, stream, group, idle_ms, &cmd);
    redisReply *r = workers_send(c, &cmd);
    workers_sweep_log(r, group);
    int rc = rconn_reply_failed(r) ? -1 : 0;
    freeReplyObject(r);
    return rc;
}
