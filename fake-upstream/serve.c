/*
 * serve.c - the HTTP side of the fake upstream: routes, the life of one chat request
 * (arrival, rate limit, scripted delay, answer / drip / hang / close / reset, end),
 * and /stats.
 *
 * Everything runs on one libevent loop so thousands of slow requests cost a few KB
 * each instead of a thread each. A chat request lives in a struct pending from arrival
 * until it ends, which is exactly one of:
 *   - evhttp finished writing our reply        -> on_complete callback -> "completed"
 *   - its connection was freed (client gone, write error, close/reset directive,
 *     shutdown)                                -> close callback       -> "aborted"
 * Both paths go through serve_finish(), which is the only place a pending is freed.
 *
 * Why we watch the socket ourselves: once evhttp has read a request it disables reading
 * on the connection (evhttp_handle_request in 2.1), so it cannot notice a client that
 * hangs up while we sit on the request; it would only find out when we write. A hung
 * or slow request would then stay "in flight" long after its client left. So while a
 * request waits we keep our own EV_READ event on the fd and peek: EOF or an error means
 * the client is gone and we free the connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <jansson.h>

#include "clock.h"
#include "fake.h"
#include "log.h"
#include "utf8.h"

/* evhttp_bind_socket() listens with a backlog of 128 (libevent 2.1), which drops
 * connections when a benchmark opens thousands at once; we bind our own listener.
 * The kernel caps this at net.core.somaxconn. */
#define SERVE_BACKLOG 4096
#define SERVE_DRIP_BYTES 16       /* bytes per drip tick */
#define SERVE_ENDLESS_BYTES 16384 /* bytes per chunk of an endless body */
#define SERVE_STATUS_MAX 600
#define SERVE_JSON "application/json"
#define SERVE_EVENT_STREAM "text/event-stream"
#define SERVE_PROMPT_OVERHEAD 7 /* see the token rule in reply.c */
#define SERVE_ACCEPT_PAUSE_MS 100
#define SERVE_MAX_HEADERS 12 /* script (3) + rate limit (6) + retry (2) */
#define SERVE_RECENT 64

struct serve_stats {
    unsigned long long requests;
    unsigned long long in_flight;
    unsigned long long max_in_flight;
    unsigned long long completed;
    unsigned long long aborted;
    unsigned long long rate_limited; /* 429s from the limiter, not from scripts */
    unsigned long long max_rps;      /* most chat requests in one clock second */
    long long rps_second;            /* that second (monotonic), and its count */
    unsigned long long rps_count;
    unsigned long long by_status[SERVE_STATUS_MAX];
    /* The trace headers of the last SERVE_RECENT chat requests, oldest first from
     * nrecent % SERVE_RECENT: what a test asks of the caller's tracing. */
    struct serve_seen {
        char request_id[64], traceparent[64];
    } recent[SERVE_RECENT];
    unsigned long long nrecent;
};

struct server {
    struct event_base *base;
    const struct config *cfg;
    struct evhttp *http;
    struct script_counts *counts;
    struct limiter *limiter; /* NULL without --rpm and --tpm */
    struct serve_stats stats;
    unsigned long long next_id;
    uint64_t rng;
    int devnull; /* dup2()ed over a socket to reset it, see reset */
    int stopping;
};

struct pending {
    struct server *srv;
    struct evhttp_request *req;      /* borrowed from evhttp */
    struct evhttp_connection *evcon; /* borrowed from evhttp */
    struct event *timer;             /* delay, then drip ticks */
    struct event *watch;             /* client-gone detection, see the file comment */
    struct evbuffer *drip;           /* rest of the body while dripping */
    int drip_events;                 /* drip one "\n\n"-ended event per tick */
    int stream;                      /* the request asked for "stream": true */
    int include_usage;               /* ... with stream_options.include_usage */
    struct evbuffer *fixed;          /* a reply decided on arrival (400, 401) */
    int fixed_status;
    int status; /* status line sent, 0 if none */
    const char *abort_reason;
    unsigned long long id;
    char *model;
    char *echo;
    size_t echo_len;
    char *request; /* with echo-request: what the answer repeats */
    long long prompt_tokens;
    struct script script;
    struct limit_verdict limit; /* valid when limit_set */
    int limit_set;
    struct timeval start;
    uint64_t noise; /* endless=garbage: xorshift state */
};

struct serve_header {
    const char *name;
    char value[64];
};

static const char *serve_method(enum evhttp_cmd_type m)
{
    static const struct {
        enum evhttp_cmd_type m;
        const char *name;
    } names[] = {
        {EVHTTP_REQ_GET, "GET"},       {EVHTTP_REQ_POST, "POST"},
        {EVHTTP_REQ_HEAD, "HEAD"},     {EVHTTP_REQ_PUT, "PUT"},
        {EVHTTP_REQ_DELETE, "DELETE"}, {EVHTTP_REQ_OPTIONS, "OPTIONS"},
        {EVHTTP_REQ_PATCH, "PATCH"},
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].m == m)
            return names[i].name;
    return "OTHER";
}

/* Reason phrases: evhttp's own table has no 429 ("Client Error") and we also write
 * status lines by hand for reset. NULL lets evhttp pick. */
