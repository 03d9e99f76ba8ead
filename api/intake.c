/* intake.c - POST /chat: body -> validation -> pending hash + requests stream (see
 * intake.h). */
#include "intake.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <civetweb.h>
#include <hiredis/hiredis.h>

#include "access.h"
#include "clock.h"
#include "cmd.h"
#include "keys.h"
#include "log.h"
#include "record.h"
#include "reply.h"
#include "server.h"
#include "uuid.h"
#include "validate.h"
#include "worker.h"

/* Bodies up to this size are read into the stack; chat requests mostly are. */
#define INTAKE_STACK_BODY 8192

enum intake_read_result intake_read(struct mg_connection *conn, size_t max,
                                    int timeout_ms, char *stack, size_t stacklen,
                                    char **body, size_t *bodylen)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    long long declared = ri->content_length;
    char *buf = stack;
    size_t cap = stacklen, len = 0;
    /* Without a Content-Length (chunked), read one byte past the limit to see it. */
    size_t want = declared >= 0 ? (size_t)declared : max + 1;

    *body = stack;
    *bodylen = 0;
    if (declared > (long long)max)
        return INTAKE_READ_TOO_LARGE;
    if (declared > (long long)stacklen) {
        buf = malloc((size_t)declared);
        if (buf == NULL)
            return INTAKE_READ_NOMEM;
        cap = (size_t)declared;
        *body = buf;
    }
    while (len < want) {
        if (len == cap) {
            size_t ncap = cap * 2 < max + 1 ? cap * 2 : max + 1;
            char *nbuf = buf == stack ? malloc(ncap) : realloc(buf, ncap);
            if (nbuf == NULL)
                return INTAKE_READ_NOMEM;
            if (buf == stack)
                memcpy(nbuf, stack, len);
            buf = nbuf;
            cap = ncap;
            *body = buf;
        }
        size_t chunk = cap - len < want - len ? cap - len : want - len;
        long long began = clock_mono_ms();
        int n = mg_read(conn, buf + len, chunk);
        /* civetweb gives up on a silent client after request_timeout_ms and
         * returns what it has: nothing, here. */
        if (n <= 0 && clock_mono_ms() - began >= timeout_ms)
            return INTAKE_READ_TIMEOUT;
        if (n < 0)
            return INTAKE_READ_SHORT;
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max)
            return INTAKE_READ_TOO_LARGE;
    }
    *bodylen = len;
    if (declared >= 0 && len < (size_t)declared)
        return INTAKE_READ_SHORT;
    return INTAKE_READ_OK;
}

/* The write of an accepted request, one script so that it is all or nothing.
 * KEYS: requests stream, trace hash, then the Idempotency-Key's key when the
 * request has one. ARGV: ttl, trace id, n, then n request-stream arguments
 * (field/value pairs), then the pending record's pairs.
 * Returns {outcome, traceId}: INTAKE_LUA_WRITTEN (traceId: ARGV[2]), or, the key
 * being taken, INTAKE_LUA_REPLAY (same request: the traceId of its chat) or
 * INTAKE_LUA_CONFLICT (another request).
 *
 * A request's fingerprint is the SHA-1 of its validated fields (message, model,
 * temperature, and user when there is one, and the OpenAI front's messages, top_p,
 * max_tokens and params when given, as they travel on the stream), not of the
 * body's text: a retry that spells the same JSON differently is the same request,
 * and a key reused for another end user is not (that user must not be handed the
 * first one's chat). A request without a user fingerprints as it always did.
 *
 * XADD comes first: Redis does not undo what a script wrote before an error, but a
 * script stops at its first failing command, so a failing XADD (the key holds
 * another type, Redis is out of memory) leaves nothing behind; the writes after
 * it cannot fail on a fresh trace key. Sent with EVAL (see handler/finalize.c). */
#define INTAKE_LUA_WRITTEN 1
#define INTAKE_LUA_REPLAY 2
#define INTAKE_LUA_CONFLICT 3

/* clang-format off */
static const char intake_script[] =
    "local n = tonumber(ARGV[3])\n"
    "local fp\n"
    "if KEYS[3] then\n"
    "  local parts = {}\n"
    "  for i = 4, 3 + n, 2 do\n"
    "    local f = ARGV[i]\n"
    "    if f == '" REC_MESSAGE "' or f == '" REC_MODEL "' or\n"
    "       f == '" REC_TEMPERATURE "' or f == '" REC_USER "' or\n"
    "       f == '" REC_MESSAGES "' or f == '" REC_TOP_P "' or\n"
    "       f == '" REC_MAX_TOKENS "' or f == '" REC_PARAMS "' then\n"
    "      parts[#parts + 1] = f .. '=' .. ARGV[i + 1]\n"
    "    end\n"
    "  end\n"
    "  fp = redis.sha1hex(table.concat(parts, '\\0'))\n"
    "  local prev = redis.call('GET', KEYS[3])\n"
    "  if prev then\n"
    "    local t, old = string.match(prev, '^([^:]*):(.*)$')\n"
    "    if old == fp then return {2, t} end\n" /* INTAKE_LUA_REPLAY */
    "    return {3, t or ''}\n"                  /* INTAKE_LUA_CONFLICT */
    "  end\n"
    "end\n"
    "redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4, 3 + n))\n"
    "redis.call('HSET', KEYS[2], unpack(ARGV, 4 + n))\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[1])\n"
    "if KEYS[3] then\n"
    "  redis.call('SET', KEYS[3], ARGV[2] .. ':' .. fp, 'EX', ARGV[1])\n"
    "end\n"
    "return {1, ARGV[2]}\n"; /* INTAKE_LUA_WRITTEN */
