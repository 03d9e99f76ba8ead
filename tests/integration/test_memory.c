/* test_memory.c - memory stays bounded with large answers, as an operator sees it
 * in /proc/<pid>/status and in Redis:
 *   - an answer over MAX_COMPLETION_BYTES ends failed with completion_too_large,
 *     the processor's peak with 40 of them at once stays within a bound, and
 *     Redis keeps no large value;
 *   - after 64 parallel GETs of a trace holding a 2 MiB completion, the api's
 *     resident memory comes back near its idle figure (glibc's malloc kept
 *     hundreds of MiB; AddressSanitizer's allocator does not, so under it this
 *     checks only that nothing else holds on).
 * The bounds are not checked under CHATQ_WRAP (valgrind's figures are its own). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define MEM_CHAT_MS 60000
#define MEM_MIB (1024LL * 1024)

/* ---- reading /proc ------------------------------------------------------------- */

/* The "name:  N kB" line of /proc/<pid>/status, in bytes; -1 if unreadable. */
static long long mem_status(const struct proc *p, const char *name)
{
    char path[64], line[256];
    long long v = -1;
    size_t n = strlen(name);
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)p->pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, name, n) == 0 && line[n] == ':') {
            v = strtoll(line + n + 1, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

static int mem_wrapped(void)
{
    const char *w = getenv("CHATQ_WRAP");
    return w != NULL && w[0] != '\0';
}

/* The largest string held anywhere in a Redis value. */
static size_t mem_reply_largest(const redisReply *r)
{
    size_t most = 0;
    if (r == NULL)
        return 0;
    if (r->str != NULL)
        most = r->len;
    for (size_t i = 0; i < r->elements; i++) {
        size_t n = mem_reply_largest(r->element[i]);
        if (n > most)
            most = n;
    }
    return most;
}

struct mem_largest {
    size_t bytes;
    char key[256];
};

static int mem_check_key(const char *key, const char *type, const redisReply *value,
                         void *arg)
{
    (void)type;
    struct mem_largest *l = arg;
    size_t n = mem_reply_largest(value);
    if (n > l->bytes) {
        l->bytes = n;
        snprintf(l->key, sizeof(l->key), "%s", key);
    }
    return 0;
}

/* AddressSanitizer keeps up to 256 MB of freed memory in quarantine, which would
 * read as memory kept: "ASAN_OPTIONS=<the caller's>:quarantine_size_mb=0" into
 * out, for the process measured. Harmless without AddressSanitizer. */
static void mem_asan_env(char *out, size_t len)
{
    const char *asan = getenv("ASAN_OPTIONS");
    snprintf(out, len, "ASAN_OPTIONS=%s%squarantine_size_mb=0", asan != NULL ? asan : "",
             asan != NULL && asan[0] ? ":" : "");
}

/* ---- the completion cap -------------------------------------------------------- */

#define MEM_CAP 1048576 /* MAX_COMPLETION_BYTES's default, left as it is */
#define MEM_CAP_CHATS 40
/* Four times the cap: the old 8 MiB limit on the whole answer let it through. */
#define MEM_CAP_HUGE "4194304"
/* What 40 capped answers may cost the processor at its peak, over its idle
 * figure. Reading up to the cap takes about 1 MiB each; buffering the whole
 * answers took more than 4 MiB each. */
#define MEM_CAP_PEAK (96 * MEM_MIB)
/* No Redis value of a failed chat comes near the answer's size. */
#define MEM_REDIS_MAX (64 * 1024)

static struct stack cap_stack;
static char cap_asan_env[512];
/* A long timeout: on a loaded machine 40 answers at once are slow to come, and
 * an attempt timed out would be a second request. */
static const char *const cap_processor_env[] = {
    "PROCESSOR_CONCURRENCY=64", "UPSTREAM_TIMEOUT_MS=60000", cap_asan_env, NULL};

static int cap_setup(void **state)
{
    (void)state;
    mem_asan_env(cap_asan_env, sizeof(cap_asan_env));
    struct stack_settings set = {.processor = cap_processor_env};
    return stack_start(&cap_stack, "memory_cap", "tm:", &set);
}

static int cap_teardown(void **state)
{
    (void)state;
    return stack_stop(&cap_stack);
}

static void test_large_answer_over_cap_fails(void **state)
{
    (void)state;
    struct stack *s = &cap_stack;
    char traces[MEM_CAP_CHATS][UUID_LEN + 1], msg[128];

    long long idle = mem_status(s->processor, "VmRSS");
    CHECK(idle > 0, "cannot read the processor's VmRSS");
    char url[128];
    struct http_response reset;
    snprintf(url, sizeof(url), "%s/stats/reset", s->fake_url);
    int rc = http_request("POST", url, NULL, 0, 5000, &reset);
    CHECK(rc == 0 && reset.status == 200, "POST /stats/reset: %ld %s", reset.status,
          reset.error);
    http_response_free(&reset);
    for (int i = 0; i < MEM_CAP_CHATS; i++) {
        snprintf(msg, sizeof(msg), "[[fake huge=" MEM_CAP_HUGE "]] tell me everything %d",
                 i);
        CHECK(chat_post(s, msg, NULL, -1, traces[i]) == 0, "POST %d failed", i);
    }
    for (int i = 0; i < MEM_CAP_CHATS; i++) {
        json_t *done = chat_wait(s, traces[i], MEM_CHAT_MS, NULL);
        CHECK(done != NULL, "chat %d did not end", i);
        const char *status = http_json_str(done, "status");
        const char *code = http_error_code(done);
        const char *message = http_error_message(done);
        CHECK(status != NULL && strcmp(status, "failed") == 0 && code != NULL &&
                  strcmp(code, "completion_too_large") == 0 && message != NULL &&
                  strstr(message, "1048576") != NULL,
              "chat %d ended %s (%s: %s), want failed with completion_too_large "
              "naming the cap",
              i, STR(status), STR(code), STR(message));
        json_decref(done);
    }
    long long peak = mem_status(s->processor, "VmHWM");
    fprintf(stderr,
            "memory: processor idle %lld MiB, peak %lld MiB with %d answers of "
            "%s bytes\n",
            idle / MEM_MIB, peak / MEM_MIB, MEM_CAP_CHATS, MEM_CAP_HUGE);
    if (!mem_wrapped())
        CHECK(peak > 0 && peak - idle < MEM_CAP_PEAK,
              "the processor's peak grew by %lld MiB over its idle %lld MiB, want under "
              "%lld",
              (peak - idle) / MEM_MIB, idle / MEM_MIB, MEM_CAP_PEAK / MEM_MIB);

    /* A final failure: one upstream request each, never a retry. */
    json_t *stats = stack_fake_stats(s);
    long long requests = stack_stat(stats, "requests", 0);
    json_decref(stats);
    CHECK(requests == MEM_CAP_CHATS, "the fake saw %lld requests, want %d", requests,
          MEM_CAP_CHATS);

    struct mem_largest l = {0};
    CHECK(stack_redis_each(s, mem_check_key, &l) == 0, "cannot walk Redis");
    CHECK(l.bytes < MEM_REDIS_MAX, "Redis holds a value of %zu bytes in %s", l.bytes,
          l.key);
}

/* Just under the cap is an answer like any other. */
static void test_large_answer_under_cap_completes(void **state)
{
    (void)state;
    struct stack *s = &cap_stack;
    char trace[UUID_LEN + 1];
    char msg[64];
    snprintf(msg, sizeof(msg), "[[fake huge=%d]] almost too much", MEM_CAP);
    CHECK(chat_post(s, msg, NULL, -1, trace) == 0, "POST failed");
    json_t *done = chat_wait(s, trace, MEM_CHAT_MS, NULL);
    CHECK(done != NULL, "the chat did not end");
    const char *status = http_json_str(done, "status");
    const char *response = http_json_str(done, "response");
    CHECK(status != NULL && strcmp(status, "completed") == 0 && response != NULL &&
              strlen(response) == MEM_CAP,
          "a %d-byte answer ended %s (%s) with %zu bytes, want completed whole", MEM_CAP,
          STR(status), STR(http_error_code(done)), response ? strlen(response) : 0);
    json_decref(done);
}

/* Hostile upstreams: a 200 whose content string never ends, and one of random
 * bytes without end, both as fast as the processor reads. Each chat fails at
 * once (no retry: it would be the same again), with one request, and the
 * processor's peak stays bounded as for large answers. */
static void test_large_answer_endless_is_cut_off(void **state)
{
    (void)state;
    struct stack *s = &cap_stack;
    static const struct {
        const char *message;
        const char *codes; /* acceptable codes, "|"-separated */
    } cases[] = {
        {"[[fake endless]] talk forever", "|completion_too_large|"},
        /* Random bytes: text or not depends on the quotes among them. */
        {"[[fake endless=garbage]] noise forever",
         "|completion_too_large|upstream_response_too_large|"},
    };
    enum { N = 8 };
    char traces[2][N][UUID_LEN + 1], needle[64];

    long long idle = mem_status(s->processor, "VmRSS");
    json_t *stats = stack_fake_stats(s);
    long long before = stack_stat(stats, "requests", 0);
    json_decref(stats);
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < N; i++)
            CHECK(chat_post(s, cases[c].message, NULL, -1, traces[c][i]) == 0,
                  "POST failed");
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < N; i++) {
            json_t *done = chat_wait(s, traces[c][i], MEM_CHAT_MS, NULL);
            CHECK(done != NULL, "\"%s\" did not end", cases[c].message);
            const char *code = http_error_code(done);
            snprintf(needle, sizeof(needle), "|%s|", STR(code));
            int ok = strcmp(STR(http_json_str(done, "status")), "failed") == 0 &&
                     strstr(cases[c].codes, needle) != NULL;
            json_decref(done);
            CHECK(ok, "\"%s\" ended with %s, want failed with one of %s",
                  cases[c].message, STR(code), cases[c].codes);
        }
    stats = stack_fake_stats(s);
    long long requests = stack_stat(stats, "requests", 0) - before;
    json_decref(stats);
    CHECK(requests == 2 * N, "the fake saw %lld requests, want %d", requests, 2 * N);
    long long rss = mem_status(s->processor, "VmRSS");
    fprintf(stderr,
            "memory: processor at %lld MiB after %d endless answers (idle %lld)\n",
            rss / MEM_MIB, 2 * N, idle / MEM_MIB);
    if (!mem_wrapped())
        CHECK(rss - idle < MEM_CAP_PEAK, "the processor grew by %lld MiB",
              (rss - idle) / MEM_MIB);
}

