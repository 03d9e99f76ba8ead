/* test_fake_limit.c - unit tests of fake-upstream/limit.c: the continuously
 * refilling bucket, the per-key limiter built on it, and the Go-style durations of
 * OpenAI's x-ratelimit-reset-* headers. The clock is passed in: nothing here
 * sleeps or reads the time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../fake-upstream/fake.h"

static void test_bucket_starts_full_and_drains(void **state)
{
    struct limit_bucket b;

    (void)state;
    limit_bucket_init(&b, 100, 1000, 5000);
    assert_int_equal(limit_bucket_remaining(&b), 100);
    assert_int_equal(limit_bucket_reset_ms(&b), 0);
    assert_int_equal(limit_bucket_wait_ms(&b, 100), 0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(limit_bucket_wait_ms(&b, 1), 0);
        limit_bucket_take(&b, 1);
    }
    assert_int_equal(limit_bucket_remaining(&b), 0);
    /* 100 per 1000 ms: one unit every 10 ms, the whole budget in a window. */
    assert_int_equal(limit_bucket_wait_ms(&b, 1), 10);
    assert_int_equal(limit_bucket_wait_ms(&b, 50), 500);
    assert_int_equal(limit_bucket_reset_ms(&b), 1000);
}

static void test_bucket_refills_continuously(void **state)
{
    struct limit_bucket b;

    (void)state;
    limit_bucket_init(&b, 100, 1000, 0);
    limit_bucket_take(&b, 100);
    limit_bucket_refill(&b, 9);
    assert_int_equal(limit_bucket_remaining(&b), 0);
    assert_int_equal(limit_bucket_wait_ms(&b, 1), 1);
    limit_bucket_refill(&b, 10);
    assert_int_equal(limit_bucket_remaining(&b), 1);
    limit_bucket_refill(&b, 255);
    assert_int_equal(limit_bucket_remaining(&b), 25);
    assert_int_equal(limit_bucket_reset_ms(&b), 745);
    /* Never above capacity, however long the pause. */
    limit_bucket_refill(&b, 1000000);
    assert_int_equal(limit_bucket_remaining(&b), 100);
    assert_int_equal(limit_bucket_reset_ms(&b), 0);
}

static void test_bucket_fractional_rates_round_up(void **state)
{
    struct limit_bucket b;

    (void)state;
    /* 3 per minute, as the fake's scripted 429 message says: one per 20 s. */
    limit_bucket_init(&b, 3, 60000, 0);
    limit_bucket_take(&b, 3);
    assert_int_equal(limit_bucket_wait_ms(&b, 1), 20000);
    limit_bucket_refill(&b, 19999);
    assert_int_equal(limit_bucket_remaining(&b), 0);
    assert_int_equal(limit_bucket_wait_ms(&b, 1), 1);
    limit_bucket_refill(&b, 20000);
    assert_int_equal(limit_bucket_remaining(&b), 1);
    /* 7 per second: a unit every 142.857 ms, waits rounded up to whole ms. */
    limit_bucket_init(&b, 7, 1000, 0);
    limit_bucket_take(&b, 7);
    assert_int_equal(limit_bucket_wait_ms(&b, 1), 143);
    limit_bucket_refill(&b, 142);
    assert_int_equal(limit_bucket_remaining(&b), 0);
    limit_bucket_refill(&b, 143);
    assert_int_equal(limit_bucket_remaining(&b), 1);
}

static void test_bucket_edges(void **state)
{
    struct limit_bucket b;

    (void)state;
    limit_bucket_init(&b, 10, 1000, 100);
    assert_int_equal(limit_bucket_wait_ms(&b, 11), -1); /* more than it ever holds */
    limit_bucket_take(&b, 5);
    limit_bucket_refill(&b, 50); /* the clock went back: nothing added */
    assert_int_equal(limit_bucket_remaining(&b), 5);
    /* The largest budget over the longest window does not overflow. */
    limit_bucket_init(&b, LIMIT_MAX_CAPACITY * 10, LIMIT_MAX_WINDOW_MS * 10, 0);
    assert_int_equal(limit_bucket_remaining(&b), LIMIT_MAX_CAPACITY);
    limit_bucket_take(&b, LIMIT_MAX_CAPACITY);
    assert_int_equal(limit_bucket_reset_ms(&b), LIMIT_MAX_WINDOW_MS);
    limit_bucket_refill(&b, LIMIT_MAX_WINDOW_MS - 1);
    assert_int_equal(limit_bucket_remaining(&b), LIMIT_MAX_CAPACITY - 12);
    limit_bucket_refill(&b, 3 * LIMIT_MAX_WINDOW_MS);
    assert_int_equal(limit_bucket_remaining(&b), LIMIT_MAX_CAPACITY);
}

static void test_limiter_requests(void **state)
{
    struct limiter *l = limit_new(3, 0, 60000);
    struct limit_verdict v;

    (void)state;
    assert_non_null(l);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(limit_admit(l, "k", 10, 0, &v), 0);
        assert_true(v.allowed);
        assert_int_equal(v.requests.limit, 3);
        assert_int_equal(v.requests.remaining, 2 - i);
        assert_int_equal(v.requests.reset_ms, 20000 * (i + 1));
        assert_int_equal(v.tokens.limit, 0); /* tpm unset: no token budget */
    }
    assert_int_equal(limit_admit(l, "k", 10, 5000, &v), 0);
    assert_false(v.allowed);
    assert_false(v.too_large);
    assert_string_equal(v.type, "requests");
    assert_int_equal(v.used, 3);
    assert_int_equal(v.retry_ms, 15000);
    assert_int_equal(v.requests.remaining, 0);
    assert_int_equal(v.requests.reset_ms, 55000);
    /* A refused request is not charged: at 20 s exactly one is back. */
    assert_int_equal(limit_admit(l, "k", 10, 20000, &v), 0);
    assert_true(v.allowed);
    assert_int_equal(v.requests.remaining, 0);
    limit_free(l);
}

