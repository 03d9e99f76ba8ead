/* stack.c - start, watch and stop the five processes of a chatq system, and the
 * client side the tests use on it; see stack.h.
 *
 * Readiness is always polled (PING, GET /health, the consumer group being
 * there), never slept for; a process that dies while we wait ends the
 * wait at once with its exit status. */
#include "stack.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define STACK_READY_MS 15000
#define STACK_HTTP_MS 10000
#define STACK_ENV_MAX 48
#define STACK_ENV_LEN 512
#define STACK_FAKE_ARGS_MAX 16
#define STACK_REDIS_ARGS_MAX 32

/* ---- environment lists ---------------------------------------------------- */

struct stack_env {
    char buf[STACK_ENV_MAX][STACK_ENV_LEN];
    char *ptr[STACK_ENV_MAX + 1];
    int n;
};

static void stack_env_add(struct stack_env *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void stack_env_add(struct stack_env *e, const char *fmt, ...)
{
    va_list ap;
    if (e->n >= STACK_ENV_MAX) {
        fprintf(stderr, "integration: too many settings (max %d)\n", STACK_ENV_MAX);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(e->buf[e->n], STACK_ENV_LEN, fmt, ap);
    va_end(ap);
    e->ptr[e->n] = e->buf[e->n];
    e->n++;
    e->ptr[e->n] = NULL;
}

static void stack_env_list(struct stack_env *e, const char *const *list)
{
    for (int i = 0; list != NULL && list[i] != NULL; i++)
        stack_env_add(e, "%s", list[i]);
}

static void stack_env_common(struct stack *s, struct stack_env *e)
{
    e->n = 0;
    e->ptr[0] = NULL;
    stack_env_add(e, "REDIS_URL=%s", s->redis_url);
    stack_env_add(e, "CHATQ_PREFIX=%s", s->prefix);
    stack_env_add(e, "LOG_LEVEL=info");
    stack_env_add(e, "CHATQ_RESULT_TTL=%d", STACK_RESULT_TTL);
}

/* ---- readiness ------------------------------------------------------------- */

struct stack_wait {
    struct stack *s;
    struct proc *p;
    const char *url;   /* HTTP: GET this until 200 */
    const char *key;   /* group: this stream ... */
    const char *group; /* ... has this group */
};

/* -1 (stop waiting) if the process is gone. */
static int stack_check_alive(struct proc *p)
{
    char how[64];
    if (proc_alive(p))
        return 0;
    fprintf(stderr, "integration: %s exited while starting (%s); see %s\n", p->name,
            proc_describe(p->status, how, sizeof(how)), p->log);
    return -1;
}

static int stack_check_http(void *arg)
{
    struct stack_wait *w = arg;
    struct http_response r;
    if (stack_check_alive(w->p) != 0)
        return -1;
    int rc = http_request("GET", w->url, NULL, 0, 1000, &r);
    int ok = rc == 0 && r.status == 200;
    http_response_free(&r);
    return ok;
}

static int stack_check_redis(void *arg)
{
    struct stack_wait *w = arg;
    struct timeval tv = {1, 0};
    if (stack_check_alive(w->p) != 0)
        return -1;
    redisContext *c = redisConnectWithTimeout("127.0.0.1", w->s->redis_port, tv);
    int ok = 0;
    if (c != NULL && c->err == 0 && stack_redis_auth(w->s, c) == 0) {
        redisReply *r = redisCommand(c, "PING");
        ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        if (r != NULL)
            freeReplyObject(r);
    }
    if (c != NULL)
        redisFree(c);
    return ok;
}

/* 1 if the consumer group exists on key: the binary has connected and set up
 * its group. (Redis 7.0 creates a consumer only when it first gets an entry, so
 * the consumer list cannot tell us more on an idle stream.) */
static int stack_group_exists(struct stack *s, const char *key, const char *group)
{
    redisReply *r = stack_redis(s, "XINFO GROUPS %s", key);
    int found = 0;
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements;
         i++) {
        redisReply *g = r->element[i];
        for (size_t j = 0; g->type == REDIS_REPLY_ARRAY && j + 1 < g->elements; j += 2) {
            redisReply *k = g->element[j], *v = g->element[j + 1];
            if (k->type == REDIS_REPLY_STRING && strcmp(k->str, "name") == 0 &&
                v->type == REDIS_REPLY_STRING && strcmp(v->str, group) == 0)
                found = 1;
        }
    }
    if (r != NULL)
        freeReplyObject(r);
    return found;
}

static int stack_check_group(void *arg)
{
    struct stack_wait *w = arg;
    if (stack_check_alive(w->p) != 0)
        return -1;
    return stack_group_exists(w->s, w->key, w->group);
}

static int stack_wait_http(struct stack *s, struct proc *p, const char *base)
{
    char url[128];
    struct stack_wait w = {.s = s, .p = p, .url = url};
    snprintf(url, sizeof(url), "%s/health", base);
    if (harness_poll(harness_timeout(STACK_READY_MS), 20, stack_check_http, &w) != 0) {
        fprintf(stderr, "integration: %s never answered 200 on %s\n", p->name, url);
        return -1;
    }
    return 0;
}

static int stack_wait_group(struct stack *s, struct proc *p, const char *key,
                            const char *group)
{
    struct stack_wait w = {.s = s, .p = p, .key = key, .group = group};
    if (harness_poll(harness_timeout(STACK_READY_MS), 20, stack_check_group, &w) != 0) {
        fprintf(stderr, "integration: %s never joined group %s of %s\n", p->name, group,
                key);
        return -1;
    }
    return 0;
}

/* 1 once the processor p is blocked in XREADGROUP (its connections carry its
 * consumer name, which ends in its pid): its event loop, and with it its SIGTERM
 * handling, is running. A group that existed before p started says nothing. */
static int stack_check_reading(void *arg)
{
    const struct stack_wait *w = arg;
    char suffix[32];
    int found = 0;
    snprintf(suffix, sizeof(suffix), "-%ld ", (long)w->p->pid);
    redisReply *r = stack_redis(w->s, "CLIENT LIST");
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        for (char *line = strtok(r->str, "\n"); line != NULL && !found;
             line = strtok(NULL, "\n"))
            found = strstr(line, " name=processor-") != NULL &&
                    strstr(line, suffix) != NULL &&
                    strstr(line, "cmd=xreadgroup") != NULL;
    }
    freeReplyObject(r);
    return found;
}

