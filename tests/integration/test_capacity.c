/* test_capacity.c - what chatq costs Redis, and what it answers when Redis is
 * full.
 *
 * The figures behind the README's sizing rule are measured here and printed
 * ("capacity: ..."): MEMORY USAGE of one finished trace with a short and with a
 * 4 KB answer, and the used_memory growth per queued request (its stream entry
 * and its "processing" record) over a few hundred queued with the processor
 * stopped (after as many again, so that connections made on the way are not
 * counted). The bounds asserted are loose: they catch a record that grew by an
 * order of magnitude, not noise.
 *
 * With maxmemory reached (noeviction), POST /chat answers 503
 * redis_out_of_memory and writes nothing: no request entry, no trace, no
 * Idempotency-Key; the same POST succeeds once Redis has room again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define CAP_QUEUED 400
#define CAP_BIG 4096

static struct stack cap_stack;

static int cap_setup(void **state)
{
    (void)state;
    return stack_start(&cap_stack, "capacity", "cap:", NULL);
}

static int cap_teardown(void **state)
{
    (void)state;
    /* Whatever a failed test left: Redis must take writes for the stop. */
    redisReply *r = stack_redis(&cap_stack, "CONFIG SET maxmemory 0");
    if (r)
        freeReplyObject(r);
    return stack_stop(&cap_stack);
}

static long long cap_int(redisReply *r)
{
    long long n = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r)
        freeReplyObject(r);
    return n;
}

static long long cap_used_memory(struct stack *s)
{
    redisReply *r = stack_redis(s, "INFO memory");
    long long n = -1;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "used_memory:");
        if (p != NULL)
            n = atoll(p + strlen("used_memory:"));
    }
    if (r)
        freeReplyObject(r);
    return n;
}

/* MEMORY USAGE of the requests stream, counting every node (SAMPLES 0). */
static long long cap_stream_bytes(struct stack *s)
{
    return cap_int(stack_redis(s, "MEMORY USAGE %s SAMPLES 0", s->keys.requests));
}

/* MEMORY USAGE of a finished trace with message msg; checks its answer's length. */
static long long cap_trace_bytes(struct stack *s, const char *msg, size_t min_answer)
{
    char trace[UUID_LEN + 1];
    CHECK(chat_post(s, msg, NULL, -1, trace) == 0, "POST failed");
    json_t *j = chat_wait(s, trace, harness_timeout(10000), NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "the chat did not complete");
    size_t len = strlen(STR(http_json_str(j, "response")));
    json_decref(j);
    CHECK(len >= min_answer, "answer of %zu bytes, want at least %zu", len, min_answer);
    return cap_int(stack_redis(s, "MEMORY USAGE %strace:%s SAMPLES 0", s->prefix, trace));
}

static void test_capacity_figures(void **state)
{
    (void)state;
    struct stack *s = &cap_stack;
    char msg[64], trace[UUID_LEN + 1], why[256];

    long long small = cap_trace_bytes(s, "How big is a finished trace?", 1);
    snprintf(msg, sizeof(msg), "[[fake huge=%d]] a 4 KB answer", CAP_BIG);
    long long big = cap_trace_bytes(s, msg, CAP_BIG);
    fprintf(stderr,
            "capacity: one finished trace: %lld bytes (short answer), %lld bytes "
            "(%d-byte answer)\n",
            small, big, CAP_BIG);
    CHECK(small > 0 && small < 2048, "a finished trace takes %lld bytes", small);
    CHECK(big > CAP_BIG && big < 2 * CAP_BIG + 2048,
          "a trace with a 4 KB answer takes %lld", big);

    /* Queued requests: nobody reads them while the processor is stopped. */
    int st = proc_stop(s->processor);
    s->processor = NULL;
    CHECK(st == 0, "the processor did not exit 0 on SIGTERM (status %d)", st);
    /* A first batch makes what stays anyway (each api thread's Redis connection
     * and its buffers); the second one measures what a request adds. */
    long long added = stack_xadded(s, s->keys.requests), before = 0, sbefore = 0;
    for (int i = 0; i < 2 * CAP_QUEUED; i++) {
        if (i == CAP_QUEUED) {
            before = cap_used_memory(s);
            sbefore = cap_stream_bytes(s);
        }
        snprintf(msg, sizeof(msg), "queued request %03d, a typical short question", i);
        CHECK(chat_post(s, msg, NULL, -1, trace) == 0, "POST %d failed", i);
    }
    long long after = cap_used_memory(s);
    long long record =
        cap_int(stack_redis(s, "MEMORY USAGE %strace:%s SAMPLES 0", s->prefix, trace));
    CHECK(stack_xadded(s, s->keys.requests) == added + 2 * CAP_QUEUED,
          "not all were queued");
    long long entry = (cap_stream_bytes(s) - sbefore) / CAP_QUEUED;
    fprintf(
        stderr,
        "capacity: one queued request: its stream entry %lld bytes (MEMORY USAGE of the "
        "stream over %d entries) + its processing record %lld = %lld bytes "
        "(used_memory grew %lld bytes per request, allocator noise included)\n",
        entry, CAP_QUEUED, record, entry + record, (after - before) / CAP_QUEUED);
    CHECK(entry > 0 && entry + record < 4096, "a queued request takes %lld + %lld bytes",
          entry, record);

    s->processor = stack_processor_start(s, "processor-2", NULL);
    CHECK(s->processor != NULL, "the processor did not start again");
    CHECK(stack_drained(s, harness_timeout(30000), why, sizeof(why)) == 0, "%s", why);
}