static const char *serve_reason(int status)
{
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        {200, "OK"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {413, "Payload Too Large"},
        {415, "Unsupported Media Type"},
        {422, "Unprocessable Entity"},
        {429, "Too Many Requests"},
        {500, "Internal Server Error"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };

    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return NULL;
}

static long serve_elapsed_ms(const struct timeval *start)
{
    struct timeval now;

    gettimeofday(&now, NULL);
    return (long)((now.tv_sec - start->tv_sec) * 1000 +
                  (now.tv_usec - start->tv_usec) / 1000);
}

/* xorshift64*: jitter needs no quality, only no shared libc state. */
static unsigned serve_random(struct server *srv, unsigned bound)
{
    uint64_t x = srv->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    srv->rng = x;
    return (unsigned)((x * 2685821657736338717ULL) >> 33) % bound;
}

/* ---- the end of a chat request ---- */

static void serve_finish(struct pending *p, int completed)
{
    struct server *srv = p->srv;
    struct serve_stats *st = &srv->stats;

    if (p->timer != NULL)
        event_free(p->timer);
    if (p->watch != NULL)
        event_free(p->watch);
    /* The connection may carry the next keep-alive request; it must not call us. */
    evhttp_connection_set_closecb(p->evcon, NULL, NULL);
    evhttp_request_set_on_complete_cb(p->req, NULL, NULL);

    st->in_flight--;
    if (completed) {
        st->completed++;
        if (p->status > 0 && p->status < SERVE_STATUS_MAX)
            st->by_status[p->status]++;
        log_info(NULL, "chat id=%llu status=%d ms=%ld%s", p->id, p->status,
                 serve_elapsed_ms(&p->start), p->script.found ? " scripted" : "");
    } else {
        st->aborted++;
        log_info(NULL, "chat id=%llu aborted (%s) ms=%ld%s", p->id,
                 srv->stopping             ? "shutdown"
                 : p->abort_reason != NULL ? p->abort_reason
                                           : "connection lost",
                 serve_elapsed_ms(&p->start), p->script.found ? " scripted" : "");
    }

    if (p->drip != NULL)
        evbuffer_free(p->drip);
    if (p->fixed != NULL)
        evbuffer_free(p->fixed);
    free(p->model);
    free(p->echo);
    free(p->request);
    free(p);
}

/* evhttp wrote the whole reply. */
static void serve_on_complete(struct evhttp_request *req, void *arg)
{
    (void)req;
    serve_finish(arg, 1);
}

/* evhttp is freeing the connection under the request. Normally it frees the request
 * right after, but when the client vanished in the middle of a chunked (drip) reply,
 * evhttp_connection_fail_() has already detached the request (req->evcon = NULL) and
 * leaves it to us: freeing it here is the only way it does not leak. */
static void serve_on_close(struct evhttp_connection *evcon, void *arg)
{
    struct pending *p = arg;
    struct evhttp_request *req = p->req;
    int orphan = evhttp_request_get_connection(req) == NULL;

    (void)evcon;
    serve_finish(p, 0);
    if (orphan)
        evhttp_request_free(req);
}

/* Ends the request without (more of) a reply. p is freed on return. */
static void serve_drop(struct pending *p, const char *reason)
{
    p->abort_reason = reason;
    evhttp_connection_free(p->evcon);
}

static void serve_on_watch(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = arg;
    char c;
    ssize_t n;

    (void)what;
    n = recv(fd, &c, 1, MSG_PEEK);
    if (n > 0) {
        /* A pipelined request: leave the bytes to evhttp. The event is level
         * triggered, so watching on would spin; this request just loses early
         * disconnect detection. */
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        event_add(p->watch, NULL);
        return;
    }
    /* EOF or a socket error (also a half-close: a client that shut its side down is
     * treated as gone, as evhttp itself does for idle connections). */
    serve_drop(p, "client went away");
}

/* ---- building and sending the reply ---- */

/* OpenAI's x-ratelimit-* headers for one budget, when it is limited. */
static int serve_budget_headers(const struct limit_budget *b, const char *what,
                                struct serve_header *h)
{
    static const char *const names[][3] = {
        {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
         "x-ratelimit-reset-requests"},
        {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
         "x-ratelimit-reset-tokens"},
    };
    int t = strcmp(what, "tokens") == 0;

    if (b->limit == 0)
        return 0;
    h[0].name = names[t][0];
    snprintf(h[0].value, sizeof(h[0].value), "%lld", b->limit);
    h[1].name = names[t][1];
    snprintf(h[1].value, sizeof(h[1].value), "%lld", b->remaining);
    h[2].name = names[t][2];
    limit_format_duration(h[2].value, sizeof(h[2].value), b->reset_ms);
    return 3;
}

/* Extra headers: what a script asked for, then the rate limiter's. Returns how
 * many were filled. */
static int serve_extra_headers(const struct pending *p,
                               struct serve_header h[SERVE_MAX_HEADERS])
{
    const struct script *s = &p->script;
    const struct limit_verdict *v = &p->limit;
    int n = 0;

    if (s->retry_after[0] != '\0') {
        h[n].name = "Retry-After";
        snprintf(h[n].value, sizeof(h[n].value), "%s", s->retry_after);
        n++;
    }
    if (s->has_retry_after_date &&
        reply_http_date(h[n].value, sizeof(h[n].value),
                        time(NULL) + (time_t)s->retry_after_date) == 0) {
        h[n].name = "Retry-After";
        n++;
    }
    if (s->retry_after_ms[0] != '\0') {
        h[n].name = "retry-after-ms";
        snprintf(h[n].value, sizeof(h[n].value), "%s", s->retry_after_ms);
        n++;
    }
    if (!p->limit_set)
        return n;
    n += serve_budget_headers(&v->requests, "requests", &h[n]);
    n += serve_budget_headers(&v->tokens, "tokens", &h[n]);
    if (!v->allowed && !v->too_large) {
        /* Whole seconds rounded up, so a client honouring only Retry-After is
         * never early. */
        h[n].name = "retry-after";
        snprintf(h[n].value, sizeof(h[n].value), "%lld", (v->retry_ms + 999) / 1000);
        n++;
        h[n].name = "retry-after-ms";
        snprintf(h[n].value, sizeof(h[n].value), "%lld", v->retry_ms);
        n++;
    }
    return n;
}

/* Fills body and returns the status; -1 when out of memory. */
static int serve_build(struct pending *p, struct evbuffer *body, const char **ctype)
{
    const struct script *s = &p->script;
    int status = s->status != 0 ? s->status : 200;

    if (p->fixed == NULL && (p->model == NULL || p->echo == NULL))
        return -1; /* parsing ran out of memory */
    if (p->fixed != NULL) {
        *ctype = SERVE_JSON;
        if (evbuffer_add_buffer(body, p->fixed) == -1)
            return -1;
        return p->fixed_status;
    }
    /* garbage wins over the status (a broken error page is a useful test too);
     * nochoices and huge only shape a 2xx answer. */
    if (s->body == SCRIPT_BODY_GARBAGE || s->body == SCRIPT_BODY_GARBAGE_HTML ||
        status < 300) {
        struct reply_answer a = {
            .id = p->id,
            .model = p->model,
            .echo = p->echo,
            .echo_len = p->echo_len,
            .prompt_tokens = p->prompt_tokens,
            .body = s->body,
            .huge = s->huge,
            .request = p->request,
            .finish_length = s->finish_length,
        };

        if (reply_answer(body, &a, ctype) == -1)
            return -1;
        return status;
    }
    if (s->echo_auth) {
        const char *auth =
            evhttp_find_header(evhttp_request_get_input_headers(p->req), "Authorization");

        return reply_error_echo_auth(body, status, auth, ctype) == -1 ? -1 : status;
    }
    if (reply_error_for_status(body, status, s->quota, p->model, p->prompt_tokens,
                               ctype) == -1)
        return -1;
    return status;
}

static void serve_set_headers(struct pending *p, const char *ctype)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(p->req);
    struct serve_header h[SERVE_MAX_HEADERS];
    int n = serve_extra_headers(p, h);
    char rid[48];

    evhttp_add_header(out, "Content-Type", ctype);
    snprintf(rid, sizeof(rid), "req_fake_%llu", p->id);
    evhttp_add_header(out, "x-request-id", rid);
    for (int i = 0; i < n; i++)
        evhttp_add_header(out, h[i].name, h[i].value);
}

