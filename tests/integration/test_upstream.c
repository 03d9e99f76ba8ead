/* test_upstream.c - what a client sees when the upstream misbehaves: a 429 that
 * is retried after its Retry-After, a persistent 5xx that exhausts the attempts,
 * a 401 that fails at once (and never leaks the API key anywhere), and a 200
 * whose body is not JSON. The fake upstream is scripted by [[fake ...]] in the
 * message; its /stats tell how many attempts really reached it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define UP_CHAT_MS 20000
#define UP_MAX_ATTEMPTS 3

static struct stack up_stack;

#define UP_CONCURRENCY 4

static const char *const up_processor_env[] = {
    "UPSTREAM_MAX_ATTEMPTS=3", "RETRY_BASE_MS=50",        "RETRY_MAX_MS=200",
    "RETRY_AFTER_MAX_MS=3000", "PROCESSOR_CONCURRENCY=4", NULL};

static int up_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.processor = up_processor_env};
    return stack_start(&up_stack, "upstream", "t2:", &set);
}

static int up_teardown(void **state)
{
    (void)state;
    return stack_stop(&up_stack);
}

/* What the fake counted so far: all chat requests, and those answered status. */
struct up_count {
    long long requests;
    long long with_status;
};

static struct up_count up_counts(int status)
{
    struct up_count c;
    json_t *st = stack_fake_stats(&up_stack);
    CHECK(st != NULL, "GET /stats of the fake upstream failed");
    c.requests = stack_stat(st, "requests", 0);
    c.with_status = stack_stat(st, NULL, status);
    json_decref(st);
    return c;
}

/* Posts message and waits for it to fail with code; returns the final body (new). */
static json_t *up_expect_failed(const char *message, const char *code)
{
    char trace[UUID_LEN + 1];
    CHECK(chat_post(&up_stack, message, NULL, -1, trace) == 0, "POST \"%s\" failed",
          message);
    json_t *j = chat_wait(&up_stack, trace, UP_CHAT_MS, NULL);
    CHECK(j != NULL, "chat \"%s\" did not finish", message);
    const char *st = http_json_str(j, "status");
    CHECK(strcmp(STR(st), "failed") == 0, "chat \"%s\" ended %s, want failed", message,
          STR(st));
    CHECK(strcmp(STR(http_json_str(j, "traceId")), trace) == 0, "traceId %s, want %s",
          STR(http_json_str(j, "traceId")), trace);
    CHECK(strcmp(STR(http_error_code(j)), code) == 0,
          "chat \"%s\": error.code %s, want %s", message, STR(http_error_code(j)), code);
    const char *msg = http_error_message(j);
    CHECK(msg != NULL && msg[0] != '\0', "chat \"%s\": error.message is empty", message);
    CHECK(http_is_iso8601_utc(http_json_str(j, "timestamp")),
          "timestamp \"%s\" is not ISO-8601 UTC", STR(http_json_str(j, "timestamp")));
    CHECK(json_object_get(j, "response") == NULL, "a failed chat carries a response");
    /* A failed record expires like a completed one. */
    char key[KEYS_MAX + UUID_LEN + 1];
    keys_trace(&up_stack.keys, trace, key, sizeof(key));
    redisReply *t = stack_redis(&up_stack, "TTL %s", key);
    CHECK(t != NULL && t->type == REDIS_REPLY_INTEGER && t->integer > 0 &&
              t->integer <= STACK_RESULT_TTL,
          "TTL %s is %lld, want in (0, %d]", key, t != NULL ? t->integer : -99,
          STACK_RESULT_TTL);
    freeReplyObject(t);
    return j;
}

