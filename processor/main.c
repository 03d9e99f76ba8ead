/* main.c - chatq-processor: settings, start-up checks, signals. The work itself
 * is processor.c's. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "processor.h"
#include "rconn.h"
#include "stream.h"

#define MAIN_PROG "chatq-processor"
#define MAIN_SUMMARY                                                                     \
    "Takes chat requests from the Redis requests stream, asks an OpenAI-compatible\n"    \
    "upstream, and writes each outcome to the results stream."

static struct config cfg;
static const char *main_key_file;
static const char *main_metrics_host;
static long long main_metrics_port;
/* METRICS_PORT's probe, or NULL; ticked by main_on_tick while the loop turns. */
static struct probe *main_probe;
/* The key read from main_key_file: cfg.api_key points here. Kept until exit. */
static char *main_key_buf;

static const struct config_var main_vars[] = {
    CONFIG_COMMON_VARS(cfg.common),
    {"OPENAI_API_KEY", "openai-api-key", CONFIG_STR, NULL,
     "API key sent as 'Authorization: Bearer'; unset: no such header", &cfg.api_key, 0, 0,
     1},
    {"OPENAI_API_KEY_FILE", "openai-api-key-file", CONFIG_STR, NULL,
     "file whose first line is the API key (docker secrets); instead of "
     "OPENAI_API_KEY",
     &main_key_file, 0, 0, 0},
    {"OPENAI_BASE_URL", "openai-base-url", CONFIG_STR, "https://api.openai.com/v1",
     "OpenAI-compatible API base; requests go to {base}/chat/completions", &cfg.base_url,
     0, 0, 0},
    {"UPSTREAM_CA_FILE", "upstream-ca-file", CONFIG_STR, NULL,
     "PEM file of the CAs trusted for an https:// upstream; unset: the system's",
     &cfg.ca_file, 0, 0, 0},
    {"PROCESSOR_CONCURRENCY", "concurrency", CONFIG_INT, "1024",
     "requests held at once (in flight, backing off, or being written)", &cfg.concurrency,
     1, 100000, 0},
    {"UPSTREAM_TIMEOUT_MS", "upstream-timeout-ms", CONFIG_INT, "60000",
     "longest one upstream attempt may take", &cfg.timeout_ms, 100, 3600000, 0},
    {"UPSTREAM_CONNECT_TIMEOUT_MS", "upstream-connect-timeout-ms", CONFIG_INT, "5000",
     "longest a connection to the upstream may take", &cfg.connect_timeout_ms, 100,
     600000, 0},
    {"UPSTREAM_MAX_ATTEMPTS", "upstream-max-attempts", CONFIG_INT, "5",
     "attempts per request before a retryable failure becomes final", &cfg.max_attempts,
     1, 100, 0},
    {"RETRY_BASE_MS", "retry-base-ms", CONFIG_INT, "500",
     "backoff after the first failed attempt; doubles each attempt, with jitter",
     &cfg.retry_base_ms, 1, 3600000, 0},
    {"RETRY_MAX_MS", "retry-max-ms", CONFIG_INT, "20000", "longest computed backoff",
     &cfg.retry_max_ms, 1, 3600000, 0},
    {"RETRY_AFTER_MAX_MS", "retry-after-max-ms", CONFIG_INT, "60000",
     "longest wait honoured from an upstream's Retry-After", &cfg.retry_after_max_ms, 0,
     3600000, 0},
    {"UPSTREAM_MAX_RESPONSE_BYTES", "upstream-max-response-bytes", CONFIG_INT, "8388608",
     "larger upstream answers fail with upstream_response_too_large",
     &cfg.max_response_bytes, 1024, 1073741824, 0},
    CONFIG_CLAIM_IDLE_VAR(cfg.claim_idle_ms),
    CONFIG_MAX_DELIVERIES_VAR(cfg.max_deliveries),
    CONFIG_DEAD_MAX_VAR(cfg.dead_letter_max),
    {"UPSTREAM_RPM", "upstream-rpm", CONFIG_INT, "0",
     "requests per minute the upstream key allows, per model, shared by every "
     "processor through Redis; 0: no budget (the upstream's x-ratelimit headers and "
     "429s still pause everyone)",
     &cfg.rpm, 0, 100000000, 0},
    {"UPSTREAM_TPM", "upstream-tpm", CONFIG_INT, "0",
     "tokens per minute the upstream key allows, per model, shared likewise; 0: none",
     &cfg.tpm, 0, 10000000000LL, 0},
    {"UPSTREAM_LIMITS", "upstream-limits", CONFIG_STR, NULL,
     "budgets of particular models, overriding UPSTREAM_RPM and UPSTREAM_TPM: "
     "model=rpm:tpm,... (e.g. gpt-4o=500:30000,gpt-4o-mini=5000:2000000; 0 or empty: "
     "none)",
     &cfg.limits, 0, 0, 0},
    {"UPSTREAM_BURST_MS", "upstream-burst-ms", CONFIG_INT, "1000",
     "the most of the budget spent at once: this many ms' worth", &cfg.burst_ms, 1, 60000,
     0},
    {"UPSTREAM_TOKENS_ESTIMATE", "upstream-tokens-estimate", CONFIG_INT, "256",
     "completion tokens counted against UPSTREAM_TPM before the answer tells",
     &cfg.tokens_estimate, 0, 1000000, 0},
    {"ADAPTIVE_CONCURRENCY", "adaptive-concurrency", CONFIG_INT, "1",
     "1: fewer calls in flight while the upstream times out or answers 5xx, back up "
     "gradually after (AIMD); 0: always up to PROCESSOR_CONCURRENCY",
     &cfg.adaptive, 0, 1, 0},
    {"PARK_MIN_MS", "park-min-ms", CONFIG_INT, "1000",
     "a wait at least this long (budget, Retry-After, backoff) is parked in Redis and "
     "frees its slot; shorter ones wait in the slot",
     &cfg.park_min_ms, 0, 3600000, 0},
    {"SHUTDOWN_GRACE_MS", "shutdown-grace-ms", CONFIG_INT, "10000",
     "on SIGTERM, how long unfinished requests may still finish before they are handed "
     "back",
     &cfg.shutdown_grace_ms, 0, 3600000, 0},
    CONFIG_METRICS_VARS(main_metrics_host, main_metrics_port),
};

