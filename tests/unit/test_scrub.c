/* test_scrub.c - unit tests of processor/scrub.c: the key, pieces of it, Bearer
 * tokens and sk- keys are redacted from upstream text; ordinary text is not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../processor/outcome.h"
#include "../../processor/scrub.h"

#define KEY "sk-test-DNxril3RavGD5MfvJ7NScUykT8C8UBkkpdhiG37L"

static void expect_scrub(const char *key, const char *text, const char *want)
{
    size_t len = 0;
    char *got = scrub_text(text, strlen(text), key, &len);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(got);
}

static void test_whole_key(void **state)
{
    (void)state;
    expect_scrub(KEY, "key " KEY " is bad", "key [redacted] is bad");
    /* A key that does not look like one is still found. */
    expect_scrub("hunter2-and-more", "pw=hunter2-and-more.", "pw=[redacted].");
}

static void test_bearer_and_sk(void **state)
{
    (void)state;
    expect_scrub(NULL, "Authorization: Bearer abc.def-ghi, then",
                 "Authorization: Bearer [redacted], then");
    expect_scrub("", "authorization: bearer xyz12345abc",
                 "authorization: bearer [redacted]");
    expect_scrub(NULL, "Incorrect API key provided: sk-proj-abcd****wxyz.",
                 "Incorrect API key provided: sk-[redacted]****wxyz.");
    /* OpenAI's words when the header is missing keep their sense. */
    expect_scrub(NULL, "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You",
                 "using Bearer auth (i.e. Authorization: Bearer [redacted]). You");
    /* Too short to be a key, or inside a word: left alone. */
    expect_scrub(NULL, "sk-ab and task-force and Bearer",
                 "sk-ab and task-force and Bearer");
}

static void test_pieces_of_the_key(void **state)
{
    (void)state;
    /* OpenAI's mask, only longer: both ends are runs of the key. */
    expect_scrub(KEY, "provided: sk-test-DN****hiG37L.",
                 "provided: [redacted]****[redacted].");
    /* 6 bytes from anywhere in the key. */
    expect_scrub(KEY, "x ril3Ra y", "x [redacted] y");
    /* 4 bytes around the middle (byte 24, the 'J' of "fvJ7N") ... */
    expect_scrub(KEY, "a fvJ7 b J7NS c", "a [redacted] b [redacted] c");
    /* ... but not 4 or 5 bytes away from it, such as the ends OpenAI shows. */
    expect_scrub(KEY, "ends: G37L, sk-t; ScUy", "ends: G37L, sk-t; ScUy");
    /* Ordinary words that happen to share a few bytes with the key stay. */
    expect_scrub(KEY, "The test of the model", "The test of the model");
}

static void test_outcome_message_is_scrubbed(void **state)
{
    (void)state;
    static const char body[] =
        "{\"error\": {\"message\": \"Authorization header was 'Bearer " KEY
        "'\", \"type\": \"invalid_request_error\", \"code\": \"invalid_api_key\"}}";
    struct outcome_input in = {.http_status = 401,
                               .body = body,
                               .body_len = strlen(body),
                               .retry_after_ms = -1,
                               .request_model = "m",
                               .secret = KEY};
    struct outcome o;
    outcome_init(&o);
    assert_int_equal(outcome_classify(&in, &o), 0);
    assert_int_equal(o.kind, OUTCOME_FAILED);
    assert_string_equal(o.message, "Authorization header was 'Bearer [redacted]'");
    outcome_clear(&o);
}

/* A message at the cap that grows when scrubbed is cut back to the cap. */
static void test_outcome_message_stays_capped(void **state)
{
    (void)state;
    char *body = malloc(OUTCOME_MESSAGE_MAX + 64);
    assert_non_null(body);
    size_t n = (size_t)sprintf(body, "{\"error\": \"");
    while (n < OUTCOME_MESSAGE_MAX)
        n += (size_t)sprintf(body + n, "sk-abcd ");
    n += (size_t)sprintf(body + n, "\"}");
    struct outcome_input in = {.http_status = 400,
                               .body = body,
                               .body_len = n,
                               .retry_after_ms = -1,
                               .request_model = "m"};
    struct outcome o;
    outcome_init(&o);
    assert_int_equal(outcome_classify(&in, &o), 0);
    assert_true(strlen(o.message) <= OUTCOME_MESSAGE_MAX);
    assert_non_null(strstr(o.message, "sk-[redacted] sk-[redacted]"));
    assert_null(strstr(o.message, "abcd"));
    outcome_clear(&o);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_key),
        cmocka_unit_test(test_bearer_and_sk),
        cmocka_unit_test(test_pieces_of_the_key),
        cmocka_unit_test(test_outcome_message_is_scrubbed),
        cmocka_unit_test(test_outcome_message_stays_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
