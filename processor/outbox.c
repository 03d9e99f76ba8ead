/* outbox.c - results, acks and dead letters on the write connection (see
 * outbox.h).
 *
 * MULTI/EXEC would not do: it does not roll back a command that fails at run
 * time, so a result XADD refused for a key of the wrong type would still let the
 * XACK and XDEL run, and the chat would be lost. The script stops at the first
 * error, before the ack. The XDEL after the ack keeps the requests stream as
 * short as the work in it; entries not yet acked are never trimmed. hiredis sends
 * the commands of all writes made in one loop iteration together, which is the
 * pipelining. The script goes by its SHA1 once Redis has it (script.h). */
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "cmd.h"
#include "deadletter.h"
#include "keys.h"
#include "log.h"
#include "processor.h"
#include "record.h"
#include "rlink.h"
#include "script.h"

struct outbox {
    struct processor *p;     /* borrowed: the owner */
    struct job *head, *tail; /* outcomes waiting for the write connection */
};

/* KEYS: requests, results, dead. ARGV: group, consumer, entry id, dead-letter cap,
 * dead-letter reason ('' for none), deliveries, n (how many of the entry's own
 * field strings follow for the dead letter), those n strings, then the result's
 * field/value pairs (none when there is no trace to finish). Returns 1 when
 * written and acknowledged, 0 when the entry is no longer this consumer's (taken
 * over, or finished by someone else): then nothing is written. */
static const char outbox_lua[] = DEADLETTER_LUA
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)\n"
    "if p[1] == nil or p[1][2] ~= ARGV[2] then return 0 end\n"
    "local n = tonumber(ARGV[7])\n"
    "if ARGV[5] ~= '' then\n"
    "  dead_letter(KEYS[3], ARGV[4], KEYS[1], ARGV[3], ARGV[5], ARGV[6],\n"
    "              {unpack(ARGV, 8, 7 + n)}, 1)\n"
    "end\n"
    "if #ARGV > 7 + n then\n"
    "  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 8 + n))\n"
    "end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('XDEL', KEYS[1], ARGV[3])\n"
    "return 1\n";

static struct script outbox_script = {outbox_lua, ""};

struct outbox *outbox_new(struct processor *p)
{
    script_register(&outbox_script);
    struct outbox *o = calloc(1, sizeof(*o));
    if (o != NULL)
        o->p = p;
    return o;
}

void outbox_free(struct outbox *o)
{
    free(o);
}

static void outbox_enqueue(struct outbox *o, struct job *job)
{
    job->next = NULL;
    if (o->tail)
        o->tail->next = job;
    else
        o->head = job;
    o->tail = job;
}

static struct job *outbox_dequeue(struct outbox *o)
{
    struct job *job = o->head;
    if (job) {
        o->head = job->next;
        if (o->head == NULL)
            o->tail = NULL;
        job->next = NULL;
    }
    return job;
}

/* Redis refused the write: keep the outcome and the slot, try again later. */
static void outbox_refused(struct outbox *o, struct job *job, const char *why)
{
    long long wait = OUTBOX_RETRY_MIN_MS;
    for (int i = 0; i < job->write_tries && wait < OUTBOX_RETRY_MAX_MS; i++)
        wait *= 2;
    if (wait > OUTBOX_RETRY_MAX_MS)
        wait = OUTBOX_RETRY_MAX_MS;
    job->write_tries++;
    /* Loud once, then quiet: the same refusal usually repeats until mended. */
    log_msg(job->write_tries == 1 ? LOG_ERROR : LOG_DEBUG,
            job->trace[0] ? job->trace : NULL,
            "writing the outcome of entry %s failed: %s; nothing was acknowledged, "
            "trying again in %lld ms",
            job->id, why, wait);
    job->state = JOB_WRITE_WAIT;
    struct timeval tv = clock_timeval(wait);
    evtimer_add(job->timer, &tv);
    (void)o;
}

