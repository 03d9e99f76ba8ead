/* test_lookup.c - what GET /chat/{traceId}/response shows for each kind of trace
 * record (api/lookup.c, lookup_render). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../api/lookup.h"
#include "../../api/reply.h"
#include "record.h"

#define TRACE "3f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b"

/* Renders res and checks the JSON text is exactly want. */
static void check_render(const struct chat_result *res, const char *want)
{
    struct reply r;
    char out[1024];
    reply_init(&r);
    lookup_render(res, TRACE, &r);
    assert_false(r.oom);
    assert_true(r.len < sizeof(out));
    memcpy(out, r.buf + REPLY_HEAD_ROOM, r.len);
    out[r.len] = '\0';
    assert_string_equal(out, want);
    reply_free(&r);
}

static void test_processing(void **state)
{
    (void)state;
    struct chat_result res;
    record_result_init(&res);
    res.status = CHAT_PROCESSING;
    res.model = "gpt-4o"; /* the pending hash has it, the client does not see it */
    res.accepted = "2025-08-19T17:44:59.000Z";
    check_render(&res, "{\"traceId\":\"" TRACE "\",\"status\":\"processing\"}");
}

static void test_completed(void **state)
{
    (void)state;
    struct chat_result res;
    record_result_init(&res);
    res.status = CHAT_COMPLETED;
    res.response = "Hi \"you\"\n\xc3\xa9";
    res.response_len = strlen(res.response);
    res.model = "gpt-3.5-turbo";
    res.prompt_tokens = 15;
    res.completion_tokens = 20;
    res.total_tokens = 35;
    res.timestamp = "2025-08-19T17:45:00.000Z";
    check_render(&res,
                 "{\"traceId\":\"" TRACE "\",\"response\":\"Hi \\\"you\\\"\\n\xc3\xa9\","
                 "\"status\":\"completed\",\"model\":\"gpt-3.5-turbo\",\"usage\":{"
                 "\"prompt_tokens\":15,\"completion_tokens\":20,\"total_tokens\":35},"
                 "\"timestamp\":\"2025-08-19T17:45:00.000Z\"}");

    /* Unknown counts are left out; with none known, so is usage. */
    res.prompt_tokens = -1;
    res.total_tokens = -1;
    check_render(&res,
                 "{\"traceId\":\"" TRACE "\",\"response\":\"Hi \\\"you\\\"\\n\xc3\xa9\","
                 "\"status\":\"completed\",\"model\":\"gpt-3.5-turbo\",\"usage\":{"
                 "\"completion_tokens\":20},"
                 "\"timestamp\":\"2025-08-19T17:45:00.000Z\"}");
    res.completion_tokens = -1;
    res.model = NULL;
    res.response = "";
    res.response_len = 0;
    check_render(&res, "{\"traceId\":\"" TRACE "\",\"response\":\"\","
                       "\"status\":\"completed\","
                       "\"timestamp\":\"2025-08-19T17:45:00.000Z\"}");
}

static void test_completed_with_nul(void **state)
{
    (void)state;
    struct chat_result res;
    record_result_init(&res);
    res.status = CHAT_COMPLETED;
    res.response = "a\0b";
    res.response_len = 3;
    check_render(&res, "{\"traceId\":\"" TRACE "\",\"response\":\"a\\u0000b\","
                       "\"status\":\"completed\"}");
}

static void test_failed(void **state)
{
    (void)state;
    struct chat_result res;
    record_result_init(&res);
    res.status = CHAT_FAILED;
    res.error_code = "upstream_error";
    res.error_message = "upstream answered 500";
    res.timestamp = "2025-08-19T17:45:00.000Z";
    res.model = "gpt-4o";
    check_render(&res,
                 "{\"traceId\":\"" TRACE "\",\"status\":\"failed\",\"error\":{"
                 "\"code\":\"upstream_error\",\"message\":\"upstream answered 500\"},"
                 "\"timestamp\":\"2025-08-19T17:45:00.000Z\"}");

    /* A failed record without its error still reads as a failure with an error. */
    res.error_code = NULL;
    res.error_message = NULL;
    res.timestamp = NULL;
    check_render(&res,
                 "{\"traceId\":\"" TRACE "\",\"status\":\"failed\",\"error\":{"
                 "\"code\":\"unknown_error\",\"message\":\"the request failed for an "
                 "unknown reason\"}}");
}

static void test_cancelled(void **state)
{
    (void)state;
    struct chat_result res;
    record_result_init(&res);
    res.status = CHAT_CANCELLED;
    res.timestamp = "2025-08-19T17:45:00.000Z";
    res.model = "gpt-4o";
    check_render(&res, "{\"traceId\":\"" TRACE "\",\"status\":\"cancelled\","
                       "\"timestamp\":\"2025-08-19T17:45:00.000Z\"}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_processing),         cmocka_unit_test(test_completed),
        cmocka_unit_test(test_completed_with_nul), cmocka_unit_test(test_failed),
        cmocka_unit_test(test_cancelled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
