/* test_workers.c - live workers in Redis and the consumers dead ones leave: each
 * processor and handler has a heartbeat hash listed by one ZRANGEBYSCORE; a
 * SIGTERM'd worker's is gone when it exits, a SIGKILL'd one's within its TTL; a
 * killed worker's consumer is deleted from its group once its work was taken
 * over, while live ones, and a consumer still holding an entry, stay. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"
#include "version.h"

#define WK_TTL_MS 2000
#define WK_IDLE_MS 1000
#define WK_CLAIM_MS 1500

static struct stack wk_stack;

static const char *const wk_processor_env[] = {
    "WORKER_TTL_MS=2000", "CONSUMER_IDLE_MS=1000", "CLAIM_IDLE_MS=1500", NULL};
/* Handlers take over nothing during this group: a hand-made pending result stays
 * with its consumer for as long as the test needs. */
static const char *const wk_handler_env[] = {
    "WORKER_TTL_MS=2000", "CONSUMER_IDLE_MS=1000", "CLAIM_IDLE_MS=600000", NULL};

static int wk_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.processor = wk_processor_env,
                                 .handler = wk_handler_env};
    return stack_start(&wk_stack, "workers", "wk:", &set);
}

static int wk_teardown(void **state)
{
    (void)state;
    return stack_stop(&wk_stack);
}

/* The consumer (and worker) name of a process we started: role-host-pid. */
static void wk_name(const struct proc *p, const char *role, char *out, size_t len)
{
    char host[128];
    if (gethostname(host, sizeof(host)) != 0)
        strcpy(host, "unknown");
    host[sizeof(host) - 1] = '\0';
    snprintf(out, len, "%s-%s-%ld", role, host, (long)p->pid);
}

/* 1 if name is listed live: the documented one-liner, with Redis's clock. */
static int wk_live(struct stack *s, const char *name)
{
    redisReply *t = stack_redis(s, "TIME");
    if (t == NULL || t->type != REDIS_REPLY_ARRAY || t->elements != 2) {
        if (t)
            freeReplyObject(t);
        return -1;
    }
    long long now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    char key[256];
    snprintf(key, sizeof(key), "%sworkers", s->prefix);
    redisReply *r = stack_redis(s, "ZRANGEBYSCORE %s %lld +inf", key, now);
    int found = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        found = -1;
    for (size_t i = 0; found == 0 && i < r->elements; i++)
        found = strcmp(r->element[i]->str, name) == 0;
    if (r)
        freeReplyObject(r);
    return found;
}

/* 1 if the heartbeat hash of name exists. */
static int wk_hash_exists(struct stack *s, const char *name)
{
    redisReply *r = stack_redis(s, "EXISTS %sworker:%s", s->prefix, name);
    int n = r != NULL && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    if (r)
        freeReplyObject(r);
    return n;
}

/* A field of name's heartbeat hash into out ("" when absent). */
static void wk_field(struct stack *s, const char *name, const char *field, char *out,
                     size_t len)
{
    redisReply *r = stack_redis(s, "HGET %sworker:%s %s", s->prefix, name, field);
    snprintf(out, len, "%s", r != NULL && r->type == REDIS_REPLY_STRING ? r->str : "");
    if (r)
        freeReplyObject(r);
}

struct wk_wait {
    struct stack *s;
    const char *name;
    const char *field; /* for wk_check_field */
    long long min;
};

static int wk_check_live(void *arg)
{
    const struct wk_wait *w = arg;
    return wk_live(w->s, w->name) == 1 && wk_hash_exists(w->s, w->name) == 1;
}

static int wk_check_gone(void *arg)
{
    const struct wk_wait *w = arg;
    return wk_live(w->s, w->name) == 0 && wk_hash_exists(w->s, w->name) == 0;
}

static int wk_check_field(void *arg)
{
    const struct wk_wait *w = arg;
    char v[64];
    wk_field(w->s, w->name, w->field, v, sizeof(v));
    return v[0] != '\0' && atoll(v) >= w->min;
}

