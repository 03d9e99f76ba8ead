/* metrics.h - the Prometheus metrics of every binary, named once here (as keys.h
 * names the Redis keys), and their text exposition format 0.0.4.
 *
 * A metric is a struct metrics_family: a counter, a gauge or a histogram, with
 * up to METRICS_LABELS_MAX label names. Its label sets ("series") are made on
 * first use, at most METRICS_SERIES_MAX of them: once they are all taken, any new
 * label set is counted under the last one, whose values are all "other". So
 * cardinality is bounded at compile time whatever values come (a model name is
 * the client's choice). Label values are cut to METRICS_VALUE_MAX - 1 bytes and
 * every byte outside [A-Za-z0-9._:/+-] becomes '_': a value needs no escaping and
 * is valid UTF-8. Never pass a trace id or a message; a model name (the client's
 * choice) is what the bound is for.
 *
 * Everything is thread-safe (the api updates from civetweb's threads, the probe
 * thread of the processor and the handler renders while their loops update):
 * values are atomics, and a new series is published under the family's lock.
 *
 * Histograms have no labels; they observe seconds and keep the sum in
 * microseconds. */
#ifndef CHATQ_METRICS_H
#define CHATQ_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#define METRICS_LABELS_MAX 2
#define METRICS_SERIES_MAX 64
#define METRICS_VALUE_MAX 64
#define METRICS_BUCKETS_MAX 16

/* Which binaries export a family (metrics_init names the one running). */
#define METRICS_API 1u
#define METRICS_PROCESSOR 2u
#define METRICS_HANDLER 4u
#define METRICS_ALL 7u

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

struct metrics_series {
    char values[METRICS_LABELS_MAX][METRICS_VALUE_MAX];
    atomic_llong value;
};

struct metrics_family {
    const char *name;
    const char *help;
    enum metrics_type type;
    unsigned binaries;
    const char *labels[METRICS_LABELS_MAX]; /* label names; NULL ends the list */
    const double *buckets;                  /* histograms: upper bounds, ascending */
    size_t nbuckets;

    /* State: zero to start with. */
    pthread_mutex_t lock; /* held only to add a series */
    atomic_size_t nseries;
    struct metrics_series series[METRICS_SERIES_MAX];
    atomic_llong counts[METRICS_BUCKETS_MAX + 1]; /* per bucket (not cumulative), +Inf */
    atomic_llong sum_us;
};

/* Every binary. */
extern struct metrics_family metrics_build_info, metrics_start_time,
    metrics_redis_reconnects, metrics_dead_letters;
/* chatq-api, and the Redis-wide gauges it exports. */
extern struct metrics_family metrics_api_requests, metrics_api_duration,
    metrics_api_redis_errors, metrics_api_connections, metrics_stream_length,
    metrics_group_lag, metrics_group_pending, metrics_redis_memory,
    metrics_redis_maxmemory;
/* chatq-processor */
extern struct metrics_family metrics_chats_started, metrics_chats_completed,
    metrics_chats_failed, metrics_upstream_attempts, metrics_upstream_duration,
    metrics_retries, metrics_inflight, metrics_slots, metrics_tokens, metrics_claims,
    metrics_takeovers;
/* chatq-handler */
extern struct metrics_family metrics_results_written, metrics_results_duplicate,
    metrics_results_orphan, metrics_handler_write_duration;

/* Names the binary running (METRICS_API, ...) and its component ("api"), sets
 * the build info and the start time. Call once, before any other thread runs. */
void metrics_init(unsigned binary, const char *component);

/* Adds n to the series of f with label values v0, v1 (NULL for a label the
 * family does not have). For counters (n >= 0) and gauges. */
void metrics_add(struct metrics_family *f, long long n, const char *v0, const char *v1);

/* Sets a gauge's series. */
void metrics_set(struct metrics_family *f, long long v, const char *v0, const char *v1);

#define metrics_inc(f) metrics_add(&(f), 1, NULL, NULL)
#define metrics_inc1(f, v0) metrics_add(&(f), 1, (v0), NULL)
#define metrics_inc2(f, v0, v1) metrics_add(&(f), 1, (v0), (v1))

/* Counts one observation of a histogram, in seconds. */
void metrics_observe(struct metrics_family *f, double seconds);

/* The exposition of every family the running binary exports, into *out (new,
 * NUL-terminated: caller frees) of *len bytes. 0, or -1 if out of memory. */
int metrics_render(char **out, size_t *len);

#endif
