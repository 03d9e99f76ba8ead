/* test_upstream.c - unit tests of processor/upstream.c: the request URL and body,
 * the Retry-After header capture, and the curl-multi-on-libevent glue run against
 * a small evhttp server in the same process (many transfers at once, the
 * response-size cap, a timeout, a refused connection, handle reuse). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "../../processor/upstream.h"
#include "record.h"

/* ---- pure parts ---------------------------------------------------------------- */

/* The text of a body's strings, decoded, whatever its escapes and however the
 * body is cut into pieces. */
static void test_scan_counts_decoded_text(void **state)
{
    (void)state;
    /* "ab" 2, "\n" 1, "\u00e9" 2, "\u20ac" 3, "\ud83d\ude00" 4, "é" raw 2,
     * "\"" 1, key "k" 1: 16. Numbers and punctuation are not text. */
    static const char body[] = "{\"k\": [\"ab\\n\\u00e9\\u20AC\\ud83d\\ude00\", "
                               "12.5, \"\xc3\xa9\\\"\"]}";
    struct upstream_scan whole = {0};
    assert_int_equal(upstream_scan_feed(&whole, body, strlen(body)), 16);
    for (size_t cut = 0; cut <= strlen(body); cut++) {
        struct upstream_scan parts = {0};
        upstream_scan_feed(&parts, body, cut);
        assert_int_equal(upstream_scan_feed(&parts, body + cut, strlen(body) - cut), 16);
    }
}

static void test_url_build(void **state)
{
    (void)state;
    const char *bases[] = {"http://h:1/v1", "http://h:1/v1/", "http://h:1/v1///"};
    for (size_t i = 0; i < 3; i++) {
        char *u = upstream_url_build(bases[i]);
        assert_string_equal(u, "http://h:1/v1/chat/completions");
        free(u);
    }
    char *u = upstream_url_build("https://api.openai.com/v1");
    assert_string_equal(u, "https://api.openai.com/v1/chat/completions");
    free(u);
}

static void test_body_build(void **state)
{
    (void)state;
    const char msg[] = "h\xc3\xa9llo \"you\"\n\ttab\0nul";
    char err[128];
    struct chat_request req = {.model = "gpt-4o-mini",
                               .message = msg,
                               .message_len = sizeof(msg) - 1,
                               .temperature = 0.7};
    char *body = upstream_body_build(&req, err, sizeof(err));
    assert_non_null(body);
    /* Compact, and 0.7 printed as typed. */
    assert_non_null(strstr(body, "\"temperature\":0.7}"));
    assert_null(strchr(body, '\n'));

    json_error_t jerr;
    json_t *root = json_loads(body, JSON_ALLOW_NUL, &jerr);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "model")), "gpt-4o-mini");
    json_t *m = json_array_get(json_object_get(root, "messages"), 0);
    assert_int_equal(json_array_size(json_object_get(root, "messages")), 1);
    assert_string_equal(json_string_value(json_object_get(m, "role")), "user");
    json_t *content = json_object_get(m, "content");
    assert_int_equal(json_string_length(content), sizeof(msg) - 1);
    assert_memory_equal(json_string_value(content), msg, sizeof(msg) - 1);
    assert_true(json_real_value(json_object_get(root, "temperature")) == 0.7);
    assert_int_equal(json_object_size(root), 3);
    json_decref(root);
    free(body);

    struct chat_request zero = {.model = "m", .message = "x", .message_len = 1};
    body = upstream_body_build(&zero, err, sizeof(err));
    assert_non_null(strstr(body, "\"temperature\":0.0"));
    assert_null(strstr(body, "stream"));
    free(body);

    /* A streamed chat asks for the usage too: it comes as the last chunk. */
    zero.stream = 1;
    body = upstream_body_build(&zero, err, sizeof(err));
    assert_non_null(strstr(body, "\"stream\":true"));
    assert_non_null(strstr(body, "\"stream_options\":{\"include_usage\":true}"));
    free(body);
}