static const struct CMUnitTest cap_tests[] = {
    /* First: the peak and the walk of Redis see only the answers over the cap. */
    cmocka_unit_test(test_large_answer_over_cap_fails),
    cmocka_unit_test(test_large_answer_under_cap_completes),
    cmocka_unit_test(test_large_answer_endless_is_cut_off),
};

const struct suite_group suite_memory_cap = {"memory_cap", cap_tests,
                                             sizeof(cap_tests) / sizeof(cap_tests[0]),
                                             cap_setup, cap_teardown};

/* ---- the api after large answers ----------------------------------------------- */

#define MEM_API_HUGE "2097152"
#define MEM_API_GETS 64
/* How far above its idle figure the api may stay once the GETs are answered. */
#define MEM_API_SLACK (64 * MEM_MIB)
#define MEM_API_SETTLE_MS 10000
/* 64 answers of 2 MiB through one Redis take a while on a loaded machine. */
#define MEM_GET_MS 120000

static struct stack api_stack;
static const char *const api_processor_env[] = {
    "MAX_COMPLETION_BYTES=16777216", "UPSTREAM_MAX_RESPONSE_BYTES=33554432", NULL};
static char api_asan_env[512];
static const char *api_api_env[] = {"REDIS_TIMEOUT_MS=60000", api_asan_env, NULL};

