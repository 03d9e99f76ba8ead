/* test_validate.c - every rule of a POST /chat body (api/validate.c). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../api/validate.h"

#define DEFAULT_MODEL "gpt-3.5-turbo"

/* Validates len bytes of body, which must pass; returns the document (caller frees). */
static json_t *ok_len(const char *body, size_t len, struct chat_request *req)
{
    struct validate_error err;
    memset(&err, 0, sizeof(err));
    json_t *doc = validate_chat(body, len, DEFAULT_MODEL, req, &err);
    if (doc == NULL)
        fail_msg("refused %s: %s %s", body, err.code, err.message);
    return doc;
}

static json_t *ok(const char *body, struct chat_request *req)
{
    return ok_len(body, strlen(body), req);
}

/* Validates body, which must fail with code and a message containing needle. */
static void bad_len(const char *body, size_t len, const char *code, const char *needle)
{
    struct chat_request req;
    struct validate_error err;
    memset(&err, 0, sizeof(err));
    json_t *doc = validate_chat(body, len, DEFAULT_MODEL, &req, &err);
    if (doc != NULL) {
        json_decref(doc);
        fail_msg("accepted %.200s, want %s", body, code);
    }
    assert_int_equal(err.status, 400);
    assert_non_null(err.code);
    if (strcmp(err.code, code) != 0)
        fail_msg("%.200s: code %s (%s), want %s", body, err.code, err.message, code);
    if (needle != NULL && strstr(err.message, needle) == NULL)
        fail_msg("%.200s: message \"%s\" lacks \"%s\"", body, err.message, needle);
    assert_null(req.message);
    assert_null(req.model);
    assert_null(req.user);
}

static void bad(const char *body, const char *code, const char *needle)
{
    bad_len(body, strlen(body), code, needle);
}

static void test_valid_minimal(void **state)
{
    (void)state;
    struct chat_request req;
    json_t *doc = ok("{\"message\":\"Hello, how are you?\"}", &req);
    assert_string_equal(req.message, "Hello, how are you?");
    assert_int_equal(req.message_len, strlen("Hello, how are you?"));
    assert_string_equal(req.model, DEFAULT_MODEL);
    assert_true(req.temperature == VALIDATE_DEFAULT_TEMPERATURE);
    assert_null(req.trace);
    assert_null(req.accepted);
    json_decref(doc);
}

static void test_valid_full(void **state)
{
    (void)state;
    struct chat_request req;
    json_t *doc = ok(" {\"temperature\":0.25, \"model\":\"gpt-4o\",\n"
                     "  \"message\":\"  keep my spaces  \"} \n",
                     &req);
    assert_string_equal(req.message, "  keep my spaces  ");
    assert_string_equal(req.model, "gpt-4o");
    assert_true(req.temperature == 0.25);
    json_decref(doc);
}

static void test_body_not_nul_terminated(void **state)
{
    (void)state;
    struct chat_request req;
    const char buf[] = "{\"message\":\"hi\"}GARBAGE";
    json_t *doc = ok_len(buf, strlen("{\"message\":\"hi\"}"), &req);
    assert_string_equal(req.message, "hi");
    json_decref(doc);
}

static void test_temperature_bounds(void **state)
{
    (void)state;
    struct chat_request req;
    json_t *doc = ok("{\"message\":\"a\",\"temperature\":0}", &req);
    assert_true(req.temperature == 0.0);
    json_decref(doc);
    doc = ok("{\"message\":\"a\",\"temperature\":2}", &req);
    assert_true(req.temperature == 2.0);
    json_decref(doc);
    doc = ok("{\"message\":\"a\",\"temperature\":2.0}", &req);
    assert_true(req.temperature == 2.0);
    json_decref(doc);
    doc = ok("{\"message\":\"a\",\"temperature\":0.0}", &req);
    assert_true(req.temperature == 0.0);
    json_decref(doc);
    /* -0 is in range, and travels as plain 0. */
    doc = ok("{\"message\":\"a\",\"temperature\":-0.0}", &req);
    assert_true(req.temperature == 0.0 && !signbit(req.temperature));
    json_decref(doc);
    doc = ok("{\"message\":\"a\",\"temperature\":1}", &req);
    assert_true(req.temperature == 1.0);
    json_decref(doc);
    doc = ok("{\"message\":\"a\",\"temperature\":1.5e0}", &req);
    assert_true(req.temperature == 1.5);
    json_decref(doc);

    bad("{\"message\":\"a\",\"temperature\":2.0001}", "invalid_field",
        "'temperature' must be a number between 0 and 2");
    bad("{\"message\":\"a\",\"temperature\":-0.1}", "invalid_field", "'temperature'");
    bad("{\"message\":\"a\",\"temperature\":3}", "invalid_field", "'temperature'");
    bad("{\"message\":\"a\",\"temperature\":-1}", "invalid_field", "'temperature'");
    bad("{\"message\":\"a\",\"temperature\":1e300}", "invalid_field", "'temperature'");
}

