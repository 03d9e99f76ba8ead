/* reply.c - building and sending the api's JSON responses (see reply.h). */
#include "reply.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <civetweb.h>

#include "access.h"
#include "cmd.h"
#include "uuid.h"
#include "utf8.h"

void reply_init(struct reply *r)
{
    r->buf = r->inline_buf;
    r->len = 0;
    r->cap = REPLY_INLINE;
    r->oom = 0;
    r->close = 0;
    r->allow = NULL;
    r->head = NULL;
    r->type = NULL;
    r->trace = NULL;
    r->extra_len = 0;
}

void reply_free(struct reply *r)
{
    if (r->buf != r->inline_buf)
        free(r->buf);
    r->buf = r->inline_buf;
    r->len = 0;
    r->cap = REPLY_INLINE;
}

/* Makes room for extra more body bytes; 0, or -1 (and oom set) if memory ran out. */
static int reply_reserve(struct reply *r, size_t extra)
{
    if (r->oom)
        return -1;
    if (extra <= r->cap - r->len)
        return 0;
    size_t cap = r->cap * 2;
    if (cap < r->len + extra)
        cap = r->len + extra;
    char *buf;
    if (r->buf == r->inline_buf) {
        buf = malloc(REPLY_HEAD_ROOM + cap);
        if (buf != NULL)
            memcpy(buf + REPLY_HEAD_ROOM, r->buf + REPLY_HEAD_ROOM, r->len);
    } else {
        buf = realloc(r->buf, REPLY_HEAD_ROOM + cap);
    }
    if (buf == NULL) {
        r->oom = 1;
        return -1;
    }
    r->buf = buf;
    r->cap = cap;
    return 0;
}

void reply_raw(struct reply *r, const char *s, size_t n)
{
    if (reply_reserve(r, n) != 0)
        return;
    memcpy(r->buf + REPLY_HEAD_ROOM + r->len, s, n);
    r->len += n;
}

void reply_str(struct reply *r, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;

    /* Most text needs no escaping: reserve for that, grow on demand otherwise. */
    if (reply_reserve(r, n + 2) != 0)
        return;
    reply_lit(r, "\"");
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            reply_raw(r, (const char *)run, (size_t)(p - run));
        if (p == end)
            break;
        if (*p >= 0x80) {
            size_t len = utf8_seq_len((const char *)p, (size_t)(end - p));
            if (len == 0) {
                reply_lit(r, "\\ufffd");
                p++;
            } else {
                reply_raw(r, (const char *)p, len);
                p += len;
            }
            continue;
        }
        char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 0xf]};
        size_t elen = 6;
        switch (*p) {
        case '"':
        case '\\':
            esc[1] = (char)*p;
            elen = 2;
            break;
        case '\n':
            esc[1] = 'n';
            elen = 2;
            break;
        case '\r':
            esc[1] = 'r';
            elen = 2;
            break;
        case '\t':
            esc[1] = 't';
            elen = 2;
            break;
        }
        reply_raw(r, esc, elen);
        p++;
    }
    reply_lit(r, "\"");
}

void reply_strz(struct reply *r, const char *s)
{
    reply_str(r, s, strlen(s));
}

void reply_ll(struct reply *r, long long v)
{
    char num[CMD_LL_MAX];
    reply_raw(r, num, cmd_format_ll(num, v));
}

void reply_header(struct reply *r, const char *name, const char *fmt, ...)
{
    char value[REPLY_EXTRA];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof(value), fmt, ap);
    va_end(ap);
    size_t room = sizeof(r->extra) - r->extra_len;
    int n = snprintf(r->extra + r->extra_len, room, "%s: %s\r\n", name, value);
    if (n > 0 && (size_t)n < room)
        r->extra_len += (size_t)n;
    else
        r->extra[r->extra_len] = '\0';
}

int reply_is_openai(struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *path = ri != NULL ? ri->local_uri : NULL;
    return path != NULL && (strcmp(path, "/v1") == 0 || strncmp(path, "/v1/", 4) == 0);
}

const char *reply_openai_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

void reply_openai_error_body(struct reply *r, const char *message, const char *type,
                             const char *param, const char *code)
{
    reply_lit(r, "{\"error\":{\"message\":");
    reply_strz(r, message);
    reply_lit(r, ",\"type\":");
    reply_strz(r, type);
    reply_lit(r, ",\"param\":");
    if (param != NULL)
        reply_strz(r, param);
    else
        reply_lit(r, "null");
    reply_lit(r, ",\"code\":");
    if (code != NULL)
        reply_strz(r, code);
    else
        reply_lit(r, "null");
    reply_lit(r, "}}");
}

void reply_error_body(struct reply *r, const char *code, const char *message)
{
    reply_lit(r, "{\"error\":{\"code\":");
    reply_strz(r, code);
    reply_lit(r, ",\"message\":");
    reply_strz(r, message);
    reply_lit(r, "}}");
}

static atomic_int reply_closing;
/* Seconds announced in Keep-Alive (0: no header); -1: no keep-alive at all. */
static atomic_int reply_keepalive;