static void test_upstream_429_then_success(void **state)
{
    (void)state;
    const char *msg = "[[fake status=429 retry-after=1 times=1]] please retry me";
    char trace[UUID_LEN + 1], want[256];
    long long done_ms;

    struct up_count b429 = up_counts(429), b200 = up_counts(200);
    long long t0 = harness_now_ms();
    CHECK(chat_post(&up_stack, msg, NULL, -1, trace) == 0, "POST failed");
    json_t *j = chat_wait(&up_stack, trace, UP_CHAT_MS, &done_ms);
    CHECK(j != NULL, "chat did not finish");
    CHECK(strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "ended %s (%s: %s), want completed after one 429",
          STR(http_json_str(j, "status")), STR(http_error_code(j)),
          STR(http_error_message(j)));
    snprintf(want, sizeof(want), "Fake answer to: %s", msg);
    CHECK(strcmp(STR(http_json_str(j, "response")), want) == 0, "response \"%s\"",
          STR(http_json_str(j, "response")));
    json_decref(j);

    struct up_count a429 = up_counts(429), a200 = up_counts(200);
    CHECK(a429.with_status - b429.with_status == 1,
          "the fake answered %lld times 429, want 1",
          a429.with_status - b429.with_status);
    CHECK(a200.with_status - b200.with_status == 1,
          "the fake answered %lld times 200, want 1",
          a200.with_status - b200.with_status);
    /* Retry-After: 1 must be honoured: RETRY_BASE_MS alone would retry in 50 ms. */
    CHECK(done_ms - t0 >= 900,
          "completed %lld ms after POST; Retry-After: 1 was not waited", done_ms - t0);
}

static void test_upstream_persistent_500(void **state)
{
    (void)state;
    struct up_count before = up_counts(500);
    json_t *j =
        up_expect_failed("[[fake status=500]] always broken", "upstream_unavailable");
    json_decref(j);
    struct up_count after = up_counts(500);
    CHECK(after.with_status - before.with_status == UP_MAX_ATTEMPTS,
          "the fake answered 500 %lld times, want UPSTREAM_MAX_ATTEMPTS=%d",
          after.with_status - before.with_status, UP_MAX_ATTEMPTS);
    CHECK(after.requests - before.requests == UP_MAX_ATTEMPTS,
          "the fake got %lld requests, want %d", after.requests - before.requests,
          UP_MAX_ATTEMPTS);
}

/* One attempt is one request. A chat whose every request the upstream hangs up on
 * without a byte, sent on kept-alive connections: libcurl would silently send it
 * again on a fresh connection (it takes a reused connection that died for a stale
 * one), so each attempt reached the upstream twice. */
static void test_upstream_close_is_one_request_per_attempt(void **state)
{
    (void)state;
    char traces[UP_CONCURRENCY][UUID_LEN + 1];

    /* Answers that overlap leave as many idle connections in the pool. */
    for (int i = 0; i < UP_CONCURRENCY; i++)
        CHECK(chat_post(&up_stack, "[[fake latency=300]] warm up", NULL, -1, traces[i]) ==
                  0,
              "POST %d failed", i);
    for (int i = 0; i < UP_CONCURRENCY; i++) {
        json_t *j = chat_wait(&up_stack, traces[i], UP_CHAT_MS, NULL);
        CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
              "warm-up chat %d did not complete", i);
        json_decref(j);
    }
    struct up_count before = up_counts(200);
    json_t *j =
        up_expect_failed("[[fake close]] hang up on me", "upstream_connection_error");
    json_decref(j);
    struct up_count after = up_counts(200);
    CHECK(after.requests - before.requests == UP_MAX_ATTEMPTS,
          "the fake got %lld requests for %d attempts, want one each",
          after.requests - before.requests, UP_MAX_ATTEMPTS);
}

static void test_upstream_garbage(void **state)
{
    (void)state;
    struct up_count before = up_counts(200);
    json_t *j =
        up_expect_failed("[[fake garbage]] give me junk", "upstream_invalid_response");
    json_decref(j);
    struct up_count after = up_counts(200);
    long long n = after.requests - before.requests;
    CHECK(n >= 1 && n <= UP_MAX_ATTEMPTS, "the fake got %lld requests, want 1..%d", n,
          UP_MAX_ATTEMPTS);
}