/* Keys matching the stack's prefix + pattern, counted with SCAN. */
static long long cap_count(struct stack *s, const char *pattern)
{
    char cursor[32] = "0", match[256];
    long long n = 0;
    snprintf(match, sizeof(match), "%s%s", s->prefix, pattern);
    do {
        redisReply *r = stack_redis(s, "SCAN %s MATCH %s COUNT 1000", cursor, match);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        n += (long long)r->element[1]->elements;
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

static void test_capacity_redis_full(void **state)
{
    (void)state;
    struct stack *s = &cap_stack;
    const char *body = "{\"message\":\"no room for me\"}";
    const char *const hdr[] = {"Idempotency-Key: cap-full-1", NULL};
    char url[256], why[256];
    struct http_response r;

    long long traces = cap_count(s, "trace:*"), idem = cap_count(s, "idem:*");
    long long added = stack_xadded(s, s->keys.requests);
    redisReply *rep = stack_redis(s, "CONFIG SET maxmemory 1");
    CHECK(rep != NULL && rep->type == REDIS_REPLY_STATUS, "CONFIG SET maxmemory failed");
    freeReplyObject(rep);

    stack_url(s, "/chat", url, sizeof(url));
    CHECK(http_request_with("POST", url, hdr, body, strlen(body), 10000, &r) == 0,
          "POST with Redis full: %s", r.error);
    json_t *j = http_json(&r);
    CHECK(r.status == 503 && strcmp(STR(http_error_code(j)), "redis_out_of_memory") == 0,
          "POST with Redis full: HTTP %ld %s, want 503 redis_out_of_memory", r.status,
          STR(http_error_code(j)));
    json_decref(j);
    http_response_free(&r);
    CHECK(stack_xadded(s, s->keys.requests) == added, "a request entry was written");
    CHECK(cap_count(s, "trace:*") == traces, "a trace record was written");
    CHECK(cap_count(s, "idem:*") == idem, "an Idempotency-Key was written");

    rep = stack_redis(s, "CONFIG SET maxmemory 0");
    CHECK(rep != NULL && rep->type == REDIS_REPLY_STATUS,
          "CONFIG SET maxmemory 0 failed");
    freeReplyObject(rep);
    /* The same request, once there is room: accepted and run, as a first time. */
    CHECK(http_request_with("POST", url, hdr, body, strlen(body), 10000, &r) == 0,
          "POST after: %s", r.error);
    j = http_json(&r);
    CHECK(r.status == 202, "POST with room again: HTTP %ld, want 202", r.status);
    char trace[UUID_LEN + 1];
    snprintf(trace, sizeof(trace), "%s", STR(http_json_str(j, "traceId")));
    json_decref(j);
    http_response_free(&r);
    j = chat_wait(s, trace, harness_timeout(15000), NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "the chat after the outage did not complete");
    json_decref(j);
    long long ik =
        cap_int(stack_redis(s, "MEMORY USAGE %sidem:cap-full-1 SAMPLES 0", s->prefix));
    fprintf(stderr, "capacity: one Idempotency-Key: %lld bytes\n", ik);
    CHECK(ik > 0 && ik < 1024, "an Idempotency-Key takes %lld bytes", ik);
    CHECK(stack_drained(s, harness_timeout(15000), why, sizeof(why)) == 0, "%s", why);
}

static const struct CMUnitTest cap_tests[] = {
    cmocka_unit_test(test_capacity_figures),
    cmocka_unit_test(test_capacity_redis_full),
};

const struct suite_group suite_capacity = {"capacity", cap_tests,
                                           sizeof(cap_tests) / sizeof(cap_tests[0]),
                                           cap_setup, cap_teardown};
