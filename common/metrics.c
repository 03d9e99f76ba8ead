/* metrics.c - every metric chatq exports, and the exposition (see metrics.h). */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "version.h"

/* Request and Redis-write latencies: a millisecond to ten seconds. */
static const double metrics_fast[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                      0.25,  0.5,    1,     2.5,  5,     10};
/* Upstream calls: a model answers in a fraction of a second to minutes. */
static const double metrics_slow[] = {0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                      5,    10,  20,   30,  60, 120};

#define METRICS_NB(b) (sizeof(b) / sizeof((b)[0]))

#define METRICS_DEFINE(var, nm, ty, bin, l0, l1, hl)                                     \
    struct metrics_family var = {.name = (nm),                                           \
                                 .help = (hl),                                           \
                                 .type = (ty),                                           \
                                 .binaries = (bin),                                      \
                                 .labels = {(l0), (l1)},                                 \
                                 .lock = PTHREAD_MUTEX_INITIALIZER}
#define METRICS_HISTOGRAM_DEFINE(var, nm, bin, bk, hl)                                   \
    struct metrics_family var = {.name = (nm),                                           \
                                 .help = (hl),                                           \
                                 .type = METRICS_HISTOGRAM,                              \
                                 .binaries = (bin),                                      \
                                 .buckets = (bk),                                        \
                                 .nbuckets = METRICS_NB(bk),                             \
                                 .lock = PTHREAD_MUTEX_INITIALIZER}

/* clang-format off */
METRICS_DEFINE(metrics_build_info, "chatq_build_info", METRICS_GAUGE, METRICS_ALL,
               "version", "component", "Always 1; the labels say which build runs.");
METRICS_DEFINE(metrics_start_time, "process_start_time_seconds", METRICS_GAUGE,
               METRICS_ALL, NULL, NULL, "Start time of the process, Unix seconds.");
METRICS_DEFINE(metrics_redis_reconnects, "chatq_redis_reconnects_total", METRICS_COUNTER,
               METRICS_ALL, NULL, NULL,
               "Connections to Redis made again after it was unreachable.");
METRICS_DEFINE(metrics_dead_letters, "chatq_dead_letters_total", METRICS_COUNTER,
               METRICS_PROCESSOR | METRICS_HANDLER, NULL, NULL,
               "Entries this process moved to the dead-letter stream.");

METRICS_DEFINE(metrics_api_requests, "chatq_api_requests_total", METRICS_COUNTER,
               METRICS_API, "route", "status", "HTTP requests answered, by route and status.");
METRICS_HISTOGRAM_DEFINE(metrics_api_duration, "chatq_api_request_duration_seconds",
                         METRICS_API, metrics_fast,
                         "Time from a request's head read to its answer sent.");
METRICS_DEFINE(metrics_api_redis_errors, "chatq_api_redis_errors_total", METRICS_COUNTER,
               METRICS_API, NULL, NULL,
               "Redis connects and commands that failed (unreachable, timeout, lost).");
METRICS_DEFINE(metrics_api_connections, "chatq_api_open_connections", METRICS_GAUGE,
               METRICS_API, NULL, NULL, "HTTP connections open now.");
METRICS_DEFINE(metrics_stream_length, "chatq_stream_length", METRICS_GAUGE, METRICS_API,
               "stream", NULL,
               "Entries in a stream (XLEN): requests and results in progress, dead letters.");
METRICS_DEFINE(metrics_group_lag, "chatq_group_lag", METRICS_GAUGE, METRICS_API, "group",
               NULL, "Entries of the group's stream not yet delivered to any consumer.");
METRICS_DEFINE(metrics_group_pending, "chatq_group_pending", METRICS_GAUGE, METRICS_API,
               "group", NULL, "Entries delivered to a consumer and not yet acknowledged.");
METRICS_DEFINE(metrics_redis_memory, "chatq_redis_used_memory_bytes", METRICS_GAUGE,
               METRICS_API, NULL, NULL, "Redis's used_memory.");
METRICS_DEFINE(metrics_redis_maxmemory, "chatq_redis_maxmemory_bytes", METRICS_GAUGE,
               METRICS_API, NULL, NULL, "Redis's maxmemory; 0: no limit.");

METRICS_DEFINE(metrics_chats_started, "chatq_processor_chats_started_total",
               METRICS_COUNTER, METRICS_PROCESSOR, NULL, NULL,
               "Requests taken into a slot (read, or taken over from another consumer).");
METRICS_DEFINE(metrics_chats_completed, "chatq_processor_chats_completed_total",
               METRICS_COUNTER, METRICS_PROCESSOR, NULL, NULL,
               "Chats that ended completed here.");
METRICS_DEFINE(metrics_chats_failed, "chatq_processor_chats_failed_total", METRICS_COUNTER,
               METRICS_PROCESSOR, "code", NULL, "Chats that ended failed here, by error code.");
