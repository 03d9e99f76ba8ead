/* upstream.c - curl multi glue, easy-handle pool and request building (see
 * upstream.h). The event plumbing follows curl's docs/examples/hiperfifo.c:
 * curl tells us which sockets to watch (upstream_on_socket) and when to call it
 * back (upstream_on_timer); libevent tells curl what happened through
 * curl_multi_socket_action, after which finished transfers are collected. */
#include "upstream.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <jansson.h>

#include "clock.h"
#include "log.h"
#include "record.h"
#include "retry.h"
#include "uuid.h"

/* curl's default receive buffer is 16 KiB per easy handle; answers are a few KiB
 * and thousands of handles may be in flight, so a smaller one keeps the memory
 * per request down at the price of a few more reads for a large answer. */
#define UPSTREAM_RECV_BUFFER 2048

/* First allocation for a response body; it doubles from there. */
#define UPSTREAM_RESP_MIN 1024

struct upstream {
    struct event_base *base; /* borrowed */
    CURLM *multi;
    struct event *timer; /* curl's single timeout */
    struct curl_slist *headers;
    char *url;
    const char *ca_file; /* borrowed; NULL: curl's default, the system's CAs */
    long long timeout_ms, connect_timeout_ms, max_response_bytes;
    long long max_completion_bytes;
    int tls; /* the URL is https:// */
    long running;
    CURL **pool; /* idle easy handles, kept for their reuse */
    size_t npool, pool_cap;
    upstream_done_fn *done;
    upstream_delta_fn *delta; /* NULL: none */
    void *done_arg;
};

/* ---- request building ---------------------------------------------------------- */

char *upstream_url_build(const char *base)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    static const char path[] = "/chat/completions";
    char *url = malloc(n + sizeof(path));
    if (url == NULL)
        return NULL;
    memcpy(url, base, n);
    memcpy(url + n, path, sizeof(path));
    return url;
}

/* The messages of a request record, checked: an array of one or more objects, each
 * with a string role and a string content, nothing else (the api wrote it; a hand-made
 * entry may not have). Returns new, or NULL with the reason in err. */
static json_t *upstream_messages(const struct chat_request *req, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *m = json_loadb(req->messages, req->messages_len, 0, &jerr);
    size_t i;
    json_t *item;
    if (m == NULL) {
        snprintf(err, errlen, "field '%s' is not JSON: %s", REC_MESSAGES, jerr.text);
        return NULL;
    }
    if (!json_is_array(m) || json_array_size(m) == 0)
        goto bad;
    json_array_foreach (m, i, item) {
        if (!json_is_object(item) || json_object_size(item) != 2 ||
            !json_is_string(json_object_get(item, "role")) ||
            !json_is_string(json_object_get(item, "content")))
            goto bad;
    }
    return m;
bad:
    snprintf(err, errlen, "field '%s' is not an array of {role, content} strings",
             REC_MESSAGES);
    json_decref(m);
    return NULL;
}

char *upstream_body_build(const struct chat_request *req, char *err, size_t errlen)
{
    char *out = NULL;
    json_t *messages, *root = NULL;

    snprintf(err, errlen, "out of memory");
    if (req->messages != NULL) {
        messages = upstream_messages(req, err, errlen);
    } else {
        /* json_stringn refuses invalid UTF-8, which no upstream would accept either. */
        json_t *content = json_stringn(req->message, req->message_len);
        if (content == NULL) {
            snprintf(err, errlen, "field '%s' is not valid UTF-8", REC_MESSAGE);
            return NULL;
        }
        messages = json_pack("[{s:s, s:o}]", "role", "user", "content", content);
    }
    if (messages == NULL)
        return NULL;
    root = json_pack("{s:s, s:o, s:f}", "model", req->model, "messages", messages,
                     "temperature", req->temperature);
    if (root == NULL)
        goto out;
    if (req->has_top_p && json_object_set_new(root, "top_p", json_real(req->top_p)) != 0)
        goto out;
    if (req->max_tokens > 0 &&
        json_object_set_new(root, "max_tokens", json_integer(req->max_tokens)) != 0)
        goto out;
    if (req->stream && (json_object_set_new(root, "stream", json_true()) != 0 ||
                        json_object_set_new(root, "stream_options",
                                            json_pack("{s:b}", "include_usage", 1)) != 0))
        goto out;
    if (req->params != NULL) {
        json_error_t jerr;
        json_t *params = json_loadb(req->params, req->params_len, 0, &jerr);
        const char *key;
        json_t *value;
        if (!json_is_object(params)) {
            snprintf(err, errlen, "field '%s' is not a JSON object", REC_PARAMS);
            json_decref(params);
            goto out;
        }
        /* They add to the request; they never replace what the record says. */
        json_object_foreach (params, key, value)
            if (json_object_get(root, key) == NULL)
                json_object_set(root, key, value);
        json_decref(params);
    }
    /* 15 significant digits print 0.7 as 0.7 rather than 0.69999999999999996. */
    out = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(15));
