/* test_lifecycle.c - how our binaries end, and how they are deployed: SIGTERM
 * makes each of them (the fake upstream too) exit 0 within its grace period (after real
 * work, so the sanitizers' exit-time checks see a used process), and the docker compose
 * file at the repo root is valid. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define LIFE_GRACE_MS 2000
#define LIFE_EXIT_SLACK_MS 1500
#define LIFE_CHAT_MS 20000
#define LIFE_COMPOSE_MS 60000

static struct stack life_stack;

static const char *const life_processor_env[] = {"SHUTDOWN_GRACE_MS=2000",
                                                 "UPSTREAM_TIMEOUT_MS=1000",
                                                 "UPSTREAM_MAX_ATTEMPTS=2", NULL};

static int life_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.processor = life_processor_env};
    return stack_start(&life_stack, "lifecycle", "t4:", &set);
}

static int life_teardown(void **state)
{
    (void)state;
    return stack_stop(&life_stack);
}

static int life_check_in_flight(void *arg)
{
    json_t *st = stack_fake_stats(arg);
    long long n = stack_stat(st, "in_flight", 0);
    json_decref(st);
    return n >= 1;
}

/* SIGTERM p; it must exit 0 within limit_ms. */
static void life_term(struct proc **pp, int limit_ms)
{
    struct proc *p = *pp;
    char how[64];
    int status = 0;
    CHECK(p != NULL && proc_alive(p), "%s is not running before SIGTERM",
          p != NULL ? p->name : "?");
    long long t0 = harness_now_ms();
    CHECK(proc_signal(p, SIGTERM) == 0, "cannot signal %s", p->name);
    int rc = proc_wait(p, harness_timeout(limit_ms), &status);
    CHECK(rc == 0, "%s still running %d ms after SIGTERM", p->name,
          harness_timeout(limit_ms));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "%s %s on SIGTERM after %lld ms, want exit 0; see %s", p->name,
          proc_describe(status, how, sizeof(how)), harness_now_ms() - t0, p->log);
    proc_free(p);
    *pp = NULL;
}

static void test_sigterm_exits_zero(void **state)
{
    (void)state;
    struct stack *s = &life_stack;
    char ok[UUID_LEN + 1], bad[UUID_LEN + 1], slow[UUID_LEN + 1];

    /* Real work first: a success and a failure went through every binary. */
    CHECK(chat_post(s, "one for the road", NULL, -1, ok) == 0, "POST failed");
    CHECK(chat_post(s, "[[fake status=401]] and one that fails", NULL, -1, bad) == 0,
          "POST failed");
    json_t *a = chat_wait(s, ok, LIFE_CHAT_MS, NULL);
    json_t *b = chat_wait(s, bad, LIFE_CHAT_MS, NULL);
    CHECK(a != NULL && b != NULL, "the chats before shutdown did not finish");
    json_decref(a);
    json_decref(b);

    /* And one still at the upstream when the processor is told to stop. */
    CHECK(chat_post(s, "[[fake latency=500]] in flight at shutdown", NULL, -1, slow) == 0,
          "POST failed");
    CHECK(harness_poll(harness_timeout(5000), 10, life_check_in_flight, s) == 0,
          "the slow chat never reached the upstream");
    life_term(&s->processor, LIFE_GRACE_MS + LIFE_EXIT_SLACK_MS);
    /* The grace period is there to finish such work, and the handler is still up. */
    json_t *c = chat_wait(s, slow, LIFE_CHAT_MS, NULL);
    CHECK(
        c != NULL && strcmp(STR(http_json_str(c, "status")), "completed") == 0,
        "the chat in flight at SIGTERM ended %s, want completed within the grace period",
        c != NULL ? STR(http_json_str(c, "status")) : "(not at all)");
    json_decref(c);
    life_term(&s->handler, LIFE_GRACE_MS + LIFE_EXIT_SLACK_MS);
    life_term(&s->api, LIFE_GRACE_MS + LIFE_EXIT_SLACK_MS);
    life_term(&s->fake, LIFE_GRACE_MS + LIFE_EXIT_SLACK_MS);
}

/* An upstream that never answers must not leave a chat processing forever:
 * after UPSTREAM_MAX_ATTEMPTS timeouts of UPSTREAM_TIMEOUT_MS it fails. */
static void test_hung_upstream_times_out(void **state)
{
    (void)state;
    char trace[UUID_LEN + 1];
    long long t0 = harness_now_ms(), done_ms;
    CHECK(chat_post(&life_stack, "[[fake hang]] nobody home", NULL, -1, trace) == 0,
          "POST failed");
    json_t *j = chat_wait(&life_stack, trace, LIFE_CHAT_MS, &done_ms);
    CHECK(j != NULL, "a chat to a hung upstream never finished");
    CHECK(strcmp(STR(http_json_str(j, "status")), "failed") == 0 &&
              strcmp(STR(http_error_code(j)), "upstream_timeout") == 0,
          "a chat to a hung upstream ended %s (%s), want failed with upstream_timeout",
          STR(http_json_str(j, "status")), STR(http_error_code(j)));
    json_decref(j);
    /* 2 attempts of 1 s and a short backoff; well under the chat wait. */
    CHECK(done_ms - t0 >= 2000,
          "failed after %lld ms: the 1000 ms timeout was not waited "
          "for twice",
          done_ms - t0);
}

/* 1 if prog is an executable in one of PATH's directories. */
static int life_on_path(const char *prog)
{
    const char *path = getenv("PATH");
    char *copy = path != NULL ? strdup(path) : NULL;
    char *save = NULL, file[4096];
    int found = 0;
    for (char *d = copy != NULL ? strtok_r(copy, ":", &save) : NULL; d != NULL && !found;
         d = strtok_r(NULL, ":", &save)) {
        snprintf(file, sizeof(file), "%s/%s", d, prog);
        found = access(file, X_OK) == 0;
    }
    free(copy);
    return found;
}

static void test_compose_config(void **state)
{
    (void)state;
    char dir[4096], log[4200], how[64];
    int status = 0;

    if (!life_on_path("docker-compose")) {
        print_message("docker-compose is not on PATH: skipped\n");
        skip();
    }
    CHECK(access("docker-compose.yml", R_OK) == 0,
          "docker-compose.yml is not at the repo root (run from there)");
    CHECK(harness_subdir("compose", dir, sizeof(dir)) == 0, "mkdir");
    snprintf(log, sizeof(log), "%s/docker-compose.log", dir);
    char *argv[] = {"docker-compose", "-f", "docker-compose.yml", "config", "-q", NULL};
    struct proc *p = proc_start("docker-compose", log, argv, NULL, 0);
    CHECK(p != NULL, "cannot start docker-compose");
    int rc = proc_wait(p, LIFE_COMPOSE_MS, &status);
    if (rc != 0)
        proc_stop(p);
    proc_free(p);
    if (rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        harness_dump_logs(dir, 30);
    CHECK(rc == 0, "docker-compose config still running after %d ms", LIFE_COMPOSE_MS);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "docker-compose -f docker-compose.yml config -q %s",
          proc_describe(status, how, sizeof(how)));
}

static const struct CMUnitTest life_tests[] = {
    cmocka_unit_test(test_hung_upstream_times_out),
    cmocka_unit_test(test_sigterm_exits_zero),
    cmocka_unit_test(test_compose_config),
};

const struct suite_group suite_lifecycle = {"lifecycle", life_tests,
                                            sizeof(life_tests) / sizeof(life_tests[0]),
                                            life_setup, life_teardown};
