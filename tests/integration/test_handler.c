/* test_handler.c - the handler's own limits: a result that can never be written
 * (its trace key holds the wrong type) ends in the dead-letter stream after
 * MAX_DELIVERIES instead of being taken over for ever, and SIGTERM ends a read
 * blocked in Redis at once rather than after HANDLER_BLOCK_MS. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define HAND_CLAIM_IDLE_MS 300 /* the smallest CLAIM_IDLE_MS there is */
#define HAND_MAX_DELIVERIES 2
#define HAND_DEAD_MS 15000
#define HAND_LONG_BLOCK_MS 30000
#define HAND_TERM_MS 2000

static struct stack hand_stack;

static const char *const hand_handler_env[] = {"CLAIM_IDLE_MS=300", "MAX_DELIVERIES=2",
                                               NULL};

static int hand_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.handler = hand_handler_env};
    return stack_start(&hand_stack, "handler", "t7:", &set);
}

static int hand_teardown(void **state)
{
    (void)state;
    return stack_stop(&hand_stack);
}

struct hand_dead {
    struct stack *s;
    const char *id; /* the result's id in the results stream */
    char reason[512], source[128], deliveries[16], trace[64];
    int found;
};

/* 1 once the dead-letter stream holds the entry with this id and the results
 * stream has nothing pending. */
static int hand_check_dead(void *arg)
{
    struct hand_dead *d = arg;
    redisReply *r = stack_redis(d->s, "XRANGE %s - +", d->s->keys.dead);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return 0;
    }
    for (size_t i = 0; i < r->elements && !d->found; i++) {
        const redisReply *f = r->element[i]->element[1];
        const char *id = NULL, *reason = NULL, *source = NULL, *deliveries = NULL,
                   *trace = NULL;
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *name = f->element[k]->str, *value = f->element[k + 1]->str;
            if (strcmp(name, "id") == 0)
                id = value;
            else if (strcmp(name, "reason") == 0)
                reason = value;
            else if (strcmp(name, "source") == 0)
                source = value;
            else if (strcmp(name, "deliveries") == 0)
                deliveries = value;
            else if (strcmp(name, "trace") == 0)
                trace = value;
        }
        if (id != NULL && strcmp(id, d->id) == 0) {
            d->found = 1;
            snprintf(d->reason, sizeof(d->reason), "%s", STR(reason));
            snprintf(d->source, sizeof(d->source), "%s", STR(source));
            snprintf(d->deliveries, sizeof(d->deliveries), "%s", STR(deliveries));
            snprintf(d->trace, sizeof(d->trace), "%s", STR(trace));
        }
    }
    freeReplyObject(r);
    return d->found && stack_xpending(d->s, d->s->keys.results, KEYS_GROUP_HANDLERS) == 0;
}

/* A result whose trace key is not a hash (here a string) makes every finalize
 * fail with WRONGTYPE; after MAX_DELIVERIES it must go to the dead-letter stream
 * with the reason, and leave nothing pending. */
static void test_handler_dead_letters_unwritable_result(void **state)
{
    (void)state;
    struct stack *s = &hand_stack;
    char trace[UUID_LEN + 1], key[KEYS_MAX + UUID_LEN + 8];
    CHECK(uuid_v4(trace) == 0, "uuid_v4 failed");
    keys_trace(&s->keys, trace, key, sizeof(key));

    redisReply *r = stack_redis(s, "SET %s x", key);
    CHECK(r != NULL && r->type == REDIS_REPLY_STATUS, "SET %s failed", key);
    freeReplyObject(r);
    r = stack_redis(s,
                    "XADD %s * trace %s status completed response hello model m "
                    "timestamp 2026-01-01T00:00:00Z attempts 1",
                    s->keys.results, trace);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING, "XADD to %s failed",
          s->keys.results);
    struct hand_dead d = {.s = s, .id = NULL};
    char id[64];
    snprintf(id, sizeof(id), "%s", r->str);
    freeReplyObject(r);
    d.id = id;

    int rc = harness_poll(harness_timeout(HAND_DEAD_MS), 20, hand_check_dead, &d);
    CHECK(rc == 0,
          "a result for a trace key of the wrong type was %s within %d ms (CLAIM_IDLE_MS "
          "%d, MAX_DELIVERIES %d); %lld results pending",
          d.found ? "dead-lettered but still pending" : "not dead-lettered", HAND_DEAD_MS,
          HAND_CLAIM_IDLE_MS, HAND_MAX_DELIVERIES,
          stack_xpending(s, s->keys.results, KEYS_GROUP_HANDLERS));
    CHECK(strstr(d.reason, "delivered 3 times") != NULL && strstr(d.reason, "WRONGTYPE"),
          "dead letter reason \"%s\": want the delivery count and the last error",
          d.reason);
    CHECK(strcmp(d.source, s->keys.results) == 0 && strcmp(d.deliveries, "3") == 0 &&
              strcmp(d.trace, trace) == 0,
          "dead letter source \"%s\" deliveries \"%s\" trace \"%s\": want %s, 3 and the "
          "result's own fields",
          d.source, d.deliveries, d.trace, s->keys.results);
    CHECK(stack_xlen(s, s->keys.results) == 0, "the dead-lettered result is still in %s",
          s->keys.results);
    r = stack_redis(s, "DEL %s", key);
    freeReplyObject(r);
}

