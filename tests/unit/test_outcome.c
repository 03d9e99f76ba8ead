/* test_outcome.c - unit tests of processor/outcome.c: how every kind of upstream
 * answer or transport failure is classified into completed, retryable or final,
 * with which code and message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "../../processor/outcome.h"

static struct outcome out;

static int setup(void **state)
{
    (void)state;
    outcome_init(&out);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    outcome_clear(&out);
    return 0;
}

/* Classifies an HTTP answer (curl succeeded). */
static void http(long status, const char *body, long long retry_after_ms)
{
    struct outcome_input in = {.curl_code = CURLE_OK,
                               .http_status = status,
                               .body = body,
                               .body_len = body ? strlen(body) : 0,
                               .retry_after_ms = retry_after_ms,
                               .max_bytes = 8388608,
                               .max_completion_bytes = 16,
                               .request_model = "req-model"};
    assert_int_equal(outcome_classify(&in, &out), 0);
}

static void transport(CURLcode code, const char *errbuf)
{
    struct outcome_input in = {.curl_code = code,
                               .curl_error = errbuf,
                               .retry_after_ms =
                                   5000, /* must not leak into the outcome */
                               .request_model = "req-model"};
    assert_int_equal(outcome_classify(&in, &out), 0);
}

static void expect(enum outcome_kind kind, const char *code, const char *message)
{
    assert_int_equal(out.kind, kind);
    assert_string_equal(out.code, code);
    if (message)
        assert_string_equal(out.message, message);
}

#define COMPLETION                                                                       \
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-2024\","   \
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"         \
    "\"Hello \\\"there\\\"\\n\"},\"finish_reason\":\"stop\"}],"                          \
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}"

static void test_completed(void **state)
{
    (void)state;
    http(200, COMPLETION, -1);
    assert_int_equal(out.kind, OUTCOME_COMPLETED);
    assert_string_equal(out.response, "Hello \"there\"\n");
    assert_int_equal(out.response_len, strlen("Hello \"there\"\n"));
    assert_string_equal(out.model, "gpt-4o-2024");
    assert_int_equal(out.prompt_tokens, 9);
    assert_int_equal(out.completion_tokens, 12);
    assert_int_equal(out.total_tokens, 21);
    assert_null(out.code);
}

static void test_completed_minimal(void **state)
{
    (void)state;
    /* No model, no usage: the request's model, unknown counts. Any 2xx counts. */
    http(201,
         "{\"choices\":[{\"message\":{\"content\":\"ok\"}}],\"usage\":{\"prompt_tokens\":"
         "-1,\"completion_tokens\":\"7\"}}",
         -1);
    assert_int_equal(out.kind, OUTCOME_COMPLETED);
    assert_string_equal(out.response, "ok");
    assert_string_equal(out.model, "req-model");
    assert_int_equal(out.prompt_tokens, -1);
    assert_int_equal(out.completion_tokens, -1);
    assert_int_equal(out.total_tokens, -1);
}

static void test_completed_keeps_nul_and_empty(void **state)
{
    (void)state;
    http(200, "{\"choices\":[{\"message\":{\"content\":\"a\\u0000b\"}}]}", -1);
    assert_int_equal(out.kind, OUTCOME_COMPLETED);
    assert_int_equal(out.response_len, 3);
    assert_memory_equal(out.response, "a\0b", 3);

    http(200, "{\"choices\":[{\"message\":{\"content\":\"\"}}]}", -1);
    assert_int_equal(out.kind, OUTCOME_COMPLETED);
    assert_int_equal(out.response_len, 0);
}