/* reset: the status line, the headers with the full Content-Length and half the body,
 * then an RST. evhttp_connection_free() always does shutdown(SHUT_WR) before close(),
 * which sends a FIN first, so the client would see a clean (if short) EOF. Instead we
 * write the bytes ourselves, set SO_LINGER 0 and dup2() /dev/null over the socket's
 * fd: that closes the socket (RST) while the fd number stays valid for the close()
 * evhttp does next, so nothing else can be handed that number in between. */
static void serve_reset(struct pending *p, struct evbuffer *body, int status,
                        const char *ctype)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(p->evcon);
    evutil_socket_t fd = bufferevent_getfd(bev);
    struct evbuffer *msg = evbuffer_new();
    struct serve_header h[SERVE_MAX_HEADERS];
    int n = serve_extra_headers(p, h);
    size_t len = evbuffer_get_length(body);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    unsigned char *data;

    p->status = status;
    if (msg == NULL || fd < 0)
        goto out;
    evbuffer_add_printf(
        msg, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n", status,
        serve_reason(status) != NULL ? serve_reason(status) : "Status", ctype, len);
    for (int i = 0; i < n; i++)
        evbuffer_add_printf(msg, "%s: %s\r\n", h[i].name, h[i].value);
    evbuffer_add(msg, "\r\n", 2);
    evbuffer_remove_buffer(body, msg, len / 2);
    data = evbuffer_pullup(msg, -1);
    /* The socket buffer is empty (nothing was sent on this request yet), so a few
     * hundred bytes go out in one non-blocking send; a short write only means less
     * of the body, which is still a broken transfer. */
    if (data != NULL && send(fd, data, evbuffer_get_length(msg), MSG_NOSIGNAL) < 0)
        log_warn(NULL, "chat id=%llu: reset: send: %s", p->id, strerror(errno));
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == -1 ||
        dup2(p->srv->devnull, fd) == -1)
        log_warn(NULL, "chat id=%llu: reset: could not force RST: %s", p->id,
                 strerror(errno));
out:
    if (msg != NULL)
        evbuffer_free(msg);
    serve_drop(p, "reset directive");
}

static void serve_on_timer(evutil_socket_t fd, short what, void *arg);

static void serve_drip_tick(struct pending *p)
{
    struct evbuffer *chunk = evbuffer_new();
    struct timeval tv = clock_timeval(p->script.drip_ms);

    if (chunk == NULL) {
        serve_drop(p, "out of memory");
        return;
    }
    size_t n = SERVE_DRIP_BYTES;
    if (p->drip_events) {
        struct evbuffer_ptr end = evbuffer_search(p->drip, "\n\n", 2, NULL);
        n = end.pos >= 0 ? (size_t)end.pos + 2 : evbuffer_get_length(p->drip);
    }
    evbuffer_remove_buffer(p->drip, chunk, n);
    evhttp_send_reply_chunk(p->req, chunk);
    evbuffer_free(chunk);
    if (evbuffer_get_length(p->drip) > 0) {
        evtimer_add(p->timer, &tv);
        return;
    }
    event_del(p->watch);
    /* May complete at once (HTTP/1.0) and free p: nothing after this. */
    evhttp_send_reply_end(p->req);
}

/* endless: the next chunk of a body that never ends, sent once the last one has
 * left, so the fake's memory stays flat however fast the client reads. Ends when
 * the client goes (serve_on_close). */
