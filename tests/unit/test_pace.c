/* test_pace.c - the pure parts of pacing: UPSTREAM_LIMITS, user keys, and the
 * x-ratelimit header values (retry.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../processor/pace.h"
#include "../../processor/retry.h"

static void test_limits_parse(void **state)
{
    (void)state;
    struct pace_limit *l;
    size_t n;
    char err[256];
    assert_int_equal(pace_limits_parse(NULL, &l, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 0);
    assert_int_equal(pace_limits_parse("", &l, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 0);
    assert_int_equal(pace_limits_parse("gpt-4o=500:30000,ft:gpt-4o-mini:org=5000:0", &l,
                                       &n, err, sizeof(err)),
                     0);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].model, "gpt-4o");
    assert_int_equal(l[0].rpm, 500);
    assert_int_equal(l[0].tpm, 30000);
    /* A model name may hold colons: the last '=' part is the numbers. */
    assert_string_equal(l[1].model, "ft:gpt-4o-mini:org");
    assert_int_equal(l[1].rpm, 5000);
    assert_int_equal(l[1].tpm, 0);
    pace_limits_free(l, n);

    const char *bad[] = {"gpt-4o=500", "=1:2", "m=1:2:3", "m=a:b", "m=-1:2", "m=1:2,x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(pace_limits_parse(bad[i], &l, &n, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "UPSTREAM_LIMITS"));
        assert_int_equal(n, 0);
    }
}

static void test_user_key(void **state)
{
    (void)state;
    char k[PACE_USER_MAX], k2[PACE_USER_MAX];
    pace_user_key(NULL, k);
    assert_string_equal(k, "-");
    pace_user_key("", k);
    assert_string_equal(k, "-");
    pace_user_key("alice@example.com", k);
    assert_string_equal(k, "alice@example.com");
    /* Anything that could confuse a key name becomes a hash, the same each time. */
    pace_user_key("a|b", k);
    assert_int_equal(k[0], '#');
    assert_int_equal(strlen(k), 17);
    pace_user_key("a|b", k2);
    assert_string_equal(k, k2);
    pace_user_key("a|c", k2);
    assert_string_not_equal(k, k2);
}

static void test_ratelimit_headers(void **state)
{
    (void)state;
    const struct {
        const char *s;
        long long ms;
    } d[] = {{"20ms", 20},
             {"1s", 1000},
             {" 1.5s ", 1500},
             {"6m0s", 360000},
             {"1h2m3.4s", 3723400},
             {"0s", 0},
             {"250us", 1},
             {"7m12s", 432000},
             {"", -1},
             {"5", -1},
             {"s", -1},
             {"1x", -1}};
    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
        assert_int_equal(retry_duration_parse(d[i].s, strlen(d[i].s)), d[i].ms);
    assert_int_equal(retry_count_parse("59999", 5), 59999);
    assert_int_equal(retry_count_parse(" 0 ", 3), 0);
    assert_int_equal(retry_count_parse("-1", 2), -1);
    assert_int_equal(retry_count_parse("1e3", 3), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_parse),
        cmocka_unit_test(test_user_key),
        cmocka_unit_test(test_ratelimit_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