/* ---- the processes --------------------------------------------------------- */

static struct proc *stack_spawn(struct stack *s, const char *name, char *const argv[],
                                char *const env[], int flags)
{
    char log[PATH_MAX];
    snprintf(log, sizeof(log), "%s/%s.log", s->dir, name);
    struct proc *p = proc_start(name, log, argv, env, flags);
    if (p == NULL)
        fprintf(stderr, "integration: cannot start %s\n", name);
    return p;
}

int stack_redis_start(struct stack *s)
{
    char port[16], data[PATH_MAX + 8];
    snprintf(port, sizeof(port), "%d", s->redis_port);
    snprintf(data, sizeof(data), "%s/redis", s->dir);
    /* DEBUG is on for local clients: DEBUG SLEEP makes Redis slow rather than down. */
    /* clang-format off */
    char *argv[STACK_REDIS_ARGS_MAX + 16] = {
        "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", data,
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
        "--enable-debug-command", "local"};
    /* clang-format on */
    int n = 15;
    for (int i = 0; s->settings.redis != NULL && s->settings.redis[i] != NULL; i++) {
        if (i >= STACK_REDIS_ARGS_MAX) {
            fprintf(stderr, "integration: too many redis-server options (max %d)\n",
                    STACK_REDIS_ARGS_MAX);
            return -1;
        }
        /* The words are only read, as for the fake's. */
        argv[n++] = (char *)s->settings.redis[i];
    }
    argv[n] = NULL;
    if (s->redis != NULL) {
        proc_free(s->redis);
        s->redis = NULL;
    }
    s->redis = stack_spawn(s, "redis", argv, NULL, PROC_CLEAN);
    if (s->redis == NULL)
        return -1;
    struct stack_wait w = {.s = s, .p = s->redis};
    if (harness_poll(harness_timeout(STACK_READY_MS), 20, stack_check_redis, &w) != 0) {
        fprintf(stderr, "integration: redis-server never answered PING on port %d\n",
                s->redis_port);
        return -1;
    }
    return 0;
}

int stack_redis_stop(struct stack *s)
{
    int status;
    if (s->rc != NULL) {
        redisFree(s->rc);
        s->rc = NULL;
    }
    if (s->redis == NULL)
        return 0;
    status = proc_stop(s->redis);
    return status == 0 ? 0 : -1;
}

