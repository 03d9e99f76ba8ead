/* test_ops.c - what an operator's tools see: every binary's --version, and the
 * probes (/healthz, /readyz) of the api on its port and of the processor and
 * the handler on METRICS_PORT, following Redis going away and coming back. */
#include <limits.h>
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
static const char *ops_proc_list[] = {ops_proc_env, NULL};
static const char *ops_hand_list[] = {ops_hand_env, NULL};

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
        snprintf(url, sizeof(url), "%s/readyz", bases[i]);
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
        snprintf(url, sizeof(url), "%s/healthz", bases[i]);
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

static const struct CMUnitTest ops_tests[] = {
    cmocka_unit_test(test_ops_version),
    cmocka_unit_test(test_ops_probes_follow_redis),
};

const struct suite_group suite_ops = {
    "ops", ops_tests, sizeof(ops_tests) / sizeof(ops_tests[0]), ops_setup, ops_teardown};
