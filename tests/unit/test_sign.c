/* test_sign.c - Standard Webhooks signatures (webhook/sign.c): the specification's
 * own example, and the secrets refused at start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../webhook/send.h"
#include "../../webhook/sign.h"

/* The example of the Standard Webhooks reference libraries' tests. */
static void test_reference_vector(void **state)
{
    (void)state;
    struct sign s;
    char err[160], out[SIGN_HEADER_MAX];
    const char *body = "{\"test\": 2432232314}";
    assert_int_equal(
        sign_init(&s, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", err, sizeof(err)), 0);
    assert_int_equal(sign_message(&s, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body,
                                  strlen(body), out, sizeof(out)),
                     0);
    assert_string_equal(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* Without the prefix it is the same key. */
    struct sign bare;
    assert_int_equal(
        sign_init(&bare, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", err, sizeof(err)), 0);
    assert_int_equal(bare.keylen, s.keylen);
    assert_memory_equal(bare.key, s.key, s.keylen);
    /* Another timestamp, another signature. */
    char other[SIGN_HEADER_MAX];
    sign_message(&s, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, strlen(body),
                 other, sizeof(other));
    assert_string_not_equal(out, other);
    sign_clear(&s);
    assert_int_equal(s.keylen, 0);
}

static void test_bad_secrets(void **state)
{
    (void)state;
    struct sign s;
    char err[200];
    static const char *const bad[] = {
        "",
        "whsec_",
        "whsec_short=",                       /* not a multiple of 4 */
        "whsec_c2hvcnQ=",                     /* 5 bytes: too short */
        "whsec_!!!!AAAAAAAAAAAAAAAAAAAAAAAA", /* not base64 */
    };
    assert_int_equal(sign_init(&s, NULL, err, sizeof(err)), -1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (sign_init(&s, bad[i], err, sizeof(err)) == 0)
            fail_msg("accepted secret \"%s\"", bad[i]);
        assert_non_null(strstr(err, "WEBHOOK_SECRET"));
        /* The message never quotes the secret. */
        if (strlen(bad[i]) > 6)
            assert_null(strstr(err, bad[i] + 6));
    }
}

/* The event body: the fields in the documented order, JSON-escaped. */
static void test_body(void **state)
{
    (void)state;
    struct delivery d;
    memset(&d, 0, sizeof(d));
    strcpy(d.type, "chat.completed");
    strcpy(d.event, "msg_5f0c");
    strcpy(d.timestamp, "2025-08-19T17:45:00.123Z");
    strcpy(d.trace, "5f0c\"x");
    char *body = send_body(&d);
    assert_string_equal(body, "{\"type\":\"chat.completed\",\"id\":\"msg_5f0c\","
                              "\"timestamp\":\"2025-08-19T17:45:00.123Z\","
                              "\"data\":{\"traceId\":\"5f0c\\\"x\"}}");
    free(body);
}

/* A response.* event (the OpenAI front): OpenAI's shape, ids from the trace's hex. */
static void test_body_openai(void **state)
{
    (void)state;
    struct delivery d;
    memset(&d, 0, sizeof(d));
    strcpy(d.type, "response.incomplete");
    strcpy(d.event, "msg_5f0c1e2a-0000-4000-8000-00000000abcd");
    strcpy(d.timestamp, "2025-08-19T17:45:00.123Z");
    strcpy(d.trace, "5f0c1e2a-0000-4000-8000-00000000abcd");
    char *body = send_body(&d);
    assert_string_equal(body,
                        "{\"object\":\"event\","
                        "\"id\":\"evt_5f0c1e2a00004000800000000000abcd\","
                        "\"type\":\"response.incomplete\",\"created_at\":1755625500,"
                        "\"data\":{\"id\":\"resp_5f0c1e2a00004000800000000000abcd\"}}");
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_vector),
        cmocka_unit_test(test_bad_secrets),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_body_openai),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