static void serve_endless_next(struct evhttp_connection *evcon, void *arg)
{
    struct pending *p = arg;
    char chunk[SERVE_ENDLESS_BYTES];
    struct evbuffer *b = evbuffer_new();

    (void)evcon;
    if (b == NULL) {
        serve_drop(p, "out of memory");
        return;
    }
    for (size_t i = 0; i < sizeof(chunk); i++) {
        if (p->script.endless == SCRIPT_ENDLESS_GARBAGE) {
            p->noise ^= p->noise << 13;
            p->noise ^= p->noise >> 7;
            p->noise ^= p->noise << 17;
            chunk[i] = (char)(p->noise >> 32);
        } else {
            chunk[i] = "fake "[i % 5];
        }
    }
    evbuffer_add(b, chunk, sizeof(chunk));
    evhttp_send_reply_chunk_with_cb(p->req, b, serve_endless_next, p);
    evbuffer_free(b);
}

static void serve_endless_start(struct pending *p)
{
    static const char head[] =
        "{\"id\":\"chatcmpl-endless\",\"object\":\"chat.completion\",\"choices\":"
        "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"";
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        serve_drop(p, "out of memory");
        return;
    }
    p->status = 200;
    p->noise = p->id * 0x9e3779b97f4a7c15ULL | 1;
    serve_set_headers(p, SERVE_JSON);
    evhttp_send_reply_start(p->req, 200, serve_reason(200));
    /* The client can leave at any time; keep watching. */
    event_add(p->watch, NULL);
    if (p->script.endless != SCRIPT_ENDLESS_TEXT) {
        evbuffer_free(b);
        serve_endless_next(p->evcon, p);
        return;
    }
    /* Through the callback: the head goes out first, then chunk after chunk. (An
     * empty chunk would never call back.) */
    evbuffer_add(b, head, sizeof(head) - 1);
    evhttp_send_reply_chunk_with_cb(p->req, b, serve_endless_next, p);
    evbuffer_free(b);
}

/* The delay is over: do what the script says. */
static void serve_answer(struct pending *p)
{
    struct evbuffer *body = NULL;
    const char *ctype = SERVE_JSON;
    int status;

    event_del(p->watch);
    if (p->script.action == SCRIPT_CLOSE) {
        serve_drop(p, "close directive");
        return;
    }
    if (p->script.endless != SCRIPT_ENDLESS_NO) {
        serve_endless_start(p);
        return;
    }
    body = evbuffer_new();
    if (body == NULL) {
        serve_drop(p, "out of memory");
        return;
    }
    status = serve_build(p, body, &ctype);
    if (status == -1) {
        evbuffer_free(body);
        serve_drop(p, "out of memory");
        return;
    }
    /* Before reset: a stream cut in the middle is what reset means then. */
    if (p->stream && status < 300 && p->script.body == SCRIPT_BODY_NORMAL) {
        struct evbuffer *events = evbuffer_new();
        if (events == NULL || reply_stream(events, body, p->include_usage) != 0) {
            if (events != NULL)
                evbuffer_free(events);
            evbuffer_free(body);
            serve_drop(p, "out of memory");
            return;
        }
        evbuffer_free(body);
        body = events;
        ctype = SERVE_EVENT_STREAM;
        if (p->script.chunk_ms > 0) {
            p->script.drip_ms = p->script.chunk_ms;
            p->drip_events = 1;
        }
    }
    if (p->script.action == SCRIPT_RESET) {
        serve_reset(p, body, status, ctype);
        evbuffer_free(body);
        return;
    }
    p->status = status;
    serve_set_headers(p, ctype);
    if (p->script.drip_ms > 0) {
        p->drip = body;
        evhttp_send_reply_start(p->req, status, serve_reason(status));
        /* The client can still leave mid-drip; keep watching. */
        event_add(p->watch, NULL);
        serve_drip_tick(p);
        return;
    }
    /* Ends in serve_on_complete or serve_on_close, maybe before this returns. */
    evhttp_send_reply(p->req, status, serve_reason(status), body);
    evbuffer_free(body);
}

static void serve_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = arg;

    (void)fd;
    (void)what;
    if (p->drip != NULL)
        serve_drip_tick(p);
    else
        serve_answer(p);
}

/* ---- reading a chat request ---- */

/* The (empty) buffer for a reply decided on arrival, sent once the delay is over;
 * NULL when out of memory, and then serve_answer() drops the connection. */
static struct evbuffer *serve_fixed(struct pending *p, int status)
{
    if (p->fixed == NULL)
        p->fixed = evbuffer_new();
    if (p->fixed == NULL)
        return NULL;
    evbuffer_drain(p->fixed, evbuffer_get_length(p->fixed));
    p->fixed_status = status;
    return p->fixed;
}

/* Forgets a reply decided on arrival, so that serve_answer() drops the connection
 * (what running out of memory while building it should do). */
static void serve_fixed_clear(struct pending *p)
{
    if (p->fixed != NULL)
        evbuffer_free(p->fixed);
    p->fixed = NULL;
    p->fixed_status = 0;
}

/* Sets a 400 invalid_request_error as the reply. */
static void serve_fail(struct pending *p, const char *message, const char *param,
                       const char *code)
{
    struct evbuffer *out = serve_fixed(p, 400);

    if (out != NULL)
        reply_error(out, message, "invalid_request_error", param, code);
}

enum serve_key { SERVE_KEY_OK, SERVE_KEY_MISSING, SERVE_KEY_WRONG };

static enum serve_key serve_check_key(const struct server *srv,
                                      struct evhttp_request *req)
{
    const char *want = srv->cfg->require_key;
    const char *auth;

