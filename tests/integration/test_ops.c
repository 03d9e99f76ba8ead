/* test_ops.c - what an operator's tools see: every binary's --version, and the
 * probes (/healthz, /readyz) of the api on its port and of the processor and
 * the handler on METRICS_PORT, following Redis going away and coming back. */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"
#include "version.h"

#define OPS_PROBE_MS 5000 /* the timeout of one probe request */
#define OPS_FOLLOW_MS 20000

static struct stack ops_stack;
static int ops_proc_port, ops_hand_port;
static char ops_proc_env[32], ops_hand_env[32];
/* The processor logs logfmt at debug (every attempt and outcome), the handler
 * JSON: each format is read back by the log test. */
static const char *ops_proc_list[] = {ops_proc_env, "LOG_LEVEL=debug", NULL};
static const char *ops_hand_list[] = {ops_hand_env, "LOG_FORMAT=json", NULL};

static int ops_setup(void **state)
{
    (void)state;
    ops_proc_port = harness_free_port();
    ops_hand_port = harness_free_port();
    if (ops_proc_port < 0 || ops_hand_port < 0)
        return -1;
    snprintf(ops_proc_env, sizeof(ops_proc_env), "METRICS_PORT=%d", ops_proc_port);
    snprintf(ops_hand_env, sizeof(ops_hand_env), "METRICS_PORT=%d", ops_hand_port);
    struct stack_settings set = {.processor = ops_proc_list, .handler = ops_hand_list};
    return stack_start(&ops_stack, "ops", "ops:", &set);
}

static int ops_teardown(void **state)
{
    (void)state;
    return stack_stop(&ops_stack);
}

static void test_ops_version(void **state)
{
    (void)state;
    static const char *const progs[] = {"chatq-api", "chatq-processor", "chatq-handler",
                                        "chatq-fake-upstream"};
    char dir[PATH_MAX - 64], want[128];
    CHECK(harness_subdir("ops", dir, sizeof(dir)) == 0, "no log dir");
    for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
        char bin[PATH_MAX], log[PATH_MAX];
        CHECK(harness_bin(progs[i], bin, sizeof(bin)) == 0, "no binary %s", progs[i]);
        snprintf(log, sizeof(log), "%s/version-%s.log", dir, progs[i]);
        char *argv[] = {bin, "--version", NULL};
        struct proc *p = proc_start(progs[i], log, argv, NULL, PROC_CLEAN);
        CHECK(p != NULL, "cannot start %s", progs[i]);
        int status = -1;
        int done = proc_wait(p, harness_timeout(10000), &status) == 0;
        proc_free(p);
        CHECK(done && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "%s --version did not exit 0", progs[i]);
        snprintf(want, sizeof(want), "%s %s\n", progs[i], CHATQ_VERSION);
        CHECK(harness_file_contains(log, want) == 1, "%s --version did not print '%s'",
              progs[i], want);
    }
}

/* GET url: the status (0: no answer) and, for JSON, status and reason members. */
struct ops_probe {
    long status;
    char state[32], reason[256], version[32];
};

static void ops_get(const char *url, struct ops_probe *out)
{
    struct http_response r;
    memset(out, 0, sizeof(*out));
    if (http_request("GET", url, NULL, 0, OPS_PROBE_MS, &r) == 0) {
        out->status = r.status;
        json_t *body = http_json(&r);
        snprintf(out->state, sizeof(out->state), "%s",
                 STR(http_json_str(body, "status")));
        snprintf(out->reason, sizeof(out->reason), "%s",
                 STR(http_json_str(body, "reason")));
        snprintf(out->version, sizeof(out->version), "%s",
                 STR(http_json_str(body, "version")));
        json_decref(body);
    }
    http_response_free(&r);
}

/* The three binaries' probe bases. */
static void ops_bases(char bases[3][64])
{
    snprintf(bases[0], 64, "%s", ops_stack.api_url);
    snprintf(bases[1], 64, "http://127.0.0.1:%d", ops_proc_port);
    snprintf(bases[2], 64, "http://127.0.0.1:%d", ops_hand_port);
}

struct ops_wait {
    long want;      /* /readyz status every binary must answer */
    char last[512]; /* what did not, for the message */
};