static void test_temperature_type(void **state)
{
    (void)state;
    bad("{\"message\":\"a\",\"temperature\":\"0.5\"}", "invalid_field",
        "'temperature' must be a number between 0 and 2, not a string");
    bad("{\"message\":\"a\",\"temperature\":null}", "invalid_field", "not null");
    bad("{\"message\":\"a\",\"temperature\":true}", "invalid_field", "not a boolean");
    bad("{\"message\":\"a\",\"temperature\":[1]}", "invalid_field", "not an array");
    bad("{\"message\":\"a\",\"temperature\":{}}", "invalid_field", "not an object");
}

static void test_huge_numbers(void **state)
{
    (void)state;
    /* Beyond what a double or a 64-bit integer holds: jansson refuses to parse. */
    bad("{\"message\":\"a\",\"temperature\":1e400}", "invalid_json", "overflow");
    bad("{\"message\":\"a\",\"temperature\":-1e400}", "invalid_json", "overflow");
    bad("{\"message\":\"a\",\"temperature\":123456789012345678901234567890}",
        "invalid_json", "too big");
    /* Tiny, yet in range. */
    struct chat_request req;
    json_t *doc = ok("{\"message\":\"a\",\"temperature\":1e-300}", &req);
    assert_true(req.temperature == 1e-300);
    json_decref(doc);
}

static void test_model(void **state)
{
    (void)state;
    char body[512];
    char name[VALIDATE_MODEL_MAX + 2];
    struct chat_request req;

    bad("{\"message\":\"a\",\"model\":\"\"}", "invalid_field",
        "'model' must not be empty");
    bad("{\"message\":\"a\",\"model\":5}", "invalid_field", "'model' must be a string");
    bad("{\"message\":\"a\",\"model\":null}", "invalid_field", "'model'");
    bad("{\"message\":\"a\",\"model\":[\"gpt\"]}", "invalid_field", "'model'");
    bad("{\"message\":\"a\",\"model\":\"gpt\\u0000x\"}", "invalid_field", "NUL");

    memset(name, 'm', VALIDATE_MODEL_MAX);
    name[VALIDATE_MODEL_MAX] = '\0';
    snprintf(body, sizeof(body), "{\"message\":\"a\",\"model\":\"%s\"}", name);
    json_t *doc = ok(body, &req);
    assert_int_equal(strlen(req.model), VALIDATE_MODEL_MAX);
    json_decref(doc);

    name[VALIDATE_MODEL_MAX] = 'm';
    name[VALIDATE_MODEL_MAX + 1] = '\0';
    snprintf(body, sizeof(body), "{\"message\":\"a\",\"model\":\"%s\"}", name);
    bad(body, "invalid_field", "'model' must be at most 256 bytes");
}

static void test_message(void **state)
{
    (void)state;
    bad("{}", "missing_field", "'message' is required");
    bad("{\"model\":\"gpt-4o\",\"temperature\":1}", "missing_field", "'message'");
    bad("{\"message\":42}", "invalid_field", "'message' must be a string, not a number");
    bad("{\"message\":null}", "invalid_field", "'message' must be a string, not null");
    bad("{\"message\":false}", "invalid_field", "not a boolean");
    bad("{\"message\":[\"hi\"]}", "invalid_field", "not an array");
    bad("{\"message\":\"\"}", "invalid_field", "'message' must not be empty");
    /* Only whitespace counts as empty. */
    bad("{\"message\":\" \\t\\r\\n \"}", "invalid_field", "only whitespace");
    bad("{\"message\":\"\\u0000\"}", "invalid_field", "NUL");
    bad("{\"message\":\"a\\u0000b\"}", "invalid_field", "'message' must not contain NUL");
}

