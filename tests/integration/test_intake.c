/* test_intake.c - POST /chat's write as a client sees it when something goes
 * wrong: an Idempotency-Key makes a retry safe (same traceId, never a second
 * chat), a slow Redis answers "fate unknown" rather than "nothing written", a
 * Redis that is down answers 503 with nothing written, and a write Redis refuses
 * leaves nothing behind.
 *
 * Its own stack (so its Redis can be put to sleep, stopped, or given a broken
 * key), with an api whose REDIS_TIMEOUT_MS is short. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define INTAKE_HTTP_MS 10000
#define INTAKE_CHAT_MS 20000
#define INTAKE_SLEEP "1.5" /* DEBUG SLEEP seconds: well past the api's timeout */
#define INTAKE_CONCURRENT 50
#define INTAKE_KEY_MAX 255

static struct stack intake_stack;

static const char *const intake_api_env[] = {"REDIS_TIMEOUT_MS=300", NULL};

static int intake_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.api = intake_api_env};
    return stack_start(&intake_stack, "intake", "t6:", &set);
}

static int intake_teardown(void **state)
{
    (void)state;
    return stack_stop(&intake_stack);
}

/* POST /chat with body and, unless key is NULL, an Idempotency-Key header. 0 when
 * an answer came (any status), else -1 with the reason in r->error. */
static int intake_post(struct stack *s, const char *key, const char *body,
                       struct http_response *r)
{
    char url[128], header[512];
    const char *headers[] = {header, NULL};
    snprintf(header, sizeof(header), "Idempotency-Key: %s", key != NULL ? key : "");
    return http_request_with("POST", stack_url(s, "/chat", url, sizeof(url)),
                             key != NULL ? headers : NULL, body, strlen(body),
                             INTAKE_HTTP_MS, r);
}

/* Checks a 202 of the documented shape and copies its traceId into trace. */
static void intake_check_202(const struct http_response *r, char trace[UUID_LEN + 1])
{
    CHECK(r->status == 202, "POST /chat: HTTP %ld, want 202: %s", r->status, r->body);
    json_t *j = http_json(r);
    const char *id = http_json_str(j, "traceId");
    CHECK(http_is_uuid_v4(id), "202 without a traceId: %s", r->body);
    CHECK(strcmp(STR(http_json_str(j, "status")), "processing") == 0 &&
              strcmp(STR(http_json_str(j, "message")),
                     "Chat request received and is being processed") == 0 &&
              json_object_size(j) == 3,
          "202 body %s is not {traceId, message, status}", r->body);
    snprintf(trace, UUID_LEN + 1, "%s", id);
    json_decref(j);
}

/* Checks an error answer: status, JSON, error.code, and that the message names
 * `names` (may be NULL). */
static void intake_check_error(const struct http_response *r, long status,
                               const char *code, const char *names)
{
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    const char *c = http_error_code(j), *m = http_error_message(j);
    CHECK(r->status == status, "HTTP %ld, want %ld: %s", r->status, status, r->body);
    CHECK(http_is_json(r), "Content-Type \"%s\", want application/json", r->content_type);
    CHECK(c != NULL && strcmp(c, code) == 0, "error.code %s, want %s: %s", STR(c), code,
          r->body);
    CHECK(m != NULL && m[0] != '\0', "empty error.message");
    CHECK(names == NULL || strstr(m, names) != NULL,
          "error.message \"%s\" does not name '%s'", m, names);
    json_decref(j);
}

static void intake_wait_completed(struct stack *s, const char *trace, const char *msg)
{
    char want[512];
    json_t *done = chat_wait(s, trace, INTAKE_CHAT_MS, NULL);
    CHECK(done != NULL, "chat %s did not finish", trace);
    snprintf(want, sizeof(want), "Fake answer to: %s", msg);
    CHECK(strcmp(STR(http_json_str(done, "status")), "completed") == 0 &&
              strcmp(STR(http_json_str(done, "response")), want) == 0,
          "chat %s ended %s \"%s\", want completed \"%s\"", trace,
          STR(http_json_str(done, "status")), STR(http_json_str(done, "response")), want);
    json_decref(done);
}

