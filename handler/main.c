/* main.c - chatq-handler: reads outcomes from the results stream in the
 * "handlers" consumer group and makes each the trace's final record.
 *
 * A plain blocking loop is enough here: every step is one pipelined Redis
 * round trip, so there is nothing to overlap. Entries left pending by a
 * handler that died are taken over with XAUTOCLAIM once they have been idle
 * for CLAIM_IDLE_MS. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "config.h"
#include "finalize.h"
#include "keys.h"
#include "log.h"
#include "rconn.h"
#include "stream.h"

struct config {
    struct config_common common;
    long long ttl_s;
    long long batch;
    long long block_ms;
    long long claim_idle_ms;
    long long dead_max;
};

static volatile sig_atomic_t handler_stopping;

static void handler_on_signal(int sig)
{
    (void)sig;
    handler_stopping = 1;
}

static void handler_sleep_ms(long long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&ts, NULL); /* a signal cuts it short, which is what we want */
}

/* Connects and makes sure the group exists; NULL (logged) if Redis is away. */
static redisContext *handler_connect(const struct config *cfg, const struct rconn_url *url,
                                     const struct keys *keys)
{
    char err[512];
    /* The command timeout must outlast the XREADGROUP BLOCK. */
    redisContext *c = rconn_connect(url, (int)cfg->block_ms + 5000, err, sizeof(err));
    if (c == NULL) {
        log_debug(NULL, "%s", err);
        return NULL;
    }
    if (stream_group_ensure(c, keys->results, KEYS_GROUP_HANDLERS, err, sizeof(err)) != 0) {
        log_warn(NULL, "%s", err);
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Takes over results another handler read but never finished. Returns 0 or -1. */
static int handler_claim(struct finalize *fin, redisContext *c, const struct config *cfg,
                         const struct keys *keys, const char *consumer)
{
    char cursor[64] = "0-0";
    do {
        redisReply *r = redisCommand(c, "XAUTOCLAIM %s %s %s %lld %s COUNT %lld",
                                     keys->results, KEYS_GROUP_HANDLERS, consumer,
                                     cfg->claim_idle_ms, cursor, cfg->batch);
        if (rconn_reply_failed(r) || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            log_warn(NULL, "XAUTOCLAIM failed: %s",
                     r ? (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply") : c->errstr);
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        if (r->element[1]->elements > 0)
            log_info(NULL, "claimed %zu results left by another handler",
                     r->element[1]->elements);
        int rc = finalize_entries(fin, c, r->element[1]);
        freeReplyObject(r);
        if (rc != 0)
            return -1;
    } while (strcmp(cursor, "0-0") != 0 && !handler_stopping);
    return 0;
}

/* One XREADGROUP and the writes it brings. from is ">" for new results, or "0" for
 * those this consumer read before but did not finish (a lost connection), which
 * Redis answers at once. Returns the number of entries, or -1 on a lost connection. */
static int handler_read(struct finalize *fin, redisContext *c, const struct config *cfg,
                        const struct keys *keys, const char *consumer, const char *from)
{
    redisReply *r =
        redisCommand(c, "XREADGROUP GROUP %s %s COUNT %lld BLOCK %lld STREAMS %s %s",
                     KEYS_GROUP_HANDLERS, consumer, cfg->batch, cfg->block_ms,
                     keys->results, from);
    if (rconn_reply_failed(r)) {
        log_warn(NULL, "XREADGROUP failed: %s",
                 r ? r->str : (c->errstr[0] ? c->errstr : "connection lost"));
        freeReplyObject(r);
        return -1;
    }
    const redisReply *entries = stream_read_entries(r);
    int rc = entries ? finalize_entries(fin, c, entries) : 0;
    if (rc == 0)
        rc = entries ? (int)entries->elements : 0;
    freeReplyObject(r);
    return rc;
}

int main(int argc, char **argv)
{
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    const struct config_var vars[] = {
        CONFIG_COMMON_VARS(cfg.common),
        CONFIG_TTL_VAR(cfg.ttl_s),
        {"HANDLER_BATCH", "batch", CONFIG_INT, "256",
         "results read and written per round trip", &cfg.batch, 1, 10000, 0},
        {"HANDLER_BLOCK_MS", "block-ms", CONFIG_INT, "1000",
         "longest wait for new results before checking for orphans", &cfg.block_ms, 10,
         60000, 0},
        CONFIG_CLAIM_IDLE_VAR(cfg.claim_idle_ms),
        CONFIG_DEAD_MAX_VAR(cfg.dead_max),
    };
    size_t nvars = sizeof(vars) / sizeof(vars[0]);
    enum config_result cr =
        config_start("chatq-handler",
                     "Writes each outcome from the results stream into its trace's record.",
                     vars, nvars, argc, argv, &cfg.common);
    if (cr != CONFIG_OK)
        return cr == CONFIG_HELP ? 0 : 1;

    char err[512];
    struct rconn_url url;
    struct keys keys;
    if (rconn_url_parse(cfg.common.redis_url, &url, err, sizeof(err)) != 0) {
        fprintf(stderr, "chatq-handler: bad setting: %s\n", err);
        return 1;
    }
    if (keys_init(&keys, cfg.common.prefix) != 0) {
        fprintf(stderr, "chatq-handler: bad setting: CHATQ_PREFIX is longer than %d\n",
                KEYS_PREFIX_MAX);
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler_on_signal; /* no SA_RESTART: a blocked read returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char consumer[256], where[320];
    stream_consumer_name(consumer, sizeof(consumer), "handler");
    rconn_url_describe(&url, where, sizeof(where));
    log_info(NULL, "started as %s, redis %s, stream %s, ttl %llds", consumer, where,
             keys.results, cfg.ttl_s);

    struct finalize fin;
    finalize_init(&fin, &keys, cfg.ttl_s, cfg.dead_max);
    redisContext *c = NULL;
    long long backoff_ms = 100, next_claim = 0;
    int outage = 0, own_pending = 0;

    while (!handler_stopping) {
        if (c == NULL) {
            c = handler_connect(&cfg, &url, &keys);
            if (c == NULL) {
                if (!outage)
                    log_warn(NULL, "Redis at %s unavailable; retrying with backoff", where);
                outage = 1;
                handler_sleep_ms(backoff_ms);
                backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
                continue;
            }
            if (outage)
                log_info(NULL, "Redis at %s is back", where);
            outage = 0;
            backoff_ms = 100;
            next_claim = 0;
            own_pending = 1; /* what a lost connection left half done, first */
        }
        int rc = 0;
        if (clock_mono_ms() >= next_claim) {
            rc = handler_claim(&fin, c, &cfg, &keys, consumer);
            next_claim = clock_mono_ms() + cfg.claim_idle_ms / 2;
        }
        if (rc == 0) {
            /* Once: an entry that keeps failing must not hold the loop here. */
            rc = handler_read(&fin, c, &cfg, &keys, consumer, own_pending ? "0" : ">");
            own_pending = 0;
        }
        if (rc < 0) {
            redisFree(c);
            c = NULL;
        }
    }

    if (c != NULL && stream_consumer_retire(c, keys.results, KEYS_GROUP_HANDLERS,
                                            consumer) == 0)
        log_info(NULL, "consumer %s kept: it still holds pending results", consumer);
    log_info(NULL, "stopping: %lld written, %lld duplicates, %lld orphans, %lld dead",
             fin.stats.written, fin.stats.duplicate, fin.stats.orphan, fin.stats.dead);
    redisFree(c);
    return 0;
}
