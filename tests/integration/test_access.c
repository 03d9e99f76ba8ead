/* test_access.c - gateway keys and CORS, as a client and a browser see them: with
 * keys configured, a request without one gets 401 (JSON, WWW-Authenticate: Bearer)
 * and the health probe does not need one; each key reads only its own traces; the
 * key file is read again on SIGHUP; a preflight gets Access-Control-Allow-Origin
 * for a listed origin only. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "http.h"
#include "proc.h"
#include "stack.h"
#include "suite.h"

#define ACC_KEY_A "ka-7Hq2xVn9Lw3RtY6pZc1MdF8s" /* in the file */
#define ACC_KEY_B "kb-Qm4Jw8Ne2Tb6Yh1Uo5Gk9Xa3" /* in API_KEYS */
#define ACC_KEY_C "kc-Rz5Pv1Sd7Lf3Wn9Ej2Hc6Bm4" /* added to the file later */
#define ACC_ORIGIN "https://app.example.com"
#define ACC_TIMEOUT_MS 10000
#define ACC_BODY "{\"message\":\"hello\"}"

static struct stack acc_stack;
static char acc_file[PATH_MAX];
static char acc_file_env[PATH_MAX + 32];
static const char *const acc_api_env[] = {acc_file_env, "API_KEYS=" ACC_KEY_B,
                                          "CORS_ORIGINS=" ACC_ORIGIN, NULL};

static int acc_write_file(const char *text)
{
    FILE *f = fopen(acc_file, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "integration: cannot write %s\n", acc_file);
        return -1;
    }
    return 0;
}

static int acc_setup(void **state)
{
    (void)state;
    char dir[PATH_MAX - 64];
    struct stack_settings set = {.api = acc_api_env};
    if (harness_subdir("access-keys", dir, sizeof(dir)) != 0)
        return -1;
    snprintf(acc_file, sizeof(acc_file), "%s/keys", dir);
    if (acc_write_file("# gateway keys\n\n  " ACC_KEY_A "  \r\n") != 0)
        return -1;
    snprintf(acc_file_env, sizeof(acc_file_env), "API_KEYS_FILE=%s", acc_file);
    return stack_start(&acc_stack, "access", "t10:", &set);
}

static int acc_teardown(void **state)
{
    (void)state;
    return stack_stop(&acc_stack);
}

/* Sends method path with key (NULL: no Authorization) and the extra header lines
 * in more (NULL-terminated, may be NULL). */
static void acc_request(const char *method, const char *path, const char *key,
                        const char *const *more, const char *body,
                        struct http_response *out)
{
    char url[256], auth[128];
    const char *headers[8];
    size_t n = 0;
    if (key != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        headers[n++] = auth;
    }
    for (; more != NULL && *more != NULL && n < 7; more++)
        headers[n++] = *more;
    headers[n] = NULL;
    stack_url(&acc_stack, path, url, sizeof(url));
    http_request_with(method, url, headers, body, body ? strlen(body) : 0, ACC_TIMEOUT_MS,
                      out);
}

/* POST /chat with key: 202 and its traceId in trace, or the test fails. */
static void acc_post(const char *key, const char *const *more, char trace[UUID_LEN + 1])
{
    struct http_response res;
    acc_request("POST", "/chat", key, more, ACC_BODY, &res);
    json_t *doc = res.status == 202 ? http_json(&res) : NULL;
    const char *id = doc != NULL ? http_json_str(doc, "traceId") : NULL;
    long status = res.status;
    char body[256];
    snprintf(body, sizeof(body), "%s", STR(res.body));
    http_response_free(&res);
    if (id == NULL || !http_is_uuid_v4(id)) {
        json_decref(doc);
        fail_msg("POST /chat with a key: %ld %s", status, body);
    }
    snprintf(trace, UUID_LEN + 1, "%s", id);
    json_decref(doc);
}

/* Checks a 401 as the issue asks for it: JSON error "unauthorized" and
 * WWW-Authenticate: Bearer. */
