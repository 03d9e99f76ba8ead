/* sse.c - GET /chat/{traceId}/events (see sse.h). */
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <civetweb.h>
#include <hiredis/hiredis.h>

#include "access.h"
#include "await.h"
#include "clock.h"
#include "events.h"
#include "keys.h"
#include "log.h"
#include "lookup.h"
#include "record.h"
#include "reply.h"
#include "server.h"
#include "stream.h"
#include "uuid.h"
#include "worker.h"

#define SSE_ID_MAX 48   /* two 64-bit numbers and a dash */
#define SSE_BATCH "100" /* entries per XRANGE */
#define SSE_LAST_ID_HEADER "Last-Event-ID"
/* A stream's client would rather wait for a Redis connection than fail (worker.h). */
#define SSE_PATIENCE_MS 30000

/* A stream being served: where it stands and what it writes with. */
struct sse_stream {
    struct mg_connection *conn;
    struct worker *w;
    const char *trace;
    char key[KEYS_MAX + UUID_LEN + 1];
    char last[SSE_ID_MAX]; /* the last id sent (or given); "" from the start */
    int ended;             /* the final event was sent */
};

int sse_id_valid(const char *id)
{
    size_t a = strspn(id, "0123456789");
    if (a == 0 || a > 20 || id[a] != '-')
        return 0;
    size_t b = strspn(id + a + 1, "0123456789");
    return b > 0 && b <= 20 && id[a + 1 + b] == '\0';
}

/* Appends the data of a final event: the record as GET .../response shows it, or
 * the bare status should the record be gone. */
static void sse_final_data(struct sse_stream *st, const char *type, struct reply *r)
{
    redisReply *hash = NULL;
    struct chat_result res;
    char err[128];
    if (lookup_fetch(st->w, st->trace, &hash) == 0 && hash->elements > 0 &&
        record_result_parse(hash, &res, err, sizeof(err)) == 0) {
        lookup_render(&res, st->trace, r);
    } else {
        reply_lit(r, "{\"traceId\":");
        reply_strz(r, st->trace);
        reply_lit(r, ",\"status\":");
        reply_strz(r, type);
        reply_lit(r, "}");
    }
    freeReplyObject(hash);
}

/* Appends ,"name":value when the entry has the field and it is a number. */
static void sse_number(struct reply *r, const redisReply *fields, const char *name)
{
    const char *v = stream_field(fields, name, NULL);
    if (v == NULL || v[0] == '\0' || strspn(v, "0123456789") != strlen(v))
        return;
    reply_lit(r, ",");
    reply_strz(r, name);
    reply_lit(r, ":");
    reply_raw(r, v, strlen(v));
}

/* Writes one entry as an event. Returns 0, or -1 if the client is gone. */
static int sse_send(struct sse_stream *st, const struct stream_entry *e)
{
    const char *type = e->fields ? stream_field(e->fields, EVENTS_TYPE, NULL) : NULL;
    struct reply r;
    int rc = 0;

    snprintf(st->last, sizeof(st->last), "%s", e->id);
    if (type == NULL || strspn(type, "abcdefghijklmnopqrstuvwxyz_") != strlen(type) ||
        type[0] == '\0')
        return 0; /* not one of ours: nothing a client could use */
    reply_init(&r);
    reply_lit(&r, "id: ");
    reply_raw(&r, e->id, strlen(e->id));
    reply_lit(&r, "\nevent: ");
    reply_raw(&r, type, strlen(type));
    reply_lit(&r, "\ndata: ");
    if (events_final(type)) {
        sse_final_data(st, type, &r);
        st->ended = 1;
    } else {
        reply_lit(&r, "{\"traceId\":");
        reply_strz(&r, st->trace);
        reply_lit(&r, ",\"status\":");
        reply_strz(&r, type);
        sse_number(&r, e->fields, EVENTS_ATTEMPT);
        sse_number(&r, e->fields, EVENTS_DELAY_MS);
        reply_lit(&r, "}");
    }
    reply_lit(&r, "\n\n");
    if (r.oom || mg_write(st->conn, r.buf + REPLY_HEAD_ROOM, r.len) <= 0)
        rc = -1;
    reply_free(&r);
    return rc;
}