static int api_setup(void **state)
{
    (void)state;
    mem_asan_env(api_asan_env, sizeof(api_asan_env));
    struct stack_settings set = {.processor = api_processor_env, .api = api_api_env};
    return stack_start(&api_stack, "memory_api", "tn:", &set);
}

static int api_teardown(void **state)
{
    (void)state;
    return stack_stop(&api_stack);
}

struct api_get {
    const char *url;
    long status;
    size_t len;
};

/* Counts the body without keeping it: 64 copies of it are not what is tested. */
static size_t api_count(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    struct api_get *g = arg;
    g->len += size * n;
    return size * n;
}

static void *api_get_one(void *arg)
{
    struct api_get *g = arg;
    CURL *c = curl_easy_init();
    if (c == NULL)
        return NULL;
    curl_easy_setopt(c, CURLOPT_URL, g->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)harness_timeout(MEM_GET_MS));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, api_count);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, g);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &g->status);
    curl_easy_cleanup(c);
    return NULL;
}

/* 1 once the api's VmRSS is back within the slack of its idle figure. */
struct api_settle {
    struct stack *s;
    long long idle, rss;
};

static int api_check_settled(void *arg)
{
    struct api_settle *a = arg;
    a->rss = mem_status(a->s->api, "VmRSS");
    return a->rss > 0 && a->rss - a->idle < MEM_API_SLACK;
}

