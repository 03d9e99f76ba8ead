/* main.c - chatq-handler: settings, signals, and the loop that keeps the inbox
 * (inbox.c: reading and taking over results) connected. Each result becomes
 * the trace's final record in finalize.c.
 *
 * A plain blocking loop is enough here: every step is one pipelined Redis
 * round trip, so there is nothing to overlap. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "finalize.h"
#include "inbox.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "rconn.h"

struct config {
    struct config_common common;
    long long ttl_s;
    long long batch;
    long long block_ms;
    long long claim_idle_ms;
    long long max_deliveries;
    long long dead_max;
    const char *metrics_host;
    long long metrics_port;
};

static volatile sig_atomic_t handler_stopping;

static void handler_on_signal(int sig)
{
    (void)sig;
    handler_stopping = 1;
}

/* Sleeps ms with the stop signals open: one cuts it short. */
static void handler_sleep_ms(long long ms, const sigset_t *waitmask)
{
    struct timespec ts = clock_timespec(ms);
    ppoll(NULL, 0, &ts, waitmask);
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
        CONFIG_MAX_DELIVERIES_VAR(cfg.max_deliveries),
        CONFIG_DEAD_MAX_VAR(cfg.dead_max),
        CONFIG_METRICS_VARS(cfg.metrics_host, cfg.metrics_port),
    };
    size_t nvars = sizeof(vars) / sizeof(vars[0]);
    enum config_result cr = config_start(
        "chatq-handler",
        "Writes each outcome from the results stream into its trace's record.", vars,
        nvars, argc, argv, &cfg.common);
    if (cr != CONFIG_OK)
        return cr == CONFIG_HELP ? 0 : 1;
    metrics_init(METRICS_HANDLER, "handler");

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

    /* The stop signals are blocked except while the handler waits (ppoll in
     * inbox.c and in handler_sleep_ms), so one can neither slip in between a
     * look at handler_stopping and a wait, nor cut a Redis round trip in half.
     * A blocking read is woken by it at once: hiredis alone would retry the read
     * on EINTR and sit out HANDLER_BLOCK_MS. */
    struct sigaction sa;
    sigset_t stopsigs, waitmask;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&stopsigs);
    sigaddset(&stopsigs, SIGTERM);
    sigaddset(&stopsigs, SIGINT);
    sigprocmask(SIG_BLOCK, &stopsigs, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);

    struct finalize fin;
    struct inbox in;
    const struct inbox_settings set = {.batch = cfg.batch,
                                       .block_ms = cfg.block_ms,
                                       .claim_idle_ms = cfg.claim_idle_ms,
                                       .max_deliveries = cfg.max_deliveries};
    finalize_init(&fin, &keys, cfg.ttl_s, cfg.dead_max);
    inbox_init(&in, &set, &url, &keys, &fin, &handler_stopping, &waitmask);
    log_set_consumer(in.consumer);

    /* The loop turns at least every HANDLER_BLOCK_MS (a read, a reply's slack) or
     * backoff: past twice that and half a minute it is stuck. */
    struct probe *probe = NULL;
    if (cfg.metrics_port > 0) {
        const struct probe_settings ps = {
            cfg.metrics_host, (int)cfg.metrics_port, &url,
            keys.results,     KEYS_GROUP_HANDLERS,   2 * cfg.block_ms + 30000};
        probe = probe_start(&ps, err, sizeof(err));
        if (probe == NULL) {
            fprintf(stderr, "chatq-handler: %s\n", err);
            return 1;
        }
        log_info(NULL, "probes on http://%s:%d", cfg.metrics_host, probe_port(probe));
    }

    char where[320];
    rconn_url_describe(&url, where, sizeof(where));
    log_info(NULL, "started as %s, redis %s, stream %s, ttl %llds", in.consumer, where,
             keys.results, cfg.ttl_s);

    long long backoff_ms = 0, connects = 0;
    while (!handler_stopping) {
        probe_tick(probe);
        if (in.c == NULL) {
            if (inbox_connect(&in, err, sizeof(err)) != 0) {
                /* Once, with the reason: a wrong password must be plain to see. */
                if (backoff_ms == 0)
                    log_warn(NULL, "Redis at %s unavailable (%s); retrying with backoff",
                             where, err);
                backoff_ms = rconn_backoff_ms(backoff_ms);
                handler_sleep_ms(backoff_ms, &waitmask);
                continue;
            }
            if (backoff_ms != 0)
                log_info(NULL, "Redis at %s is back", where);
            if (connects++ > 0)
                metrics_inc(metrics_redis_reconnects);
            backoff_ms = 0;
        }
        inbox_step(&in); /* a lost connection is made again next turn */
    }

    inbox_close(&in);
    probe_stop(probe);
    log_info(NULL,
             "stopping: %lld written, %lld duplicates, %lld orphans, %lld dead, "
             "%lld over MAX_DELIVERIES",
             fin.stats.written, fin.stats.duplicate, fin.stats.orphan, fin.stats.dead,
             fin.stats.gave_up);
    return 0;
}