    if (want == NULL)
        return SERVE_KEY_OK;
    auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (auth == NULL)
        return SERVE_KEY_MISSING;
    if (strncasecmp(auth, "Bearer ", 7) != 0 || strcmp(auth + 7, want) != 0)
        return SERVE_KEY_WRONG;
    return SERVE_KEY_OK;
}

/* The 401 body the real API sends for each way of getting the key wrong. */
static int serve_key_error(struct evbuffer *out, enum serve_key why)
{
    const char *ctype;

    if (why == SERVE_KEY_MISSING)
        return reply_error(out,
                           "You didn't provide an API key. You need to provide your API "
                           "key in an Authorization header using Bearer auth (i.e. "
                           "Authorization: Bearer YOUR_KEY). You can obtain an API key "
                           "from https://platform.openai.com/account/api-keys.",
                           "invalid_request_error", NULL, NULL);
    return reply_error_for_status(out, 401, 0, "", 0, &ctype);
}

/* Words in a message's content: a string, or an array of parts with "text". */
static long long serve_content_words(json_t *content)
{
    long long words = 0;
    size_t i;
    json_t *part;

    if (json_is_string(content))
        return reply_count_words(json_string_value(content), json_string_length(content));
    json_array_foreach (content, i, part) {
        json_t *text = json_object_get(part, "text");

        if (json_is_string(text))
            words += reply_count_words(json_string_value(text), json_string_length(text));
    }
    return words;
}

/* Bytes of text in a message's content, for the limiter's token estimate. */
static long long serve_content_bytes(json_t *content)
{
    long long bytes = 0;
    size_t i;
    json_t *part;

    if (json_is_string(content))
        return (long long)json_string_length(content);
    json_array_foreach (content, i, part) {
        json_t *text = json_object_get(part, "text");

        if (json_is_string(text))
            bytes += (long long)json_string_length(text);
    }
    return bytes;
}

/* The API key a request is limited under: the Bearer token, the whole header when
 * it is not one, "" without a header (so keyless requests share one budget). */
static const char *serve_limit_key(struct evhttp_request *req)
{
    const char *auth =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");

    if (auth == NULL)
        return "";
    if (strncasecmp(auth, "Bearer ", 7) == 0)
        return auth + 7;
    return auth;
}

/* The limiter's token cost of a request: what OpenAI counts before answering, the
 * prompt (estimated at 4 bytes a token) plus the completion it may produce. */
static long long serve_limit_cost(json_t *root, long long prompt_bytes)
{
    json_t *max = json_object_get(root, "max_completion_tokens");
    long long cost = (prompt_bytes + 3) / 4;

    if (!json_is_integer(max))
        max = json_object_get(root, "max_tokens");
    if (json_is_integer(max) && json_integer_value(max) > 0)
        cost += (long long)json_integer_value(max);
    return cost;
}

/* Charges the request to its key. Returns 0 if allowed, 1 if refused (the 429 is
 * set as the reply), -1 when out of memory. */
static int serve_admit(struct pending *p, long long cost)
{
    struct server *srv = p->srv;
    struct evbuffer *out;

    if (srv->limiter == NULL)
        return 0;
    if (limit_admit(srv->limiter, serve_limit_key(p->req), cost, clock_mono_ms(),
                    &p->limit) == -1)
        return -1;
    p->limit_set = 1;
    if (p->limit.allowed)
        return 0;
    srv->stats.rate_limited++;
    out = serve_fixed(p, 429);
    if (out == NULL || reply_rate_limited(out, p->model, &p->limit) == -1)
        return -1;
    return 1;
}

/* The text of a content value; new (caller frees), parts joined with "\n". */
static char *serve_content_text(json_t *content, size_t *len)
{
    struct evbuffer *buf;
    char *text = NULL;
    size_t i;
    json_t *part;

    *len = 0;
    if (json_is_string(content)) {
        *len = json_string_length(content);
        text = malloc(*len + 1);
        if (text != NULL) {
            memcpy(text, json_string_value(content), *len);
            text[*len] = '\0';
        }
        return text;
    }
    buf = evbuffer_new();
    if (buf == NULL)
        return NULL;
    json_array_foreach (content, i, part) {
        json_t *t = json_object_get(part, "text");

        if (!json_is_string(t))
            continue;
        if (evbuffer_get_length(buf) > 0 && evbuffer_add(buf, "\n", 1) == -1)
            goto out;
        if (evbuffer_add(buf, json_string_value(t), json_string_length(t)) == -1)
            goto out;
    }
    *len = evbuffer_get_length(buf);
    text = malloc(*len + 1);
    if (text != NULL) {
        evbuffer_remove(buf, text, *len);
        text[*len] = '\0';
    }
out:
    evbuffer_free(buf);
    return text;
}

/* Validates the body and fills model, echo, tokens and script. Returns 0, or -1 with
 * a 400 set. */
