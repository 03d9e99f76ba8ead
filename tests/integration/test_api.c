/* test_api.c - the HTTP contract of chatq-api as a client sees it: accepting a
 * chat, reading its result, every validation error, trace-id errors, and the
 * Redis records behind a finished chat (the contract with processor/handler). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "record.h"
#include "stack.h"
#include "suite.h"

#define API_CHAT_MS 20000
#define API_HTTP_MS 10000
#define API_MAX_BODY 4096

static struct stack api_stack;

static const char *const api_api_env[] = {"MAX_BODY_BYTES=4096", NULL};

static int api_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.api = api_api_env};
    return stack_start(&api_stack, "api", "t1:", &set);
}

static int api_teardown(void **state)
{
    (void)state;
    return stack_stop(&api_stack);
}

/* Asserts a finished chat is completed the way the fake answers message. */
static void api_check_completed(const json_t *j, const char *trace, const char *message,
                                const char *model)
{
    char want[512];
    const char *st = http_json_str(j, "status");
    CHECK(st != NULL && strcmp(st, "completed") == 0,
          "trace %s ended %s, want completed: %s", trace, STR(st),
          STR(http_error_message(j)));
    CHECK(strcmp(STR(http_json_str(j, "traceId")), trace) == 0, "traceId %s, want %s",
          STR(http_json_str(j, "traceId")), trace);
    snprintf(want, sizeof(want), "Fake answer to: %s", message);
    CHECK(strcmp(STR(http_json_str(j, "response")), want) == 0,
          "response \"%s\", want \"%s\"", STR(http_json_str(j, "response")), want);
    CHECK(strcmp(STR(http_json_str(j, "model")), model) == 0, "model %s, want %s",
          STR(http_json_str(j, "model")), model);
    json_t *usage = json_object_get(j, "usage");
    json_t *p = json_object_get(usage, "prompt_tokens");
    json_t *c = json_object_get(usage, "completion_tokens");
    json_t *t = json_object_get(usage, "total_tokens");
    CHECK(json_is_integer(p) && json_is_integer(c) && json_is_integer(t),
          "usage must hold three integers");
    CHECK(json_integer_value(p) > 0 && json_integer_value(c) > 0,
          "usage tokens must be > 0 (prompt %lld, completion %lld)",
          (long long)json_integer_value(p), (long long)json_integer_value(c));
    CHECK(json_integer_value(t) == json_integer_value(p) + json_integer_value(c),
          "total_tokens %lld != prompt %lld + completion %lld",
          (long long)json_integer_value(t), (long long)json_integer_value(p),
          (long long)json_integer_value(c));
    CHECK(http_is_iso8601_utc(http_json_str(j, "timestamp")),
          "timestamp \"%s\" is not ISO-8601 UTC", STR(http_json_str(j, "timestamp")));
    CHECK(json_object_get(j, "error") == NULL, "a completed chat carries no error");
}

