/* test_fake_limits.c - the fake upstream's rate limiter as a client of the real
 * API meets it: with --rpm 5 the first five requests of a key succeed with
 * x-ratelimit-remaining-requests counting down, the sixth gets OpenAI's 429 with
 * retry-after-ms, and once that time has passed a request succeeds again; keys
 * have budgets of their own; the token budget refuses what does not fit; a 400 is
 * not charged; /stats counts the refusals and POST /stats/reset refills every
 * budget.
 *
 * No stack: only the fake, started with a 10 s window so one request comes back
 * every 2 s. The countdowns below assume a burst of five takes less than that. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "http.h"
#include "proc.h"
#include "suite.h"

#define LIMITS_RPM 5
#define LIMITS_TPM 1000
#define LIMITS_WINDOW_MS 10000
#define LIMITS_TIMEOUT_MS 5000

static struct proc *limits_fake;
static char limits_url[64];

static int limits_check_ready(void *arg)
{
    struct http_response r;
    char url[128];

    (void)arg;
    if (!proc_alive(limits_fake))
        return -1;
    snprintf(url, sizeof(url), "%s/health", limits_url);
    int rc = http_request("GET", url, NULL, 0, 1000, &r);
    int ok = rc == 0 && r.status == 200;
    http_response_free(&r);
    return ok;
}

static int limits_setup(void **state)
{
    char bin[PATH_MAX], dir[PATH_MAX - 64], log[PATH_MAX], port[16], rpm[16], tpm[16],
        window[16];
    int p = harness_free_port();

    (void)state;
    if (p < 0 || harness_bin("chatq-fake-upstream", bin, sizeof(bin)) != 0 ||
        harness_subdir("fake_limits", dir, sizeof(dir)) != 0)
        return -1;
    snprintf(log, sizeof(log), "%s/fake-upstream.log", dir);
    snprintf(port, sizeof(port), "%d", p);
    snprintf(rpm, sizeof(rpm), "%d", LIMITS_RPM);
    snprintf(tpm, sizeof(tpm), "%d", LIMITS_TPM);
    snprintf(window, sizeof(window), "%d", LIMITS_WINDOW_MS);
    snprintf(limits_url, sizeof(limits_url), "http://127.0.0.1:%d", p);
    char *argv[] = {bin,    "--port", port, "--rpm",
                    rpm,    "--tpm",  tpm,  "--limit-window-ms",
                    window, NULL};
    limits_fake = proc_start("fake-upstream", log, argv, NULL, PROC_CLEAN);
    if (limits_fake == NULL)
        return -1;
    if (harness_poll(harness_timeout(10000), 20, limits_check_ready, NULL) != 0) {
        fprintf(stderr, "integration: the fake never answered on %s\n", limits_url);
        return -1;
    }
    return 0;
}

static int limits_teardown(void **state)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:"};
    char how[64];
    int rc = 0, status;

    (void)state;
    if (limits_fake == NULL)
        return 0;
    status = proc_stop(limits_fake);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "integration: the fake %s on SIGTERM; see %s\n",
                proc_describe(status, how, sizeof(how)), limits_fake->log);
        rc = -1;
    }
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++)
        if (harness_file_contains(limits_fake->log, marks[i]) == 1) {
            fprintf(stderr, "integration: sanitizer report in %s\n", limits_fake->log);
            rc = -1;
        }
    proc_free(limits_fake);
    limits_fake = NULL;
    if (rc != 0)
        harness_mark_failed();
    return rc;
}

/* POSTs a chat completion as key (NULL: no Authorization header) whose content
 * is content and, when max_tokens >= 0, with that max_tokens. out must be freed. */
static void limits_chat(const char *key, const char *content, int max_tokens,
                        struct http_response *out)
{
    char url[128], auth[128], body[512];
    const char *headers[] = {auth, NULL};

