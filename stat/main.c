/* main.c - chatq-stat: one refreshing screen of the whole system, read from
 * Redis (status.h), like `redis-cli --stat` or `top`: the live workers, queue
 * depth, lag and pending per group, pending per consumer, the oldest pending
 * entry's age, dead letters, and completions and failures per second.
 *
 * Rates are the change of Redis-wide counters between two snapshots, so they
 * count every worker's work, whichever process did it. --once takes two
 * snapshots --interval apart and prints one screen. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "clock.h"
#include "config.h"
#include "keys.h"
#include "rconn.h"
#include "status.h"

#define STAT_PROG "chatq-stat"
#define STAT_CONNECT_TIMEOUT_MS 2000

static volatile sig_atomic_t stat_stopping;

static void stat_on_signal(int sig)
{
    (void)sig;
    stat_stopping = 1;
}

static long long stat_get(const json_t *o, const char *path0, const char *path1)
{
    const json_t *v = json_object_get(o, path0);
    if (path1 != NULL)
        v = json_object_get(v, path1);
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

static const char *stat_str(const json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s != NULL ? s : "";
}

/* ms as "850 ms", "12.3 s", "4.2 min", "3.1 h". */
static const char *stat_age(long long ms, char *out, size_t len)
{
    if (ms < 1000)
        snprintf(out, len, "%lld ms", ms);
    else if (ms < 60000)
        snprintf(out, len, "%.1f s", (double)ms / 1000);
    else if (ms < 3600000)
        snprintf(out, len, "%.1f min", (double)ms / 60000);
    else
        snprintf(out, len, "%.1f h", (double)ms / 3600000);
    return out;
}

static const char *stat_bytes(long long b, char *out, size_t len)
{
    if (b < 1024)
        snprintf(out, len, "%lld B", b);
    else if (b < 1024 * 1024)
        snprintf(out, len, "%.1f KiB", (double)b / 1024);
    else
        snprintf(out, len, "%.1f MiB", (double)b / (1024 * 1024));
    return out;
}

/* The rate of a counter between prev and cur, per second; -1 without prev. */
static double stat_rate(const json_t *prev, const json_t *cur, const char *a,
                        const char *b)
{
    if (prev == NULL)
        return -1;
    long long dt = stat_get(cur, "time", NULL) - stat_get(prev, "time", NULL);
    long long dv = stat_get(cur, a, b) - stat_get(prev, a, b);
    if (dt <= 0 || dv < 0)
        return 0;
    return (double)dv * 1000.0 / (double)dt;
}

/* The same for a group's member (by index in "groups"). */
static double stat_group_rate(const json_t *prev, const json_t *cur, size_t g,
                              const char *name)
{
    if (prev == NULL)
        return -1;
    long long dt = stat_get(cur, "time", NULL) - stat_get(prev, "time", NULL);
    const json_t *gp = json_array_get(json_object_get(prev, "groups"), g);
    const json_t *gc = json_array_get(json_object_get(cur, "groups"), g);
    long long dv = stat_get(gc, name, NULL) - stat_get(gp, name, NULL);
    if (dt <= 0 || dv < 0)
        return 0;
    return (double)dv * 1000.0 / (double)dt;
}

static void stat_print_rate(FILE *out, const char *label, double v)
{
    if (v < 0)
        fprintf(out, "  %s      -/s", label);
    else
        fprintf(out, "  %s %8.1f/s", label, v);
}

