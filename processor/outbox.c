/* outbox.c - results, acks and dead letters on the write connection (see
 * outbox.h).
 *
 * Each write is MULTI; XADD ...; XACK; XDEL; EXEC so that a result is never
 * written without its request being acked, nor acked without its result. The
 * XDEL after the ack keeps the requests stream as short as the work in it;
 * entries not yet acked are never trimmed. hiredis sends the commands of all
 * writes made in one loop iteration together, which is the pipelining. */
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "cmd.h"
#include "keys.h"
#include "log.h"
#include "processor.h"
#include "record.h"
#include "rlink.h"

static void outbox_enqueue(struct processor *p, struct job *job)
{
    job->next = NULL;
    if (p->wq_tail)
        p->wq_tail->next = job;
    else
        p->wq_head = job;
    p->wq_tail = job;
}

static struct job *outbox_dequeue(struct processor *p)
{
    struct job *job = p->wq_head;
    if (job) {
        p->wq_head = job->next;
        if (p->wq_head == NULL)
            p->wq_tail = NULL;
        job->next = NULL;
    }
    return job;
}

static void outbox_on_exec(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct job *job = privdata;
    struct processor *p = job->p;
    redisReply *r = reply;

    job->write_sent = 0;
    if (r == NULL) {
        /* The connection dropped before EXEC answered; whether it ran is unknown,
         * so it goes again after the reconnect. */
        outbox_enqueue(p, job);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        /* Not a lost connection but a refusal (e.g. Redis out of memory): the
         * entry stays pending without a heartbeat and is taken over, and run
         * again, once it is CLAIM_IDLE_MS idle. */
        log_error(job->trace[0] ? job->trace : NULL,
                  "writing the outcome of entry %s failed: %s", job->id,
                  r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply to EXEC");
    } else {
        /* A command inside the transaction failed on its own (a key of the wrong
         * type: misconfiguration). The others ran, so say loudly what was lost. */
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_ERROR)
                log_error(job->trace[0] ? job->trace : NULL,
                          "writing the outcome of entry %s: step %zu failed: %s", job->id,
                          i + 1, r->element[i]->str);
    }
    processor_release(p, job);
}

static int outbox_send_cmd(redisAsyncContext *ac, struct cmd *c)
{
    if (c->overflow) {
        log_error(NULL, "internal error: %s with too many arguments", c->argv[0]);
        return -1;
    }
    return redisAsyncCommandArgv(ac, NULL, NULL, c->argc, c->argv, c->len) == REDIS_OK
               ? 0
               : -1;
}

static int outbox_send_result(redisAsyncContext *ac, struct processor *p,
                              const struct chat_result *res)
{
    struct cmd c;
    cmd_init(&c, "XADD");
    cmd_addz(&c, p->keys.results);
    cmd_addz(&c, "*");
    record_result_append(res, &c);
    int rc = outbox_send_cmd(ac, &c);
    cmd_free(&c);
    return rc;
}

/* XADD <dead> MAXLEN ~ <max> * source <requests> id <id> reason <r> deliveries <n>
 * <original fields>;
 * the original fields are any number, hence the argv built here. */
static int outbox_send_dead(redisAsyncContext *ac, struct processor *p,
                            const struct job *job)
{
    const struct job_dead *d = job->dead;
    size_t cap = 14 + d->nfields;
    const char **argv = malloc(cap * sizeof(*argv));
    size_t *lens = malloc(cap * sizeof(*lens));
    int rc = -1;
    if (argv == NULL || lens == NULL)
        goto out;

    char max[32], deliveries[32];
    snprintf(max, sizeof(max), "%lld", p->cfg->dead_letter_max);
    snprintf(deliveries, sizeof(deliveries), "%lld", job->deliveries);
    const char *head[] = {"XADD",           p->keys.dead,     "MAXLEN",
                          "~",              max,              "*",
                          REC_DEAD_SOURCE,  p->keys.requests, REC_DEAD_ID,
                          job->id,          REC_DEAD_REASON,  d->reason,
                          REC_DEAD_DELIVERIES, deliveries};
    int argc = 0;
    for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++) {
        argv[argc] = head[i];
        lens[argc] = strlen(head[i]);
        argc++;
    }
    for (size_t i = 0; i < d->nfields; i++) {
        argv[argc] = d->fields[i];
        lens[argc] = d->lens[i];
        argc++;
    }
    rc = redisAsyncCommandArgv(ac, NULL, NULL, argc, argv, lens) == REDIS_OK ? 0 : -1;
out:
    free(argv);
    free(lens);
    return rc;
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
    } else {
        res->status = CHAT_FAILED;
        res->error_code = o->code;
        res->error_message = o->message;
    }
}

/* Queues the steps of one job's transaction after MULTI; 0 or -1. */
static int outbox_send_steps(redisAsyncContext *ac, struct processor *p, struct job *job)
{
    if (job->dead && outbox_send_dead(ac, p, job) != 0)
        return -1;
    /* A dead letter without a well-formed trace has no record to fail. */
    if (job->trace[0]) {
        struct chat_result res;
        outbox_fill_result(job, &res);
        if (outbox_send_result(ac, p, &res) != 0)
            return -1;
    }
    const char *ack[] = {"XACK", p->keys.requests, KEYS_GROUP_PROCESSORS, job->id};
    const char *del[] = {"XDEL", p->keys.requests, job->id};
    if (redisAsyncCommandArgv(ac, NULL, NULL, 4, ack, NULL) != REDIS_OK ||
        redisAsyncCommandArgv(ac, NULL, NULL, 3, del, NULL) != REDIS_OK)
        return -1;
    return 0;
}

/* Sends one job's write; returns 0, or -1 if it could not be queued (nothing of it
 * then runs). */
static int outbox_send(redisAsyncContext *ac, struct processor *p, struct job *job)
{
    if (redisAsyncCommand(ac, NULL, NULL, "MULTI") != REDIS_OK)
        return -1;
    if (outbox_send_steps(ac, p, job) != 0 ||
        redisAsyncCommand(ac, outbox_on_exec, job, "EXEC") != REDIS_OK) {
        /* Out of memory or a context going down: never leave a transaction open on a
         * connection that carries on (heartbeats would only be QUEUED). */
        redisAsyncCommand(ac, NULL, NULL, "DISCARD");
        return -1;
    }
    job->write_sent = 1;
    return 0;
}

void outbox_flush(struct processor *p)
{
    for (;;) {
        redisAsyncContext *ac = rlink_ctx(p->wr);
        if (ac == NULL || p->wq_head == NULL)
            return;
        struct job *job = outbox_dequeue(p);
        if (outbox_send(ac, p, job) != 0) {
            /* A context on its way down (or out of memory): try again after the
             * reconnect or the next write. */
            job->next = p->wq_head;
            p->wq_head = job;
            if (p->wq_tail == NULL)
                p->wq_tail = job;
            return;
        }
    }
}

void outbox_push(struct processor *p, struct job *job)
{
    job->state = JOB_WRITING;
    job->write_sent = 0;
    clock_iso8601(job->finished, clock_now_ms());
    outbox_enqueue(p, job);
    outbox_flush(p);
}

struct job *outbox_take_unsent(struct processor *p)
{
    struct job *head = p->wq_head;
    p->wq_head = p->wq_tail = NULL;
    return head;
}