static void test_limiter_tokens(void **state)
{
    struct limiter *l = limit_new(0, 1000, 1000);
    struct limit_verdict v;

    (void)state;
    assert_int_equal(limit_admit(l, "k", 600, 0, &v), 0);
    assert_true(v.allowed);
    assert_int_equal(v.cost, 600);
    assert_int_equal(v.tokens.limit, 1000);
    assert_int_equal(v.tokens.remaining, 400);
    assert_int_equal(v.tokens.reset_ms, 600);
    assert_int_equal(v.requests.limit, 0);
    assert_int_equal(limit_admit(l, "k", 600, 100, &v), 0);
    assert_false(v.allowed);
    assert_string_equal(v.type, "tokens");
    assert_int_equal(v.used, 500);
    assert_int_equal(v.retry_ms, 100);
    assert_int_equal(limit_admit(l, "k", 600, 200, &v), 0);
    assert_true(v.allowed);
    assert_int_equal(v.tokens.remaining, 0);
    /* More than the whole budget: refused without a time to retry. */
    assert_int_equal(limit_admit(l, "k", 1001, 5000, &v), 0);
    assert_false(v.allowed);
    assert_true(v.too_large);
    assert_string_equal(v.type, "tokens");
    assert_int_equal(v.retry_ms, -1);
    limit_free(l);
}

static void test_limiter_names_the_longer_wait(void **state)
{
    struct limiter *l = limit_new(2, 100, 1000);
    struct limit_verdict v;

    (void)state;
    assert_int_equal(limit_admit(l, "k", 10, 0, &v), 0);
    assert_int_equal(limit_admit(l, "k", 10, 0, &v), 0);
    assert_true(v.allowed);
    /* requests: 500 ms until one is back; tokens: 80 left, 90 wanted -> 100 ms */
    assert_int_equal(limit_admit(l, "k", 90, 0, &v), 0);
    assert_false(v.allowed);
    assert_string_equal(v.type, "requests");
    assert_int_equal(v.retry_ms, 500);
    assert_int_equal(v.tokens.remaining, 80);
    /* tokens: 100 wanted with 80 (+ 5 by 50 ms) -> 150 ms; requests: 450 ms */
    assert_int_equal(limit_admit(l, "k", 100, 50, &v), 0);
    assert_string_equal(v.type, "requests");
    assert_int_equal(v.retry_ms, 450);
    limit_free(l);
}

static void test_limiter_keys_are_separate(void **state)
{
    struct limiter *l = limit_new(1, 0, 60000);
    struct limit_verdict v;

    (void)state;
    assert_int_equal(limit_admit(l, "alpha", 1, 0, &v), 0);
    assert_true(v.allowed);
    assert_int_equal(limit_admit(l, "alpha", 1, 0, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(limit_admit(l, "beta", 1, 0, &v), 0);
    assert_true(v.allowed);
    assert_int_equal(limit_admit(l, "", 1, 0, &v), 0); /* no key: one shared budget */
    assert_true(v.allowed);
    assert_int_equal(limit_admit(l, "", 1, 0, &v), 0);
    assert_false(v.allowed);
    limit_clear(l);
    assert_int_equal(limit_admit(l, "alpha", 1, 0, &v), 0);
    assert_true(v.allowed);
    limit_free(l);
}

static void test_limiter_unlimited(void **state)
{
    struct limiter *l = limit_new(0, 0, 60000);
    struct limit_verdict v;

    (void)state;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(limit_admit(l, "k", 1000000, 0, &v), 0);
        assert_true(v.allowed);
    }
    assert_int_equal(v.requests.limit, 0);
    assert_int_equal(v.tokens.limit, 0);
    limit_free(l);
    limit_free(NULL);
}

static void check_duration(long long ms, const char *want)
{
    char buf[32];

    assert_int_equal(limit_format_duration(buf, sizeof(buf), ms), 0);
    assert_string_equal(buf, want);
}

static void test_duration_format(void **state)
{
    char small[5];

    (void)state;
    check_duration(0, "0s");
    check_duration(-5, "0s");
    check_duration(1, "1ms");
    check_duration(20, "20ms");
    check_duration(999, "999ms");
    check_duration(1000, "1s");
    check_duration(1500, "1.5s");
    check_duration(1050, "1.05s");
    check_duration(1005, "1.005s");
    check_duration(8640, "8.64s");
    check_duration(59999, "59.999s");
    check_duration(60000, "1m0s");
    check_duration(360000, "6m0s");
    check_duration(90500, "1m30.5s");
    check_duration(3600000, "1h0m0s");
    check_duration(3723400, "1h2m3.4s");
    assert_int_equal(limit_format_duration(small, sizeof(small), 1050), -1);
    assert_string_equal(small, "");
    assert_int_equal(limit_format_duration(small, sizeof(small), 20), 0);
    assert_string_equal(small, "20ms");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_starts_full_and_drains),
        cmocka_unit_test(test_bucket_refills_continuously),
        cmocka_unit_test(test_bucket_fractional_rates_round_up),
        cmocka_unit_test(test_bucket_edges),
        cmocka_unit_test(test_limiter_requests),
        cmocka_unit_test(test_limiter_tokens),
        cmocka_unit_test(test_limiter_names_the_longer_wait),
        cmocka_unit_test(test_limiter_keys_are_separate),
        cmocka_unit_test(test_limiter_unlimited),
        cmocka_unit_test(test_duration_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
