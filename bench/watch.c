/* watch.c - watches one end-to-end bench run until every chat is done.
 *
 * Every --interval-ms it asks Redis (one pipelined round trip)
 *   XINFO STREAM {prefix}results, XINFO GROUPS {prefix}results,
 *   XINFO GROUPS {prefix}requests
 * and counts a chat done once the handlers group has read its result and
 * acknowledged it. The run is over when --target more results than at start
 * were read by "handlers" (its Redis 7 entries-read counter, or, should that
 * be invalid, the stream's entries-added with nothing left undelivered), the
 * handlers group has nothing pending and neither has the processors group.
 *
 * Every --rss-ms it also samples VmRSS of each --pid NAME=PID (the max of each,
 * and of their sum; --pid-aux NAME=PID is left out of "rss_stack_max_kb"), and
 * the fake upstream's /stats "in_flight" (--fake-port), keeping the RSS of
 * --inflight-pid at the sample with the most in flight. CPU time (utime+stime)
 * of each pid is read at the start and at the end.
 *
 * Prints one flat JSON line on stdout; "done":0 if --timeout came first.
 * Touches --ready FILE once the starting counters are read, so the caller can
 * start the load after that and not before. */
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define WATCH_MAX_PIDS 8

struct config {
    const char *redis_host;
    int redis_port;
    const char *prefix;
    long long target;
    double timeout_s;
    int interval_ms;
    int rss_ms;
    int fake_port;
    int inflight_pid;
    const char *ready;
    int npids;
    char names[WATCH_MAX_PIDS][32];
    int pids[WATCH_MAX_PIDS];
    int aux[WATCH_MAX_PIDS]; /* --pid-aux: sampled, but not part of the stack's total */
};

static struct config cfg = {"127.0.0.1", 6379, "chatq:", 0, 60,    10,  100,
                            0,           0,    NULL,     0, {{0}}, {0}, {0}};

/* What one poll of Redis saw. -1: not known. */
struct progress {
    long long entries_read;  /* handlers group */
    long long entries_added; /* results stream */
    long long h_pending, p_pending;
    int all_delivered; /* handlers' last-delivered-id == last-generated-id */
};

static double unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- /proc ------------------------------------------------------------------- */

/* VmRSS of pid in KiB, or -1. */
static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kb = -1;
    /* Bounded by the file (a few dozen lines). */
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atol(line + 6);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* utime + stime of pid in seconds, or -1. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces; the fields start after its ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
               &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- the fake upstream's /stats ---------------------------------------------- */

/* The "in_flight" of the fake's /stats, or -1. One short blocking request. */
static long fake_in_flight(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    long v = -1;
    char buf[4096];
    size_t len = 0;
    static const char req[] =
        "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        goto out;
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1))
        goto out;
    /* Bounded by the buffer and the receive timeout. */
    while (len < sizeof(buf) - 1) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    const char *p = strstr(buf, "\"in_flight\"");
    if (p != NULL) {
        p = strchr(p, ':');
        if (p != NULL)
            v = atol(p + 1);
    }
out:
    close(fd);
    return v;
}

/* ---- Redis ------------------------------------------------------------------- */

static const redisReply *map_get(const redisReply *m, const char *key)
{
    if (m == NULL || m->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < m->elements; i += 2)
        if (m->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(m->element[i]->str, key) == 0)
            return m->element[i + 1];
    return NULL;
}

static long long as_int(const redisReply *r)
{
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return atoll(r->str);
    return -1;
}

static const redisReply *group_find(const redisReply *groups, const char *name)
{
    if (groups == NULL || groups->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i < groups->elements; i++) {
        const redisReply *n = map_get(groups->element[i], "name");
        if (n != NULL && n->type == REDIS_REPLY_STRING && strcmp(n->str, name) == 0)
            return groups->element[i];
    }
    return NULL;
}

