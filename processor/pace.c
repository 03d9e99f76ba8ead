/* pace.c - budgets, the wait room and the delayed set (see pace.h). */
#include "pace.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "cmd.h"
#include "events.h"
#include "keys.h"
#include "log.h"
#include "processor.h"
#include "record.h"
#include "rlink.h"
#include "script.h"
#include "upstream.h"

struct pace {
    struct processor *p; /* borrowed: the owner */
    struct event *tick;
    int busy; /* a dispatch is on the wire */
};

/* KEYS: requests, rooms, delayed, delayed entries. ARGV: prefix, trace-key prefix,
 * UPSTREAM_MAX_ATTEMPTS, the most to move, events channel prefix (events.h: an
 * attempt counted here is announced as "processing"). Moves due delayed entries back into
 * the stream, then, budget by budget, what each budget allows from its wait room,
 * one entry per user in turn, counting each one's attempt. Returns {moved, ms
 * until the next could go (-1: nothing waits)}. */
static const char pace_dispatch_lua[] = PACE_LUA EVENTS_LUA
    "local now = now_ms()\n"
    "local moved, limit = 0, tonumber(ARGV[4])\n"
    "for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0,\n"
    "                              limit)) do\n"
    "  local packed = redis.call('HGET', KEYS[4], m)\n"
    "  if packed then\n"
    "    local _, f = cmsgpack.unpack(packed)\n"
    "    redis.call('XADD', KEYS[1], '*', unpack(f))\n"
    "    moved = moved + 1\n"
    "  end\n"
    "  redis.call('HDEL', KEYS[4], m)\n"
    "  redis.call('ZREM', KEYS[3], m)\n"
    "end\n"
    "local next_ms = -1\n"
    "local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')\n"
    "if #first > 0 then next_ms = math.max(0, tonumber(first[2]) - now) end\n"
    "for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
    "  local ukey = ARGV[1] .. 'users:' .. name\n"
    "  local b = budget_load(ARGV[1] .. 'budget:' .. name, nil, nil, nil, now)\n"
    "  while moved < limit do\n"
    "    local user = redis.call('LMOVE', ukey, ukey, 'LEFT', 'RIGHT')\n"
    "    if not user then break end\n"
    "    local q = ARGV[1] .. 'wait:' .. name .. '|' .. user\n"
    "    local packed = redis.call('LINDEX', q, 0)\n"
    "    if not packed then\n"
    "      redis.call('LREM', ukey, 0, user)\n"
    "    else\n"
    "      local est, f = cmsgpack.unpack(packed)\n"
    "      est = tonumber(est)\n"
    "      if not budget_take(b, est, now) then\n"
    "        redis.call('LMOVE', ukey, ukey, 'RIGHT', 'LEFT')\n"
    "        local w = budget_wait(b, est, now)\n"
    "        if next_ms < 0 or w < next_ms then next_ms = w end\n"
    "        break\n"
    "      end\n"
    "      redis.call('LPOP', q)\n"
    "      if redis.call('LLEN', q) == 0 then redis.call('LREM', ukey, 0, user) end\n"
    "      local trace\n"
    "      for i = 1, #f, 2 do if f[i] == '" REC_TRACE "' then trace = f[i + 1] end end\n"
    "      local tkey = trace and (ARGV[2] .. trace)\n"
    "      if tkey and redis.call('EXISTS', tkey) == 1 then\n"
    "        local n = tonumber(redis.call('HGET', tkey, '" REC_TRIES "') or '0')\n"
    "        if n < tonumber(ARGV[3]) then\n"
    "          f[#f + 1] = '" REC_ADMITTED "'\n"
    "          f[#f + 1] = redis.call('HINCRBY', tkey, '" REC_TRIES "', 1)\n"
    "          chat_event(tkey, ARGV[5] .. trace, '" EVENTS_PROCESSING "', f[#f])\n"
    "        end\n"
    "      end\n"
    "      redis.call('XADD', KEYS[1], '*', unpack(f))\n"
    "      moved = moved + 1\n"
    "    end\n"
    "  end\n"
    "  budget_save(b, now)\n"
    "  if redis.call('EXISTS', ukey) == 0 then\n"
    "    redis.call('SREM', KEYS[2], name)\n"
    "  elseif next_ms < 0 then\n"
    "    next_ms = 0\n"
    "  end\n"
    "end\n"
    "return {moved, next_ms}\n";

