/* test_reply.c - the api's JSON writer (api/reply.c): escaping, UTF-8 repair and
 * growth past the inline buffer. Sending needs a connection and is covered by the
 * integration tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../api/reply.h"

/* The body written so far, as a C string in buf. */
static const char *body(struct reply *r, char *buf, size_t len)
{
    assert_true(r->len < len);
    memcpy(buf, r->buf + REPLY_HEAD_ROOM, r->len);
    buf[r->len] = '\0';
    return buf;
}

/* Escapes n bytes of s and checks the JSON text is want. */
static void check_str(const char *s, size_t n, const char *want)
{
    struct reply r;
    char out[512];
    reply_init(&r);
    reply_str(&r, s, n);
    assert_string_equal(body(&r, out, sizeof(out)), want);
    reply_free(&r);
}

static void test_escapes(void **state)
{
    (void)state;
    check_str("plain", 5, "\"plain\"");
    check_str("", 0, "\"\"");
    check_str("a\"b\\c/d", 7, "\"a\\\"b\\\\c/d\"");
    check_str("\n\r\t\b\f\x01\x1f\x7f", 8,
              "\"\\n\\r\\t\\u0008\\u000c\\u0001\\u001f\x7f\"");
    check_str("a\0b", 3, "\"a\\u0000b\"");
}

static void test_utf8(void **state)
{
    (void)state;
    /* Well-formed UTF-8 passes through untouched. */
    check_str("h\xc3\xa9 \xe4\xb8\x96 \xf0\x9f\x8e\x89", 12,
              "\"h\xc3\xa9 \xe4\xb8\x96 \xf0\x9f\x8e\x89\"");
    /* Anything else becomes U+FFFD, one per bad byte. */
    check_str("\xff", 1, "\"\\ufffd\"");
    check_str("a\xc3", 2, "\"a\\ufffd\"");                                /* cut short */
    check_str("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");                       /* overlong */
    check_str("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"");            /* surrogate */
    check_str("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* > U+10FFFF */
    check_str("\xe4\xb8", 2, "\"\\ufffd\\ufffd\"");
    check_str("\xe4\xb8x", 3, "\"\\ufffd\\ufffdx\"");
}

static void test_growth(void **state)
{
    (void)state;
    struct reply r;
    size_t n = 3 * REPLY_INLINE + 17;
    char *text = malloc(n);
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        text[i] = i % 7 == 0 ? '"' : 'x';

    reply_init(&r);
    reply_lit(&r, "{\"s\":");
    reply_str(&r, text, n);
    reply_lit(&r, ",\"n\":");
    reply_ll(&r, -1234567890123LL);
    reply_lit(&r, "}");
    assert_false(r.oom);
    assert_true(r.buf != r.inline_buf);

    json_error_t err;
    json_t *doc = json_loadb(r.buf + REPLY_HEAD_ROOM, r.len, 0, &err);
    if (doc == NULL)
        fail_msg("not JSON: %s", err.text);
    const json_t *s = json_object_get(doc, "s");
    assert_int_equal(json_string_length(s), n);
    assert_memory_equal(json_string_value(s), text, n);
    assert_true(json_integer_value(json_object_get(doc, "n")) == -1234567890123LL);
    json_decref(doc);
    reply_free(&r);
    reply_free(&r); /* twice is fine */
    free(text);
}

static void test_error_body(void **state)
{
    (void)state;
    struct reply r;
    char out[512];
    reply_init(&r);
    reply_error_body(&r, "invalid_field", "'model' must not be \"\"");
    assert_string_equal(body(&r, out, sizeof(out)),
                        "{\"error\":{\"code\":\"invalid_field\",\"message\":"
                        "\"'model' must not be \\\"\\\"\"}}");
    reply_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_error_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