/* The stack's processor and handler each list themselves, with what an operator
 * looks for, and count the chat they finished. */
static void test_workers_heartbeats(void **state)
{
    (void)state;
    struct stack *s = &wk_stack;
    char names[2][160], v[256], trace[UUID_LEN + 1];
    wk_name(s->processor, "processor", names[0], sizeof(names[0]));
    wk_name(s->handler, "handler", names[1], sizeof(names[1]));
    const char *roles[2] = {"processor", "handler"};

    for (int i = 0; i < 2; i++) {
        struct wk_wait w = {.s = s, .name = names[i]};
        CHECK(harness_poll(harness_timeout(5000), 50, wk_check_live, &w) == 0,
              "%s is not listed live in %sworkers", names[i], s->prefix);
        wk_field(s, names[i], "role", v, sizeof(v));
        CHECK(strcmp(v, roles[i]) == 0, "%s: role \"%s\", want %s", names[i], v,
              roles[i]);
        wk_field(s, names[i], "version", v, sizeof(v));
        CHECK(strcmp(v, CHATQ_VERSION) == 0, "%s: version \"%s\", want %s", names[i], v,
              CHATQ_VERSION);
        wk_field(s, names[i], "pid", v, sizeof(v));
        long pid = i == 0 ? (long)s->processor->pid : (long)s->handler->pid;
        CHECK(atol(v) == pid, "%s: pid \"%s\", want %ld", names[i], v, pid);
        static const char *const present[] = {"host",   "started",  "in_flight", "done",
                                              "failed", "consumer", "ttl_ms",    "beat"};
        for (size_t k = 0; k < sizeof(present) / sizeof(present[0]); k++) {
            wk_field(s, names[i], present[k], v, sizeof(v));
            CHECK(v[0] != '\0', "%s: no field %s", names[i], present[k]);
        }
        redisReply *r = stack_redis(s, "PTTL %sworker:%s", s->prefix, names[i]);
        CHECK(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 0 &&
                  r->integer <= WK_TTL_MS,
              "%s: PTTL %lld, want in (0, %d]", names[i], r ? r->integer : -99,
              WK_TTL_MS);
        freeReplyObject(r);
    }

    CHECK(chat_post(s, "counted by the heartbeats", NULL, -1, trace) == 0, "POST failed");
    json_t *j = chat_wait(s, trace, harness_timeout(10000), NULL);
    CHECK(j != NULL, "the chat did not finish");
    json_decref(j);
    for (int i = 0; i < 2; i++) {
        struct wk_wait w = {.s = s, .name = names[i], .field = "done", .min = 1};
        CHECK(harness_poll(harness_timeout(5000), 50, wk_check_field, &w) == 0,
              "%s: done never reached 1", names[i]);
    }
    /* A failure: counted, and its code is the last error. */
    CHECK(chat_post(s, "[[fake status=400]] refused upstream", NULL, -1, trace) == 0,
          "POST failed");
    j = chat_wait(s, trace, harness_timeout(10000), NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "failed") == 0,
          "the chat did not fail");
    json_decref(j);
    struct wk_wait fw = {.s = s, .name = names[0], .field = "failed", .min = 1};
    CHECK(harness_poll(harness_timeout(5000), 50, wk_check_field, &fw) == 0,
          "%s: failed never reached 1", names[0]);
    wk_field(s, names[0], "last_error", v, sizeof(v));
    CHECK(strncmp(v, "context_length_exceeded: ", 25) == 0,
          "%s: last_error \"%s\", want the upstream's code first", names[0], v);
    wk_field(s, names[0], "last_error_at", v, sizeof(v));
    CHECK(v[0] != '\0', "%s: no last_error_at", names[0]);

    /* The stats hash counts chats finished for good, by status. */
    redisReply *r = stack_redis(s, "HGET %sstats completed", s->prefix);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING && atoll(r->str) >= 1,
          "%sstats completed is %s", s->prefix,
          r && r->type == REDIS_REPLY_STRING ? r->str : "absent");
    freeReplyObject(r);
}