/* A 200 that is JSON but no chat completion is as unusable as garbage. */
static void test_upstream_no_choices(void **state)
{
    (void)state;
    json_t *j = up_expect_failed("[[fake nochoices]] where are the choices",
                                 "upstream_invalid_response");
    json_decref(j);
}

/* An exhausted quota is not cured by asking again: one attempt, its own code. */
static void test_upstream_quota(void **state)
{
    (void)state;
    struct up_count before = up_counts(429);
    json_t *j =
        up_expect_failed("[[fake status=429 quota]] out of credit", "insufficient_quota");
    json_decref(j);
    struct up_count after = up_counts(429);
    CHECK(after.requests - before.requests == 1,
          "an insufficient_quota 429 was tried %lld times, want once",
          after.requests - before.requests);
}

/* 1 if needle occurs in any string of reply r (recursively). */
static int up_reply_has(const redisReply *r, const char *needle)
{
    if (r == NULL)
        return 0;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        return memmem(r->str, r->len, needle, strlen(needle)) != NULL;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (up_reply_has(r->element[i], needle))
            return 1;
    return 0;
}

/* Looks at every key of the group's Redis: its name and its whole value. Returns
 * 1 and the key in where if needle is found, 0 if not, -1 on error. */
struct up_where {
    const char *needle;
    char *where;
    size_t len;
};

static int up_check_key(const char *key, const char *type, const redisReply *value,
                        void *arg)
{
    struct up_where *w = arg;
    if (strstr(key, w->needle) == NULL && !up_reply_has(value, w->needle))
        return 0;
    snprintf(w->where, w->len, "%s (%s)", key, type);
    return 1;
}

static int up_redis_has(struct stack *s, const char *needle, char *where, size_t len)
{
    struct up_where w = {needle, where, len};
    return stack_redis_each(s, up_check_key, &w);
}

static void test_upstream_invalid_api_key(void **state)
{
    (void)state;
    struct stack *s = &up_stack;
    char where[512];

    struct up_count before = up_counts(401);
    json_t *j = up_expect_failed("[[fake status=401]] who am I", "invalid_api_key");
    struct up_count after = up_counts(401);
    CHECK(after.with_status - before.with_status == 1 &&
              after.requests - before.requests == 1,
          "a 401 was tried %lld times (%lld answered 401), want exactly once",
          after.requests - before.requests, after.with_status - before.with_status);
    /* The fake's own words, not a generic text of ours. */
    CHECK(strstr(STR(http_error_message(j)), "Incorrect API key") != NULL,
          "error.message \"%s\" is not the upstream's", STR(http_error_message(j)));

    /* The key the processor was given must not surface anywhere a user or an
     * operator could read it. */
    char *text = json_dumps(j, JSON_COMPACT);
    CHECK(text != NULL && strstr(text, STACK_API_KEY) == NULL,
          "GET body shows the API key: %s", STR(text));
    free(text);
    json_decref(j);
    int hit = up_redis_has(s, STACK_API_KEY, where, sizeof(where));
    CHECK(hit == 0, "%s", hit < 0 ? "cannot scan Redis" : where);
    struct proc *ours[] = {s->api, s->processor, s->handler};
    for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
        CHECK(harness_file_contains(ours[i]->log, STACK_API_KEY) == 0,
              "the API key \"%s\" is in %s", STACK_API_KEY, ours[i]->log);
}

static int up_check_in_flight(void *arg)
{
    json_t *st = stack_fake_stats(arg);
    long long n = stack_stat(st, "in_flight", 0);
    json_decref(st);
    return n >= 1;
}