/* clang-format on */

/* Appends the arguments of src after its command name to dst. */
static void intake_add_args(struct cmd *dst, const struct cmd *src)
{
    for (int i = 1; i < src->argc; i++)
        cmd_add(dst, src->argv[i], src->len[i]);
}

/* Reads the script's answer; the trace id of a replay goes into trace. */
static enum intake_store_result intake_answer(const redisReply *r, const char *trace_in,
                                              char trace[UUID_LEN + 1])
{
    if (r->type == REDIS_REPLY_ERROR) {
        log_warn(trace_in, "Redis refused the request, nothing was written: %s", r->str);
        return INTAKE_NOT_WRITTEN;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        log_error(trace_in, "the intake script answered something unexpected");
        return INTAKE_NOT_WRITTEN;
    }
    long long outcome = r->element[0]->integer;
    const redisReply *id = r->element[1];
    if (outcome == INTAKE_LUA_WRITTEN)
        return INTAKE_STORED;
    if (outcome == INTAKE_LUA_CONFLICT)
        return INTAKE_CONFLICT;
    if (outcome == INTAKE_LUA_REPLAY && id->len == UUID_LEN) {
        memcpy(trace, id->str, UUID_LEN);
        trace[UUID_LEN] = '\0';
        if (uuid_valid(trace))
            return INTAKE_REPLAYED;
    }
    /* Only a hand-written value of the key gets here. */
    log_error(trace_in, "an Idempotency-Key record holds no trace id; refusing");
    return INTAKE_CONFLICT;
}

enum intake_store_result intake_store(struct worker *w, const struct chat_request *req,
                                      const char *idem, char trace[UUID_LEN + 1])
{
    const struct server *srv = w->srv;
    char key[KEYS_MAX + UUID_LEN + 1];
    char idem_key[KEYS_MAX + ACCESS_OWNER_LEN + 1 + VALIDATE_IDEM_KEY_MAX + 1];
    char owned[ACCESS_OWNER_LEN + 1 + VALIDATE_IDEM_KEY_MAX + 1];
    struct cmd eval, fields, pending;
    redisReply *reply = NULL;
    enum intake_store_result result = INTAKE_NOT_WRITTEN;

    memcpy(trace, req->trace, UUID_LEN + 1);
    keys_trace(&srv->keys, req->trace, key, sizeof(key));
    /* No MAXLEN on the XADD: trimming could drop work nobody has processed yet. */
    cmd_init(&fields, "XADD");
    record_request_append(req, &fields);
    cmd_init(&pending, "HSET");
    record_pending_append(req, &pending);
    /* Who may read it: GET answers another key as if it did not exist. */
    if (w->owner[0] != '\0') {
        cmd_addz(&pending, REC_OWNER);
        cmd_addz(&pending, w->owner);
    }
    cmd_init(&eval, "EVAL");
    cmd_addz(&eval, intake_script);
    cmd_addz(&eval, idem != NULL ? "3" : "2");
    cmd_addz(&eval, srv->keys.requests);
    cmd_addz(&eval, key);
    if (idem != NULL) {
        /* Each key its own Idempotency-Keys: one key's client must neither be
         * handed another's trace nor be refused for reusing another's key. */
        if (w->owner[0] != '\0') {
            snprintf(owned, sizeof(owned), "%s:%s", w->owner, idem);
            idem = owned;
        }
        keys_idem(&srv->keys, idem, idem_key, sizeof(idem_key));
        cmd_addz(&eval, idem_key);
    }
    cmd_addll(&eval, srv->result_ttl);
    cmd_addz(&eval, req->trace);
    cmd_addll(&eval, fields.argc - 1);
    intake_add_args(&eval, &fields);
    intake_add_args(&eval, &pending);
    if (eval.overflow || fields.overflow || pending.overflow) {
        log_error(req->trace, "out of memory building the intake write");
        goto out;
    }

    switch (worker_command_once(w, req->trace, eval.argc, eval.argv, eval.len, &reply)) {
    case WORKER_ANSWERED:
        result = intake_answer(reply, req->trace, trace);
        break;
    case WORKER_NOT_SENT:
        break;
    case WORKER_UNKNOWN:
        log_warn(req->trace, "Redis did not confirm the write; it may have happened "
                             "(answering 504)");
        result = INTAKE_UNKNOWN;
        break;
    }

out:
    freeReplyObject(reply);
    cmd_free(&eval);
    cmd_free(&fields);
    cmd_free(&pending);
    return result;
}

