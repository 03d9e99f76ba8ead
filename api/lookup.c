/* lookup.c - GET /chat/{traceId}/response: trace hash -> JSON (see lookup.h). */
#include "lookup.h"

#include <stddef.h>
#include <string.h>

#include <civetweb.h>
#include <hiredis/hiredis.h>

#include "cancel.h"
#include "keys.h"
#include "log.h"
#include "record.h"
#include "reply.h"
#include "stream.h"
#include "server.h"
#include "uuid.h"
#include "worker.h"

/* Appends ,"name":"value" when value is known. */
static void lookup_field(struct reply *r, const char *name, const char *value)
{
    if (value == NULL)
        return;
    reply_lit(r, ",");
    reply_strz(r, name);
    reply_lit(r, ":");
    reply_strz(r, value);
}

static void lookup_count(struct reply *r, const char *name, long long v, int *first)
{
    if (v < 0)
        return;
    if (!*first)
        reply_lit(r, ",");
    *first = 0;
    reply_strz(r, name);
    reply_lit(r, ":");
    reply_ll(r, v);
}

void lookup_render(const struct chat_result *res, const char *trace, struct reply *r)
{
    reply_lit(r, "{\"traceId\":");
    reply_strz(r, trace);
    switch (res->status) {
    case CHAT_PROCESSING:
        lookup_field(r, "status", record_status_name(res->status));
        break;
    case CHAT_COMPLETED:
        if (res->response != NULL) {
            reply_lit(r, ",\"response\":");
            reply_str(r, res->response, res->response_len);
        }
        lookup_field(r, "status", record_status_name(res->status));
        lookup_field(r, "model", res->model);
        if (res->prompt_tokens >= 0 || res->completion_tokens >= 0 ||
            res->total_tokens >= 0) {
            int first = 1;
            reply_lit(r, ",\"usage\":{");
            lookup_count(r, "prompt_tokens", res->prompt_tokens, &first);
            lookup_count(r, "completion_tokens", res->completion_tokens, &first);
            lookup_count(r, "total_tokens", res->total_tokens, &first);
            reply_lit(r, "}");
        }
        lookup_field(r, "timestamp", res->timestamp);
        break;
    case CHAT_FAILED:
        lookup_field(r, "status", record_status_name(res->status));
        /* The handler always writes both; a record without them still says failed. */
        reply_lit(r, ",\"error\":{\"code\":");
        reply_strz(r, res->error_code ? res->error_code : "unknown_error");
        reply_lit(r, ",\"message\":");
        reply_strz(r, res->error_message ? res->error_message
                                         : "the request failed for an unknown reason");
        reply_lit(r, "}");
        lookup_field(r, "timestamp", res->timestamp);
        break;
    case CHAT_CANCELLED:
        lookup_field(r, "status", record_status_name(res->status));
        lookup_field(r, "timestamp", res->timestamp);
        break;
    }
    reply_lit(r, "}");
}

int lookup_fetch(struct worker *w, const char *trace, redisReply **hash)
{
    char key[KEYS_MAX + UUID_LEN + 1];

    *hash = NULL;
    keys_trace(&w->srv->keys, trace, key, sizeof(key));
    const char *argv[2] = {"HGETALL", key};
    redisReply *reply = worker_command(w, trace, 2, argv);
    if (reply == NULL)
        return -1;
    if (reply->type != REDIS_REPLY_ARRAY) {
        log_warn(trace, "Redis refused HGETALL: %s",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "not an array");
        freeReplyObject(reply);
        return -1;
    }
    *hash = reply;
    return 0;
}

int lookup_owned(const struct worker *w, const redisReply *hash)
{
    const char *owner = stream_field(hash, REC_OWNER, NULL);
    return strcmp(owner != NULL ? owner : "", w->owner) == 0;
}

int lookup_handle(struct mg_connection *conn, struct worker *w, const char *trace)
{
    redisReply *hash = NULL;
    struct chat_result res;
    char err[128];
    struct reply r;
    int status;

    reply_init(&r);
    r.trace = trace;
    if (w == NULL) {
        status = reply_error(&r, conn, 500, "internal_error",
                             "the server could not set up this thread");
    } else if (lookup_fetch(w, trace, &hash) != 0) {
        status = reply_error(&r, conn, 503, "redis_unavailable",
                             "the store is unavailable; retry later");
    } else if (hash->elements == 0 || !lookup_owned(w, hash)) {
        status =
            reply_error(&r, conn, 404, "trace_not_found",
                        "no chat request with traceId '%s' (unknown, or expired)", trace);
    } else if (record_result_parse(hash, &res, err, sizeof(err)) != 0) {
        log_warn(trace, "unreadable trace record: %s", err);
        status = reply_error(&r, conn, 500, "internal_error",
                             "the record of this request is unreadable");
    } else {
        log_debug(trace, "GET: %s", record_status_name(res.status));
        lookup_render(&res, trace, &r);
        status = reply_send(&r, conn, 200);
    }
    freeReplyObject(hash);
    return status;
}

int lookup_cancel(struct mg_connection *conn, struct worker *w, const char *trace)
{
    struct reply r;
    reply_init(&r);
    if (w == NULL)
        return reply_error(&r, conn, 500, "internal_error",
                           "the server could not set up this thread");
    switch (cancel_run(w, trace, 0)) {
    case CANCEL_FAILED:
        return reply_error(&r, conn, 503, "redis_unavailable",
                           "the store is unavailable; retry later");
    case CANCEL_NONE:
        return reply_error(&r, conn, 404, "trace_not_found",
                           "no chat request with traceId '%s' (unknown, or expired)",
                           trace);
    case CANCEL_NOW:
    case CANCEL_FINAL:
        break;
    }
    return lookup_handle(conn, w, trace);
}
