/* test_push.c - results pushed rather than polled: the long-poll
 * (GET /chat/{traceId}/response?wait=SECONDS) and the event stream
 * (GET /chat/{traceId}/events, server-sent events).
 *
 * A long-poll answers as soon as the chat is final (compared with the record's own
 * completion timestamp), answers processing when its wait runs out, refuses a bad
 * wait, answers a finished chat at once, and never hangs across an api restart;
 * past WAIT_THREADS waiting clients a wait answers at once while POSTs go on. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "harness.h"
#include "stack.h"
#include "suite.h"

#define PUSH_WAIT_THREADS 4

static struct stack push_stack;

static const char *const push_api_env[] = {"WAIT_THREADS=4", "WAIT_MAX_SECONDS=30",
                                           "EVENTS_HEARTBEAT_MS=300", NULL};

static int push_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.api = push_api_env};
    return stack_start(&push_stack, "push", "t12p:", &set);
}

static int push_teardown(void **state)
{
    (void)state;
    return stack_stop(&push_stack);
}

/* "2025-08-19T17:45:00.123Z" as Unix ms, or -1. */
static long long push_iso_ms(const char *s)
{
    struct tm tm;
    int ms = 0;
    memset(&tm, 0, sizeof(tm));
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
                            &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm) * 1000 + ms;
}

/* GET /chat/{trace}/response with query (e.g. "?wait=5"). 0 or -1 as http_request. */
static int push_get(struct stack *s, const char *trace, const char *query, int timeout_ms,
                    struct http_response *r)
{
    char path[256], url[512];
    snprintf(path, sizeof(path), "/chat/%s/response%s", trace, query);
    return http_request("GET", stack_url(s, path, url, sizeof(url)), NULL, 0, timeout_ms,
                        r);
}

/* Status string of a JSON body (copied into out), "" if none. */
static void push_status(const struct http_response *r, char *out, size_t len)
{
    json_t *j = r->status != 0 ? http_json(r) : NULL;
    snprintf(out, len, "%s",
             j != NULL && http_json_str(j, "status") ? http_json_str(j, "status") : "");
    json_decref(j);
}

static int push_cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* A long-poll on a chat that takes 700 ms answers when it completes: the answer
 * arrives within 50 ms (median of three) of the completion timestamp the record
 * itself carries. */
static void push_longpoll_prompt(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    long long lag[3];
    for (int i = 0; i < 3; i++) {
        char trace[UUID_LEN + 1], msg[64], st[32];
        struct http_response r;
        snprintf(msg, sizeof(msg), "[[fake latency=700]] long-poll %d", i);
        CHECK(chat_post(s, msg, NULL, -1, trace) == 0, "POST failed");
        int rc = push_get(s, trace, "?wait=20", 25000, &r);
        long long now = clock_now_ms();
        CHECK(rc == 0 && r.status == 200, "long-poll: %ld %s", r.status, r.error);
        json_t *j = http_json(&r);
        const char *ts = j != NULL ? http_json_str(j, "timestamp") : NULL;
        snprintf(st, sizeof(st), "%s", j != NULL ? STR(http_json_str(j, "status")) : "");
        lag[i] = now - push_iso_ms(ts);
        json_decref(j);
        CHECK(strcmp(st, "completed") == 0, "long-poll answered %s: %s", st, r.body);
        CHECK(r.elapsed_ms >= 500, "answered after %lld ms, before the chat ended",
              r.elapsed_ms);
        http_response_free(&r);
        print_message("long-poll answered %lld ms after the completion timestamp\n",
                      lag[i]);
    }
    qsort(lag, 3, sizeof(lag[0]), push_cmp_ll);
    CHECK(lag[1] >= 0 && lag[1] <= 50,
          "median answer %lld ms after completion (want <= 50 ms)", lag[1]);
}

/* wait runs out: 200 processing after about the wait; 0 and a finished chat answer at
 * once; a bad wait is a 400; an unknown trace a 404 without waiting. */