static void acc_check_401(struct http_response *res, const char *what)
{
    char www[64] = "";
    json_t *doc = http_json(res);
    const char *code = doc != NULL ? http_error_code(doc) : NULL;
    int has = http_header(res, "WWW-Authenticate", www, sizeof(www));
    long status = res->status;
    int ok = status == 401 && code != NULL && strcmp(code, "unauthorized") == 0 && has &&
             strcmp(www, "Bearer") == 0;
    char body[256];
    snprintf(body, sizeof(body), "%s", STR(res->body));
    json_decref(doc);
    http_response_free(res);
    CHECK(ok,
          "%s: want 401 unauthorized with WWW-Authenticate: Bearer, got %ld '%s' "
          "(WWW-Authenticate: '%s')",
          what, status, body, www);
}

static void test_access_no_key_is_401(void **state)
{
    (void)state;
    struct http_response res;
    long long before = stack_xadded(&acc_stack, acc_stack.keys.requests);

    acc_request("POST", "/chat", NULL, NULL, ACC_BODY, &res);
    acc_check_401(&res, "POST /chat without a key");
    acc_request("POST", "/chat", "ka-not-a-key", NULL, ACC_BODY, &res);
    acc_check_401(&res, "POST /chat with a wrong key");
    /* A configured key's head is not the key. */
    acc_request("POST", "/chat", "ka-7Hq2xVn9Lw3RtY6pZc1MdF8", NULL, ACC_BODY, &res);
    acc_check_401(&res, "POST /chat with a key missing its last byte");
    acc_request("GET", "/chat/3f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b/response", NULL, NULL,
                NULL, &res);
    acc_check_401(&res, "GET without a key");
    acc_request("GET", "/nowhere", NULL, NULL, NULL, &res);
    acc_check_401(&res, "GET of an unknown path without a key");

    long long after = stack_xadded(&acc_stack, acc_stack.keys.requests);
    CHECK(after == before, "refused requests queued %lld chats", after - before);
}

static void test_access_health_is_open(void **state)
{
    (void)state;
    struct http_response res;
    acc_request("GET", "/health", NULL, NULL, NULL, &res);
    long status = res.status;
    http_response_free(&res);
    CHECK(status == 200, "GET /health without a key: %ld, want 200", status);
}

static long acc_get(const char *key, const char *trace, char *code, size_t codelen)
{
    char path[128];
    struct http_response res;
    snprintf(path, sizeof(path), "/chat/%s/response", trace);
    acc_request("GET", path, key, NULL, NULL, &res);
    json_t *doc = http_json(&res);
    const char *c = doc != NULL && res.status != 200 ? http_error_code(doc) : "";
    snprintf(code, codelen, "%s", STR(c));
    long status = res.status;
    json_decref(doc);
    http_response_free(&res);
    return status;
}

static void test_access_keys_read_own_traces(void **state)
{
    (void)state;
    char ta[UUID_LEN + 1], tb[UUID_LEN + 1], code[64];

    acc_post(ACC_KEY_A, NULL, ta);
    acc_post(ACC_KEY_B, NULL, tb);
    long s = acc_get(ACC_KEY_B, ta, code, sizeof(code));
    CHECK(s == 404 && strcmp(code, "trace_not_found") == 0,
          "key B reading key A's trace: %ld %s, want 404 trace_not_found", s, code);
    s = acc_get(ACC_KEY_A, tb, code, sizeof(code));
    CHECK(s == 404 && strcmp(code, "trace_not_found") == 0,
          "key A reading key B's trace: %ld %s, want 404 trace_not_found", s, code);
    s = acc_get(ACC_KEY_A, ta, code, sizeof(code));
    CHECK(s == 200, "key A reading its own trace: %ld %s", s, code);
    s = acc_get(ACC_KEY_B, tb, code, sizeof(code));
    CHECK(s == 200, "key B reading its own trace: %ld %s", s, code);

    /* The record names its key by a hash, never by the key. */
    char key[KEYS_MAX + UUID_LEN + 1];
    keys_trace(&acc_stack.keys, ta, key, sizeof(key));
    redisReply *r = stack_redis(&acc_stack, "HGET %s owner", key);
    int ok = r != NULL && r->type == REDIS_REPLY_STRING && r->len == 16 &&
             strspn(r->str, "0123456789abcdef") == 16 &&
             strstr(ACC_KEY_A, r->str) == NULL;
    char owner[64];
    snprintf(owner, sizeof(owner), "%s", r != NULL && r->str ? r->str : "(none)");
    if (r != NULL)
        freeReplyObject(r);
    CHECK(ok, "the trace's owner field is '%s', want 16 hex digits", owner);
}

/* One key's Idempotency-Key is not another's: the same value from two keys makes
 * two chats, neither refused as reused nor handed the other's trace. */