/* KEYS: requests. ARGV: group, consumer, id, prefix, budget name, user, estimate,
 * wait ms. Moves the entry to the delayed set; returns 1, or 0 when it is no
 * longer this consumer's. */
static const char pace_park_lua[] = PACE_LUA
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)\n"
    "if p[1] == nil or p[1][2] ~= ARGV[2] then return 0 end\n"
    "return park(KEYS[1], ARGV[1], ARGV[3], ARGV[4], 'delay', ARGV[5], ARGV[6],\n"
    "            ARGV[7], '0', now_ms() + tonumber(ARGV[8]))\n";

/* KEYS: the budget. ARGV: rpm, tpm, burst, estimate, real tokens (-1: unknown),
 * remaining / reset ms / limit of requests, the same of tokens (-1: not sent), the
 * longest pause these may cause (RETRY_AFTER_MAX_MS). */
static const char pace_feedback_lua[] = PACE_LUA
    "local now = now_ms()\n"
    "local b = budget_load(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),\n"
    "                      tonumber(ARGV[3]), now)\n"
    "local block0 = b.block\n"
    "local est, real = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "if real >= 0 and b.tpm > 0 then b.ttok = b.ttok + est - real end\n"
    "local rr, rreset, rlim = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])\n"
    "if rr >= 0 then\n"
    "  if b.rpm > 0 and rr < b.tok then b.tok = rr end\n"
    "  if rr == 0 and rreset > 0 then\n"
    "    b.block = math.max(b.block, now + math.ceil(rreset / math.max(rlim, 1)))\n"
    "  end\n"
    "end\n"
    "local tr, treset, tlim = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])\n"
    "if tr >= 0 then\n"
    "  if b.tpm > 0 and tr < b.ttok then b.ttok = tr end\n"
    "  if tr < est and treset > 0 then\n"
    "    b.block = math.max(b.block,\n"
    "      now + math.ceil(treset * (est - tr) / math.max(tlim, 1)))\n"
    "  end\n"
    "end\n"
    "b.block = math.min(b.block, math.max(now + tonumber(ARGV[12]), block0))\n"
    "budget_save(b, now)\n"
    "return 1\n";

int pace_limits_parse(const char *spec, struct pace_limit **out, size_t *n, char *err,
                      size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (spec == NULL || spec[0] == '\0')
        return 0;
    size_t cap = 1;
    for (const char *s = spec; *s; s++)
        cap += *s == ',';
    struct pace_limit *l = calloc(cap, sizeof(*l));
    if (l == NULL) {
        snprintf(err, errlen, "UPSTREAM_LIMITS: out of memory");
        return -1;
    }
    const char *s = spec;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        char num[64];
        long long rpm = 0, tpm = 0;
        int used = 0;
        if (eq == NULL || eq == s || (size_t)(s + len - eq - 1) >= sizeof(num))
            goto bad;
        memcpy(num, eq + 1, (size_t)(s + len - eq - 1));
        num[s + len - eq - 1] = '\0';
        if (sscanf(num, "%lld:%lld%n", &rpm, &tpm, &used) != 2 || num[used] != '\0' ||
            rpm < 0 || tpm < 0)
            goto bad;
        l[*n].model = strndup(s, (size_t)(eq - s));
        if (l[*n].model == NULL)
            goto bad;
        l[*n].rpm = rpm;
        l[*n].tpm = tpm;
        (*n)++;
        s += len;
        if (*s == ',')
            s++;
        continue;
    bad:
        snprintf(
            err, errlen,
            "UPSTREAM_LIMITS: '%.*s' is not model=rpm:tpm (whole numbers, 0 for none)",
            (int)(len > 80 ? 80 : len), s);
        pace_limits_free(l, *n);
        *n = 0;
        return -1;
    }
    *out = l;
    return 0;
}

void pace_limits_free(struct pace_limit *l, size_t n)
{
    for (size_t i = 0; l != NULL && i < n; i++)
        free(l[i].model);
    free(l);
}

