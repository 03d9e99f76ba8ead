/* server.c - civetweb setup, the routes, per-thread workers and JSON error pages
 * (see server.h). The routes:
 *   POST /chat                      intake.c
 *   GET  /chat/{traceId}/response   lookup.c (?wait=: await.c)
 *   GET  /chat/{traceId}/events     sse.c
 *   POST /chat/{traceId}/cancel     lookup.c (cancel.h)
 *   DELETE /chat/{traceId}          the same
 *   GET  /health                    here: a Redis PING
 *   GET  /healthz, /readyz          here: the probes (alive; Redis and the group)
 *   GET  /metrics                   here: Prometheus, with the Redis-wide gauges
 *   /v1/...                         openai.c: the OpenAI front
 *   GET  /, GET /status.json        page.c: the status page and its data
 *   anything else                   404 not_found; a wrong method on a route 405 */
#include "server.h"

#include <ctype.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <civetweb.h>
#include <hiredis/hiredis.h>

#include "access.h"
#include "await.h"
#include "clock.h"
#include "intake.h"
#include "log.h"
#include "metrics.h"
#include "lookup.h"
#include "openai.h"
#include "page.h"
#include "reply.h"
#include "stream.h"
#include "sse.h"
#include "uuid.h"
#include "version.h"
#include "worker.h"

#define SERVER_CHAT "/chat"
#define SERVER_CHAT_DIR "/chat/"
#define SERVER_RESPONSE "/response"
#define SERVER_CANCEL "/cancel"
#define SERVER_EVENTS "/events"
#define SERVER_HEALTH "/health"
#define SERVER_HEALTHZ "/healthz"
#define SERVER_READYZ "/readyz"
#define SERVER_METRICS "/metrics"

/* civetweb's worker threads each get a worker; its master and timer threads none. */
#define SERVER_WORKER_THREAD 1

/* Gateway keys are checked in server_route, after the framing. Without an
 * authorization handler civetweb looks for a .htpasswd file on every request, which
 * with no document root means a stat("/.htpasswd") per request, and would start
 * demanding passwords if such a file ever appeared. */
static int server_authorize(struct mg_connection *conn, void *cbdata)
{
    (void)conn;
    (void)cbdata;
    return 1;
}

static int server_not_found(struct mg_connection *conn, void *cbdata)
{
    struct reply r;
    (void)cbdata;
    reply_init(&r);
    return reply_error(
        &r, conn, 404, "not_found",
        "no such endpoint; try POST /chat or GET /chat/{traceId}/response");
}

static int server_method_not_allowed(struct mg_connection *conn, const char *allow)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct reply r;
    reply_init(&r);
    r.allow = allow;
    return reply_error(&r, conn, 405, "method_not_allowed",
                       "method %.16s is not allowed here; use %s",
                       ri->request_method ? ri->request_method : "?", allow);
}

static int server_is(const struct mg_request_info *ri, const char *method)
{
    return ri->request_method != NULL && strcmp(ri->request_method, method) == 0;
}

/* The request's path; civetweb leaves it NULL for a URI naming another host. */
static const char *server_path(const struct mg_request_info *ri)
{
    return ri->local_uri != NULL ? ri->local_uri : "";
}

/* "/chat/{traceId}/response", "/chat/{traceId}/events", "/chat/{traceId}/cancel"
 * and "/chat/{traceId}"; any other "/chat/..." is a 404. */
