/* test_handler.c - the handler's own limits: SIGTERM ends a read blocked in
 * Redis at once rather than after HANDLER_BLOCK_MS. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define HAND_LONG_BLOCK_MS 30000
#define HAND_TERM_MS 2000

static struct stack hand_stack;

static int hand_setup(void **state)
{
    (void)state;
    return stack_start(&hand_stack, "handler", "t7:", NULL);
}

static int hand_teardown(void **state)
{
    (void)state;
    return stack_stop(&hand_stack);
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
    cmocka_unit_test(test_handler_sigterm_while_blocked),
};

const struct suite_group suite_handler = {"handler", hand_tests,
                                          sizeof(hand_tests) / sizeof(hand_tests[0]),
                                          hand_setup, hand_teardown};