static void outbox_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct job *job = privdata;
    struct processor *p = job->p;
    struct outbox *o = p->out;
    redisReply *r = reply;

    job->write_sent = 0;
    if (r == NULL) {
        /* The connection dropped before the script answered; whether it ran is
         * unknown, so it goes again after the reconnect (run twice, the second
         * finds the entry acknowledged and writes nothing). */
        outbox_enqueue(o, job);
        return;
    }
    if (script_missing(&outbox_script, r)) {
        outbox_enqueue(o, job); /* sent whole right away */
        outbox_flush(o);
        return;
    }
    if (r->type != REDIS_REPLY_INTEGER) {
        outbox_refused(o, job,
                       r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        return;
    }
    if (job->write_tries > 0)
        log_info(job->trace[0] ? job->trace : NULL,
                 "outcome of entry %s written after %d refused tries", job->id,
                 job->write_tries);
    if (r->integer == 0)
        log_info(job->trace[0] ? job->trace : NULL,
                 "entry %s was taken over by another processor; our outcome is dropped",
                 job->id);
    processor_release(p, job);
}

static void outbox_fill_result(const struct job *job, struct chat_result *res)
{
    record_result_init(res);
    res->trace = job->trace;
    res->accepted = job->accepted;
    res->timestamp = job->finished;
    res->model = job->model;
    if (job->dead) {
        res->status = CHAT_FAILED;
        res->error_code = job->dead->code;
        res->error_message = job->dead->reason;
        return;
    }
    const struct outcome *o = &job->outcome;
    res->attempts = job->attempts;
    if (o->kind == OUTCOME_COMPLETED) {
        res->status = CHAT_COMPLETED;
        res->response = o->response;
        res->response_len = o->response_len;
        res->model = o->model;
        res->prompt_tokens = o->prompt_tokens;
        res->completion_tokens = o->completion_tokens;
        res->total_tokens = o->total_tokens;
        res->finish_reason = o->finish_reason;
    } else {
        res->status = CHAT_FAILED;
        res->error_code = o->code;
        res->error_message = o->message;
        res->upstream_status = o->http_status;
    }
}

/* Sends one job's write; returns 0, or -1 if it could not be queued. */
static int outbox_send(redisAsyncContext *ac, struct outbox *o, struct job *job)
{
    const struct processor *p = o->p;
    const struct job_dead *d = job->dead;
    struct cmd c;
    int rc = -1;

    script_cmd(&c, &outbox_script);
    cmd_addz(&c, "3");
    cmd_addz(&c, p->keys.requests);
    cmd_addz(&c, p->keys.results);
    cmd_addz(&c, p->keys.dead);
    cmd_addz(&c, KEYS_GROUP_PROCESSORS);
    cmd_addz(&c, p->consumer);
    cmd_addz(&c, job->id);
    cmd_addll(&c, p->cfg->dead_letter_max);
    cmd_addz(&c, d ? d->reason : "");
    cmd_addll(&c, job->deliveries);
    cmd_addll(&c, d ? (long long)d->nfields : 0);
    for (size_t i = 0; d && i < d->nfields; i++)
        cmd_add(&c, d->fields[i], d->lens[i]);
    /* A dead letter without a well-formed trace has no record to fail. */
    if (job->trace[0]) {
        struct chat_result res;
        outbox_fill_result(job, &res);
        record_result_append(&res, &c);
    }
    if (c.overflow) {
        log_error(job->trace[0] ? job->trace : NULL,
                  "out of memory building the write of entry %s", job->id);
    } else if (redisAsyncCommandArgv(ac, outbox_on_reply, job, c.argc, c.argv, c.len) ==
               REDIS_OK) {
        job->write_sent = 1;
        rc = 0;
    }
    cmd_free(&c);
    return rc;
}

void outbox_flush(struct outbox *o)
{
    for (;;) {
        redisAsyncContext *ac = rlink_ctx(o->p->wr);
        if (ac == NULL || o->head == NULL)
            return;
        struct job *job = outbox_dequeue(o);
        if (outbox_send(ac, o, job) != 0) {
            /* A context on its way down (or out of memory): try again after the
             * reconnect or the next write. */
            job->next = o->head;
            o->head = job;
            if (o->tail == NULL)
                o->tail = job;
            return;
        }
    }
}

void outbox_push(struct outbox *o, struct job *job)
{
    job->state = JOB_WRITING;
    job->write_sent = 0;
    job->write_tries = 0;
    clock_iso8601(job->finished, clock_now_ms());
    outbox_enqueue(o, job);
    outbox_flush(o);
}

void outbox_retry(struct outbox *o, struct job *job)
{
    job->state = JOB_WRITING;
    outbox_enqueue(o, job);
    outbox_flush(o);
}

struct job *outbox_take_unsent(struct outbox *o)
{
    struct job *head = o->head;
    o->head = o->tail = NULL;
    return head;
}
