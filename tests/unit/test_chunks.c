/* test_chunks.c - unit tests of processor/chunks.c: a streamed chat completion
 * read back whole whatever way curl cuts the bytes, and the streams it refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../processor/chunks.h"

/* As OpenAI sends it, CRLF line ends and a comment included. */
static const char stream_crlf[] =
    ": keep-alive\r\n\r\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},"
    "\"finish_reason\":null}]}\r\n\r\n"
    "data: {\"id\":\"c1\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"Hello \"},\"finish_reason\":null}]}\r\n\r\n"
    "data: {\"id\":\"c1\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"w\\u00f6rld,\\nline "
    "two\"},\"finish_reason\":null}]}\r\n\r\n"
    "data: {\"id\":\"c1\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,"
    "\"delta\":{},\"finish_reason\":\"length\"}]}\r\n\r\n"
    "data: {\"id\":\"c1\",\"model\":\"gpt-x\",\"choices\":[],\"usage\":"
    "{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\r\n\r\n"
    "data: [DONE]\r\n\r\n";

static const char expect_text[] = "Hello w\xc3\xb6rld,\nline two";

static void check_whole(struct chunks *c)
{
    char err[256];
    assert_int_equal(c->failed, 0);
    assert_true(c->done);
    assert_int_equal(c->text_len, strlen(expect_text));
    assert_memory_equal(c->text, expect_text, c->text_len);
    assert_string_equal(c->model, "gpt-x");
    assert_string_equal(c->finish_reason, "length");
    assert_int_equal(c->prompt_tokens, 9);
    assert_int_equal(c->completion_tokens, 4);
    assert_int_equal(c->total_tokens, 13);

    char *body = chunks_body(c, err, sizeof(err));
    assert_non_null(body);
    json_error_t jerr;
    json_t *root = json_loads(body, 0, &jerr);
    assert_non_null(root);
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(choice, "message"), "content")),
        expect_text);
    assert_string_equal(json_string_value(json_object_get(choice, "finish_reason")),
                        "length");
    assert_string_equal(json_string_value(json_object_get(root, "model")), "gpt-x");
    assert_int_equal(json_integer_value(
                         json_object_get(json_object_get(root, "usage"), "total_tokens")),
                     13);
    json_decref(root);
    free(body);
}

/* Fed whole, cut in two at every byte, and one byte at a time. */
static void test_cut_anywhere(void **state)
{
    (void)state;
    size_t n = strlen(stream_crlf);
    struct chunks c;
    chunks_init(&c, 1000, 4096);
    assert_int_equal(chunks_feed(&c, stream_crlf, n), 0);
    check_whole(&c);
    chunks_reset(&c);
    for (size_t cut = 0; cut <= n; cut++) {
        assert_int_equal(chunks_feed(&c, stream_crlf, cut), 0);
        assert_int_equal(chunks_feed(&c, stream_crlf + cut, n - cut), 0);
        check_whole(&c);
        chunks_reset(&c);
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(chunks_feed(&c, stream_crlf + i, 1), 0);
    check_whole(&c);
    chunks_reset(&c);
}

/* LF-only and CR-only line ends, and an event of two data lines joined by LF. */
static void test_line_ends(void **state)
{
    (void)state;
    static const char lf[] = "data: {\"choices\":[{\"delta\":{\"content\":\"a b\"}}]}\n\n"
                             "data: {\"choices\":\n"
                             "data: [{\"delta\":{\"content\":\" c\"}}]}\n\n"
                             "data: [DONE]\n\n";
    static const char cr[] = "data: {\"choices\":[{\"delta\":{\"content\":\"a b\"}}]}\r\r"
                             "data:[DONE]\r\r";
    struct chunks c;
    chunks_init(&c, 1000, 4096);
    assert_int_equal(chunks_feed(&c, lf, strlen(lf)), 0);
    assert_true(c.done);
    assert_string_equal(c.text, "a b c");
    assert_null(c.model);
    assert_int_equal(c.total_tokens, -1);
    chunks_reset(&c);
    assert_int_equal(chunks_feed(&c, cr, strlen(cr)), 0);
    assert_true(c.done);
    assert_string_equal(c.text, "a b");
    chunks_reset(&c);
}

/* No [DONE]: the answer may be cut short, so it is no answer. */
static void test_unfinished(void **state)
{
    (void)state;
    static const char s[] = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
    char err[256];
    struct chunks c;
    chunks_init(&c, 1000, 4096);
    assert_int_equal(chunks_feed(&c, s, strlen(s)), 0);
    assert_null(chunks_body(&c, err, sizeof(err)));
    assert_non_null(strstr(err, "[DONE]"));
    chunks_reset(&c);
}

static void test_refused(void **state)
{
    (void)state;
    static const char bad[] = "data: {\"choices\":[tru\n\n";
    static const char error[] = "data: {\"error\":{\"message\":\"overloaded\"}}\n\n";
    static const char longer[] =
        "data: {\"choices\":[{\"delta\":{\"content\":\"0123456789\"}}]}\n\n";
    char err[256];
    struct chunks c;
    chunks_init(&c, 15, 4096);
    assert_int_equal(chunks_feed(&c, bad, strlen(bad)), -1);
    assert_true(c.failed);
    assert_false(c.too_long);
    assert_null(chunks_body(&c, err, sizeof(err)));
    assert_non_null(strstr(err, "not a JSON object"));
    assert_int_equal(chunks_feed(&c, "data: [DONE]\n\n", 14), -1);
    chunks_reset(&c);

    assert_int_equal(chunks_feed(&c, error, strlen(error)), -1);
    assert_non_null(strstr(c.err, "overloaded"));
    chunks_reset(&c);

    /* 10 bytes fit 15, 20 do not. */
    assert_int_equal(chunks_feed(&c, longer, strlen(longer)), 0);
    assert_int_equal(chunks_feed(&c, longer, strlen(longer)), -1);
    assert_true(c.too_long);
    chunks_reset(&c);

    /* A line that never ends is bounded by max_event. */
    chunks_init(&c, 15, 64);
    char line[100];
    memset(line, 'x', sizeof(line));
    assert_int_equal(chunks_feed(&c, line, sizeof(line)), -1);
    assert_true(c.too_long);
    chunks_reset(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_anywhere),
        cmocka_unit_test(test_line_ends),
        cmocka_unit_test(test_unfinished),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