out:
    json_decref(root);
    return out;
}

/* ---- per-transfer state -------------------------------------------------------- */

static void upstream_limits_reset(struct upstream_limits *l)
{
    l->limit_requests = l->remaining_requests = l->reset_requests_ms = -1;
    l->limit_tokens = l->remaining_tokens = l->reset_tokens_ms = -1;
}

void upstream_xfer_init(struct upstream_xfer *x)
{
    memset(x, 0, sizeof(*x));
    x->retry_after_ms = x->retry_after_ms_hdr = -1;
    upstream_limits_reset(&x->limits);
}

void upstream_xfer_clear(struct upstream_xfer *x)
{
    free(x->body);
    free(x->resp);
    chunks_reset(&x->chunks);
    upstream_xfer_init(x);
}

void upstream_xfer_trace(struct upstream_xfer *x, const char *trace, int attempt)
{
    char hex[33];
    size_t n = 0;
    x->trace_lines[0][0] = x->trace_lines[1][0] = '\0';
    if (trace == NULL || !uuid_valid(trace))
        return;
    for (const char *c = trace; *c && n < 32; c++)
        if (*c != '-')
            hex[n++] = (char)tolower((unsigned char)*c);
    hex[n] = '\0';
    /* FNV-1a 64 of the trace and the attempt: a span id of its own per attempt,
     * never zero (which the format forbids). */
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = trace; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    h = (h ^ (uint64_t)(unsigned)attempt) * 1099511628211ULL;
    if (h == 0)
        h = 1;
    snprintf(x->trace_lines[0], UPSTREAM_TRACE_LINE, "X-Request-Id: %s", trace);
    snprintf(x->trace_lines[1], UPSTREAM_TRACE_LINE, "traceparent: 00-%s-%016llx-01", hex,
             (unsigned long long)h);
}

long long upstream_xfer_retry_after(const struct upstream_xfer *x)
{
    return x->retry_after_ms_hdr >= 0 ? x->retry_after_ms_hdr : x->retry_after_ms;
}

static int upstream_header_is(const char *line, size_t namelen, const char *name)
{
    return strlen(name) == namelen && strncasecmp(line, name, namelen) == 0;
}

static void upstream_limit_header(struct upstream_limits *l, const char *name,
                                  size_t namelen, const char *value, size_t valuelen)
{
    if (upstream_header_is(name, namelen, "limit-requests"))
        l->limit_requests = retry_count_parse(value, valuelen);
    else if (upstream_header_is(name, namelen, "remaining-requests"))
        l->remaining_requests = retry_count_parse(value, valuelen);
    else if (upstream_header_is(name, namelen, "reset-requests"))
        l->reset_requests_ms = retry_duration_parse(value, valuelen);
    else if (upstream_header_is(name, namelen, "limit-tokens"))
        l->limit_tokens = retry_count_parse(value, valuelen);
    else if (upstream_header_is(name, namelen, "remaining-tokens"))
        l->remaining_tokens = retry_count_parse(value, valuelen);
    else if (upstream_header_is(name, namelen, "reset-tokens"))
        l->reset_tokens_ms = retry_duration_parse(value, valuelen);
}