METRICS_DEFINE(metrics_upstream_attempts, "chatq_processor_upstream_attempts_total",
               METRICS_COUNTER, METRICS_PROCESSOR, "outcome", NULL,
               "Upstream calls by outcome: 2xx, 3xx, 4xx, 429, 5xx, timeout, connection_error.");
METRICS_HISTOGRAM_DEFINE(metrics_upstream_duration,
                         "chatq_processor_upstream_duration_seconds", METRICS_PROCESSOR,
                         metrics_slow, "Time of one upstream call, answered or not.");
METRICS_DEFINE(metrics_retries, "chatq_processor_retries_total", METRICS_COUNTER,
               METRICS_PROCESSOR, "cause", NULL,
               "Attempts scheduled again, by the error code that caused them.");
METRICS_DEFINE(metrics_inflight, "chatq_processor_inflight", METRICS_GAUGE,
               METRICS_PROCESSOR, NULL, NULL, "Upstream calls on the wire now.");
METRICS_DEFINE(metrics_slots, "chatq_processor_slots", METRICS_GAUGE, METRICS_PROCESSOR,
               "state", NULL,
               "Job slots: used, free, limit (what adaptive concurrency allows now).");
METRICS_DEFINE(metrics_tokens, "chatq_processor_tokens_total", METRICS_COUNTER,
               METRICS_PROCESSOR, "model", "kind",
               "Tokens the upstream reported, by model and kind (prompt, completion).");
METRICS_DEFINE(metrics_claims, "chatq_processor_claims_total", METRICS_COUNTER,
               METRICS_PROCESSOR, NULL, NULL,
               "Claims (XCLAIM) of idle or handed-back entries answered by Redis.");
METRICS_DEFINE(metrics_takeovers, "chatq_processor_takeovers_total", METRICS_COUNTER,
               METRICS_PROCESSOR, NULL, NULL, "Entries taken over from another consumer.");

METRICS_DEFINE(metrics_results_written, "chatq_handler_results_written_total",
               METRICS_COUNTER, METRICS_HANDLER, NULL, NULL,
               "Outcomes written into their trace's record.");
METRICS_DEFINE(metrics_results_duplicate, "chatq_handler_results_duplicate_total",
               METRICS_COUNTER, METRICS_HANDLER, NULL, NULL,
               "Outcomes ignored: the trace had its outcome already.");
METRICS_DEFINE(metrics_results_orphan, "chatq_handler_results_orphan_total",
               METRICS_COUNTER, METRICS_HANDLER, NULL, NULL,
               "Outcomes of unknown or expired traces (moved to the dead-letter stream).");
METRICS_HISTOGRAM_DEFINE(metrics_handler_write_duration,
                         "chatq_handler_write_duration_seconds", METRICS_HANDLER,
                         metrics_fast, "Time to write one batch of outcomes to Redis.");
/* clang-format on */

/* In the order they are rendered. */
static struct metrics_family *const metrics_all[] = {
    &metrics_build_info,
    &metrics_start_time,
    &metrics_redis_reconnects,
    &metrics_dead_letters,
    &metrics_api_requests,
    &metrics_api_duration,
    &metrics_api_redis_errors,
    &metrics_api_connections,
    &metrics_stream_length,
    &metrics_group_lag,
    &metrics_group_pending,
    &metrics_redis_memory,
    &metrics_redis_maxmemory,
    &metrics_chats_started,
    &metrics_chats_completed,
    &metrics_chats_failed,
    &metrics_upstream_attempts,
    &metrics_upstream_duration,
    &metrics_retries,
    &metrics_inflight,
    &metrics_slots,
    &metrics_tokens,
    &metrics_claims,
    &metrics_takeovers,
    &metrics_results_written,
    &metrics_results_duplicate,
    &metrics_results_orphan,
    &metrics_handler_write_duration,
};

static unsigned metrics_binary = METRICS_ALL;

void metrics_init(unsigned binary, const char *component)
{
    metrics_binary = binary;
    metrics_set(&metrics_build_info, 1, CHATQ_VERSION, component);
    metrics_set(&metrics_start_time, clock_now_ms() / 1000, NULL, NULL);
}

