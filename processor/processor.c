/* processor.c - the job slots and their life, the links' events, and shutdown
 * (see processor.h).
 *
 * A slot is taken when an entry arrives (read or claimed) and given back only
 * when the outcome's write is confirmed, so the number of slots bounds everything
 * the process holds: requests in flight, backoff waits and unconfirmed writes.
 * Reads and claims never ask for more entries than there are free slots. */
#include "processor.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "admit.h"
#include "deltas.h"
#include "inbox.h"
#include "live.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "pace.h"
#include "record.h"
#include "rlink.h"
#include "script.h"
#include "stream.h"

/* After the grace period, how long the hand-back and the last writes may take
 * before the process leaves anyway (their entries are then reclaimed later). */
#define PROCESSOR_HARD_STOP_MS 5000

static void processor_timer(struct event *ev, long long ms)
{
    struct timeval tv = clock_timeval(ms);
    evtimer_add(ev, &tv);
}

double processor_random(struct processor *p)
{
    /* xorshift64*: plenty for spreading retries apart. */
    p->rng ^= p->rng >> 12;
    p->rng ^= p->rng << 25;
    p->rng ^= p->rng >> 27;
    return (double)((p->rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

size_t processor_free_slots(const struct processor *p)
{
    size_t promised = inbox_reserved(p->in);
    size_t held = p->njobs - p->nfree;
    size_t limit = p->climit >= 1 ? (size_t)p->climit : 1;
    size_t room = limit > held + promised ? limit - held - promised : 0;
    size_t free_slots = p->nfree > promised ? p->nfree - promised : 0;
    return room < free_slots ? room : free_slots;
}

/* AIMD on p->climit from one attempt's outcome. */
static void processor_adapt(struct processor *p, const struct outcome *o)
{
    if (!p->cfg->adaptive)
        return;
    if (o->kind == OUTCOME_COMPLETED) {
        /* Slowly while the upstream was shedding load lately, quickly after. */
        p->climit += clock_mono_ms() - p->climit_cut_ms < 5000 ? 1.0 / p->climit : 1.0;
        if (p->climit > (double)p->njobs)
            p->climit = (double)p->njobs;
        return;
    }
    if (o->code == NULL || (strcmp(o->code, "upstream_timeout") != 0 &&
                            strcmp(o->code, "upstream_unavailable") != 0))
        return;
    long long now = clock_mono_ms();
    if (now - p->climit_cut_ms < 1000)
        return;
    p->climit_cut_ms = now;
    double before = p->climit;
    p->climit *= 0.7;
    if (p->climit < 1)
        p->climit = 1;
    if ((size_t)before != (size_t)p->climit)
        log_info(NULL, "the upstream sheds load (%s): %zu calls at once now, was %zu",
                 o->code, (size_t)p->climit, (size_t)before);
}

int processor_holds(const struct processor *p, const char *id)
{
    for (size_t i = 0; i < p->nused; i++)
        if (p->jobs[i].state != JOB_FREE && strcmp(p->jobs[i].id, id) == 0)
            return 1;
    return 0;
}

struct job_ticket {
    struct job *job;
    unsigned gen;
};

struct job_ticket *job_ticket_new(struct job *job)
{
    struct job_ticket *t = malloc(sizeof(*t));
    if (t != NULL) {
        t->job = job;
        t->gen = job->gen;
    }
    return t;
}

struct job *job_ticket_redeem(struct job_ticket *t, enum job_state state)
{
    struct job *job = t->job;
    int current = job->gen == t->gen && job->state == state;
    free(t);
    return current ? job : NULL;
}

void processor_drop(struct processor *p, const char *id)
{
    for (size_t i = 0; i < p->nused; i++) {
        struct job *job = &p->jobs[i];
        if (job->state == JOB_FREE || strcmp(job->id, id) != 0)
            continue;
        if (job->state == JOB_ADMITTING || job->state == JOB_RUNNING ||
            job->state == JOB_WAITING) {
            log_warn(job->trace[0] ? job->trace : NULL,
                     "entry %s was taken over by another processor while Redis was "
                     "away; dropping our copy",
                     id);
            processor_release(p, job);
        }
        return;
    }
}

void processor_parked(struct processor *p, struct job *job, int moved)
{
    if (moved >= 0) {
        processor_release(p, job);
        return;
    }
    /* Not parked (Redis away, or refused): wait in the slot instead. */
    job->state = JOB_WAITING;
    processor_timer(job->timer, job->park_wait_ms);
}

void processor_pump(struct processor *p)
{
    /* Many slots free up in one burst of completions; deciding once afterwards
     * makes one large read instead of many of one entry. */
    if (p->pump)
        event_active(p->pump, EV_TIMEOUT, 1);
}

/* ---- slots --------------------------------------------------------------------- */

static void processor_dead_free(struct job_dead *d)
{
    if (d == NULL)
        return;
    free(d->reason);
    free(d->fields); /* one block with the lengths and the strings */
    free(d);
}

static void processor_on_timer(evutil_socket_t fd, short what, void *arg);

/* Slots are set up on first use: an idle processor with room for thousands of
 * requests touches none of that memory (a slot is about 0.75 KiB). */
static struct job *processor_slot_init(struct processor *p)
{
    if (p->nused == p->njobs)
        return NULL;
    struct job *job = &p->jobs[p->nused];
    job->p = p;
    upstream_xfer_init(&job->xfer);
    outcome_init(&job->outcome);
    job->timer = evtimer_new(p->base, processor_on_timer, job);
    if (job->timer == NULL)
        return NULL;
    p->nused++;
    return job;
}

static struct job *processor_take(struct processor *p)
{
    struct job *job = p->free_jobs;
    if (job != NULL)
        p->free_jobs = job->next;
    else
        job = processor_slot_init(p);
    if (job == NULL)
        return NULL;
    p->nfree--;
    job->gen++;
    job->next = NULL;
    job->attempts = 0;
    job->admit_sent = 0;
    job->cancel = 0;
    job->deadline = 0;
    job->admitted = 0;
    job->estimate = 0;
    job->write_sent = 0;
    job->write_tries = 0;
    job->deliveries = 0;
    job->id[0] = job->trace[0] = job->finished[0] = '\0';
    return job;
}

/* Drops what a slot holds for its request (not its timer, which the slot keeps). */
static void processor_slot_clear(struct job *job)
{
    upstream_cancel(&job->xfer);
    upstream_xfer_clear(&job->xfer);
    outcome_clear(&job->outcome);
    free(job->model);
    free(job->accepted);
    free(job->user);
    processor_dead_free(job->dead);
    job->model = job->accepted = job->user = NULL;
    job->dead = NULL;
}

void processor_release(struct processor *p, struct job *job)
{
    evtimer_del(job->timer);
    processor_slot_clear(job);
    job->state = JOB_FREE;
    job->next = p->free_jobs;
    p->free_jobs = job;
    p->nfree++;
    processor_pump(p);
}

/* ---- dead letters -------------------------------------------------------------- */

/* Copies the entry's field/value strings into one block. */
static int processor_dead_copy(struct job_dead *d, const redisReply *fields)
{
    size_t n = 0, bytes = 0;
    if (fields && fields->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < fields->elements; i++) {
            if (fields->element[i]->type == REDIS_REPLY_STRING) {
                n++;
                bytes += fields->element[i]->len + 1;
            }
        }
    }
    n -= n % 2; /* an odd string out would shift every pair after it */
    if (n == 0)
        return 0;
    char *block = malloc(n * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (block == NULL)
        return -1;
    d->fields = (char **)block;
    d->lens = (size_t *)(block + n * sizeof(char *));
    char *s = block + n * (sizeof(char *) + sizeof(size_t));
    for (size_t i = 0, k = 0; i < fields->elements && k < n; i++) {
        const redisReply *e = fields->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        memcpy(s, e->str, e->len);
        s[e->len] = '\0';
        d->fields[k] = s;
        d->lens[k] = e->len;
        s += e->len + 1;
        k++;
    }
    d->nfields = n;
    return 0;
}

/* Sends the entry to the dead-letter stream (and fails its trace, if it has one)
 * instead of running it: it is malformed, or it was delivered so often that it
 * probably kills whoever takes it. */
static void processor_dead(struct processor *p, struct job *job, const redisReply *fields,
                           const char *code, const char *reason)
{
    struct job_dead *d = calloc(1, sizeof(*d));
    if (d)
        d->reason = strdup(reason);
    if (d == NULL || d->reason == NULL || processor_dead_copy(d, fields) != 0) {
        log_error(job->trace[0] ? job->trace : NULL,
                  "out of memory dead-lettering entry %s; it stays pending", job->id);
        processor_dead_free(d);
        processor_release(p, job);
        return;
    }
    d->code = code;
    job->dead = d;
    metrics_inc(metrics_dead_letters);
    log_warn(job->trace[0] ? job->trace : NULL,
             "event=dead_letter entry=%s code=%s reason=\"%s\"", job->id, code, reason);
    live_finished(p->live, 0, code, reason);
    outbox_push(p->out, job);
}

/* ---- attempts ------------------------------------------------------------------ */

static void processor_outcome(struct processor *p, struct job *job);

/* Ends the chat failed with code: its deadline passed, or its attempts are spent.
 * The last attempt's outcome, if this processor made one, is kept in the message. */
static void processor_fail(struct processor *p, struct job *job, const char *code,
                           const char *why)
{
    char msg[OUTCOME_MESSAGE_MAX + 256];
    const struct outcome *o = &job->outcome;
    if (o->code != NULL)
        snprintf(msg, sizeof(msg), "%s; the last attempt: %s: %s", why, o->code,
                 o->message ? o->message : "");
    else
        snprintf(msg, sizeof(msg), "%s", why);
    if (outcome_fail(&job->outcome, code, msg) != 0) {
        log_error(job->trace, "out of memory failing entry %s; it stays pending",
                  job->id);
        processor_release(p, job);
        return;
    }
    processor_outcome(p, job);
}

/* 1 (and the chat failed) if job's deadline has passed, or will have by now +
 * wait_ms. */
static int processor_past_deadline(struct processor *p, struct job *job,
                                   long long wait_ms)
{
    if (job->deadline <= 0 || clock_now_ms() + wait_ms < job->deadline)
        return 0;
    char why[160], iso[CLOCK_ISO_LEN];
    clock_iso8601(iso, job->deadline);
    snprintf(why, sizeof(why), "the chat's deadline %s passed before attempt %d could %s",
             iso, job->attempts + 1, wait_ms > 0 ? "be made" : "start");
    processor_fail(p, job, "deadline_exceeded", why);
    return 1;
}

/* Ends the chat without a further attempt: the client cancelled it. Its record is
 * final already ("cancelled", written by the api); the outcome written only
 * acknowledges the entry, and the handler leaves a final record as it is. */
static void processor_cancelled(struct processor *p, struct job *job)
{
    log_info(job->trace, "cancelled by the client: %s",
             job->state == JOB_RUNNING ? "the upstream call is aborted"
                                       : "no further attempt");
    upstream_cancel(&job->xfer);
    evtimer_del(job->timer);
    job->cancel = 0;
    if (outcome_fail(&job->outcome, "cancelled", "cancelled by the client") != 0) {
        log_error(job->trace, "out of memory ending entry %s; it stays pending", job->id);
        processor_release(p, job);
        return;
    }
    /* Straight to the write: it is no failure to log or retry. */
    outbox_push(p->out, job);
}

void processor_cancel(struct processor *p, const char *trace)
{
    for (size_t i = 0; i < p->nused; i++) {
        struct job *job = &p->jobs[i];
        if (job->state == JOB_FREE || strcmp(job->trace, trace) != 0)
            continue;
        if (job->state == JOB_RUNNING || job->state == JOB_WAITING)
            processor_cancelled(p, job);
        else if (job->state == JOB_ADMITTING)
            job->cancel = 1;
        /* Parking: the attempt after the wait room is refused by admit.h's check.
         * Writing: the outcome is already on its way. */
    }
}

/* Begins the next attempt: counted in Redis first (admit.h), then sent. */
static void processor_attempt(struct processor *p, struct job *job)
{
    if (processor_past_deadline(p, job, 0))
        return;
    if (job->admitted > 0) {
        long long n = job->admitted;
        job->admitted = 0;
        processor_admitted(p, job, n);
        return;
    }
    job->state = JOB_ADMITTING;
    admit_send(p, job);
}

void processor_admitted(struct processor *p, struct job *job, long long verdict)
{
    if (verdict == ADMIT_PARKED || verdict == ADMIT_LOST) {
        /* Out of the stream (the wait room has it), or someone else's now. */
        processor_release(p, job);
        return;
    }
    if (verdict == ADMIT_CANCELLED || job->cancel) {
        processor_cancelled(p, job);
        return;
    }
    if (verdict == ADMIT_EXHAUSTED) {
        char why[200];
        /* Our own last attempt was the last allowed (another processor counted
         * meanwhile): the usual give-up. */
        if (job->outcome.kind == OUTCOME_RETRY && job->outcome.code != NULL &&
            outcome_give_up(&job->outcome, (int)p->cfg->max_attempts) == 0) {
            processor_outcome(p, job);
            return;
        }
        job->attempts = (int)p->cfg->max_attempts;
        snprintf(why, sizeof(why),
                 "the upstream was already tried %lld times for this chat "
                 "(UPSTREAM_MAX_ATTEMPTS) by processors that stopped before it ended",
                 p->cfg->max_attempts);
        processor_fail(p, job, "upstream_attempts_exhausted", why);
        return;
    }
    /* The deadline may have passed while the count was on its way. */
    if (processor_past_deadline(p, job, 0))
        return;
    job->attempts = verdict > 0 ? (int)verdict : job->attempts + 1;
    outcome_clear(&job->outcome);
    job->state = JOB_RUNNING;
    job->delta_sent = 0; /* a retried attempt's text starts over */
    job->delta_ms = 0;
    upstream_xfer_trace(&job->xfer, job->trace, job->attempts);
    if (upstream_start(p->up, &job->xfer) == 0)
        return;
    /* Treated like a failed connection: retried, and failed after the last
     * attempt. */
    struct outcome_input in = {.curl_code = CURLE_FAILED_INIT,
                               .curl_error = "could not start the transfer",
                               .retry_after_ms = -1,
                               .request_model = job->model,
                               .secret = p->cfg->api_key};
    outcome_classify(&in, &job->outcome);
    processor_outcome(p, job);
}

/* The slot's one timer: the end of a backoff wait, or of a refused write's, or
 * (while the call runs) the time to write the streamed text that waited. */
static void processor_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct job *job = arg;
    if (job->state == JOB_RUNNING)
        deltas_flush(job->p, job);
    else if (job->state == JOB_WRITE_WAIT)
        outbox_retry(job->p->out, job);
    else
        processor_attempt(job->p, job);
}

static void processor_count_tokens(const struct outcome *o)
{
    if (o->prompt_tokens > 0)
        metrics_add(&metrics_tokens, o->prompt_tokens, o->model, "prompt");
    if (o->completion_tokens > 0)
        metrics_add(&metrics_tokens, o->completion_tokens, o->model, "completion");
}

/* Acts on job->outcome: write it, or wait and try again. */
static void processor_outcome(struct processor *p, struct job *job)
{
    struct outcome *o = &job->outcome;
    const char *trace = job->trace;

    if (o->kind == OUTCOME_RETRY && job->attempts >= p->cfg->max_attempts)
        outcome_give_up(o, job->attempts);

    switch (o->kind) {
    case OUTCOME_COMPLETED:
        log_debug(trace, "event=completed attempts=%d model=%s", job->attempts, o->model);
        metrics_inc(metrics_chats_completed);
        processor_count_tokens(o);
        live_finished(p->live, 1, NULL, NULL);
        outbox_push(p->out, job);
        return;
    case OUTCOME_FAILED:
        log_warn(trace, "event=failed code=%s attempts=%d message=\"%s\"",
                 o->code ? o->code : "?", job->attempts, o->message ? o->message : "");
        metrics_inc1(metrics_chats_failed, o->code ? o->code : "unknown");
        live_finished(p->live, 0, o->code ? o->code : "?", o->message);
        outbox_push(p->out, job);
        return;
    case OUTCOME_RETRY:
        metrics_inc1(metrics_retries, o->code ? o->code : "unknown");
        break;
    }
    long long wait =
        retry_delay_ms(&p->policy, job->attempts, o->retry_after_ms, processor_random(p));
    /* No use waiting for an attempt the deadline forbids. */
    if (processor_past_deadline(p, job, wait))
        return;
    admit_retrying(p, job, wait);
    /* A long wait (the upstream's Retry-After, or a backoff) is spent in Redis:
     * slots are for calls on the wire. What the upstream said about the key as a
     * whole (x-ratelimit-*) has already paused its budget for every processor. */
    if (p->cfg->park_min_ms > 0 && wait >= p->cfg->park_min_ms) {
        log_info(trace, "event=park attempt=%d code=%s wait_ms=%lld message=\"%s\"",
                 job->attempts, o->code ? o->code : "?", wait,
                 o->message ? o->message : "");
        pace_park_delay(p, job, wait);
        return;
    }
    log_info(trace, "event=retry attempt=%d code=%s wait_ms=%lld message=\"%s\"",
             job->attempts, o->code ? o->code : "?", wait, o->message ? o->message : "");
    job->state = JOB_WAITING;
    processor_timer(job->timer, wait);
}

static void processor_on_done(struct upstream_xfer *x, int curl_code, long http_status,
                              void *arg)
{
    struct processor *p = arg;
    struct job *job = (struct job *)(void *)((char *)x - offsetof(struct job, xfer));
    char *streamed = NULL;
    char why[256];
    /* The text that waited goes before the outcome is written or retried. */
    evtimer_del(job->timer);
    deltas_flush(p, job);
    /* A stream read whole, or one we stopped as unusable (the upstream's fault),
     * is classified as the body a plain call would have had. */
    int stream_read =
        x->sse == 1 && !x->too_long &&
        (curl_code == CURLE_OK || (curl_code == CURLE_WRITE_ERROR && x->chunks.failed));
    if (stream_read) {
        streamed = chunks_body(&x->chunks, why, sizeof(why));
        curl_code = CURLE_OK;
    }
    struct outcome_input in = {.curl_code = curl_code,
                               .curl_error = x->errbuf,
                               .too_large = x->too_large,
                               .max_bytes = p->cfg->max_response_bytes,
                               .too_long = x->too_long,
                               .max_completion_bytes = p->cfg->max_completion_bytes,
                               .http_status = http_status,
                               .body = x->resp,
                               .body_len = x->resp_len,
                               .retry_after_ms = upstream_xfer_retry_after(x),
                               .request_model = job->model,
                               .secret = p->cfg->api_key};
    if (stream_read) {
        in.body = streamed;
        in.body_len = streamed != NULL ? strlen(streamed) : 0;
        in.invalid_stream = streamed == NULL ? why : NULL;
    }
    if (outcome_classify(&in, &job->outcome) != 0)
        log_error(job->trace, "out of memory classifying an upstream answer");
    metrics_inc1(metrics_upstream_attempts,
                 upstream_outcome_label(curl_code, http_status));
    metrics_observe(&metrics_upstream_duration, x->seconds);
    /* A failed call is worth a line at info; a good one only when debugging. */
    log_msg(job->outcome.kind == OUTCOME_COMPLETED ? LOG_DEBUG : LOG_INFO, job->trace,
            "event=upstream_call attempt=%d status=%ld duration_ms=%lld "
            "upstream_request_id=%s outcome=%s",
            job->attempts, http_status, (long long)(x->seconds * 1000),
            x->upstream_id[0] ? x->upstream_id : "-",
            upstream_outcome_label(curl_code, http_status));
    processor_adapt(p, &job->outcome);
    if (http_status == 429)
        log_warn(job->trace,
                 "429 from the upstream: remaining requests %lld (reset %lld ms), tokens "
                 "%lld (reset %lld ms), retry after %lld ms",
                 x->limits.remaining_requests, x->limits.reset_requests_ms,
                 x->limits.remaining_tokens, x->limits.reset_tokens_ms,
                 in.retry_after_ms);
    pace_feedback(p, job, &x->limits,
                  job->outcome.kind == OUTCOME_COMPLETED ? job->outcome.total_tokens
                                                         : -1);
    /* A response can be megabytes; a job waiting to retry should not hold it. */
    free(x->resp);
    x->resp = NULL;
    x->resp_len = x->resp_cap = 0;
    free(streamed);
    chunks_reset(&x->chunks);
    processor_outcome(p, job);
}

static void processor_on_delta(struct upstream_xfer *x, void *arg)
{
    struct job *job = (struct job *)(void *)((char *)x - offsetof(struct job, xfer));
    deltas_offer(arg, job);
}

void processor_accept(struct processor *p, const char *id, const redisReply *fields,
                      long long deliveries)
{
    if (strlen(id) >= JOB_ID_MAX) {
        log_error(NULL, "ignoring entry with an impossible id '%.60s'", id);
        return;
    }
    struct job *job = processor_take(p);
    if (job == NULL) {
        /* Reads and claims ask for no more than the free slots, so only a slot
         * that could not be set up (out of memory) gets here. */
        log_error(NULL, "no slot for entry %s (out of memory?); it stays pending", id);
        return;
    }
    snprintf(job->id, sizeof(job->id), "%s", id);
    job->deliveries = deliveries;
    metrics_inc(metrics_chats_started);

    struct chat_request req;
    char err[256];
    if (record_request_parse(fields, &req, err, sizeof(err)) != 0) {
        if (req.trace)
            snprintf(job->trace, sizeof(job->trace), "%s", req.trace);
        processor_dead(p, job, fields, "invalid_request", err);
        return;
    }
    snprintf(job->trace, sizeof(job->trace), "%s", req.trace);
    job->deadline = req.deadline;
    /* Counted by the dispatch that put it back in the stream; a takeover (a later
     * delivery) may follow a crash mid-call, so it counts again. */
    job->admitted = deliveries == 1 ? req.admitted : 0;
    job->estimate =
        pace_estimate(p, req.messages != NULL ? req.messages_len : req.message_len);
    job->model = strdup(req.model);
    job->accepted = req.accepted ? strdup(req.accepted) : NULL;
    job->user = req.user && req.user[0] ? strdup(req.user) : NULL;
    if (job->model == NULL || (req.accepted && job->accepted == NULL) ||
        (req.user && req.user[0] && job->user == NULL)) {
        log_error(job->trace, "out of memory taking entry %s; it stays pending", id);
        processor_release(p, job);
        return;
    }

    if (deliveries > p->cfg->max_deliveries) {
        snprintf(err, sizeof(err),
                 "delivered %lld times (MAX_DELIVERIES is %lld): processing it may be "
                 "what stopped the processors that took it",
                 deliveries, p->cfg->max_deliveries);
        processor_dead(p, job, fields, "delivery_limit_exceeded", err);
        return;
    }

    job->xfer.body = upstream_body_build(&req, err, sizeof(err));
    if (job->xfer.body == NULL) {
        processor_dead(p, job, fields, "invalid_request", err);
        return;
    }
    job->xfer.body_len = strlen(job->xfer.body);
    job->xfer.stream = req.stream;
    log_debug(job->trace, "took entry %s (delivery %lld)", id, deliveries);
    processor_attempt(p, job);
}

/* ---- shutdown ------------------------------------------------------------------ */

/* The grace period is over: hand back what has not finished. Writes already sent
 * are still waited for (their replies are near); writes that cannot be sent
 * (Redis away) are left pending for the claim of another processor. */
static void processor_deadline(struct processor *p)
{
    if (p->deadline_passed)
        return;
    p->deadline_passed = 1;
    evtimer_del(p->grace);
    processor_timer(p->hard_stop, PROCESSOR_HARD_STOP_MS);

    /* Calls not finished, and outcomes Redis keeps refusing: someone else
     * runs them again. */
    const char **ids = malloc((p->nused + 1) * sizeof(*ids));
    long long *deliveries = malloc((p->nused + 1) * sizeof(*deliveries));
    size_t n = 0;
    for (size_t i = 0; i < p->nused; i++) {
        struct job *job = &p->jobs[i];
        if (job->state == JOB_ADMITTING || job->state == JOB_RUNNING ||
            job->state == JOB_WAITING || job->state == JOB_WRITE_WAIT) {
            upstream_cancel(&job->xfer);
            evtimer_del(job->timer);
            if (ids && deliveries) {
                ids[n] = job->id;
                deliveries[n] = job->deliveries;
                n++;
            }
        }
    }
    if (n > 0)
        inbox_hand_back(p->in, ids, deliveries, n);
    /* The ids were copied into the commands; the slots can go now. */
    for (size_t i = 0; i < p->nused; i++) {
        struct job *job = &p->jobs[i];
        if (job->state == JOB_ADMITTING || job->state == JOB_RUNNING ||
            job->state == JOB_WAITING || job->state == JOB_WRITE_WAIT)
            processor_release(p, job);
    }
    free(ids);
    free(deliveries);
    processor_pump(p);
}

static void processor_on_grace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct processor *p = arg;
    log_warn(NULL, "grace period of %lld ms is over with %zu jobs unfinished",
             p->cfg->shutdown_grace_ms, p->njobs - p->nfree);
    processor_deadline(p);
}

static void processor_on_hard_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct processor *p = arg;
    log_warn(NULL, "Redis did not confirm the last writes in time; leaving anyway (the "
                   "entries are taken over after CLAIM_IDLE_MS)");
    event_base_loopbreak(p->base);
}