/* Writes the record as the final event, without an id (there is no stream). */
static void sse_send_record(struct sse_stream *st)
{
    redisReply *hash = NULL;
    struct chat_result res;
    char err[128];
    struct reply r;
    reply_init(&r);
    if (lookup_fetch(st->w, st->trace, &hash) == 0 && hash->elements > 0 &&
        record_result_parse(hash, &res, err, sizeof(err)) == 0) {
        const char *type = record_status_name(res.status);
        reply_lit(&r, "event: ");
        reply_raw(&r, type, strlen(type));
        reply_lit(&r, "\ndata: ");
        lookup_render(&res, st->trace, &r);
        reply_lit(&r, "\n\n");
        if (!r.oom)
            mg_write(st->conn, r.buf + REPLY_HEAD_ROOM, r.len);
    }
    worker_release(st->w);
    freeReplyObject(hash);
    reply_free(&r);
}

/* Reads the events after st->last (up to a batch) into *entries (new: caller
 * frees). Returns 0, or -1 if Redis failed. */
static int sse_read(struct sse_stream *st, redisReply **entries)
{
    char from[SSE_ID_MAX + 1];
    *entries = NULL;
    if (st->last[0] != '\0')
        snprintf(from, sizeof(from), "(%s", st->last);
    else
        snprintf(from, sizeof(from), "-");
    const char *argv[] = {"XRANGE", st->key, from, "+", "COUNT", SSE_BATCH};
    redisReply *r = worker_command(st->w, st->trace, 6, argv);
    worker_release(st->w);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY) {
        log_warn(st->trace, "Redis refused XRANGE: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "not an array");
        freeReplyObject(r);
        return -1;
    }
    *entries = r;
    return 0;
}

/* Sends every event after st->last. Returns 1 when it sent the final one, 0 when
 * there are no more for now, -1 when the client left or Redis failed. */
static int sse_catch_up(struct sse_stream *st)
{
    for (;;) {
        redisReply *entries = NULL;
        if (sse_read(st, &entries) != 0)
            return -1;
        size_t n = entries->elements;
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0 && !st->ended; i++) {
            struct stream_entry e;
            if (stream_entry_at(entries, i, &e) == 0)
                rc = sse_send(st, &e);
        }
        freeReplyObject(entries);
        if (rc != 0)
            return -1;
        if (st->ended)
            return 1;
        if (n < (size_t)atoi(SSE_BATCH))
            return 0;
    }
}

/* Sends the head of the stream. Returns 0, or -1 if the client is gone. */
static int sse_head(struct sse_stream *st)
{
    const char *origin = access_cors_origin(mg_get_header(st->conn, "Origin"));
    mg_disable_keep_alive(st->conn); /* the stream ends when the connection does */
    return mg_printf(st->conn,
                     "HTTP/1.1 200 OK\r\n"
                     "Content-Type: text/event-stream\r\n"
                     "Cache-Control: no-store\r\n"
                     "X-Accel-Buffering: no\r\n"
                     "Connection: close\r\n"
                     "%s%s%s%s"
                     "\r\n",
                     access_cors_on() ? "Vary: Origin\r\n" : "",
                     origin ? "Access-Control-Allow-Origin: " : "", origin ? origin : "",
                     origin ? "\r\n" : "") > 0
               ? 0
               : -1;
}

/* The stream itself, once the client may have it: subscribed first, so that
 * nothing announced after a read is missed. Returns the status. */