static void stat_print(FILE *out, const json_t *prev, const json_t *cur,
                       const char *where, const char *prefix)
{
    char iso[CLOCK_ISO_LEN], a[32], b[32];
    long long now = stat_get(cur, "time", NULL);
    clock_iso8601(iso, now);
    const json_t *redis = json_object_get(cur, "redis");
    long long maxmem = stat_get(redis, "maxmemory", NULL);
    fprintf(out, "chatq  %s  prefix %s  %s\n", where, prefix, iso);
    stat_bytes(stat_get(redis, "used_memory", NULL), a, sizeof(a));
    if (maxmem > 0)
        fprintf(out, "redis memory %s of maxmemory %s (%.0f %%), policy %s\n", a,
                stat_bytes(maxmem, b, sizeof(b)),
                100.0 * (double)stat_get(redis, "used_memory", NULL) / (double)maxmem,
                stat_str(redis, "maxmemory_policy"));
    else
        fprintf(out, "redis memory %s, no maxmemory, policy %s\n", a,
                stat_str(redis, "maxmemory_policy"));

    fprintf(out, "\nthroughput");
    stat_print_rate(out, "completed", stat_rate(prev, cur, "totals", "completed"));
    stat_print_rate(out, "failed", stat_rate(prev, cur, "totals", "failed"));
    stat_print_rate(out, "requests in", stat_group_rate(prev, cur, 0, "added"));
    stat_print_rate(out, "dead letters", stat_rate(prev, cur, "dead", "added"));
    fprintf(out, "\ntotals      completed %lld  failed %lld  dead letters %lld\n",
            stat_get(cur, "totals", "completed"), stat_get(cur, "totals", "failed"),
            stat_get(cur, "dead", "length"));

    fprintf(out, "\n%-10s %-11s %8s %8s %8s  %s\n", "stream", "group", "length", "lag",
            "pending", "oldest pending");
    const json_t *groups = json_object_get(cur, "groups");
    size_t i;
    const json_t *g;
    json_array_foreach (groups, i, g) {
        long long pending = stat_get(g, "pending", NULL);
        fprintf(out, "%-10s %-11s %8lld %8lld %8lld  %s\n", stat_str(g, "stream"),
                stat_str(g, "group"), stat_get(g, "length", NULL),
                stat_get(g, "lag", NULL), pending,
                pending > 0
                    ? stat_age(stat_get(g, "oldest_pending_ms", NULL), a, sizeof(a))
                    : "-");
    }

    const json_t *workers = json_object_get(cur, "workers");
    fprintf(out, "\nworkers: %zu live\n", json_array_size(workers));
    fprintf(out, "  %-36s %-9s %-8s %-8s %9s %9s %7s  %s\n", "consumer", "role",
            "version", "up", "in flight", "done", "failed", "last error");
    const json_t *w;
    json_array_foreach (workers, i, w) {
        char up[32] = "?";
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        /* started is ISO-8601 UTC: "2025-08-19T17:45:00.123Z" */
        if (strptime(stat_str(w, "started"), "%Y-%m-%dT%H:%M:%S", &tm) != NULL)
            stat_age(now - (long long)timegm(&tm) * 1000, up, sizeof(up));
        fprintf(out, "  %-36s %-9s %-8s %-8s %9lld %9lld %7lld  %.60s\n",
                stat_str(w, "consumer"), stat_str(w, "role"), stat_str(w, "version"), up,
                stat_get(w, "in_flight", NULL), stat_get(w, "done", NULL),
                stat_get(w, "failed", NULL), stat_str(w, "last_error"));
    }

    fprintf(out, "\nconsumers (pending, idle)\n");
    json_array_foreach (groups, i, g) {
        size_t k;
        const json_t *c;
        json_array_foreach (json_object_get(g, "consumers"), k, c)
            fprintf(out, "  %-11s %-36s %8lld  %s\n", stat_str(g, "group"),
                    stat_str(c, "name"), stat_get(c, "pending", NULL),
                    stat_age(stat_get(c, "idle_ms", NULL), a, sizeof(a)));
    }

    const json_t *latest = json_object_get(json_object_get(cur, "dead"), "latest");
    if (json_array_size(latest) > 0) {
        fprintf(out, "\nlatest dead letters\n");
        const json_t *d;
        json_array_foreach (latest, i, d)
            fprintf(out, "  %-22s %-9s %-36s %.70s\n", stat_str(d, "id"),
                    stat_str(d, "source"), stat_str(d, "trace"), stat_str(d, "reason"));
    }
    fflush(out);
}