static int stack_fake_start(struct stack *s)
{
    char bin[PATH_MAX], port[16];
    if (harness_bin("chatq-fake-upstream", bin, sizeof(bin)) != 0)
        return -1;
    snprintf(port, sizeof(port), "%d", s->fake_port);
    char *argv[STACK_FAKE_ARGS_MAX + 4] = {bin, "--port", port};
    int n = 3;
    for (int i = 0; s->settings.fake != NULL && s->settings.fake[i] != NULL; i++) {
        if (i >= STACK_FAKE_ARGS_MAX) {
            fprintf(stderr, "integration: too many fake upstream options (max %d)\n",
                    STACK_FAKE_ARGS_MAX);
            return -1;
        }
        /* proc_start takes execv's char *const[]; the words are only read. */
        argv[n++] = (char *)s->settings.fake[i];
    }
    argv[n] = NULL;
    s->fake = stack_spawn(s, "fake-upstream", argv, NULL, PROC_CLEAN);
    return s->fake != NULL ? 0 : -1;
}

int stack_api_spawn(struct stack *s, const char *name, const char *const *extra)
{
    char bin[PATH_MAX];
    struct stack_env e;
    if (harness_bin("chatq-api", bin, sizeof(bin)) != 0)
        return -1;
    stack_env_common(s, &e);
    stack_env_add(&e, "PORT=%d", s->api_port);
    stack_env_add(&e, "HOST=127.0.0.1");
    stack_env_list(&e, s->settings.api);
    stack_env_list(&e, extra);
    char *argv[] = {bin, NULL};
    s->api = stack_spawn(s, name, argv, e.ptr, PROC_WRAP | PROC_CLEAN);
    return s->api != NULL ? 0 : -1;
}

static int stack_api_start(struct stack *s)
{
    return stack_api_spawn(s, "api", NULL);
}

int stack_api_restart(struct stack *s, const char *name, const char *const *extra)
{
    if (s->api != NULL) {
        if (proc_alive(s->api)) {
            fprintf(stderr, "integration: %s is still running\n", s->api->name);
            return -1;
        }
        proc_free(s->api);
        s->api = NULL;
    }
    if (stack_api_spawn(s, name, extra) != 0)
        return -1;
    return stack_wait_http(s, s->api, s->api_url);
}

struct proc *stack_processor_spawn(struct stack *s, const char *name,
                                   const char *const *extra)
{
    char bin[PATH_MAX];
    struct stack_env e;
    if (harness_bin("chatq-processor", bin, sizeof(bin)) != 0)
        return NULL;
    stack_env_common(s, &e);
    stack_env_add(&e, "OPENAI_BASE_URL=%s/v1", s->fake_url);
    stack_env_add(&e, "OPENAI_API_KEY=%s", STACK_API_KEY);
    stack_env_add(&e, "PROCESSOR_CONCURRENCY=16");
    stack_env_add(&e, "UPSTREAM_TIMEOUT_MS=10000");
    stack_env_add(&e, "UPSTREAM_MAX_ATTEMPTS=3");
    stack_env_add(&e, "RETRY_BASE_MS=50");
    stack_env_add(&e, "RETRY_MAX_MS=500");
    stack_env_add(&e, "RETRY_AFTER_MAX_MS=3000");
    stack_env_add(&e, "CLAIM_IDLE_MS=10000");
    stack_env_add(&e, "MAX_DELIVERIES=5");
    stack_env_add(&e, "SHUTDOWN_GRACE_MS=3000");
    stack_env_list(&e, s->settings.processor);
    stack_env_list(&e, extra);
    char *argv[] = {bin, NULL};
    return stack_spawn(s, name, argv, e.ptr, PROC_WRAP | PROC_CLEAN);
}

struct proc *stack_processor_start(struct stack *s, const char *name,
                                   const char *const *extra)
{
    struct proc *p = stack_processor_spawn(s, name, extra);
    if (p == NULL)
        return NULL;
    struct stack_wait w = {.s = s, .p = p};
    if (stack_wait_group(s, p, s->keys.requests, KEYS_GROUP_PROCESSORS) != 0 ||
        harness_poll(harness_timeout(STACK_READY_MS), 10, stack_check_reading, &w) != 0) {
        fprintf(stderr, "integration: %s never started reading\n", p->name);
        proc_free(p);
        return NULL;
    }
    return p;
}