static void test_body_rejects_bad_utf8(void **state)
{
    (void)state;
    char err[128];
    struct chat_request req = {
        .model = "m", .message = "bad \xff\xfe", .message_len = 6, .temperature = 1};
    assert_null(upstream_body_build(&req, err, sizeof(err)));
    assert_non_null(strstr(err, "UTF-8"));
}

/* A conversation travels in order, with top_p and the token cap; a malformed one is
 * refused with a reason. */
static void test_body_messages(void **state)
{
    (void)state;
    static const char conv[] = "[{\"role\":\"system\",\"content\":\"be brief\"},"
                               "{\"role\":\"user\",\"content\":\"hi\"},"
                               "{\"role\":\"assistant\",\"content\":\"hello\"},"
                               "{\"role\":\"user\",\"content\":\"again\"}]";
    char err[128];
    struct chat_request req = {.model = "m",
                               .messages = conv,
                               .messages_len = sizeof(conv) - 1,
                               .temperature = 0.2,
                               .top_p = 0.5,
                               .has_top_p = 1,
                               .max_tokens = 77};
    char *body = upstream_body_build(&req, err, sizeof(err));
    assert_non_null(body);
    assert_non_null(strstr(body, conv));
    assert_non_null(strstr(body, "\"top_p\":0.5"));
    assert_non_null(strstr(body, "\"max_tokens\":77"));
    free(body);

    const char *bad[] = {"[]", "{}", "[{\"role\":\"user\"}]",
                         "[{\"role\":\"user\",\"content\":[1]}]", "nope"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        req.messages = bad[i];
        req.messages_len = strlen(bad[i]);
        assert_null(upstream_body_build(&req, err, sizeof(err)));
        assert_non_null(strstr(err, "messages"));
    }
}

static void header(struct upstream_xfer *x, const char *line, long long now_ms)
{
    upstream_header_line(x, line, strlen(line), now_ms);
}

static void test_header_capture(void **state)
{
    (void)state;
    struct upstream_xfer x;
    upstream_xfer_init(&x);
    assert_int_equal(upstream_xfer_retry_after(&x), -1);

    header(&x, "HTTP/1.1 429 Too Many Requests\r\n", 0);
    header(&x, "Content-Type: application/json\r\n", 0);
    header(&x, "retry-after: 2\r\n", 0);
    assert_int_equal(upstream_xfer_retry_after(&x), 2000);
    /* The precise one wins whatever the order. */
    header(&x, "Retry-After-Ms: 1234\r\n", 0);
    assert_int_equal(upstream_xfer_retry_after(&x), 1234);
    header(&x, "RETRY-AFTER: 9\r\n", 0);
    assert_int_equal(upstream_xfer_retry_after(&x), 1234);

    /* A new status line (after an interim 100) forgets the earlier advice. */
    header(&x, "HTTP/2 503\r\n", 0);
    assert_int_equal(upstream_xfer_retry_after(&x), -1);
    long long at = (long long)curl_getdate("Wed, 21 Oct 2015 07:28:00 GMT", NULL) * 1000;
    header(&x, "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", at - 4000);
    assert_int_equal(upstream_xfer_retry_after(&x), 4000);
    header(&x, "Retry-After: whenever\r\n", 0);
    assert_int_equal(upstream_xfer_retry_after(&x), -1);

    /* Lookalike names and malformed lines are ignored. */
    header(&x, "X-Retry-After: 5\r\n", 0);
    header(&x, "Retry-After-Seconds: 5\r\n", 0);
    header(&x, "no colon here\r\n", 0);
    header(&x, "\r\n", 0);
    assert_int_equal(upstream_xfer_retry_after(&x), -1);
    upstream_xfer_clear(&x);
}

/* ---- against a real server ----------------------------------------------------- */

struct server {
    struct event_base *base;
    struct evhttp *http;
    int port;
    int hits;
    struct evhttp_request *hung; /* a request never answered, until teardown */
};

