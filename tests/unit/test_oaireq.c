/* test_oaireq.c - the OpenAI front's request rules (api/oaireq.c) and the objects it
 * answers with (api/openai.c's renderers and ids). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../api/oaireq.h"
#include "../../api/openai.h"
#include "../../api/reply.h"
#include "record.h"

static json_t *responses(const char *body, struct oaireq *o, struct oaireq_error *err)
{
    return oaireq_responses(body, strlen(body), o, err);
}

static void test_input_string(void **state)
{
    (void)state;
    struct oaireq o;
    struct oaireq_error err;
    json_t *doc = responses("{\"model\":\"m\",\"input\":\"hi\",\"instructions\":\"be "
                            "brief\",\"max_output_tokens\":9,\"top_p\":0.5,"
                            "\"tools\":null,\"background\":true}",
                            &o, &err);
    assert_non_null(doc);
    assert_string_equal(o.req.model, "m");
    json_t *m = json_loads(o.req.messages, 0, NULL);
    assert_int_equal(json_array_size(m), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "role")),
                        "system");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(m, 1), "content")), "hi");
    json_decref(m);
    assert_int_equal(o.req.max_tokens, 9);
    assert_true(o.req.has_top_p);
    assert_true(o.req.background);
    assert_true(o.req.temperature == OAIREQ_DEFAULT_TEMPERATURE);
    assert_string_equal(o.req.instructions, "be brief");
    assert_string_equal(o.req.front, "responses");
    json_decref(doc);
    oaireq_clear(&o);
}

static void test_input_items(void **state)
{
    (void)state;
    struct oaireq o;
    struct oaireq_error err;
    json_t *doc = responses(
        "{\"model\":\"m\",\"input\":[{\"role\":\"developer\",\"content\":\"d\"},"
        "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
        "\"text\":\"a\"},{\"type\":\"input_text\",\"text\":\"b\"}]}],"
        "\"metadata\":{\"k\":\"v\"}}",
        &o, &err);
    assert_non_null(doc);
    assert_string_equal(o.req.messages, "[{\"role\":\"system\",\"content\":\"d\"},"
                                        "{\"role\":\"user\",\"content\":\"a\\nb\"}]");
    assert_string_equal(o.req.metadata, "{\"k\":\"v\"}");
    json_decref(doc);
    oaireq_clear(&o);
}

/* Each bad body is refused with 400 and the field it names. */
static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        int chat;
        const char *body, *param;
    } cases[] = {
        {0, "{\"model\":\"m\",\"input\":\"x\",\"tools\":[]}", "tools"},
        {0, "{\"model\":\"m\",\"input\":\"x\",\"include\":[\"x\"]}", "include"},
        {0, "{\"model\":\"m\",\"input\":\"\"}", "input"},
        {0, "{\"model\":\"\",\"input\":\"x\"}", "model"},
        {0, "{\"model\":\"m\",\"input\":\"x\",\"top_p\":1.5}", "top_p"},
        {0, "{\"model\":\"m\",\"input\":\"x\",\"max_output_tokens\":0}",
         "max_output_tokens"},
        {0, "{\"model\":\"m\",\"input\":\"x\",\"background\":true,\"store\":false}",
         "store"},
        {0, "{\"model\":\"m\",\"input\":\"x\",\"metadata\":{\"k\":1}}", "metadata"},
        {0, "{\"model\":\"m\",\"input\":\"a\\u0000b\"}", "input"},
        {0,
         "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"x\",\"name\":"
         "\"n\"}]}",
         "input[0]"},
        {0,
         "{\"model\":\"m\",\"input\":[{\"type\":\"function_call\",\"role\":\"user\","
         "\"content\":\"x\"}]}",
         "input[0]"},
        {1,
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
         "\"max_tokens\":5,\"max_completion_tokens\":5}",
         "max_tokens"},
        {1,
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
         "\"stop\":[1]}",
         "stop"},
        {1,
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
         "\"response_format\":{\"type\":\"xml\"}}",
         "response_format"},
        {1,
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
         "\"logprobs\":true}",
         "logprobs"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct oaireq o;
        struct oaireq_error err;
        size_t len = strlen(cases[i].body);
        json_t *doc = cases[i].chat ? oaireq_chat(cases[i].body, len, &o, &err)
                                    : oaireq_responses(cases[i].body, len, &o, &err);
        if (doc != NULL)
            fail_msg("accepted: %s", cases[i].body);
        assert_int_equal(err.status, 400);
        assert_string_equal(err.type, "invalid_request_error");
        if (strcmp(err.param, cases[i].param) != 0)
            fail_msg("%s: param '%s', want '%s'", cases[i].body, err.param,
                     cases[i].param);
    }
}