static int ops_check_ready(void *arg)
{
    struct ops_wait *w = arg;
    char bases[3][64], url[128];
    ops_bases(bases);
    for (int i = 0; i < 3; i++) {
        struct ops_probe p;
        snprintf(url, sizeof(url), "%.63s/readyz", bases[i]);
        ops_get(url, &p);
        if (p.status != w->want) {
            snprintf(w->last, sizeof(w->last), "%s answered %ld (%s)", url, p.status,
                     p.reason);
            return 0;
        }
        if (w->want == 503 && strlen(p.reason) == 0) {
            snprintf(w->last, sizeof(w->last), "%s gave no reason", url);
            return 0;
        }
    }
    return 1;
}

/* /healthz answers 200 with the version on all three. */
static void ops_assert_alive(const char *when)
{
    char bases[3][64], url[128];
    ops_bases(bases);
    for (int i = 0; i < 3; i++) {
        struct ops_probe p;
        snprintf(url, sizeof(url), "%.63s/healthz", bases[i]);
        ops_get(url, &p);
        CHECK(p.status == 200 && strcmp(p.version, CHATQ_VERSION) == 0,
              "%s: GET %s answered %ld version '%s', want 200 and %s", when, url,
              p.status, p.version, CHATQ_VERSION);
    }
}

static void test_ops_probes_follow_redis(void **state)
{
    (void)state;
    struct stack *s = &ops_stack;
    struct ops_wait w = {.want = 200};

    ops_assert_alive("Redis up");
    CHECK(harness_poll(harness_timeout(OPS_FOLLOW_MS), 100, ops_check_ready, &w) == 0,
          "with Redis up, not every /readyz is 200: %s", w.last);

    CHECK(stack_redis_stop(s) == 0, "redis-server did not stop");
    w.want = 503;
    int down = harness_poll(harness_timeout(OPS_FOLLOW_MS), 100, ops_check_ready, &w);
    /* The probes answer while Redis is gone: liveness is not readiness. */
    if (down == 0)
        ops_assert_alive("Redis down");
    int up = stack_redis_start(s);
    CHECK(down == 0, "with Redis stopped, not every /readyz turned 503: %s", w.last);
    CHECK(up == 0, "redis-server did not start again");

    w.want = 200;
    CHECK(harness_poll(harness_timeout(OPS_FOLLOW_MS), 100, ops_check_ready, &w) == 0,
          "with Redis back, not every /readyz returned to 200: %s", w.last);
    ops_assert_alive("Redis back");

    /* And the api's /health is as it was. */
    char url[128];
    struct ops_probe p;
    ops_get(stack_url(s, "/health", url, sizeof(url)), &p);
    CHECK(p.status == 200 && strcmp(p.state, "ok") == 0, "GET /health answered %ld",
          p.status);
}

/* ---- Prometheus ----------------------------------------------------------------- */

#define OPS_CHATS 12
#define OPS_SCRAPE_MS 60000

/* Fetches url's /metrics into <dir>/<name>.prom and runs promtool check metrics on
 * it (the exposition parses, and follows the naming conventions). */
static void ops_promtool(const char *dir, const char *name, const char base[64])
{
    char url[256], file[PATH_MAX - 64], cmd[2 * PATH_MAX];
    struct http_response r;
    snprintf(url, sizeof(url), "%.63s/metrics", base);
    CHECK(http_request("GET", url, NULL, 0, OPS_PROBE_MS, &r) == 0 && r.status == 200,
          "GET %s answered %ld", url, r.status);
    snprintf(file, sizeof(file), "%s/%s.prom", dir, name);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL, "cannot write %s", file);
    fwrite(r.body, 1, r.body_len, f);
    fclose(f);
    int text = strncmp(r.content_type, "text/plain; version=0.0.4", 25) == 0;
    http_response_free(&r);
    CHECK(text, "%s is not served as text/plain; version=0.0.4", url);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s > %s.check 2>&1", file, file);
    int rc = system(cmd);
    CHECK(rc == 0, "promtool check metrics failed on %s's /metrics: see %s.check", name,
          file);
}

/* GET /api/v1/<path> of the Prometheus server: its "data" member (new), or NULL. */
static json_t *ops_prom_api(int port, const char *path)
{
    char url[512];
    struct http_response r;
    json_t *data = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v1/%s", port, path);
    if (http_request("GET", url, NULL, 0, OPS_PROBE_MS, &r) == 0 && r.status == 200) {
        json_t *body = json_loads(r.body, 0, NULL);
        data = json_incref(json_object_get(body, "data"));
        json_decref(body);
    }
    http_response_free(&r);
    return data;
}