static void test_happy_path(void **state)
{
    (void)state;
    const char *msg = "hello from the happy path";
    const char *json =
        "{\"message\":\"hello from the happy path\",\"model\":\"gpt-4o-mini\","
        "\"temperature\":0.5}";
    char url[128];
    struct http_response r;
    long status;

    CHECK(http_request("POST", stack_url(&api_stack, "/chat", url, sizeof(url)), json,
                       strlen(json), API_HTTP_MS, &r) == 0,
          "%s", r.error);
    CHECK(r.status == 202, "POST /chat: HTTP %ld, want 202: %s", r.status, r.body);
    CHECK(http_is_json(&r), "POST /chat: Content-Type \"%s\"", r.content_type);
    json_t *accepted = http_json(&r);
    http_response_free(&r);
    CHECK(accepted != NULL, "POST /chat: body is not JSON");
    const char *trace = http_json_str(accepted, "traceId");
    CHECK(http_is_uuid_v4(trace), "traceId \"%s\" is not a UUID v4", STR(trace));
    CHECK(strcmp(STR(http_json_str(accepted, "status")), "processing") == 0,
          "202 status \"%s\", want processing", STR(http_json_str(accepted, "status")));
    CHECK(strcmp(STR(http_json_str(accepted, "message")),
                 "Chat request received and is being processed") == 0,
          "202 message \"%s\"", STR(http_json_str(accepted, "message")));
    CHECK(json_object_size(accepted) == 3, "202 body has %zu members, want 3",
          json_object_size(accepted));

    json_t *now = chat_get(&api_stack, trace, &status);
    CHECK(status == 200, "GET right after POST: HTTP %ld, want 200", status);
    const char *st = http_json_str(now, "status");
    CHECK(st != NULL && (strcmp(st, "processing") == 0 || strcmp(st, "completed") == 0),
          "GET right after POST: status %s, want processing or completed", STR(st));
    json_decref(now);

    json_t *done = chat_wait(&api_stack, trace, API_CHAT_MS, NULL);
    CHECK(done != NULL, "chat %s did not finish", trace);
    api_check_completed(done, trace, msg, "gpt-4o-mini");
    json_decref(done);

    char path[128];
    snprintf(path, sizeof(path), "/chat/%s/response", trace);
    CHECK(http_request("GET", stack_url(&api_stack, path, url, sizeof(url)), NULL, 0,
                       API_HTTP_MS, &r) == 0,
          "%s", r.error);
    CHECK(r.status == 200 && http_is_json(&r), "GET %s: HTTP %ld, Content-Type \"%s\"",
          path, r.status, r.content_type);
    http_response_free(&r);
    json_decref(accepted);
}

static void test_default_model(void **state)
{
    (void)state;
    char trace[UUID_LEN + 1];
    const char *msg = "which model am I talking to";
    CHECK(chat_post(&api_stack, msg, NULL, -1, trace) == 0,
          "POST without a model failed");
    json_t *done = chat_wait(&api_stack, trace, API_CHAT_MS, NULL);
    CHECK(done != NULL, "chat %s did not finish", trace);
    api_check_completed(done, trace, msg, "gpt-3.5-turbo");
    json_decref(done);
}

/* The bounds themselves are valid temperatures. */
static void test_temperature_bounds(void **state)
{
    (void)state;
    char t0[UUID_LEN + 1], t2[UUID_LEN + 1];
    CHECK(chat_post(&api_stack, "cold answer", "gpt-4o", 0.0, t0) == 0,
          "temperature 0 was refused");
    CHECK(chat_post(&api_stack, "hot answer", "gpt-4o", 2.0, t2) == 0,
          "temperature 2 was refused");
    json_t *a = chat_wait(&api_stack, t0, API_CHAT_MS, NULL);
    json_t *b = chat_wait(&api_stack, t2, API_CHAT_MS, NULL);
    CHECK(a != NULL && b != NULL, "chats did not finish");
    api_check_completed(a, t0, "cold answer", "gpt-4o");
    api_check_completed(b, t2, "hot answer", "gpt-4o");
    json_decref(a);
    json_decref(b);
}

/* JSON numbers without a fraction are temperatures too. */
static void test_integer_temperature(void **state)
{
    (void)state;
    char url[128];
    const char *body = "{\"message\":\"integer temperature\",\"temperature\":1}";
    struct http_response r;
    CHECK(http_request("POST", stack_url(&api_stack, "/chat", url, sizeof(url)), body,
                       strlen(body), API_HTTP_MS, &r) == 0,
          "%s", r.error);
    CHECK(r.status == 202, "temperature 1 (a JSON integer): HTTP %ld, want 202: %s",
          r.status, r.body);
    json_t *j = http_json(&r);
    const char *trace = http_json_str(j, "traceId");
    CHECK(trace != NULL, "no traceId");
    json_t *done = chat_wait(&api_stack, trace, API_CHAT_MS, NULL);
    CHECK(done != NULL, "chat did not finish");
    api_check_completed(done, trace, "integer temperature", "gpt-3.5-turbo");
    json_decref(done);
    json_decref(j);
    http_response_free(&r);
}