/* Copies v into out as a label value needing no escape (see metrics.h). */
static void metrics_clean(char out[METRICS_VALUE_MAX], const char *v)
{
    size_t i = 0;
    for (; v != NULL && v[i] != '\0' && i < METRICS_VALUE_MAX - 1; i++) {
        char c = v[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || strchr("._:/+-", c) != NULL;
        out[i] = ok ? c : '_';
    }
    out[i] = '\0';
}

static int metrics_same(const struct metrics_series *s,
                        const char want[METRICS_LABELS_MAX][METRICS_VALUE_MAX])
{
    for (int i = 0; i < METRICS_LABELS_MAX; i++)
        if (strcmp(s->values[i], want[i]) != 0)
            return 0;
    return 1;
}

/* The series of f for the label values v0, v1: found, made, or the overflow one. */
static struct metrics_series *metrics_series(struct metrics_family *f, const char *v0,
                                             const char *v1)
{
    char want[METRICS_LABELS_MAX][METRICS_VALUE_MAX];
    const char *v[METRICS_LABELS_MAX] = {v0, v1};
    for (int i = 0; i < METRICS_LABELS_MAX; i++)
        metrics_clean(want[i], f->labels[i] != NULL ? v[i] : NULL);

    /* Lock-free for a series that exists: nseries is published (release) after
     * the series' values were written. */
    size_t n = atomic_load_explicit(&f->nseries, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (metrics_same(&f->series[i], want))
            return &f->series[i];

    pthread_mutex_lock(&f->lock);
    struct metrics_series *s = NULL;
    n = atomic_load_explicit(&f->nseries, memory_order_relaxed);
    for (size_t i = 0; i < n && s == NULL; i++)
        if (metrics_same(&f->series[i], want))
            s = &f->series[i];
    if (s == NULL && n < METRICS_SERIES_MAX - 1) {
        s = &f->series[n];
        memcpy(s->values, want, sizeof(want));
        atomic_store_explicit(&f->nseries, n + 1, memory_order_release);
    } else if (s == NULL) {
        /* Full: the last series, all "other", takes every new label set. */
        s = &f->series[METRICS_SERIES_MAX - 1];
        if (n < METRICS_SERIES_MAX) {
            for (int i = 0; i < METRICS_LABELS_MAX; i++)
                metrics_clean(s->values[i], f->labels[i] != NULL ? "other" : NULL);
            atomic_store_explicit(&f->nseries, METRICS_SERIES_MAX, memory_order_release);
        }
    }
    pthread_mutex_unlock(&f->lock);
    return s;
}

void metrics_add(struct metrics_family *f, long long n, const char *v0, const char *v1)
{
    atomic_fetch_add_explicit(&metrics_series(f, v0, v1)->value, n, memory_order_relaxed);
}

void metrics_set(struct metrics_family *f, long long v, const char *v0, const char *v1)
{
    atomic_store_explicit(&metrics_series(f, v0, v1)->value, v, memory_order_relaxed);
}

void metrics_observe(struct metrics_family *f, double seconds)
{
    size_t b = 0;
    if (seconds < 0)
        seconds = 0;
    while (b < f->nbuckets && seconds > f->buckets[b])
        b++;
    atomic_fetch_add_explicit(&f->counts[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&f->sum_us, (long long)(seconds * 1e6),
                              memory_order_relaxed);
}

/* {name="value",...} of s, or nothing for a family without labels. */
static void metrics_labels(FILE *out, const struct metrics_family *f,
                           const struct metrics_series *s)
{
    if (f->labels[0] == NULL)
        return;
    fputc('{', out);
    for (int i = 0; i < METRICS_LABELS_MAX && f->labels[i] != NULL; i++)
        fprintf(out, "%s%s=\"%s\"", i ? "," : "", f->labels[i], s->values[i]);
    fputc('}', out);
}

static void metrics_render_family(FILE *out, struct metrics_family *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
            types[f->type]);
    if (f->type == METRICS_HISTOGRAM) {
        /* _count is the sum of the buckets as read, so it always equals +Inf's
         * even while observations come in. */
        long long cum = 0;
        for (size_t b = 0; b <= f->nbuckets; b++) {
            cum += atomic_load_explicit(&f->counts[b], memory_order_relaxed);
            if (b < f->nbuckets)
                fprintf(out, "%s_bucket{le=\"%g\"} %lld\n", f->name, f->buckets[b], cum);
            else
                fprintf(out, "%s_bucket{le=\"+Inf\"} %lld\n", f->name, cum);
        }
        fprintf(out, "%s_sum %.6f\n%s_count %lld\n", f->name,
                (double)atomic_load_explicit(&f->sum_us, memory_order_relaxed) / 1e6,
                f->name, cum);
        return;
    }
    size_t n = atomic_load_explicit(&f->nseries, memory_order_acquire);
    /* A counter without labels is 0 until it counts, rather than absent. */
    if (n == 0 && f->labels[0] == NULL) {
        fprintf(out, "%s 0\n", f->name);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        fputs(f->name, out);
        metrics_labels(out, f, &f->series[i]);
        fprintf(out, " %lld\n",
                atomic_load_explicit(&f->series[i].value, memory_order_relaxed));
    }
}

int metrics_render(char **out, size_t *len)
{
    FILE *f = open_memstream(out, len);
    if (f == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(metrics_all) / sizeof(metrics_all[0]); i++)
        if (metrics_all[i]->binaries & metrics_binary)
            metrics_render_family(f, metrics_all[i]);
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}
