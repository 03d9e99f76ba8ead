/* test_redis_auth.c - Redis with credentials: the default user has a password
 * (the tests' own connections use it) and chatq connects as an ACL user that may
 * touch only the group's key prefix and no dangerous command but CLIENT UNBLOCK.
 * Chats complete, a stopping processor hands its work back, and with a wrong
 * password each binary says so, keeps trying, and never prints the password. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define AUTH_CHAT_MS 20000
#define AUTH_PREFIX "t10:"
#define AUTH_ADMIN_PASS "admin-Qv7pLw2Rk9"
#define AUTH_PASS "chatq-Zt4mXb8Jd3"
#define AUTH_WRONG_PASS "wrong-Hs5nYc1Fe6"

static struct stack auth_stack;

/* The README's recipe, with the tests' prefix. */
static const char *const auth_redis_args[] = {"--requirepass",
                                              AUTH_ADMIN_PASS,
                                              "--user",
                                              "chatq",
                                              "on",
                                              ">" AUTH_PASS,
                                              "resetkeys",
                                              "~" AUTH_PREFIX "*",
                                              "resetchannels",
                                              "&" AUTH_PREFIX "*",
                                              "-@all",
                                              "+@read",
                                              "+@write",
                                              "+@scripting",
                                              "+@connection",
                                              "+time",
                                              "-@dangerous",
                                              "+client|unblock",
                                              "+publish",
                                              "+subscribe",
                                              "+unsubscribe",
                                              NULL};
static const char *const auth_processor_env[] = {"SHUTDOWN_GRACE_MS=300", NULL};

static int auth_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.redis = auth_redis_args,
                                 .redis_user = "chatq",
                                 .redis_pass = AUTH_PASS,
                                 .redis_admin_pass = AUTH_ADMIN_PASS,
                                 .processor = auth_processor_env};
    return stack_start(&auth_stack, "redis-auth", AUTH_PREFIX, &set);
}

static int auth_teardown(void **state)
{
    (void)state;
    return stack_stop(&auth_stack);
}

static void auth_chat_completes(struct stack *s, const char *message)
{
    char trace[UUID_LEN + 1];
    CHECK(chat_post(s, message, NULL, -1, trace) == 0, "POST failed");
    json_t *j = chat_wait(s, trace, AUTH_CHAT_MS, NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "chat %s ended %s, want completed", trace,
          j != NULL ? STR(http_json_str(j, "status")) : "(not at all)");
    json_decref(j);
}

/* Every connection named by a binary is the ACL user's. */
static void test_acl_user_end_to_end(void **state)
{
    (void)state;
    struct stack *s = &auth_stack;
    auth_chat_completes(s, "hello through an ACL user");

    redisReply *r = stack_redis(s, "CLIENT LIST");
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING, "CLIENT LIST failed");
    int named = 0, other = 0;
    for (char *line = strtok(r->str, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strstr(line, " name=processor-") == NULL &&
            strstr(line, " name=handler-") == NULL)
            continue;
        named++;
        other += strstr(line, " user=chatq ") == NULL;
    }
    freeReplyObject(r);
    CHECK(named > 0 && other == 0, "%d of %d named connections are not user chatq", other,
          named);
    char why[256];
    CHECK(stack_drained(s, AUTH_CHAT_MS, why, sizeof(why)) == 0, "not drained: %s", why);
}

static int auth_check_in_flight(void *arg)
{
    json_t *st = stack_fake_stats(arg);
    long long n = stack_stat(st, "in_flight", 0);
    json_decref(st);
    return n >= 1;
}

/* A processor stopped with work in flight past its grace hands it back, and the
 * next one finishes it: the hand-back runs under the ACL too. */