/* What the user typed comes back byte for byte, whatever JSON escaping, Redis
 * and the logs had to do with it on the way. */
static void test_message_roundtrip(void **state)
{
    (void)state;
    char trace[UUID_LEN + 1];
    const char *msg = "quote \" backslash \\ slash / newline \n tab \t cr \r "
                      "bell \x07 unicode \xc3\xa9\xe2\x82\xac \xf0\x9f\x98\x80 "
                      "percent %s %n {braces} [[not a directive]]";
    CHECK(chat_post(&api_stack, msg, "model/with \"odd\" chars", 1.0, trace) == 0,
          "POST failed");
    json_t *done = chat_wait(&api_stack, trace, API_CHAT_MS, NULL);
    CHECK(done != NULL, "chat did not finish");
    api_check_completed(done, trace, msg, "model/with \"odd\" chars");
    json_decref(done);
}

/* While the upstream is slow, a GET shows exactly {"traceId", "status"}. */
static void test_processing_shape(void **state)
{
    (void)state;
    char trace[UUID_LEN + 1];
    long status;
    const char *msg = "[[fake latency=2000]] take your time";
    CHECK(chat_post(&api_stack, msg, NULL, -1, trace) == 0, "POST failed");
    json_t *j = chat_get(&api_stack, trace, &status);
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    CHECK(status == 200, "GET: HTTP %ld, want 200", status);
    CHECK(strcmp(STR(http_json_str(j, "status")), "processing") == 0 &&
              strcmp(STR(http_json_str(j, "traceId")), trace) == 0 &&
              json_object_size(j) == 2,
          "GET during processing: %s, want exactly {\"traceId\":\"%s\",\"status\":"
          "\"processing\"}",
          STR(text), trace);
    free(text);
    json_decref(j);
    json_t *done = chat_wait(&api_stack, trace, API_CHAT_MS, NULL);
    CHECK(done != NULL, "slow chat %s did not finish", trace);
    api_check_completed(done, trace, msg, "gpt-3.5-turbo");
    json_decref(done);
}

/* ---- errors ---------------------------------------------------------------- */

struct api_bad {
    const char *method;
    const char *path; /* "%s" is replaced by a fresh UUID */
    const char *body; /* NULL: no body */
    long status;
    const char *code;
    const char *names; /* error.message must mention this, or NULL */
};