/* value without surrounding blanks and the line end, cut to fit out. */
static void upstream_header_value(char *out, size_t outlen, const char *value, size_t len)
{
    while (len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        len--;
    }
    while (len > 0 && strchr(" \t\r\n", value[len - 1]) != NULL)
        len--;
    if (len >= outlen)
        len = outlen - 1;
    memcpy(out, value, len);
    out[len] = '\0';
}

void upstream_header_line(struct upstream_xfer *x, const char *line, size_t len,
                          long long now_ms)
{
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        x->sse_type = 0;
        x->retry_after_ms = x->retry_after_ms_hdr = -1;
        x->upstream_id[0] = '\0';
        upstream_limits_reset(&x->limits);
        return;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL)
        return;
    size_t namelen = (size_t)(colon - line);
    const char *value = colon + 1;
    size_t valuelen = len - namelen - 1;
    if (upstream_header_is(line, namelen, "retry-after"))
        x->retry_after_ms = retry_after_parse(value, valuelen, now_ms);
    else if (upstream_header_is(line, namelen, "retry-after-ms"))
        x->retry_after_ms_hdr = retry_after_ms_parse(value, valuelen);
    else if (namelen > 12 && strncasecmp(line, "x-ratelimit-", 12) == 0)
        upstream_limit_header(&x->limits, line + 12, namelen - 12, value, valuelen);
    else if (upstream_header_is(line, namelen, "x-request-id"))
        upstream_header_value(x->upstream_id, sizeof(x->upstream_id), value, valuelen);
    else if (upstream_header_is(line, namelen, "content-type")) {
        char type[64];
        upstream_header_value(type, sizeof(type), value, valuelen);
        x->sse_type = strncasecmp(type, "text/event-stream", 17) == 0;
    }
}

const char *upstream_outcome_label(int curl_code, long http_status)
{
    if (curl_code == CURLE_OPERATION_TIMEDOUT)
        return "timeout";
    if (http_status == 429)
        return "429";
    if (http_status >= 200 && http_status < 600) {
        static const char *const classes[] = {"2xx", "3xx", "4xx", "5xx"};
        return classes[http_status / 100 - 2];
    }
    return "connection_error";
}

static size_t upstream_on_header(char *buf, size_t size, size_t n, void *userp)
{
    upstream_header_line(userp, buf, size * n, clock_now_ms());
    return size * n;
}

enum { SCAN_OUT, SCAN_IN, SCAN_ESC, SCAN_HEX };

size_t upstream_scan_feed(struct upstream_scan *sc, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        switch (sc->state) {
        case SCAN_OUT:
            if (c == '"')
                sc->state = SCAN_IN;
            break;
        case SCAN_IN:
            if (c == '"')
                sc->state = SCAN_OUT;
            else if (c == '\\')
                sc->state = SCAN_ESC;
            else
                sc->text++;
            break;
        case SCAN_ESC:
            if (c == 'u') {
                sc->state = SCAN_HEX;
                sc->hex = sc->nhex = 0;
            } else {
                sc->text++;
                sc->state = SCAN_IN;
            }
            break;
        case SCAN_HEX: {
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0) {
                /* Not JSON: the parser will say so; go on counting. */
                sc->state = SCAN_IN;
                break;
            }
            sc->hex = sc->hex * 16 + (unsigned)d;
            if (++sc->nhex < 4)
                break;
            /* Each half of a surrogate pair counts 2: the pair is 4 UTF-8 bytes. */
            sc->text += sc->hex < 0x80                          ? 1
                        : sc->hex < 0x800                       ? 2
                        : sc->hex >= 0xd800 && sc->hex < 0xe000 ? 2
                                                                : 3;
            sc->state = SCAN_IN;
            break;
        }
        }
    }
    return sc->text;
}

/* A streamed answer's bytes: read as they come, never kept whole. */
static size_t upstream_on_events(struct upstream_xfer *x, const char *buf, size_t len)
{
    size_t before = x->chunks.text_len;
    if (chunks_feed(&x->chunks, buf, len) != 0) {
        /* Short: curl fails the transfer; the flags and chunks.err say why. */
        x->too_long = x->chunks.too_long;
        return 0;
    }
    if (x->chunks.text_len > before && x->up->delta != NULL)
        x->up->delta(x, x->up->done_arg);
    return len;
}