static void test_access_idempotency_per_key(void **state)
{
    (void)state;
    const char *const idem[] = {"Idempotency-Key: shared-idem-1", NULL};
    char ta[UUID_LEN + 1], tb[UUID_LEN + 1], again[UUID_LEN + 1];

    acc_post(ACC_KEY_A, idem, ta);
    acc_post(ACC_KEY_B, idem, tb);
    CHECK(strcmp(ta, tb) != 0, "key B was handed key A's trace %s", ta);
    acc_post(ACC_KEY_A, idem, again);
    CHECK(strcmp(ta, again) == 0, "key A's retry got %s, want its trace %s", again, ta);
}

static void test_access_cors(void **state)
{
    (void)state;
    const char *const evil[] = {"Origin: https://evil.example",
                                "Access-Control-Request-Method: POST",
                                "Access-Control-Request-Headers: authorization", NULL};
    const char *const good[] = {"Origin: " ACC_ORIGIN,
                                "Access-Control-Request-Method: POST",
                                "Access-Control-Request-Headers: authorization", NULL};
    const char *const from_good[] = {"Origin: " ACC_ORIGIN, NULL};
    const char *const from_evil[] = {"Origin: https://evil.example", NULL};
    struct http_response res;
    char acao[256] = "", methods[128] = "";

    acc_request("OPTIONS", "/chat", NULL, evil, NULL, &res);
    int has = http_header(&res, "Access-Control-Allow-Origin", acao, sizeof(acao));
    long status = res.status;
    http_response_free(&res);
    CHECK(status != 0 && !has,
          "preflight from an unlisted origin: %ld with Access-Control-Allow-Origin: %s",
          status, acao);

    acc_request("OPTIONS", "/chat", NULL, good, NULL, &res);
    has = http_header(&res, "Access-Control-Allow-Origin", acao, sizeof(acao));
    http_header(&res, "Access-Control-Allow-Methods", methods, sizeof(methods));
    status = res.status;
    http_response_free(&res);
    CHECK(status == 204 && has && strcmp(acao, ACC_ORIGIN) == 0 &&
              strstr(methods, "POST") != NULL,
          "preflight from a listed origin: %ld, Access-Control-Allow-Origin '%s', "
          "methods '%s'",
          status, acao, methods);

    acc_request("POST", "/chat", ACC_KEY_A, from_good, ACC_BODY, &res);
    has = http_header(&res, "Access-Control-Allow-Origin", acao, sizeof(acao));
    status = res.status;
    http_response_free(&res);
    CHECK(status == 202 && has && strcmp(acao, ACC_ORIGIN) == 0,
          "POST from a listed origin: %ld, Access-Control-Allow-Origin '%s'", status,
          has ? acao : "(none)");

    acc_request("POST", "/chat", ACC_KEY_A, from_evil, ACC_BODY, &res);
    has = http_header(&res, "Access-Control-Allow-Origin", acao, sizeof(acao));
    status = res.status;
    http_response_free(&res);
    CHECK(status == 202 && !has,
          "POST from an unlisted origin: %ld with Access-Control-Allow-Origin '%s'",
          status, acao);
}

static int acc_key_c_works(void *arg)
{
    (void)arg;
    struct http_response res;
    acc_request("POST", "/chat", ACC_KEY_C, NULL, ACC_BODY, &res);
    long status = res.status;
    http_response_free(&res);
    return status == 202;
}

static int acc_key_c_refused(void *arg)
{
    (void)arg;
    struct http_response res;
    acc_request("POST", "/chat", ACC_KEY_C, NULL, ACC_BODY, &res);
    long status = res.status;
    http_response_free(&res);
    return status == 401;
}

/* SIGHUP reads the file again: a key added works, a key removed is refused, and a
 * broken file keeps the keys in force. API_KEYS stays as it was. */
