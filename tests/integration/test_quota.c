/* test_quota.c - each gateway key's quotas as its client sees them: requests a minute
 * (429 exactly past the limit, with Retry-After and the limit in the body), chats in
 * flight (429 while they run, a slot free again as soon as a chat is seen final,
 * completed or failed, and lapsing by itself when its release was lost), the model
 * allow-list (403), a line's own limits in API_KEYS_FILE changed by SIGHUP, an
 * idempotent replay neither counted nor refused, two keys never sharing a quota, and
 * one quota held across two api processes on one Redis. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "http.h"
#include "proc.h"
#include "stack.h"
#include "suite.h"

/* Keys of the file, each with the limits its test needs. */
#define QT_KEY_R "qr-Vb7Nc2Xm9Kd4Lp6Tq1Wz3Ys8"  /* rpm=5 */
#define QT_KEY_R2 "qs-Fh3Jk8Pw2Qe6Rt9Yu1Io5Ax7" /* rpm=5 */
#define QT_KEY_I "qi-Gm5Bn1Vc8Xz4Lk2Jh7Fd3Sa9"  /* inflight=2 */
#define QT_KEY_M "qm-Py6Ot2Iu9Ye4Wr1Qa5Sd8Fg3"  /* models=m-one */
#define QT_KEY_S "qh-Zx4Cv9Bn2Mq7We1Rt6Yu3Io8"  /* rpm=1, then rpm=3 by SIGHUP */
#define QT_KEY_T "qt-Lk8Jh3Gf6Ds1Ap9Oi4Uy7Tr2"  /* rpm=4, over two api processes */
#define QT_KEY_U "qu-Mn2Bv7Cx4Zl9Kj1Hg6Fd3Sa5"  /* inflight=1, over two api processes */
#define QT_KEY_V "qv-Qw9Er4Ty1Ui6Op3As8Df2Gh7"  /* inflight=1, its release lost */
#define QT_KEY_W                                                                         \
    "qw-Zs4Xd9Cf2Vg7Bh1Nj6Mk3Lo8"              /* inflight=1, its result dead-lettered   \
                                                */
#define QT_KEY_X "qx-Ew3Rt8Yu1Io6Pa9Sd4Fg7Hj2" /* inflight=1, freed by two paths */
#define QT_KEY_A "qa-Rt5Yu8Io1Pa4Sd7Fg2Hj9Kl3" /* in API_KEYS: the defaults */
#define QT_LEASE_S 6                           /* KEY_INFLIGHT_MAX_S */
#define QT_TIMEOUT_MS 20000
#define QT_SLOW "[[fake latency=2500]]"

static struct stack qt_stack;
static char qt_file[PATH_MAX];
static char qt_file_env[PATH_MAX + 32];
static const char *const qt_api_env[] = {qt_file_env,
                                         "API_KEYS=" QT_KEY_A,
                                         "KEY_RPM=1000",
                                         "KEY_INFLIGHT=50",
                                         "KEY_MODELS=gpt-3.5-turbo, m-one",
                                         "KEY_INFLIGHT_MAX_S=8",
                                         NULL};
static struct proc *qt_api2;
static char qt_api2_url[sizeof(qt_stack.api_url)];

/* Writes the key file, with QT_KEY_S's rpm as given. */
static int qt_write_file(int s_rpm)
{
    FILE *f = fopen(qt_file, "w");
    if (f == NULL)
        return -1;
    int rc = fprintf(f,
                     "# gateway keys: key [rpm=N] [inflight=N] [models=a,b]\n"
                     "%s rpm=5\n%s rpm=5\n%s inflight=2\n%s models=m-one\n"
                     "%s rpm=%d\n%s rpm=4\n%s inflight=1\n%s inflight=1\n%s inflight=1\n"
                     "%s inflight=1\n",
                     QT_KEY_R, QT_KEY_R2, QT_KEY_I, QT_KEY_M, QT_KEY_S, s_rpm, QT_KEY_T,
                     QT_KEY_U, QT_KEY_V, QT_KEY_W, QT_KEY_X);
    if (fclose(f) != 0 || rc < 0) {
        fprintf(stderr, "integration: cannot write %s\n", qt_file);
        return -1;
    }
    return 0;
}