void reply_keep_alive_hint(int seconds)
{
    atomic_store(&reply_keepalive, seconds);
}

void reply_close_all(void)
{
    atomic_store(&reply_closing, 1);
}

/* 1 if the connection may stay open after this response, as HTTP says. */
static int reply_keep_alive(struct reply *r, struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (r->close || atomic_load(&reply_closing) || atomic_load(&reply_keepalive) < 0 ||
        ri == NULL || ri->http_version == NULL)
        return 0;
    const char *c = mg_get_header(conn, "Connection");
    if (strcmp(ri->http_version, "1.1") == 0)
        return c == NULL || strcasestr(c, "close") == NULL;
    return c != NULL && strcasestr(c, "keep-alive") != NULL;
}

/* Reads and drops what the handler left of the request body (a 404 or 405 to a
 * POST, say), since civetweb would parse those bytes as the next request. Too much
 * left: the connection is closed instead. */
static void reply_drain(struct reply *r, struct mg_connection *conn)
{
    char scrap[8192];
    size_t total = 0;
    if (r->close)
        return;
    for (;;) {
        int n = mg_read(conn, scrap, sizeof(scrap));
        if (n == 0)
            return;
        total += n > 0 ? (size_t)n : 0;
        if (n < 0 || total > REPLY_DRAIN_MAX) {
            r->close = 1;
            return;
        }
    }
}

int reply_send(struct reply *r, struct mg_connection *conn, int status)
{
    if (r->oom) {
        reply_free(r);
        r->oom = 0;
        status = 500;
        reply_error_body(r, "internal_error", "the server ran out of memory");
    }
    reply_drain(r, conn);
    /* Every answer of the OpenAI front names itself, as OpenAI's do (the SDKs show
     * it in their errors); the handler may have set one already. */
    if (reply_is_openai(conn) &&
        memmem(r->extra, r->extra_len, "x-request-id:", 13) == NULL) {
        char id[UUID_LEN + 1];
        if (uuid_v4(id) == 0)
            reply_header(r, "x-request-id", "req_%.8s%.4s%.4s%.4s%.12s", id, id + 9,
                         id + 14, id + 19, id + 24);
    }
    int keep = reply_keep_alive(r, conn);
    if (!keep)
        mg_disable_keep_alive(conn);

    /* A browser page may read the answer only when its origin is one CORS_ORIGINS
     * names; Vary keeps a cache from handing one origin's answer to another. */
    const char *origin = access_cors_origin(mg_get_header(conn, "Origin"));
    char head[REPLY_HEAD_ROOM], hint[48] = "";
    int secs = atomic_load(&reply_keepalive);
    if (keep && secs > 0)
        snprintf(hint, sizeof(hint), "Keep-Alive: timeout=%d\r\n", secs);
    int hlen = snprintf(
        head, sizeof(head),
        "HTTP/1.1 %d %s\r\n"
        "Content-Type: %s\r\n"
        "Content-Length: %zu\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: %s\r\n"
        "%s"
        "%s%s%s"
        "%s%.*s%s%s%s%s"
        "%s%s%s%s"
        "\r\n",
        status, mg_get_response_code_text(conn, status),
        r->type ? r->type : "application/json", r->len, keep ? "keep-alive" : "close",
        hint, r->allow ? "Allow: " : "", r->allow ? r->allow : "", r->allow ? "\r\n" : "",
        r->head ? r->head : "", (int)r->extra_len, r->extra,
        access_cors_on() ? "Vary: Origin\r\n" : "",
        origin ? "Access-Control-Allow-Origin: " : "", origin ? origin : "",
        origin ? "\r\n" : "", r->trace ? "X-Trace-Id: " : "", r->trace ? r->trace : "",
        r->trace ? "\r\n" : "",
        r->trace && origin ? "Access-Control-Expose-Headers: X-Trace-Id\r\n" : "");
    /* The head is made of fixed text, a number, a static method list, static lines,
     * an origin of at most ACCESS_ORIGIN_MAX bytes, a UUID and REPLY_EXTRA: it
     * fits. */
    if (hlen > 0 && (size_t)hlen < sizeof(head)) {
        char *start = r->buf + REPLY_HEAD_ROOM - hlen;
        const struct mg_request_info *ri = mg_get_request_info(conn);
        /* A response to HEAD has the head only, or the client would read the body
         * as the next response. */
        int head_only = ri != NULL && ri->request_method != NULL &&
                        strcmp(ri->request_method, "HEAD") == 0;
        memcpy(start, head, (size_t)hlen);
        mg_write(conn, start, (size_t)hlen + (head_only ? 0 : r->len));
    }
    reply_free(r);
    return status;
}

int reply_error(struct reply *r, struct mg_connection *conn, int status, const char *code,
                const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (reply_is_openai(conn))
        reply_openai_error_body(r, message, reply_openai_type(status), NULL, code);
    else
        reply_error_body(r, code, message);
    return reply_send(r, conn, status);
}