static int serve_parse_chat(struct pending *p)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(p->req);
    size_t len = evbuffer_get_length(in);
    const char *data = len > 0 ? (const char *)evbuffer_pullup(in, -1) : "";
    json_error_t jerr;
    json_t *root = NULL, *messages, *msg, *last_user = NULL;
    const char *model;
    char *text = NULL;
    size_t text_len = 0, i;
    long long words = 0, bytes = 0;
    char why[512];
    int rc = -1, admit;

    root = json_loadb(data != NULL ? data : "", data != NULL ? len : 0, 0, &jerr);
    if (root == NULL) {
        snprintf(why, sizeof(why),
                 "We could not parse the JSON body of your request. (HINT: This likely "
                 "means you aren't using your HTTP library correctly. The OpenAI API "
                 "expects a JSON payload, but what was sent was not valid JSON.) [fake: "
                 "line %d: %s]",
                 jerr.line, jerr.text);
        serve_fail(p, why, NULL, NULL);
        goto out;
    }
    if (json_unpack_ex(root, &jerr, 0, "{s:s, s:o}", "model", &model, "messages",
                       &messages) == -1) {
        snprintf(why, sizeof(why),
                 "Invalid request body: %s (need a string 'model' and "
                 "a 'messages' array).",
                 jerr.text);
        serve_fail(p, why, NULL, "missing_required_parameter");
        goto out;
    }
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        serve_fail(p, "Invalid 'messages': expected an array with minimum length 1.",
                   "messages", "invalid_value");
        goto out;
    }
    json_array_foreach (messages, i, msg) {
        const char *role;
        json_t *content = NULL;

        if (json_unpack_ex(msg, &jerr, 0, "{s:s, s?o}", "role", &role, "content",
                           &content) == -1) {
            snprintf(why, sizeof(why), "Invalid 'messages[%zu]': %s.", i, jerr.text);
            serve_fail(p, why, "messages", "invalid_value");
            goto out;
        }
        if (content != NULL && !json_is_string(content) && !json_is_array(content) &&
            !json_is_null(content)) {
            snprintf(why, sizeof(why),
                     "Invalid type for 'messages[%zu].content': "
                     "expected a string or an array.",
                     i);
            serve_fail(p, why, "messages", "invalid_type");
            goto out;
        }
        if (content != NULL) {
            words += serve_content_words(content);
            bytes += serve_content_bytes(content);
        }
        if (strcmp(role, "user") == 0 && content != NULL)
            last_user = content;
    }

    p->stream = json_is_true(json_object_get(root, "stream"));
    p->include_usage = json_is_true(
        json_object_get(json_object_get(root, "stream_options"), "include_usage"));
    p->prompt_tokens = words + SERVE_PROMPT_OVERHEAD;
    p->model = strdup(model);
    if (p->model == NULL)
        goto out;
    /* Before the script: a refused attempt must not count towards times=N. */
    admit = serve_admit(p, serve_limit_cost(root, bytes));
    if (admit != 0) {
        if (admit == -1)
            serve_fixed_clear(p); /* out of memory: drop the connection */
        goto out;
    }
    if (last_user != NULL)
        text = serve_content_text(last_user, &text_len);
    if (p->model == NULL || (last_user != NULL && text == NULL))
        goto out;
    if (text != NULL && script_parse(text, text_len, &p->script) &&
        p->script.times >= 0) {
        unsigned long attempt = script_counts_bump(p->srv->counts, text, text_len);

        if (attempt > (unsigned long)p->script.times)
            script_parse("", 0, &p->script); /* back to defaults: a plain answer */
    }
    p->echo_len = text != NULL ? utf8_cut(text, text_len, FAKE_ECHO_MAX) : 0;
    p->echo = malloc(p->echo_len + 1);
    if (p->echo == NULL)
        goto out;
    if (p->echo_len > 0)
        memcpy(p->echo, text, p->echo_len);
    p->echo[p->echo_len] = '\0';
    if (p->script.echo_request) {
        /* What a test wants to see arrived: the conversation and its parameters. */
        json_t *seen = json_pack("{s:O}", "messages", messages);
        const char *keys[] = {"temperature", "top_p", "max_tokens"};
        for (size_t k = 0; seen != NULL && k < sizeof(keys) / sizeof(keys[0]); k++)
            if (json_object_get(root, keys[k]) != NULL)
                json_object_set(seen, keys[k], json_object_get(root, keys[k]));
        p->request = seen != NULL ? json_dumps(seen, JSON_COMPACT | JSON_SORT_KEYS |
                                                         JSON_REAL_PRECISION(15))
                                  : NULL;
        json_decref(seen);
        if (p->request == NULL)
            goto out;
    }
    rc = 0;
out:
    free(text);
    json_decref(root);
    return rc;
}

static void serve_send(struct evhttp_request *req, int status, struct evbuffer *body,
                       const char *ctype)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, status, serve_reason(status), body);
}

/* Chat requests per clock second, for max_rps_seen: a client pacing itself to a
 * limit can be checked from outside. */
static void serve_count_second(struct serve_stats *st)
{
    long long second = clock_mono_ms() / 1000;

    if (second != st->rps_second || st->rps_count == 0) {
        st->rps_second = second;
        st->rps_count = 0;
    }
    st->rps_count++;
    if (st->rps_count > st->max_rps)
        st->max_rps = st->rps_count;
}

static void serve_note_headers(struct serve_stats *st, struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *rid = evhttp_find_header(in, "X-Request-Id");
    const char *tp = evhttp_find_header(in, "traceparent");
    struct serve_seen *s = &st->recent[st->nrecent++ % SERVE_RECENT];
    snprintf(s->request_id, sizeof(s->request_id), "%s", rid ? rid : "");
    snprintf(s->traceparent, sizeof(s->traceparent), "%s", tp ? tp : "");
}

