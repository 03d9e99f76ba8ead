/* test_http_strict.c - how chatq-api treats requests whose framing is ambiguous,
 * written byte for byte on a raw socket (libcurl would not send them): a request
 * with both Content-Length and Transfer-Encoding, differing Content-Length values,
 * and more header lines than civetweb keeps. Each must get a JSON 4xx and a closed
 * connection; nothing after it on the connection may run as another request. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define STRICT_WAIT_MS 5000
#define STRICT_MAX_ANSWER 65536

static struct stack strict_stack;

static int strict_setup(void **state)
{
    (void)state;
    return stack_start(&strict_stack, "strict", "ts:", NULL);
}

static int strict_teardown(void **state)
{
    (void)state;
    return stack_stop(&strict_stack);
}

/* What came back on the connection after sending a request. */
struct strict_answer {
    char raw[STRICT_MAX_ANSWER + 1]; /* everything read, NUL-terminated */
    size_t len;
    int closed;          /* the server closed the connection within STRICT_WAIT_MS */
    int status;          /* of the first response, 0 if none */
    char connection[64]; /* its Connection header, "" if none */
    const char *body;    /* into raw: its body (Content-Length bytes) */
    size_t body_len;
    size_t rest; /* bytes after the first response: a second response */
};

/* Value of header name in the head [head, end) into out; 1 if found. */
static int strict_header(const char *head, const char *end, const char *name, char *out,
                         size_t outlen)
{
    size_t nlen = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line != NULL && line + 2 < end;
         line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nlen) == 0 && h[nlen] == ':') {
            const char *v = h + nlen + 1, *eol = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            size_t n = eol != NULL ? (size_t)(eol - v) : strlen(v);
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return 1;
        }
    }
    return 0;
}

/* Bytes of the first whole response in raw (NUL-terminated), or 0 if not all there. */
static size_t strict_first_len(const char *raw, size_t len)
{
    const char *end = strstr(raw, "\r\n\r\n");
    char cl[32] = "";
    if (end == NULL)
        return 0;
    end += 4;
    strict_header(raw, end, "Content-Length", cl, sizeof(cl));
    size_t want = (size_t)(end - raw) + (size_t)atol(cl);
    return want <= len ? want : 0;
}

/* Sends req (len bytes) on a new connection to the api and reads until the server
 * closes it or STRICT_WAIT_MS pass without data. As soon as the first response is
 * whole, it sends a GET /health on the same connection: a server that kept the
 * connection open answers it (seen as a second response), which tells "closed"
 * apart from civetweb merely dropping an idle keep-alive connection after
 * keep_alive_timeout_ms. 0, or -1 if the request could not be sent. */
static int strict_exchange(const char *req, size_t len, struct strict_answer *a)
{
    static const char probe[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    struct sockaddr_in sa;
    int probed = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(a, 0, sizeof(*a));
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)strict_stack.api_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        goto fail;
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        off += (size_t)n;
    }
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, STRICT_WAIT_MS);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break; /* still open */
        ssize_t n = recv(fd, a->raw + a->len, STRICT_MAX_ANSWER - a->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* A reset after the answer also means closed: the server closed with
             * unread request bytes. */
            a->closed = 1;
            break;
        }
        a->len += (size_t)n;
        if (a->len == STRICT_MAX_ANSWER)
            break;
        a->raw[a->len] = '\0';
        if (!probed && strict_first_len(a->raw, a->len) > 0) {
            /* Refused or reset when the server has closed: that is the point. */
            (void)send(fd, probe, strlen(probe), MSG_NOSIGNAL);
            probed = 1;
        }
    }
    close(fd);
    a->raw[a->len] = '\0';

    const char *end = strstr(a->raw, "\r\n\r\n");
    char cl[32] = "";
    if (strncmp(a->raw, "HTTP/1.", 7) != 0 || end == NULL)
        return 0;
    a->status = atoi(a->raw + 9);
    end += 4;
    strict_header(a->raw, end, "Connection", a->connection, sizeof(a->connection));
    strict_header(a->raw, end, "Content-Length", cl, sizeof(cl));
    a->body = end;
    a->body_len = (size_t)atol(cl);
    if (a->body_len > a->len - (size_t)(end - a->raw))
        a->body_len = a->len - (size_t)(end - a->raw);
    a->rest = a->len - (size_t)(end - a->raw) - a->body_len;
    return 0;
fail:
    close(fd);
    return -1;
}

/* Asserts a is one JSON error status/code, said with Connection: close, and that the
 * server closed the connection after it with nothing more. */
static void strict_check_error(const struct strict_answer *a, int status,
                               const char *code)
{
    CHECK(a->status == status, "status %d, want %d; the server sent:\n%s", a->status,
          status, a->raw);
    json_error_t jerr;
    json_t *j = json_loadb(a->body, a->body_len, 0, &jerr);
    CHECK(j != NULL, "the body is not JSON (%s): %.*s", jerr.text, (int)a->body_len,
          a->body);
    const char *got = http_error_code(j);
    int same = got != NULL && strcmp(got, code) == 0;
    int has_message = http_error_message(j) != NULL && *http_error_message(j) != '\0';
    char gotbuf[64];
    snprintf(gotbuf, sizeof(gotbuf), "%s", STR(got));
    json_decref(j);
    CHECK(same, "error code %s, want %s", gotbuf, code);
    CHECK(has_message, "the error has no message");
    CHECK(strcasecmp(a->connection, "close") == 0, "Connection: \"%s\", want close",
          a->connection);
    CHECK(a->rest == 0,
          "%zu more bytes after the first response (a second request ran):\n%s", a->rest,
          a->raw);
    CHECK(a->closed, "the connection stayed open after the error");
}

