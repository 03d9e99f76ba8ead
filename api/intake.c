/* intake.c - POST /chat: body -> validation -> pending hash + requests stream (see
 * intake.h). */
#include "intake.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <civetweb.h>
#include <hiredis/hiredis.h>

#include "access.h"
#include "clock.h"
#include "cmd.h"
#include "evalsha.h"
#include "events.h"
#include "keys.h"
#include "log.h"
#include "quota.h"
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

/* The write of an accepted request, one script so that it is all or nothing, and so
 * that admission and the key's quotas are one round trip.
 * KEYS: requests stream, trace hash, the key's quota hash (quota.h), then the
 * Idempotency-Key's key when the request has one. ARGV: ttl,
 * trace id, then the quotas (see intake_quota_args), n, then n request-stream
 * arguments (field/value pairs), then the pending record's pairs. Returns {outcome,
 * traceId}: INTAKE_LUA_WRITTEN (traceId: ARGV[2]), or, the key being taken,
 * INTAKE_LUA_REPLAY (same request: the traceId of its chat) or INTAKE_LUA_CONFLICT
 * (another request); or {INTAKE_LUA_OVER, limit, retry ms}: over a quota, nothing
 * written.
 *
 * A request's fingerprint is the SHA-1 of its validated fields (message, model,
 * temperature, and user when there is one, and the OpenAI front's messages, top_p,
 * max_tokens and params when given, and stream when true, as they travel on the
 * stream), not of the
 * body's text: a retry that spells the same JSON differently is the same request,
 * and a key reused for another end user is not (that user must not be handed the
 * first one's chat). A request without a user fingerprints as it always did. Its
 * webhook (kept in the pending record, not on the stream) counts too: a retry that
 * names another URL is another request, not one whose URL is silently dropped
 * (WEBHOOK_URL, when it applies, counts as the request's own); a request without
 * one fingerprints as before.
 *
 * The Idempotency-Key comes before the quotas: a replay of an accepted chat is
 * answered with its trace, neither counted again nor refused. The rate is GCRA in
 * whole microseconds: each request moves the key's theoretical arrival time (TAT) on
 * by the period, 60 s / rpm, and a request is let in while the TAT stays within a
 * minute of now, so a key may send rpm requests at once, then one a period. The
 * period the TAT was counted with is kept beside it: after a reload changed the
 * limit, what was already counted is counted again at the new period, so a raised
 * limit lets more in at once. Chats in flight are counted by slice (quota.h): the
 * chat is counted in the slice of now, which its pending record names (REC_SLOT,
 * added by intake_store), and whatever makes it final takes it off. The hash
 * expires, so that an idle key leaves nothing behind; its TTL is renewed by the
 * first chat of each slice, which also deletes the slices that lapsed. So a POST
 * with quotas costs Redis one HMGET and one HSET (HINCRBY for a key without a
 * rate), whatever the number of chats in flight.
 *
 * Every number the script needs is worked out by the api, and the time is the
 * api's clock, not Redis's TIME (api processes must agree on the time to well
 * within a period, as they already do for deadlines).
 *
 * Numbers reach Lua as strings, and in Redis's Lua a conversion either way costs
 * about as much as reading a field (tonumber twice that: it converts twice). So the
 * script converts only what it computes with, by arithmetic ("x + 0"), and compares
 * as strings where it can: the period with the one the TAT was counted at, and the
 * TAT with now (decimal µs without leading zeros: the longer is the later, and of
 * two as long the one after in byte order). A key that is not ahead of now (any
 * key under its rate) is then charged with no number converted or formatted: its
 * new TAT is now plus the period, which the api sends as a string (ARGV[5]), and a
 * TAT one period ahead is never over the limit (a period is at most a minute).
 *
 * XADD comes first of the writes that matter: Redis does not undo what a script
 * wrote before an error, but a script stops at its first failing command, so a
 * failing XADD (the key holds another type, Redis is out of memory) leaves nothing
 * behind; the quota writes come last. Sent by its SHA1 (evalsha.h): whole, Redis
 * spent a third of its work per POST hashing it. */
#define INTAKE_LUA_WRITTEN 1
#define INTAKE_LUA_REPLAY 2
#define INTAKE_LUA_CONFLICT 3
#define INTAKE_LUA_OVER 4

