/* test_recovery.c - chats survive failures of the parts around them: a
 * processor killed with work in flight (another one claims and finishes it),
 * Redis going away and coming back (the api answers 503 meanwhile, then
 * everything reconnects without a restart; an answer that arrives meanwhile is
 * not lost), and a handler killed (outcomes wait for the next one). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define REC_CHATS 50
#define REC_LATENCY_MS 3000
#define REC_ALL_DONE_MS 30000
#define REC_503_MS 3500
#define REC_CHAT_MS 30000

static struct stack rec_stack;

static const char *const rec_processor_env[] = {
    "PROCESSOR_CONCURRENCY=64", "CLAIM_IDLE_MS=1500", "UPSTREAM_TIMEOUT_MS=15000", NULL};
static const char *const rec_handler_env[] = {"CLAIM_IDLE_MS=1500", NULL};

static int rec_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.processor = rec_processor_env,
                                 .handler = rec_handler_env};
    return stack_start(&rec_stack, "recovery", "t3:", &set);
}

static int rec_teardown(void **state)
{
    (void)state;
    return stack_stop(&rec_stack);
}

struct rec_in_flight {
    struct stack *s;
    long long want, seen;
};

static int rec_check_in_flight(void *arg)
{
    struct rec_in_flight *f = arg;
    json_t *st = stack_fake_stats(f->s);
    f->seen = stack_stat(st, "in_flight", 0);
    json_decref(st);
    return f->seen >= f->want;
}

static void test_processor_crash_recovery(void **state)
{
    (void)state;
    struct stack *s = &rec_stack;
    static char traces[REC_CHATS][UUID_LEN + 1];
    char msg[128], how[64];
    int status;

    for (int i = 0; i < REC_CHATS; i++) {
        snprintf(msg, sizeof(msg), "[[fake latency=%d]] crash survivor %02d",
                 REC_LATENCY_MS, i);
        CHECK(chat_post(s, msg, NULL, -1, traces[i]) == 0, "POST %d failed", i);
    }
    struct rec_in_flight f = {.s = s, .want = REC_CHATS};
    CHECK(harness_poll(harness_timeout(10000), 20, rec_check_in_flight, &f) == 0,
          "the fake never had %d requests in flight (last seen %lld)", REC_CHATS, f.seen);

    /* The processor dies holding all of them: nothing was acked. */
    CHECK(proc_signal(s->processor, SIGKILL) == 0, "processor A is not running");
    CHECK(proc_wait(s->processor, 5000, &status) == 0 && WIFSIGNALED(status),
          "processor A did not die on SIGKILL (%s)",
          proc_describe(status, how, sizeof(how)));
    proc_free(s->processor);
    s->processor = stack_processor_start(s, "processor-b", NULL);
    CHECK(s->processor != NULL, "processor B did not start");

    long long deadline = harness_now_ms() + harness_timeout(REC_ALL_DONE_MS);
    int completed = 0;
    for (int i = 0; i < REC_CHATS; i++) {
        long long left = deadline - harness_now_ms();
        json_t *j = chat_wait(s, traces[i], left > 0 ? (int)left : 1, NULL);
        CHECK(j != NULL,
              "chat %d (%s) still not finished %d ms after the crash (%d done)", i,
              traces[i], harness_timeout(REC_ALL_DONE_MS), completed);
        CHECK(strcmp(STR(http_json_str(j, "status")), "completed") == 0,
              "chat %d ended %s (%s: %s), want completed", i,
              STR(http_json_str(j, "status")), STR(http_error_code(j)),
              STR(http_error_message(j)));
        snprintf(msg, sizeof(msg),
                 "Fake answer to: [[fake latency=%d]] crash survivor %02d",
                 REC_LATENCY_MS, i);
        CHECK(strcmp(STR(http_json_str(j, "response")), msg) == 0,
              "chat %d answered \"%s\"", i, STR(http_json_str(j, "response")));
        json_decref(j);
        completed++;
    }
    char why[256];
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

/* Each POST while Redis is down must be a quick 503 redis_unavailable. */
static void rec_check_unavailable(struct stack *s, const char *method, const char *path,
                                  const char *body)
{
    char url[256];
    struct http_response r;
    CHECK(http_request(method, stack_url(s, path, url, sizeof(url)), body,
                       body != NULL ? strlen(body) : 0, 10000, &r) == 0,
          "with Redis down: %s", r.error);
    json_t *j = http_json(&r);
    CHECK(r.status == 503, "%s %s with Redis down: HTTP %ld, want 503: %.300s", method,
          path, r.status, r.body);
    CHECK(http_is_json(&r), "%s %s: Content-Type \"%s\"", method, path, r.content_type);
    CHECK(strcmp(STR(http_error_code(j)), "redis_unavailable") == 0,
          "%s %s with Redis down: error.code %s, want redis_unavailable", method, path,
          STR(http_error_code(j)));
    CHECK(r.elapsed_ms <= harness_timeout(REC_503_MS),
          "%s %s with Redis down took %lld ms, want <= %d", method, path, r.elapsed_ms,
          harness_timeout(REC_503_MS));
    json_decref(j);
    http_response_free(&r);
}