/* Once reading has stopped and every slot is free (or only writes that cannot be
 * sent remain after the deadline), close the write connection; its close ends the
 * loop once the outstanding replies are in. */
static void processor_check_done(struct processor *p)
{
    /* A claim in flight may still bring entries, which must be handed back. */
    if (!p->stopping || p->closing || !rlink_closed(p->rd) || inbox_claiming(p->in))
        return;
    if (p->nfree < p->njobs) {
        if (!p->deadline_passed)
            return;
        for (size_t i = 0; i < p->nused; i++)
            if ((p->jobs[i].state == JOB_WRITING && p->jobs[i].write_sent) ||
                p->jobs[i].state == JOB_PARKING)
                return;
        size_t lost = 0;
        struct job *job = outbox_take_unsent(p->out);
        while (job) {
            struct job *next = job->next;
            processor_release(p, job);
            lost++;
            job = next;
        }
        if (lost > 0)
            log_warn(NULL,
                     "%zu outcomes could not be written (Redis is away); their "
                     "entries are run again by another processor",
                     lost);
    }
    p->closing = 1;
    evtimer_del(p->grace);
    if (!evtimer_pending(p->hard_stop, NULL))
        processor_timer(p->hard_stop, PROCESSOR_HARD_STOP_MS);
    log_info(NULL, "all work finished or handed back; closing");
    live_leave(p->live);
    inbox_retire(p->in);
    rlink_close(p->wr);
}