static void test_nested_garbage(void **state)
{
    (void)state;
    bad("{\"message\":{\"a\":[1,{\"b\":null}],\"c\":\"d\"}}", "invalid_field",
        "'message' must be a string, not an object");
    bad("{\"message\":\"a\",\"extra\":{\"deep\":[[[[[1]]]]]}}", "unknown_field",
        "'extra'");

    /* Far deeper than a civetweb worker thread's stack would survive in jansson. */
    size_t depth = 5000;
    char *deep = malloc(2 * depth + 1);
    assert_non_null(deep);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = '\0';
    bad(deep, "invalid_body", "more than 32 levels deep");
    free(deep);
}

/* Builds {"message":<levels nested arrays>} in buf. */
static const char *nested(char *buf, size_t len, int levels, char open, char close)
{
    size_t o = (size_t)snprintf(buf, len, "{\"message\":");
    for (int i = 0; i < levels; i++)
        o += (size_t)snprintf(buf + o, len - o, open == '[' ? "[" : "{\"k\":");
    o += (size_t)snprintf(buf + o, len - o, "1");
    for (int i = 0; i < levels; i++)
        buf[o++] = close;
    snprintf(buf + o, len - o, "}");
    return buf;
}

static void test_depth_limit(void **state)
{
    (void)state;
    char buf[1024];
    struct chat_request req;

    /* The body object is level 1: 31 more are parsed (and refused as a message). */
    bad(nested(buf, sizeof(buf), VALIDATE_DEPTH_MAX - 1, '[', ']'), "invalid_field",
        "not an array");
    bad(nested(buf, sizeof(buf), VALIDATE_DEPTH_MAX - 1, '{', '}'), "invalid_field",
        "not an object");
    bad(nested(buf, sizeof(buf), VALIDATE_DEPTH_MAX, '[', ']'), "invalid_body", "deep");
    bad(nested(buf, sizeof(buf), VALIDATE_DEPTH_MAX, '{', '}'), "invalid_body", "deep");

    /* Brackets inside strings, escaped quotes included, are text. */
    char text[300];
    size_t o = (size_t)snprintf(text, sizeof(text), "{\"message\":\"\\\"");
    memset(text + o, '[', 100);
    o += 100;
    snprintf(text + o, sizeof(text) - o, "\\\\\",\"model\":\"{{{{\"}");
    json_t *doc = ok(text, &req);
    assert_int_equal(req.message_len, 102);
    assert_int_equal(req.message[0], '"');
    assert_int_equal(req.message[101], '\\');
    assert_string_equal(req.model, "{{{{");
    json_decref(doc);
}

/* deadline_ms: a whole number of milliseconds, 1 to 7 days; absent: 0. */
static void test_deadline(void **state)
{
    (void)state;
    struct chat_request req;
    struct validate_error err;
    const char *ok = "{\"message\":\"hi\",\"deadline_ms\":1500}";
    json_t *doc = validate_chat(ok, strlen(ok), DEFAULT_MODEL, &req, &err);
    assert_non_null(doc);
    assert_int_equal(req.deadline, 1500);
    json_decref(doc);
    const char *none = "{\"message\":\"hi\"}";
    doc = validate_chat(none, strlen(none), DEFAULT_MODEL, &req, &err);
    assert_non_null(doc);
    assert_int_equal(req.deadline, 0);
    json_decref(doc);

    bad("{\"message\":\"hi\",\"deadline_ms\":0}", "invalid_field", "'deadline_ms'");
    bad("{\"message\":\"hi\",\"deadline_ms\":-5}", "invalid_field", "not -5");
    bad("{\"message\":\"hi\",\"deadline_ms\":1.5}", "invalid_field", "not a fraction");
    bad("{\"message\":\"hi\",\"deadline_ms\":\"100\"}", "invalid_field", "not a string");
    bad("{\"message\":\"hi\",\"deadline_ms\":604800001}", "invalid_field", "604800000");
}