static const struct api_bad api_bad_requests[] = {
    {"POST", "/chat", "{\"message\": \"hi\"", 400, "invalid_json", NULL},
    {"POST", "/chat", "not json at all", 400, "invalid_json", NULL},
    {"POST", "/chat", "{\"message\":\"hi\"} and more", 400, "invalid_json", NULL},
    {"POST", "/chat", "[1, 2]", 400, "invalid_body", NULL},
    {"POST", "/chat", "\"hello\"", 400, "invalid_body", NULL},
    {"POST", "/chat", "{}", 400, "missing_field", "message"},
    {"POST", "/chat", "{\"model\":\"gpt-4o\"}", 400, "missing_field", "message"},
    {"POST", "/chat", "{\"message\":42}", 400, "invalid_field", "message"},
    {"POST", "/chat", "{\"message\":[\"hi\"]}", 400, "invalid_field", "message"},
    {"POST", "/chat", "{\"message\":\"\"}", 400, "invalid_field", "message"},
    {"POST", "/chat", "{\"message\":\"hi\",\"temperature\":2.5}", 400, "invalid_field",
     "temperature"},
    {"POST", "/chat", "{\"message\":\"hi\",\"temperature\":-0.1}", 400, "invalid_field",
     "temperature"},
    {"POST", "/chat", "{\"message\":\"hi\",\"temperature\":\"hot\"}", 400,
     "invalid_field", "temperature"},
    {"POST", "/chat", "{\"message\":\"hi\",\"model\":\"\"}", 400, "invalid_field",
     "model"},
    {"POST", "/chat", "{\"message\":\"hi\",\"model\":7}", 400, "invalid_field", "model"},
    {"POST", "/chat", "{\"message\":\"hi\",\"colour\":\"blue\"}", 400, "unknown_field",
     "colour"},
    {"POST", "/chat", "{\"message\":\"hi\",\"user\":\"jane doe\"}", 400, "invalid_field",
     "user"},
    {"POST", "/chat", "{\"message\":\"hi\",\"user\":\"\"}", 400, "invalid_field", "user"},
    {"POST", "/chat", "{\"message\":\"hi\",\"user\":7}", 400, "invalid_field", "user"},
    {"GET", "/chat", NULL, 405, "method_not_allowed", NULL},
    {"DELETE", "/chat", NULL, 405, "method_not_allowed", NULL},
    {"DELETE", "/chat/%s/response", NULL, 405, "method_not_allowed", NULL},
    {"POST", "/chat/%s/response", "{}", 405, "method_not_allowed", NULL},
    {"GET", "/nothing-here", NULL, 404, "not_found", NULL},
    {"GET", "/chat/%s/responses", NULL, 404, "not_found", NULL},
};