/* One pipelined poll. Returns 0, or -1 if Redis did not answer. */
static int poll_progress(redisContext *rc, struct progress *p)
{
    redisReply *r[3] = {NULL, NULL, NULL};
    int ret = -1;
    redisAppendCommand(rc, "XINFO STREAM %sresults", cfg.prefix);
    redisAppendCommand(rc, "XINFO GROUPS %sresults", cfg.prefix);
    redisAppendCommand(rc, "XINFO GROUPS %srequests", cfg.prefix);
    for (int i = 0; i < 3; i++)
        if (redisGetReply(rc, (void **)&r[i]) != REDIS_OK)
            goto out;
    const redisReply *h = group_find(r[1], "handlers");
    const redisReply *pr = group_find(r[2], "processors");
    p->entries_added = as_int(map_get(r[0], "entries-added"));
    p->entries_read = as_int(map_get(h, "entries-read"));
    p->h_pending = h != NULL ? as_int(map_get(h, "pending")) : -1;
    p->p_pending = pr != NULL ? as_int(map_get(pr, "pending")) : -1;
    const redisReply *gen = map_get(r[0], "last-generated-id");
    const redisReply *del = map_get(h, "last-delivered-id");
    p->all_delivered = gen != NULL && del != NULL && gen->type == REDIS_REPLY_STRING &&
                       del->type == REDIS_REPLY_STRING && strcmp(gen->str, del->str) == 0;
    ret = 0;
out:
    for (int i = 0; i < 3; i++)
        if (r[i] != NULL)
            freeReplyObject(r[i]);
    return ret;
}

/* Chats done since the start, by the best counter available. */
static long long progress_done(const struct progress *p, const struct progress *base)
{
    if (p->entries_read >= 0 && base->entries_read >= 0)
        return p->entries_read - base->entries_read;
    if (p->entries_added >= 0 && base->entries_added >= 0 && p->all_delivered)
        return p->entries_added - base->entries_added;
    return 0;
}

