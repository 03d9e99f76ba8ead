/* test_retry.c - unit tests of processor/retry.c: the backoff with jitter, the
 * cap on an upstream's Retry-After, Retry-After / retry-after-ms parsing, and the
 * Redis reconnect backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "../../processor/retry.h"

static const struct retry_policy policy = {
    .base_ms = 500, .max_ms = 20000, .after_max_ms = 60000};

static void test_backoff_doubles_with_jitter(void **state)
{
    (void)state;
    /* attempt n waits within [d/2, d], d = 500 * 2^(n-1) */
    assert_int_equal(retry_delay_ms(&policy, 1, -1, 0.0), 250);
    assert_int_equal(retry_delay_ms(&policy, 1, -1, 1.0), 500);
    assert_int_equal(retry_delay_ms(&policy, 1, -1, 0.5), 375);
    assert_int_equal(retry_delay_ms(&policy, 2, -1, 0.0), 500);
    assert_int_equal(retry_delay_ms(&policy, 2, -1, 1.0), 1000);
    assert_int_equal(retry_delay_ms(&policy, 3, -1, 1.0), 2000);
    assert_int_equal(retry_delay_ms(&policy, 4, -1, 1.0), 4000);
}

static void test_backoff_capped(void **state)
{
    (void)state;
    assert_int_equal(retry_delay_ms(&policy, 6, -1, 1.0), 16000);
    assert_int_equal(retry_delay_ms(&policy, 7, -1, 1.0), 20000);
    assert_int_equal(retry_delay_ms(&policy, 7, -1, 0.0), 10000);
    /* No overflow however many attempts. */
    assert_int_equal(retry_delay_ms(&policy, 1000, -1, 1.0), 20000);
    assert_int_equal(retry_delay_ms(&policy, 1000000, -1, 0.0), 10000);
}

static void test_backoff_bad_random_is_clamped(void **state)
{
    (void)state;
    assert_int_equal(retry_delay_ms(&policy, 1, -1, -3.0), 250);
    assert_int_equal(retry_delay_ms(&policy, 1, -1, 7.0), 500);
    assert_int_equal(retry_delay_ms(&policy, 1, -1, NAN), 250);
}

static void test_backoff_every_draw_in_range(void **state)
{
    (void)state;
    for (int attempt = 1; attempt <= 10; attempt++) {
        for (int i = 0; i <= 100; i++) {
            long long d = retry_delay_ms(&policy, attempt, -1, i / 100.0);
            long long full = 500LL << (attempt - 1);
            if (full > 20000)
                full = 20000;
            assert_true(d >= full / 2 && d <= full);
        }
    }
}

static void test_retry_after_wins_and_is_capped(void **state)
{
    (void)state;
    assert_int_equal(retry_delay_ms(&policy, 1, 3000, 0.0), 3000);
    assert_int_equal(retry_delay_ms(&policy, 4, 0, 1.0), 0);
    assert_int_equal(retry_delay_ms(&policy, 1, 120000, 0.5), 60000);
    struct retry_policy none = policy;
    none.after_max_ms = 0;
    assert_int_equal(retry_delay_ms(&none, 1, 5000, 0.5), 0);
}

static long long parse(const char *s, long long now_ms)
{
    return retry_after_parse(s, strlen(s), now_ms);
}

static void test_retry_after_seconds(void **state)
{
    (void)state;
    assert_int_equal(parse("120", 0), 120000);
    assert_int_equal(parse(" 5 \r\n", 0), 5000);
    assert_int_equal(parse("0", 0), 0);
    /* Absurd values saturate at a day rather than overflow. */
    assert_int_equal(parse("99999999999999999999", 0), 86400000);
}

static void test_retry_after_date(void **state)
{
    (void)state;
    const char *date = "Wed, 21 Oct 2015 07:28:00 GMT";
    long long at = (long long)curl_getdate(date, NULL) * 1000;
    assert_true(at > 0);
    assert_int_equal(parse(date, at - 10000), 10000);
    assert_int_equal(parse(" Wed, 21 Oct 2015 07:28:00 GMT\r\n", at - 1500), 1500);
    /* A date in the past means now. */
    assert_int_equal(parse(date, at + 60000), 0);
    /* The obsolete formats HTTP still allows. */
    assert_int_equal(parse("Wednesday, 21-Oct-15 07:28:00 GMT", at - 2000), 2000);
    assert_int_equal(parse("Wed Oct 21 07:28:00 2015", at - 3000), 3000);
    /* A date far in the future saturates at a day rather than overflow (curl
     * reads the year 2026200000 here; found by tests/fuzz/fuzz_headers.c). */
    assert_int_equal(parse("Wed, 21 Oct 2026200000", at), 86400000);
    assert_int_equal(parse("Wed, 21 Oct 2015 07:28:00 GMT", at - 2 * 86400000LL),
                     86400000);
}

static void test_retry_after_garbage(void **state)
{
    (void)state;
    assert_int_equal(parse("", 0), -1);
    assert_int_equal(parse("   \r\n", 0), -1);
    assert_int_equal(parse("soon", 0), -1);
    assert_int_equal(parse("-5", 0), -1);
    assert_int_equal(parse("1.5", 0), -1);
    assert_int_equal(parse("5s", 0), -1);
    assert_int_equal(parse("Mon, 99 Foo 20xx", 0), -1);
    char longv[200];
    memset(longv, '1', sizeof(longv));
    assert_int_equal(retry_after_parse(longv, sizeof(longv), 0), -1);
}

static void test_retry_after_ms(void **state)
{
    (void)state;
    assert_int_equal(retry_after_ms_parse("1500", 4), 1500);
    assert_int_equal(retry_after_ms_parse(" 20.2\r\n", 7), 21);
    assert_int_equal(retry_after_ms_parse("0", 1), 0);
    assert_int_equal(retry_after_ms_parse("abc", 3), -1);
    assert_int_equal(retry_after_ms_parse("-1", 2), -1);
    assert_int_equal(retry_after_ms_parse("", 0), -1);
    assert_int_equal(retry_after_ms_parse("12ms", 4), -1);
    assert_int_equal(retry_after_ms_parse("nan", 3), -1);
    assert_int_equal(retry_after_ms_parse("1e300", 5), 86400000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_doubles_with_jitter),
        cmocka_unit_test(test_backoff_capped),
        cmocka_unit_test(test_backoff_bad_random_is_clamped),
        cmocka_unit_test(test_backoff_every_draw_in_range),
        cmocka_unit_test(test_retry_after_wins_and_is_capped),
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_retry_after_date),
        cmocka_unit_test(test_retry_after_garbage),
        cmocka_unit_test(test_retry_after_ms),
    };
    return cmocka_run_group_tests_name("retry", tests, NULL, NULL);
}