static size_t upstream_on_body(char *buf, size_t size, size_t n, void *userp)
{
    struct upstream_xfer *x = userp;
    size_t len = size * n;
    size_t max = (size_t)x->up->max_response_bytes;

    if (x->sse < 0) {
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        x->sse = x->stream && x->sse_type && status >= 200 && status <= 299;
    }
    if (x->sse)
        return upstream_on_events(x, buf, len);

    /* Stop reading as soon as the answer cannot fit the completion cap, rather
     * than hold up to max_response_bytes of it only to refuse it: this is what
     * bounds the memory of a chat by the cap. */
    if (upstream_scan_feed(&x->scan, buf, len) >
        (size_t)x->up->max_completion_bytes + UPSTREAM_ENVELOPE_BYTES) {
        x->too_long = 1;
        return 0;
    }
    if (len > max - x->resp_len) {
        /* Returning short makes curl fail the transfer with CURLE_WRITE_ERROR; the
         * flag tells the classifier it was on purpose. */
        x->too_large = 1;
        return 0;
    }
    if (x->resp_len + len + 1 > x->resp_cap) {
        size_t cap = x->resp_cap ? x->resp_cap : UPSTREAM_RESP_MIN;
        while (cap < x->resp_len + len + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        char *p = realloc(x->resp, cap);
        if (p == NULL)
            return 0; /* a connection error to the classifier: retried */
        x->resp = p;
        x->resp_cap = cap;
    }
    memcpy(x->resp + x->resp_len, buf, len);
    x->resp_len += len;
    x->resp[x->resp_len] = '\0';
    return len;
}

/* One attempt is one request. When a kept-alive connection turns out dead after
 * the request went out on it (nothing came back), libcurl takes it for a stale
 * connection and sends the request again on a fresh one, within the same
 * transfer and unseen by us (Curl_retry_request, up to 5 times); an upstream that
 * did get the first one then runs it twice, and our attempt count and
 * UPSTREAM_MAX_ATTEMPTS no longer say how often the chat reached it. No option
 * turns that off, but curl calls this before every request it sends: the second
 * one is refused, which ends the transfer with CURLE_ABORTED_BY_CALLBACK, a
 * connection error like any other that retry.c counts and paces. (A read
 * callback that refuses to rewind the body would catch only the requests that
 * had left, but costs every transfer in flight curl's upload buffer.) */
static int upstream_on_prereq(void *userp, char *conn_primary_ip, char *conn_local_ip,
                              int conn_primary_port, int conn_local_port)
{
    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    struct upstream_xfer *x = userp;
    return ++x->requests > 1 ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

/* ---- easy-handle pool ---------------------------------------------------------- */

/* A new easy handle with everything set that is the same for every request. */
static CURL *upstream_easy_new(struct upstream *up)
{
    CURL *e = curl_easy_init();
    if (e == NULL)
        return NULL;
    curl_easy_setopt(e, CURLOPT_URL, up->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, up->headers);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)up->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)up->connect_timeout_ms);
    /* The certificate is always checked: a failure ends the chat with
     * upstream_tls_error rather than sending the API key to whoever answered. */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (up->ca_file != NULL)
        curl_easy_setopt(e, CURLOPT_CAINFO, up->ca_file);
    /* HTTP/2 when TLS negotiates it (ALPN), so many requests in flight share a
     * few connections instead of one each; HTTP/1.1 otherwise. */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* Over TLS, wait for a connection being set up rather than open another, in
     * case it turns out to multiplex (HTTP/2). Plain http:// is HTTP/1.1 with
     * 2TLS, and there curl cannot know that until the first response is in, so
     * waiting would hold every other request up by a whole upstream latency. */
    if (up->tls)
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)UPSTREAM_RECV_BUFFER);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, upstream_on_body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, upstream_on_header);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, upstream_on_prereq);
    return e;
}

static CURL *upstream_easy_take(struct upstream *up)
{
    if (up->npool > 0)
        return up->pool[--up->npool];
    return upstream_easy_new(up);
}