    snprintf(url, sizeof(url), "%s/v1/chat/completions", limits_url);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key != NULL ? key : "");
    if (max_tokens >= 0)
        snprintf(body, sizeof(body),
                 "{\"model\":\"gpt-4o-mini\",\"max_tokens\":%d,"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                 max_tokens, content);
    else
        snprintf(body, sizeof(body),
                 "{\"model\":\"gpt-4o-mini\","
                 "\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                 content);
    CHECK(http_request_with("POST", url, key != NULL ? headers : NULL, body, strlen(body),
                            harness_timeout(LIMITS_TIMEOUT_MS), out) == 0,
          "POST %s: %s", url, out->error);
}

/* The value of header name as an integer; fails the test when it is absent or
 * not a number. */
static long long limits_header_int(const struct http_response *r, const char *name)
{
    char v[64], *end;

    CHECK(http_header(r, name, v, sizeof(v)), "HTTP %ld without %s; headers:\n%s",
          r->status, name, STR(r->headers));
    long long x = strtoll(v, &end, 10);
    CHECK(end != v && *end == '\0', "%s: '%s' is not an integer", name, v);
    return x;
}

/* 1 if s is a duration as OpenAI writes it ("20ms", "1.5s", "6m0s"). */
static int limits_is_duration(const char *s)
{
    size_t n = strlen(s);

    if (n < 2 || s[0] < '0' || s[0] > '9')
        return 0;
    if (n > 2 && strcmp(s + n - 2, "ms") == 0)
        return strspn(s, "0123456789") == n - 2;
    return s[n - 1] == 's' && strspn(s, "0123456789.hm") == n - 1;
}

/* Checks the three headers of budget what ("requests" or "tokens") and returns
 * its remaining count. */
static long long limits_budget(const struct http_response *r, const char *what,
                               long long limit)
{
    char name[64], reset[64];

    snprintf(name, sizeof(name), "x-ratelimit-limit-%s", what);
    CHECK(limits_header_int(r, name) == limit, "%s is not %lld", name, limit);
    snprintf(name, sizeof(name), "x-ratelimit-reset-%s", what);
    CHECK(http_header(r, name, reset, sizeof(reset)), "no %s", name);
    CHECK(limits_is_duration(reset), "%s: '%s' is not a duration", name, reset);
    snprintf(name, sizeof(name), "x-ratelimit-remaining-%s", what);
    return limits_header_int(r, name);
}

static const char *limits_error_type(const struct http_response *r)
{
    json_t *body = http_json(r);
    static char type[32];

    CHECK(body != NULL, "the 429 body is not JSON");
    snprintf(type, sizeof(type), "%s",
             STR(http_json_str(json_object_get(body, "error"), "type")));
    CHECK(http_error_code(body) != NULL &&
              strcmp(http_error_code(body), "rate_limit_exceeded") == 0,
          "429 with code %s, not rate_limit_exceeded", STR(http_error_code(body)));
    json_decref(body);
    return type;
}

/* Spends the request budget of key: LIMITS_RPM answers of 200 with the remaining
 * count going down by one each time. */
static void limits_spend(const char *key)
{
    for (int i = 0; i < LIMITS_RPM; i++) {
        struct http_response r;

        limits_chat(key, "hello", -1, &r);
        CHECK(r.status == 200, "request %d of key %s: HTTP %ld: %s", i + 1, STR(key),
              r.status, r.body);
        long long left = limits_budget(&r, "requests", LIMITS_RPM);
        CHECK(left == LIMITS_RPM - 1 - i, "request %d: %lld requests remaining, not %d",
              i + 1, left, LIMITS_RPM - 1 - i);
        limits_budget(&r, "tokens", LIMITS_TPM);
        http_response_free(&r);
    }
}