/* A chat stuck at a slow upstream must not hold up the ones behind it. */
static void test_slow_chat_does_not_block_fast(void **state)
{
    (void)state;
    char slow[UUID_LEN + 1], fast[UUID_LEN + 1];
    long long done_ms, status;

    CHECK(chat_post(&up_stack, "[[fake latency=4000]] the slow one", NULL, -1, slow) == 0,
          "POST failed");
    CHECK(harness_poll(harness_timeout(5000), 10, up_check_in_flight, &up_stack) == 0,
          "the slow chat never reached the upstream");
    long long t0 = harness_now_ms();
    CHECK(chat_post(&up_stack, "the fast one", NULL, -1, fast) == 0, "POST failed");
    json_t *j = chat_wait(&up_stack, fast, UP_CHAT_MS, &done_ms);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "the fast chat did not complete");
    json_decref(j);
    CHECK(done_ms - t0 < harness_timeout(2000),
          "the fast chat took %lld ms behind a 4000 ms one, want < %d", done_ms - t0,
          harness_timeout(2000));
    long st;
    j = chat_get(&up_stack, slow, &st);
    status = st;
    CHECK(status == 200 && strcmp(STR(http_json_str(j, "status")), "processing") == 0,
          "the slow chat is %s already, want processing",
          STR(http_json_str(j, "status")));
    json_decref(j);
    j = chat_wait(&up_stack, slow, UP_CHAT_MS, NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "the slow chat did not complete");
    json_decref(j);
}

/* PROCESSOR_CONCURRENCY is both used and a limit: with more chats than slots,
 * the upstream sees exactly that many at once, and all of them finish. */
static void test_concurrency_limit(void **state)
{
    (void)state;
    enum { N = 3 * UP_CONCURRENCY };
    char traces[N][UUID_LEN + 1], msg[96], url[128];
    struct http_response r;

    /* max_in_flight restarts from what is in flight now (nothing). */
    snprintf(url, sizeof(url), "%s/stats/reset", up_stack.fake_url);
    CHECK(http_request("POST", url, "{}", 2, 5000, &r) == 0 && r.status == 200,
          "POST /stats/reset of the fake failed: %s", r.error);
    http_response_free(&r);
    for (int i = 0; i < N; i++) {
        snprintf(msg, sizeof(msg), "[[fake latency=300]] in parallel %02d", i);
        CHECK(chat_post(&up_stack, msg, NULL, -1, traces[i]) == 0, "POST %d failed", i);
    }
    for (int i = 0; i < N; i++) {
        json_t *j = chat_wait(&up_stack, traces[i], UP_CHAT_MS, NULL);
        CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
              "chat %d did not complete", i);
        json_decref(j);
    }
    json_t *st = stack_fake_stats(&up_stack);
    long long max = stack_stat(st, "max_in_flight", 0);
    json_decref(st);
    CHECK(max == UP_CONCURRENCY,
          "the upstream saw at most %lld requests at once, want PROCESSOR_CONCURRENCY=%d",
          max, UP_CONCURRENCY);
}

static void test_upstream_streams_drained(void **state)
{
    (void)state;
    char why[256];
    CHECK(stack_drained(&up_stack, 10000, why, sizeof(why)) == 0,
          "after the failures above: %s", why);
}

static const struct CMUnitTest up_tests[] = {
    cmocka_unit_test(test_upstream_429_then_success),
    cmocka_unit_test(test_upstream_persistent_500),
    cmocka_unit_test(test_upstream_close_is_one_request_per_attempt),
    cmocka_unit_test(test_upstream_invalid_api_key),
    cmocka_unit_test(test_upstream_garbage),
    cmocka_unit_test(test_upstream_no_choices),
    cmocka_unit_test(test_upstream_quota),
    cmocka_unit_test(test_slow_chat_does_not_block_fast),
    cmocka_unit_test(test_concurrency_limit),
    cmocka_unit_test(test_upstream_streams_drained),
};

const struct suite_group suite_upstream = {
    "upstream", up_tests, sizeof(up_tests) / sizeof(up_tests[0]), up_setup, up_teardown};