static void server_on_request(struct evhttp_request *req, void *arg)
{
    struct server *s = arg;
    const char *uri = evhttp_request_get_uri(req);
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evbuffer *out = evbuffer_new();
    s->hits++;

    if (strncmp(uri, "/hang/", 6) == 0) {
        s->hung = req;
        evbuffer_free(out);
        return;
    }
    if (strncmp(uri, "/big/", 5) == 0) {
        char chunk[1024];
        memset(chunk, 'z', sizeof(chunk));
        for (int i = 0; i < 10; i++)
            evbuffer_add(out, chunk, sizeof(chunk));
        evhttp_send_reply(req, 200, "OK", out);
        evbuffer_free(out);
        return;
    }
    /* /ok/: echo what arrived, so the test sees the method, headers and body. */
    const char *auth = evhttp_find_header(in, "Authorization");
    const char *ctype = evhttp_find_header(in, "Content-Type");
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    evbuffer_add_printf(out, "%s|%s|%s|",
                        evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "?",
                        auth ? auth : "-", ctype ? ctype : "-");
    evbuffer_add_buffer(out, body);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "3");
    evhttp_send_reply(req, 429, "Too Many", out);
    evbuffer_free(out);
}

static void server_start(struct server *s)
{
    memset(s, 0, sizeof(*s));
    s->base = event_base_new();
    s->http = evhttp_new(s->base);
    assert_non_null(s->http);
    struct evhttp_bound_socket *b =
        evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    assert_non_null(b);
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    assert_int_equal(
        getsockname(evhttp_bound_socket_get_fd(b), (struct sockaddr *)&sin, &len), 0);
    s->port = ntohs(sin.sin_port);
    evhttp_set_gencb(s->http, server_on_request, s);
}

static void server_stop(struct server *s)
{
    evhttp_free(s->http);
    event_base_free(s->base);
}

struct call {
    struct upstream_xfer x; /* first: the done callback finds the call from it */
    int done;
    int curl_code;
    long status;
    char *resp;
    int too_large;
    long long retry_after;
};

struct run {
    struct event_base *base;
    int pending;
};

static void on_done(struct upstream_xfer *x, int curl_code, long status, void *arg)
{
    struct run *r = arg;
    struct call *c = (struct call *)(void *)x;
    c->done++;
    c->curl_code = curl_code;
    c->status = status;
    c->resp = x->resp ? strdup(x->resp) : NULL;
    c->too_large = x->too_large;
    c->retry_after = upstream_xfer_retry_after(x);
    if (--r->pending == 0)
        event_base_loopbreak(r->base);
}

static struct upstream *client(struct server *s, struct run *r, const char *path,
                               const char *key, long long timeout_ms)
{
    char base[128];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d%s", s->port, path);
    struct upstream_settings set = {.base_url = base,
                                    .api_key = key,
                                    .timeout_ms = timeout_ms,
                                    .connect_timeout_ms = 2000,
                                    .max_response_bytes = 4096,
                                    .max_completion_bytes = 1048576,
                                    .max_connections = 64};
    char err[128];
    r->base = s->base;
    struct upstream *up = upstream_new(s->base, &set, on_done, r, err, sizeof(err));
    assert_non_null(up);
    return up;
}

static void start(struct upstream *up, struct run *r, struct call *c, const char *body)
{
    memset(c, 0, sizeof(*c));
    upstream_xfer_init(&c->x);
    c->x.body = strdup(body);
    c->x.body_len = strlen(body);
    assert_int_equal(upstream_start(up, &c->x), 0);
    r->pending++;
}

static void run_until_done(struct run *r)
{
    struct timeval limit = {.tv_sec = 10};
    event_base_loopexit(r->base, &limit);
    event_base_dispatch(r->base);
    assert_int_equal(r->pending, 0);
}

static void call_clear(struct call *c)
{
    upstream_xfer_clear(&c->x);
    free(c->resp);
}

#define NCALLS 200