void pace_limits_of(const struct processor *p, const char *model, long long *rpm,
                    long long *tpm)
{
    for (size_t i = 0; i < p->nlimits; i++) {
        if (strcmp(p->limits[i].model, model) == 0) {
            *rpm = p->limits[i].rpm;
            *tpm = p->limits[i].tpm;
            return;
        }
    }
    *rpm = p->cfg->rpm;
    *tpm = p->cfg->tpm;
}

static struct script pace_dispatch_script = {pace_dispatch_lua, ""};
static struct script pace_park_script = {pace_park_lua, ""};
static struct script pace_feedback_script = {pace_feedback_lua, ""};

void pace_budget_name(const struct processor *p, const char *model, char *out, size_t len)
{
    snprintf(out, len, "%s:%s", p->budget_id, model);
}

void pace_user_key(const char *user, char out[PACE_USER_MAX])
{
    if (user == NULL || user[0] == '\0') {
        strcpy(out, "-");
        return;
    }
    size_t n = strlen(user);
    int plain = n <= 64;
    for (size_t i = 0; plain && i < n; i++) {
        char c = user[i];
        plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9') || strchr("._@+=-", c) != NULL;
    }
    if (plain) {
        memcpy(out, user, n + 1);
        return;
    }
    /* FNV-1a: not a secret, just a name that key syntax cannot confuse. */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)user[i];
        h *= 1099511628211ULL;
    }
    snprintf(out, PACE_USER_MAX, "#%016llx", (unsigned long long)h);
}

long long pace_estimate(const struct processor *p, size_t message_len)
{
    /* About four bytes a token, plus the chat framing, plus the answer. */
    return (long long)(message_len + 3) / 4 + 8 + p->cfg->tokens_estimate;
}

/* ---- parking ------------------------------------------------------------------- */

static void pace_on_parked(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct job *job = job_ticket_redeem(privdata, JOB_PARKING);
    const redisReply *r = reply;
    if (job == NULL)
        return;
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        if (r != NULL && !script_missing(&pace_park_script, r))
            log_warn(job->trace, "parking entry %s failed (%s); waiting in its slot",
                     job->id, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        processor_parked(job->p, job, -1);
        return;
    }
    processor_parked(job->p, job, (int)r->integer);
}

static void pace_park(struct processor *p, struct job *job, long long wait_ms)
{
    char name[PACE_NAME_MAX], user[PACE_USER_MAX];
    struct job_ticket *t = NULL;
    struct cmd c;
    job->state = JOB_PARKING;
    job->park_wait_ms = wait_ms;
    redisAsyncContext *ac = rlink_ctx(p->wr);
    script_cmd(&c, &pace_park_script);
    if (ac == NULL || (t = job_ticket_new(job)) == NULL)
        goto fail;
    pace_budget_name(p, job->model, name, sizeof(name));
    pace_user_key(job->user, user);
    cmd_addz(&c, "1");
    cmd_addz(&c, p->keys.requests);
    cmd_addz(&c, KEYS_GROUP_PROCESSORS);
    cmd_addz(&c, p->consumer);
    cmd_addz(&c, job->id);
    cmd_addz(&c, p->cfg->common.prefix);
    cmd_addz(&c, name);
    cmd_addz(&c, user);
    cmd_addll(&c, job->estimate);
    cmd_addll(&c, wait_ms);
    if (c.overflow ||
        redisAsyncCommandArgv(ac, pace_on_parked, t, c.argc, c.argv, c.len) != REDIS_OK)
        goto fail;
    cmd_free(&c);
    return;
fail:
    cmd_free(&c);
    free(t);
    processor_parked(p, job, -1);
}

void pace_park_delay(struct processor *p, struct job *job, long long wait_ms)
{
    pace_park(p, job, wait_ms);
}

/* ---- what answers say ------------------------------------------------------------ */