static int sse_serve(struct sse_stream *st, struct await *a)
{
    struct server *srv = st->w->srv;
    struct reply r;
    int started = 0;
    long long ready_by = clock_mono_ms() + srv->redis_timeout_ms;
    struct await_watch *watch = await_watch(a, st->trace);
    int rc = watch != NULL ? await_ready(watch, ready_by) : -1;

    if (rc <= 0) {
        reply_init(&r);
        rc = reply_error(&r, st->conn, 503, "redis_unavailable",
                         "the store is unavailable; retry later");
        goto out;
    }
    while (!await_stopping(a)) {
        int sent;
        redisReply *entries = NULL;
        if (!started) {
            /* Nothing left after Last-Event-ID and the chat is over: 204 stops a
             * browser from reconnecting for ever. */
            if (sse_read(st, &entries) != 0) {
                reply_init(&r);
                rc = reply_error(&r, st->conn, 503, "redis_unavailable",
                                 "the store is unavailable; retry later");
                goto out;
            }
            int none = entries->elements == 0;
            freeReplyObject(entries);
            int over = none && await_final(srv, st->w, st->trace, 0) == 1;
            if (over && st->last[0] != '\0') {
                reply_init(&r);
                rc = reply_send(&r, st->conn, 204);
                goto out;
            }
            if (sse_head(st) != 0)
                break;
            started = 1;
            /* Over without a stream: a chat from before event streams existed. Its
             * record is all there is to say. */
            if (over) {
                sse_send_record(st);
                break;
            }
        }
        sent = sse_catch_up(st);
        if (sent != 0)
            break;
        int news = await_next(watch, clock_mono_ms() + srv->heartbeat_ms);
        if (news == AWAIT_LOST) {
            if (await_ready(watch, clock_mono_ms() + srv->redis_timeout_ms) <= 0)
                break; /* the client reconnects with Last-Event-ID */
        } else if (news == AWAIT_TIMEOUT && !await_stopping(a) &&
                   mg_printf(st->conn, ": keep-alive\n\n") <= 0) {
            break;
        }
    }
    rc = 200;
out:
    await_unwatch(watch);
    return rc;
}

int sse_handle(struct mg_connection *conn, struct worker *w, const char *trace)
{
    struct sse_stream st;
    redisReply *hash = NULL;
    struct reply r;
    int status;
    const char *last = mg_get_header(conn, SSE_LAST_ID_HEADER);

    memset(&st, 0, sizeof(st));
    st.conn = conn;
    st.w = w;
    st.trace = trace;
    reply_init(&r);
    if (w != NULL)
        w->patience_ms = SSE_PATIENCE_MS;
    if (w == NULL) {
        status = reply_error(&r, conn, 500, "internal_error",
                             "the server could not set up this thread");
    } else if (last != NULL && !sse_id_valid(last)) {
        status = reply_error(&r, conn, 400, "invalid_header",
                             SSE_LAST_ID_HEADER " must be the id of an event of this "
                                                "stream, such as 1700000000000-0");
    } else if (lookup_fetch(w, trace, &hash) != 0) {
        status = reply_error(&r, conn, 503, "redis_unavailable",
                             "the store is unavailable; retry later");
    } else if (hash->elements == 0 || !lookup_owned(w, hash)) {
        status =
            reply_error(&r, conn, 404, "trace_not_found",
                        "no chat request with traceId '%s' (unknown, or expired)", trace);
    } else if (!await_enter(w->srv->await)) {
        r.head = "Retry-After: 1\r\n";
        status = reply_error(&r, conn, 503, "too_many_waiters",
                             "%d clients are waiting already (WAIT_THREADS); retry later",
                             w->srv->wait_threads);
    } else {
        keys_events(&w->srv->keys, trace, st.key, sizeof(st.key));
        if (last != NULL)
            snprintf(st.last, sizeof(st.last), "%s", last);
        worker_release(w);
        status = sse_serve(&st, w->srv->await);
        await_leave(w->srv->await);
    }
    freeReplyObject(hash);
    return status;
}
