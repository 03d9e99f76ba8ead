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
#include "log.h"
#include "lookup.h"
#include "record.h"
#include "reply.h"
#include "server.h"
#include "stream.h"
#include "uuid.h"
#include "worker.h"

#define SSE_ID_DIGITS 18 /* an event number: far below 2^63 */
#define SSE_BATCH 32     /* events read at once */
#define SSE_LAST_ID_HEADER "Last-Event-ID"
/* A stream's client would rather wait for a Redis connection than fail (worker.h). */
#define SSE_PATIENCE_MS 30000

/* A stream being served: where it stands and what it writes with. */
struct sse_stream {
    struct mg_connection *conn;
    struct worker *w;
    const char *trace;
    long long last; /* the number of the last event sent (or given); 0: none */
    int ended;      /* the final event was sent */
};

int sse_id_valid(const char *id)
{
    size_t n = strspn(id, "0123456789");
    return n > 0 && n <= SSE_ID_DIGITS && id[n] == '\0';
}

/* Writes event n ("type[ attempt[ delay_ms]]", or "delta <text>", as events.h
 * keeps it; len bytes) of the record in hash. Returns 0, or -1 if the client is gone. */
static int sse_send(struct sse_stream *st, long long n, const char *value, size_t len,
                    const redisReply *hash)
{
    char type[32];
    long long attempt = -1, delay = -1;
    struct chat_result res;
    char err[128];
    struct reply r;
    int rc = 0;

    st->last = n;
    /* A delta's text may start with digits: it is not an attempt number. */
    int delta = strncmp(value, EVENTS_DELTA " ", sizeof(EVENTS_DELTA)) == 0;
    if (delta)
        snprintf(type, sizeof(type), EVENTS_DELTA);
    else if (sscanf(value, "%31[a-z_] %lld %lld", type, &attempt, &delay) < 1)
        return 0; /* not one of ours: nothing a client could use */
    /* One struct reply (5 KiB) per frame: these are inlined into a civetweb
     * thread's small stack, under hiredis's 16 KiB read buffer. */
    reply_init(&r);
    reply_lit(&r, "id: ");
    reply_ll(&r, n);
    reply_lit(&r, "\nevent: ");
    reply_raw(&r, type, strlen(type));
    reply_lit(&r, "\ndata: ");
    if (delta) {
        reply_lit(&r, "{\"traceId\":");
        reply_strz(&r, st->trace);
        reply_lit(&r, ",\"" EVENTS_DELTA_TEXT "\":");
        /* JSON-escaped: a newline in the text cannot end the data line. */
        reply_str(&r, value + sizeof(EVENTS_DELTA), len - sizeof(EVENTS_DELTA));
        reply_lit(&r, "}");
    } else if (events_final(type) &&
               record_result_parse(hash, &res, err, sizeof(err)) == 0) {
        lookup_render(&res, st->trace, &r); /* the record, as GET .../response */
    } else {
        reply_lit(&r, "{\"traceId\":");
        reply_strz(&r, st->trace);
        reply_lit(&r, ",\"status\":");
        reply_strz(&r, type);
        if (attempt >= 0) {
            reply_lit(&r, ",\"" EVENTS_ATTEMPT "\":");
            reply_ll(&r, attempt);
        }
        if (delay >= 0) {
            reply_lit(&r, ",\"" EVENTS_DELAY_MS "\":");
            reply_ll(&r, delay);
        }
        reply_lit(&r, "}");
    }
    reply_lit(&r, "\n\n");
    st->ended = events_final(type);
    if (r.oom || mg_write(st->conn, r.buf + REPLY_HEAD_ROOM, r.len) <= 0)
        rc = -1;
    reply_free(&r);
    return rc;
}

/* Writes the record as the final event, without an id: a chat from before events
 * were kept has none. */
static void sse_send_record(struct sse_stream *st, const redisReply *hash)
{
    struct chat_result res;
    char err[128];
    struct reply r;
    if (record_result_parse(hash, &res, err, sizeof(err)) != 0)
        return;
    const char *type = record_status_name(res.status);
    reply_init(&r);
    reply_lit(&r, "event: ");
    reply_raw(&r, type, strlen(type));
    reply_lit(&r, "\ndata: ");
    lookup_render(&res, st->trace, &r);
    reply_lit(&r, "\n\n");
    if (!r.oom)
        mg_write(st->conn, r.buf + REPLY_HEAD_ROOM, r.len);
    reply_free(&r);
}

/* The trace's hash (new: caller frees; an array, empty once expired) and the
 * number of its last event (0: none). Returns 0, or -1 if Redis failed. */
static int sse_read(struct sse_stream *st, redisReply **hash, long long *newest)
{
    int rc = lookup_fetch(st->w, st->trace, hash);
    worker_release(st->w);
    if (rc != 0)
        return -1;
    const char *v = stream_field(*hash, EVENTS_LAST, NULL);
    *newest = v != NULL ? strtoll(v, NULL, 10) : 0;
    return 0;
}

