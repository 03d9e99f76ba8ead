/* admit.c - counting upstream attempts in the trace's record (see admit.h). */
#include "admit.h"

#include <stdlib.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cmd.h"
#include "pace.h"
#include "keys.h"
#include "log.h"
#include "processor.h"
#include "record.h"
#include "rlink.h"
#include "script.h"

/* KEYS: the trace hash, the budget, the requests stream. ARGV:
 * UPSTREAM_MAX_ATTEMPTS, rpm, tpm, burst ms, the token estimate, group, consumer,
 * entry id, key prefix, budget name, user key. Returns {verdict, wait ms}: the
 * number of the attempt now begun, ADMIT_EXHAUSTED, ADMIT_UNCOUNTED, ADMIT_PARKED
 * (with about how long until it may go), ADMIT_LOST or ADMIT_CANCELLED. A record that
 * does not exist is never created here: it must not gain one without a TTL or a status.
 *
 * The budget is looked at only when one is set or the upstream's headers made one;
 * a chat goes into the wait room when the budget has nothing left, or when other
 * chats already wait for it (it must not pass them). */
static const char admit_lua[] = PACE_LUA
    "local counted = redis.call('EXISTS', KEYS[1]) == 1\n"
    "if counted and redis.call('HGET', KEYS[1], '" REC_STATUS "') ==\n"
    "   '" CHAT_CANCELLED_NAME "' then return {-4, 0} end\n"
    "if counted and tonumber(redis.call('HGET', KEYS[1], '" REC_TRIES "') or '0') >=\n"
    "   tonumber(ARGV[1]) then return {0, 0} end\n"
    "local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "if rpm > 0 or tpm > 0 or redis.call('EXISTS', KEYS[2]) == 1 then\n"
    "  local now = now_ms()\n"
    "  local est = tonumber(ARGV[5])\n"
    "  local b = budget_load(KEYS[2], rpm, tpm, tonumber(ARGV[4]), now)\n"
    "  local queued = redis.call('EXISTS', ARGV[9] .. 'users:' .. ARGV[10]) == 1\n"
    "  if queued or not budget_take(b, est, now) then\n"
    "    local p = redis.call('XPENDING', KEYS[3], ARGV[6], ARGV[8], ARGV[8], 1)\n"
    "    if p[1] == nil or p[1][2] ~= ARGV[7] then return {-3, 0} end\n"
    "    budget_save(b, now)\n"
    "    park(KEYS[3], ARGV[6], ARGV[8], ARGV[9], 'room', ARGV[10], ARGV[11], est,\n"
    "         '0', 0)\n"
    "    return {-2, budget_wait(b, est, now)}\n"
    "  end\n"
    "  budget_save(b, now)\n"
    "end\n"
    "if not counted then return {-1, 0} end\n"
    "return {redis.call('HINCRBY', KEYS[1], '" REC_TRIES "', 1), 0}\n";

static struct script admit_script = {admit_lua, ""};

void admit_register(void)
{
    script_register(&admit_script);
}

static void admit_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct job *job = job_ticket_redeem(privdata, JOB_ADMITTING);
    const redisReply *r = reply;
    if (job == NULL)
        return;
    job->admit_sent = 0;
    if (r == NULL)
        return; /* the connection dropped: sent again once it is back */
    if (script_missing(&admit_script, r)) {
        admit_send(job->p, job);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_INTEGER) {
        /* Not counted, so not begun: the attempt would be unbounded. */
        log_error(job->trace,
                  "counting attempt of entry %s failed: %s; trying again "
                  "after the next reconnect or heartbeat",
                  job->id, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        return;
    }
    if (r->element[0]->integer == ADMIT_PARKED)
        log_debug(job->trace, "entry %s waits for the budget, about %lld ms", job->id,
                  r->element[1]->integer);
    processor_admitted(job->p, job, r->element[0]->integer);
}

static void admit_send_one(struct processor *p, redisAsyncContext *ac, struct job *job)
{
    char key[KEYS_MAX + UUID_LEN + 1], name[PACE_NAME_MAX], user[PACE_USER_MAX];
    char budget[KEYS_PREFIX_MAX + PACE_NAME_MAX + 16];
    struct job_ticket *t = job_ticket_new(job);
    if (t == NULL)
        return; /* tried again by admit_flush */
    keys_trace(&p->keys, job->trace, key, sizeof(key));
    pace_budget_name(p, job->model, name, sizeof(name));
    pace_user_key(job->user, user);
    snprintf(budget, sizeof(budget), "%sbudget:%s", p->cfg->common.prefix, name);
    struct cmd c;
    script_cmd(&c, &admit_script);
    cmd_addz(&c, "3");
    cmd_addz(&c, key);
    cmd_addz(&c, budget);
    cmd_addz(&c, p->keys.requests);
    cmd_addll(&c, p->cfg->max_attempts);
    long long rpm, tpm;
    pace_limits_of(p, job->model, &rpm, &tpm);
    cmd_addll(&c, rpm);
    cmd_addll(&c, tpm);
    cmd_addll(&c, p->cfg->burst_ms);
    cmd_addll(&c, job->estimate);
    cmd_addz(&c, KEYS_GROUP_PROCESSORS);
    cmd_addz(&c, p->consumer);
    cmd_addz(&c, job->id);
    cmd_addz(&c, p->cfg->common.prefix);
    cmd_addz(&c, name);
    cmd_addz(&c, user);
    if (!c.overflow &&
        redisAsyncCommandArgv(ac, admit_on_reply, t, c.argc, c.argv, c.len) == REDIS_OK) {
        job->admit_sent = 1;
        t = NULL;
    }
    cmd_free(&c);
    free(t);
}

void admit_send(struct processor *p, struct job *job)
{
    job->admit_sent = 0;
    redisAsyncContext *ac = rlink_ctx(p->wr);
    if (ac != NULL)
        admit_send_one(p, ac, job);
}

void admit_flush(struct processor *p)
{
    redisAsyncContext *ac = rlink_ctx(p->wr);
    for (size_t i = 0; ac != NULL && i < p->nused; i++) {
        struct job *job = &p->jobs[i];
        if (job->state == JOB_ADMITTING && !job->admit_sent)
            admit_send_one(p, ac, job);
    }
}