/* chatq-stat --once against the stack: the workers, the groups, a dead letter with
 * its reason, and the chats counted. Its output goes to <group>/stat-once.log. */
static void test_workers_stat_once(void **state)
{
    (void)state;
    struct stack *s = &wk_stack;
    char bin[PATH_MAX], log[PATH_MAX], url[4096], prefix[2048], how[64];
    char pname[160], hname[160], trace[UUID_LEN + 1];
    int status;

    /* An entry no processor can read becomes a dead letter with a reason. */
    redisReply *r = stack_redis(s, "XADD %s * junk 1", s->keys.requests);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING, "XADD failed");
    freeReplyObject(r);
    CHECK(chat_post(s, "seen by chatq-stat", NULL, -1, trace) == 0, "POST failed");
    json_t *j = chat_wait(s, trace, harness_timeout(10000), NULL);
    CHECK(j != NULL, "the chat did not finish");
    json_decref(j);
    for (long long end = harness_now_ms() + harness_timeout(5000);
         stack_xlen(s, s->keys.dead) < 1 && harness_now_ms() < end;)
        harness_sleep_ms(20);
    CHECK(stack_xlen(s, s->keys.dead) >= 1, "no dead letter was written");

    wk_name(s->processor, "processor", pname, sizeof(pname));
    wk_name(s->handler, "handler", hname, sizeof(hname));
    CHECK(harness_bin("chatq-stat", bin, sizeof(bin)) == 0, "no chatq-stat");
    snprintf(log, sizeof(log), "%s/stat-once.log", s->dir);
    snprintf(url, sizeof(url), "REDIS_URL=%s", s->redis_url);
    snprintf(prefix, sizeof(prefix), "CHATQ_PREFIX=%s", s->prefix);
    char *argv[] = {bin, "--once", "--interval", "0.3", NULL};
    char *env[] = {url, prefix, NULL};
    struct proc *p = proc_start("chatq-stat", log, argv, env, PROC_WRAP | PROC_CLEAN);
    CHECK(p != NULL, "chatq-stat did not start");
    CHECK(proc_wait(p, harness_timeout(10000), &status) == 0 && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0,
          "chatq-stat --once did not exit 0 (%s)",
          proc_describe(status, how, sizeof(how)));
    proc_free(p);
    const char *want[] = {pname,
                          hname,
                          "workers: 2 live",
                          "requests",
                          "processors",
                          "results",
                          "handlers",
                          "completed",
                          "missing or malformed field",
                          "oldest pending",
                          CHATQ_VERSION,
                          "/s"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        CHECK(harness_file_contains(log, want[i]) == 1,
              "chatq-stat --once shows no \"%s\"", want[i]);
}

/* The README's recipe for re-driving a dead letter, on a chat that ended failed:
 * its record set back to processing with its attempts cleared, its fields added
 * to the requests stream again; it runs and completes. */
static void test_workers_redrive_recipe(void **state)
{
    (void)state;
    struct stack *s = &wk_stack;
    const char *msg = "[[fake status=400 times=1]] run me again";
    char trace[UUID_LEN + 1], accepted[64];

    CHECK(chat_post(s, msg, NULL, -1, trace) == 0, "POST failed");
    json_t *j = chat_wait(s, trace, harness_timeout(10000), NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "failed") == 0,
          "the chat did not fail first");
    json_decref(j);
    redisReply *r = stack_redis(s, "HGET %strace:%s accepted", s->prefix, trace);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING, "no accepted in the record");
    snprintf(accepted, sizeof(accepted), "%s", r->str);
    freeReplyObject(r);

    r = stack_redis(s, "HSET %strace:%s status processing", s->prefix, trace);
    freeReplyObject(r);
    r = stack_redis(s, "HDEL %strace:%s tries error_code error_message timestamp",
                    s->prefix, trace);
    freeReplyObject(r);
    r = stack_redis(s,
                    "XADD %s * trace %s message %s model gpt-4o-mini temperature 0.7 "
                    "accepted %s",
                    s->keys.requests, trace, msg, accepted);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING, "XADD failed");
    freeReplyObject(r);
    j = chat_wait(s, trace, harness_timeout(10000), NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0,
          "the re-driven chat ended %s (%s)", j ? STR(http_json_str(j, "status")) : "?",
          j ? STR(http_error_code(j)) : "");
    json_decref(j);
}