static void test_access_sighup_reloads(void **state)
{
    (void)state;
    struct http_response res;
    char trace[UUID_LEN + 1];

    CHECK(acc_write_file(ACC_KEY_C "\n") == 0, "cannot write the key file");
    CHECK(proc_signal(acc_stack.api, SIGHUP) == 0, "cannot signal the api");
    CHECK(harness_poll(ACC_TIMEOUT_MS, 20, acc_key_c_works, NULL) == 0,
          "key C added to the file was not accepted after SIGHUP");
    acc_request("POST", "/chat", ACC_KEY_A, NULL, ACC_BODY, &res);
    acc_check_401(&res, "key A, removed from the file, after SIGHUP");
    acc_post(ACC_KEY_B, NULL, trace);

    /* A file that cannot be read keeps the keys in force. */
    CHECK(unlink(acc_file) == 0, "cannot remove the key file");
    CHECK(proc_signal(acc_stack.api, SIGHUP) == 0, "cannot signal the api");
    char log[PATH_MAX];
    snprintf(log, sizeof(log), "%s/api.log", acc_stack.dir);
    for (int i = 0; i < 500 && harness_file_contains(log, "keys not reloaded") != 1; i++)
        harness_sleep_ms(20);
    CHECK(harness_file_contains(log, "keys not reloaded") == 1,
          "no 'keys not reloaded' in %s after the file went away", log);
    acc_post(ACC_KEY_C, NULL, trace);

    /* An emptied file leaves API_KEYS's key alone in force, never an open gateway. */
    CHECK(acc_write_file("# nothing\n") == 0, "cannot write the key file");
    CHECK(proc_signal(acc_stack.api, SIGHUP) == 0, "cannot signal the api");
    CHECK(harness_poll(ACC_TIMEOUT_MS, 20, acc_key_c_refused, NULL) == 0,
          "key C still accepted after the file was emptied and SIGHUP");
    acc_post(ACC_KEY_B, NULL, trace);
    acc_request("POST", "/chat", NULL, NULL, ACC_BODY, &res);
    acc_check_401(&res, "no key after an emptied file");
    CHECK(proc_alive(acc_stack.api), "the api died");
}

/* Without keys or origins, as by default: the api says at start that it is open,
 * takes chats without a key, and answers no preflight with CORS headers, from any
 * origin. A trace made with a key stays that key's. Runs last: it restarts the api
 * without the group's keys. */
static void test_access_open_by_default(void **state)
{
    (void)state;
    const char *const open_env[] = {"API_KEYS=", "API_KEYS_FILE=", "CORS_ORIGINS=", NULL};
    const char *const preflight[] = {"Origin: " ACC_ORIGIN,
                                     "Access-Control-Request-Method: POST", NULL};
    char keyed[UUID_LEN + 1], trace[UUID_LEN + 1], code[64], acao[256] = "";
    char log[PATH_MAX];
    struct http_response res;

    acc_post(ACC_KEY_B, NULL, keyed);
    int st = proc_stop(acc_stack.api);
    CHECK(st == 0, "the keyed api did not exit 0 on SIGTERM (status %d)", st);
    CHECK(stack_api_restart(&acc_stack, "api-open", open_env) == 0,
          "the api did not start without keys");
    snprintf(log, sizeof(log), "%s/api-open.log", acc_stack.dir);
    CHECK(harness_file_contains(log, "the gateway is open") == 1,
          "no warning that the gateway is open in %s", log);

    acc_post(NULL, NULL, trace);
    long s = acc_get(NULL, trace, code, sizeof(code));
    CHECK(s == 200, "GET of an open trace without a key: %ld %s", s, code);
    s = acc_get(NULL, keyed, code, sizeof(code));
    CHECK(s == 404 && strcmp(code, "trace_not_found") == 0,
          "a keyed trace read without its key on the open api: %ld %s", s, code);

    acc_request("OPTIONS", "/chat", NULL, preflight, NULL, &res);
    int has = http_header(&res, "Access-Control-Allow-Origin", acao, sizeof(acao));
    long status = res.status;
    http_response_free(&res);
    CHECK(status != 0 && !has,
          "preflight without CORS_ORIGINS: %ld with Access-Control-Allow-Origin: %s",
          status, acao);
}

static const struct CMUnitTest acc_tests[] = {
    cmocka_unit_test(test_access_no_key_is_401),
    cmocka_unit_test(test_access_health_is_open),
    cmocka_unit_test(test_access_keys_read_own_traces),
    cmocka_unit_test(test_access_idempotency_per_key),
    cmocka_unit_test(test_access_cors),
    cmocka_unit_test(test_access_sighup_reloads),
    cmocka_unit_test(test_access_open_by_default),
};

const struct suite_group suite_access = {"access", acc_tests,
                                         sizeof(acc_tests) / sizeof(acc_tests[0]),
                                         acc_setup, acc_teardown};