static void test_fake_limit_429_after_budget_then_recovers(void **state)
{
    struct http_response r;

    (void)state;
    limits_spend("key-alpha");
    limits_chat("key-alpha", "hello", -1, &r);
    CHECK(r.status == 429, "request %d: HTTP %ld, not 429: %s", LIMITS_RPM + 1, r.status,
          r.body);
    CHECK(strcmp(limits_error_type(&r), "requests") == 0, "429 of type %s",
          limits_error_type(&r));
    CHECK(limits_budget(&r, "requests", LIMITS_RPM) == 0, "requests remain on a 429");
    long long wait_ms = limits_header_int(&r, "retry-after-ms");
    long long wait_s = limits_header_int(&r, "retry-after");
    int per_ms = LIMITS_WINDOW_MS / LIMITS_RPM;
    CHECK(wait_ms > 0 && wait_ms <= per_ms, "retry-after-ms %lld, not in 1..%d", wait_ms,
          per_ms);
    CHECK(wait_s == (wait_ms + 999) / 1000, "retry-after %lld for retry-after-ms %lld",
          wait_s, wait_ms);
    http_response_free(&r);

    /* The point of the header: waiting that long is enough. */
    harness_sleep_ms((int)wait_ms);
    limits_chat("key-alpha", "hello", -1, &r);
    CHECK(r.status == 200, "after retry-after-ms: HTTP %ld: %s", r.status, r.body);
    CHECK(limits_budget(&r, "requests", LIMITS_RPM) == 0, "more than one came back");
    http_response_free(&r);
}

static void test_fake_limit_keys_have_separate_budgets(void **state)
{
    struct http_response r;

    (void)state;
    limits_spend("key-beta");
    limits_chat("key-beta", "hello", -1, &r);
    CHECK(r.status == 429, "key-beta over budget: HTTP %ld", r.status);
    http_response_free(&r);

    limits_chat("key-gamma", "hello", -1, &r);
    CHECK(r.status == 200, "key-gamma refused with key-beta's budget: HTTP %ld: %s",
          r.status, r.body);
    CHECK(limits_budget(&r, "requests", LIMITS_RPM) == LIMITS_RPM - 1,
          "key-gamma did not start with a full budget");
    http_response_free(&r);

    /* Requests without a key share one budget of their own. */
    limits_chat(NULL, "hello", -1, &r);
    CHECK(r.status == 200, "keyless: HTTP %ld: %s", r.status, r.body);
    CHECK(limits_budget(&r, "requests", LIMITS_RPM) == LIMITS_RPM - 1,
          "keyless requests did not start with a full budget");
    http_response_free(&r);
}

static void test_fake_limit_tokens(void **state)
{
    /* 40 bytes of content: 10 tokens, plus max_tokens. */
    const char *content = "0123456789012345678901234567890123456789";
    struct http_response r;

    (void)state;
    limits_chat("key-delta", content, 90, &r);
    CHECK(r.status == 200, "HTTP %ld: %s", r.status, r.body);
    CHECK(limits_budget(&r, "tokens", LIMITS_TPM) == LIMITS_TPM - 100,
          "a request of 10 + 90 tokens left %lld of %d",
          limits_budget(&r, "tokens", LIMITS_TPM), LIMITS_TPM);
    http_response_free(&r);

    /* More than the whole budget: refused for good, so no time to retry at. */
    limits_chat("key-delta", content, 5000, &r);
    CHECK(r.status == 429, "a request larger than the budget: HTTP %ld", r.status);
    CHECK(strcmp(limits_error_type(&r), "tokens") == 0, "429 of another type");
    CHECK(strstr(r.body, "Request too large") != NULL, "body: %s", r.body);
    CHECK(!http_header(&r, "retry-after-ms", NULL, 0), "retry-after-ms on a 429 that "
                                                       "waiting cannot cure");
    http_response_free(&r);

    /* The whole budget: it comes back 100 tokens a second, so it is not all here. */
    limits_chat("key-delta", content, LIMITS_TPM - 10, &r);
    CHECK(r.status == 429, "a request of the whole budget: HTTP %ld", r.status);
    CHECK(strcmp(limits_error_type(&r), "tokens") == 0, "429 of another type");
    CHECK(limits_header_int(&r, "retry-after-ms") > 0, "no time to retry at");
    http_response_free(&r);
}