int intake_handle(struct mg_connection *conn, struct server *srv, struct worker *w)
{
    char stack[INTAKE_STACK_BODY];
    char *body = NULL;
    size_t len = 0;
    json_t *doc = NULL;
    struct reply r;
    int status;

    reply_init(&r);
    switch (intake_read(conn, srv->max_body, srv->request_timeout_ms, stack,
                        sizeof(stack), &body, &len)) {
    case INTAKE_READ_OK:
        break;
    case INTAKE_READ_TOO_LARGE:
        r.close = 1; /* the rest of the body is still on its way: don't read it */
        status = reply_error(&r, conn, 413, "body_too_large",
                             "the request body is larger than %zu bytes", srv->max_body);
        goto out;
    case INTAKE_READ_SHORT:
        r.close = 1;
        status = reply_error(&r, conn, 400, "invalid_body",
                             "the request body could not be read completely");
        goto out;
    case INTAKE_READ_TIMEOUT:
        r.close = 1;
        status = reply_error(&r, conn, 408, "request_timeout",
                             "the request body stopped arriving: nothing came for %d ms",
                             srv->request_timeout_ms);
        goto out;
    case INTAKE_READ_NOMEM:
        r.close = 1;
        status = reply_error(&r, conn, 500, "internal_error",
                             "the server ran out of memory reading the body");
        goto out;
    }

    struct chat_request req;
    struct validate_error verr;
    const char *idem = mg_get_header(conn, VALIDATE_IDEM_HEADER);
    if (idem != NULL && validate_idempotency_key(idem, &verr) != 0) {
        status = reply_error(&r, conn, verr.status, verr.code, "%s", verr.message);
        goto out;
    }
    doc = validate_chat(body, len, srv->default_model, &req, &verr);
    if (doc == NULL) {
        log_debug(NULL, "POST /chat refused: %s", verr.code);
        status = reply_error(&r, conn, verr.status, verr.code, "%s", verr.message);
        goto out;
    }

    char trace[UUID_LEN + 1], accepted[CLOCK_ISO_LEN], answer[UUID_LEN + 1];
    if (uuid_v4(trace) != 0) {
        log_error(NULL, "cannot make a trace id: the random source failed");
        status =
            reply_error(&r, conn, 500, "internal_error", "could not make a trace id");
        goto out;
    }
    long long now = clock_now_ms();
    clock_iso8601(accepted, now);
    req.trace = trace;
    req.accepted = accepted;
    /* Relative on the wire, absolute in the record: every processor compares it
     * with its own clock. */
    if (req.deadline == 0)
        req.deadline = srv->default_deadline_ms;
    if (req.deadline > 0)
        req.deadline += now;

    if (w == NULL) {
        status = reply_error(&r, conn, 500, "internal_error",
                             "the server could not set up this thread");
        goto out;
    }
    switch (intake_store(w, &req, idem, answer)) {
    case INTAKE_STORED:
        log_debug(trace, "event=accepted model=%s bytes=%zu", req.model, req.message_len);
        break;
    case INTAKE_REPLAYED:
        log_debug(answer, "Idempotency-Key seen before for this request: answered with "
                          "its trace again");
        break;
    case INTAKE_CONFLICT:
        status = reply_error(&r, conn, 422, "idempotency_key_reused",
                             "this " VALIDATE_IDEM_HEADER " was already used for a "
                             "different request (message, model or temperature "
                             "differ); use a new key for a new request");
        goto out;
    case INTAKE_NOT_WRITTEN:
        status = reply_error(&r, conn, 503, "redis_unavailable",
                             "the request could not be queued because the store is "
                             "unavailable; nothing was written, retry later");
        goto out;
    case INTAKE_UNKNOWN:
        status = reply_error(
            &r, conn, 504, "redis_timeout",
            "the store did not confirm the request in time: the chat may have been "
            "accepted. Retry with the same " VALIDATE_IDEM_HEADER " header to get its "
            "traceId without running it twice%s",
            idem != NULL ? "" : " (this request had none: a retry may run it twice)");
        goto out;
    }

    r.trace = answer;
    reply_lit(&r, "{\"traceId\":\"");
    reply_raw(&r, answer, UUID_LEN);
    reply_lit(&r, "\",\"message\":\"Chat request received and is being processed\","
                  "\"status\":\"processing\"}");
    status = reply_send(&r, conn, 202);

out:
    json_decref(doc);
    if (body != stack)
        free(body);
    return status;
}