static void test_acl_processor_restart(void **state)
{
    (void)state;
    struct stack *s = &auth_stack;
    char trace[UUID_LEN + 1], how[64];
    int status = 0;
    CHECK(chat_post(s, "[[fake latency=3000]] in flight at shutdown", NULL, -1, trace) ==
              0,
          "POST failed");
    CHECK(harness_poll(harness_timeout(5000), 10, auth_check_in_flight, s) == 0,
          "the slow chat never reached the upstream");
    CHECK(proc_signal(s->processor, SIGTERM) == 0, "cannot signal the processor");
    CHECK(proc_wait(s->processor, harness_timeout(5000), &status) == 0,
          "the processor did not exit after SIGTERM");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the processor %s on SIGTERM, want exit 0; see %s",
          proc_describe(status, how, sizeof(how)), s->processor->log);
    CHECK(harness_file_contains(s->processor->log, "handed back 1 unfinished") == 1,
          "the processor did not hand its chat back; see %s", s->processor->log);
    CHECK(harness_file_contains(s->processor->log, "NOPERM") == 0,
          "the processor was refused a command; see %s", s->processor->log);
    proc_free(s->processor);
    s->processor = stack_processor_start(s, "processor-2", NULL);
    CHECK(s->processor != NULL, "the second processor did not start");
    json_t *j = chat_wait(s, trace, AUTH_CHAT_MS, NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "the handed-back chat ended %s, want completed",
          j != NULL ? STR(http_json_str(j, "status")) : "(not at all)");
    json_decref(j);
    auth_chat_completes(s, "and one more after the restart");
}

/* Every connection of the ACL user cut at once (as a Redis failover or a
 * restart of a proxy would): each binary logs in again on its own and the next
 * chat completes. */
static void test_acl_reconnect(void **state)
{
    (void)state;
    struct stack *s = &auth_stack;
    redisReply *r = stack_redis(s, "CLIENT KILL USER chatq");
    CHECK(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer >= 3,
          "CLIENT KILL USER chatq killed %lld connections, want at least 3",
          r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1);
    freeReplyObject(r);
    auth_chat_completes(s, "after every connection was cut");
}

/* ACL LOG's count of failed logins as user chatq, or -1. */
static long long auth_failed_logins(struct stack *s)
{
    redisReply *r = stack_redis(s, "ACL LOG");
    long long n = r != NULL && r->type == REDIS_REPLY_ARRAY ? 0 : -1;
    for (size_t i = 0; n >= 0 && i < r->elements; i++) {
        redisReply *e = r->element[i];
        int auth = 0, user = 0;
        long long count = 0;
        for (size_t k = 0; e->type == REDIS_REPLY_ARRAY && k + 1 < e->elements; k += 2) {
            const char *f = e->element[k]->str;
            redisReply *v = e->element[k + 1];
            if (strcmp(f, "reason") == 0)
                auth = v->str != NULL && strcmp(v->str, "auth") == 0;
            else if (strcmp(f, "username") == 0)
                user = v->str != NULL && strcmp(v->str, "chatq") == 0;
            else if (strcmp(f, "count") == 0 && v->type == REDIS_REPLY_INTEGER)
                count = v->integer;
        }
        if (auth && user)
            n += count;
    }
    if (r != NULL)
        freeReplyObject(r);
    return n;
}

struct auth_wait {
    struct stack *s;
    struct proc *p;
    long long above;
};

static int auth_check_log(void *arg)
{
    const struct auth_wait *w = arg;
    return harness_file_contains(w->p->log, "WRONGPASS") == 1;
}

static int auth_check_retrying(void *arg)
{
    const struct auth_wait *w = arg;
    return auth_failed_logins(w->s) > w->above;
}

/* One binary at a time with the wrong password: it logs Redis's refusal, stays up
 * and keeps logging in again (ACL LOG counts the attempts). */
static void auth_wrong_one(struct stack *s, struct proc *p)
{
    CHECK(p != NULL, "cannot start the binary");
    struct auth_wait w = {.s = s, .p = p};
    CHECK(harness_poll(harness_timeout(5000), 20, auth_check_log, &w) == 0,
          "%s never logged WRONGPASS; see %s", p->name, p->log);
    w.above = auth_failed_logins(s);
    CHECK(w.above >= 1, "ACL LOG has no failed login");
    CHECK(harness_poll(harness_timeout(8000), 50, auth_check_retrying, &w) == 0,
          "%s did not try again after the failed login; see %s", p->name, p->log);
    CHECK(proc_alive(p), "%s gave up; see %s", p->name, p->log);
}