static void test_many_at_once_and_reuse(void **state)
{
    (void)state;
    struct server s;
    server_start(&s);
    struct run r = {0};
    struct upstream *up = client(&s, &r, "/ok/v1/", "sk-test", 5000);
    struct call *calls = calloc(NCALLS, sizeof(*calls));

    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < NCALLS; i++) {
            char body[64];
            snprintf(body, sizeof(body), "{\"n\":%d}", i);
            start(up, &r, &calls[i], body);
        }
        assert_int_equal(upstream_running(up), NCALLS);
        run_until_done(&r);
        assert_int_equal(upstream_running(up), 0);
        for (int i = 0; i < NCALLS; i++) {
            char expect[128];
            snprintf(expect, sizeof(expect),
                     "POST|Bearer sk-test|application/json|{\"n\":%d}", i);
            assert_int_equal(calls[i].done, 1);
            assert_int_equal(calls[i].curl_code, CURLE_OK);
            assert_int_equal(calls[i].status, 429);
            assert_string_equal(calls[i].resp, expect);
            assert_int_equal(calls[i].retry_after, 3000);
            assert_null(calls[i].x.easy);
            call_clear(&calls[i]);
        }
    }
    assert_int_equal(s.hits, 2 * NCALLS);
    free(calls);
    upstream_free(up);
    server_stop(&s);
}

static void test_no_key_no_header(void **state)
{
    (void)state;
    struct server s;
    server_start(&s);
    struct run r = {0};
    struct upstream *up = client(&s, &r, "/ok/v1", "", 5000);
    struct call c;
    start(up, &r, &c, "{}");
    run_until_done(&r);
    assert_string_equal(c.resp, "POST|-|application/json|{}");
    call_clear(&c);
    upstream_free(up);
    server_stop(&s);
}

static void test_response_cap(void **state)
{
    (void)state;
    struct server s;
    server_start(&s);
    struct run r = {0};
    struct upstream *up = client(&s, &r, "/big/v1", NULL, 5000);
    struct call c;
    start(up, &r, &c, "{}");
    run_until_done(&r);
    assert_int_equal(c.curl_code, CURLE_WRITE_ERROR);
    assert_int_equal(c.too_large, 1);
    assert_true(c.x.resp_len <= 4096);
    call_clear(&c);
    upstream_free(up);
    server_stop(&s);
}

static void test_timeout_and_cancel(void **state)
{
    (void)state;
    struct server s;
    server_start(&s);
    struct run r = {0};
    struct upstream *up = client(&s, &r, "/hang/v1", NULL, 300);
    struct call c, d;
    start(up, &r, &c, "{}");
    run_until_done(&r);
    assert_int_equal(c.curl_code, CURLE_OPERATION_TIMEDOUT);
    assert_int_equal(c.status, 0);
    assert_non_null(strstr(c.x.errbuf, "timed out"));
    call_clear(&c);

    /* A cancelled transfer never calls back and frees its handle for reuse. */
    start(up, &r, &d, "{}");
    upstream_cancel(&d.x);
    r.pending--;
    assert_int_equal(upstream_running(up), 0);
    assert_int_equal(d.done, 0);
    upstream_cancel(&d.x); /* twice is harmless */
    call_clear(&d);
    upstream_free(up);
    server_stop(&s);
}

static void test_refused(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct run r = {.base = base};
    struct upstream_settings set = {.base_url = "http://127.0.0.1:1/v1",
                                    .timeout_ms = 5000,
                                    .connect_timeout_ms = 2000,
                                    .max_response_bytes = 4096,
                                    .max_completion_bytes = 1048576,
                                    .max_connections = 4};
    char err[128];
    struct upstream *up = upstream_new(base, &set, on_done, &r, err, sizeof(err));
    struct call c;
    start(up, &r, &c, "{}");
    run_until_done(&r);
    assert_int_equal(c.curl_code, CURLE_COULDNT_CONNECT);
    call_clear(&c);
    upstream_free(up);
    event_base_free(base);
}

static int group_setup(void **state)
{
    (void)state;
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    curl_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_build),
        cmocka_unit_test(test_scan_counts_decoded_text),
        cmocka_unit_test(test_body_build),
        cmocka_unit_test(test_body_rejects_bad_utf8),
        cmocka_unit_test(test_body_messages),
        cmocka_unit_test(test_header_capture),
        cmocka_unit_test(test_many_at_once_and_reuse),
        cmocka_unit_test(test_no_key_no_header),
        cmocka_unit_test(test_response_cap),
        cmocka_unit_test(test_timeout_and_cancel),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests_name("upstream", tests, group_setup, group_teardown);
}