/* clang-format off */
static const char intake_script[] =
    "local n = ARGV[11] + 0\n"
    "local fp\n"
    "if KEYS[4] then\n"
    "  local parts = {}\n"
    "  for i = 12, 11 + n, 2 do\n"
    "    local f = ARGV[i]\n"
    "    if f == '" REC_MESSAGE "' or f == '" REC_MODEL "' or\n"
    "       f == '" REC_TEMPERATURE "' or f == '" REC_USER "' or\n"
    "       f == '" REC_MESSAGES "' or f == '" REC_TOP_P "' or\n"
    "       f == '" REC_MAX_TOKENS "' or f == '" REC_PARAMS "' or\n"
    "       f == '" REC_STREAM "' then\n"
    "      parts[#parts + 1] = f .. '=' .. ARGV[i + 1]\n"
    "    end\n"
    "  end\n"
    "  for i = 12 + n, #ARGV - 1, 2 do\n"
    "    if ARGV[i] == '" REC_WEBHOOK "' then\n"
    "      parts[#parts + 1] = ARGV[i] .. '=' .. ARGV[i + 1]\n"
    "    end\n"
    "  end\n"
    "  fp = redis.sha1hex(table.concat(parts, '\\0'))\n"
    "  local prev = redis.call('GET', KEYS[4])\n"
    "  if prev then\n"
    "    local t, old = string.match(prev, '^([^:]*):(.*)$')\n"
    "    if old == fp then return {2, t} end\n" /* INTAKE_LUA_REPLAY */
    "    return {3, t or ''}\n"                  /* INTAKE_LUA_CONFLICT */
    "  end\n"
    "end\n"
    "local q, tat\n"
    "if ARGV[9] ~= '' then\n"
    "  q = redis.call('HMGET', KEYS[3], '" QUOTA_TAT "', '" QUOTA_PERIOD "',\n"
    "                 ARGV[9], ARGV[10])\n" /* QUOTA_WINDOW */
    "  if ARGV[3] ~= '0' then\n"
    "    local t, now = q[1], ARGV[4]\n"
    "    if t and q[2] and (#t > #now or (#t == #now and t > now)) then\n"
    "      local period, was = ARGV[3] + 0, q[2] + 0\n"
    "      now, t = now + 0, t + 0\n"
    "      if was ~= period then t = now + math.floor((t - now) * period / was) end\n"
    "      tat = t + period\n"
    "      if tat - now > 60000000 then\n"
    "        return {4, '" INTAKE_LIMIT_RPM "', math.ceil((tat - now - 60000000) / 1000)}\n"
    "      end\n"
    "      tat = string.format('%d', tat)\n"
    "    else\n"
    "      tat = ARGV[5]\n"
    "    end\n"
    "  end\n"
    "  if ARGV[6] ~= '0' then\n"
    "    local held = 0\n"
    "    for i = 3, #q do held = held + (q[i] or 0) end\n"
    "    if held >= ARGV[6] + 0 then return {4, '" INTAKE_LIMIT_INFLIGHT "', 1000} end\n"
    "  end\n"
    "end\n"
    "redis.call('XADD', KEYS[1], '*', unpack(ARGV, 12, 11 + n))\n"
    "redis.call('HSET', KEYS[2], unpack(ARGV, 12 + n))\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[1])\n"
    "if KEYS[4] then\n"
    "  redis.call('SET', KEYS[4], ARGV[2] .. ':' .. fp, 'EX', ARGV[1])\n"
    "end\n"
    "if q then\n"
    "  if not tat then\n"
    "    redis.call('HINCRBY', KEYS[3], ARGV[9], 1)\n"
    "  elseif q[2] == ARGV[3] then\n"
    "    redis.call('HSET', KEYS[3], '" QUOTA_TAT "', tat,\n"
    "               ARGV[9], string.format('%d', (q[3] or 0) + 1))\n"
    "  else\n"
    "    redis.call('HSET', KEYS[3], '" QUOTA_TAT "', tat, '" QUOTA_PERIOD "', ARGV[3],\n"
    "               ARGV[9], string.format('%d', (q[3] or 0) + 1))\n"
    "  end\n"
    "  if not q[3] then\n" /* the slice's first chat */
    "    local slice, old = ARGV[8] + 0, {}\n"
    "    for _, k in ipairs(redis.call('HKEYS', KEYS[3])) do\n"
    "      local m = tonumber(string.match(k, '^" QUOTA_SLICE "(%d+)$'))\n"
    "      if m and m < slice - 1 then old[#old + 1] = k end\n"
    "    end\n"
    "    if #old > 0 then redis.call('HDEL', KEYS[3], unpack(old)) end\n"
    "    redis.call('PEXPIRE', KEYS[3], ARGV[7])\n"
    "  end\n"
    "end\n"
    "return {1, ARGV[2]}\n"; /* INTAKE_LUA_WRITTEN */