struct proc *stack_handler_spawn(struct stack *s, const char *name,
                                 const char *const *extra)
{
    char bin[PATH_MAX];
    struct stack_env e;
    if (harness_bin("chatq-handler", bin, sizeof(bin)) != 0)
        return NULL;
    stack_env_common(s, &e);
    stack_env_add(&e, "CLAIM_IDLE_MS=10000");
    stack_env_list(&e, s->settings.handler);
    stack_env_list(&e, extra);
    char *argv[] = {bin, NULL};
    return stack_spawn(s, name, argv, e.ptr, PROC_WRAP | PROC_CLEAN);
}

struct proc *stack_handler_start(struct stack *s, const char *name)
{
    return stack_handler_start_with(s, name, NULL);
}

struct proc *stack_handler_start_with(struct stack *s, const char *name,
                                      const char *const *extra)
{
    struct proc *p = stack_handler_spawn(s, name, extra);
    if (p == NULL)
        return NULL;
    if (stack_wait_group(s, p, s->keys.results, KEYS_GROUP_HANDLERS) != 0) {
        proc_free(p);
        return NULL;
    }
    return p;
}

struct proc *stack_webhook_start(struct stack *s, const char *name,
                                 const char *const *extra)
{
    char bin[PATH_MAX];
    struct stack_env e;
    if (harness_bin("chatq-webhook", bin, sizeof(bin)) != 0)
        return NULL;
    stack_env_common(s, &e);
    stack_env_list(&e, extra);
    char *argv[] = {bin, NULL};
    struct proc *p = stack_spawn(s, name, argv, e.ptr, PROC_WRAP | PROC_CLEAN);
    if (p != NULL && stack_wait_group(s, p, s->keys.webhooks, KEYS_GROUP_WEBHOOKS) != 0) {
        proc_free(p);
        return NULL;
    }
    return p;
}

int stack_start(struct stack *s, const char *name, const char *prefix,
                const struct stack_settings *settings)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->prefix, sizeof(s->prefix), "%s", prefix);
    if (settings != NULL)
        s->settings = *settings;
    if (keys_init(&s->keys, prefix) != 0 ||
        harness_subdir(name, s->dir, sizeof(s->dir)) != 0)
        return -1;
    char sub[64], data[PATH_MAX];
    snprintf(sub, sizeof(sub), "%s/redis", name);
    if (harness_subdir(sub, data, sizeof(data)) != 0)
        return -1;
    s->redis_port = harness_free_port();
    s->fake_port = harness_free_port();
    s->api_port = harness_free_port();
    if (s->redis_port < 0 || s->fake_port < 0 || s->api_port < 0)
        return -1;
    if (s->settings.redis_pass != NULL)
        snprintf(s->redis_url, sizeof(s->redis_url), "redis://%s:%s@127.0.0.1:%d/0",
                 s->settings.redis_user != NULL ? s->settings.redis_user : "",
                 s->settings.redis_pass, s->redis_port);
    else
        snprintf(s->redis_url, sizeof(s->redis_url), "redis://127.0.0.1:%d/0",
                 s->redis_port);
    snprintf(s->api_url, sizeof(s->api_url), "http://127.0.0.1:%d", s->api_port);
    snprintf(s->fake_url, sizeof(s->fake_url), "http://127.0.0.1:%d", s->fake_port);

    /* Started together, waited for together: start-up costs the slowest one. */
    if (stack_redis_start(s) != 0 || stack_fake_start(s) != 0)
        return -1;
    s->handler = stack_handler_spawn(s, "handler", NULL);
    if (s->handler == NULL)
        return -1;
    s->processor = stack_processor_spawn(s, "processor", NULL);
    if (s->processor == NULL || stack_api_start(s) != 0)
        return -1;
    if (stack_wait_http(s, s->fake, s->fake_url) != 0 ||
        stack_wait_group(s, s->processor, s->keys.requests, KEYS_GROUP_PROCESSORS) != 0 ||
        stack_wait_group(s, s->handler, s->keys.results, KEYS_GROUP_HANDLERS) != 0 ||
        stack_wait_http(s, s->api, s->api_url) != 0)
        return -1;
    return 0;
}