static void push_longpoll_timeout(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], st[32];
    struct http_response r;

    CHECK(chat_post(s, "[[fake latency=4000]] slow", NULL, -1, trace) == 0, "POST");
    CHECK(push_get(s, trace, "?wait=1", 10000, &r) == 0 && r.status == 200,
          "wait=1: %ld %s", r.status, r.error);
    push_status(&r, st, sizeof(st));
    CHECK(strcmp(st, "processing") == 0, "wait=1 answered %s", st);
    CHECK(r.elapsed_ms >= 900 && r.elapsed_ms < 3000, "wait=1 took %lld ms",
          r.elapsed_ms);
    http_response_free(&r);

    CHECK(push_get(s, trace, "?wait=0", 10000, &r) == 0 && r.status == 200, "wait=0");
    push_status(&r, st, sizeof(st));
    CHECK(strcmp(st, "processing") == 0 && r.elapsed_ms < 900, "wait=0: %s after %lld ms",
          st, r.elapsed_ms);
    http_response_free(&r);

    static const char *const bad[] = {"?wait=abc", "?wait=-1", "?wait=1.5",
                                      "?wait=", "?wait=1e3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(push_get(s, trace, bad[i], 10000, &r) == 0, "%s: %s", bad[i], r.error);
        json_t *j = http_json(&r);
        const char *code = http_error_code(j);
        CHECK(r.status == 400 && code != NULL && strcmp(code, "invalid_wait") == 0,
              "%s answered %ld %s", bad[i], r.status, r.body);
        json_decref(j);
        http_response_free(&r);
    }

    json_t *done = chat_wait(s, trace, 20000, NULL);
    CHECK(done != NULL, "the chat did not finish");
    json_decref(done);
    CHECK(push_get(s, trace, "?wait=30", 10000, &r) == 0 && r.status == 200, "done");
    push_status(&r, st, sizeof(st));
    CHECK(strcmp(st, "completed") == 0 && r.elapsed_ms < 900,
          "a finished chat: %s after %lld ms", st, r.elapsed_ms);
    http_response_free(&r);

    CHECK(push_get(s, "3f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b", "?wait=30", 10000, &r) == 0,
          "unknown");
    CHECK(r.status == 404 && r.elapsed_ms < 900, "unknown trace: %ld after %lld ms",
          r.status, r.elapsed_ms);
    http_response_free(&r);
}

/* A long-poll in a thread of its own. */
struct push_poll {
    struct stack *s;
    char trace[UUID_LEN + 1];
    const char *query;
    int timeout_ms;
    int rc;
    long status;
    char st[32];
    long long elapsed_ms;
    pthread_t th;
};

static void *push_poll_run(void *arg)
{
    struct push_poll *p = arg;
    struct http_response r;
    p->rc = push_get(p->s, p->trace, p->query, p->timeout_ms, &r);
    p->status = r.status;
    p->elapsed_ms = r.elapsed_ms;
    push_status(&r, p->st, sizeof(p->st));
    http_response_free(&r);
    return NULL;
}

static int push_poll_start(struct push_poll *p, struct stack *s, const char *trace,
                           const char *query, int timeout_ms)
{
    memset(p, 0, sizeof(*p));
    p->s = s;
    snprintf(p->trace, sizeof(p->trace), "%s", trace);
    p->query = query;
    p->timeout_ms = timeout_ms;
    return pthread_create(&p->th, NULL, push_poll_run, p);
}

/* The api's count of waiting clients is not visible; a waiter is known to wait
 * once its thread has been blocked this long. */
#define PUSH_SETTLE_MS 300

/* The api killed (SIGKILL) under a waiting client: the client gets a connection
 * error at once, not a hang; stopped (SIGTERM): it gets its answer (processing) at
 * once. After the restart a new long-poll gets the completed chat. */
