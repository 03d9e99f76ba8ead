/* main.c - chatq-webhook: the webhook sender. Reads the deliveries that the
 * handler queued when chats became final ({prefix}webhooks, queue.c), POSTs each
 * event signed per Standard Webhooks (send.c, sign.c), and retries with backoff
 * on a non-2xx answer or a timeout until WEBHOOK_MAX_ATTEMPTS, then dead-letters.
 *
 * One thread: the deliveries run on a curl multi handle, and between its turns
 * the loop does one Redis round trip at a time (read, take over, move due
 * retries, end attempts). Any number of senders share the group. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "netguard.h"
#include "queue.h"
#include "rconn.h"
#include "send.h"
#include "sign.h"
#include "stream.h"
#include "webhook.h"

#define MAIN_PROG "chatq-webhook"
/* Longest wait for new deliveries while none is in flight; also how often due
 * retries are looked for, so a retry is late by about this at most. */
#define MAIN_IDLE_BLOCK_MS 100
/* Wait on curl while deliveries are in flight, between two looks at Redis. */
#define MAIN_FLIGHT_WAIT_MS 50

struct config {
    struct config_common common;
    const char *secret;
    const char *allow;
    long long concurrency;
    long long timeout_ms;
    long long max_attempts;
    long long retry_base_ms;
    long long retry_max_ms;
    long long claim_idle_ms;
    long long dead_max;
    long long grace_ms;
};

struct sender {
    const struct config *cfg;
    struct queue q;
    struct send s;
    struct netguard guard;
    long long delivered, gone, retried, dead;
};

static volatile sig_atomic_t main_stopping;

static void main_on_signal(int sig)
{
    (void)sig;
    main_stopping = 1;
}

/* The wait before attempt attempts + 1, after attempts failed ones (>= 1). */
static long long main_backoff_ms(const struct config *cfg, long long attempts)
{
    long long wait = cfg->retry_base_ms;
    for (long long i = 1; i < attempts && wait < cfg->retry_max_ms; i++)
        wait *= 2;
    return wait < cfg->retry_max_ms ? wait : cfg->retry_max_ms;
}

/* The entry's fields as queue_end wants them back, from the delivery. */
static size_t main_fields(const struct delivery *d, const char *attempts,
                          const char *out[12])
{
    size_t n = 0;
    out[n++] = WEBHOOK_F_TRACE;
    out[n++] = d->trace;
    out[n++] = WEBHOOK_F_URL;
    out[n++] = d->url;
    out[n++] = WEBHOOK_F_TYPE;
    out[n++] = d->type;
    out[n++] = WEBHOOK_F_EVENT;
    out[n++] = d->event;
    out[n++] = WEBHOOK_F_TIMESTAMP;
    out[n++] = d->timestamp;
    out[n++] = WEBHOOK_F_ATTEMPTS;
    out[n++] = attempts;
    return n;
}

/* Ends an attempt in Redis and frees d. */
static void main_end(struct sender *w, struct delivery *d, enum queue_end how,
                     const char *reason, long long attempts)
{
    const char *fields[12];
    char att[32];
    snprintf(att, sizeof(att), "%lld", d->attempts);
    size_t n = main_fields(d, att, fields);
    long long due =
        how == QUEUE_RETRY ? clock_now_ms() + main_backoff_ms(w->cfg, attempts) : 0;
    int rc = queue_end(&w->q, d->id, how, d->event, due, attempts, reason, fields, n);
    if (rc == 0)
        log_info(d->trace, "webhook delivery %s was taken over by another sender", d->id);
    free(d);
}