static void serve_chat(struct server *srv, struct evhttp_request *req)
{
    struct pending *p = calloc(1, sizeof(*p));
    struct serve_stats *st = &srv->stats;
    enum serve_key key;
    int delay_ms;
    evutil_socket_t fd;

    if (p == NULL) {
        log_error(NULL, "chat: out of memory");
        evhttp_send_error(req, 500, NULL);
        return;
    }
    p->srv = srv;
    p->req = req;
    p->evcon = evhttp_request_get_connection(req);
    p->id = ++srv->next_id;
    gettimeofday(&p->start, NULL);
    script_parse("", 0, &p->script);
    st->requests++;
    serve_note_headers(st, req);
    serve_count_second(st);
    st->in_flight++;
    if (st->in_flight > st->max_in_flight)
        st->max_in_flight = st->in_flight;
    /* From here on the request ends through serve_finish() whatever happens. */
    evhttp_connection_set_closecb(p->evcon, serve_on_close, p);
    evhttp_request_set_on_complete_cb(req, serve_on_complete, p);

    /* A 400/401 is kept in p->fixed; running out of memory leaves neither fixed nor
     * model set, and serve_answer() then drops the connection. */
    key = serve_check_key(srv, req);
    if (key != SERVE_KEY_OK) {
        struct evbuffer *out = serve_fixed(p, 401);

        if (out != NULL)
            serve_key_error(out, key);
    } else {
        serve_parse_chat(p);
    }

    if (p->fixed_status == 429)
        delay_ms = 0; /* the real API refuses at once */
    else if (p->script.found && p->script.latency_ms >= 0)
        delay_ms = p->script.latency_ms;
    else
        delay_ms = srv->cfg->latency_ms +
                   (srv->cfg->jitter_ms > 0
                        ? (int)serve_random(srv, (unsigned)srv->cfg->jitter_ms + 1)
                        : 0);

    fd = bufferevent_getfd(evhttp_connection_get_bufferevent(p->evcon));
    p->timer = evtimer_new(srv->base, serve_on_timer, p);
    p->watch = event_new(srv->base, fd, EV_READ, serve_on_watch, p);
    if (p->timer == NULL || p->watch == NULL || event_add(p->watch, NULL) == -1) {
        log_error(NULL, "chat id=%llu: cannot create events", p->id);
        p->status = 500;
        serve_send(req, 500, NULL, SERVE_JSON);
        return;
    }
    if (p->script.action == SCRIPT_HANG && p->fixed == NULL)
        return; /* only the watch (or shutdown) ends it */
    /* Always through the loop, even with no delay: close and reset free the
     * connection, which must not happen inside evhttp's own request callback. */
    struct timeval tv = clock_timeval(delay_ms);
    evtimer_add(p->timer, &tv);
}

/* ---- the other routes ---- */

static void serve_stats(struct server *srv, struct evhttp_request *req)
{
    struct serve_stats *st = &srv->stats;
    json_t *by = json_object();
    json_t *recent = json_array();
    json_t *body = NULL;
    struct evbuffer *out = evbuffer_new();

    if (by == NULL || recent == NULL || out == NULL)
        goto out;
    for (unsigned long long i = st->nrecent > SERVE_RECENT ? st->nrecent - SERVE_RECENT
                                                           : 0;
         i < st->nrecent; i++) {
        const struct serve_seen *s = &st->recent[i % SERVE_RECENT];
        if (json_array_append_new(recent,
                                  json_pack("{s:s, s:s}", "x_request_id", s->request_id,
                                            "traceparent", s->traceparent)) == -1)
            goto out;
    }
    for (int s = 0; s < SERVE_STATUS_MAX; s++) {
        char key[16];
        json_int_t n = (json_int_t)st->by_status[s];

        if (n == 0)
            continue;
        snprintf(key, sizeof(key), "%d", s);
        if (json_object_set_new(by, key, json_integer(n)) == -1)
            goto out;
    }
    body = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:O, s:O}", "requests",
                     (json_int_t)st->requests, "in_flight", (json_int_t)st->in_flight,
                     "max_in_flight", (json_int_t)st->max_in_flight, "completed",
                     (json_int_t)st->completed, "aborted", (json_int_t)st->aborted,
                     "rate_limited", (json_int_t)st->rate_limited, "max_rps_seen",
                     (json_int_t)st->max_rps, "by_status", by, "recent", recent);
    if (reply_add_json(out, body, JSON_COMPACT) != 0)
        goto out;
    serve_send(req, 200, out, SERVE_JSON);
    evbuffer_free(out);
    out = NULL;
out:
    if (out != NULL) {
        evbuffer_free(out);
        evhttp_send_error(req, 500, NULL);
    }
    json_decref(body);
    json_decref(recent);
    json_decref(by);
}

static void serve_stats_reset(struct server *srv)
{
    struct serve_stats *st = &srv->stats;
    unsigned long long in_flight = st->in_flight;

    memset(st, 0, sizeof(*st));
    st->in_flight = in_flight;
    st->max_in_flight = in_flight;
    script_counts_clear(srv->counts);
    limit_clear(srv->limiter);
}