static int qt_setup(void **state)
{
    (void)state;
    char dir[PATH_MAX - 64];
    struct stack_settings set = {.api = qt_api_env};
    if (harness_subdir("quota-keys", dir, sizeof(dir)) != 0)
        return -1;
    snprintf(qt_file, sizeof(qt_file), "%s/keys", dir);
    if (qt_write_file(1) != 0)
        return -1;
    snprintf(qt_file_env, sizeof(qt_file_env), "API_KEYS_FILE=%s", qt_file);
    return stack_start(&qt_stack, "quota", "t11:", &set);
}

static int qt_teardown(void **state)
{
    (void)state;
    proc_free(qt_api2);
    qt_api2 = NULL;
    return stack_stop(&qt_stack);
}

/* Sends method path to the api at base (NULL: the stack's) with key, the
 * Idempotency-Key idem (may be NULL) and body (may be NULL). */
static void qt_request(const char *base, const char *method, const char *path,
                       const char *key, const char *idem, const char *body,
                       struct http_response *out)
{
    char url[256], auth[128], idh[128];
    const char *headers[3] = {auth, NULL, NULL};
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    if (idem != NULL) {
        snprintf(idh, sizeof(idh), "Idempotency-Key: %s", idem);
        headers[1] = idh;
    }
    snprintf(url, sizeof(url), "%s%s", base != NULL ? base : qt_stack.api_url, path);
    http_request_with(method, url, headers, body, body ? strlen(body) : 0, QT_TIMEOUT_MS,
                      out);
}

/* POST /chat {"message": message, "model": model (omitted if NULL)} with key to the
 * api at base (NULL: the stack's). Returns the status; the traceId of a 202 goes into
 * trace (may be NULL), the response into res when res is not NULL (then the caller
 * frees it). */
static long qt_post_to(const char *base, const char *key, const char *idem,
                       const char *message, const char *model, char trace[UUID_LEN + 1],
                       struct http_response *res)
{
    struct http_response own;
    struct http_response *r = res != NULL ? res : &own;
    json_t *body = json_pack("{s:s}", "message", message);
    if (model != NULL)
        json_object_set_new(body, "model", json_string(model));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    qt_request(base, "POST", "/chat", key, idem, text, r);
    free(text);
    long status = r->status;
    if (status == 202 && trace != NULL) {
        json_t *doc = http_json(r);
        const char *id = doc != NULL ? http_json_str(doc, "traceId") : NULL;
        snprintf(trace, UUID_LEN + 1, "%s", id != NULL ? id : "");
        json_decref(doc);
    }
    if (res == NULL)
        http_response_free(&own);
    return status;
}

static long qt_post(const char *key, const char *message, char trace[UUID_LEN + 1])
{
    return qt_post_to(NULL, key, NULL, message, NULL, trace, NULL);
}

/* POST that must be accepted: the traceId goes into trace, or the test fails. */
static void qt_accept_to(const char *base, const char *key, const char *message,
                         char trace[UUID_LEN + 1])
{
    struct http_response res;
    long s = qt_post_to(base, key, NULL, message, NULL, trace, &res);
    char body[300];
    snprintf(body, sizeof(body), "%s", STR(res.body));
    http_response_free(&res);
    CHECK(s == 202 && http_is_uuid_v4(trace), "POST '%s' with key %.3s: %ld %s, want 202",
          message, key, s, body);
}

static void qt_accept(const char *key, const char *message, char trace[UUID_LEN + 1])
{
    qt_accept_to(NULL, key, message, trace);
}

/* Checks a refusal over a quota as a client reads it: 429, Retry-After a whole
 * number of seconds in [1, max_retry], and the JSON error quota_exceeded naming the
 * limit and its value, its retry_after equal to the header. Frees res. */