/* Chat requests that reached the fake upstream so far, or -1. */
static long long intake_upstream_calls(struct stack *s)
{
    json_t *st = stack_fake_stats(s);
    long long n = stack_stat(st, "requests", 0);
    json_decref(st);
    return n;
}

/* Keys matching pattern, counted with SCAN; -1 on error. */
static long long intake_count_keys(struct stack *s, const char *pattern)
{
    char cursor[32] = "0";
    long long n = 0;
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

/* 1 if key exists, 0 if not, -1 on error. */
static int intake_exists(struct stack *s, const char *key)
{
    redisReply *r = stack_redis(s, "EXISTS %s", key);
    int n = r != NULL && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    if (r != NULL)
        freeReplyObject(r);
    return n;
}

/* ---- Idempotency-Key ------------------------------------------------------- */

/* The same key and body twice: one chat, the same answer twice. */
static void test_intake_idempotent_replay(void **state)
{
    (void)state;
    struct stack *s = &intake_stack;
    const char *body = "{\"message\":\"replay me\",\"temperature\":0.3}";
    /* The same request, written differently: the fields are what is compared. */
    const char *same = "{ \"temperature\": 0.30, \"message\": \"replay me\" }";
    char t1[UUID_LEN + 1], t2[UUID_LEN + 1], key[2048];
    struct http_response r;

    long long added = stack_xadded(s, s->keys.requests);
    long long calls = intake_upstream_calls(s);
    CHECK(intake_post(s, "replay-1", body, &r) == 0, "%s", r.error);
    intake_check_202(&r, t1);
    http_response_free(&r);
    CHECK(intake_post(s, "replay-1", same, &r) == 0, "%s", r.error);
    intake_check_202(&r, t2);
    http_response_free(&r);
    CHECK(strcmp(t1, t2) == 0, "the same Idempotency-Key got traceIds %s and %s", t1, t2);

    intake_wait_completed(s, t1, "replay me");
    /* Replayed after the chat finished: still the same answer, nothing new. */
    CHECK(intake_post(s, "replay-1", body, &r) == 0, "%s", r.error);
    intake_check_202(&r, t2);
    http_response_free(&r);
    CHECK(strcmp(t1, t2) == 0, "after completion the key got traceId %s, want %s", t2,
          t1);
    CHECK(stack_xadded(s, s->keys.requests) == added + 1,
          "%lld request-stream entries for one key, want 1",
          stack_xadded(s, s->keys.requests) - added);
    CHECK(intake_upstream_calls(s) == calls + 1, "the upstream got %lld calls, want 1",
          intake_upstream_calls(s) - calls);

    /* The key is kept as long as the chat's record. */
    keys_idem(&s->keys, "replay-1", key, sizeof(key));
    redisReply *ttl = stack_redis(s, "TTL %s", key);
    CHECK(ttl != NULL && ttl->type == REDIS_REPLY_INTEGER && ttl->integer > 0 &&
              ttl->integer <= STACK_RESULT_TTL,
          "TTL %s is %lld, want in (0, %d]", key, ttl != NULL ? ttl->integer : -99,
          STACK_RESULT_TTL);
    freeReplyObject(ttl);
    /* A request without a key is a new chat every time. */
    CHECK(intake_post(s, NULL, body, &r) == 0, "%s", r.error);
    intake_check_202(&r, t2);
    http_response_free(&r);
    CHECK(strcmp(t1, t2) != 0, "a POST without a key replayed %s", t1);
    intake_wait_completed(s, t2, "replay me");
}

/* The same key with another body is refused, and writes nothing. */
static void test_intake_key_conflict(void **state)
{
    (void)state;
    struct stack *s = &intake_stack;
    char t1[UUID_LEN + 1];
    struct http_response r;
    static const char *const others[] = {
        "{\"message\":\"conflict B\"}",
        "{\"message\":\"conflict A\",\"model\":\"gpt-4o\"}",
        "{\"message\":\"conflict A\",\"temperature\":1.5}",
    };

    CHECK(intake_post(s, "conflict-1", "{\"message\":\"conflict A\"}", &r) == 0, "%s",
          r.error);
    intake_check_202(&r, t1);
    http_response_free(&r);
    long long added = stack_xadded(s, s->keys.requests);
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        CHECK(intake_post(s, "conflict-1", others[i], &r) == 0, "%s", r.error);
        intake_check_error(&r, 422, "idempotency_key_reused", "Idempotency-Key");
        http_response_free(&r);
    }
    CHECK(stack_xadded(s, s->keys.requests) == added,
          "a refused reuse of a key added %lld request-stream entries",
          stack_xadded(s, s->keys.requests) - added);
    intake_wait_completed(s, t1, "conflict A");
}