static void push_longpoll_restart(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1];
    struct push_poll p;

    CHECK(chat_post(s, "[[fake latency=5000]] restart", NULL, -1, trace) == 0, "POST");
    CHECK(push_poll_start(&p, s, trace, "?wait=30", 20000) == 0, "thread");
    harness_sleep_ms(PUSH_SETTLE_MS);
    proc_signal(s->api, SIGKILL);
    proc_wait(s->api, 5000, NULL);
    pthread_join(p.th, NULL);
    CHECK(p.rc != 0 && p.elapsed_ms < 5000,
          "after SIGKILL the client got %ld after %lld ms (want a connection error)",
          p.status, p.elapsed_ms);
    CHECK(stack_api_restart(s, "api-2", NULL) == 0, "the api did not start again");

    CHECK(push_poll_start(&p, s, trace, "?wait=30", 20000) == 0, "thread");
    harness_sleep_ms(PUSH_SETTLE_MS);
    proc_signal(s->api, SIGTERM);
    pthread_join(p.th, NULL);
    int status = -1;
    proc_wait(s->api, 10000, &status);
    CHECK(p.rc == 0 && p.status == 200 && strcmp(p.st, "processing") == 0,
          "on SIGTERM the client got rc %d, %ld %s", p.rc, p.status, p.st);
    CHECK(p.elapsed_ms < 3000, "on SIGTERM the client waited %lld ms", p.elapsed_ms);
    CHECK(stack_api_restart(s, "api-3", NULL) == 0, "the api did not start again");

    struct http_response r;
    char st[32];
    CHECK(push_get(s, trace, "?wait=30", 25000, &r) == 0 && r.status == 200,
          "after the restart: %ld %s", r.status, r.error);
    push_status(&r, st, sizeof(st));
    http_response_free(&r);
    CHECK(strcmp(st, "completed") == 0, "after the restart: %s", st);
}

/* WAIT_THREADS (4) clients wait; a fifth long-poll answers at once, and POST and
 * GET are served meanwhile. When the chats end, every waiter gets its answer. */
static void push_wait_cap(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    struct push_poll p[PUSH_WAIT_THREADS];
    char trace[UUID_LEN + 1], other[UUID_LEN + 1], st[32];
    struct http_response r;

    CHECK(chat_post(s, "[[fake latency=3000]] cap", NULL, -1, trace) == 0, "POST");
    for (int i = 0; i < PUSH_WAIT_THREADS; i++)
        CHECK(push_poll_start(&p[i], s, trace, "?wait=30", 20000) == 0, "thread");
    harness_sleep_ms(PUSH_SETTLE_MS);
    int rc = push_get(s, trace, "?wait=30", 10000, &r);
    push_status(&r, st, sizeof(st));
    long long elapsed = r.elapsed_ms;
    long status = r.status;
    http_response_free(&r);
    int posted = chat_post(s, "while they wait", NULL, -1, other);
    for (int i = 0; i < PUSH_WAIT_THREADS; i++)
        pthread_join(p[i].th, NULL);
    CHECK(rc == 0 && status == 200 && strcmp(st, "processing") == 0 && elapsed < 1500,
          "the fifth waiter got %ld %s after %lld ms (want processing at once)", status,
          st, elapsed);
    CHECK(posted == 0, "POST failed while clients waited");
    for (int i = 0; i < PUSH_WAIT_THREADS; i++)
        CHECK(p[i].rc == 0 && strcmp(p[i].st, "completed") == 0, "waiter %d got %ld %s",
              i, p[i].status, p[i].st);
}

static const struct CMUnitTest push_tests[] = {
    cmocka_unit_test(push_longpoll_prompt),
    cmocka_unit_test(push_longpoll_timeout),
    cmocka_unit_test(push_wait_cap),
    cmocka_unit_test(push_longpoll_restart),
};

const struct suite_group suite_push = {"push", push_tests,
                                       sizeof(push_tests) / sizeof(push_tests[0]),
                                       push_setup, push_teardown};