/* OPENAI_API_KEY_FILE: the key is the file's first line, without the line end
 * or trailing blanks a text editor or `echo` leaves. Returns 0 with cfg.api_key
 * set, or -1 with the reason on stderr (never the key itself). */
static int main_read_key_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    int rc = -1;
    if (f == NULL) {
        fprintf(stderr, "%s: OPENAI_API_KEY_FILE %s: %s\n", MAIN_PROG, path,
                strerror(errno));
        return -1;
    }
    ssize_t n = getline(&line, &cap, f);
    if (n < 0 && ferror(f)) {
        fprintf(stderr, "%s: OPENAI_API_KEY_FILE %s: %s\n", MAIN_PROG, path,
                strerror(errno));
        goto out;
    }
    if (n < 0)
        n = 0;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
        n--;
    if (n == 0) {
        fprintf(stderr, "%s: OPENAI_API_KEY_FILE %s holds no key on its first line\n",
                MAIN_PROG, path);
        goto out;
    }
    /* It goes into a header line: a control byte would break (or forge) one. */
    for (ssize_t i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) {
            fprintf(stderr,
                    "%s: OPENAI_API_KEY_FILE %s: the key holds a control character\n",
                    MAIN_PROG, path);
            goto out;
        }
    line[n] = '\0';
    main_key_buf = line;
    line = NULL;
    cfg.api_key = main_key_buf;
    rc = 0;