/* Starts a processor or handler with the group's settings and waits until it is
 * listed live. Returns it (new) with its name in name, or NULL. */
static struct proc *wk_start(struct stack *s, const char *role, const char *log,
                             char *name, size_t len)
{
    struct proc *p = strcmp(role, "processor") == 0
                         ? stack_processor_start(s, log, NULL)
                         : stack_handler_start_with(s, log, NULL);
    if (p == NULL)
        return NULL;
    wk_name(p, role, name, len);
    struct wk_wait w = {.s = s, .name = name};
    if (harness_poll(harness_timeout(5000), 50, wk_check_live, &w) != 0) {
        fprintf(stderr, "integration: %s never listed itself live\n", name);
        proc_free(p);
        return NULL;
    }
    return p;
}

/* SIGTERM: the heartbeat is gone by the time the process has exited. SIGKILL: it
 * is gone within the TTL. */
static void test_workers_leave_and_expire(void **state)
{
    (void)state;
    struct stack *s = &wk_stack;
    static const char *const roles[] = {"processor", "handler"};
    char name[160], log[64], how[64];
    int status;

    for (int i = 0; i < 2; i++) {
        snprintf(log, sizeof(log), "%s-term", roles[i]);
        struct proc *p = wk_start(s, roles[i], log, name, sizeof(name));
        CHECK(p != NULL, "%s did not start", log);
        CHECK(proc_signal(p, SIGTERM) == 0, "%s is not running", log);
        CHECK(proc_wait(p, harness_timeout(10000), &status) == 0 && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0,
              "%s did not exit 0 on SIGTERM (%s)", log,
              proc_describe(status, how, sizeof(how)));
        proc_free(p);
        CHECK(wk_live(s, name) == 0 && wk_hash_exists(s, name) == 0,
              "%s's heartbeat is still there after it stopped", name);

        snprintf(log, sizeof(log), "%s-kill", roles[i]);
        p = wk_start(s, roles[i], log, name, sizeof(name));
        CHECK(p != NULL, "%s did not start", log);
        CHECK(proc_signal(p, SIGKILL) == 0, "%s is not running", log);
        CHECK(proc_wait(p, 5000, &status) == 0, "%s did not die", log);
        long long killed = harness_now_ms();
        proc_free(p);
        struct wk_wait w = {.s = s, .name = name};
        CHECK(harness_poll(WK_TTL_MS + 1000, 20, wk_check_gone, &w) == 0,
              "%s still listed %lld ms after SIGKILL (TTL %d ms)", name,
              harness_now_ms() - killed, WK_TTL_MS);
    }
}

/* 1 if consumer name is in group of stream (XINFO CONSUMERS); its pending and
 * idle into *pending and *idle when not NULL. -1 on error. */