static void test_large_answer_api_memory_returns(void **state)
{
    (void)state;
    struct stack *s = &api_stack;
    char trace[UUID_LEN + 1], path[128], url[256];

    CHECK(chat_post(s, "[[fake huge=" MEM_API_HUGE "]] a long story", NULL, -1, trace) ==
              0,
          "POST failed");
    /* Read the figure before any large answer went out. */
    long long idle = mem_status(s->api, "VmRSS");
    CHECK(idle > 0, "cannot read the api's VmRSS");
    long long deadline = harness_now_ms() + harness_timeout(MEM_CHAT_MS);
    redisReply *r = NULL;
    char key[KEYS_MAX + UUID_LEN + 1];
    keys_trace(&s->keys, trace, key, sizeof(key));
    /* Wait in Redis, not through the api, so the api sends nothing large before
     * the burst. */
    for (;;) {
        r = stack_redis(s, "HGET %s status", key);
        int done = r != NULL && r->type == REDIS_REPLY_STRING &&
                   strcmp(r->str, "processing") != 0;
        freeReplyObject(r);
        if (done)
            break;
        CHECK(harness_now_ms() < deadline, "the large chat did not end");
        harness_sleep_ms(20);
    }

    snprintf(path, sizeof(path), "/chat/%s/response", trace);
    stack_url(s, path, url, sizeof(url));
    pthread_t threads[MEM_API_GETS];
    struct api_get gets[MEM_API_GETS];
    for (int i = 0; i < MEM_API_GETS; i++) {
        gets[i] = (struct api_get){.url = url};
        CHECK(pthread_create(&threads[i], NULL, api_get_one, &gets[i]) == 0,
              "pthread_create failed");
    }
    for (int i = 0; i < MEM_API_GETS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < MEM_API_GETS; i++)
        CHECK(gets[i].status == 200 && gets[i].len > 2097152,
              "GET %d answered %ld with %zu bytes, want 200 with the whole completion", i,
              gets[i].status, gets[i].len);

    struct api_settle a = {.s = s, .idle = idle};
    int settled = harness_poll(MEM_API_SETTLE_MS, 100, api_check_settled, &a) == 0;
    long long peak = mem_status(s->api, "VmHWM");
    fprintf(stderr,
            "memory: api idle %lld MiB, peak %lld MiB, after %lld MiB (%d GETs of %s "
            "bytes)\n",
            idle / MEM_MIB, peak / MEM_MIB, a.rss / MEM_MIB, MEM_API_GETS, MEM_API_HUGE);
    if (!mem_wrapped())
        CHECK(settled == 1,
              "the api stayed at %lld MiB after the GETs, want within %lld MiB of its "
              "idle %lld MiB",
              a.rss / MEM_MIB, MEM_API_SLACK / MEM_MIB, idle / MEM_MIB);
}

static const struct CMUnitTest api_tests[] = {
    cmocka_unit_test(test_large_answer_api_memory_returns),
};

const struct suite_group suite_memory_api = {"memory_api", api_tests,
                                             sizeof(api_tests) / sizeof(api_tests[0]),
                                             api_setup, api_teardown};