static void test_fake_limit_bad_requests_are_not_charged(void **state)
{
    char url[128];
    const char *headers[] = {"Authorization: Bearer key-zeta", NULL};
    struct http_response r;

    (void)state;
    snprintf(url, sizeof(url), "%s/v1/chat/completions", limits_url);
    for (int i = 0; i < LIMITS_RPM + 1; i++) {
        CHECK(http_request_with("POST", url, headers, "{\"model\":", 9,
                                harness_timeout(LIMITS_TIMEOUT_MS), &r) == 0,
              "POST: %s", r.error);
        CHECK(r.status == 400, "a broken body: HTTP %ld", r.status);
        CHECK(!http_header(&r, "x-ratelimit-remaining-requests", NULL, 0),
              "a 400 reports a budget");
        http_response_free(&r);
    }
    limits_chat("key-zeta", "hello", -1, &r);
    CHECK(r.status == 200, "after 400s: HTTP %ld: %s", r.status, r.body);
    CHECK(limits_budget(&r, "requests", LIMITS_RPM) == LIMITS_RPM - 1,
          "the 400s were charged");
    http_response_free(&r);
}

static long long limits_stat(const char *name)
{
    struct http_response r;
    char url[128];

    snprintf(url, sizeof(url), "%s/stats", limits_url);
    CHECK(http_request("GET", url, NULL, 0, harness_timeout(LIMITS_TIMEOUT_MS), &r) == 0,
          "GET /stats: %s", r.error);
    json_t *body = http_json(&r);
    json_t *v = json_object_get(body, name);
    CHECK(json_is_integer(v), "/stats has no %s: %s", name, r.body);
    long long x = json_integer_value(v);
    json_decref(body);
    http_response_free(&r);
    return x;
}

static void test_fake_limit_stats_and_reset(void **state)
{
    struct http_response r;
    char url[128];

    (void)state;
    limits_spend("key-epsilon");
    limits_chat("key-epsilon", "hello", -1, &r);
    CHECK(r.status == 429, "key-epsilon over budget: HTTP %ld", r.status);
    http_response_free(&r);
    CHECK(limits_stat("rate_limited") >= 1, "/stats counts no rate-limited request");
    CHECK(limits_stat("max_rps_seen") >= 1, "/stats saw no request per second");

    snprintf(url, sizeof(url), "%s/stats/reset", limits_url);
    CHECK(http_request("POST", url, "{}", 2, harness_timeout(LIMITS_TIMEOUT_MS), &r) ==
                  0 &&
              r.status == 200,
          "POST /stats/reset: HTTP %ld %s", r.status, r.error);
    http_response_free(&r);
    CHECK(limits_stat("rate_limited") == 0, "rate_limited not zeroed");

    limits_chat("key-epsilon", "hello", -1, &r);
    CHECK(r.status == 200, "after /stats/reset: HTTP %ld: %s", r.status, r.body);
    CHECK(limits_budget(&r, "requests", LIMITS_RPM) == LIMITS_RPM - 1,
          "/stats/reset did not refill the budget");
    http_response_free(&r);
}

static const struct CMUnitTest limits_tests[] = {
    cmocka_unit_test(test_fake_limit_429_after_budget_then_recovers),
    cmocka_unit_test(test_fake_limit_keys_have_separate_budgets),
    cmocka_unit_test(test_fake_limit_tokens),
    cmocka_unit_test(test_fake_limit_bad_requests_are_not_charged),
    cmocka_unit_test(test_fake_limit_stats_and_reset),
};

const struct suite_group suite_fake_limits = {
    "fake_limits", limits_tests,    sizeof(limits_tests) / sizeof(limits_tests[0]),
    limits_setup,  limits_teardown,
};