struct ops_prom {
    int port;
    int up;       /* targets with health "up" */
    double value; /* the query's value, when found */
    const char *query;
    double want; /* -1: any value */
};

static int ops_check_targets(void *arg)
{
    struct ops_prom *pr = arg;
    json_t *data = ops_prom_api(pr->port, "targets?state=active");
    json_t *list = json_object_get(data, "activeTargets"), *t;
    size_t i;
    pr->up = 0;
    json_array_foreach (list, i, t) {
        const char *health = json_string_value(json_object_get(t, "health"));
        if (health != NULL && strcmp(health, "up") == 0)
            pr->up++;
    }
    json_decref(data);
    return pr->up == 3;
}

/* 1 once the instant query has a sample (equal to want unless want < 0). */
static int ops_check_query(void *arg)
{
    struct ops_prom *pr = arg;
    char path[256];
    snprintf(path, sizeof(path), "query?query=%s", pr->query);
    json_t *data = ops_prom_api(pr->port, path);
    json_t *first = json_array_get(json_object_get(data, "result"), 0);
    const char *v = json_string_value(json_array_get(json_object_get(first, "value"), 1));
    int found = v != NULL;
    if (found)
        pr->value = atof(v);
    json_decref(data);
    return found && (pr->want < 0 || pr->value == pr->want);
}

static void test_ops_prometheus_scrapes_every_binary(void **state)
{
    (void)state;
    struct stack *s = &ops_stack;
    char dir[PATH_MAX - 256], bases[3][64];
    CHECK(harness_subdir("ops", dir, sizeof(dir)) == 0, "no log dir");
    ops_bases(bases);

    /* The exposition of each binary, as promtool reads it. */
    static const char *const names[] = {"api", "processor", "handler"};
    for (int i = 0; i < 3; i++)
        ops_promtool(dir, names[i], bases[i]);

    /* A real Prometheus scraping all three every second. */
    char conf[PATH_MAX], data[PATH_MAX], log[PATH_MAX], flag[3][PATH_MAX + 32];
    snprintf(conf, sizeof(conf), "%s/prometheus.yml", dir);
    snprintf(data, sizeof(data), "%s/prometheus-data", dir);
    snprintf(log, sizeof(log), "%s/prometheus.log", dir);
    FILE *f = fopen(conf, "w");
    CHECK(f != NULL, "cannot write %s", conf);
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: api\n    static_configs: [{targets: ['127.0.0.1:%d']}]\n"
            "  - job_name: processor\n    static_configs: [{targets: ['127.0.0.1:%d']}]\n"
            "  - job_name: handler\n    static_configs: [{targets: ['127.0.0.1:%d']}]\n",
            s->api_port, ops_proc_port, ops_hand_port);
    fclose(f);
    struct ops_prom pr = {.port = harness_free_port(), .want = -1};
    CHECK(pr.port > 0, "no free port");
    snprintf(flag[0], sizeof(flag[0]), "--config.file=%s", conf);
    snprintf(flag[1], sizeof(flag[1]), "--storage.tsdb.path=%s", data);
    snprintf(flag[2], sizeof(flag[2]), "--web.listen-address=127.0.0.1:%d", pr.port);
    char *argv[] = {"prometheus", flag[0], flag[1], flag[2], NULL};
    struct proc *prom = proc_start("prometheus", log, argv, NULL, 0);
    CHECK(prom != NULL, "cannot start prometheus");

    int up = harness_poll(harness_timeout(OPS_SCRAPE_MS), 200, ops_check_targets, &pr);
    if (up != 0)
        proc_free(prom);
    CHECK(up == 0, "Prometheus sees %d of the 3 targets up; see %s", pr.up, log);

    /* The counter as Prometheus has it before, then after the chats. */
    pr.query = "sum(chatq_processor_chats_completed_total)";
    int seen = harness_poll(harness_timeout(OPS_SCRAPE_MS), 200, ops_check_query, &pr);
    double before = pr.value;
    int sent = 0;
    for (int i = 0; seen == 0 && i < OPS_CHATS; i++) {
        char trace[UUID_LEN + 1];
        if (chat_post(s, "count me", NULL, -1, trace) != 0)
            break;
        json_t *done = chat_wait(s, trace, harness_timeout(30000), NULL);
        const char *status = http_json_str(done, "status");
        sent += status != NULL && strcmp(status, "completed") == 0;
        json_decref(done);
    }
    pr.want = before + OPS_CHATS;
    int rose =
        seen == 0 && sent == OPS_CHATS
            ? harness_poll(harness_timeout(OPS_SCRAPE_MS), 200, ops_check_query, &pr)
            : -1;
    /* And it stays there: the next scrapes count nothing twice. */
    int stayed = 0;
    if (rose == 0) {
        harness_sleep_ms(2500);
        /* A scrape that a loaded host answered late leaves the series briefly
         * without a sample: wait for one, then it must be the same. */
        pr.want = -1;
        stayed = harness_poll(harness_timeout(5000), 200, ops_check_query, &pr) == 0 &&
                 pr.value == before + OPS_CHATS;
    }
    proc_free(prom);
    CHECK(seen == 0, "Prometheus never had chatq_processor_chats_completed_total");
    CHECK(sent == OPS_CHATS, "only %d of %d chats completed", sent, OPS_CHATS);
    CHECK(rose == 0 && stayed,
          "chatq_processor_chats_completed_total went from %g to %g in Prometheus, "
          "want %g",
          before, pr.value, before + OPS_CHATS);
    print_message("Prometheus: 3 targets up, completed %g -> %g\n", before, pr.value);
}