/* A snapshot, connecting first if needed; NULL (with the connection dropped) if
 * Redis failed, the reason on stderr. */
static json_t *stat_take(redisContext **c, const struct rconn_url *url,
                         const struct keys *keys)
{
    char err[512];
    if (*c == NULL) {
        *c = rconn_connect(url, STAT_CONNECT_TIMEOUT_MS, err, sizeof(err));
        if (*c == NULL) {
            fprintf(stderr, "%s: Redis: %s\n", STAT_PROG, err);
            return NULL;
        }
    }
    json_t *snap = status_collect(*c, keys, err, sizeof(err));
    if (snap == NULL) {
        fprintf(stderr, "%s: Redis: %s\n", STAT_PROG, err);
        redisFree(*c);
        *c = NULL;
    }
    return snap;
}

static void stat_sleep(long long ms)
{
    struct timespec ts = clock_timespec(ms);
    while (!stat_stopping && nanosleep(&ts, &ts) != 0)
        ;
}

int main(int argc, char **argv)
{
    struct config_common common;
    long long interval_ms = 1000, once = 0;
    const struct config_var vars[] = {
        CONFIG_COMMON_VARS(common),
        {"STAT_INTERVAL_MS", "interval-ms", CONFIG_INT, "1000",
         "time between screens (and, with --once, between the two snapshots whose "
         "difference gives the rates)",
         &interval_ms, 100, 3600000, 0},
    };
    /* --once and --interval SECONDS, as redis-cli and top take them; the rest
     * goes to the usual settings. */
    char **rest = calloc((size_t)argc + 1, sizeof(*rest));
    char ms[32];
    int nrest = 0;
    if (rest == NULL)
        return 1;
    rest[nrest++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--once") == 0) {
            once = 1;
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            double s = atof(argv[++i]);
            snprintf(ms, sizeof(ms), "%lld", (long long)(s * 1000));
            rest[nrest++] = "--interval-ms";
            rest[nrest++] = ms;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    enum config_result cr = config_start(
        STAT_PROG,
        "Prints the state of a chatq system from its Redis, refreshed every interval:\n"
        "live workers, queue depth, lag and pending per group, pending per consumer,\n"
        "oldest pending age, dead letters, completions and failures per second.\n"
        "Also: --once (one screen, then exit), --interval SECONDS.",
        vars, sizeof(vars) / sizeof(vars[0]), nrest, rest, &common);
    free(rest);
    if (cr != CONFIG_OK)
        return cr == CONFIG_HELP ? 0 : 1;

    char err[512], where[320];
    struct rconn_url url;
    struct keys keys;
    if (rconn_url_parse(common.redis_url, &url, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: bad setting: %s\n", STAT_PROG, err);
        return 1;
    }
    if (keys_init(&keys, common.prefix) != 0) {
        fprintf(stderr, "%s: bad setting: CHATQ_PREFIX is longer than %d\n", STAT_PROG,
                KEYS_PREFIX_MAX);
        return 1;
    }
    rconn_url_describe(&url, where, sizeof(where));
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = stat_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int tty = isatty(STDOUT_FILENO);
    redisContext *c = NULL;
    json_t *prev = NULL;
    int rc = 0;
    for (int round = 0; !stat_stopping; round++) {
        json_t *cur = stat_take(&c, &url, &keys);
        if (cur == NULL && once) {
            rc = 1;
            break;
        }
        if (cur != NULL && (!once || prev != NULL)) {
            if (tty)
                fputs("\033[H\033[2J", stdout); /* home, clear: one screen */
            else if (round > 0 && !once)
                fputs("\n", stdout);
            stat_print(stdout, prev, cur, where, common.prefix);
            if (once) {
                json_decref(cur);
                break;
            }
        }
        if (cur != NULL) {
            json_decref(prev);
            prev = cur;
        }
        stat_sleep(interval_ms);
    }
    json_decref(prev);
    if (c != NULL)
        redisFree(c);
    return rc;
}