/* A key that is empty, too long or not printable ASCII is a 400 naming the header. */
static void test_intake_bad_key(void **state)
{
    (void)state;
    struct stack *s = &intake_stack;
    const char *body = "{\"message\":\"bad key\"}";
    char url[128], longkey[INTAKE_KEY_MAX + 2], header[INTAKE_KEY_MAX + 64];
    struct http_response r;

    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    snprintf(header, sizeof(header), "Idempotency-Key: %s", longkey);
    const char *const bad[][2] = {
        {"Idempotency-Key;", "empty"},
        {header, "one byte too long"},
        {"Idempotency-Key: caf\xc3\xa9", "not ASCII"},
    };
    long long added = stack_xadded(s, s->keys.requests);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *headers[] = {bad[i][0], NULL};
        CHECK(http_request_with("POST", stack_url(s, "/chat", url, sizeof(url)), headers,
                                body, strlen(body), INTAKE_HTTP_MS, &r) == 0,
              "%s", r.error);
        print_message("bad Idempotency-Key (%s): HTTP %ld\n", bad[i][1], r.status);
        intake_check_error(&r, 400, "invalid_header", "Idempotency-Key");
        http_response_free(&r);
    }
    /* The longest key allowed is fine. */
    longkey[INTAKE_KEY_MAX] = '\0';
    char trace[UUID_LEN + 1];
    CHECK(intake_post(s, longkey, body, &r) == 0, "%s", r.error);
    intake_check_202(&r, trace);
    http_response_free(&r);
    CHECK(stack_xadded(s, s->keys.requests) == added + 1,
          "%lld entries added, want 1 (the valid key's)",
          stack_xadded(s, s->keys.requests) - added);
    intake_wait_completed(s, trace, "bad key");
}

struct intake_racer {
    struct stack *s;
    pthread_barrier_t *go;
    long status;
    char trace[UUID_LEN + 1];
    char error[256];
};

static void *intake_race(void *arg)
{
    struct intake_racer *rc = arg;
    struct http_response r;
    pthread_barrier_wait(rc->go);
    if (intake_post(rc->s, "race-1", "{\"message\":\"one of fifty\"}", &r) != 0) {
        snprintf(rc->error, sizeof(rc->error), "%s", r.error);
    } else {
        rc->status = r.status;
        json_t *j = http_json(&r);
        snprintf(rc->trace, sizeof(rc->trace), "%s", STR(http_json_str(j, "traceId")));
        snprintf(rc->error, sizeof(rc->error), "%.200s", r.body);
        json_decref(j);
    }
    http_response_free(&r);
    return NULL;
}

/* Fifty clients posting the same key at the same moment make one chat. */
static void test_intake_one_key_concurrent(void **state)
{
    (void)state;
    struct stack *s = &intake_stack;
    struct intake_racer racers[INTAKE_CONCURRENT];
    pthread_t th[INTAKE_CONCURRENT];
    pthread_barrier_t go;
    int started = 0;

    long long added = stack_xadded(s, s->keys.requests);
    long long calls = intake_upstream_calls(s);
    CHECK(pthread_barrier_init(&go, NULL, INTAKE_CONCURRENT) == 0, "barrier");
    memset(racers, 0, sizeof(racers));
    for (int i = 0; i < INTAKE_CONCURRENT; i++) {
        racers[i].s = s;
        racers[i].go = &go;
        if (pthread_create(&th[i], NULL, intake_race, &racers[i]) != 0)
            break;
        started++;
    }
    /* A thread that did not start would leave the others at the barrier. */
    if (started < INTAKE_CONCURRENT)
        abort();
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);

    for (int i = 0; i < INTAKE_CONCURRENT; i++) {
        CHECK(racers[i].status == 202, "client %d: HTTP %ld: %s", i, racers[i].status,
              racers[i].error);
        CHECK(strcmp(racers[i].trace, racers[0].trace) == 0,
              "client %d got traceId %s, client 0 %s", i, racers[i].trace,
              racers[0].trace);
    }
    CHECK(stack_xadded(s, s->keys.requests) == added + 1,
          "%d posts with one key added %lld request-stream entries, want 1",
          INTAKE_CONCURRENT, stack_xadded(s, s->keys.requests) - added);
    intake_wait_completed(s, racers[0].trace, "one of fifty");
    CHECK(intake_upstream_calls(s) == calls + 1, "the upstream got %lld calls, want 1",
          intake_upstream_calls(s) - calls);
}