/* ---- main ---------------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out, "usage: watch --target N [--redis-port P] [--prefix P] [--timeout S]\n"
                 "             [--interval-ms 10] [--rss-ms 100] [--pid NAME=PID]...\n"
                 "             [--pid-aux NAME=PID]...\n"
                 "             [--fake-port P] [--inflight-pid PID] [--ready FILE]\n");
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "watch: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--redis-port") == 0)
            cfg.redis_port = atoi(v);
        else if (strcmp(a, "--prefix") == 0)
            cfg.prefix = v;
        else if (strcmp(a, "--target") == 0)
            cfg.target = atoll(v);
        else if (strcmp(a, "--timeout") == 0)
            cfg.timeout_s = atof(v);
        else if (strcmp(a, "--interval-ms") == 0)
            cfg.interval_ms = atoi(v);
        else if (strcmp(a, "--rss-ms") == 0)
            cfg.rss_ms = atoi(v);
        else if (strcmp(a, "--fake-port") == 0)
            cfg.fake_port = atoi(v);
        else if (strcmp(a, "--inflight-pid") == 0)
            cfg.inflight_pid = atoi(v);
        else if (strcmp(a, "--ready") == 0)
            cfg.ready = v;
        else if (strcmp(a, "--pid") == 0 || strcmp(a, "--pid-aux") == 0) {
            const char *eq = strchr(v, '=');
            if (eq == NULL || cfg.npids == WATCH_MAX_PIDS || eq - v >= 32) {
                fprintf(stderr, "watch: --pid NAME=PID (at most %d)\n", WATCH_MAX_PIDS);
                return -1;
            }
            memcpy(cfg.names[cfg.npids], v, (size_t)(eq - v));
            cfg.aux[cfg.npids] = a[5] == '-';
            cfg.pids[cfg.npids++] = atoi(eq + 1);
        } else {
            fprintf(stderr, "watch: unknown option %s\n", a);
            usage(stderr);
            return -1;
        }
    }
    if (cfg.target <= 0 || cfg.interval_ms < 1 || cfg.rss_ms < 1) {
        usage(stderr);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0)
        return 2;
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout(cfg.redis_host, cfg.redis_port, tv);
    if (rc == NULL || rc->err != 0) {
        fprintf(stderr, "watch: redis: %s\n", rc != NULL ? rc->errstr : "out of memory");
        return 2;
    }
    redisSetTimeout(rc, tv);

    struct progress base, p;
    if (poll_progress(rc, &base) != 0) {
        fprintf(stderr, "watch: redis: %s\n", rc->errstr);
        return 2;
    }
    p = base;
    double cpu0[WATCH_MAX_PIDS], cpu1[WATCH_MAX_PIDS];
    long rss_max[WATCH_MAX_PIDS] = {0};
    for (int i = 0; i < cfg.npids; i++)
        cpu0[i] = proc_cpu_s(cfg.pids[i]);
    if (cfg.ready != NULL) {
        FILE *f = fopen(cfg.ready, "w");
        if (f != NULL)
            fclose(f);
    }

    double t0 = mono_s(), t0_unix = unix_ms();
    double next_rss = t0;
    double first_ms = 0, t10 = 0, t50 = 0, t90 = 0, done_ms = 0;
    long long done_n = 0;
    long total_max = 0, stack_max = 0, inflight_max = -1, rss_at_inflight = -1;
    long samples = 0, redis_errors = 0;
    int done = 0;
    /* Bounded in time by --timeout. */
    while (mono_s() - t0 < cfg.timeout_s) {
        double now = mono_s();
        if (now >= next_rss) {
            long total = 0, stack = 0;
            for (int i = 0; i < cfg.npids; i++) {
                long kb = proc_rss_kb(cfg.pids[i]);
                if (kb > rss_max[i])
                    rss_max[i] = kb;
                if (kb > 0)
                    total += kb;
                if (kb > 0 && !cfg.aux[i])
                    stack += kb;
            }
            if (total > total_max)
                total_max = total;
            if (stack > stack_max)
                stack_max = stack;
            if (cfg.fake_port > 0) {
                long inf = fake_in_flight(cfg.fake_port);
                if (inf > inflight_max) {
                    inflight_max = inf;
                    rss_at_inflight =
                        cfg.inflight_pid ? proc_rss_kb(cfg.inflight_pid) : -1;
                }
            }
            next_rss = now + cfg.rss_ms / 1000.0;
        }
        if (poll_progress(rc, &p) != 0) {
            redis_errors++;
            if (redis_errors > 20)
                break;
            if (redisReconnect(rc) != REDIS_OK)
                sleep_ms(100);
            continue;
        }
        samples++;
        double ms = unix_ms();
        done_n = progress_done(&p, &base);
        if (done_n > 0 && first_ms == 0)
            first_ms = ms;
        if (t10 == 0 && done_n * 10 >= cfg.target)
            t10 = ms;
        if (t50 == 0 && done_n * 2 >= cfg.target)
            t50 = ms;
        if (t90 == 0 && done_n * 10 >= cfg.target * 9)
            t90 = ms;
        if (done_n >= cfg.target && p.h_pending == 0 && p.p_pending == 0) {
            done = 1;
            done_ms = ms;
            break;
        }
        sleep_ms(cfg.interval_ms);
    }
    for (int i = 0; i < cfg.npids; i++)
        cpu1[i] = proc_cpu_s(cfg.pids[i]);

    printf("{\"done\":%d,\"target\":%lld,\"completed\":%lld,\"start_unix_ms\":%.1f,"
           "\"first_unix_ms\":%.1f,\"t10_unix_ms\":%.1f,\"t50_unix_ms\":%.1f,"
           "\"t90_unix_ms\":%.1f,\"done_unix_ms\":%.1f,\"handlers_pending\":%lld,"
           "\"processors_pending\":%lld,\"samples\":%ld,\"rss_total_max_kb\":%ld,"
           "\"rss_stack_max_kb\":%ld,"
           "\"inflight_max_sampled\":%ld,\"rss_at_inflight_max_kb\":%ld",
           done, cfg.target, done_n, t0_unix, first_ms, t10, t50, t90, done_ms,
           p.h_pending, p.p_pending, samples, total_max, stack_max, inflight_max,
           rss_at_inflight);
    for (int i = 0; i < cfg.npids; i++)
        printf(",\"rss_max_kb_%s\":%ld,\"cpu_s_%s\":%.3f", cfg.names[i], rss_max[i],
               cfg.names[i], cpu0[i] >= 0 && cpu1[i] >= 0 ? cpu1[i] - cpu0[i] : -1.0);
    printf("}\n");
    redisFree(rc);
    return 0;
}