static void test_2xx_not_a_completion_is_retried(void **state)
{
    (void)state;
    http(200, "{\"choices\":[{\"message\":{\"content\":\"trunc", -1);
    expect(OUTCOME_RETRY, "upstream_invalid_response", NULL);
    assert_non_null(strstr(out.message, "invalid JSON"));

    http(200, "<html>hello</html>", -1);
    expect(OUTCOME_RETRY, "upstream_invalid_response", NULL);

    http(200, "", -1);
    expect(OUTCOME_RETRY, "upstream_invalid_response", NULL);

    http(200, "{\"object\":\"chat.completion\"}", -1);
    expect(OUTCOME_RETRY, "upstream_invalid_response",
           "upstream answered HTTP 200 but it has no choices");

    http(200, "{\"choices\":[]}", -1);
    expect(OUTCOME_RETRY, "upstream_invalid_response",
           "upstream answered HTTP 200 but it has no choices");

    http(200, "{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[]}}]}", -1);
    expect(OUTCOME_RETRY, "upstream_invalid_response",
           "upstream answered HTTP 200 but choices[0].message.content is not a string");

    http(200, "[1,2]", -1);
    expect(OUTCOME_RETRY, "upstream_invalid_response",
           "upstream answered HTTP 200 but it is not a JSON object");
    assert_int_equal(out.retry_after_ms, -1);
}

static void test_429_quota_is_final(void **state)
{
    (void)state;
    http(429,
         "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":"
         "\"insufficient_quota\",\"param\":null,\"code\":\"insufficient_quota\"}}",
         2000);
    expect(OUTCOME_FAILED, "insufficient_quota", "You exceeded your current quota");

    /* Either field marks it. */
    http(429, "{\"error\":{\"message\":\"no money\",\"type\":\"insufficient_quota\"}}",
         -1);
    expect(OUTCOME_FAILED, "insufficient_quota", "no money");
    http(429, "{\"error\":{\"message\":\"no money\",\"code\":\"insufficient_quota\"}}",
         -1);
    expect(OUTCOME_FAILED, "insufficient_quota", "no money");
}

static void test_429_rate_limit_is_retried_with_advice(void **state)
{
    (void)state;
    http(429,
         "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":"
         "\"rate_limit_exceeded\"}}",
         1500);
    expect(OUTCOME_RETRY, "upstream_rate_limited", "Rate limit reached");
    assert_int_equal(out.retry_after_ms, 1500);

    http(429, "Too Many Requests", -1);
    expect(OUTCOME_RETRY, "upstream_rate_limited", "upstream answered HTTP 429");
    assert_int_equal(out.retry_after_ms, -1);
}

static void test_5xx_408_409_are_retried(void **state)
{
    (void)state;
    http(
        500,
        "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}",
        -1);
    expect(OUTCOME_RETRY, "upstream_unavailable", "The server had an error");

    http(502, "<html><body>Bad Gateway</body></html>", -1);
    expect(OUTCOME_RETRY, "upstream_unavailable", "upstream answered HTTP 502");

    http(503, "", 7000);
    expect(OUTCOME_RETRY, "upstream_unavailable", "upstream answered HTTP 503");
    assert_int_equal(out.retry_after_ms, 7000);

    http(408, NULL, -1);
    expect(OUTCOME_RETRY, "upstream_timeout", "upstream answered HTTP 408");

    http(409, "{\"error\":{\"message\":\"busy\"}}", -1);
    expect(OUTCOME_RETRY, "upstream_conflict", "busy");
}