static void main_done(struct delivery *d, enum send_result r, const char *why, void *arg)
{
    struct sender *w = arg;
    long long attempts = d->attempts + 1;
    if (d->aborted) {
        /* Cut off by our own stop: it stays pending, and a sender that takes it
         * over sends it again, with the same webhook-id; not counted as failed. */
        free(d);
        return;
    }
    switch (r) {
    case SEND_DELIVERED:
        w->delivered++;
        log_info(d->trace, "webhook %s %s delivered to %s (%s, attempt %lld)", d->event,
                 d->type, d->host, why, attempts);
        main_end(w, d, QUEUE_DONE, NULL, attempts);
        return;
    case SEND_GONE:
        w->gone++;
        log_warn(d->trace, "webhook %s: %s answered 410 Gone; not sent again", d->event,
                 d->host);
        main_end(w, d, QUEUE_DONE, NULL, attempts);
        return;
    case SEND_REFUSED:
        break;
    case SEND_FAILED:
        if (attempts < w->cfg->max_attempts) {
            w->retried++;
            log_info(
                d->trace,
                "webhook %s to %s failed (%s, attempt %lld of %lld); next in %lld ms",
                d->event, d->host, why, attempts, w->cfg->max_attempts,
                main_backoff_ms(w->cfg, attempts));
            main_end(w, d, QUEUE_RETRY, NULL, attempts);
            return;
        }
        break;
    }
    char reason[400];
    if (r == SEND_REFUSED)
        snprintf(reason, sizeof(reason), "webhook %s", why);
    else
        snprintf(reason, sizeof(reason),
                 "webhook not delivered after %lld attempts; last: %s", attempts, why);
    w->dead++;
    log_error(d->trace, "webhook %s to %s moved to the dead-letter stream: %s", d->event,
              d->host, reason);
    main_end(w, d, QUEUE_DEAD, reason, attempts);
}

/* 1 if entry id is being delivered right now (a re-read of our own pending
 * entries after a reconnect must not send it twice at once). */
static int main_in_flight(const struct sender *w, const char *id)
{
    for (const struct delivery *d = w->s.flight; d != NULL; d = d->next)
        if (strcmp(d->id, id) == 0)
            return 1;
    return 0;
}

/* Copies field name of fields into out; returns 0, or -1 if missing or too long. */
static int main_copy(const redisReply *fields, const char *name, char *out, size_t outlen)
{
    size_t len = 0;
    const char *v = stream_field(fields, name, &len);
    if (v == NULL || len == 0 || len >= outlen || memchr(v, '\0', len) != NULL)
        return -1;
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

static void main_take(const char *id, const redisReply *fields, void *arg)
{
    struct sender *w = arg;
    char why[256], err[160];
    if (main_in_flight(w, id))
        return;
    struct delivery *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        log_error(NULL, "out of memory for webhook delivery %s; it stays pending", id);
        return;
    }
    snprintf(d->id, sizeof(d->id), "%s", id);
    char attempts[32] = "0";
    struct netguard_url u;
    const char *bad = NULL;
    if (main_copy(fields, WEBHOOK_F_TRACE, d->trace, sizeof(d->trace)) != 0)
        bad = "missing or malformed field '" WEBHOOK_F_TRACE "'";
    else if (main_copy(fields, WEBHOOK_F_URL, d->url, sizeof(d->url)) != 0)
        bad = "missing or malformed field '" WEBHOOK_F_URL "'";
    else if (main_copy(fields, WEBHOOK_F_TYPE, d->type, sizeof(d->type)) != 0)
        bad = "missing or malformed field '" WEBHOOK_F_TYPE "'";
    else if (main_copy(fields, WEBHOOK_F_EVENT, d->event, sizeof(d->event)) != 0)
        bad = "missing or malformed field '" WEBHOOK_F_EVENT "'";
    main_copy(fields, WEBHOOK_F_TIMESTAMP, d->timestamp, sizeof(d->timestamp));
    main_copy(fields, WEBHOOK_F_ATTEMPTS, attempts, sizeof(attempts));
    d->attempts = strtoll(attempts, NULL, 10);
    if (bad == NULL && netguard_url_parse(d->url, &u, err, sizeof(err)) != 0) {
        snprintf(why, sizeof(why), "its URL is not one chatq calls: %s", err);
        bad = why;
    }
    if (bad != NULL) {
        /* Re-reading it cannot help: keep it for a human. */
        const char *all[12];
        size_t n = 0;
        for (size_t i = 0; i + 1 < fields->elements && n + 2 <= 12; i += 2) {
            all[n++] = fields->element[i]->str;
            all[n++] = fields->element[i + 1]->str;
        }
        log_warn(d->trace[0] ? d->trace : NULL, "webhook entry %s moved to %s: %s", id,
                 w->q.keys->dead, bad);
        w->dead++;
        queue_end(&w->q, id, QUEUE_DEAD, "", 0, d->attempts, bad, all, n);
        free(d);
        return;
    }
    snprintf(d->host, sizeof(d->host), "%s", u.host);
    d->host_listed = netguard_host_listed(&w->guard, u.host);
    if (send_start(&w->s, d, why, sizeof(why)) != 0) {
        log_error(d->trace, "webhook %s not started (%s); it stays pending", d->event,
                  why);
        free(d);
    }
}