static void qt_check_429(struct http_response *res, const char *limit, long long value,
                         long long max_retry, const char *what)
{
    char ra[32] = "", body[400];
    int has = http_header(res, "Retry-After", ra, sizeof(ra));
    char *end = NULL;
    long long secs = has ? strtoll(ra, &end, 10) : -1;
    int ra_ok = has && end != ra && *end == '\0' && secs >= 1 && secs <= max_retry;
    json_t *doc = res->status == 429 ? http_json(res) : NULL;
    json_t *err = doc != NULL ? json_object_get(doc, "error") : NULL;
    const char *code = doc != NULL ? http_error_code(doc) : NULL;
    const char *lim = err != NULL ? http_json_str(err, "limit") : NULL;
    json_t *val = err != NULL ? json_object_get(err, "value") : NULL;
    json_t *after = err != NULL ? json_object_get(err, "retry_after") : NULL;
    const char *msg = doc != NULL ? http_error_message(doc) : NULL;
    int body_ok = code != NULL && strcmp(code, "quota_exceeded") == 0 && lim != NULL &&
                  strcmp(lim, limit) == 0 && json_is_integer(val) &&
                  json_integer_value(val) == value && json_is_integer(after) &&
                  json_integer_value(after) == secs && msg != NULL && msg[0] != '\0';
    long status = res->status;
    snprintf(body, sizeof(body), "%s", STR(res->body));
    json_decref(doc);
    http_response_free(res);
    CHECK(
        status == 429 && ra_ok && body_ok,
        "%s: want 429 quota_exceeded limit=%s value=%lld with Retry-After in [1, %lld], "
        "got %ld, Retry-After '%s', body %s",
        what, limit, value, max_retry, status, has ? ra : "(none)", body);
}

/* Polls GET /chat/{trace}/response with key until the chat is final; returns its
 * status ("completed"/"failed", static) or fails the test. */
static const char *qt_wait(const char *key, const char *trace)
{
    char path[128];
    snprintf(path, sizeof(path), "/chat/%s/response", trace);
    for (int i = 0; i < harness_timeout(QT_TIMEOUT_MS) / 20; i++) {
        struct http_response res;
        qt_request(NULL, "GET", path, key, NULL, NULL, &res);
        json_t *doc = res.status == 200 ? http_json(&res) : NULL;
        const char *st = doc != NULL ? http_json_str(doc, "status") : NULL;
        const char *out = NULL;
        if (st != NULL && strcmp(st, "completed") == 0)
            out = "completed";
        else if (st != NULL && strcmp(st, "failed") == 0)
            out = "failed";
        json_decref(doc);
        http_response_free(&res);
        if (out != NULL)
            return out;
        harness_sleep_ms(20);
    }
    fail_msg("chat %s never became final", trace);
    return NULL;
}

/* Requests a minute: exactly the limit is let in, the next is 429 with the time
 * until a slot frees, and the refused one was not queued. A replay of an accepted
 * chat's Idempotency-Key is answered with its trace even over the limit, and counts
 * nothing; another key with the same limit is not touched. */