/* ---- a write Redis refuses ---------------------------------------------------- */

/* With the requests key holding a string, the write fails at run time: the client
 * gets an error and nothing of the chat is left (no pending hash without work
 * queued for it, no idempotency key pointing at nothing). Runs an api of its own
 * prefix so that the stack's processor never sees the broken key. */
static void test_intake_refused_write(void **state)
{
    (void)state;
    struct stack *s = &intake_stack;
    const char *const env[] = {"CHATQ_PREFIX=t6x:", NULL};
    char why[512] = "";
    struct http_response r = {0};
    long long hashes = -1, idem = -1;

    proc_stop(s->api);
    if (stack_api_restart(s, "api-wrongtype", env) != 0) {
        snprintf(why, sizeof(why), "api-wrongtype did not start");
        goto restore;
    }
    redisReply *set = stack_redis(s, "SET t6x:requests not-a-stream");
    freeReplyObject(set);
    if (intake_post(s, "refused-1", "{\"message\":\"nowhere to go\"}", &r) != 0) {
        snprintf(why, sizeof(why), "%s", r.error);
        goto restore;
    }
    hashes = intake_count_keys(s, "t6x:trace:*");
    idem = intake_count_keys(s, "t6x:idem:*");

restore:
    proc_stop(s->api);
    redisReply *del = stack_redis(s, "DEL t6x:requests");
    freeReplyObject(del);
    int back = stack_api_restart(s, "api-2", NULL) == 0;
    CHECK(why[0] == '\0', "%s", why);
    CHECK(back, "the api did not come back with the stack's prefix");
    print_message("refused write: HTTP %ld %s\n", r.status, r.body);
    intake_check_error(&r, 503, "redis_unavailable", NULL);
    http_response_free(&r);
    CHECK(hashes == 0, "the refused write left %lld trace hashes behind", hashes);
    CHECK(idem == 0, "the refused write left %lld idempotency keys behind", idem);
}

/* The intake script goes by its SHA1, which the api learns once. After an
 * operator's SCRIPT FLUSH (or a Redis restart) Redis answers NOSCRIPT: nothing
 * ran, and the same write goes again whole. */
static void test_intake_script_flushed(void **state)
{
    (void)state;
    struct stack *s = &intake_stack;
    struct http_client *c = http_client_new();
    struct http_response r = {0};
    char url[128], trace[UUID_LEN + 1];
    const char *body = "{\"message\":\"after a script flush\"}";
    CHECK(c != NULL, "out of memory");
    stack_url(s, "/chat", url, sizeof(url));

    for (int i = 0; i < 3; i++) {
        if (i == 2) {
            redisReply *f = stack_redis(s, "SCRIPT FLUSH");
            CHECK(f != NULL && f->type == REDIS_REPLY_STATUS, "SCRIPT FLUSH failed");
            freeReplyObject(f);
        }
        CHECK(http_client_request(c, "POST", url, body, strlen(body), INTAKE_HTTP_MS,
                                  &r) == 0,
              "POST %d: %s", i + 1, r.error);
        intake_check_202(&r, trace);
        http_response_free(&r);
    }
    http_client_free(c);
    intake_wait_completed(s, trace, "after a script flush");
}

/* ---- Redis slow, Redis down ------------------------------------------------- */