void processor_stop(struct processor *p)
{
    if (p->stopping) {
        log_info(NULL, "asked again: handing back unfinished work now");
        processor_deadline(p);
        return;
    }
    p->stopping = 1;
    log_info(NULL, "stopping: %zu jobs unfinished, waiting up to %lld ms",
             p->njobs - p->nfree, p->cfg->shutdown_grace_ms);
    processor_timer(p->grace, p->cfg->shutdown_grace_ms);
    inbox_stop(p->in);
    pace_stop(p->pace);
    processor_pump(p);
}

/* ---- events -------------------------------------------------------------------- */

static void processor_on_pump(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct processor *p = arg;
    inbox_pump(p->in);
    processor_check_done(p);
}

static void processor_on_read_up(struct rlink *l, void *arg)
{
    (void)l;
    struct processor *p = arg;
    inbox_on_read_up(p->in);
}

static void processor_on_read_down(struct rlink *l, void *arg)
{
    (void)l;
    struct processor *p = arg;
    inbox_on_read_down(p->in);
}

static void processor_on_write_up(struct rlink *l, void *arg)
{
    struct processor *p = arg;
    /* Before anything that runs the scripts on this connection. */
    struct redisAsyncContext *ac = rlink_ctx(l);
    if (ac != NULL)
        script_load_all(ac);
    inbox_on_write_up(p->in);
    live_on_write_up(p->live);
    admit_flush(p);
    outbox_flush(p->out);
    processor_pump(p);
}