/* ---- what the metrics count ------------------------------------------------------ */

/* The sum of the samples in base's /metrics whose series starts with prefix (a
 * name, or a name and its first labels), or -1 if the scrape failed. */
static double ops_metric(const char *base, const char *prefix)
{
    char url[128];
    struct http_response r;
    double sum = -1;
    snprintf(url, sizeof(url), "%.63s/metrics", base);
    if (http_request("GET", url, NULL, 0, OPS_PROBE_MS, &r) == 0 && r.status == 200) {
        size_t n = strlen(prefix);
        sum = 0;
        for (const char *p = r.body; p != NULL && *p;
             p = strchr(p, '\n'), p = p ? p + 1 : p)
            if (strncmp(p, prefix, n) == 0 &&
                (strchr(" {,}", p[n]) != NULL || prefix[n - 1] == '"'))
                sum += atof(strchr(p, ' ') + 1);
    }
    http_response_free(&r);
    return sum;
}

static const char *const ops_counted[] = {
    "chatq_processor_chats_started_total",
    "chatq_processor_chats_completed_total",
    "chatq_processor_chats_failed_total{code=\"context_length_exceeded\"",
    "chatq_processor_upstream_attempts_total{outcome=\"2xx\"",
    "chatq_processor_upstream_attempts_total{outcome=\"4xx\"",
    "chatq_processor_upstream_attempts_total{outcome=\"5xx\"",
    "chatq_processor_retries_total{cause=\"upstream_unavailable\"",
    "chatq_processor_upstream_duration_seconds_count",
    "chatq_handler_results_written_total",
    "chatq_api_requests_total{route=\"chat\",status=\"202\"",
    "chatq_api_requests_total{route=\"chat_response\",status=\"200\"",
};
/* What one completed chat after a 500, and one failed by a 400, add to each; a
 * negative number is a least (the GETs: chat_wait polls each chat at least once). */
static const double ops_counted_delta[] = {2, 1, 1, 1, 1, 1, 1, 3, 2, 2, -2};