static void test_chat_passthrough(void **state)
{
    (void)state;
    struct oaireq o;
    struct oaireq_error err;
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "[{\"type\":\"text\",\"text\":\"x\"}]}],\"seed\":3,\"stop\":\"s\","
                       "\"max_completion_tokens\":4,\"response_format\":{\"type\":"
                       "\"json_object\"},\"n\":1,\"stream\":false}";
    json_t *doc = oaireq_chat(body, strlen(body), &o, &err);
    assert_non_null(doc);
    assert_string_equal(o.req.params,
                        "{\"stop\":\"s\",\"seed\":3,\"response_format\":{\"type\":"
                        "\"json_object\"}}");
    assert_int_equal(o.req.max_tokens, 4);
    assert_string_equal(o.req.messages, "[{\"role\":\"user\",\"content\":\"x\"}]");
    json_decref(doc);
    oaireq_clear(&o);
}

static void test_ids(void **state)
{
    (void)state;
    char trace[UUID_LEN + 1];
    assert_int_equal(
        openai_trace_of("resp_3F2B8C1E7D4A4E5F9A6B0C1D2E3F4A5B", "resp_", trace), 0);
    assert_string_equal(trace, "3f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b");
    assert_int_equal(openai_trace_of("resp_3f2b", "resp_", trace), -1);
    assert_int_equal(
        openai_trace_of("chatcmpl-3f2b8c1e7d4a4e5f9a6b0c1d2e3f4a5b", "resp_", trace), -1);
}

static json_t *render(const struct chat_result *res, int completion)
{
    struct reply r;
    reply_init(&r);
    if (completion)
        openai_render_completion(res, "3f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b", &r);
    else
        openai_render_response(res, "3f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b", &r);
    json_error_t jerr;
    json_t *j = json_loadb(r.buf + REPLY_HEAD_ROOM, r.len, 0, &jerr);
    if (j == NULL)
        fail_msg("not JSON: %s: %.*s", jerr.text, (int)r.len, r.buf + REPLY_HEAD_ROOM);
    reply_free(&r);
    return j;
}

static void test_render(void **state)
{
    (void)state;
    struct chat_result res;
    record_result_init(&res);
    res.status = CHAT_PROCESSING;
    res.accepted = "2025-08-19T17:45:00.123Z";
    res.model = "m";
    json_t *j = render(&res, 0);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "queued");
    assert_string_equal(json_string_value(json_object_get(j, "id")),
                        "resp_3f2b8c1e7d4a4e5f9a6b0c1d2e3f4a5b");
    assert_int_equal(json_integer_value(json_object_get(j, "created_at")), 1755625500);
    assert_true(json_is_null(json_object_get(j, "usage")));
    json_decref(j);

    res.tries = 1;
    j = render(&res, 0);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "in_progress");
    json_decref(j);

    res.status = CHAT_COMPLETED;
    res.response = "out";
    res.response_len = 3;
    res.prompt_tokens = 2;
    res.completion_tokens = 3;
    res.total_tokens = 5;
    res.finish_reason = "length";
    res.temperature = "0.3";
    res.metadata = "{\"a\":\"b\"}";
    j = render(&res, 0);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "incomplete");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(j, "incomplete_details"), "reason")),
                        "max_output_tokens");
    assert_true(json_real_value(json_object_get(j, "temperature")) == 0.3);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "usage"), "output_tokens")),
        3);
    json_decref(j);

    j = render(&res, 1);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "length");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(c, "message"), "content")),
        "out");
    json_decref(j);

    res.status = CHAT_FAILED;
    res.error_code = "invalid_api_key";
    res.error_message = "bad key";
    res.upstream_status = 401;
    j = render(&res, 0);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "failed");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "error"), "code")),
        "invalid_api_key");
    assert_int_equal(json_array_size(json_object_get(j, "output")), 0);
    json_decref(j);
    assert_int_equal(openai_failed_status(&res), 401);
    res.upstream_status = 503;
    res.error_code = "upstream_unavailable";
    assert_int_equal(openai_failed_status(&res), 502);
    res.upstream_status = 429;
    res.error_code = "upstream_rate_limited";
    assert_int_equal(openai_failed_status(&res), 429);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_string), cmocka_unit_test(test_input_items),
        cmocka_unit_test(test_refusals),     cmocka_unit_test(test_chat_passthrough),
        cmocka_unit_test(test_ids),          cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