/* user: 1 to 64 bytes of printable ASCII without spaces; absent: NULL. */
static void test_user(void **state)
{
    (void)state;
    struct chat_request req;
    char body[256], id[VALIDATE_USER_MAX + 2];

    json_t *doc = ok("{\"message\":\"hi\",\"user\":\"user-42@example.org\"}", &req);
    assert_string_equal(req.user, "user-42@example.org");
    json_decref(doc);
    doc = ok("{\"message\":\"hi\"}", &req);
    assert_null(req.user);
    json_decref(doc);
    /* Every printable byte but the space, escaped or not, is allowed. */
    doc = ok("{\"message\":\"hi\",\"user\":\"!~\\\"\\\\\\u007e\"}", &req);
    assert_string_equal(req.user, "!~\"\\~");
    json_decref(doc);

    memset(id, 'u', VALIDATE_USER_MAX);
    id[VALIDATE_USER_MAX] = '\0';
    snprintf(body, sizeof(body), "{\"message\":\"hi\",\"user\":\"%s\"}", id);
    doc = ok(body, &req);
    assert_int_equal(strlen(req.user), VALIDATE_USER_MAX);
    json_decref(doc);
    memcpy(id + VALIDATE_USER_MAX, "u", 2);
    snprintf(body, sizeof(body), "{\"message\":\"hi\",\"user\":\"%s\"}", id);
    bad(body, "invalid_field", "'user' must be 1 to 64 bytes long, not 65");

    bad("{\"message\":\"hi\",\"user\":\"\"}", "invalid_field", "not 0");
    bad("{\"message\":\"hi\",\"user\":\"jane doe\"}", "invalid_field", "byte 5 is 0x20");
    bad("{\"message\":\"hi\",\"user\":\"tab\\there\"}", "invalid_field", "0x09");
    bad("{\"message\":\"hi\",\"user\":\"nul\\u0000\"}", "invalid_field", "0x00");
    bad("{\"message\":\"hi\",\"user\":\"del\\u007f\"}", "invalid_field", "0x7f");
    bad("{\"message\":\"hi\",\"user\":\"caf\xc3\xa9\"}", "invalid_field", "0xc3");
    bad("{\"message\":\"hi\",\"user\":42}", "invalid_field",
        "'user' must be a string, not a number");
    bad("{\"message\":\"hi\",\"user\":null}", "invalid_field", "not null");
    /* A bad user does not hide a bad message: the message is checked first. */
    bad("{\"message\":\"\",\"user\":\"\"}", "invalid_field", "'message'");
}

/* The syntax of "webhook"; where it leads is validate_webhook_target's, below. */
static void test_webhook(void **state)
{
    (void)state;
    struct chat_request req;
    json_t *doc =
        ok("{\"message\":\"hi\",\"webhook\":\"https://hooks.example.com/a?b=c\"}", &req);
    assert_string_equal(req.webhook, "https://hooks.example.com/a?b=c");
    json_decref(doc);
    doc = ok("{\"message\":\"hi\"}", &req);
    assert_null(req.webhook);
    json_decref(doc);
    bad("{\"message\":\"hi\",\"webhook\":1}", "invalid_field",
        "'webhook' must be a string");
    bad("{\"message\":\"hi\",\"webhook\":\"ftp://x.example/\"}", "invalid_field",
        "http:// or https://");
    bad("{\"message\":\"hi\",\"webhook\":\"http://u:p@x.example/\"}", "invalid_field",
        "password");
    bad("{\"message\":\"hi\",\"webhook\":\"http://x.example/a b\"}", "invalid_field",
        "printable ASCII");
    bad("{\"message\":\"hi\",\"webhook\":\"http://x\\u0000y/\"}", "invalid_field", "NUL");
    bad("{\"message\":\"hi\",\"webhook\":\"\"}", "invalid_field", "http://");
}

/* "stream": a boolean, false when absent. */
static void test_stream(void **state)
{
    (void)state;
    struct chat_request req;
    json_t *doc = ok("{\"message\":\"hi\",\"stream\":true}", &req);
    assert_int_equal(req.stream, 1);
    json_decref(doc);
    doc = ok("{\"message\":\"hi\",\"stream\":false}", &req);
    assert_int_equal(req.stream, 0);
    json_decref(doc);
    doc = ok("{\"message\":\"hi\"}", &req);
    assert_int_equal(req.stream, 0);
    json_decref(doc);
    bad("{\"message\":\"hi\",\"stream\":\"yes\"}", "invalid_field",
        "'stream' must be a boolean, not a string");
    bad("{\"message\":\"hi\",\"stream\":1}", "invalid_field", "not a number");
    bad("{\"message\":\"hi\",\"stream\":null}", "invalid_field", "not null");
}