static int server_chat_response(struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *path = server_path(ri), *id, *slash;

    if (strncmp(path, SERVER_CHAT_DIR, strlen(SERVER_CHAT_DIR)) != 0)
        return server_not_found(conn, cbdata);
    id = path + strlen(SERVER_CHAT_DIR);
    slash = strchr(id, '/');
    int cancel = slash != NULL && strcmp(slash, SERVER_CANCEL) == 0;
    int events = slash != NULL && strcmp(slash, SERVER_EVENTS) == 0;
    if (slash == NULL && *id != '\0') {
        /* DELETE /chat/{traceId}: cancels, as POST .../cancel does. */
        if (!server_is(ri, "DELETE"))
            return server_method_not_allowed(conn, "DELETE");
        slash = id + strlen(id);
        cancel = 1;
    } else if (slash == NULL || slash == id ||
               (!cancel && !events && strcmp(slash, SERVER_RESPONSE) != 0)) {
        return server_not_found(conn, cbdata);
    } else if (!server_is(ri, cancel ? "POST" : "GET")) {
        return server_method_not_allowed(conn, cancel ? "POST" : "GET");
    }

    /* UUIDs are case-insensitive; ours are stored lower-case. */
    char trace[UUID_LEN + 1];
    size_t len = (size_t)(slash - id);
    if (len == UUID_LEN) {
        for (size_t i = 0; i < UUID_LEN; i++)
            trace[i] = (char)tolower((unsigned char)id[i]);
        trace[UUID_LEN] = '\0';
    }
    if (len != UUID_LEN || !uuid_valid(trace)) {
        struct reply r;
        reply_init(&r);
        return reply_error(&r, conn, 400, "invalid_trace_id",
                           "the traceId in the path must be a UUID such as "
                           "3f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b");
    }
    if (cancel)
        return lookup_cancel(conn, mg_get_thread_pointer(conn), trace);
    if (events)
        return sse_handle(conn, mg_get_thread_pointer(conn), trace);
    return lookup_handle(conn, mg_get_thread_pointer(conn), trace);
}

/* "/chat"; civetweb also hands this handler "/chat/..." (its prefix match on path
 * segments comes before our "/chat/" pattern), so it passes those on. */
static int server_chat(struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (strncmp(server_path(ri), SERVER_CHAT_DIR, strlen(SERVER_CHAT_DIR)) == 0)
        return server_chat_response(conn, cbdata);
    if (strcmp(server_path(ri), SERVER_CHAT) != 0)
        return server_not_found(conn, cbdata);
    if (!server_is(ri, "POST"))
        return server_method_not_allowed(conn, "POST");
    return intake_handle(conn, cbdata, mg_get_thread_pointer(conn));
}

/* "/v1" and everything under it. */
static int server_v1(struct mg_connection *conn, void *cbdata)
{
    return openai_handle(conn, cbdata, mg_get_thread_pointer(conn));
}

/* "/health": 200 when Redis answers a PING, for docker healthchecks. */
static int server_health(struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct worker *w = mg_get_thread_pointer(conn);
    struct reply r;
    int ok = 0;

    if (strcmp(server_path(ri), SERVER_HEALTH) != 0)
        return server_not_found(conn, cbdata);
    if (!server_is(ri, "GET"))
        return server_method_not_allowed(conn, "GET");

    reply_init(&r);
    const char *ping[] = {"PING"};
    redisReply *pong = w != NULL ? worker_command(w, NULL, 1, ping) : NULL;
    if (pong != NULL && pong->type == REDIS_REPLY_ERROR)
        log_warn(NULL, "Redis refused PING: %s", pong->str);
    else if (pong != NULL)
        ok = 1;
    freeReplyObject(pong);
    if (!ok)
        return reply_error(&r, conn, 503, "redis_unavailable", "Redis is unavailable");
    reply_lit(&r, "{\"status\":\"ok\"}");
    return reply_send(&r, conn, 200);
}

/* {"status":status,"version":...,"reason":reason (if not NULL)} as code. */
static int server_probe_reply(struct mg_connection *conn, int code, const char *status,
                              const char *reason)
{
    struct reply r;
    reply_init(&r);
    reply_lit(&r, "{\"status\":");
    reply_strz(&r, status);
    reply_lit(&r, ",\"version\":\"" CHATQ_VERSION "\"");
    if (reason != NULL) {
        reply_lit(&r, ",\"reason\":");
        reply_strz(&r, reason);
    }
    reply_lit(&r, "}");
    return reply_send(&r, conn, code);
}

/* "/healthz": the server turns (a thread took the request); no Redis. */
static int server_healthz(struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (strcmp(server_path(ri), SERVER_HEALTHZ) != 0)
        return server_not_found(conn, cbdata);
    if (!server_is(ri, "GET"))
        return server_method_not_allowed(conn, "GET");
    return server_probe_reply(conn, 200, "ok", NULL);
}

/* "/readyz": Redis answers and the processors' group exists on the requests
 * stream, i.e. a chat accepted now will be read. */