static void test_ops_metrics_count_what_happened(void **state)
{
    (void)state;
    struct stack *s = &ops_stack;
    char bases[3][64];
    const size_t n = sizeof(ops_counted) / sizeof(ops_counted[0]);
    double before[sizeof(ops_counted) / sizeof(ops_counted[0])];
    ops_bases(bases);
    /* Which binary serves each: by its name. */
    const char *base_of[sizeof(ops_counted) / sizeof(ops_counted[0])];
    for (size_t i = 0; i < n; i++) {
        base_of[i] = strncmp(ops_counted[i], "chatq_api", 9) == 0        ? bases[0]
                     : strncmp(ops_counted[i], "chatq_handler", 13) == 0 ? bases[2]
                                                                         : bases[1];
        before[i] = ops_metric(base_of[i], ops_counted[i]);
        CHECK(before[i] >= 0, "cannot scrape %s", base_of[i]);
    }

    static const char *const messages[] = {"[[fake status=500 times=1]] then fine",
                                           "[[fake status=400]] too long"};
    for (int m = 0; m < 2; m++) {
        char trace[UUID_LEN + 1];
        CHECK(chat_post(s, messages[m], NULL, -1, trace) == 0, "POST /chat failed");
        json_t *done = chat_wait(s, trace, harness_timeout(30000), NULL);
        const char *status = http_json_str(done, "status");
        int ok = status != NULL && strcmp(status, m == 0 ? "completed" : "failed") == 0;
        json_decref(done);
        CHECK(ok, "chat %d did not end %s", m, m == 0 ? "completed" : "failed");
    }
    for (size_t i = 0; i < n; i++) {
        double after = ops_metric(base_of[i], ops_counted[i]);
        double want = ops_counted_delta[i];
        CHECK(want < 0 ? after - before[i] >= -want : after - before[i] == want,
              "%s went from %g to %g, want +%g%s", ops_counted[i], before[i], after,
              want < 0 ? -want : want, want < 0 ? " or more" : "");
    }
    CHECK(ops_metric(bases[1], "chatq_processor_tokens_total{model=\"gpt-3.5-turbo\","
                               "kind=\"prompt\"") > 0,
          "no prompt tokens counted for the default model");
    CHECK(ops_metric(bases[0], "chatq_api_open_connections") >= 1,
          "the api counts no open connection while serving a scrape");
    CHECK(ops_metric(bases[0], "chatq_redis_used_memory_bytes") > 0,
          "the api reports no Redis memory");
}

/* ---- trace ids ------------------------------------------------------------------- */

/* The traceparent W3C Trace Context wants for trace: 00-<32 hex>-<16 hex>-01, the
 * trace id being the UUID without its dashes. Returns the span id part, or NULL. */
static const char *ops_traceparent_span(const char *tp, const char *trace)
{
    char hex[33];
    size_t n = 0;
    for (const char *c = trace; *c && n < 32; c++)
        if (*c != '-')
            hex[n++] = *c;
    hex[n] = '\0';
    if (strlen(tp) != 55 || strncmp(tp, "00-", 3) != 0 || strncmp(tp + 3, hex, 32) != 0 ||
        tp[35] != '-' || strcmp(tp + 52, "-01") != 0)
        return NULL;
    for (int i = 36; i < 52; i++)
        if (!strchr("0123456789abcdef", tp[i]))
            return NULL;
    return tp + 36;
}

static void test_ops_trace_id_everywhere(void **state)
{
    (void)state;
    struct stack *s = &ops_stack;
    const char *body = "{\"message\":\"[[fake status=500 times=1]] trace me\"}";
    char url[256], header[128] = "";
    struct http_response r;

    /* POST: the 202's X-Trace-Id is the traceId of its body. */
    CHECK(http_request("POST", stack_url(s, "/chat", url, sizeof(url)), body,
                       strlen(body), OPS_PROBE_MS, &r) == 0 &&
              r.status == 202,
          "POST /chat answered %ld", r.status);
    json_t *doc = http_json(&r);
    char trace[UUID_LEN + 1];
    snprintf(trace, sizeof(trace), "%s", STR(http_json_str(doc, "traceId")));
    json_decref(doc);
    int has = http_header(&r, "X-Trace-Id", header, sizeof(header));
    http_response_free(&r);
    CHECK(has && strcmp(header, trace) == 0, "the 202 has X-Trace-Id '%s', want '%s'",
          header, trace);

    json_t *done = chat_wait(s, trace, harness_timeout(30000), NULL);
    const char *status = http_json_str(done, "status");
    int completed = status != NULL && strcmp(status, "completed") == 0;
    json_decref(done);
    CHECK(completed, "the chat did not complete");

    /* GET: the same header. */
    char path[128];
    snprintf(path, sizeof(path), "/chat/%s/response", trace);
    CHECK(http_request("GET", stack_url(s, path, url, sizeof(url)), NULL, 0, OPS_PROBE_MS,
                       &r) == 0 &&
              r.status == 200,
          "GET %s answered %ld", path, r.status);
    has = http_header(&r, "X-Trace-Id", header, sizeof(header));
    http_response_free(&r);
    CHECK(has && strcmp(header, trace) == 0, "the GET has X-Trace-Id '%s', want '%s'",
          header, trace);

    /* The upstream got both attempts (a 500, then the answer) with the trace id as
     * X-Request-Id and in a traceparent, a span of its own per attempt. */
    json_t *stats = stack_fake_stats(s);
    json_t *recent = json_object_get(stats, "recent"), *seen;
    size_t i;
    int attempts = 0;
    char spans[2][17] = {"", ""}, bad[128] = "";
    json_array_foreach (recent, i, seen) {
        const char *rid = json_string_value(json_object_get(seen, "x_request_id"));
        const char *tp = json_string_value(json_object_get(seen, "traceparent"));
        if (rid == NULL || strcmp(rid, trace) != 0)
            continue;
        const char *span = ops_traceparent_span(STR(tp), trace);
        if (span == NULL)
            snprintf(bad, sizeof(bad), "%s", STR(tp));
        else if (attempts < 2)
            snprintf(spans[attempts], sizeof(spans[attempts]), "%.16s", span);
        attempts++;
    }
    json_decref(stats);
    CHECK(attempts == 2, "the upstream saw X-Request-Id %s on %d calls, want 2", trace,
          attempts);
    CHECK(bad[0] == '\0', "traceparent '%s' is not 00-<trace id>-<span>-01", bad);
    CHECK(strcmp(spans[0], spans[1]) != 0, "both attempts had the span %s", spans[0]);
}