static void test_other_4xx_are_final(void **state)
{
    (void)state;
    http(401,
         "{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":"
         "\"invalid_request_error\",\"code\":\"invalid_api_key\"}}",
         -1);
    expect(OUTCOME_FAILED, "invalid_api_key", "Incorrect API key provided");

    http(400,
         "{\"error\":{\"message\":\"maximum context length is 4097 tokens\",\"code\":"
         "\"context_length_exceeded\"}}",
         -1);
    expect(OUTCOME_FAILED, "context_length_exceeded",
           "maximum context length is 4097 tokens");

    http(404, "{\"error\":{\"message\":\"The model does not exist\",\"code\":null}}", -1);
    expect(OUTCOME_FAILED, "upstream_404", "The model does not exist");

    http(422, "", -1);
    expect(OUTCOME_FAILED, "upstream_422", "upstream answered HTTP 422");

    /* A numeric code is not ours to use; a string error is a message. */
    http(403, "{\"error\":{\"message\":\"forbidden\",\"code\":403}}", -1);
    expect(OUTCOME_FAILED, "upstream_403", "forbidden");
    http(400, "{\"error\":\"bad thing\"}", -1);
    expect(OUTCOME_FAILED, "upstream_400", "bad thing");

    /* A redirect means a wrong base URL: asking again will not help. */
    http(301, "", -1);
    expect(OUTCOME_FAILED, "upstream_301", "upstream answered HTTP 301");
}

static void test_unknown_status_is_retried(void **state)
{
    (void)state;
    http(600, "", -1);
    expect(OUTCOME_RETRY, "upstream_invalid_response", "upstream answered HTTP 600");
    http(101, "", -1);
    expect(OUTCOME_RETRY, "upstream_invalid_response", "upstream answered HTTP 101");
}

static void test_message_cut_at_utf8_boundary(void **state)
{
    (void)state;
    /* 999 ASCII bytes, then a 2-byte character straddling the 1000-byte cut. */
    char msg[1200], body[1400];
    memset(msg, 'a', 999);
    strcpy(msg + 999, "\xc3\xa9 and more text after it");
    snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%s\",\"code\":\"too_long\"}}",
             msg);
    http(400, body, -1);
    expect(OUTCOME_FAILED, "too_long", NULL);
    assert_int_equal(strlen(out.message), 999);

    /* Exactly at the limit stays whole. */
    memset(msg, 'b', 998);
    strcpy(msg + 998, "\xc3\xa9");
    snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%s\"}}", msg);
    http(400, body, -1);
    assert_int_equal(strlen(out.message), 1000);
}

static void test_long_code_is_replaced(void **state)
{
    (void)state;
    char code[200], body[400];
    memset(code, 'x', sizeof(code) - 1);
    code[sizeof(code) - 1] = '\0';
    snprintf(body, sizeof(body), "{\"error\":{\"message\":\"m\",\"code\":\"%s\"}}", code);
    http(400, body, -1);
    expect(OUTCOME_FAILED, "upstream_400", "m");
}

static void test_transport_failures(void **state)
{
    (void)state;
    transport(CURLE_OPERATION_TIMEDOUT, "Operation timed out after 60000 milliseconds");
    expect(OUTCOME_RETRY, "upstream_timeout",
           "upstream timed out: Operation timed out after 60000 milliseconds");
    assert_int_equal(out.retry_after_ms, -1);

    transport(CURLE_COULDNT_CONNECT, "Failed to connect to 127.0.0.1 port 9");
    expect(OUTCOME_RETRY, "upstream_unreachable",
           "upstream unreachable: Failed to connect to 127.0.0.1 port 9");

    /* Our pre-request callback refused libcurl's second request on a fresh
     * connection. */
    transport(CURLE_ABORTED_BY_CALLBACK, "operation aborted by pre-request callback");
    expect(OUTCOME_RETRY, "upstream_connection_error",
           "connection to upstream failed: it closed a kept-alive connection without "
           "answering the request sent on it");

    transport(CURLE_COULDNT_RESOLVE_HOST, "");
    expect(OUTCOME_RETRY, "upstream_unreachable", NULL);
    /* Without curl's detail, its generic text. */
    assert_non_null(strstr(out.message, curl_easy_strerror(CURLE_COULDNT_RESOLVE_HOST)));

    CURLcode others[] = {CURLE_RECV_ERROR,   CURLE_SEND_ERROR,        CURLE_GOT_NOTHING,
                         CURLE_PARTIAL_FILE, CURLE_SSL_CONNECT_ERROR, CURLE_WRITE_ERROR};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        transport(others[i], NULL);
        expect(OUTCOME_RETRY, "upstream_connection_error", NULL);
    }
}