static int server_readyz(struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct worker *w = mg_get_thread_pointer(conn);
    struct server *s = cbdata;
    char why[512] = "Redis is unreachable";
    int ready = 0;

    if (strcmp(server_path(ri), SERVER_READYZ) != 0)
        return server_not_found(conn, cbdata);
    if (!server_is(ri, "GET"))
        return server_method_not_allowed(conn, "GET");
    /* One retry on a fresh connection, as worker_command does: a Redis restart
     * since the last request closed the kept one. */
    for (int attempt = 0; attempt < 2 && w != NULL; attempt++) {
        struct redisContext *c = worker_redis(w, NULL);
        if (c == NULL)
            break;
        int rc = stream_group_exists(c, s->keys.requests, KEYS_GROUP_PROCESSORS, why,
                                     sizeof(why));
        if (rc >= 0) {
            ready = rc;
            break;
        }
        if (!worker_redis_failed(w, NULL, "XINFO GROUPS"))
            break;
    }
    if (!ready)
        return server_probe_reply(conn, 503, "not_ready", why);
    return server_probe_reply(conn, 200, "ready", NULL);
}

/* Value of an integer field of a flat name/value reply (an XINFO GROUPS group);
 * 0 if absent or nil (lag is nil when Redis cannot tell). */
static long long server_reply_int(const redisReply *map, const char *name)
{
    for (size_t i = 0; map->type == REDIS_REPLY_ARRAY && i + 1 < map->elements; i += 2)
        if (map->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(map->element[i]->str, name) == 0)
            return map->element[i + 1]->type == REDIS_REPLY_INTEGER
                       ? map->element[i + 1]->integer
                       : 0;
    return 0;
}

/* "name:value" of an INFO reply, or 0. */
static long long server_info_int(const redisReply *info, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = info->str; p != NULL && *p; p = strchr(p, '\n')) {
        if (*p == '\n')
            p++;
        if (strncmp(p, name, n) == 0 && p[n] == ':')
            return strtoll(p + n + 1, NULL, 10);
    }
    return 0;
}

/* Samples the Redis-wide gauges with one pipelined round trip: XLEN of the three
 * streams, XINFO GROUPS of the two grouped ones, INFO memory. Never a scan. Returns
 * 0, or -1 if Redis failed (the gauges keep their last values). */
static int server_sample_redis(struct worker *w, const struct keys *k)
{
    const char *streams[] = {k->requests, k->results, k->dead};
    const char *names[] = {"requests", "results", "dead"};
    const char *groups[] = {KEYS_GROUP_PROCESSORS, KEYS_GROUP_HANDLERS};
    redisReply *r[6] = {0};
    int rc = -1;

    struct redisContext *c = worker_redis(w, NULL);
    if (c == NULL)
        return -1;
    for (int i = 0; i < 3; i++)
        redisAppendCommand(c, "XLEN %s", streams[i]);
    for (int i = 0; i < 2; i++)
        redisAppendCommand(c, "XINFO GROUPS %s", streams[i]);
    redisAppendCommand(c, "INFO memory");
    for (int i = 0; i < 6; i++)
        if (redisGetReply(c, (void **)&r[i]) != REDIS_OK) {
            worker_redis_failed(w, NULL, "metrics");
            goto out;
        }
    for (int i = 0; i < 3; i++)
        if (r[i]->type == REDIS_REPLY_INTEGER)
            metrics_set(&metrics_stream_length, r[i]->integer, names[i], NULL);
    for (int i = 0; i < 2; i++) {
        long long lag = 0, pending = 0;
        for (size_t g = 0; r[3 + i]->type == REDIS_REPLY_ARRAY && g < r[3 + i]->elements;
             g++) {
            const char *name = stream_field(r[3 + i]->element[g], "name", NULL);
            if (name != NULL && strcmp(name, groups[i]) == 0) {
                lag = server_reply_int(r[3 + i]->element[g], "lag");
                pending = server_reply_int(r[3 + i]->element[g], "pending");
            }
        }
        metrics_set(&metrics_group_lag, lag, groups[i], NULL);
        metrics_set(&metrics_group_pending, pending, groups[i], NULL);
    }
    if (r[5]->type == REDIS_REPLY_STRING) {
        metrics_set(&metrics_redis_memory, server_info_int(r[5], "used_memory"), NULL,
                    NULL);
        metrics_set(&metrics_redis_maxmemory, server_info_int(r[5], "maxmemory"), NULL,
                    NULL);
    }
    rc = 0;
out:
    for (int i = 0; i < 6; i++)
        freeReplyObject(r[i]);
    return rc;
}