/* A proxy that frames by Content-Length forwards all of this as one request; a
 * server that frames by the chunked encoding sees the chat "first", then a second
 * request smuggled in after it. Neither may run. */
static void test_http_strict_length_and_chunked(void **state)
{
    (void)state;
    struct stack *s = &strict_stack;
    const char *smuggled_body = "{\"message\":\"smuggled past the proxy\"}";
    char smuggled[512], body[1024], req[2048];
    snprintf(smuggled, sizeof(smuggled),
             "POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(smuggled_body), smuggled_body);
    const char *first = "{\"message\":\"first\"}";
    snprintf(body, sizeof(body), "%zx\r\n%s\r\n0\r\n\r\n%s", strlen(first), first,
             smuggled);
    snprintf(req, sizeof(req),
             "POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nTransfer-Encoding: chunked\r\n\r\n%s",
             strlen(body), body);
    long long added = stack_xadded(s, s->keys.requests);
    static struct strict_answer a;
    CHECK(strict_exchange(req, strlen(req), &a) == 0, "could not send the request");
    CHECK(stack_xadded(s, s->keys.requests) == added,
          "%lld chats were queued (want none); the server sent:\n%s",
          stack_xadded(s, s->keys.requests) - added, a.raw);
    strict_check_error(&a, 400, "ambiguous_length");
}

/* Two Content-Length values: a proxy may have framed by the other one. */
static void test_http_strict_two_lengths(void **state)
{
    (void)state;
    struct stack *s = &strict_stack;
    const char *body = "{\"message\":\"two lengths\"}";
    char req[1024];
    snprintf(req, sizeof(req),
             "POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nContent-Length: 5\r\n\r\n%s",
             strlen(body), body);
    long long added = stack_xadded(s, s->keys.requests);
    static struct strict_answer a;
    CHECK(strict_exchange(req, strlen(req), &a) == 0, "could not send the request");
    CHECK(stack_xadded(s, s->keys.requests) == added,
          "a chat was queued (want none); the server sent:\n%s", a.raw);
    strict_check_error(&a, 400, "ambiguous_length");
}

/* The same in one line: civetweb reads the number "25, 5" starts with. */
static void test_http_strict_length_list(void **state)
{
    (void)state;
    struct stack *s = &strict_stack;
    const char *body = "{\"message\":\"a length list\"}";
    char req[1024];
    snprintf(req, sizeof(req),
             "POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu, 5\r\n\r\n%s",
             strlen(body), body);
    long long added = stack_xadded(s, s->keys.requests);
    static struct strict_answer a;
    CHECK(strict_exchange(req, strlen(req), &a) == 0, "could not send the request");
    CHECK(stack_xadded(s, s->keys.requests) == added,
          "a chat was queued (want none); the server sent:\n%s", a.raw);
    strict_check_error(&a, 400, "ambiguous_length");
}

/* The same value twice says the same thing (RFC 9110 8.6 lets a recipient take
 * it): accepted. */
static void test_http_strict_same_length_twice(void **state)
{
    (void)state;
    const char *body = "{\"message\":\"same length twice\"}";
    char req[1024];
    snprintf(req, sizeof(req),
             "POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), strlen(body), body);
    static struct strict_answer a;
    CHECK(strict_exchange(req, strlen(req), &a) == 0, "could not send the request");
    CHECK(a.status == 202, "status %d, want 202; the server sent:\n%s", a.status, a.raw);
}

/* Writes a GET /health with n header lines, the last one last (NULL: X-Filler too)
 * into req. */
static void strict_many_headers(char *req, size_t len, int n, const char *last)
{
    size_t off = (size_t)snprintf(req, len, "GET /health HTTP/1.1\r\nHost: x\r\n");
    for (int i = 1; i < n - 1; i++)
        off += (size_t)snprintf(req + off, len - off, "X-Filler-%d: %d\r\n", i, i);
    off += (size_t)snprintf(req + off, len - off, "%s\r\n\r\n",
                            last != NULL ? last : "X-Filler-last: 1");
}

/* civetweb keeps 64 header lines and drops the rest without a word: here the
 * Connection: close the client sent. */
static void test_http_strict_too_many_headers(void **state)
{
    (void)state;
    static char req[8192];
    static struct strict_answer a;
    strict_many_headers(req, sizeof(req), 70, "Connection: close");
    CHECK(strict_exchange(req, strlen(req), &a) == 0, "could not send the request");
    strict_check_error(&a, 431, "too_many_headers");
}

/* Up to the limit (63 lines: a 64th could hide a 65th) a request is served. */
static void test_http_strict_headers_at_limit(void **state)
{
    (void)state;
    static char req[8192];
    static struct strict_answer a;
    strict_many_headers(req, sizeof(req), 63, "Connection: close");
    CHECK(strict_exchange(req, strlen(req), &a) == 0, "could not send the request");
    CHECK(a.status == 200, "status %d, want 200; the server sent:\n%s", a.status, a.raw);
    CHECK(a.closed && a.rest == 0, "Connection: close (the 63rd line) was not honoured");
}

static const struct CMUnitTest strict_tests[] = {
    cmocka_unit_test(test_http_strict_length_and_chunked),
    cmocka_unit_test(test_http_strict_two_lengths),
    cmocka_unit_test(test_http_strict_length_list),
    cmocka_unit_test(test_http_strict_same_length_twice),
    cmocka_unit_test(test_http_strict_too_many_headers),
    cmocka_unit_test(test_http_strict_headers_at_limit),
};

const struct suite_group suite_strict = {"strict", strict_tests,
                                         sizeof(strict_tests) / sizeof(strict_tests[0]),
                                         strict_setup, strict_teardown};