static void upstream_easy_give(struct upstream *up, CURL *e)
{
    /* Nothing of the last job may linger where a later transfer could touch it. */
    curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, NULL);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, up->headers);
    if (up->npool == up->pool_cap) {
        size_t cap = up->pool_cap ? up->pool_cap * 2 : 64;
        CURL **p = realloc(up->pool, cap * sizeof(*p));
        if (p == NULL) {
            curl_easy_cleanup(e);
            return;
        }
        up->pool = p;
        up->pool_cap = cap;
    }
    up->pool[up->npool++] = e;
}

/* ---- curl multi <-> libevent --------------------------------------------------- */

/* Hands finished transfers to the done callback. */
static void upstream_collect(struct upstream *up)
{
    CURLMsg *msg;
    int left;
    for (;;) {
        msg = curl_multi_info_read(up->multi, &left);
        if (msg == NULL)
            break;
        if (msg->msg != CURLMSG_DONE)
            continue;
        /* msg is invalid once the handle leaves the multi handle: copy first. */
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct upstream_xfer *x = NULL;
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &x->seconds);
        upstream_cancel(x);
        up->done(x, (int)rc, status, up->done_arg);
    }
}

static void upstream_on_event(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
                 ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int still;
    CURLMcode mc = curl_multi_socket_action(up->multi, fd, action, &still);
    if (mc != CURLM_OK)
        log_error(NULL, "curl_multi_socket_action: %s", curl_multi_strerror(mc));
    upstream_collect(up);
}

static void upstream_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream *up = arg;
    int still;
    CURLMcode mc = curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &still);
    if (mc != CURLM_OK)
        log_error(NULL, "curl_multi_socket_action: %s", curl_multi_strerror(mc));
    upstream_collect(up);
}

/* CURLMOPT_TIMERFUNCTION: -1 cancels, 0 means as soon as possible (from the event
 * loop, never from inside curl). */
static int upstream_on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct upstream *up = userp;
    if (timeout_ms < 0) {
        evtimer_del(up->timer);
        return 0;
    }
    struct timeval tv = clock_timeval(timeout_ms);
    return evtimer_add(up->timer, &tv) == 0 ? 0 : -1;
}

/* CURLMOPT_SOCKETFUNCTION: one persistent event per socket, kept with the socket
 * through curl_multi_assign. */
static int upstream_on_socket(CURL *e, curl_socket_t s, int what, void *userp,
                              void *sockp)
{
    (void)e;
    struct upstream *up = userp;
    struct event *ev = sockp;

    if (what == CURL_POLL_REMOVE) {
        if (ev) {
            event_free(ev);
            curl_multi_assign(up->multi, s, NULL);
        }
        return 0;
    }
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    if (ev == NULL) {
        ev = event_new(up->base, s, kind, upstream_on_event, up);
        if (ev == NULL)
            return -1;
        curl_multi_assign(up->multi, s, ev);
    } else {
        event_del(ev);
        event_assign(ev, up->base, s, kind, upstream_on_event, up);
    }
    return event_add(ev, NULL) == 0 ? 0 : -1;
}

/* ---- lifecycle ----------------------------------------------------------------- */

static struct curl_slist *upstream_headers(const char *api_key)
{
    struct curl_slist *h = NULL, *n = NULL;
    char *line = NULL;
    size_t len = 0;
    /* "Expect:" stops curl from waiting for a 100 Continue before larger bodies. */
    static const char *const fixed[] = {"Content-Type: application/json", "Expect:"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        n = curl_slist_append(h, fixed[i]);
        if (n == NULL)
            goto out;
        h = n;
    }
    if (api_key && api_key[0]) {
        static const char prefix[] = "Authorization: Bearer ";
        len = sizeof(prefix) + strlen(api_key);
        line = malloc(len);
        n = NULL;
        if (line == NULL)
            goto out;
        snprintf(line, len, "%s%s", prefix, api_key);
        n = curl_slist_append(h, line);
        if (n == NULL)
            goto out;
        h = n;
    }
out:
    if (line) {
        /* The key is secret: leave no stray copy in freed memory. */
        explicit_bzero(line, len);
        free(line);
    }
    if (n == NULL) {
        curl_slist_free_all(h);
        h = NULL;
    }
    return h;
}