/* ---- logs ------------------------------------------------------------------------ */

/* A model name that tries to close its quotes, add fields and start a line of its
 * own that looks like an error from the handler. */
#define OPS_FORGED_LINE "2020-01-01T00:00:00.000Z ERROR chatq-handler forged=1"
static const char ops_evil_model[] =
    "gpt\" level=ERROR trace=forged \\ x=\"y\n" OPS_FORGED_LINE " {\"forged\":1}";

/* The logfmt fields of line (key=value, key="value" with \", \\, \n, \t, \r
 * undone); bare words skipped. Returns how many, at most max. */
struct ops_field {
    char key[32];
    char value[1024];
};

static size_t ops_logfmt(const char *line, struct ops_field *out, size_t max)
{
    size_t n = 0;
    const char *p = line;
    while (*p && n < max) {
        while (*p == ' ')
            p++;
        const char *k = p;
        while (*p && *p != ' ' && *p != '=' && *p != '"')
            p++;
        if (*p != '=') {
            while (*p && *p != ' ')
                p++;
            continue;
        }
        struct ops_field *f = &out[n++];
        size_t kl =
            (size_t)(p - k) < sizeof(f->key) ? (size_t)(p - k) : sizeof(f->key) - 1;
        memcpy(f->key, k, kl);
        f->key[kl] = '\0';
        p++;
        size_t o = 0;
        int quoted = *p == '"';
        p += quoted;
        while (*p && (quoted ? *p != '"' : *p != ' ')) {
            char c = *p;
            if (quoted && c == '\\' && p[1]) {
                p++;
                c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'r' ? '\r' : *p;
            }
            if (o < sizeof(f->value) - 1)
                f->value[o++] = c;
            p++;
        }
        f->value[o] = '\0';
        if (quoted && *p == '"')
            p++;
    }
    return n;
}

/* The log file at path, read whole (new), or NULL. */
static char *ops_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0;
    if (f == NULL)
        return NULL;
    FILE *m = open_memstream(&buf, &cap);
    char chunk[4096];
    size_t n;
    while (m != NULL && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    if (m != NULL)
        fclose(m);
    fclose(f);
    return buf;
}

struct ops_logs {
    const char *trace;
    int json_found, json_bad_lines, json_forged, json_model_ok;
    int fmt_found, fmt_bad, fmt_forged_line;
    char why[256];
};