static void serve_simple(struct evhttp_request *req, int status, const char *json)
{
    struct evbuffer *out = evbuffer_new();

    if (out == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(out, json, strlen(json));
    serve_send(req, status, out, SERVE_JSON);
    evbuffer_free(out);
}

/* "what (METHOD /path)", the way the real API words routing errors. */
static void serve_openai_error(struct evhttp_request *req, int status, const char *what,
                               const char *method, const char *path)
{
    struct evbuffer *out = evbuffer_new();
    char msg[512];

    if (out == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    snprintf(msg, sizeof(msg), "%s (%s %.300s)", what, method, path);
    reply_error(out, msg, "invalid_request_error", NULL, NULL);
    serve_send(req, status, out, SERVE_JSON);
    evbuffer_free(out);
}

static void serve_models(struct server *srv, struct evhttp_request *req)
{
    enum serve_key key = serve_check_key(srv, req);
    struct evbuffer *out = evbuffer_new();
    int rc;

    if (out == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    rc = key == SERVE_KEY_OK ? reply_models(out) : serve_key_error(out, key);
    if (rc == -1)
        evhttp_send_error(req, 500, NULL);
    else
        serve_send(req, key == SERVE_KEY_OK ? 200 : 401, out, SERVE_JSON);
    evbuffer_free(out);
}

static void serve_route(struct evhttp_request *req, void *arg)
{
    struct server *srv = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *full = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    const char *path;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const char *method = serve_method(m);
    int known = 1;

    if (full == NULL || full[0] == '\0')
        full = "/";
    path = full;
    if (strncmp(path, "/v1/", 4) == 0)
        path += 3;

    if (strcmp(path, "/chat/completions") == 0) {
        if (m == EVHTTP_REQ_POST) {
            serve_chat(srv, req);
            return;
        }
    } else if (strcmp(path, "/models") == 0) {
        if (m == EVHTTP_REQ_GET) {
            serve_models(srv, req);
            return;
        }
    } else if (strcmp(path, "/stats") == 0) {
        if (m == EVHTTP_REQ_GET) {
            serve_stats(srv, req);
            return;
        }
    } else if (strcmp(path, "/stats/reset") == 0) {
        if (m == EVHTTP_REQ_POST) {
            serve_stats_reset(srv);
            serve_simple(req, 200, "{\"ok\":true}");
            return;
        }
    } else if (strcmp(path, "/health") == 0) {
        if (m == EVHTTP_REQ_GET) {
            serve_simple(req, 200, "{\"ok\":true}");
            return;
        }
    } else {
        known = 0;
    }
    if (known)
        serve_openai_error(req, 405, "Invalid method for URL", method, full);
    else
        serve_openai_error(req, 404, "Invalid URL", method, full);
}

/* ---- setup and teardown ---- */

static void serve_on_accept_pause(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

/* accept() failed (EMFILE, most likely). Without this libevent only logs, and since the
 * listening socket stays readable the loop would spin at full CPU while we are out of
 * descriptors. The argument is evhttp's, not ours, so the pause timer is a one-shot
 * event on the listener itself; it cannot outlive the listener because the loop never
 * runs again after serve_free(), and event_base_free() frees unfired one-shots. */
static void serve_on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct timeval tv = clock_timeval(SERVE_ACCEPT_PAUSE_MS);
    int err = EVUTIL_SOCKET_ERROR();

    (void)arg;
    log_warn(NULL, "accept: %s; pausing accept for %d ms",
             evutil_socket_error_to_string(err), SERVE_ACCEPT_PAUSE_MS);
    evconnlistener_disable(lev);
    if (event_base_once(evconnlistener_get_base(lev), -1, EV_TIMEOUT,
                        serve_on_accept_pause, lev, &tv) == -1)
        evconnlistener_enable(lev);
}

struct server *serve_new(struct event_base *base, const struct config *cfg)
{
    struct server *srv = calloc(1, sizeof(*srv));

    if (srv == NULL)
        goto fail;
    srv->base = base;
    srv->cfg = cfg;
    srv->devnull = -1;
    srv->rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ 0x9E3779B97F4A7C15ULL;
    srv->counts = script_counts_new();
    srv->http = evhttp_new(base);
    srv->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (srv->counts == NULL || srv->http == NULL || srv->devnull == -1)
        goto fail;
    if (cfg->rpm > 0 || cfg->tpm > 0) {
        srv->limiter = limit_new(cfg->rpm, cfg->tpm, cfg->limit_window_ms);
        if (srv->limiter == NULL)
            goto fail;
    }
    evhttp_set_max_body_size(srv->http, FAKE_MAX_BODY);
    /* Let every method reach serve_route, which answers like the real API does
     * (evhttp would send its own HTML 501 for the others). */
    evhttp_set_allowed_methods(
        srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                       EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(srv->http, serve_route, srv);
    return srv;
fail:
    log_error(NULL, "cannot set up the HTTP server: out of memory or no /dev/null");
    serve_free(srv);
    return NULL;
}

int serve_listen(struct server *srv, int *port_out)
{
    struct addrinfo hints, *ai = NULL, *a;
    struct evconnlistener *lev = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    char port[16];
    int err, saved = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", srv->cfg->port);
    err = getaddrinfo(srv->cfg->host, port, &hints, &ai);
    if (err != 0) {
        log_error(NULL, "cannot resolve --host %s: %s", srv->cfg->host,
                  gai_strerror(err));
        return -1;
    }
    for (a = ai; a != NULL && lev == NULL; a = a->ai_next) {
        lev = evconnlistener_new_bind(srv->base, NULL, NULL,
                                      LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE |
                                          LEV_OPT_CLOSE_ON_EXEC,
                                      SERVE_BACKLOG, a->ai_addr, (int)a->ai_addrlen);
        if (lev == NULL)
            saved = errno;
    }
    freeaddrinfo(ai);
    if (lev == NULL) {
        log_error(NULL, "cannot listen on %s:%s: %s", srv->cfg->host, port,
                  strerror(saved));
        return -1;
    }
    if (evhttp_bind_listener(srv->http, lev) == NULL) {
        evconnlistener_free(lev);
        log_error(NULL, "cannot attach the listener to evhttp");
        return -1;
    }
    /* evhttp owns lev now and frees it in evhttp_free(). */
    evconnlistener_set_error_cb(lev, serve_on_accept_error);
    if (getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&ss, &sslen) == -1) {
        log_error(NULL, "getsockname: %s", strerror(errno));
        return -1;
    }
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

void serve_free(struct server *srv)
{
    if (srv == NULL)
        return;
    srv->stopping = 1;
    /* Frees every connection; each open chat request ends in serve_on_close. */
    if (srv->http != NULL)
        evhttp_free(srv->http);
    script_counts_free(srv->counts);
    limit_free(srv->limiter);
    if (srv->devnull != -1)
        close(srv->devnull);
    free(srv);
}
