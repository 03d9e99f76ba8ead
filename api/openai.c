/* openai.c - the OpenAI front: routes, the atomic cancel, and the Response and
 * chat.completion objects made from a trace's record (see openai.h). */
#include "openai.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <civetweb.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "access.h"
#include "await.h"
#include "cancel.h"
#include "clock.h"
#include "intake.h"
#include "keys.h"
#include "log.h"
#include "lookup.h"
#include "oaireq.h"
#include "record.h"
#include "reply.h"
#include "server.h"
#include "validate.h"
#include "worker.h"

#define OPENAI_V1 "/v1"
#define OPENAI_RESPONSES "/v1/responses"
#define OPENAI_CHAT "/v1/chat/completions"
#define OPENAI_CANCEL "/cancel"
#define OPENAI_STACK_BODY 8192

/* ---- ids ----------------------------------------------------------------------- */

int openai_trace_of(const char *id, const char *prefix, char trace[UUID_LEN + 1])
{
    size_t plen = strlen(prefix);
    if (strncmp(id, prefix, plen) != 0 || strlen(id + plen) != UUID_HEX_LEN)
        return -1;
    const char *hex = id + plen;
    size_t n = 0;
    for (size_t i = 0; i < UUID_HEX_LEN; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20)
            trace[n++] = '-';
        trace[n++] = (char)tolower((unsigned char)hex[i]);
    }
    trace[n] = '\0';
    return uuid_valid(trace) ? 0 : -1;
}

/* ---- rendering ----------------------------------------------------------------- */