/* "/metrics": Prometheus text format 0.0.4. A Redis that does not answer leaves
 * the Redis-wide gauges at their last values rather than fail the scrape: the
 * process's own metrics matter most then. */
static int server_metrics(struct mg_connection *conn, void *cbdata)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct worker *w = mg_get_thread_pointer(conn);
    struct server *s = cbdata;
    char *text = NULL;
    size_t len = 0;
    struct reply r;

    if (strcmp(server_path(ri), SERVER_METRICS) != 0)
        return server_not_found(conn, cbdata);
    if (!server_is(ri, "GET"))
        return server_method_not_allowed(conn, "GET");
    if (w != NULL)
        server_sample_redis(w, &s->keys);
    reply_init(&r);
    if (metrics_render(&text, &len) != 0)
        return reply_error(&r, conn, 500, "internal_error", "out of memory");
    r.type = METRICS_CONTENT_TYPE;
    reply_raw(&r, text, len);
    free(text);
    return reply_send(&r, conn, 200);
}

/* chatq_api_open_connections: civetweb calls these two once per connection. */
static int server_init_connection(const struct mg_connection *conn, void **data)
{
    (void)conn;
    (void)data;
    metrics_add(&metrics_api_connections, 1, NULL, NULL);
    return 0;
}

static void server_connection_closed(const struct mg_connection *conn)
{
    (void)conn;
    metrics_add(&metrics_api_connections, -1, NULL, NULL);
}

static void *server_init_thread(const struct mg_context *ctx, int thread_type)
{
    if (thread_type != SERVER_WORKER_THREAD)
        return NULL;
    struct worker *w = worker_new(mg_get_user_data(ctx));
    if (w == NULL)
        log_error(NULL, "out of memory setting up a worker thread");
    return w;
}

static void server_exit_thread(const struct mg_context *ctx, int thread_type,
                               void *thread_pointer)
{
    (void)ctx;
    if (thread_type == SERVER_WORKER_THREAD)
        worker_free(thread_pointer);
}

/* Errors civetweb answers itself (a malformed request, headers too large...) get
 * the same JSON shape as ours. The request may be half-parsed: close afterwards. */
static int server_http_error(struct mg_connection *conn, int status, const char *errmsg)
{
    const char *code = "bad_request";
    struct reply r;

    if (status == 404)
        code = "not_found";
    else if (status == 405)
        code = "method_not_allowed";
    else if (status == 411)
        code = "length_required";
    else if (status == 413 || status == 431)
        code = "request_too_large";
    else if (status >= 500)
        code = "internal_error";
    char label[16];
    snprintf(label, sizeof(label), "%d", status);
    metrics_inc2(metrics_api_requests, "other", label);
    reply_init(&r);
    r.close = 1;
    reply_error(&r, conn, status, code, "%s",
                errmsg && *errmsg ? errmsg : mg_get_response_code_text(conn, status));
    return 0;
}

/* civetweb's own diagnostics go through our log format (escaped, one line). */
static int server_log_message(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    log_warn(NULL, "civetweb: %s", message);
    return 1;
}

/* civetweb keeps MG_MAX_HEADERS header lines and drops the rest without a word
 * (parse_http_headers stops there; a dropped "Connection: close" or Content-Length
 * is simply not seen). A request that filled them all may have lost some, so one
 * fewer is the most we accept. */
#define SERVER_MAX_HEADERS (MG_MAX_HEADERS - 1)

/* 1 if v is one decimal number (civetweb has skipped the spaces before it), which
 * is all a Content-Length may hold: civetweb would read "25, 5" as 25. */
static int server_length_valid(const char *v)
{
    const char *p = v;
    while (*p >= '0' && *p <= '9')
        p++;
    if (p == v)
        return 0;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == '\0';
}

/* 1 if two valid Content-Length values are the same number (compared as digit
 * strings: strtoll would make any two huge ones equal). */
static int server_length_same(const char *a, const char *b)
{
    while (*a == '0' && a[1] >= '0' && a[1] <= '9')
        a++;
    while (*b == '0' && b[1] >= '0' && b[1] <= '9')
        b++;
    size_t na = strspn(a, "0123456789"), nb = strspn(b, "0123456789");
    return na == nb && memcmp(a, b, na) == 0;
}