/* Number of trace hashes under the prefix. */
static long long api_trace_keys(struct stack *s)
{
    char pattern[KEYS_MAX + 2];
    long long n = 0;
    char cursor[32] = "0";
    snprintf(pattern, sizeof(pattern), "%s*", s->keys.trace_prefix);
    do {
        redisReply *r = stack_redis(s, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r != NULL)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        n += (long long)r->element[1]->elements;
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

/* Sends one request and checks the JSON error a client gets back. */
static void api_check_error(const char *method, const char *path, const char *body,
                            size_t body_len, long want_status, const char *want_code,
                            const char *names)
{
    char url[512];
    struct http_response r;
    stack_url(&api_stack, path, url, sizeof(url));
    CHECK(http_request(method, url, body, body_len, API_HTTP_MS, &r) == 0, "%s", r.error);
    json_t *j = http_json(&r);
    const char *code = http_error_code(j);
    const char *message = http_error_message(j);
    CHECK(r.status == want_status, "%s %s %.80s: HTTP %ld, want %ld: %.300s", method,
          path, body != NULL ? body : "", r.status, want_status, r.body);
    CHECK(http_is_json(&r), "%s %s: Content-Type \"%s\", want application/json", method,
          path, r.content_type);
    CHECK(code != NULL && strcmp(code, want_code) == 0,
          "%s %s %.80s: error.code %s, want %s (body %.300s)", method, path,
          body != NULL ? body : "", STR(code), want_code, r.body);
    CHECK(message != NULL && message[0] != '\0', "%s %s: error.message is empty", method,
          path);
    CHECK(names == NULL || strstr(message, names) != NULL,
          "%s %s %.80s: error.message \"%s\" does not name '%s'", method, path,
          body != NULL ? body : "", message, names);
    json_decref(j);
    http_response_free(&r);
}

static void test_validation_errors(void **state)
{
    (void)state;
    struct stack *s = &api_stack;
    char uuid[UUID_LEN + 1];
    char path[128];

    long long added = stack_xadded(s, s->keys.requests);
    long long traces = api_trace_keys(s);
    CHECK(added >= 0 && traces >= 0, "cannot read the Redis state");

    for (size_t i = 0; i < sizeof(api_bad_requests) / sizeof(api_bad_requests[0]); i++) {
        const struct api_bad *b = &api_bad_requests[i];
        CHECK(uuid_v4(uuid) == 0, "uuid_v4");
        const char *hole = strstr(b->path, "%s");
        if (hole != NULL)
            snprintf(path, sizeof(path), "%.*s%s%s", (int)(hole - b->path), b->path, uuid,
                     hole + 2);
        else
            snprintf(path, sizeof(path), "%s", b->path);
        api_check_error(b->method, path, b->body, b->body != NULL ? strlen(b->body) : 0,
                        b->status, b->code, b->names);
    }

    /* A valid request that is one byte too many for MAX_BODY_BYTES. */
    size_t n = API_MAX_BODY + 1;
    char *big = malloc(n + 1);
    CHECK(big != NULL, "malloc");
    memset(big, 'a', n);
    memcpy(big, "{\"message\":\"", 12);
    memcpy(big + n - 2, "\"}", 2);
    big[n] = '\0';
    api_check_error("POST", "/chat", big, n, 413, "body_too_large", NULL);
    /* ... and one that is far bigger. */
    size_t huge = 256 * 1024;
    char *bigger = malloc(huge + 1);
    CHECK(bigger != NULL, "malloc");
    memset(bigger, 'b', huge);
    memcpy(bigger, "{\"message\":\"", 12);
    memcpy(bigger + huge - 2, "\"}", 2);
    bigger[huge] = '\0';
    api_check_error("POST", "/chat", bigger, huge, 413, "body_too_large", NULL);
    free(big);
    free(bigger);

    CHECK(stack_xadded(s, s->keys.requests) == added,
          "a rejected request was added to %s (%lld entries before, %lld after)",
          s->keys.requests, added, stack_xadded(s, s->keys.requests));
    CHECK(api_trace_keys(s) == traces,
          "a rejected request left a trace hash (%lld -> %lld)", traces,
          api_trace_keys(s));
}

static void test_trace_ids(void **state)
{
    (void)state;
    char uuid[UUID_LEN + 1], path[256], key[KEYS_MAX + UUID_LEN + 1];
    char longid[101];

    api_check_error("GET", "/chat/not-a-uuid/response", NULL, 0, 400, "invalid_trace_id",
                    NULL);
    api_check_error("GET", "/chat/123e4567-e89b-42d3-a456-42661417400g/response", NULL, 0,
                    400, "invalid_trace_id", NULL);
    memset(longid, '7', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    snprintf(path, sizeof(path), "/chat/%s/response", longid);
    api_check_error("GET", path, NULL, 0, 400, "invalid_trace_id", NULL);

    CHECK(uuid_v4(uuid) == 0, "uuid_v4");
    snprintf(path, sizeof(path), "/chat/%s/response", uuid);
    api_check_error("GET", path, NULL, 0, 404, "trace_not_found", NULL);
    /* Asking must not create anything. */
    keys_trace(&api_stack.keys, uuid, key, sizeof(key));
    redisReply *r = stack_redis(&api_stack, "EXISTS %s", key);
    CHECK(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0,
          "GET of an unknown trace created %s", key);
    freeReplyObject(r);
}

/* ---- the Redis contract ---------------------------------------------------- */

static const char *api_field(const redisReply *r, const char *name)
{
    for (size_t i = 0; r != NULL && i + 1 < r->elements; i += 2)
        if (strcmp(r->element[i]->str, name) == 0)
            return r->element[i + 1]->str;
    return NULL;
}

static void test_redis_contract(void **state)
{
    (void)state;
    struct stack *s = &api_stack;
    static const char *const msgs[] = {"contract one", "contract two", "contract three"};
    char traces[3][UUID_LEN + 1];
    char key[KEYS_MAX + UUID_LEN + 1];

    long long req_before = stack_xadded(s, s->keys.requests);
    long long res_before = stack_xadded(s, s->keys.results);
    for (int i = 0; i < 3; i++)
        CHECK(chat_post(s, msgs[i], "gpt-4o", 0.2, traces[i]) == 0, "POST %d failed", i);
    for (int i = 0; i < 3; i++) {
        json_t *done = chat_wait(s, traces[i], API_CHAT_MS, NULL);
        CHECK(done != NULL, "chat %s did not finish", traces[i]);
        api_check_completed(done, traces[i], msgs[i], "gpt-4o");

        keys_trace(&s->keys, traces[i], key, sizeof(key));
        redisReply *h = stack_redis(s, "HGETALL %s", key);
        CHECK(h != NULL && h->type == REDIS_REPLY_ARRAY && h->elements > 0,
              "HGETALL %s is empty", key);
        CHECK(strcmp(STR(api_field(h, REC_STATUS)), "completed") == 0,
              "%s: status %s, want completed", key, STR(api_field(h, REC_STATUS)));
        CHECK(strcmp(STR(api_field(h, REC_RESPONSE)),
                     STR(http_json_str(done, "response"))) == 0,
              "%s: response field differs from what GET shows", key);
        CHECK(strcmp(STR(api_field(h, REC_MODEL)), "gpt-4o") == 0, "%s: model %s", key,
              STR(api_field(h, REC_MODEL)));
        freeReplyObject(h);
        json_decref(done);

        redisReply *t = stack_redis(s, "TTL %s", key);
        CHECK(t != NULL && t->type == REDIS_REPLY_INTEGER && t->integer > 0 &&
                  t->integer <= STACK_RESULT_TTL,
              "TTL %s is %lld, want in (0, %d]", key, t != NULL ? t->integer : -99,
              STACK_RESULT_TTL);
        freeReplyObject(t);
    }
    CHECK(stack_xadded(s, s->keys.requests) == req_before + 3,
          "%s got %lld entries for 3 chats", s->keys.requests,
          stack_xadded(s, s->keys.requests) - req_before);
    CHECK(stack_xadded(s, s->keys.results) == res_before + 3,
          "%s got %lld entries for 3 chats", s->keys.results,
          stack_xadded(s, s->keys.results) - res_before);
    char why[256];
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

/* ---- the end user ------------------------------------------------------------ */

/* POST /chat body with an Idempotency-Key header; returns the HTTP status (0: no
 * answer) and copies a 202's traceId into trace. */
static long api_post_keyed(struct stack *s, const char *body, const char *key,
                           char trace[UUID_LEN + 1])
{
    char url[128], header[128];
    const char *headers[] = {header, NULL};
    struct http_response r;
    snprintf(header, sizeof(header), "Idempotency-Key: %s", key);
    trace[0] = '\0';
    http_request_with("POST", stack_url(s, "/chat", url, sizeof(url)), headers, body,
                      strlen(body), API_HTTP_MS, &r);
    json_t *j = http_json(&r);
    if (r.status == 202 && http_is_uuid_v4(http_json_str(j, "traceId")))
        snprintf(trace, UUID_LEN + 1, "%s", http_json_str(j, "traceId"));
    long status = r.status;
    json_decref(j);
    http_response_free(&r);
    return status;
}

/* The request-stream entry of trace (XRANGE over the whole stream): new, or NULL. */
static redisReply *api_stream_entry(struct stack *s, const char *trace)
{
    redisReply *r = stack_redis(s, "XRANGE %s - +", s->keys.requests);
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements;
         i++) {
        redisReply *fields = r->element[i]->element[1];
        const char *t = NULL;
        for (size_t k = 0; k + 1 < fields->elements; k += 2)
            if (strcmp(fields->element[k]->str, REC_TRACE) == 0)
                t = fields->element[k + 1]->str;
        if (t != NULL && strcmp(t, trace) == 0) {
            /* Keep only the entry: detach it from the reply that is freed. */
            redisReply *entry = r->element[i];
            r->element[i] = NULL;
            for (size_t j = i + 1; j < r->elements; j++) {
                freeReplyObject(r->element[j]);
                r->element[j] = NULL;
            }
            r->elements = i;
            freeReplyObject(r);
            return entry;
        }
    }
    if (r != NULL)
        freeReplyObject(r);
    return NULL;
}

/* The user a chat names travels on its request-stream entry, for the processors'
 * fair share; a chat without one carries no user field. The group's processor is
 * stopped meanwhile, so the entries are still there to be read, then a new one
 * finishes both chats. The user is part of an Idempotency-Key's request: the same
 * key for another user is a conflict, for the same user a replay. */
static void test_user_on_stream(void **state)
{
    (void)state;
    struct stack *s = &api_stack;
    char with[UUID_LEN + 1], without[UUID_LEN + 1], again[UUID_LEN + 1];
    char key[UUID_LEN + 1], key2[UUID_LEN + 1];
    const char *body = "{\"message\":\"for a user\",\"user\":\"user-7@example.org\"}";
    const char *other = "{\"message\":\"for a user\",\"user\":\"user-8\"}";

    int status = proc_stop(s->processor);
    proc_free(s->processor);
    s->processor = NULL;
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the processor did not exit 0 on SIGTERM (status %d)", status);

    CHECK(uuid_v4(key) == 0 && uuid_v4(key2) == 0, "uuid_v4");
    CHECK(api_post_keyed(s, body, key, with) == 202 && with[0] != '\0',
          "POST with a user was not accepted");
    CHECK(api_post_keyed(s, "{\"message\":\"for nobody\"}", key2, without) == 202 &&
              without[0] != '\0',
          "POST without a user was not accepted");

    redisReply *e = api_stream_entry(s, with);
    CHECK(e != NULL, "no entry for %s on %s", with, s->keys.requests);
    const char *user = api_field(e->element[1], REC_USER);
    CHECK(user != NULL && strcmp(user, "user-7@example.org") == 0,
          "entry of %s: user %s, want user-7@example.org", with, STR(user));
    freeReplyObject(e);
    e = api_stream_entry(s, without);
    CHECK(e != NULL, "no entry for %s on %s", without, s->keys.requests);
    CHECK(api_field(e->element[1], REC_USER) == NULL,
          "entry of %s has user %s, want no user field", without,
          STR(api_field(e->element[1], REC_USER)));
    freeReplyObject(e);

    CHECK(api_post_keyed(s, body, key, again) == 202 && strcmp(again, with) == 0,
          "the same key and user: traceId %s, want the first, %s", again, with);
    long st = api_post_keyed(s, other, key, again);
    CHECK(st == 422, "the same key for another user: HTTP %ld, want 422", st);

    s->processor = stack_processor_start(s, "processor-user", NULL);
    CHECK(s->processor != NULL, "cannot restart the processor");
    json_t *done = chat_wait(s, with, API_CHAT_MS, NULL);
    CHECK(done != NULL, "chat %s did not finish", with);
    api_check_completed(done, with, "for a user", "gpt-3.5-turbo");
    json_decref(done);
    done = chat_wait(s, without, API_CHAT_MS, NULL);
    CHECK(done != NULL, "chat %s did not finish", without);
    api_check_completed(done, without, "for nobody", "gpt-3.5-turbo");
    json_decref(done);
}

static const struct CMUnitTest api_tests[] = {
    cmocka_unit_test(test_happy_path),         cmocka_unit_test(test_default_model),
    cmocka_unit_test(test_temperature_bounds), cmocka_unit_test(test_integer_temperature),
    cmocka_unit_test(test_message_roundtrip),  cmocka_unit_test(test_processing_shape),
    cmocka_unit_test(test_validation_errors),  cmocka_unit_test(test_trace_ids),
    cmocka_unit_test(test_redis_contract),     cmocka_unit_test(test_user_on_stream),
};

const struct suite_group suite_api = {
    "api", api_tests, sizeof(api_tests) / sizeof(api_tests[0]), api_setup, api_teardown};