struct auth_post {
    struct stack *s;
    long status;
    int said; /* the body names redis_unavailable */
};

/* 1 once the api answered a POST /chat at all. */
static int auth_check_post(void *arg)
{
    struct auth_post *p = arg;
    struct http_response r;
    char u[256];
    const char *body = "{\"message\":\"hello\"}";
    if (!proc_alive(p->s->api))
        return -1;
    if (http_request("POST", stack_url(p->s, "/chat", u, sizeof(u)), body, strlen(body),
                     5000, &r) != 0) {
        http_response_free(&r);
        return 0;
    }
    p->status = r.status;
    p->said = r.body != NULL && strstr(r.body, "redis_unavailable") != NULL;
    http_response_free(&r);
    return 1;
}

/* A binary still waiting for Redis stops cleanly on SIGTERM too. */
static void auth_stop_wrong(struct proc *p)
{
    char how[64], log[PATH_MAX];
    snprintf(log, sizeof(log), "%s", p->log);
    int status = proc_stop(p);
    proc_free(p);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "waiting for Redis, it %s on SIGTERM, want exit 0; see %s",
          proc_describe(status, how, sizeof(how)), log);
    CHECK(harness_file_contains(log, "runtime error:") != 1 &&
              harness_file_contains(log, "Sanitizer") != 1,
          "sanitizer report in %s", log);
}

static void test_acl_wrong_password(void **state)
{
    (void)state;
    struct stack *s = &auth_stack;
    char url[256], env[300], path[PATH_MAX];
    snprintf(url, sizeof(url), "redis://chatq:%s@127.0.0.1:%d/0", AUTH_WRONG_PASS,
             s->redis_port);
    snprintf(env, sizeof(env), "REDIS_URL=%s", url);
    const char *const wrong[] = {env, NULL};

    struct proc *p = stack_processor_spawn(s, "processor-wrong", wrong);
    auth_wrong_one(s, p);
    auth_stop_wrong(p);
    p = stack_handler_spawn(s, "handler-wrong", wrong);
    auth_wrong_one(s, p);
    auth_stop_wrong(p);

    /* The api: the request is refused as Redis being unavailable. */
    CHECK(proc_signal(s->api, SIGTERM) == 0 && proc_wait(s->api, 5000, NULL) == 0,
          "the api did not stop");
    proc_free(s->api);
    s->api = NULL;
    /* Its /health is 503 without Redis, so it is not waited for: the POST is. */
    CHECK(stack_api_spawn(s, "api-wrong", wrong) == 0, "the api did not start");
    struct auth_post post = {.s = s};
    CHECK(harness_poll(harness_timeout(10000), 50, auth_check_post, &post) == 0,
          "the api never answered POST /chat; see %s", s->api->log);
    CHECK(post.status == 503 && post.said,
          "POST with a wrong Redis password answered %ld, want 503 redis_unavailable",
          post.status);
    struct auth_wait w = {.s = s, .p = s->api};
    CHECK(harness_poll(harness_timeout(5000), 20, auth_check_log, &w) == 0,
          "the api never logged WRONGPASS; see %s", s->api->log);

    /* No log of the group holds either password. */
    static const char *const names[] = {
        "api",     "api-wrong",     "processor", "processor-2", "processor-wrong",
        "handler", "handler-wrong", NULL};
    for (int i = 0; names[i] != NULL; i++) {
        snprintf(path, sizeof(path), "%s/%s.log", s->dir, names[i]);
        CHECK(harness_file_contains(path, AUTH_PASS) != 1 &&
                  harness_file_contains(path, AUTH_WRONG_PASS) != 1,
              "a Redis password is in %s", path);
    }
}

static const struct CMUnitTest auth_tests[] = {
    cmocka_unit_test(test_acl_user_end_to_end),
    cmocka_unit_test(test_acl_processor_restart),
    cmocka_unit_test(test_acl_reconnect),
    cmocka_unit_test(test_acl_wrong_password),
};

const struct suite_group suite_redis_auth = {"redis_auth", auth_tests,
                                             sizeof(auth_tests) / sizeof(auth_tests[0]),
                                             auth_setup, auth_teardown};