out:
    if (line != NULL) {
        memset(line, 0, cap); /* a half-read key need not linger */
        free(line);
    }
    fclose(f);
    return rc;
}

/* Every in-flight request may hold a connection of its own (HTTP/1.1). */
static void main_raise_nofile(long long concurrency)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && (long long)rl.rlim_cur < concurrency + 64)
        log_warn(NULL,
                 "open-file limit %llu is below PROCESSOR_CONCURRENCY + 64; upstream "
                 "connections may fail",
                 (unsigned long long)rl.rlim_cur);
}

/* Set by a stop signal that arrives before the event loop takes the signals
 * over; read again once it has, so that a signal in between is not lost. */
static volatile sig_atomic_t main_early_stop;

static void main_on_early_signal(int sig)
{
    (void)sig;
    main_early_stop = 1;
}

/* The group must exist before the first read. Redis may not be up yet when
 * everything starts together, so wait for it rather than exit; a stop signal
 * meanwhile ends the wait. Returns 0 when ready, -1 when asked to stop. */
static int main_group_ensure(const struct processor *p)
{
    char err[512];
    long long wait = 0;
    int warned = 0;
    /* Until the event loop takes the signals over. */
    signal(SIGTERM, main_on_early_signal);
    signal(SIGINT, main_on_early_signal);
    for (;;) {
        probe_tick(main_probe);
        if (main_early_stop) {
            log_info(NULL, "stopped while waiting for Redis");
            return -1;
        }
        redisContext *c = rconn_connect(&p->url, 2000, err, sizeof(err));
        int rc = c ? stream_group_ensure(c, p->keys.requests, KEYS_GROUP_PROCESSORS, err,
                                         sizeof(err))
                   : -1;
        if (c)
            redisFree(c);
        if (rc == 0)
            break;
        wait = rconn_backoff_ms(wait);
        if (!warned) {
            log_warn(NULL, "Redis is not ready (%s); retrying", err);
            warned = 1;
        }
        struct timespec ts = clock_timespec(wait);
        nanosleep(&ts, NULL); /* a signal cuts it short */
    }
    if (warned)
        log_info(NULL, "Redis is ready");
    return 0;
}

/* Once a second: the loop turns, for /healthz. */
#define MAIN_TICK_MS 1000
/* /healthz fails after this long without a tick: a tick may also wait out one
 * Redis connect and backoff while the group is made at start. */
#define MAIN_STALL_MS 15000

/* Also samples the gauges the probe thread cannot read from the loop's state. */
static void main_on_tick(evutil_socket_t fd, short what, void *arg)
{
    const struct processor *p = arg;
    (void)fd;
    (void)what;
    probe_tick(main_probe);
    metrics_set(&metrics_inflight, upstream_running(p->up), NULL, NULL);
    metrics_set(&metrics_slots, (long long)(p->njobs - p->nfree), "used", NULL);
    metrics_set(&metrics_slots, (long long)p->nfree, "free", NULL);
    metrics_set(&metrics_slots, (long long)p->climit, "limit", NULL);
}

static void main_on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info(NULL, "received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    processor_stop(arg);
}