static void processor_on_write_down(struct rlink *l, void *arg)
{
    struct processor *p = arg;
    if (rlink_closed(l)) {
        event_base_loopbreak(p->base);
        return;
    }
    /* Unconfirmed writes are back in the queue (outbox_on_reply); a claim in
     * progress is dropped and the next tick tries again. */
    processor_pump(p);
}

/* Every message on the cancel channel: ["message", channel, trace id]. The
 * subscription's confirmation, and the NULL of a lost connection, pass through. */
static void processor_on_cancel_message(redisAsyncContext *ac, void *reply,
                                        void *privdata)
{
    (void)ac;
    struct processor *p = privdata;
    const redisReply *r = reply;
    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        log_warn(NULL,
                 "Redis refused the cancel channel's SUBSCRIBE: %s; cancelled "
                 "chats still get no further attempt, but calls in flight run on",
                 r->str);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING || r->element[2]->len != UUID_LEN)
        return;
    processor_cancel(p, r->element[2]->str);
}

static void processor_on_sub_up(struct rlink *l, void *arg)
{
    struct processor *p = arg;
    char channel[KEYS_MAX];
    struct redisAsyncContext *ac = rlink_ctx(l);
    keys_cancel(&p->keys, channel, sizeof(channel));
    if (ac == NULL || redisAsyncCommand(ac, processor_on_cancel_message, p,
                                        "SUBSCRIBE %s", channel) != REDIS_OK)
        log_warn(NULL,
                 "cannot subscribe to %s; cancels abort no call until the next "
                 "reconnect",
                 channel);
}