/* The request's framing as civetweb read it must be the only possible one: a proxy
 * in front of us that reads it another way would forward bytes we then run as a
 * second request (request smuggling). civetweb frames by Transfer-Encoding over
 * Content-Length and by the first of several Content-Length lines. Returns 0 when
 * the request may go on, else the status of the error sent (which closes the
 * connection: where the next request starts is no longer known). */
static int server_check_framing(struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *length = NULL, *encoding = NULL;
    struct reply r;

    reply_init(&r);
    r.close = 1;
    if (ri->num_headers > SERVER_MAX_HEADERS)
        return reply_error(&r, conn, 431, "too_many_headers",
                           "a request may have at most %d header lines",
                           SERVER_MAX_HEADERS);
    for (int i = 0; i < ri->num_headers; i++) {
        const char *name = ri->http_headers[i].name, *value = ri->http_headers[i].value;
        if (strcasecmp(name, "Transfer-Encoding") == 0) {
            encoding = value;
        } else if (strcasecmp(name, "Content-Length") == 0) {
            if (!server_length_valid(value) ||
                (length != NULL && !server_length_same(length, value)))
                return reply_error(&r, conn, 400, "ambiguous_length",
                                   "Content-Length must be one decimal number, given "
                                   "once (or repeated with the same value)");
            length = value;
        }
    }
    if (encoding != NULL && length != NULL)
        return reply_error(&r, conn, 400, "ambiguous_length",
                           "Content-Length and Transfer-Encoding must not both be "
                           "given: the body's length would be ambiguous");
    return 0;
}

/* A CORS preflight from an origin CORS_ORIGINS names: 204 with what that origin may
 * send (reply_send adds the Access-Control-Allow-Origin). Browsers send no
 * credentials on a preflight, so it needs no key. Returns 0 when the request is no
 * such preflight and goes on as any other (which a browser takes as a refusal). */
static int server_preflight(struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct reply r;
    if (!server_is(ri, "OPTIONS") ||
        mg_get_header(conn, "Access-Control-Request-Method") == NULL ||
        access_cors_origin(mg_get_header(conn, "Origin")) == NULL)
        return 0;
    reply_init(&r);
    r.head = "Access-Control-Allow-Methods: GET, POST, DELETE\r\n"
             "Access-Control-Allow-Headers: Authorization, Content-Type, "
             "Idempotency-Key\r\n"
             "Access-Control-Max-Age: 600\r\n";
    return reply_send(&r, conn, 204);
}

/* Anything else: the status page's two paths, else 404. */
static int server_other(struct mg_connection *conn, void *cbdata)
{
    struct server *s = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (!s->status_page || !page_is(server_path(ri)))
        return server_not_found(conn, cbdata);
    if (!server_is(ri, "GET"))
        return server_method_not_allowed(conn, "GET");
    return page_handle(conn, s, mg_get_thread_pointer(conn), server_path(ri));
}

/* Every request but the health probe needs a configured key when there are any.
 * Returns 0 with the owner id in the thread's worker, or the status of the 401 sent. */
static int server_check_key(struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct worker *w = mg_get_thread_pointer(conn);
    char owner[ACCESS_OWNER_LEN + 1];
    const struct access_limits *limits = NULL;
    struct reply r;

    /* Probes come from load balancers and orchestrators, which hold no key, and
     * so does a Prometheus scrape; none shows a user's data. Nor does the status
     * page itself (it asks for a key to fetch any). */
    if (strcmp(server_path(ri), SERVER_HEALTH) == 0 ||
        strcmp(server_path(ri), SERVER_HEALTHZ) == 0 ||
        strcmp(server_path(ri), SERVER_READYZ) == 0 ||
        strcmp(server_path(ri), SERVER_METRICS) == 0 ||
        (w != NULL && w->srv->status_page && strcmp(server_path(ri), PAGE_PATH) == 0))
        owner[0] = '\0';
    else if (access_check(mg_get_header(conn, "Authorization"), owner, &limits) != 0) {
        reply_init(&r);
        r.head = "WWW-Authenticate: Bearer\r\n";
        return reply_error(&r, conn, 401, "unauthorized",
                           "this gateway needs a key: send the header "
                           "'Authorization: Bearer <key>' with one of its keys");
    }
    if (w != NULL) {
        memcpy(w->owner, owner, sizeof(owner));
        w->limits = limits;
    }
    return 0;
}

