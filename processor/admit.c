/* admit.c - counting upstream attempts in the trace's record (see admit.h). */
#include "admit.h"

#include <stdlib.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cmd.h"
#include "keys.h"
#include "log.h"
#include "processor.h"
#include "record.h"
#include "rlink.h"

/* KEYS[1] the trace hash; ARGV[1] UPSTREAM_MAX_ATTEMPTS. Returns the number of
 * the attempt now begun, ADMIT_EXHAUSTED (0) or ADMIT_UNCOUNTED (-1). The hash is
 * never created here: a record that does not exist must not gain one without a
 * TTL or a status. */
static const char admit_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
    "local n = tonumber(redis.call('HGET', KEYS[1], '" REC_TRIES "') or '0')\n"
    "if n >= tonumber(ARGV[1]) then return 0 end\n"
    "return redis.call('HINCRBY', KEYS[1], '" REC_TRIES "', 1)\n";

/* The slot and its generation: a slot released and taken again meanwhile ignores
 * the answer meant for its previous entry. */
struct admit_ticket {
    struct job *job;
    unsigned gen;
};

static void admit_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct admit_ticket *t = privdata;
    struct job *job = t->job;
    const redisReply *r = reply;
    int current = job->gen == t->gen && job->state == JOB_ADMITTING;
    free(t);
    if (!current)
        return;
    job->admit_sent = 0;
    if (r == NULL)
        return; /* the connection dropped: sent again once it is back */
    if (r->type != REDIS_REPLY_INTEGER) {
        /* Not counted, so not begun: the attempt would be unbounded. */
        log_error(job->trace,
                  "counting attempt of entry %s failed: %s; trying again "
                  "after the next reconnect or heartbeat",
                  job->id, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        return;
    }
    processor_admitted(job->p, job, r->integer);
}

static void admit_send_one(struct processor *p, redisAsyncContext *ac, struct job *job)
{
    char key[KEYS_MAX + UUID_LEN + 1];
    struct admit_ticket *t = malloc(sizeof(*t));
    if (t == NULL)
        return; /* tried again by admit_flush */
    t->job = job;
    t->gen = job->gen;
    keys_trace(&p->keys, job->trace, key, sizeof(key));
    struct cmd c;
    cmd_init(&c, "EVAL");
    cmd_addz(&c, admit_script);
    cmd_addz(&c, "1");
    cmd_addz(&c, key);
    cmd_addll(&c, p->cfg->max_attempts);
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