/* Submit-time check: private addresses are refused unless allowed; no DNS is
 * needed for address literals. */
static void test_webhook_target(void **state)
{
    (void)state;
    struct netguard g;
    struct validate_error err;
    char why[128];
    assert_int_equal(netguard_init(&g, "127.0.0.1", why, sizeof(why)), 0);
    assert_int_equal(validate_webhook_target(&g, "http://127.0.0.1:8080/h", &err), 0);
    assert_int_equal(validate_webhook_target(&g, "http://127.0.0.2/h", &err), -1);
    assert_string_equal(err.code, "webhook_not_allowed");
    assert_non_null(strstr(err.message, "127.0.0.2 is loopback"));
    assert_int_equal(validate_webhook_target(&g, "http://10.1.1.1/", &err), -1);
    assert_string_equal(err.code, "webhook_not_allowed");
    assert_int_equal(validate_webhook_target(&g, "http://[fd00::1]/", &err), -1);
    assert_string_equal(err.code, "webhook_not_allowed");
    assert_int_equal(validate_webhook_target(&g, "http://93.184.216.34/", &err), 0);
    assert_int_equal(validate_webhook_target(&g, "gopher://93.184.216.34/", &err), -1);
    assert_string_equal(err.code, "invalid_field");
}

static void test_unknown_field(void **state)
{
    (void)state;
    char body[512], key[201];

    bad("{\"message\":\"hi\",\"colour\":\"blue\"}", "unknown_field",
        "unknown field 'colour'");
    bad("{\"messages\":[{\"role\":\"user\"}]}", "unknown_field", "'messages'");
    bad("{\"message\":\"hi\",\"n\":2}", "unknown_field", "'n'");
    /* Unknown fields are refused before any other field is looked at. */
    bad("{\"max_tokens\":5}", "unknown_field", "'max_tokens'");
    /* Field names are case-sensitive. */
    bad("{\"Message\":\"hi\"}", "unknown_field", "'Message'");
    /* The message lists every supported field. */
    bad("{\"colour\":1}", "unknown_field",
        "'message', 'model', 'temperature', 'deadline_ms', 'user', 'webhook' and "
        "'stream'");

    /* A long name is cut, marked with "...", and never split inside a UTF-8
     * sequence ("é" is two bytes, so byte 64 falls inside one). */
    key[0] = 'k';
    for (size_t i = 1; i + 2 < sizeof(key); i += 2)
        memcpy(key + i, "\xc3\xa9", 2);
    key[sizeof(key) - 2] = '\0';
    snprintf(body, sizeof(body), "{\"%s\":1}", key);
    struct chat_request req;
    struct validate_error err;
    assert_null(validate_chat(body, strlen(body), DEFAULT_MODEL, &req, &err));
    assert_string_equal(err.code, "unknown_field");
    assert_non_null(strstr(err.message, "...'"));
    json_t *asjson = json_string(err.message); /* NULL if not valid UTF-8 */
    if (asjson == NULL)
        fail_msg("message is not valid UTF-8: %s", err.message);
    json_decref(asjson);
}

static void test_invalid_json(void **state)
{
    (void)state;
    bad("{\"message\":", "invalid_json", "line 1");
    bad("{\"message\": \"hi\"", "invalid_json", "not valid JSON");
    bad("not json at all", "invalid_json", "invalid token");
    bad("{'message':'hi'}", "invalid_json", NULL);
    bad("{\"message\":\"hi\",}", "invalid_json", NULL);
    bad("{\"message\":\"hi\"} trailing", "invalid_json", "end of file expected");
    bad("{\"message\":\"hi\"}{}", "invalid_json", NULL);
    bad("{\"message\":\"a\",\"message\":\"b\"}", "invalid_json", "duplicate");
    bad("{\"message\":\"a\nb\"}", "invalid_json", "newline");
    bad("{\"message\":\"\xff\"}", "invalid_json", NULL);
    bad("{\"message\":\"\xc3\"}", "invalid_json", NULL);
    bad("{\"message\":\"\\ud800\"}", "invalid_json", NULL);
    /* A NUL in a key: jansson refuses it even with JSON_ALLOW_NUL. */
    bad("{\"mess\\u0000age\":\"hi\"}", "invalid_json", "NUL");
    /* A raw NUL byte in the text. */
    bad_len("{\"message\":\"a\0b\"}", 17, "invalid_json", NULL);
    bad("   ", "invalid_json", NULL);
    bad("{\"message\":\"hi\",\"temperature\":NaN}", "invalid_json", NULL);
    bad("{\"message\":\"hi\",\"temperature\":.5}", "invalid_json", NULL);
    /* The position is part of the message. */
    bad("{\n  \"message\": tru\n}", "invalid_json", "line 2");
}