static int main_settings(struct config *cfg, struct sender *w, struct sign *sign,
                         char *err, size_t errlen)
{
    if (sign_init(sign, cfg->secret, err, errlen) != 0)
        return -1;
    if (netguard_init(&w->guard, cfg->allow, err, errlen) != 0)
        return -1;
    if (cfg->claim_idle_ms <= cfg->timeout_ms + 1000) {
        snprintf(
            err, errlen,
            "CLAIM_IDLE_MS (%lld) must be more than WEBHOOK_TIMEOUT_MS (%lld) + 1000: "
            "a delivery still running would be taken over and sent twice",
            cfg->claim_idle_ms, cfg->timeout_ms);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    const struct config_var vars[] = {
        CONFIG_COMMON_VARS(cfg.common),
        {"WEBHOOK_SECRET", "webhook-secret", CONFIG_STR, NULL,
         "whsec_ secret every delivery is signed with (Standard Webhooks); required",
         &cfg.secret, 0, 0, 1},
        {"WEBHOOK_ALLOW", "webhook-allow", CONFIG_STR, NULL,
         "hosts, addresses and CIDRs a webhook may reach although loopback, link-local "
         "or private, comma-separated (e.g. 127.0.0.1,10.1.0.0/16)",
         &cfg.allow, 0, 0, 0},
        {"WEBHOOK_CONCURRENCY", "concurrency", CONFIG_INT, "64",
         "deliveries in flight at once", &cfg.concurrency, 1, 10000, 0},
        {"WEBHOOK_TIMEOUT_MS", "timeout-ms", CONFIG_INT, "10000",
         "one delivery attempt, connection included; longer is a failed attempt",
         &cfg.timeout_ms, 100, 600000, 0},
        {"WEBHOOK_MAX_ATTEMPTS", "max-attempts", CONFIG_INT, "10",
         "attempts per event; after the last failed one it is dead-lettered",
         &cfg.max_attempts, 1, 1000, 0},
        {"WEBHOOK_RETRY_BASE_MS", "retry-base-ms", CONFIG_INT, "1000",
         "wait before the first retry; doubles per attempt", &cfg.retry_base_ms, 10,
         86400000, 0},
        {"WEBHOOK_RETRY_MAX_MS", "retry-max-ms", CONFIG_INT, "600000",
         "longest wait between two attempts", &cfg.retry_max_ms, 10, 86400000, 0},
        CONFIG_CLAIM_IDLE_VAR(cfg.claim_idle_ms),
        CONFIG_DEAD_MAX_VAR(cfg.dead_max),
        {"SHUTDOWN_GRACE_MS", "shutdown-grace-ms", CONFIG_INT, "10000",
         "on SIGTERM, how long deliveries in flight may take to finish; the rest are "
         "sent again by a sender that takes them over",
         &cfg.grace_ms, 0, 3600000, 0},
    };
    size_t nvars = sizeof(vars) / sizeof(vars[0]);
    enum config_result cr = config_start(
        MAIN_PROG, "Delivers signed webhooks of finished chats, with retries.", vars,
        nvars, argc, argv, &cfg.common);
    if (cr != CONFIG_OK)
        return cr == CONFIG_HELP ? 0 : 1;

    char err[512], where[320];
    struct rconn_url url;
    struct keys keys;
    struct sign sign;
    static struct sender w;
    w.cfg = &cfg;
    if (rconn_url_parse(cfg.common.redis_url, &url, err, sizeof(err)) != 0 ||
        main_settings(&cfg, &w, &sign, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: bad setting: %s\n", MAIN_PROG, err);
        sign_clear(&sign);
        return 1;
    }
    if (keys_init(&keys, cfg.common.prefix) != 0) {
        fprintf(stderr, "%s: bad setting: CHATQ_PREFIX is longer than %d\n", MAIN_PROG,
                KEYS_PREFIX_MAX);
        sign_clear(&sign);
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 ||
        send_init(&w.s, &sign, &w.guard, (long)cfg.timeout_ms) != 0) {
        fprintf(stderr, "%s: libcurl could not be set up\n", MAIN_PROG);
        sign_clear(&sign);
        return 1;
    }
    queue_init(&w.q, &url, &keys, cfg.claim_idle_ms, cfg.dead_max);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = main_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    rconn_url_describe(&url, where, sizeof(where));
    log_info(NULL, "started as %s, redis %s, stream %s, %lld attempts at most",
             w.q.consumer, where, keys.webhooks, cfg.max_attempts);

    long long backoff_ms = 0, next_claim = 0, next_promote = 0, grace_end = 0;
    for (;;) {
        if (main_stopping && grace_end == 0)
            grace_end = clock_mono_ms() + cfg.grace_ms;
        if (main_stopping && (w.s.inflight == 0 || clock_mono_ms() >= grace_end))
            break;
        if (w.q.c == NULL && !main_stopping) {
            if (queue_connect(&w.q, err, sizeof(err)) != 0) {
                if (backoff_ms == 0)
                    log_warn(NULL, "Redis at %s unavailable (%s); retrying with backoff",
                             where, err);
                backoff_ms = rconn_backoff_ms(backoff_ms);
                /* Deliveries in flight go on meanwhile. */
                long long until = clock_mono_ms() + backoff_ms;
                do
                    send_run(&w.s, MAIN_FLIGHT_WAIT_MS, main_done, &w);
                while (w.s.inflight > 0 && clock_mono_ms() < until && !main_stopping);
                if (w.s.inflight == 0 && !main_stopping) {
                    struct timespec ts = clock_timespec(until - clock_mono_ms());
                    nanosleep(&ts, NULL);
                }
                continue;
            }
            if (backoff_ms != 0)
                log_info(NULL, "Redis at %s is back", where);
            backoff_ms = 0;
        }
        if (w.q.c != NULL && !main_stopping) {
            long long free_slots = cfg.concurrency - w.s.inflight;
            if (clock_mono_ms() >= next_promote) {
                queue_promote(&w.q, clock_now_ms());
                next_promote = clock_mono_ms() + MAIN_IDLE_BLOCK_MS;
            }
            if (w.q.c != NULL && free_slots > 0 && clock_mono_ms() >= next_claim) {
                queue_claim(&w.q, free_slots, main_take, &w);
                next_claim = clock_mono_ms() + cfg.claim_idle_ms / 4;
            }
            free_slots = cfg.concurrency - w.s.inflight;
            if (w.q.c != NULL && free_slots > 0)
                queue_read(&w.q, free_slots, w.s.inflight > 0 ? 0 : MAIN_IDLE_BLOCK_MS,
                           main_take, &w);
        }
        send_run(&w.s, w.s.inflight > 0 ? MAIN_FLIGHT_WAIT_MS : 0, main_done, &w);
    }

    if (w.s.inflight > 0)
        log_warn(NULL,
                 "SHUTDOWN_GRACE_MS passed with %d deliveries in flight: they stay "
                 "pending and are sent again by the sender that takes them over",
                 w.s.inflight);
    send_free(&w.s, main_done, &w);
    queue_close(&w.q);
    curl_global_cleanup();
    sign_clear(&sign);
    log_info(NULL,
             "stopping: %lld delivered, %lld stopped by 410, %lld retries scheduled, "
             "%lld dead-lettered",
             w.delivered, w.gone, w.retried, w.dead);
    return 0;
}