/* 1 if a sanitizer reported something in the log at path. */
static int stack_log_has_sanitizer_report(const char *path)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:", NULL};
    for (int i = 0; marks[i] != NULL; i++)
        if (harness_file_contains(path, marks[i]) == 1)
            return 1;
    return 0;
}

/* Stops *pp and frees it. For our binaries (ours = 1), anything but exit 0 on
 * SIGTERM, or a sanitizer report in the log, is printed and returns -1. */
static int stack_stop_one(struct proc **pp, int ours)
{
    char how[64];
    struct proc *p = *pp;
    int rc = 0;
    if (p == NULL)
        return 0;
    int running = proc_alive(p);
    int status = proc_stop(p);
    if (ours && (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
        fprintf(stderr, "integration: %s %s %s; see %s\n", p->name,
                running ? "on SIGTERM" : "had already",
                proc_describe(status, how, sizeof(how)), p->log);
        rc = -1;
    }
    if (ours && stack_log_has_sanitizer_report(p->log)) {
        fprintf(stderr, "integration: sanitizer report in %s\n", p->log);
        rc = -1;
    }
    proc_free(p);
    *pp = NULL;
    return rc;
}

int stack_stop(struct stack *s)
{
    int rc = 0;
    if (s == NULL)
        return 0;
    rc |= stack_stop_one(&s->api, 1);
    rc |= stack_stop_one(&s->processor, 1);
    rc |= stack_stop_one(&s->handler, 1);
    rc |= stack_stop_one(&s->webhook, 1);
    rc |= stack_stop_one(&s->fake, 1);
    if (s->rc != NULL) {
        redisFree(s->rc);
        s->rc = NULL;
    }
    stack_stop_one(&s->redis, 0);
    if (rc != 0)
        harness_mark_failed();
    return rc;
}

/* ---- Redis ----------------------------------------------------------------- */

static int stack_redis_connect(struct stack *s)
{
    struct timeval tv = {2, 0};
    struct timeval cmd = {5, 0};
    if (s->rc != NULL && s->rc->err == 0)
        return 0;
    if (s->rc != NULL)
        redisFree(s->rc);
    s->rc = redisConnectWithTimeout("127.0.0.1", s->redis_port, tv);
    if (s->rc == NULL || s->rc->err != 0) {
        fprintf(stderr, "integration: connect to redis port %d: %s\n", s->redis_port,
                s->rc != NULL ? s->rc->errstr : "out of memory");
        if (s->rc != NULL)
            redisFree(s->rc);
        s->rc = NULL;
        return -1;
    }
    redisSetTimeout(s->rc, cmd);
    if (stack_redis_auth(s, s->rc) != 0) {
        redisFree(s->rc);
        s->rc = NULL;
        return -1;
    }
    return 0;
}

int stack_redis_auth(const struct stack *s, redisContext *c)
{
    if (s->settings.redis_admin_pass == NULL)
        return 0;
    redisReply *r = redisCommand(c, "AUTH %s", s->settings.redis_admin_pass);
    int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        fprintf(stderr, "integration: AUTH on port %d: %s\n", s->redis_port,
                r != NULL && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
    if (r != NULL)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

redisReply *stack_redis(struct stack *s, const char *fmt, ...)
{
    redisReply *r = NULL;
    for (int attempt = 0; attempt < 2 && r == NULL; attempt++) {
        va_list ap;
        if (stack_redis_connect(s) != 0)
            return NULL;
        va_start(ap, fmt);
        r = redisvCommand(s->rc, fmt, ap);
        va_end(ap);
        if (r == NULL) {
            redisFree(s->rc);
            s->rc = NULL;
        }
    }
    return r;
}

int stack_redis_each(struct stack *s,
                     int (*fn)(const char *key, const char *type, const redisReply *value,
                               void *arg),
                     void *arg)
{
    static const struct {
        const char *type, *fmt;
    } reads[] = {{"string", "GET %s"},        {"hash", "HGETALL %s"},
                 {"stream", "XRANGE %s - +"}, {"list", "LRANGE %s 0 -1"},
                 {"set", "SMEMBERS %s"},      {"zset", "ZRANGE %s 0 -1 WITHSCORES"}};
    char cursor[32] = "0";
    int rc = 0;
    do {
        redisReply *r = stack_redis(s, "SCAN %s COUNT 1000", cursor);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; rc == 0 && i < r->element[1]->elements; i++) {
            const char *key = r->element[1]->element[i]->str;
            redisReply *t = stack_redis(s, "TYPE %s", key);
            const char *type = t != NULL && t->type == REDIS_REPLY_STATUS ? t->str : "";
            redisReply *v = NULL;
            for (size_t k = 0; k < sizeof(reads) / sizeof(reads[0]) && v == NULL; k++)
                if (strcmp(type, reads[k].type) == 0)
                    v = stack_redis(s, reads[k].fmt, key);
            rc = fn(key, type, v, arg);
            freeReplyObject(v);
            freeReplyObject(t);
        }
        freeReplyObject(r);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    return rc;
}

/* 1 once Redis does not answer a PING within 50 ms: it is asleep. */
static int stack_check_asleep(void *arg)
{
    struct stack *s = arg;
    struct timeval tv = {1, 0}, quick = {0, 50 * 1000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->redis_port, tv);
    int asleep = 0;
    if (c != NULL && c->err == 0) {
        redisSetTimeout(c, quick);
        redisReply *pong = redisCommand(c, "PING");
        asleep = pong == NULL;
        if (pong != NULL)
            freeReplyObject(pong);
    }
    if (c != NULL)
        redisFree(c);
    return asleep;
}

redisContext *stack_redis_sleep(struct stack *s, const char *seconds)
{
    struct timeval tv = {30, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->redis_port, tv);
    int done = 0;
    if (c == NULL || c->err != 0 || stack_redis_auth(s, c) != 0 ||
        redisAppendCommand(c, "DEBUG SLEEP %s", seconds) != REDIS_OK)
        goto fail;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            goto fail;
    if (harness_poll(harness_timeout(1000), 5, stack_check_asleep, s) != 0)
        goto fail;
    return c;
fail:
    fprintf(stderr, "integration: could not put Redis to sleep (DEBUG SLEEP %s)%s%s\n",
            seconds, c != NULL && c->err ? ": " : "",
            c != NULL && c->err ? c->errstr : "");
    if (c != NULL)
        redisFree(c);
    return NULL;
}

long long stack_xlen(struct stack *s, const char *key)
{
    redisReply *r = stack_redis(s, "XLEN %s", key);
    long long n = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r != NULL)
        freeReplyObject(r);
    return n;
}

long long stack_xadded(struct stack *s, const char *key)
{
    long long n = -1;
    redisReply *r = stack_redis(s, "XINFO STREAM %s", key);
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "no such key") != NULL) {
        n = 0;
        goto out;
    }
    if (r->type != REDIS_REPLY_ARRAY)
        goto out;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, "entries-added") == 0 &&
            v->type == REDIS_REPLY_INTEGER)
            n = v->integer;
    }