static int wk_consumer(struct stack *s, const char *stream, const char *group,
                       const char *name, long long *pending, long long *idle)
{
    redisReply *r = stack_redis(s, "XINFO CONSUMERS %s %s", stream, group);
    int found = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    for (size_t i = 0; i < r->elements && !found; i++) {
        const redisReply *c = r->element[i];
        const char *n = NULL;
        long long pend = -1, idl = -1;
        for (size_t k = 0; k + 1 < c->elements; k += 2) {
            const char *f = c->element[k]->str;
            if (strcmp(f, "name") == 0)
                n = c->element[k + 1]->str;
            else if (strcmp(f, "pending") == 0)
                pend = c->element[k + 1]->integer;
            else if (strcmp(f, "idle") == 0)
                idl = c->element[k + 1]->integer;
        }
        if (n != NULL && strcmp(n, name) == 0) {
            found = 1;
            if (pending)
                *pending = pend;
            if (idle)
                *idle = idl;
        }
    }
    freeReplyObject(r);
    return found;
}

struct wk_consumer_wait {
    struct stack *s;
    const char *stream, *group, *name;
    long long pending;
};

static int wk_check_consumer_gone(void *arg)
{
    const struct wk_consumer_wait *w = arg;
    return wk_consumer(w->s, w->stream, w->group, w->name, NULL, NULL) == 0;
}

static int wk_check_holds(void *arg)
{
    struct wk_consumer_wait *w = arg;
    w->pending = 0;
    return wk_consumer(w->s, w->stream, w->group, w->name, &w->pending, NULL) == 1 &&
           w->pending > 0;
}

/* A processor killed holding chats: another takes them over and finishes them,
 * then the dead consumer is deleted from the group; the live processor's and
 * handler's consumers, idle between reads for longer than CONSUMER_IDLE_MS, stay. */
static void test_workers_dead_consumers_swept(void **state)
{
    (void)state;
    struct stack *s = &wk_stack;
    char name[160], live_p[160], live_h[160], msg[96];
    static char traces[40][UUID_LEN + 1];
    int n = 0, status;

    struct proc *p = wk_start(s, "processor", "processor-doomed", name, sizeof(name));
    CHECK(p != NULL, "processor-doomed did not start");
    wk_name(s->processor, "processor", live_p, sizeof(live_p));
    wk_name(s->handler, "handler", live_h, sizeof(live_h));
    /* Both processors read; post slow chats until the doomed one holds some. */
    struct wk_consumer_wait w = {
        .s = s, .stream = s->keys.requests, .group = KEYS_GROUP_PROCESSORS, .name = name};
    while (n < 40 && !wk_check_holds(&w)) {
        snprintf(msg, sizeof(msg), "[[fake latency=3000]] taken over %02d", n);
        CHECK(chat_post(s, msg, NULL, -1, traces[n]) == 0, "POST %d failed", n);
        n++;
        harness_sleep_ms(20);
    }
    CHECK(harness_poll(harness_timeout(3000), 20, wk_check_holds, &w) == 0,
          "%s never held an entry after %d chats", name, n);
    struct wk_wait inf = {.s = s, .name = name, .field = "in_flight", .min = 1};
    CHECK(harness_poll(harness_timeout(3000), 20, wk_check_field, &inf) == 0,
          "%s holds entries but its heartbeat says in_flight 0", name);
    CHECK(proc_signal(p, SIGKILL) == 0, "processor-doomed is not running");
    CHECK(proc_wait(p, 5000, &status) == 0, "processor-doomed did not die");
    proc_free(p);

    for (int i = 0; i < n; i++) {
        json_t *j = chat_wait(s, traces[i], harness_timeout(30000), NULL);
        CHECK(j != NULL, "chat %d did not finish after the kill", i);
        CHECK(strcmp(STR(http_json_str(j, "status")), "completed") == 0,
              "chat %d ended %s", i, STR(http_json_str(j, "status")));
        json_decref(j);
    }
    struct wk_consumer_wait g = {
        .s = s, .stream = s->keys.requests, .group = KEYS_GROUP_PROCESSORS, .name = name};
    CHECK(harness_poll(harness_timeout(WK_TTL_MS + WK_IDLE_MS + 5000), 50,
                       wk_check_consumer_gone, &g) == 0,
          "the dead consumer %s is still in group %s", name, KEYS_GROUP_PROCESSORS);

    /* The live ones stay, although idle long enough to be looked at. */
    long long most_idle = 0;
    for (long long end = harness_now_ms() + 3 * WK_IDLE_MS; harness_now_ms() < end;) {
        long long idle = 0;
        CHECK(wk_consumer(s, s->keys.requests, KEYS_GROUP_PROCESSORS, live_p, NULL,
                          &idle) == 1,
              "the live consumer %s was deleted", live_p);
        CHECK(wk_consumer(s, s->keys.results, KEYS_GROUP_HANDLERS, live_h, NULL, NULL) ==
                  1,
              "the live consumer %s was deleted", live_h);
        if (idle > most_idle)
            most_idle = idle;
        harness_sleep_ms(50);
    }
    CHECK(most_idle >= WK_IDLE_MS,
          "%s was never idle for %d ms (at most %lld): the check proved nothing", live_p,
          WK_IDLE_MS, most_idle);
}