static void processor_on_sub_down(struct rlink *l, void *arg)
{
    /* A cancel published while this link was down is not heard: the check before
     * every attempt (admit.h) still stops that chat. */
    (void)l;
    (void)arg;
}

/* ---- lifecycle ----------------------------------------------------------------- */

/* Names the upstream key in Redis keys without revealing it: FNV-1a of the base
 * URL and the key. */
static void processor_budget_id(const struct config *cfg, char out[17])
{
    uint64_t h = 1469598103934665603ULL;
    const char *parts[] = {cfg->base_url, "\n", cfg->api_key ? cfg->api_key : ""};
    for (size_t k = 0; k < sizeof(parts) / sizeof(parts[0]); k++)
        for (const unsigned char *s = (const unsigned char *)parts[k]; *s; s++) {
            h ^= *s;
            h *= 1099511628211ULL;
        }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

struct processor *processor_new(const struct config *cfg, char *err, size_t errlen)
{
    struct processor *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int ok = 0;
    p->cfg = cfg;
    if (keys_init(&p->keys, cfg->common.prefix) != 0) {
        snprintf(err, errlen, "CHATQ_PREFIX is longer than %d bytes", KEYS_PREFIX_MAX);
        goto out;
    }
    if (rconn_url_parse(cfg->common.redis_url, &p->url, err, errlen) != 0)
        goto out;
    if (pace_limits_parse(cfg->limits, &p->limits, &p->nlimits, err, errlen) != 0)
        goto out;
    stream_consumer_name(p->consumer, sizeof(p->consumer), "processor");
    processor_budget_id(cfg, p->budget_id);
    p->policy.base_ms = cfg->retry_base_ms;
    p->policy.max_ms = cfg->retry_max_ms;
    p->policy.after_max_ms = cfg->retry_after_max_ms;
    if (getrandom(&p->rng, sizeof(p->rng), GRND_NONBLOCK) != (ssize_t)sizeof(p->rng))
        p->rng = (uint64_t)clock_now_ms() ^ ((uint64_t)getpid() << 32);
    p->rng |= 1; /* xorshift must not start at 0 */

    snprintf(err, errlen, "out of memory");
    p->base = event_base_new();
    if (p->base == NULL)
        goto out;
    p->njobs = (size_t)cfg->concurrency;
    p->jobs = calloc(p->njobs, sizeof(*p->jobs));
    if (p->jobs == NULL)
        goto out;
    p->nfree = p->njobs; /* set up as they are first taken: processor_slot_init */
    p->climit = (double)p->njobs;
    p->pump = event_new(p->base, -1, 0, processor_on_pump, p);
    p->grace = evtimer_new(p->base, processor_on_grace, p);
    p->hard_stop = evtimer_new(p->base, processor_on_hard_stop, p);
    admit_register();
    deltas_register();
    p->in = inbox_new(p);
    p->pace = pace_new(p);
    p->out = outbox_new(p);
    p->live = live_new(p);
    if (p->pump == NULL || p->grace == NULL || p->hard_stop == NULL || p->in == NULL ||
        p->out == NULL || p->pace == NULL || p->live == NULL)
        goto out;

    struct upstream_settings us = {.base_url = cfg->base_url,
                                   .api_key = cfg->api_key,
                                   .ca_file = cfg->ca_file,
                                   .timeout_ms = cfg->timeout_ms,
                                   .connect_timeout_ms = cfg->connect_timeout_ms,
                                   .max_response_bytes = cfg->max_response_bytes,
                                   .max_completion_bytes = cfg->max_completion_bytes,
                                   .max_connections = cfg->concurrency};
    p->up = upstream_new(p->base, &us, processor_on_done, p, err, errlen);
    if (p->up == NULL)
        goto out;
    upstream_set_delta(p->up, processor_on_delta);
    err[0] = '\0';
    ok = 1;
out:
    if (!ok) {
        processor_free(p);
        p = NULL;
    }
    return p;
}

struct event_base *processor_base(struct processor *p)
{
    return p->base;
}

int processor_run(struct processor *p)
{
    /* Connecting here rather than in processor_new lets main wait for Redis
     * first without the links logging an outage meanwhile. */
    struct rlink_handlers rh = {processor_on_read_up, processor_on_read_down, p};
    struct rlink_handlers wh = {processor_on_write_up, processor_on_write_down, p};
    /* Reconnects at most CLAIM_IDLE_MS / 4 apart: after an outage every live
     * processor is back, and has renewed its entries, well before any of them
     * takes over idle ones (see inbox.c). */
    long long max_backoff = p->cfg->claim_idle_ms / 4;
    struct rlink_handlers sh = {processor_on_sub_up, processor_on_sub_down, p};
    p->rd = rlink_new(p->base, "read", &p->url, max_backoff, &rh);
    p->wr = rlink_new(p->base, "write", &p->url, max_backoff, &wh);
    p->sub = rlink_new(p->base, "cancel", &p->url, max_backoff, &sh);
    if (p->rd == NULL || p->wr == NULL || p->sub == NULL) {
        log_error(NULL, "cannot set up the Redis connections: out of memory");
        return -1;
    }
    return event_base_dispatch(p->base) < 0 ? -1 : 0;
}

void processor_free(struct processor *p)
{
    if (p == NULL)
        return;
    /* The links first: their outstanding callbacks get NULL replies and still
     * touch the jobs and the pump event. */
    rlink_free(p->rd);
    rlink_free(p->wr);
    rlink_free(p->sub);
    for (size_t i = 0; p->jobs && i < p->nused; i++) {
        struct job *job = &p->jobs[i];
        processor_slot_clear(job);
        if (job->timer)
            event_free(job->timer);
    }
    free(p->jobs);
    upstream_free(p->up);
    inbox_free(p->in);
    pace_free(p->pace);
    pace_limits_free(p->limits, p->nlimits);
    outbox_free(p->out);
    live_free(p->live);
    if (p->pump)
        event_free(p->pump);
    if (p->grace)
        event_free(p->grace);
    if (p->hard_stop)
        event_free(p->hard_stop);
    if (p->base)
        event_base_free(p->base);
    free(p);
}