out:
    freeReplyObject(r);
    return n;
}

long long stack_xpending(struct stack *s, const char *key, const char *group)
{
    redisReply *r = stack_redis(s, "XPENDING %s %s", key, group);
    long long n = -1;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_INTEGER)
        n = r->element[0]->integer;
    if (r != NULL)
        freeReplyObject(r);
    return n;
}

struct stack_drain {
    struct stack *s;
    long long req_len, res_len, req_pending, res_pending;
};

static int stack_check_drained(void *arg)
{
    struct stack_drain *d = arg;
    struct stack *s = d->s;
    d->req_len = stack_xlen(s, s->keys.requests);
    d->res_len = stack_xlen(s, s->keys.results);
    d->req_pending = stack_xpending(s, s->keys.requests, KEYS_GROUP_PROCESSORS);
    d->res_pending = stack_xpending(s, s->keys.results, KEYS_GROUP_HANDLERS);
    return d->req_len == 0 && d->res_len == 0 && d->req_pending == 0 &&
           d->res_pending == 0;
}

int stack_drained(struct stack *s, int timeout_ms, char *why, size_t whylen)
{
    struct stack_drain d = {.s = s};
    if (harness_poll(harness_timeout(timeout_ms), 50, stack_check_drained, &d) == 0)
        return 0;
    snprintf(why, whylen,
             "not drained after %d ms: XLEN %s=%lld %s=%lld, XPENDING %s=%lld %s=%lld",
             harness_timeout(timeout_ms), s->keys.requests, d.req_len, s->keys.results,
             d.res_len, KEYS_GROUP_PROCESSORS, d.req_pending, KEYS_GROUP_HANDLERS,
             d.res_pending);
    return -1;
}