/* Unix seconds of an ISO-8601 UTC time as the api writes it; 0 if unreadable. */
static long long openai_created(const char *iso)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (iso == NULL || sscanf(iso, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon,
                              &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t < 0 ? 0 : (long long)t;
}

/* Appends a number as the record holds it, or dflt (JSON text) when it holds none
 * that is a finite number. */
static void openai_number(struct reply *r, const char *v, const char *dflt)
{
    char *end;
    errno = 0;
    double d = v != NULL ? strtod(v, &end) : NAN;
    if (v == NULL || errno != 0 || end == v || *end != '\0' || !isfinite(d))
        reply_raw(r, dflt, strlen(dflt));
    else
        reply_raw(r, v, strlen(v));
}

static void openai_key(struct reply *r, const char *name)
{
    reply_lit(r, ",");
    reply_strz(r, name);
    reply_lit(r, ":");
}

static void openai_string_or_null(struct reply *r, const char *name, const char *v)
{
    openai_key(r, name);
    if (v != NULL)
        reply_strz(r, v);
    else
        reply_lit(r, "null");
}

static int openai_incomplete(const struct chat_result *res)
{
    return res->status == CHAT_COMPLETED && res->finish_reason != NULL &&
           strcmp(res->finish_reason, "length") == 0;
}

static const char *openai_status(const struct chat_result *res)
{
    switch (res->status) {
    case CHAT_PROCESSING:
        return res->tries > 0 ? "in_progress" : "queued";
    case CHAT_COMPLETED:
        return openai_incomplete(res) ? "incomplete" : "completed";
    case CHAT_FAILED:
        return "failed";
    case CHAT_CANCELLED:
        return "cancelled";
    }
    return "failed";
}

/* The metadata object as stored, when it is one; else {}. */
static void openai_metadata(struct reply *r, const char *stored)
{
    json_t *m = stored != NULL ? json_loads(stored, 0, NULL) : NULL;
    if (json_is_object(m))
        reply_raw(r, stored, strlen(stored));
    else
        reply_lit(r, "{}");
    json_decref(m);
}

void openai_render_response(const struct chat_result *res, const char *trace,
                            struct reply *r)
{
    char hex[UUID_HEX_LEN + 1];
    uuid_hex(trace, hex);
    reply_lit(r, "{\"id\":\"" OPENAI_RESP_PREFIX);
    reply_raw(r, hex, strlen(hex));
    reply_lit(r, "\",\"object\":\"response\",\"created_at\":");
    reply_ll(r, openai_created(res->accepted));
    openai_string_or_null(r, "status", openai_status(res));
    openai_key(r, "background");
    if (res->background)
        reply_lit(r, "true");
    else
        reply_lit(r, "false");
    openai_key(r, "error");
    if (res->status == CHAT_FAILED) {
        reply_lit(r, "{\"code\":");
        reply_strz(r, res->error_code ? res->error_code : "unknown_error");
        reply_lit(r, ",\"message\":");
        reply_strz(r, res->error_message ? res->error_message
                                         : "the request failed for an unknown reason");
        reply_lit(r, "}");
    } else {
        reply_lit(r, "null");
    }
    openai_key(r, "incomplete_details");
    if (openai_incomplete(res))
        reply_lit(r, "{\"reason\":\"max_output_tokens\"}");
    else
        reply_lit(r, "null");
    openai_string_or_null(r, "instructions", res->instructions);
    openai_key(r, "max_output_tokens");
    openai_number(r, res->max_tokens, "null");
    openai_key(r, "metadata");
    openai_metadata(r, res->metadata);
    openai_string_or_null(r, "model", res->model);
    openai_key(r, "output");
    if (res->status == CHAT_COMPLETED && res->response != NULL) {
        reply_lit(r, "[{\"id\":\"msg_");
        reply_raw(r, hex, strlen(hex));
        reply_lit(r, "\",\"type\":\"message\",\"status\":");
        reply_strz(r, openai_incomplete(res) ? "incomplete" : "completed");
        reply_lit(r, ",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\","
                     "\"text\":");
        reply_str(r, res->response, res->response_len);
        reply_lit(r, ",\"annotations\":[],\"logprobs\":[]}]}]");
    } else {
        reply_lit(r, "[]");
    }
    reply_lit(r, ",\"parallel_tool_calls\":true,\"previous_response_id\":null,"
                 "\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":true");
    openai_key(r, "temperature");
    openai_number(r, res->temperature, "1");
    reply_lit(r, ",\"text\":{\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\","
                 "\"tools\":[]");
    openai_key(r, "top_p");
    openai_number(r, res->top_p, "1");
    reply_lit(r, ",\"truncation\":\"disabled\"");
    openai_key(r, "usage");
    if (res->status == CHAT_COMPLETED && res->total_tokens >= 0) {
        reply_lit(r, "{\"input_tokens\":");
        reply_ll(r, res->prompt_tokens >= 0 ? res->prompt_tokens : 0);
        reply_lit(r,
                  ",\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":");
        reply_ll(r, res->completion_tokens >= 0 ? res->completion_tokens : 0);
        reply_lit(r, ",\"output_tokens_details\":{\"reasoning_tokens\":0},"
                     "\"total_tokens\":");
        reply_ll(r, res->total_tokens);
        reply_lit(r, "}");
    } else {
        reply_lit(r, "null");
    }
    reply_lit(r, ",\"user\":null}");
}

void openai_render_completion(const struct chat_result *res, const char *trace,
                              struct reply *r)
{
    char hex[UUID_HEX_LEN + 1];
    uuid_hex(trace, hex);
    reply_lit(r, "{\"id\":\"" OPENAI_CHAT_PREFIX);
    reply_raw(r, hex, strlen(hex));
    reply_lit(r, "\",\"object\":\"chat.completion\",\"created\":");
    reply_ll(r, openai_created(res->accepted));
    openai_string_or_null(r, "model", res->model);
    reply_lit(r, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                 "\"content\":");
    reply_str(r, res->response ? res->response : "",
              res->response ? res->response_len : 0);
    reply_lit(r, ",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,"
                 "\"finish_reason\":");
    reply_strz(r, res->finish_reason ? res->finish_reason : "stop");
    reply_lit(r, "}],\"usage\":{\"prompt_tokens\":");
    reply_ll(r, res->prompt_tokens >= 0 ? res->prompt_tokens : 0);
    reply_lit(r, ",\"completion_tokens\":");
    reply_ll(r, res->completion_tokens >= 0 ? res->completion_tokens : 0);
    reply_lit(r, ",\"total_tokens\":");
    reply_ll(r, res->total_tokens >= 0 ? res->total_tokens : 0);
    reply_lit(r, "},\"system_fingerprint\":null}");
}

int openai_failed_status(const struct chat_result *res)
{
    const char *code = res->error_code ? res->error_code : "";
    if (res->upstream_status >= 400 && res->upstream_status <= 499 &&
        res->upstream_status != 429)
        return (int)res->upstream_status;
    if (strcmp(code, "upstream_rate_limited") == 0 ||
        strcmp(code, "insufficient_quota") == 0 || res->upstream_status == 429)
        return 429;
    if (strcmp(code, "deadline_exceeded") == 0)
        return 504;
    return 502;
}

/* ---- answers ------------------------------------------------------------------- */

static int openai_fail(struct reply *r, struct mg_connection *conn, int status,
                       const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static int openai_fail(struct reply *r, struct mg_connection *conn, int status,
                       const char *param, const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    reply_openai_error_body(r, message, reply_openai_type(status), param, code);
    return reply_send(r, conn, status);
}

/* The headers of every answer about one trace. */
static void openai_trace_headers(struct reply *r, const char *trace)
{
    char hex[UUID_HEX_LEN + 1];
    uuid_hex(trace, hex);
    reply_header(r, "x-request-id", "req_%s", hex);
    reply_header(r, OPENAI_TRACE_HEADER, "%s", trace);
}

static int openai_not_found(struct reply *r, struct mg_connection *conn, const char *id)
{
    return openai_fail(r, conn, 404, NULL, NULL,
                       "No response found with id '%.80s' (unknown, deleted, expired "
                       "after CHATQ_RESULT_TTL, or made with another key).",
                       id);
}

enum openai_front { OPENAI_FRONT_RESPONSES, OPENAI_FRONT_CHAT };

/* Reads trace's record into *hash and *res. Returns 0, or the status of the error
 * sent (503, 404, 500). */
static int openai_read(struct reply *r, struct mg_connection *conn, struct worker *w,
                       const char *trace, const char *id, redisReply **hash,
                       struct chat_result *res)
{
    char err[128];
    if (lookup_fetch(w, trace, hash) != 0)
        return openai_fail(r, conn, 503, NULL, "redis_unavailable",
                           "The store is unavailable; retry later.");
    if ((*hash)->elements == 0 || !lookup_owned(w, *hash))
        return openai_not_found(r, conn, id);
    if (record_result_parse(*hash, res, err, sizeof(err)) != 0) {
        log_warn(trace, "unreadable trace record: %s", err);
        return openai_fail(r, conn, 500, NULL, "internal_error",
                           "The record of this response is unreadable.");
    }
    if (res->deleted)
        return openai_not_found(r, conn, id);
    return 0;
}

/* A failed chat as the error a waiting caller gets. The SDKs retry 429 and 5xx by
 * themselves, which would make a second chat: chatq has retried already. */
static int openai_send_failed(struct reply *r, struct mg_connection *conn,
                              const struct chat_result *res)
{
    reply_header(r, "x-should-retry", "false");
    return openai_fail(r, conn, openai_failed_status(res), NULL,
                       res->error_code ? res->error_code : "unknown_error", "%s",
                       res->error_message ? res->error_message : "the request failed");
}

/* Answers with what trace's record says now; waited says a wait preceded this (and
 * the caller wants the result itself). */
static int openai_answer(struct reply *r, struct mg_connection *conn, struct worker *w,
                         const char *trace, enum openai_front front, int waited)
{
    redisReply *hash = NULL;
    struct chat_result res;
    char hex[UUID_HEX_LEN + 1], id[UUID_HEX_LEN + 16];
    int status;

    uuid_hex(trace, hex);
    snprintf(id, sizeof(id), "%s%s", OPENAI_RESP_PREFIX, hex);
    openai_trace_headers(r, trace);
    status = openai_read(r, conn, w, trace, id, &hash, &res);
    if (status != 0)
        goto out;
    if (waited && res.status == CHAT_FAILED) {
        status = openai_send_failed(r, conn, &res);
        goto out;
    }
    if (front == OPENAI_FRONT_CHAT) {
        if (res.status == CHAT_COMPLETED) {
            openai_render_completion(&res, trace, r);
            status = reply_send(r, conn, 200);
        } else if (res.status == CHAT_CANCELLED) {
            reply_header(r, "x-should-retry", "false");
            status = openai_fail(r, conn, 409, NULL, "cancelled",
                                 "This chat was cancelled (chatq id %s).", trace);
        } else {
            /* Still running: it is kept; the header says where to read it. */
            reply_header(r, "x-should-retry", "false");
            status =
                openai_fail(r, conn, 504, NULL, "wait_timeout",
                            "The chat did not finish within WAIT_MAX_MS; it is still "
                            "running. Read it with GET /chat/%s/response or GET "
                            "/v1/responses/" OPENAI_RESP_PREFIX "%s.",
                            trace, hex);
        }
        goto out;
    }
    if (res.status == CHAT_PROCESSING)
        reply_header(r, "openai-poll-after-ms", "%d", OPENAI_POLL_AFTER_MS);
    openai_render_response(&res, trace, r);
    status = reply_send(r, conn, 200);
out:
    freeReplyObject(hash);
    return status;
}

/* POST /v1/responses and POST /v1/chat/completions. */
static int openai_create(struct mg_connection *conn, struct server *srv, struct worker *w,
                         enum openai_front front)
{
    char stack[OPENAI_STACK_BODY];
    char *body = NULL;
    size_t len = 0;
    json_t *doc = NULL;
    struct oaireq o;
    struct oaireq_error oerr;
    struct validate_error verr;
    struct reply r;
    int status;

    memset(&o, 0, sizeof(o));
    reply_init(&r);
    switch (intake_read(conn, srv->max_body, srv->request_timeout_ms, stack,
                        sizeof(stack), &body, &len)) {
    case INTAKE_READ_OK:
        break;
    case INTAKE_READ_TOO_LARGE:
        r.close = 1;
        status = openai_fail(&r, conn, 413, NULL, "body_too_large",
                             "The request body is larger than %zu bytes.", srv->max_body);
        goto out;
    case INTAKE_READ_TIMEOUT:
        r.close = 1;
        status = openai_fail(&r, conn, 408, NULL, "request_timeout",
                             "The request body stopped arriving: nothing came for %d ms.",
                             srv->request_timeout_ms);
        goto out;
    case INTAKE_READ_SHORT:
    case INTAKE_READ_NOMEM:
        r.close = 1;
        status = openai_fail(&r, conn, 400, NULL, "invalid_body",
                             "The request body could not be read completely.");
        goto out;
    }
    const char *idem = mg_get_header(conn, VALIDATE_IDEM_HEADER);
    if (idem != NULL && validate_idempotency_key(idem, &verr) != 0) {
        status = openai_fail(&r, conn, 400, VALIDATE_IDEM_HEADER, verr.code, "%s",
                             verr.message);
        goto out;
    }
    doc = front == OPENAI_FRONT_CHAT ? oaireq_chat(body, len, &o, &oerr)
                                     : oaireq_responses(body, len, &o, &oerr);
    if (doc == NULL) {
        log_debug(NULL, "POST %s refused: %s",
                  front == OPENAI_FRONT_CHAT ? OPENAI_CHAT : OPENAI_RESPONSES,
                  oerr.message);
        reply_openai_error_body(&r, oerr.message, oerr.type,
                                oerr.param[0] ? oerr.param : NULL, oerr.code);
        status = reply_send(&r, conn, oerr.status);
        goto out;
    }
    if (w == NULL) {
        status = openai_fail(&r, conn, 500, NULL, "internal_error",
                             "The server could not set up this thread.");
        goto out;
    }
    /* The gateway key's allow-list, as for POST /chat. */
    const struct access_limits *lim = w->limits;
    if (!access_model_allowed(lim, o.req.model, strlen(o.req.model))) {
        status =
            openai_fail(&r, conn, 403, "model", "model_not_allowed",
                        "This key may not use the model '%.64s'; it may use: %.400s.",
                        o.req.model, lim->models);
        goto out;
    }

    char trace[UUID_LEN + 1], accepted[CLOCK_ISO_LEN], answer[UUID_LEN + 1];
    if (uuid_v4(trace) != 0) {
        status = openai_fail(&r, conn, 500, NULL, "internal_error",
                             "Could not make an id: the random source failed.");
        goto out;
    }
    long long now = clock_now_ms();
    clock_iso8601(accepted, now);
    o.req.trace = trace;
    o.req.accepted = accepted;
    if (srv->default_deadline_ms > 0)
        o.req.deadline = now + srv->default_deadline_ms;
    /* OpenAI calls a project's webhook when a Response ends; here the operator's
     * WEBHOOK_URL (checked at start) is that webhook, and its events are OpenAI's
     * response.* ones (webhook.h). A chat completion is answered in the call
     * itself: none. */
    if (front == OPENAI_FRONT_RESPONSES)
        o.req.webhook = srv->webhook_default;

    struct intake_over over = {NULL, 0};
    switch (intake_store(w, &o.req, idem, answer, &over)) {
    case INTAKE_OVER_QUOTA: {
        /* The SDKs retry a 429 after Retry-After by themselves. */
        int rpm = strcmp(over.limit, INTAKE_LIMIT_RPM) == 0;
        long long secs = over.retry_ms > 0 ? (over.retry_ms + 999) / 1000 : 1;
        reply_header(&r, "Retry-After", "%lld", secs);
        status = openai_fail(&r, conn, 429, NULL, "quota_exceeded",
                             "This key may %s %lld %s; retry after %lld s.",
                             rpm ? "make" : "have", rpm ? lim->rpm : lim->inflight,
                             rpm ? "requests a minute" : "chats in flight", secs);
        goto out;
    }
    case INTAKE_STORED:
        log_debug(trace, "accepted on %s: model=%s", o.req.front, o.req.model);
        break;
    case INTAKE_REPLAYED:
        break;
    case INTAKE_CONFLICT:
        status =
            openai_fail(&r, conn, 422, VALIDATE_IDEM_HEADER, "idempotency_key_reused",
                        "This " VALIDATE_IDEM_HEADER " was already used for a "
                        "different request; use a new key for a new request.");
        goto out;
    case INTAKE_NO_MEMORY:
        status = openai_fail(&r, conn, 503, NULL, "redis_out_of_memory",
                             "The request could not be queued because the store is full "
                             "(Redis maxmemory reached); nothing was written, retry "
                             "later.");
        goto out;
    case INTAKE_NOT_WRITTEN:
        /* Nothing was written: the SDK's own retry is safe. */
        status = openai_fail(&r, conn, 503, NULL, "redis_unavailable",
                             "The request could not be queued because the store is "
                             "unavailable; nothing was written, retry later.");
        goto out;
    case INTAKE_UNKNOWN:
        if (idem == NULL)
            reply_header(&r, "x-should-retry", "false");
        status = openai_fail(&r, conn, 504, NULL, "redis_timeout",
                             "The store did not confirm the request in time: it may have "
                             "been accepted. Retry with the same " VALIDATE_IDEM_HEADER
                             " header to get it without running it twice.");
        goto out;
    }

    int waited = !(front == OPENAI_FRONT_RESPONSES && o.req.background);
    long long deadline = clock_mono_ms() + srv->wait_max_ms;
    int rc = waited ? await_final(srv, w, answer, deadline) : 1;
    if (rc < 0) {
        openai_trace_headers(&r, answer);
        reply_header(&r, "x-should-retry", "false");
        status = openai_fail(&r, conn, 503, NULL, "redis_unavailable",
                             "The chat was queued (chatq id %s) but the store became "
                             "unavailable while waiting; read it later by its id.",
                             answer);
        goto out;
    }
    /* Back before its deadline without the result, and not for a stop: every wait
     * slot (WAIT_THREADS) is taken. A Response object can say "queued"; a chat
     * completion has no such state. Either way the chat goes on. */
    if (rc == 0 && front == OPENAI_FRONT_CHAT && clock_mono_ms() < deadline &&
        !await_stopping(srv->await)) {
        openai_trace_headers(&r, answer);
        reply_header(&r, "x-should-retry", "false");
        status =
            openai_fail(&r, conn, 503, NULL, "too_many_waiters",
                        "The chat was queued (chatq id %s), but WAIT_THREADS callers "
                        "wait already, so this call cannot wait for it; read it "
                        "with GET /chat/%s/response.",
                        answer, answer);
        goto out;
    }
    status = openai_answer(&r, conn, w, answer, front, waited);

out:
    json_decref(doc);
    oaireq_clear(&o);
    if (body != stack)
        free(body);
    return status;
}

/* /v1/responses/{id}[/cancel]. */
static int openai_response(struct mg_connection *conn, struct worker *w, const char *rest)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *method = ri->request_method ? ri->request_method : "";
    char id[UUID_HEX_LEN + 16], trace[UUID_LEN + 1];
    const char *slash = strchr(rest, '/');
    size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
    int cancel = slash != NULL && strcmp(slash, OPENAI_CANCEL) == 0;
    struct reply r;

    reply_init(&r);
    if (slash != NULL && !cancel)
        return reply_error(&r, conn, 404, "not_found", "no such endpoint");
    snprintf(id, sizeof(id), "%.*s", (int)(idlen < sizeof(id) ? idlen : sizeof(id) - 1),
             rest);
    const char *allow = cancel ? "POST" : "GET, DELETE";
    if ((cancel && strcmp(method, "POST") != 0) ||
        (!cancel && strcmp(method, "GET") != 0 && strcmp(method, "DELETE") != 0)) {
        r.allow = allow;
        return openai_fail(&r, conn, 405, NULL, "method_not_allowed",
                           "Method %.16s is not allowed here; use %s.", method, allow);
    }
    if (idlen >= sizeof(id) || openai_trace_of(id, OPENAI_RESP_PREFIX, trace) != 0)
        return openai_not_found(&r, conn, id);
    if (w == NULL)
        return openai_fail(&r, conn, 500, NULL, "internal_error",
                           "The server could not set up this thread.");
    if (strcmp(method, "GET") == 0)
        return openai_answer(&r, conn, w, trace, OPENAI_FRONT_RESPONSES, 0);

    enum cancel_result done = cancel_run(w, trace, !cancel);
    if (done == CANCEL_FAILED)
        return openai_fail(&r, conn, 503, NULL, "redis_unavailable",
                           "The store is unavailable; retry later.");
    if (done == CANCEL_NONE)
        return openai_not_found(&r, conn, id);
    if (cancel)
        return openai_answer(&r, conn, w, trace, OPENAI_FRONT_RESPONSES, 0);
    openai_trace_headers(&r, trace);
    reply_lit(&r, "{\"id\":");
    reply_strz(&r, id);
    reply_lit(&r, ",\"object\":\"response\",\"deleted\":true}");
    return reply_send(&r, conn, 200);
}

int openai_handle(struct mg_connection *conn, struct server *srv, struct worker *w)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *path = ri->local_uri ? ri->local_uri : "";
    const char *method = ri->request_method ? ri->request_method : "";
    struct reply r;
    enum openai_front front;

    if (strcmp(path, OPENAI_RESPONSES) == 0)
        front = OPENAI_FRONT_RESPONSES;
    else if (strcmp(path, OPENAI_CHAT) == 0)
        front = OPENAI_FRONT_CHAT;
    else if (strncmp(path, OPENAI_RESPONSES "/", strlen(OPENAI_RESPONSES) + 1) == 0)
        return openai_response(conn, w, path + strlen(OPENAI_RESPONSES) + 1);
    else {
        reply_init(&r);
        return reply_error(&r, conn, 404, "not_found",
                           "no such endpoint; chatq serves POST " OPENAI_RESPONSES
                           ", GET|DELETE " OPENAI_RESPONSES
                           "/{id}, POST " OPENAI_RESPONSES
                           "/{id}/cancel and POST " OPENAI_CHAT);
    }
    if (strcmp(method, "POST") != 0) {
        reply_init(&r);
        r.allow = "POST";
        return openai_fail(&r, conn, 405, NULL, "method_not_allowed",
                           "Method %.16s is not allowed here; use POST.", method);
    }
    return openai_create(conn, srv, w, front);
}