static void test_not_an_object(void **state)
{
    (void)state;
    bad("", "invalid_body", "empty");
    bad("[1, 2]", "invalid_body", "must be a JSON object, not an array");
    bad("[{\"message\":\"hi\"}]", "invalid_body", "not an array");
    bad("\"hello\"", "invalid_body", "not a string");
    bad("42", "invalid_body", "not a number");
    bad("null", "invalid_body", "not null");
    bad("true", "invalid_body", "not a boolean");
}

static void test_utf8_preserved(void **state)
{
    (void)state;
    struct chat_request req;
    const char *text =
        "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x8e\x89 \"q\" \\ /";
    json_t *doc = ok("{\"message\":\"h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c "
                     "\xf0\x9f\x8e\x89 \\\"q\\\" \\\\ \\/\",\"model\":\"mod\xc3\xa8le\"}",
                     &req);
    assert_int_equal(req.message_len, strlen(text));
    assert_memory_equal(req.message, text, req.message_len);
    assert_string_equal(req.model, "mod\xc3\xa8le");
    json_decref(doc);

    /* \u escapes, surrogate pairs included, arrive as UTF-8. */
    doc = ok("{\"message\":\"\\u00e9\\u4e16\\ud83c\\udf89\\n\"}", &req);
    assert_string_equal(req.message, "\xc3\xa9\xe4\xb8\x96\xf0\x9f\x8e\x89\n");
    json_decref(doc);
}

static void test_big_message(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    char *body = malloc(n + 32);
    assert_non_null(body);
    memcpy(body, "{\"message\":\"", 12);
    memset(body + 12, 'x', n);
    memcpy(body + 12 + n, "\"}", 3);
    struct chat_request req;
    json_t *doc = ok(body, &req);
    assert_int_equal(req.message_len, n);
    json_decref(doc);
    free(body);
}

static void test_idempotency_key(void **state)
{
    (void)state;
    struct validate_error err;
    char key[VALIDATE_IDEM_KEY_MAX + 2];

    assert_int_equal(validate_idempotency_key("a", &err), 0);
    assert_int_equal(validate_idempotency_key("order 42 / retry ~!", &err), 0);
    memset(key, 'k', sizeof(key) - 1);
    key[VALIDATE_IDEM_KEY_MAX] = '\0';
    assert_int_equal(validate_idempotency_key(key, &err), 0);

    static const char *const bad_keys[] = {"", "caf\xc3\xa9", "tab\there", "del\x7f"};
    key[VALIDATE_IDEM_KEY_MAX] = 'k';
    key[VALIDATE_IDEM_KEY_MAX + 1] = '\0';
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]) + 1; i++) {
        const char *k = i < sizeof(bad_keys) / sizeof(bad_keys[0]) ? bad_keys[i] : key;
        memset(&err, 0, sizeof(err));
        if (validate_idempotency_key(k, &err) == 0)
            fail_msg("accepted Idempotency-Key \"%.40s\"", k);
        assert_int_equal(err.status, 400);
        assert_string_equal(err.code, "invalid_header");
        assert_non_null(strstr(err.message, "Idempotency-Key"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_minimal),
        cmocka_unit_test(test_valid_full),
        cmocka_unit_test(test_body_not_nul_terminated),
        cmocka_unit_test(test_temperature_bounds),
        cmocka_unit_test(test_temperature_type),
        cmocka_unit_test(test_huge_numbers),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_message),
        cmocka_unit_test(test_nested_garbage),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_unknown_field),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_user),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_utf8_preserved),
        cmocka_unit_test(test_big_message),
        cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_webhook),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_webhook_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