/* ---- the fake upstream ------------------------------------------------------ */

json_t *stack_fake_stats(struct stack *s)
{
    char url[128];
    struct http_response r;
    json_t *j = NULL;
    snprintf(url, sizeof(url), "%s/stats", s->fake_url);
    if (http_request("GET", url, NULL, 0, STACK_HTTP_MS, &r) == 0 && r.status == 200)
        j = http_json(&r);
    else
        fprintf(stderr, "integration: GET %s: HTTP %ld %s\n", url, r.status, r.error);
    http_response_free(&r);
    return j;
}

long long stack_stat(const json_t *stats, const char *name, int status)
{
    char key[16];
    json_t *v;
    if (stats == NULL)
        return -1;
    if (status > 0) {
        snprintf(key, sizeof(key), "%d", status);
        v = json_object_get(json_object_get(stats, "by_status"), key);
    } else {
        v = json_object_get(stats, name);
    }
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

/* ---- the api, as a client sees it ------------------------------------------ */

const char *stack_url(const struct stack *s, const char *path, char *out, size_t len)
{
    snprintf(out, len, "%s%s", s->api_url, path);
    return out;
}

int chat_post(struct stack *s, const char *message, const char *model, double temperature,
              char trace[UUID_LEN + 1])
{
    char url[128];
    struct http_response r = {0};
    json_t *req = json_pack("{s:s}", "message", message);
    json_t *body = NULL;
    char *text = NULL;
    int rc = -1;

    if (req == NULL)
        goto out;
    if (model != NULL)
        json_object_set_new(req, "model", json_string(model));
    if (temperature >= 0)
        json_object_set_new(req, "temperature", json_real(temperature));
    text = json_dumps(req, JSON_COMPACT);
    if (text == NULL)
        goto out;
    if (http_request("POST", stack_url(s, "/chat", url, sizeof(url)), text, strlen(text),
                     STACK_HTTP_MS, &r) != 0) {
        fprintf(stderr, "integration: %s\n", r.error);
        goto out;
    }
    const char *id = NULL;
    if (r.status == 202) {
        body = http_json(&r);
        id = http_json_str(body, "traceId");
    }
    if (id == NULL || strlen(id) != UUID_LEN) {
        fprintf(stderr,
                "integration: POST /chat: HTTP %ld, want 202 with a traceId: %.300s\n",
                r.status, r.body);
        goto out;
    }
    memcpy(trace, id, UUID_LEN + 1);
    rc = 0;
out:
    json_decref(req);
    json_decref(body);
    free(text);
    http_response_free(&r);
    return rc;
}

json_t *chat_get(struct stack *s, const char *trace, long *status)
{
    char path[128], url[256];
    struct http_response r;
    json_t *j = NULL;
    snprintf(path, sizeof(path), "/chat/%s/response", trace);
    *status = 0;
    if (http_request("GET", stack_url(s, path, url, sizeof(url)), NULL, 0, STACK_HTTP_MS,
                     &r) == 0) {
        *status = r.status;
        j = http_json(&r);
    } else {
        fprintf(stderr, "integration: %s\n", r.error);
    }
    http_response_free(&r);
    return j;
}

json_t *chat_wait(struct stack *s, const char *trace, int timeout_ms, long long *done_ms)
{
    long long deadline = harness_now_ms() + harness_timeout(timeout_ms);
    for (;;) {
        long status;
        json_t *j = chat_get(s, trace, &status);
        const char *st = http_json_str(j, "status");
        if (status != 200 || st == NULL) {
            char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
            fprintf(stderr, "integration: GET /chat/%s/response: HTTP %ld %s\n", trace,
                    status, text != NULL ? text : "(no JSON body)");
            free(text);
            json_decref(j);
            return NULL;
        }
        if (strcmp(st, "processing") != 0) {
            if (done_ms != NULL)
                *done_ms = harness_now_ms();
            return j;
        }
        json_decref(j);
        if (harness_now_ms() >= deadline) {
            fprintf(stderr, "integration: trace %s still processing after %d ms\n", trace,
                    harness_timeout(timeout_ms));
            return NULL;
        }
        harness_sleep_ms(20);
    }
}