static void test_quota_rpm(void **state)
{
    (void)state;
    struct stack *s = &qt_stack;
    struct http_response res;
    char first[UUID_LEN + 1], trace[UUID_LEN + 1], msg[64];
    long long before = stack_xadded(s, s->keys.requests);

    long st = qt_post_to(NULL, QT_KEY_R, "rpm-first", "rpm 1", NULL, first, NULL);
    CHECK(st == 202, "first POST of key R: %ld", st);
    for (int i = 2; i <= 5; i++) {
        snprintf(msg, sizeof(msg), "rpm %d", i);
        qt_accept(QT_KEY_R, msg, trace);
    }
    qt_post_to(NULL, QT_KEY_R, NULL, "rpm 6", NULL, NULL, &res);
    /* GCRA: one request every 60 s / 5 frees a slot, so at most 12 s. */
    qt_check_429(&res, "requests_per_minute", 5, 12, "the 6th POST of key R in a minute");
    long long after = stack_xadded(s, s->keys.requests);
    CHECK(after == before + 5, "%lld chats queued, want 5", after - before);

    st = qt_post_to(NULL, QT_KEY_R, "rpm-first", "rpm 1", NULL, trace, NULL);
    CHECK(st == 202 && strcmp(trace, first) == 0,
          "a replay over the limit: %ld with trace %s, want 202 with %s", st, trace,
          first);
    qt_post_to(NULL, QT_KEY_R, NULL, "rpm 7", NULL, NULL, &res);
    qt_check_429(&res, "requests_per_minute", 5, 12, "key R after the replay");

    /* Key R2: four replays of its first chat count nothing; its own five go in. */
    st = qt_post_to(NULL, QT_KEY_R2, "rpm2-first", "rpm2 1", NULL, first, NULL);
    CHECK(st == 202, "key R2 while key R is over its limit: %ld, want 202", st);
    for (int i = 0; i < 4; i++) {
        st = qt_post_to(NULL, QT_KEY_R2, "rpm2-first", "rpm2 1", NULL, trace, NULL);
        CHECK(st == 202 && strcmp(trace, first) == 0, "replay %d of key R2: %ld", i + 1,
              st);
    }
    for (int i = 2; i <= 5; i++) {
        snprintf(msg, sizeof(msg), "rpm2 %d", i);
        qt_accept(QT_KEY_R2, msg, trace);
    }
    qt_post_to(NULL, QT_KEY_R2, NULL, "rpm2 6", NULL, NULL, &res);
    qt_check_429(&res, "requests_per_minute", 5, 12, "the 6th chat of key R2");

    /* Redis keeps the key's state under its id, never under the key. */
    redisReply *r = stack_redis(s, "KEYS %squota:*", s->prefix);
    CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= 2,
          "no quota keys in Redis");
    for (size_t i = 0; r != NULL && i < r->elements; i++)
        CHECK(strstr(r->element[i]->str, "Vb7N") == NULL &&
                  strstr(r->element[i]->str, "Fh3J") == NULL,
              "a quota key names the gateway key: %s", r->element[i]->str);
    freeReplyObject(r);
}

/* Chats in flight: two slow chats fill key I's two slots; a slot is free again as
 * soon as a chat is seen failed, and as soon as one is seen completed. */
static void test_quota_inflight(void **state)
{
    (void)state;
    struct http_response res;
    char a[UUID_LEN + 1], b[UUID_LEN + 1], d[UUID_LEN + 1], f[UUID_LEN + 1];

    qt_accept(QT_KEY_I, QT_SLOW " in flight a", a);
    qt_accept(QT_KEY_I, "[[fake status=400 latency=1000]] in flight b", b);
    qt_post_to(NULL, QT_KEY_I, NULL, "in flight c", NULL, NULL, &res);
    qt_check_429(&res, "chats_in_flight", 2, 5, "a 3rd chat with 2 in flight");

    const char *end = qt_wait(QT_KEY_I, b);
    CHECK(strcmp(end, "failed") == 0, "chat b ended %s, want failed", end);
    /* No waiting: the chat is final, so its slot is free. */
    qt_accept(QT_KEY_I, QT_SLOW " in flight d", d);
    qt_post_to(NULL, QT_KEY_I, NULL, "in flight e", NULL, NULL, &res);
    qt_check_429(&res, "chats_in_flight", 2, 5, "a 3rd chat after one failed");

    end = qt_wait(QT_KEY_I, a);
    CHECK(strcmp(end, "completed") == 0, "chat a ended %s, want completed", end);
    qt_accept(QT_KEY_I, "in flight f", f);
    qt_wait(QT_KEY_I, d);
    qt_wait(QT_KEY_I, f);
}

/* The allow-list: a key's own replaces KEY_MODELS; a model off the list is 403
 * model_not_allowed naming the allowed ones, and nothing is queued. */