/* Reads both logs; 1 once the chat's completion line is in each. */
static int ops_check_logs(void *arg)
{
    struct ops_logs *l = arg;
    char *hand = ops_slurp(ops_stack.handler->log);
    char *proc = ops_slurp(ops_stack.processor->log);
    int done = 0;
    memset(&l->json_found, 0, sizeof(*l) - offsetof(struct ops_logs, json_found));
    if (hand == NULL || proc == NULL)
        goto out;

    /* The handler's JSON: every line one object; the chat's completion line has
     * the trace, the event and the model exactly as sent. */
    for (char *line = strtok(hand, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        json_t *o = json_loads(line, 0, NULL);
        if (!json_is_object(o)) {
            l->json_bad_lines++;
            snprintf(l->why, sizeof(l->why), "not a JSON object: %.200s", line);
        } else {
            l->json_forged += json_object_get(o, "forged") != NULL;
            const char *t = json_string_value(json_object_get(o, "trace"));
            const char *ev = json_string_value(json_object_get(o, "event"));
            const char *model = json_string_value(json_object_get(o, "model"));
            if (t != NULL && strcmp(t, l->trace) == 0 && ev != NULL &&
                strcmp(ev, "completed") == 0) {
                l->json_found = 1;
                l->json_model_ok = model != NULL && strcmp(model, ops_evil_model) == 0;
            }
        }
        json_decref(o);
    }

    /* The processor's logfmt: the chat's lines carry its trace once, the model
     * comes back whole from its quotes, and no line is the forged one. */
    char want[64];
    snprintf(want, sizeof(want), "trace=%s ", l->trace);
    for (char *line = strtok(proc, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strncmp(line, OPS_FORGED_LINE, 24) == 0)
            l->fmt_forged_line = 1;
        if (strstr(line, want) == NULL || strstr(line, "event=completed") == NULL)
            continue;
        struct ops_field f[24];
        size_t n = ops_logfmt(line, f, 24);
        int traces = 0, levels = 0, model_ok = 0;
        for (size_t i = 0; i < n; i++) {
            traces += strcmp(f[i].key, "trace") == 0;
            levels += strcmp(f[i].key, "level") == 0 || strcmp(f[i].key, "forged") == 0;
            model_ok |=
                strcmp(f[i].key, "model") == 0 && strcmp(f[i].value, ops_evil_model) == 0;
        }
        l->fmt_found = 1;
        if (traces != 1 || levels != 0 || !model_ok) {
            l->fmt_bad = 1;
            snprintf(l->why, sizeof(l->why), "forged or broken: %.200s", line);
        }
    }
    done = l->json_found && l->fmt_found;
out:
    free(hand);
    free(proc);
    return done;
}

static void test_ops_logs_carry_trace_unforgeable(void **state)
{
    (void)state;
    struct stack *s = &ops_stack;
    char trace[UUID_LEN + 1];
    CHECK(chat_post(s, "quotes \" and = signs\nand a \\ newline", ops_evil_model, -1,
                    trace) == 0,
          "POST /chat failed");
    json_t *done = chat_wait(s, trace, harness_timeout(30000), NULL);
    const char *status = http_json_str(done, "status");
    int completed = status != NULL && strcmp(status, "completed") == 0;
    json_decref(done);
    CHECK(completed, "the chat did not complete");

    struct ops_logs l = {.trace = trace};
    int seen = harness_poll(harness_timeout(10000), 100, ops_check_logs, &l);
    CHECK(seen == 0,
          "no completion line with trace %s: handler (json) %d, processor "
          "(logfmt) %d",
          trace, l.json_found, l.fmt_found);
    CHECK(l.json_bad_lines == 0, "the handler's JSON log has %d bad lines: %s",
          l.json_bad_lines, l.why);
    CHECK(l.json_forged == 0 && l.json_model_ok,
          "the handler's JSON line forged a member or lost the model");
    CHECK(!l.fmt_bad && !l.fmt_forged_line, "the processor's logfmt log: %s%s", l.why,
          l.fmt_forged_line ? " (the forged line is there)" : "");
}

static const struct CMUnitTest ops_tests[] = {
    cmocka_unit_test(test_ops_version),
    cmocka_unit_test(test_ops_prometheus_scrapes_every_binary),
    cmocka_unit_test(test_ops_metrics_count_what_happened),
    cmocka_unit_test(test_ops_trace_id_everywhere),
    cmocka_unit_test(test_ops_logs_carry_trace_unforgeable),
    cmocka_unit_test(test_ops_probes_follow_redis),
};

const struct suite_group suite_ops = {
    "ops", ops_tests, sizeof(ops_tests) / sizeof(ops_tests[0]), ops_setup, ops_teardown};