/* Every route runs through here, so that server_stop knows what is still open,
 * and so that every request's framing, then its key, is checked before a handler
 * reads it. */
static int server_route(struct mg_connection *conn, void *cbdata)
{
    const struct server_route *rt = cbdata;
    struct timespec t0, t1;
    char code[16];
    clock_gettime(CLOCK_MONOTONIC, &t0);
    atomic_fetch_add(&rt->srv->inflight, 1);
    int status = server_check_framing(conn);
    if (status == 0)
        status = server_preflight(conn);
    if (status == 0)
        status = server_check_key(conn);
    if (status == 0)
        status = rt->fn(conn, rt->srv);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    snprintf(code, sizeof(code), "%d", status);
    /* The "/chat" handler also gets "/chat/..." from civetweb (see server_chat). */
    const char *path = server_path(mg_get_request_info(conn));
    metrics_inc2(metrics_api_requests,
                 strncmp(path, SERVER_CHAT_DIR, strlen(SERVER_CHAT_DIR)) == 0
                     ? "chat_response"
                     : rt->name,
                 code);
    metrics_observe(&metrics_api_duration,
                    (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    /* The thread may next serve a waiting client, or nobody for a long while. */
    struct worker *w = mg_get_thread_pointer(conn);
    worker_release(w);
    if (w != NULL)
        w->patience_ms = 0;
    atomic_fetch_sub(&rt->srv->inflight, 1);
    return status;
}

static void server_add_route(struct server *s, struct mg_context *ctx, size_t i,
                             const char *path, int (*fn)(struct mg_connection *, void *))
{
    s->routes[i].srv = s;
    /* "/chat/" is the GET of a result; "/" is every other path. */
    s->routes[i].name = strcmp(path, "/") == 0               ? "other"
                        : strcmp(path, SERVER_CHAT_DIR) == 0 ? "chat_response"
                                                             : path + 1;
    s->routes[i].fn = fn;
    mg_set_request_handler(ctx, path, server_route, &s->routes[i]);
}

/* The routes go in before civetweb handles its first request: set after
 * mg_start2 returned, a client that connected at once (a restart under load) got
 * civetweb's own 404 for POST /chat. */
static void server_init_context(const struct mg_context *cctx)
{
    /* civetweb hands a const context to a callback whose whole point is setting it
     * up; mg_set_request_handler takes it non-const. */
    struct mg_context *ctx = (struct mg_context *)(uintptr_t)cctx;
    struct server *s = mg_get_user_data(ctx);
    /* civetweb tries exact matches, then "uri/..." prefixes, then patterns; each
     * handler checks its path again, so the routes do not depend on that order. */
    server_add_route(s, ctx, 0, SERVER_CHAT, server_chat);
    server_add_route(s, ctx, 1, SERVER_CHAT_DIR, server_chat_response);
    server_add_route(s, ctx, 2, SERVER_HEALTH, server_health);
    server_add_route(s, ctx, 3, SERVER_HEALTHZ, server_healthz);
    server_add_route(s, ctx, 4, SERVER_READYZ, server_readyz);
    server_add_route(s, ctx, 5, SERVER_METRICS, server_metrics);
    server_add_route(s, ctx, 6, "/v1", server_v1);
    server_add_route(s, ctx, 7, "/v1/", server_v1);
    server_add_route(s, ctx, 8, "/", server_other);
    mg_set_auth_handler(ctx, "/", server_authorize, NULL);
}

int server_start(struct server *s, char *err, size_t errlen)
{
    char ports[300], threads[16], keepalive[16], request_timeout[16];
    struct mg_callbacks callbacks;
    struct mg_init_data init;
    struct mg_error_data error;
    unsigned code = 0;
    char why[256] = "";

    /* An IPv6 address needs brackets to be told from the port. */
    snprintf(ports, sizeof(ports), strchr(s->host, ':') ? "[%s]:%d" : "%s:%d", s->host,
             s->port);
    /* API_THREADS for POST and GET, and as many again as clients may wait
     * (await_enter keeps them apart). */
    snprintf(threads, sizeof(threads), "%d", s->threads + s->wait_threads);
    snprintf(keepalive, sizeof(keepalive), "%d", s->keepalive_ms);
    snprintf(request_timeout, sizeof(request_timeout), "%d", s->request_timeout_ms);
    /* No document_root: this server never serves files. */
    /* clang-format off */
    const char *options[] = {
        "listening_ports",    ports,    /* HOST:PORT */
        "num_threads",        threads,  /* API_THREADS + WAIT_THREADS */
        "tcp_nodelay",        "1",      /* each response is one write: send it now */
        /* A client polling GETs reuses its socket. civetweb's default idle time,
         * 500 ms, announced to no one, closed connections that clients such as
         * Node's fetch (4 s) were about to reuse: their next POST failed with
         * "other side closed". Now it is long, and said (reply_keep_alive_hint,
         * with room to spare). */
        "enable_keep_alive",  s->keepalive_ms > 0 ? "yes" : "no",
        "keep_alive_timeout_ms", keepalive,
        /* civetweb gives the whole head this long; for a body, each wait. */
        "request_timeout_ms", request_timeout,
        "listen_backlog",     "1024",   /* bursts of connections wait, not fail */
        /* civetweb's default "*" answers every preflight itself, before any
         * handler: CORS is server_preflight's and reply_send's, per CORS_ORIGINS. */
        "access_control_allow_origin", "",
        NULL};
    /* clang-format on */

    memset(&callbacks, 0, sizeof(callbacks));
    callbacks.init_context = server_init_context;
    callbacks.init_thread = server_init_thread;
    callbacks.exit_thread = server_exit_thread;
    callbacks.http_error = server_http_error;
    callbacks.log_message = server_log_message;
    callbacks.init_connection = server_init_connection;
    callbacks.connection_closed = server_connection_closed;
    memset(&init, 0, sizeof(init));
    init.callbacks = &callbacks;
    init.user_data = s;
    init.configuration_options = options;
    memset(&error, 0, sizeof(error));
    error.code = &code;
    error.text = why;
    error.text_buffer_size = sizeof(why);

    /* Half: a client's idle timer may fire a second or more late (undici's
     * timers are coarse, a loaded host is slow), and one that reuses the
     * connection at the very moment the server closes it loses its request. */
    reply_keep_alive_hint(s->keepalive_ms > 0 ? s->keepalive_ms / 2000 : -1);
    atomic_init(&s->redis_down, 0);
    atomic_init(&s->inflight, 0);
    atomic_init(&s->draining, 0);
    s->pool = worker_pool_new(s->threads);
    s->await = await_new(s);
    if (s->pool == NULL || s->await == NULL ||
        (s->await != NULL && await_start(s->await, why, sizeof(why)) != 0)) {
        snprintf(err, errlen, "cannot set up: %s", why[0] ? why : "out of memory");
        goto fail;
    }
    mg_init_library(0);
    s->ctx = mg_start2(&init, &error);
    if (s->ctx == NULL) {
        snprintf(err, errlen, "cannot listen on %s: %s", ports,
                 why[0] ? why : "civetweb failed to start");
        mg_exit_library();
        goto fail;
    }

    struct mg_server_port bound;
    s->bound_port = mg_get_server_ports(s->ctx, 1, &bound) == 1 ? bound.port : s->port;

    return 0;
fail:
    await_stop(s->await);
    await_free(s->await);
    s->await = NULL;
    worker_pool_free(s->pool);
    s->pool = NULL;
    return -1;
}

void server_stop(struct server *s)
{
    if (s->ctx == NULL)
        return;
    /* civetweb has no way to stop listening alone, and mg_stop cuts off a request
     * whose body is still arriving: so first let what is open finish, telling every
     * client to close its connection meanwhile. */
    reply_close_all();
    atomic_store(&s->draining, 1);
    /* Waiting clients are answered now, with what their chat is at. */
    await_stop(s->await);
    long long deadline = clock_mono_ms() + s->grace_ms;
    while (atomic_load(&s->inflight) > 0 && clock_mono_ms() < deadline) {
        struct timespec tick = {0, 10 * 1000 * 1000};
        nanosleep(&tick, NULL);
    }
    if (atomic_load(&s->inflight) > 0)
        log_warn(NULL, "%d requests still open after %lld ms; stopping anyway",
                 atomic_load(&s->inflight), s->grace_ms);
    mg_stop(s->ctx);
    s->ctx = NULL;
    mg_exit_library();
    await_free(s->await);
    s->await = NULL;
    worker_pool_free(s->pool);
    s->pool = NULL;
}