static void test_quota_models(void **state)
{
    (void)state;
    struct stack *s = &qt_stack;
    struct http_response res;
    char trace[UUID_LEN + 1], body[400];
    long long before = stack_xadded(s, s->keys.requests);

    long st = qt_post_to(NULL, QT_KEY_A, NULL, "models 1", "gpt-4o", NULL, &res);
    json_t *doc = st == 403 ? http_json(&res) : NULL;
    const char *code = doc != NULL ? http_error_code(doc) : NULL;
    json_t *allowed =
        doc != NULL ? json_object_get(json_object_get(doc, "error"), "allowed") : NULL;
    int ok =
        code != NULL && strcmp(code, "model_not_allowed") == 0 &&
        json_array_size(allowed) == 2 &&
        strcmp(json_string_value(json_array_get(allowed, 0)), "gpt-3.5-turbo") == 0 &&
        strcmp(json_string_value(json_array_get(allowed, 1)), "m-one") == 0;
    snprintf(body, sizeof(body), "%s", STR(res.body));
    json_decref(doc);
    http_response_free(&res);
    CHECK(st == 403 && ok,
          "key A (KEY_MODELS) asking for gpt-4o: %ld %s, want 403 model_not_allowed "
          "allowing gpt-3.5-turbo and m-one",
          st, body);
    /* The default model is on the list. */
    qt_accept(QT_KEY_A, "models 2", trace);
    CHECK(qt_post_to(NULL, QT_KEY_A, NULL, "models 3", "m-one", NULL, NULL) == 202,
          "key A with m-one was refused");

    st = qt_post_to(NULL, QT_KEY_M, NULL, "models 4", NULL, NULL, &res);
    snprintf(body, sizeof(body), "%s", STR(res.body));
    http_response_free(&res);
    CHECK(st == 403 && strstr(body, "\"allowed\":[\"m-one\"]") != NULL,
          "key M (models=m-one) with the default model: %ld %s", st, body);
    st = qt_post_to(NULL, QT_KEY_M, NULL, "models 5", "m-one", trace, NULL);
    CHECK(st == 202, "key M with m-one: %ld", st);
    CHECK(strcmp(qt_wait(QT_KEY_M, trace), "completed") == 0,
          "key M's chat did not complete");
    long long after = stack_xadded(s, s->keys.requests);
    CHECK(after == before + 3, "%lld chats queued, want 3", after - before);
}

static int qt_key_s_accepted(void *arg)
{
    (void)arg;
    return qt_post(QT_KEY_S, "sighup", NULL) == 202;
}

/* A line's own limit, changed in the file and reloaded with SIGHUP: key S at rpm=1
 * is refused its 2nd chat; at rpm=3 the chat it already made still counts, so two
 * more go in, and the next is refused naming the new value. */
static void test_quota_sighup(void **state)
{
    (void)state;
    struct http_response res;
    char trace[UUID_LEN + 1];

    qt_accept(QT_KEY_S, "sighup 1", trace);
    qt_post_to(NULL, QT_KEY_S, NULL, "sighup 2", NULL, NULL, &res);
    qt_check_429(&res, "requests_per_minute", 1, 60, "key S's 2nd chat at rpm=1");

    CHECK(qt_write_file(3) == 0, "cannot write the key file");
    CHECK(proc_signal(qt_stack.api, SIGHUP) == 0, "cannot signal the api");
    CHECK(harness_poll(harness_timeout(QT_TIMEOUT_MS), 20, qt_key_s_accepted, NULL) == 0,
          "key S was not let in after its rpm was raised and SIGHUP");
    qt_accept(QT_KEY_S, "sighup 3", trace);
    qt_post_to(NULL, QT_KEY_S, NULL, "sighup 4", NULL, NULL, &res);
    qt_check_429(&res, "requests_per_minute", 3, 20, "key S's 4th chat at rpm=3");
}

/* A second api process on the same Redis: key T's 4 a minute and key U's one chat in
 * flight hold across both. */