struct upstream *upstream_new(struct event_base *base, const struct upstream_settings *s,
                              upstream_done_fn *done, void *arg, char *err, size_t errlen)
{
    struct upstream *up = calloc(1, sizeof(*up));
    if (up == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    up->base = base;
    up->done = done;
    up->done_arg = arg;
    up->timeout_ms = s->timeout_ms;
    up->connect_timeout_ms = s->connect_timeout_ms;
    up->max_response_bytes = s->max_response_bytes;
    up->max_completion_bytes = s->max_completion_bytes;
    up->url = upstream_url_build(s->base_url);
    up->tls = strncasecmp(s->base_url, "https://", 8) == 0;
    up->ca_file = s->ca_file != NULL && s->ca_file[0] ? s->ca_file : NULL;
    up->headers = upstream_headers(s->api_key);
    up->multi = curl_multi_init();
    up->timer = evtimer_new(base, upstream_on_timeout, up);
    if (up->url == NULL || up->headers == NULL || up->multi == NULL ||
        up->timer == NULL) {
        snprintf(err, errlen, "cannot set up curl: out of memory");
        upstream_free(up);
        return NULL;
    }
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, upstream_on_socket);
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, upstream_on_timer);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
    /* Keep as many idle connections as requests may be in flight, or curl closes
     * the surplus after each burst and pays for new connections on the next. */
    curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, (long)s->max_connections);
    /* Multiplex HTTP/2 streams on one connection (curl's default since 7.62, said
     * here because the connection count depends on it). No per-host connection
     * cap: curl opens another connection once one carries as many streams as the
     * server allows, and over HTTP/1.1 each request in flight needs its own. */
    curl_multi_setopt(up->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    return up;
}

void upstream_set_delta(struct upstream *up, upstream_delta_fn *delta)
{
    up->delta = delta;
}

void upstream_free(struct upstream *up)
{
    if (up == NULL)
        return;
    for (size_t i = 0; i < up->npool; i++)
        curl_easy_cleanup(up->pool[i]);
    free(up->pool);
    /* Closing the cached connections calls upstream_on_socket with
     * CURL_POLL_REMOVE, which frees their events: the timer and base must still
     * exist here. */
    if (up->multi)
        curl_multi_cleanup(up->multi);
    if (up->timer)
        event_free(up->timer);
    curl_slist_free_all(up->headers);
    free(up->url);
    free(up);
}

int upstream_start(struct upstream *up, struct upstream_xfer *x)
{
    CURL *e = upstream_easy_take(up);
    if (e == NULL)
        return -1;
    x->resp_len = 0;
    x->too_large = 0;
    x->upstream_id[0] = '\0';
    x->too_long = 0;
    x->sse = -1;
    x->sse_type = 0;
    chunks_reset(&x->chunks);
    /* One event holds a piece of text, escaped: bounded as a whole body is. */
    chunks_init(&x->chunks, (size_t)up->max_completion_bytes,
                (size_t)up->max_response_bytes);
    memset(&x->scan, 0, sizeof(x->scan));
    x->retry_after_ms = x->retry_after_ms_hdr = -1;
    if (x->trace_lines[0][0] != '\0') {
        x->trace_hdr[0].data = x->trace_lines[0];
        x->trace_hdr[0].next = &x->trace_hdr[1];
        x->trace_hdr[1].data = x->trace_lines[1];
        x->trace_hdr[1].next = up->headers;
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->trace_hdr);
    }
    upstream_limits_reset(&x->limits);
    x->errbuf[0] = '\0';
    x->requests = 0;
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    x->up = up;
    x->easy = e;
    CURLMcode mc = curl_multi_add_handle(up->multi, e);
    if (mc != CURLM_OK) {
        log_error(NULL, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        x->up = NULL;
        x->easy = NULL;
        upstream_easy_give(up, e);
        return -1;
    }
    up->running++;
    return 0;
}

void upstream_cancel(struct upstream_xfer *x)
{
    if (x->easy == NULL)
        return;
    struct upstream *up = x->up;
    curl_multi_remove_handle(up->multi, x->easy);
    upstream_easy_give(up, x->easy);
    up->running--;
    x->easy = NULL;
    x->up = NULL;
}

long upstream_running(const struct upstream *up)
{
    return up->running;
}