/* clang-format on */
/* The script reads the slices' names from ARGV[9] and ARGV[10] and keeps slices
 * down to slice - 1. */
_Static_assert(QUOTA_WINDOW == 2, "the intake script's ARGV layout has two slices");

/* The script's SHA1 (evalsha.h), learnt from Redis by the first POST that finds it
 * unknown and then published once (intake_lua_known), so that the threads read
 * what no thread writes any more; until then the script goes whole. Not a
 * thread-local copy: static TLS cost every civetweb thread a page of memory. */
static struct evalsha intake_whole = {intake_script, ""};
static struct evalsha intake_lua = {intake_script, ""};
static atomic_int intake_lua_known;
static pthread_mutex_t intake_lua_lock = PTHREAD_MUTEX_INITIALIZER;

/* The script to send: by SHA1 once known. */
static const struct evalsha *intake_lua_get(struct worker *w, const char *trace)
{
    if (atomic_load_explicit(&intake_lua_known, memory_order_acquire))
        return &intake_lua;
    const char *argv[] = {"SCRIPT", "LOAD", intake_script};
    redisReply *r = worker_command(w, trace, 3, argv);
    if (r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40) {
        pthread_mutex_lock(&intake_lua_lock);
        if (!atomic_load_explicit(&intake_lua_known, memory_order_relaxed)) {
            evalsha_learn(&intake_lua, r);
            atomic_store_explicit(&intake_lua_known, 1, memory_order_release);
        }
        pthread_mutex_unlock(&intake_lua_lock);
    }
    freeReplyObject(r);
    return atomic_load_explicit(&intake_lua_known, memory_order_acquire) ? &intake_lua
                                                                         : &intake_whole;
}

/* The names of the quota hash's fields for the slices a chat in flight may be
 * counted in: now's first (quota.h). Made here, not in Lua, where a number turned
 * into a string goes through printf's floating point: five of them were more work
 * than the rest of the quota. */
struct intake_slices {
    char name[QUOTA_WINDOW][sizeof(QUOTA_SLICE) - 1 + CMD_LL_MAX];
};

/* Appends the quota arguments of the intake script (ARGV[3] to ARGV[10]): the period
 * of the key's rate in microseconds (0: no limit), now in microseconds, now plus the
 * period (the TAT of a key that is not ahead of now), the chats it may have in
 * flight (0: no limit), the quota hash's TTL (ms), the slice of now, and the
 * QUOTA_WINDOW slices' field names, now's first ("" when the key has no limits: its
 * quota hash is not touched). lim is NULL when there are no limits (an open
 * gateway). sl holds the names (c borrows them). Returns the slice, or -1. */
static long long intake_quota_args(struct cmd *c, const struct access_limits *lim,
                                   long long lease_ms, struct intake_slices *sl)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now_us = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    long long period = 0, slice = -1;
    if (lim != NULL && lim->rpm > 0) {
        period = 60000000LL / lim->rpm;
        if (period < 1)
            period = 1;
    }
    if (period > 0 || (lim != NULL && lim->inflight > 0))
        slice = quota_slice(now_us / 1000, lease_ms);
    cmd_addll(c, period);
    cmd_addll(c, now_us);
    cmd_addll(c, now_us + period);
    cmd_addll(c, lim != NULL ? lim->inflight : 0);
    /* As long as a slot may count (2 leases from the start of its slice, when
     * the TTL was renewed) and longer than a TAT may be ahead (a minute). */
    cmd_addll(c, 2 * lease_ms > 120000 ? 2 * lease_ms : 120000);
    cmd_addll(c, slice);
    for (int i = 0; i < QUOTA_WINDOW; i++) {
        sl->name[i][0] = '\0';
        size_t len = 0;
        if (slice >= 0) {
            memcpy(sl->name[i], QUOTA_SLICE, sizeof(QUOTA_SLICE) - 1);
            len = sizeof(QUOTA_SLICE) - 1;
            len += cmd_format_ll(sl->name[i] + len, slice - i);
        }
        cmd_add(c, sl->name[i], len);
    }
    return slice;
}