/* A consumer without a heartbeat that holds an entry is never deleted: that would
 * lose the entry. Once the entry is acknowledged, it goes. */
static void test_workers_pending_consumer_kept(void **state)
{
    (void)state;
    struct stack *s = &wk_stack;
    const char *ghost = "handler-ghost-1";
    /* One step, so the live handler blocked in XREADGROUP cannot take the entry. */
    redisReply *r = stack_redis(s, "MULTI");
    CHECK(r != NULL, "MULTI failed");
    freeReplyObject(r);
    r = stack_redis(s, "XADD %s * trace none status completed", s->keys.results);
    freeReplyObject(r);
    r = stack_redis(s, "XREADGROUP GROUP %s %s COUNT 1 STREAMS %s >", KEYS_GROUP_HANDLERS,
                    ghost, s->keys.results);
    freeReplyObject(r);
    r = stack_redis(s, "EXEC");
    CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
              r->element[0]->type == REDIS_REPLY_STRING,
          "MULTI XADD XREADGROUP failed");
    char id[64];
    snprintf(id, sizeof(id), "%s", r->element[0]->str);
    freeReplyObject(r);

    long long pending = 0, idle = 0;
    for (long long end = harness_now_ms() + 4 * WK_IDLE_MS; harness_now_ms() < end;) {
        CHECK(wk_consumer(s, s->keys.results, KEYS_GROUP_HANDLERS, ghost, &pending,
                          &idle) == 1 &&
                  pending == 1,
              "%s, holding an entry, was deleted (or lost it: pending %lld)", ghost,
              pending);
        harness_sleep_ms(50);
    }
    CHECK(idle >= WK_IDLE_MS, "%s idle only %lld ms: the check proved nothing", ghost,
          idle);

    r = stack_redis(s, "XACK %s %s %s", s->keys.results, KEYS_GROUP_HANDLERS, id);
    freeReplyObject(r);
    r = stack_redis(s, "XDEL %s %s", s->keys.results, id);
    freeReplyObject(r);
    struct wk_consumer_wait g = {
        .s = s, .stream = s->keys.results, .group = KEYS_GROUP_HANDLERS, .name = ghost};
    CHECK(harness_poll(harness_timeout(WK_IDLE_MS * 4), 50, wk_check_consumer_gone, &g) ==
              0,
          "%s, holding nothing any more, was not deleted", ghost);
}

static const struct CMUnitTest wk_tests[] = {
    cmocka_unit_test(test_workers_heartbeats),
    cmocka_unit_test(test_workers_stat_once),
    cmocka_unit_test(test_workers_redrive_recipe),
    cmocka_unit_test(test_workers_leave_and_expire),
    cmocka_unit_test(test_workers_dead_consumers_swept),
    cmocka_unit_test(test_workers_pending_consumer_kept),
};

const struct suite_group suite_workers = {
    "workers", wk_tests, sizeof(wk_tests) / sizeof(wk_tests[0]), wk_setup, wk_teardown};