/* The fields ev, ev:(st->last + 1) ... ev:(st->last + SSE_BATCH) of the trace's
 * hash (new: caller frees; an array of SSE_BATCH + 1, nil where absent), read
 * without the rest of the record: a streamed chat's record holds many deltas and
 * its whole text, and a client is woken for each. Returns 0, or -1 if Redis
 * failed. */
static int sse_read_new(struct sse_stream *st, redisReply **out)
{
    /* On the heap: this runs on a civetweb thread's small stack, under hiredis's
     * 16 KiB read buffer. */
    struct sse_names {
        char key[KEYS_MAX + UUID_LEN + 1];
        char fields[SSE_BATCH][32];
        const char *argv[SSE_BATCH + 3];
    } *nm = malloc(sizeof(*nm));
    if (nm == NULL)
        return -1;
    keys_trace(&st->w->srv->keys, st->trace, nm->key, sizeof(nm->key));
    nm->argv[0] = "HMGET";
    nm->argv[1] = nm->key;
    nm->argv[2] = EVENTS_LAST;
    for (int i = 0; i < SSE_BATCH; i++) {
        snprintf(nm->fields[i], sizeof(nm->fields[i]), EVENTS_FIELD "%lld",
                 st->last + 1 + i);
        nm->argv[3 + i] = nm->fields[i];
    }
    redisReply *r = worker_command(st->w, st->trace, SSE_BATCH + 3, nm->argv);
    worker_release(st->w);
    free(nm);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != SSE_BATCH + 1) {
        if (r != NULL)
            log_warn(st->trace, "Redis refused HMGET: %s",
                     r->type == REDIS_REPLY_ERROR ? r->str : "not the array asked for");
        freeReplyObject(r);
        return -1;
    }
    *out = r;
    return 0;
}

/* Sends every event after st->last, SSE_BATCH at a time; the whole record is read
 * only for the final event, which carries it. Returns 1 when it sent the final one
 * (or the record is gone), 0 when there are no more for now, -1 when the client
 * left or Redis failed. */
static int sse_catch_up(struct sse_stream *st)
{
    int rc = 0;
    for (;;) {
        redisReply *batch = NULL, *hash = NULL;
        long long newest = 0;
        if (sse_read_new(st, &batch) != 0)
            return -1;
        if (batch->element[0]->type != REDIS_REPLY_STRING) {
            freeReplyObject(batch);
            return 1; /* expired */
        }
        newest = strtoll(batch->element[0]->str, NULL, 10);
        long long first = st->last + 1;
        for (long long n = first;
             rc == 0 && n <= newest && n < first + SSE_BATCH && !st->ended; n++) {
            const redisReply *v = batch->element[1 + (n - first)];
            char type[32] = "";
            if (v->type != REDIS_REPLY_STRING)
                continue;
            sscanf(v->str, "%31[a-z_]", type);
            if (events_final(type) && hash == NULL) {
                long long unused;
                if (sse_read(st, &hash, &unused) != 0) {
                    rc = -1;
                    break;
                }
            }
            rc = sse_send(st, n, v->str, v->len, hash);
        }
        freeReplyObject(hash);
        freeReplyObject(batch);
        if (rc != 0 || st->ended)
            return rc != 0 ? rc : 1;
        if (newest < first + SSE_BATCH)
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
        if (!started) {
            redisReply *hash = NULL;
            long long newest = 0;
            if (sse_read(st, &hash, &newest) != 0) {
                reply_init(&r);
                rc = reply_error(&r, st->conn, 503, "redis_unavailable",
                                 "the store is unavailable; retry later");
                goto out;
            }
            const char *status = stream_field(hash, REC_STATUS, NULL);
            int over = newest <= st->last && (status == NULL || events_final(status));
            /* Nothing left after Last-Event-ID and the chat is over: 204 stops a
             * browser from reconnecting for ever. */
            if (over && st->last > 0) {
                freeReplyObject(hash);
                reply_init(&r);
                rc = reply_send(&r, st->conn, 204);
                goto out;
            }
            if (sse_head(st) != 0) {
                freeReplyObject(hash);
                break;
            }
            started = 1;
            /* Over without events: a chat from before they were kept. Its record is
             * all there is to say. */
            if (over) {
                sse_send_record(st, hash);
                freeReplyObject(hash);
                break;
            }
            freeReplyObject(hash);
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
                                                "stream, such as 3");
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
        if (last != NULL)
            st.last = strtoll(last, NULL, 10);
        worker_release(w);
        status = sse_serve(&st, w->srv->await);
        await_leave(w->srv->await);
    }
    freeReplyObject(hash);
    return status;
}