/* Appends the arguments of src after its command name to dst. */
static void intake_add_args(struct cmd *dst, const struct cmd *src)
{
    for (int i = 1; i < src->argc; i++)
        cmd_add(dst, src->argv[i], src->len[i]);
}

/* Reads the script's refusal over a quota into over. */
static enum intake_store_result
intake_answer_over(const redisReply *r, const char *trace_in, struct intake_over *over)
{
    if (r->elements == 3 && r->element[1]->type == REDIS_REPLY_STRING &&
        r->element[2]->type == REDIS_REPLY_INTEGER) {
        over->limit = strcmp(r->element[1]->str, INTAKE_LIMIT_RPM) == 0
                          ? INTAKE_LIMIT_RPM
                          : INTAKE_LIMIT_INFLIGHT;
        over->retry_ms = r->element[2]->integer;
        return INTAKE_OVER_QUOTA;
    }
    log_error(trace_in, "the intake script answered something unexpected");
    return INTAKE_NOT_WRITTEN;
}

/* Reads the script's answer; the trace id of a replay goes into trace, a refusal
 * over a quota into over. */
static enum intake_store_result intake_answer(const redisReply *r, const char *trace_in,
                                              char trace[UUID_LEN + 1],
                                              struct intake_over *over)
{
    if (r->type == REDIS_REPLY_ERROR) {
        log_warn(trace_in, "Redis refused the request, nothing was written: %s", r->str);
        /* With maxmemory-policy noeviction Redis refuses a script that may write
         * before it runs (or at its first write), so nothing is half-written. */
        return strncmp(r->str, "OOM", 3) == 0 ? INTAKE_NO_MEMORY : INTAKE_NOT_WRITTEN;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[0]->integer == INTAKE_LUA_OVER)
        return intake_answer_over(r, trace_in, over);
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
                                      const char *idem, char trace[UUID_LEN + 1],
                                      struct intake_over *over)
{
    const struct server *srv = w->srv;
    const struct access_limits *lim = w->limits;
    char key[KEYS_MAX + UUID_LEN + 1];
    char quota_key[KEYS_MAX + ACCESS_OWNER_LEN + 1];
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
    /* The chat's first event (events.h), written with the record: no one can be
     * listening for a trace id not answered yet, so nothing is published. */
    cmd_addz(&pending, EVENTS_LAST);
    cmd_addz(&pending, "1");
    cmd_addz(&pending, EVENTS_FIELD "1");
    cmd_addz(&pending, EVENTS_QUEUED);
    /* Who may read it: GET answers another key as if it did not exist. */
    if (w->owner[0] != '\0') {
        cmd_addz(&pending, REC_OWNER);
        cmd_addz(&pending, w->owner);
    }
    /* Without an owner (an open gateway) there are no limits, and these keys are
     * never touched. */
    keys_quota(&srv->keys, w->owner, quota_key, sizeof(quota_key));
    const struct evalsha *lua = intake_lua_get(w, req->trace);
    evalsha_cmd(&eval, lua);
    cmd_addz(&eval, idem != NULL ? "4" : "3");
    cmd_addz(&eval, srv->keys.requests);
    cmd_addz(&eval, key);
    cmd_addz(&eval, quota_key);
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
    struct intake_slices slices;
    long long slice = intake_quota_args(&eval, w->owner[0] != '\0' ? lim : NULL,
                                        srv->inflight_max_ms, &slices);
    if (slice >= 0) {
        cmd_addz(&pending, REC_SLOT);
        cmd_addll(&pending, slice);
    }
    cmd_addll(&eval, fields.argc - 1);
    intake_add_args(&eval, &fields);
    intake_add_args(&eval, &pending);
    if (eval.overflow || fields.overflow || pending.overflow) {
        log_error(req->trace, "out of memory building the intake write");
        goto out;
    }