struct rec_post {
    struct stack *s;
    char trace[UUID_LEN + 1];
    long last;
};

/* 1 once a POST is accepted; a 503 means "not yet"; anything else is a failure. */
static int rec_check_post(void *arg)
{
    struct rec_post *p = arg;
    char url[128];
    struct http_response r;
    const char *body = "{\"message\":\"is Redis back\"}";
    int rc = 0;
    if (http_request("POST", stack_url(p->s, "/chat", url, sizeof(url)), body,
                     strlen(body), 10000, &r) != 0)
        goto out;
    p->last = r.status;
    if (r.status == 202) {
        json_t *j = http_json(&r);
        const char *id = http_json_str(j, "traceId");
        if (id != NULL && strlen(id) == UUID_LEN) {
            memcpy(p->trace, id, UUID_LEN + 1);
            rc = 1;
        } else {
            rc = -1;
        }
        json_decref(j);
    } else if (r.status != 503) {
        rc = -1;
    }
out:
    http_response_free(&r);
    return rc;
}

static int rec_check_health(void *arg)
{
    struct stack *s = arg;
    char url[128];
    struct http_response r;
    int ok = http_request("GET", stack_url(s, "/health", url, sizeof(url)), NULL, 0, 5000,
                          &r) == 0 &&
             r.status == 200;
    http_response_free(&r);
    return ok;
}

static void test_redis_down_and_back(void **state)
{
    (void)state;
    struct stack *s = &rec_stack;
    char before[UUID_LEN + 1], path[128];
    long status;

    /* A chat finished before the outage must still be there after it. */
    CHECK(chat_post(s, "finished before the outage", NULL, -1, before) == 0,
          "POST failed");
    json_t *j = chat_wait(s, before, REC_CHAT_MS, NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "chat before the outage did not complete");
    json_decref(j);

    CHECK(stack_redis_stop(s) == 0, "redis-server did not exit 0 on SIGTERM");
    rec_check_unavailable(s, "POST", "/chat", "{\"message\":\"anyone home\"}");
    rec_check_unavailable(s, "GET", "/health", NULL);
    snprintf(path, sizeof(path), "/chat/%s/response", before);
    rec_check_unavailable(s, "GET", path, NULL);

    CHECK(stack_redis_start(s) == 0, "redis-server did not come back");
    struct rec_post p = {.s = s};
    CHECK(harness_poll(harness_timeout(15000), 100, rec_check_post, &p) == 0,
          "POST /chat not accepted after Redis came back (last HTTP %ld)", p.last);
    CHECK(harness_poll(harness_timeout(5000), 50, rec_check_health, s) == 0,
          "GET /health not 200 after Redis came back");
    j = chat_wait(s, p.trace, REC_CHAT_MS, NULL);
    CHECK(j != NULL,
          "the chat posted after the outage did not finish (processor or handler "
          "did not reconnect?)");
    CHECK(strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "chat after the outage ended %s (%s)", STR(http_json_str(j, "status")),
          STR(http_error_code(j)));
    CHECK(strcmp(STR(http_json_str(j, "response")), "Fake answer to: is Redis back") == 0,
          "chat after the outage answered \"%s\"", STR(http_json_str(j, "response")));
    json_decref(j);

    j = chat_get(s, before, &status);
    CHECK(status == 200 && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "the chat finished before the outage is gone after it (HTTP %ld, status %s)",
          status, STR(http_json_str(j, "status")));
    json_decref(j);
}

struct rec_results {
    struct stack *s;
    long long want, len;
};

static int rec_check_results(void *arg)
{
    struct rec_results *r = arg;
    r->len = stack_xlen(r->s, r->s->keys.results);
    return r->len >= r->want;
}

/* With the handler gone, outcomes wait in the results stream (the chats still
 * show processing); a new handler picks them up: one never delivered, and one
 * delivered to a consumer that died before acking it (the test plays that
 * consumer), which the new handler must claim once CLAIM_IDLE_MS idle. */