struct hand_idle {
    struct stack *s;
    char suffix[32]; /* "-<pid>": the end of the consumer's name */
    long long idle;
};

/* 1 once the handler's consumer has sat idle long enough that it must be inside
 * its blocking read (every XREADGROUP resets the idle time). */
static int hand_check_blocked(void *arg)
{
    struct hand_idle *h = arg;
    redisReply *r = stack_redis(h->s, "XINFO CONSUMERS %s %s", h->s->keys.results,
                                KEYS_GROUP_HANDLERS);
    h->idle = -1;
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements;
         i++) {
        const redisReply *c = r->element[i];
        const char *name = NULL;
        long long idle = -1;
        for (size_t k = 0; k + 1 < c->elements; k += 2) {
            if (strcmp(c->element[k]->str, "name") == 0)
                name = c->element[k + 1]->str;
            else if (strcmp(c->element[k]->str, "idle") == 0)
                idle = c->element[k + 1]->integer;
        }
        size_t n = name ? strlen(name) : 0, sn = strlen(h->suffix);
        if (n > sn && strcmp(name + n - sn, h->suffix) == 0)
            h->idle = idle;
    }
    freeReplyObject(r);
    return h->idle >= 500;
}

/* Idle with HANDLER_BLOCK_MS=30000, the handler is inside XREADGROUP BLOCK; a
 * SIGTERM must end it at once (docker stop gives 10 s before SIGKILL). */
static void test_handler_sigterm_while_blocked(void **state)
{
    (void)state;
    struct stack *s = &hand_stack;
    const char *const extra[] = {"HANDLER_BLOCK_MS=30000", "CLAIM_IDLE_MS=60000", NULL};
    char how[64];
    int status = 0;

    struct proc *p = stack_handler_start_with(s, "handler-long-block", extra);
    CHECK(p != NULL, "the handler with HANDLER_BLOCK_MS=30000 did not start");
    struct hand_idle h = {.s = s};
    snprintf(h.suffix, sizeof(h.suffix), "-%ld", (long)p->pid);
    int blocked = harness_poll(harness_timeout(10000), 20, hand_check_blocked, &h) == 0;
    if (!blocked)
        proc_free(p);
    CHECK(blocked, "the handler never sat in its blocking read (consumer idle %lld ms)",
          h.idle);

    long long t0 = harness_now_ms();
    proc_signal(p, SIGTERM);
    int rc = proc_wait(p, harness_timeout(HAND_TERM_MS), &status);
    long long took = harness_now_ms() - t0;
    char log[sizeof(p->log)];
    snprintf(log, sizeof(log), "%s", p->log);
    proc_free(p); /* still running: SIGTERM again, then SIGKILL */
    CHECK(rc == 0,
          "the handler blocked in XREADGROUP was still running %lld ms after "
          "SIGTERM; see %s",
          took, log);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the handler %s on SIGTERM, want exit 0; see %s",
          proc_describe(status, how, sizeof(how)), log);
    print_message("handler blocked in XREADGROUP exited %lld ms after SIGTERM\n", took);
}

static const struct CMUnitTest hand_tests[] = {
    cmocka_unit_test(test_handler_dead_letters_unwritable_result),
    cmocka_unit_test(test_handler_sigterm_while_blocked),
};

const struct suite_group suite_handler = {"handler", hand_tests,
                                          sizeof(hand_tests) / sizeof(hand_tests[0]),
                                          hand_setup, hand_teardown};
