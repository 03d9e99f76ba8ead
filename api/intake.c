/* intake.c - POST /chat: body -> validation -> pending hash + requests stream (see
 * intake.h). */
#include "intake.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <civetweb.h>
#include <hiredis/hiredis.h>

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

enum intake_read_result {
    INTAKE_READ_OK,
    INTAKE_READ_TOO_LARGE,
    INTAKE_READ_SHORT, /* the client stopped sending, or sent a broken chunk */
    INTAKE_READ_NOMEM,
};

/* Reads the whole request body, at most max bytes, into *body: first stack (of
 * stacklen bytes), then a new heap buffer if it does not fit (the caller frees *body
 * when it is not stack). Never holds more than max + 1 bytes, whatever the client
 * sends or claims. */
static enum intake_read_result intake_read(struct mg_connection *conn, size_t max,
                                           char *stack, size_t stacklen, char **body,
                                           size_t *bodylen)
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
        int n = mg_read(conn, buf + len, chunk);
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

/* Queues one command built in c; its strings must live until the replies are read. */
static int intake_append(redisContext *rc, struct cmd *c)
{
    assert(!c->overflow); /* only out of memory overflows a cmd */
    return redisAppendCommandArgv(rc, c->argc, c->argv, c->len) == REDIS_OK ? 0 : -1;
}

/* The three writes of an accepted request, built once, sent in one MULTI/EXEC. */
struct intake_cmds {
    struct cmd hset, expire, xadd;
};

enum intake_exec_result { INTAKE_EXEC_OK, INTAKE_EXEC_REFUSED, INTAKE_EXEC_LOST };

/* Sends MULTI, the three commands and EXEC in one round trip and reads the five
 * replies. INTAKE_EXEC_LOST: the connection failed (the caller drops it);
 * INTAKE_EXEC_REFUSED: Redis answered with an error (logged), nothing was written. */
static enum intake_exec_result intake_exec(redisContext *redis, struct intake_cmds *c,
                                           const char *trace)
{
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
    redisReply *replies[5] = {NULL};
    enum intake_exec_result rc = INTAKE_EXEC_LOST;

    if (redisAppendCommandArgv(redis, 1, multi, NULL) != REDIS_OK ||
        intake_append(redis, &c->hset) != 0 || intake_append(redis, &c->expire) != 0 ||
        intake_append(redis, &c->xadd) != 0 ||
        redisAppendCommandArgv(redis, 1, exec, NULL) != REDIS_OK)
        goto out;
    for (size_t i = 0; i < 5; i++) {
        void *reply = NULL;
        if (redisGetReply(redis, &reply) != REDIS_OK)
            goto out;
        replies[i] = reply;
    }

    /* A refused command inside MULTI shows as its own error reply and makes EXEC
     * fail with EXECABORT; an error while executing shows inside EXEC's array. */
    const redisReply *ex = replies[4];
    const char *why = NULL;
    for (size_t i = 0; i < 5 && why == NULL; i++)
        if (replies[i]->type == REDIS_REPLY_ERROR)
            why = replies[i]->str;
    if (why == NULL && (ex->type != REDIS_REPLY_ARRAY || ex->elements != 3))
        why = "EXEC did not return 3 replies";
    for (size_t i = 0; why == NULL && i < ex->elements; i++)
        if (ex->element[i]->type == REDIS_REPLY_ERROR)
            why = ex->element[i]->str;
    rc = INTAKE_EXEC_OK;
    if (why != NULL) {
        log_warn(trace, "Redis refused the request: %s", why);
        rc = INTAKE_EXEC_REFUSED;
    }

out:
    for (size_t i = 0; i < 5; i++)
        freeReplyObject(replies[i]);
    return rc;
}

/* Writes the pending hash (with its TTL) and the requests-stream entry in one
 * MULTI/EXEC, pipelined into one round trip: both or neither, so no trace is ever
 * pending without work queued for it, nor queued without a record to answer GETs.
 * Returns 0 once Redis confirmed, or -1 (logged). */
static int intake_store(struct worker *w, const struct chat_request *req)
{
    const struct server *srv = w->srv;
    char key[KEYS_MAX + UUID_LEN + 1];
    struct intake_cmds c;
    int result = -1;

    keys_trace(&srv->keys, req->trace, key, sizeof(key));
    cmd_init(&c.hset, "HSET");
    cmd_addz(&c.hset, key);
    record_pending_append(req, &c.hset);
    cmd_init(&c.expire, "EXPIRE");
    cmd_addz(&c.expire, key);
    cmd_addll(&c.expire, srv->result_ttl);
    /* No MAXLEN: trimming could drop work nobody has processed yet. */
    cmd_init(&c.xadd, "XADD");
    cmd_addz(&c.xadd, srv->keys.requests);
    cmd_addz(&c.xadd, "*");
    record_request_append(req, &c.xadd);

    /* A second try only on a connection found closed (see worker_redis_failed). */
    for (int attempt = 0; attempt < 2; attempt++) {
        redisContext *redis = worker_redis(w, req->trace);
        if (redis == NULL)
            break;
        enum intake_exec_result rc = intake_exec(redis, &c, req->trace);
        if (rc != INTAKE_EXEC_LOST) {
            result = rc == INTAKE_EXEC_OK ? 0 : -1;
            break;
        }
        if (!worker_redis_failed(w, req->trace, "MULTI/EXEC"))
            break;
    }
    cmd_free(&c.hset);
    cmd_free(&c.expire);
    cmd_free(&c.xadd);
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
    switch (intake_read(conn, srv->max_body, stack, sizeof(stack), &body, &len)) {
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
    case INTAKE_READ_NOMEM:
        r.close = 1;
        status = reply_error(&r, conn, 500, "internal_error",
                             "the server ran out of memory reading the body");
        goto out;
    }

    struct chat_request req;
    struct validate_error verr;
    doc = validate_chat(body, len, srv->default_model, &req, &verr);
    if (doc == NULL) {
        log_debug(NULL, "POST /chat refused: %s", verr.code);
        status = reply_error(&r, conn, verr.status, verr.code, "%s", verr.message);
        goto out;
    }

    char trace[UUID_LEN + 1], accepted[CLOCK_ISO_LEN];
    if (uuid_v4(trace) != 0) {
        log_error(NULL, "cannot make a trace id: the random source failed");
        status =
            reply_error(&r, conn, 500, "internal_error", "could not make a trace id");
        goto out;
    }
    clock_iso8601(accepted, clock_now_ms());
    req.trace = trace;
    req.accepted = accepted;

    if (w == NULL) {
        status = reply_error(&r, conn, 500, "internal_error",
                             "the server could not set up this thread");
        goto out;
    }
    if (intake_store(w, &req) != 0) {
        status = reply_error(&r, conn, 503, "redis_unavailable",
                             "the request could not be queued because the store is "
                             "unavailable; retry later");
        goto out;
    }
    log_debug(trace, "accepted: model=%s, %zu bytes of message", req.model,
              req.message_len);

    reply_lit(&r, "{\"traceId\":\"");
    reply_raw(&r, trace, UUID_LEN);
    reply_lit(&r, "\",\"message\":\"Chat request received and is being processed\","
                  "\"status\":\"processing\"}");
    status = reply_send(&r, conn, 202);

out:
    json_decref(doc);
    if (body != stack)
        free(body);
    return status;
}