static void test_handler_crash_and_restart(void **state)
{
    (void)state;
    struct stack *s = &rec_stack;
    char traces[2][UUID_LEN + 1], how[64];
    int status;
    long http;

    CHECK(proc_signal(s->handler, SIGKILL) == 0, "the handler is not running");
    CHECK(proc_wait(s->handler, 5000, &status) == 0,
          "the handler did not die on SIGKILL (%s)",
          proc_describe(status, how, sizeof(how)));
    proc_free(s->handler);
    s->handler = NULL;

    CHECK(chat_post(s, "written while the handler is away", NULL, -1, traces[0]) == 0,
          "POST failed");
    struct rec_results r = {.s = s, .want = 1};
    CHECK(harness_poll(harness_timeout(10000), 20, rec_check_results, &r) == 0,
          "no outcome reached %s", s->keys.results);
    redisReply *rr =
        stack_redis(s, "XREADGROUP GROUP %s ghost-of-a-handler COUNT 1 STREAMS %s >",
                    KEYS_GROUP_HANDLERS, s->keys.results);
    CHECK(rr != NULL && rr->type == REDIS_REPLY_ARRAY,
          "XREADGROUP as a ghost consumer failed");
    freeReplyObject(rr);
    CHECK(stack_xpending(s, s->keys.results, KEYS_GROUP_HANDLERS) == 1,
          "the ghost consumer holds no pending outcome");

    CHECK(chat_post(s, "also written while the handler is away", NULL, -1, traces[1]) ==
              0,
          "POST failed");
    r.want = 2;
    CHECK(harness_poll(harness_timeout(10000), 20, rec_check_results, &r) == 0,
          "the second outcome never reached %s", s->keys.results);
    for (int i = 0; i < 2; i++) {
        json_t *j = chat_get(s, traces[i], &http);
        CHECK(http == 200 && strcmp(STR(http_json_str(j, "status")), "processing") == 0,
              "with no handler chat %d shows %s, want processing", i,
              STR(http_json_str(j, "status")));
        json_decref(j);
    }

    s->handler = stack_handler_start(s, "handler-b");
    CHECK(s->handler != NULL, "handler B did not start");
    for (int i = 0; i < 2; i++) {
        json_t *j = chat_wait(s, traces[i], REC_CHAT_MS, NULL);
        CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
              "chat %d (%s) ended %s after handler B started", i,
              i == 0 ? "its outcome pending on a dead consumer"
                     : "its outcome never delivered",
              j != NULL ? STR(http_json_str(j, "status")) : "(not at all)");
        json_decref(j);
    }
    char why[256];
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

struct rec_completed {
    struct stack *s;
    long long want;
};

static int rec_check_completed(void *arg)
{
    struct rec_completed *c = arg;
    json_t *st = stack_fake_stats(c->s);
    long long n = stack_stat(st, "completed", 0);
    json_decref(st);
    return n >= c->want;
}

/* Redis goes away while a chat is at the upstream, and the answer comes back
 * while it is still away: the answer must not be lost. */
static void test_redis_blip_during_processing(void **state)
{
    (void)state;
    struct stack *s = &rec_stack;
    char trace[UUID_LEN + 1];
    const char *msg = "[[fake latency=1500]] answered while Redis is away";

    json_t *st = stack_fake_stats(s);
    struct rec_completed c = {.s = s, .want = stack_stat(st, "completed", 0) + 1};
    json_decref(st);
    CHECK(chat_post(s, msg, NULL, -1, trace) == 0, "POST failed");
    struct rec_in_flight f = {.s = s, .want = 1};
    CHECK(harness_poll(harness_timeout(5000), 10, rec_check_in_flight, &f) == 0,
          "the chat never reached the upstream");
    CHECK(stack_redis_stop(s) == 0, "redis-server did not exit 0 on SIGTERM");
    CHECK(rec_check_completed(&c) == 0,
          "the upstream answered before Redis was down: this test proved nothing");
    CHECK(harness_poll(harness_timeout(15000), 20, rec_check_completed, &c) == 0,
          "the upstream never answered");
    CHECK(stack_redis_start(s) == 0, "redis-server did not come back");
    json_t *j = chat_wait(s, trace, REC_CHAT_MS, NULL);
    CHECK(j != NULL, "the chat answered during the outage never finished");
    CHECK(strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "the chat answered during the outage ended %s (%s: %s)",
          STR(http_json_str(j, "status")), STR(http_error_code(j)),
          STR(http_error_message(j)));
    json_decref(j);
    char why[256];
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

static const struct CMUnitTest rec_tests[] = {
    cmocka_unit_test(test_processor_crash_recovery),
    cmocka_unit_test(test_redis_down_and_back),
    cmocka_unit_test(test_redis_blip_during_processing),
    cmocka_unit_test(test_handler_crash_and_restart),
};

const struct suite_group suite_recovery = {"recovery", rec_tests,
                                           sizeof(rec_tests) / sizeof(rec_tests[0]),
                                           rec_setup, rec_teardown};