static void test_quota_two_apis(void **state)
{
    (void)state;
    struct stack *s = &qt_stack;
    struct http_response res;
    char trace[UUID_LEN + 1], u[UUID_LEN + 1], msg[64];
    struct proc *first = s->api;
    int port = s->api_port;
    char url[sizeof(s->api_url)];

    /* stack_api_restart starts an api on s->api_port as s->api: borrow them. */
    memcpy(url, s->api_url, sizeof(url));
    s->api = NULL;
    s->api_port = harness_free_port();
    snprintf(s->api_url, sizeof(s->api_url), "http://127.0.0.1:%d", s->api_port);
    int started = stack_api_restart(s, "api2", NULL);
    qt_api2 = s->api;
    memcpy(qt_api2_url, s->api_url, sizeof(qt_api2_url));
    s->api = first;
    s->api_port = port;
    memcpy(s->api_url, url, sizeof(url));
    CHECK(started == 0, "the second api did not start");

    for (int i = 1; i <= 4; i++) {
        snprintf(msg, sizeof(msg), "two apis %d", i);
        qt_accept_to(i % 2 ? NULL : qt_api2_url, QT_KEY_T, msg, trace);
    }
    qt_post_to(qt_api2_url, QT_KEY_T, NULL, "two apis 5", NULL, NULL, &res);
    qt_check_429(&res, "requests_per_minute", 4, 15, "key T's 5th chat, on the 2nd api");
    qt_post_to(NULL, QT_KEY_T, NULL, "two apis 6", NULL, NULL, &res);
    qt_check_429(&res, "requests_per_minute", 4, 15, "key T's 6th chat, on the 1st api");

    qt_accept(QT_KEY_U, QT_SLOW " two apis slow", u);
    qt_post_to(qt_api2_url, QT_KEY_U, NULL, "two apis u", NULL, NULL, &res);
    qt_check_429(&res, "chats_in_flight", 1, 5, "key U's 2nd chat, on the 2nd api");
    qt_wait(QT_KEY_U, u);
    qt_accept_to(qt_api2_url, QT_KEY_U, "two apis u again", trace);

    int status = proc_stop(qt_api2);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the second api did not exit 0 on SIGTERM");
    CHECK(harness_file_contains(qt_api2->log, "ERROR: AddressSanitizer") != 1 &&
              harness_file_contains(qt_api2->log, "runtime error:") != 1,
          "sanitizer report in %s", qt_api2->log);
}

static int qt_key_w_accepted(void *arg)
{
    (void)arg;
    return qt_post(QT_KEY_W, "dead letter again", NULL) == 202;
}

/* A result the handler cannot use (malformed) goes to the dead-letter stream, and
 * its chat will not become final through it: the slot is freed then, not when it
 * lapses. */
static void test_quota_dead_letter_frees(void **state)
{
    (void)state;
    struct stack *s = &qt_stack;
    struct http_response res;
    char trace[UUID_LEN + 1], path[128];
    long long dead = stack_xadded(s, s->keys.dead);

    qt_accept(QT_KEY_W, "[[fake latency=15000]] dead letter", trace);
    qt_post_to(NULL, QT_KEY_W, NULL, "dead letter 2", NULL, NULL, &res);
    qt_check_429(&res, "chats_in_flight", 1, 5, "key W's 2nd chat");
    redisReply *r =
        stack_redis(s, "XADD %s * trace %s status bogus", s->keys.results, trace);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING,
          "XADD of a malformed result failed");
    freeReplyObject(r);
    CHECK(harness_poll(harness_timeout(5000), 20, qt_key_w_accepted, NULL) == 0,
          "key W's slot was not freed when its result was dead-lettered");
    CHECK(stack_xadded(s, s->keys.dead) == dead + 1, "no dead letter was written");
    /* Freed by the dead letter, not by the chat ending. */
    snprintf(path, sizeof(path), "/chat/%s/response", trace);
    qt_request(NULL, "GET", path, QT_KEY_W, NULL, NULL, &res);
    int processing = res.status == 200 && res.body != NULL &&
                     strstr(res.body, "\"processing\"") != NULL;
    http_response_free(&res);
    CHECK(processing, "key W's first chat is no longer processing");
}

static int qt_key_x_accepted(void *arg)
{
    return qt_post(QT_KEY_X, "[[fake latency=6000]] freed once b", arg) == 202;
}

/* A chat's slot is freed once, whichever way it ends and however many ways reach
 * it: a chat whose result was dead-lettered (slot freed) and that then completes
 * frees nothing more, or the next chat's slot would go with it; a cancel frees the
 * slot of the chat it cancels. */