    enum worker_fate fate =
        worker_command_once(w, req->trace, eval.argc, eval.argv, eval.len, &reply);
    if (fate == WORKER_ANSWERED && evalsha_missing(reply)) {
        /* Redis restarted, or its scripts were flushed: nothing ran. */
        freeReplyObject(reply);
        evalsha_whole(&eval, lua);
        fate = worker_command_once(w, req->trace, eval.argc, eval.argv, eval.len, &reply);
    }
    switch (fate) {
    case WORKER_ANSWERED:
        result = intake_answer(reply, req->trace, trace, over);
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

/* 403: the gateway key may not use the model. The body names the model and the
 * ones the key may use, so that a client can tell it from any other 403. */
static int intake_model_refused(struct reply *r, struct mg_connection *conn,
                                const char *model, const char *allowed)
{
    char message[512];
    snprintf(message, sizeof(message),
             "this key may not use the model '%.64s'; it may use: %.400s", model,
             allowed);
    reply_lit(r, "{\"error\":{\"code\":\"model_not_allowed\",\"message\":");
    reply_strz(r, message);
    reply_lit(r, ",\"model\":");
    reply_strz(r, model);
    reply_lit(r, ",\"allowed\":[");
    for (const char *p = allowed; *p != '\0';) {
        size_t len = strcspn(p, ",");
        if (p != allowed)
            reply_lit(r, ",");
        reply_str(r, p, len);
        p += len + (p[len] == ',');
    }
    reply_lit(r, "]}}");
    return reply_send(r, conn, 403);
}

/* 429: over a quota of the gateway key, with Retry-After (whole seconds, at least 1)
 * and, in the body, the limit's name and value. */
static int intake_over_quota(struct reply *r, struct mg_connection *conn,
                             const struct intake_over *over,
                             const struct access_limits *lim)
{
    char head[64], message[256];
    long long secs = (over->retry_ms + 999) / 1000;
    int rpm = strcmp(over->limit, INTAKE_LIMIT_RPM) == 0;
    long long value = lim == NULL ? 0 : rpm ? lim->rpm : lim->inflight;

    if (secs < 1)
        secs = 1;
    snprintf(head, sizeof(head), "Retry-After: %lld\r\n", secs);
    r->head = head; /* read by reply_send, below */
    snprintf(message, sizeof(message),
             rpm ? "this key may make %lld requests a minute; retry after %lld s"
                 : "this key may have %lld chats in flight; retry once one has "
                   "finished (after %lld s)",
             value, secs);
    reply_lit(r, "{\"error\":{\"code\":\"quota_exceeded\",\"message\":");
    reply_strz(r, message);
    reply_lit(r, ",\"limit\":");
    reply_strz(r, over->limit);
    reply_lit(r, ",\"value\":");
    reply_ll(r, value);
    reply_lit(r, ",\"retry_after\":");
    reply_ll(r, secs);
    reply_lit(r, "}}");
    return reply_send(r, conn, 429);
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

    /* The allow-list needs no Redis: the key's limits are in memory. */
    const struct access_limits *lim = w != NULL ? w->limits : NULL;
    if (!access_model_allowed(lim, req.model, strlen(req.model))) {
        log_debug(NULL, "POST /chat refused: model %s not allowed for this key",
                  req.model);
        status = intake_model_refused(&r, conn, req.model, lim->models);
        goto out;
    }

    char trace[UUID_LEN + 1], accepted[CLOCK_ISO_LEN], answer[UUID_LEN + 1];
    struct intake_over over = {NULL, 0};
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
    /* Where the chat's own webhook leads is checked now, so a refused URL is a 400
     * the client sees; the sender checks the address it connects to again at
     * delivery. WEBHOOK_URL was checked at start (main.c). */
    if (req.webhook != NULL &&
        validate_webhook_target(&srv->webhook_guard, req.webhook, &verr) != 0) {
        log_debug(trace, "POST /chat refused: %s: %s", verr.code, verr.message);
        status = reply_error(&r, conn, verr.status, verr.code, "%s", verr.message);
        goto out;
    }
    if (req.webhook == NULL)
        req.webhook = srv->webhook_default;

    if (w == NULL) {
        status = reply_error(&r, conn, 500, "internal_error",
                             "the server could not set up this thread");
        goto out;
    }
    switch (intake_store(w, &req, idem, answer, &over)) {
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
    case INTAKE_OVER_QUOTA:
        log_debug(NULL, "POST /chat refused: over the key's %s", over.limit);
        status = intake_over_quota(&r, conn, &over, lim);
        goto out;
    case INTAKE_NOT_WRITTEN:
        status = reply_error(&r, conn, 503, "redis_unavailable",
                             "the request could not be queued because the store is "
                             "unavailable; nothing was written, retry later");
        goto out;
    case INTAKE_NO_MEMORY:
        status = reply_error(&r, conn, 503, "redis_out_of_memory",
                             "the request could not be queued because the store is full "
                             "(Redis maxmemory reached); nothing was written, retry "
                             "later");
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