/* Redis slow rather than down: the write was sent but not answered in time. The
 * client is told the chat may exist; after Redis wakes the chat is there and
 * runs, and the retry with the same key gets its traceId, not a second chat. */
static void test_intake_redis_slow(void **state)
{
    (void)state;
    struct stack *s = &intake_stack;
    const char *msg = "written while Redis slept";
    const char *body = "{\"message\":\"written while Redis slept\"}";
    char trace[UUID_LEN + 1];
    struct http_response r;

    long long added = stack_xadded(s, s->keys.requests);
    long long calls = intake_upstream_calls(s);
    redisContext *sleeper = stack_redis_sleep(s, INTAKE_SLEEP);
    CHECK(sleeper != NULL, "could not put Redis to sleep (DEBUG SLEEP)");
    int rc = intake_post(s, "slow-1", body, &r);
    void *woke = NULL;
    int slept = redisGetReply(sleeper, &woke) == REDIS_OK;
    freeReplyObject(woke);
    redisFree(sleeper);
    CHECK(rc == 0, "%s", r.error);
    print_message("POST while Redis slept: HTTP %ld after %lld ms: %s\n", r.status,
                  r.elapsed_ms, r.body);
    intake_check_error(&r, 504, "redis_timeout", "Idempotency-Key");
    http_response_free(&r);
    CHECK(slept, "DEBUG SLEEP did not answer after the sleep");

    /* The write ran once Redis woke: the retry finds it. */
    CHECK(intake_post(s, "slow-1", body, &r) == 0, "%s", r.error);
    intake_check_202(&r, trace);
    http_response_free(&r);
    intake_wait_completed(s, trace, msg);
    CHECK(stack_xadded(s, s->keys.requests) == added + 1,
          "%lld request-stream entries for one chat, want 1",
          stack_xadded(s, s->keys.requests) - added);
    CHECK(intake_upstream_calls(s) == calls + 1, "the upstream got %lld calls, want 1",
          intake_upstream_calls(s) - calls);
}

/* Redis down: 503, nothing written; the same key later makes the chat. */
static void test_intake_redis_down(void **state)
{
    (void)state;
    struct stack *s = &intake_stack;
    const char *body = "{\"message\":\"posted while Redis was down\"}";
    char trace[UUID_LEN + 1], key[2048];
    struct http_response r;

    long long added = stack_xadded(s, s->keys.requests);
    long long hashes = intake_count_keys(s, "t6:trace:*");
    CHECK(stack_redis_stop(s) == 0, "redis-server did not stop");
    int rc = intake_post(s, "down-1", body, &r);
    int up = stack_redis_start(s) == 0;
    CHECK(up, "redis-server did not start again");
    CHECK(rc == 0, "%s", r.error);
    intake_check_error(&r, 503, "redis_unavailable", NULL);
    http_response_free(&r);
    keys_idem(&s->keys, "down-1", key, sizeof(key));
    CHECK(stack_xadded(s, s->keys.requests) == added, "a 503 added a request entry");
    CHECK(intake_count_keys(s, "t6:trace:*") == hashes, "a 503 left a trace hash");
    CHECK(intake_exists(s, key) == 0, "a 503 left the idempotency key %s", key);

    CHECK(intake_post(s, "down-1", body, &r) == 0, "%s", r.error);
    intake_check_202(&r, trace);
    http_response_free(&r);
    intake_wait_completed(s, trace, "posted while Redis was down");
}

static const struct CMUnitTest intake_tests[] = {
    cmocka_unit_test(test_intake_idempotent_replay),
    cmocka_unit_test(test_intake_key_conflict),
    cmocka_unit_test(test_intake_bad_key),
    cmocka_unit_test(test_intake_one_key_concurrent),
    cmocka_unit_test(test_intake_refused_write),
    cmocka_unit_test(test_intake_script_flushed),
    cmocka_unit_test(test_intake_redis_slow),
    cmocka_unit_test(test_intake_redis_down),
};

const struct suite_group suite_intake = {"intake", intake_tests,
                                         sizeof(intake_tests) / sizeof(intake_tests[0]),
                                         intake_setup, intake_teardown};