int main(int argc, char **argv)
{
    int rc = 1;
    struct processor *p = NULL;
    struct event *sigterm = NULL, *sigint = NULL, *tick = NULL;

    enum config_result cr =
        config_start(MAIN_PROG, MAIN_SUMMARY, main_vars,
                     sizeof(main_vars) / sizeof(main_vars[0]), argc, argv, &cfg.common);
    if (cr == CONFIG_HELP)
        return 0;
    if (cr == CONFIG_ERROR)
        return 1;
    metrics_init(METRICS_PROCESSOR, "processor");
    /* An empty variable counts as unset, as it does for OPENAI_API_KEY. */
    if (main_key_file != NULL && main_key_file[0]) {
        if (cfg.api_key != NULL && cfg.api_key[0]) {
            fprintf(stderr,
                    "%s: OPENAI_API_KEY and OPENAI_API_KEY_FILE are both set; set "
                    "one\n",
                    MAIN_PROG);
            return 1;
        }
        if (main_read_key_file(main_key_file) != 0)
            return 1;
    }
    if (strstr(cfg.base_url, "api.openai.com") &&
        (cfg.api_key == NULL || !cfg.api_key[0])) {
        fprintf(stderr,
                "%s: OPENAI_API_KEY is not set; set it (or OPENAI_API_KEY_FILE), or "
                "point OPENAI_BASE_URL at an OpenAI-compatible server (e.g. the fake "
                "upstream: make run starts one)\n",
                MAIN_PROG);
        return 1;
    }
    /* Every request would fail on it: say so now, not once per chat. */
    if (cfg.ca_file != NULL && cfg.ca_file[0]) {
        FILE *f = fopen(cfg.ca_file, "r");
        if (f == NULL) {
            fprintf(stderr, "%s: UPSTREAM_CA_FILE %s: %s\n", MAIN_PROG, cfg.ca_file,
                    strerror(errno));
            return 1;
        }
        fclose(f);
    }

    /* hiredis writes to a socket Redis may have closed; that must be an error
     * return, not a fatal signal. */
    signal(SIGPIPE, SIG_IGN);
    main_raise_nofile(cfg.concurrency);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "%s: curl_global_init failed\n", MAIN_PROG);
        return 1;
    }

    char err[512];
    p = processor_new(&cfg, err, sizeof(err));
    if (p == NULL) {
        fprintf(stderr, "%s: %s\n", MAIN_PROG, err);
        goto out;
    }
    log_set_consumer(p->consumer);
    char redis[512];
    rconn_url_describe(&p->url, redis, sizeof(redis));
    log_info(NULL, "starting: consumer=%s redis=%s upstream=%s concurrency=%lld",
             p->consumer, redis, cfg.base_url, cfg.concurrency);
    if (main_metrics_port > 0) {
        const struct probe_settings ps = {
            main_metrics_host, (int)main_metrics_port, &p->url,
            p->keys.requests,  KEYS_GROUP_PROCESSORS,  MAIN_STALL_MS};
        main_probe = probe_start(&ps, err, sizeof(err));
        if (main_probe == NULL) {
            fprintf(stderr, "%s: %s\n", MAIN_PROG, err);
            goto out;
        }
        log_info(NULL, "probes on http://%s:%d", main_metrics_host,
                 probe_port(main_probe));
    }
    if (main_group_ensure(p) != 0) {
        rc = 0;
        goto out;
    }

    sigterm = evsignal_new(processor_base(p), SIGTERM, main_on_signal, p);
    sigint = evsignal_new(processor_base(p), SIGINT, main_on_signal, p);
    tick = event_new(processor_base(p), -1, EV_PERSIST, main_on_tick, p);
    struct timeval every = clock_timeval(MAIN_TICK_MS);
    if (sigterm == NULL || sigint == NULL || tick == NULL ||
        evsignal_add(sigterm, NULL) != 0 || evsignal_add(sigint, NULL) != 0 ||
        event_add(tick, &every) != 0) {
        fprintf(stderr, "%s: cannot install signal handlers\n", MAIN_PROG);
        goto out;
    }
    /* A signal after the group ensure's last look at the flag and before the
     * events above were added went to the early handler: honour it now. From
     * here on the event loop sees every one. */
    if (main_early_stop) {
        log_info(NULL, "stopped during start-up");
        rc = 0;
        goto out;
    }
    if (processor_run(p) != 0) {
        log_error(NULL, "event loop failed");
        goto out;
    }
    log_info(NULL, "stopped");
    rc = 0;
out:
    probe_stop(main_probe);
    if (tick)
        event_free(tick);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    processor_free(p);
    curl_global_cleanup();
    free(main_key_buf);
    return rc;
}