static void test_quota_freed_once(void **state)
{
    (void)state;
    struct stack *s = &qt_stack;
    struct http_response res;
    char a[UUID_LEN + 1], b[UUID_LEN + 1] = "", path[128];

    qt_accept(QT_KEY_X, "[[fake latency=1000]] freed once a", a);
    redisReply *r = stack_redis(s, "XADD %s * trace %s status bogus", s->keys.results, a);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING,
          "XADD of a malformed result failed");
    freeReplyObject(r);
    CHECK(harness_poll(harness_timeout(5000), 20, qt_key_x_accepted, b) == 0 &&
              b[0] != '\0',
          "key X's slot was not freed when chat a's result was dead-lettered");
    const char *end = qt_wait(QT_KEY_X, a);
    CHECK(strcmp(end, "completed") == 0, "chat a ended %s, want completed", end);
    qt_post_to(NULL, QT_KEY_X, NULL, "freed once c", NULL, NULL, &res);
    qt_check_429(&res, "chats_in_flight", 1, 5,
                 "key X's chat c, with b in flight, after a completed");

    snprintf(path, sizeof(path), "/chat/%s/cancel", b);
    qt_request(NULL, "POST", path, QT_KEY_X, NULL, NULL, &res);
    long st = res.status;
    http_response_free(&res);
    CHECK(st == 200, "cancelling chat b answered %ld", st);
    char d[UUID_LEN + 1];
    qt_accept(QT_KEY_X, "freed once d", d);
    end = qt_wait(QT_KEY_X, d);
    CHECK(strcmp(end, "completed") == 0, "chat d ended %s, want completed", end);
}

static int qt_key_v_accepted(void *arg)
{
    (void)arg;
    return qt_post(QT_KEY_V, "lost release again", NULL) == 202;
}

/* A release that never comes (no handler: the chat is never made final) does not
 * hold the slot for ever: it lapses between KEY_INFLIGHT_MAX_S and twice that
 * (quota.h). */
static void test_quota_inflight_lapses(void **state)
{
    (void)state;
    struct stack *s = &qt_stack;
    struct http_response res;
    char trace[UUID_LEN + 1];

    int st = proc_stop(s->handler);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "the handler did not exit 0 on SIGTERM");
    proc_free(s->handler);
    s->handler = NULL;

    long long t0 = harness_now_ms();
    qt_accept(QT_KEY_V, "lost release", trace);
    qt_post_to(NULL, QT_KEY_V, NULL, "lost release 2", NULL, NULL, &res);
    qt_check_429(&res, "chats_in_flight", 1, 5, "key V's 2nd chat");
    CHECK(harness_poll(harness_timeout(QT_TIMEOUT_MS + QT_LEASE_S * 2000), 100,
                       qt_key_v_accepted, NULL) == 0,
          "key V's slot never lapsed");
    long long waited = harness_now_ms() - t0;
    CHECK(waited >= (QT_LEASE_S - 1) * 1000,
          "key V's slot lapsed after %lld ms, before KEY_INFLIGHT_MAX_S=%d", waited,
          QT_LEASE_S);

    s->handler = stack_handler_start(s, "handler2");
    CHECK(s->handler != NULL, "the handler did not start again");
    CHECK(strcmp(qt_wait(QT_KEY_V, trace), "completed") == 0,
          "key V's first chat did not complete once a handler ran");
}

static const struct CMUnitTest qt_tests[] = {
    cmocka_unit_test(test_quota_rpm),
    cmocka_unit_test(test_quota_inflight),
    cmocka_unit_test(test_quota_models),
    cmocka_unit_test(test_quota_sighup),
    cmocka_unit_test(test_quota_two_apis),
    cmocka_unit_test(test_quota_dead_letter_frees),
    cmocka_unit_test(test_quota_freed_once),
    /* Last: it stops the handler. */
    cmocka_unit_test(test_quota_inflight_lapses),
};

const struct suite_group suite_quota = {
    "quota", qt_tests, sizeof(qt_tests) / sizeof(qt_tests[0]), qt_setup, qt_teardown};