static void test_tls_failures_are_final(void **state)
{
    (void)state;
    transport(CURLE_PEER_FAILED_VERIFICATION,
              "SSL certificate problem: unable to get local issuer certificate");
    expect(OUTCOME_FAILED, "upstream_tls_error",
           "TLS with upstream failed: SSL certificate problem: unable to get local "
           "issuer certificate");
    assert_int_equal(out.retry_after_ms, -1);

    CURLcode others[] = {CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR,
                         CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        transport(others[i], NULL);
        expect(OUTCOME_FAILED, "upstream_tls_error", NULL);
        assert_non_null(strstr(out.message, curl_easy_strerror(others[i])));
    }
}

static void test_too_large_is_final(void **state)
{
    (void)state;
    struct outcome_input in = {.curl_code = CURLE_WRITE_ERROR,
                               .too_large = 1,
                               .max_bytes = 1024,
                               .http_status = 200,
                               .retry_after_ms = -1,
                               .request_model = "m"};
    assert_int_equal(outcome_classify(&in, &out), 0);
    expect(OUTCOME_FAILED, "upstream_response_too_large",
           "upstream response exceeded 1024 bytes");
}

/* MAX_COMPLETION_BYTES (16 here) on the decoded text: refused whole, never cut. */
static void test_completion_cap_is_final(void **state)
{
    (void)state;
    http(200, "{\"choices\":[{\"message\":{\"content\":\"0123456789abcdef\"}}]}", -1);
    assert_int_equal(out.kind, OUTCOME_COMPLETED);
    assert_int_equal(out.response_len, 16);
    /* Escaped, 17 bytes once decoded. */
    http(200, "{\"choices\":[{\"message\":{\"content\":\"0123456789abcde\\u00e9\"}}]}",
         -1);
    expect(OUTCOME_FAILED, "completion_too_large",
           "the upstream's answer exceeded MAX_COMPLETION_BYTES (16 bytes)");
    assert_null(out.response);

    /* Stopped by the write callback before the body was whole. */
    struct outcome_input in = {.curl_code = CURLE_WRITE_ERROR,
                               .too_long = 1,
                               .max_completion_bytes = 16,
                               .http_status = 200,
                               .body = "{\"choices\":[{\"mess",
                               .body_len = 18,
                               .retry_after_ms = -1,
                               .request_model = "m"};
    assert_int_equal(outcome_classify(&in, &out), 0);
    expect(OUTCOME_FAILED, "completion_too_large", NULL);
}

static void test_give_up(void **state)
{
    (void)state;
    http(500, "{\"error\":{\"message\":\"boom\"}}", 3000);
    assert_int_equal(outcome_give_up(&out, 5), 0);
    expect(OUTCOME_FAILED, "upstream_unavailable", "gave up after 5 attempts: boom");
    assert_int_equal(out.retry_after_ms, -1);
}

static void test_reclassify_frees_previous(void **state)
{
    (void)state;
    /* Classifying into a used outcome must not leak (ASan checks) nor keep stale
     * fields. */
    http(200, COMPLETION, -1);
    http(500, "", -1);
    assert_null(out.response);
    assert_null(out.model);
    assert_int_equal(out.prompt_tokens, -1);
    http(200, COMPLETION, -1);
    assert_null(out.code);
    assert_null(out.message);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_completed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completed_minimal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completed_keeps_nul_and_empty, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_2xx_not_a_completion_is_retried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_429_quota_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_429_rate_limit_is_retried_with_advice, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_5xx_408_409_are_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_4xx_are_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_status_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_cut_at_utf8_boundary, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_long_code_is_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_failures_are_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completion_cap_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_give_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reclassify_frees_previous, setup, teardown),
    };
    return cmocka_run_group_tests_name("outcome", tests, NULL, NULL);
}