void pace_feedback(struct processor *p, const struct job *job,
                   const struct upstream_limits *l, long long total_tokens)
{
    const struct config *cfg = p->cfg;
    long long rpm, tpm;
    pace_limits_of(p, job->model, &rpm, &tpm);
    int headers = l->remaining_requests >= 0 || l->remaining_tokens >= 0;
    int settle = tpm > 0 && total_tokens >= 0;
    if (!headers && !settle)
        return;
    redisAsyncContext *ac = rlink_ctx(p->wr);
    if (ac == NULL)
        return; /* advice, not state: nothing is lost by missing it */
    char name[PACE_NAME_MAX], key[KEYS_PREFIX_MAX + PACE_NAME_MAX + 16];
    pace_budget_name(p, job->model, name, sizeof(name));
    snprintf(key, sizeof(key), "%sbudget:%s", cfg->common.prefix, name);
    struct cmd c;
    script_cmd(&c, &pace_feedback_script);
    cmd_addz(&c, "1");
    cmd_addz(&c, key);
    cmd_addll(&c, rpm);
    cmd_addll(&c, tpm);
    cmd_addll(&c, cfg->burst_ms);
    cmd_addll(&c, job->estimate);
    cmd_addll(&c, total_tokens);
    cmd_addll(&c, l->remaining_requests);
    cmd_addll(&c, l->reset_requests_ms);
    cmd_addll(&c, l->limit_requests);
    cmd_addll(&c, l->remaining_tokens);
    cmd_addll(&c, l->reset_tokens_ms);
    cmd_addll(&c, l->limit_tokens);
    cmd_addll(&c, cfg->retry_after_max_ms);
    if (!c.overflow)
        redisAsyncCommandArgv(ac, NULL, NULL, c.argc, c.argv, c.len);
    cmd_free(&c);
}

/* ---- dispatch -------------------------------------------------------------------- */

static void pace_on_dispatched(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct pace *pc = privdata;
    const redisReply *r = reply;
    pc->busy = 0;
    if (script_missing(&pace_dispatch_script, r))
        return; /* sent whole at the next tick */
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        log_warn(NULL, "dispatch from the wait room failed: %s", r->str);
    else if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[0]->integer > 0)
        log_debug(NULL, "dispatched %lld waiting chats", r->element[0]->integer);
}

static void pace_on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pace *pc = arg;
    struct processor *p = pc->p;
    redisAsyncContext *ac = rlink_ctx(p->wr);
    if (ac == NULL || pc->busy || p->stopping)
        return;
    char rooms[KEYS_PREFIX_MAX + 16], delayed[KEYS_PREFIX_MAX + 16],
        entries[KEYS_PREFIX_MAX + 32];
    snprintf(rooms, sizeof(rooms), "%srooms", p->cfg->common.prefix);
    snprintf(delayed, sizeof(delayed), "%sdelayed", p->cfg->common.prefix);
    snprintf(entries, sizeof(entries), "%sdelayed:entries", p->cfg->common.prefix);
    struct cmd c;
    script_cmd(&c, &pace_dispatch_script);
    cmd_addz(&c, "4");
    cmd_addz(&c, p->keys.requests);
    cmd_addz(&c, rooms);
    cmd_addz(&c, delayed);
    cmd_addz(&c, entries);
    cmd_addz(&c, p->cfg->common.prefix);
    cmd_addz(&c, p->keys.trace_prefix);
    cmd_addll(&c, p->cfg->max_attempts);
    cmd_addll(&c, PACE_DISPATCH_MAX);
    cmd_addz(&c, p->keys.events_prefix);
    if (!c.overflow && redisAsyncCommandArgv(ac, pace_on_dispatched, pc, c.argc, c.argv,
                                             c.len) == REDIS_OK)
        pc->busy = 1;
    cmd_free(&c);
}

struct pace *pace_new(struct processor *p)
{
    struct pace *pc = calloc(1, sizeof(*pc));
    if (pc == NULL)
        return NULL;
    pc->p = p;
    script_register(&pace_dispatch_script);
    script_register(&pace_park_script);
    script_register(&pace_feedback_script);
    pc->tick = event_new(p->base, -1, EV_PERSIST, pace_on_tick, pc);
    struct timeval tv = clock_timeval(PACE_TICK_MS);
    if (pc->tick == NULL || event_add(pc->tick, &tv) != 0) {
        pace_free(pc);
        return NULL;
    }
    return pc;
}

void pace_stop(struct pace *pc)
{
    if (pc != NULL && pc->tick != NULL)
        event_del(pc->tick);
}

void pace_free(struct pace *pc)
{
    if (pc == NULL)
        return;
    if (pc->tick)
        event_free(pc->tick);
    free(pc);
}
