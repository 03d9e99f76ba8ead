/* test_pacing.c - never more than the upstream allows: a burst far above a
 * rate-limited upstream's budget, shared by three processors through Redis,
 * ends with every chat completed and almost no 429; one user's burst does not
 * starve another's few chats; and an upstream stricter than the configured
 * budget is followed from its 429s and headers.
 *
 * Groups, each with its own fake upstream limits:
 *   pacing         fake 20 requests a second, UPSTREAM_RPM 1200 (the same)
 *   pacing_tls     the same burst over HTTPS and HTTP/2 (nginx in front of the
 *                  fake, see tlsup.h), as production's upstream is reached
 *   pacing_shared  fake 10 a second, UPSTREAM_RPM 1200 (twice what it allows,
 *                  as when other software shares the key)
 *   adaptive       no limits; one processor whose upstream times out for a while */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"
#include "tlsup.h"

#define PACING_RATE 20 /* requests a second the fake allows (group pacing) */
#define PACING_HTTP_MS 10000
#define PACING_SETTLE_MS 90000

static struct stack pacing_stack, pacing_shared_stack;
static struct proc *pacing_more[2], *pacing_shared_more[2];

static const char *const pacing_fake[] = {"--rpm", "20", "--limit-window-ms", "1000",
                                          NULL};
static const char *const pacing_shared_fake[] = {"--rpm", "10", "--limit-window-ms",
                                                 "1000", NULL};
static const char *const pacing_processor[] = {
    "UPSTREAM_RPM=1200", "UPSTREAM_BURST_MS=1000", "PROCESSOR_CONCURRENCY=256",
    "UPSTREAM_MAX_ATTEMPTS=10", NULL};

/* processor: the processors' settings (pacing_processor, or more). */
static int pacing_start(struct stack *s, const char *name, const char *prefix,
                        const char *const *fake, const char *const *processor,
                        struct proc **more)
{
    struct stack_settings set = {.processor = processor, .fake = fake};
    if (stack_start(s, name, prefix, &set) != 0)
        return -1;
    /* Three processors in all share the budget. */
    more[0] = stack_processor_start(s, "processor-2", NULL);
    more[1] = stack_processor_start(s, "processor-3", NULL);
    return more[0] != NULL && more[1] != NULL ? 0 : -1;
}

static int pacing_stop(struct stack *s, struct proc **more)
{
    proc_free(more[0]);
    proc_free(more[1]);
    more[0] = more[1] = NULL;
    return stack_stop(s);
}

static int pacing_setup(void **state)
{
    (void)state;
    return pacing_start(&pacing_stack, "pacing", "t7:", pacing_fake, pacing_processor,
                        pacing_more);
}

static int pacing_teardown(void **state)
{
    (void)state;
    return pacing_stop(&pacing_stack, pacing_more);
}

static int pacing_shared_setup(void **state)
{
    (void)state;
    return pacing_start(&pacing_shared_stack, "pacing_shared", "t8:", pacing_shared_fake,
                        pacing_processor, pacing_shared_more);
}

static int pacing_shared_teardown(void **state)
{
    (void)state;
    return pacing_stop(&pacing_shared_stack, pacing_shared_more);
}

/* Group pacing_tls: the same three processors and fake, nginx between them. */
static struct stack pacing_tls_stack;
static struct proc *pacing_tls_more[2];
static struct tlsup pacing_tls_up;
static char pacing_tls_url[128], pacing_tls_ca[PATH_MAX + 32];
static const char *pacing_tls_processor[8];

static int pacing_tls_setup(void **state)
{
    char log[PATH_MAX];
    size_t n = 0;
    (void)state;
    if (tlsup_init(&pacing_tls_up, "pacing_tls/pki") != 0)
        return -1;
    for (; pacing_processor[n] != NULL; n++)
        pacing_tls_processor[n] = pacing_processor[n];
    snprintf(pacing_tls_url, sizeof(pacing_tls_url),
             "OPENAI_BASE_URL=https://127.0.0.1:%d/v1", pacing_tls_up.ports[0]);
    snprintf(pacing_tls_ca, sizeof(pacing_tls_ca), "UPSTREAM_CA_FILE=%s",
             pacing_tls_up.ca);
    pacing_tls_processor[n++] = pacing_tls_url;
    pacing_tls_processor[n++] = pacing_tls_ca;
    pacing_tls_processor[n] = NULL;
    /* The processors only dial the upstream for a chat: nginx may come after. */
    if (pacing_start(&pacing_tls_stack, "pacing_tls", "t10:", pacing_fake,
                     pacing_tls_processor, pacing_tls_more) != 0)
        return -1;
    snprintf(log, sizeof(log), "%s/nginx.log", pacing_tls_stack.dir);
    return tlsup_start(&pacing_tls_up, pacing_tls_stack.fake_port, log);
}

static int pacing_tls_teardown(void **state)
{
    (void)state;
    int rc = pacing_stop(&pacing_tls_stack, pacing_tls_more);
    tlsup_stop(&pacing_tls_up);
    return rc;
}

/* ---- posting and waiting ----------------------------------------------------- */

struct pacing_chat {
    char trace[UUID_LEN + 1];
    long long posted_ms, done_ms;
    char status[16];
};

/* POST /chat {"message", "user"}; 0 with the trace id, or -1. */
static int pacing_post(struct stack *s, const char *message, const char *user,
                       struct pacing_chat *c)
{
    char url[128];
    struct http_response r = {0};
    int rc = -1;
    json_t *req = json_pack("{s:s, s:s}", "message", message, "user", user);
    char *text = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    c->posted_ms = harness_now_ms();
    if (text != NULL &&
        http_request("POST", stack_url(s, "/chat", url, sizeof(url)), text, strlen(text),
                     PACING_HTTP_MS, &r) == 0 &&
        r.status == 202) {
        json_t *j = http_json(&r);
        const char *id = http_json_str(j, "traceId");
        if (id != NULL && strlen(id) == UUID_LEN) {
            memcpy(c->trace, id, UUID_LEN + 1);
            rc = 0;
        }
        json_decref(j);
    }
    free(text);
    http_response_free(&r);
    return rc;
}

struct pacing_batch {
    struct stack *s;
    const char *user;
    struct pacing_chat *chats;
    size_t n;
    int failed_posts;
};

static void *pacing_post_thread(void *arg)
{
    struct pacing_batch *b = arg;
    char msg[96];
    for (size_t i = 0; i < b->n; i++) {
        snprintf(msg, sizeof(msg), "pacing %s #%05zu", b->user, i);
        if (pacing_post(b->s, msg, b->user, &b->chats[i]) != 0)
            b->failed_posts++;
    }
    return NULL;
}

/* GETs every chat until all are final or timeout_ms pass; the time each was first
 * seen final goes into done_ms. Returns how many are final. */
static size_t pacing_settle(struct stack *s, struct pacing_chat *chats, size_t n,
                            int timeout_ms)
{
    long long deadline = harness_now_ms() + harness_timeout(timeout_ms);
    size_t done = 0;
    while (done < n && harness_now_ms() < deadline) {
        done = 0;
        for (size_t i = 0; i < n; i++) {
            if (chats[i].done_ms > 0) {
                done++;
                continue;
            }
            long http = 0;
            json_t *j = chat_get(s, chats[i].trace, &http);
            const char *st = http_json_str(j, "status");
            if (http == 200 && st != NULL && strcmp(st, "processing") != 0) {
                chats[i].done_ms = harness_now_ms();
                snprintf(chats[i].status, sizeof(chats[i].status), "%s", st);
                done++;
            }
            json_decref(j);
        }
        if (done < n)
            harness_sleep_ms(50);
    }
    return done;
}

static size_t pacing_count(const struct pacing_chat *chats, size_t n, const char *status)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += strcmp(chats[i].status, status) == 0;
    return k;
}

static long long pacing_last_done(const struct pacing_chat *chats, size_t n)
{
    long long last = 0;
    for (size_t i = 0; i < n; i++)
        if (chats[i].done_ms > last)
            last = chats[i].done_ms;
    return last;
}

struct pacing_room_wait {
    struct stack *s;
};

/* 1 once chats wait in the wait room: the rooms set is not empty. */
static int pacing_check_room(void *arg)
{
    struct pacing_room_wait *w = arg;
    redisReply *r = stack_redis(w->s, "SCARD %srooms", w->s->prefix);
    int waiting = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    return waiting;
}

/* ---- the tests --------------------------------------------------------------- */

/* Prints how many TCP connections carried the n calls nginx logged since
 * offset, and checks they all came over HTTP/2. */
static void pacing_connections(const struct tlsup *up, long offset, long long n)
{
    struct tlsup_spread sp;
    struct tlsup_call *calls = calloc((size_t)n + 1, sizeof(*calls));
    CHECK(calls != NULL, "out of memory");
    int logged = tlsup_calls_wait(up, offset, (int)n, calls, (int)n + 1);
    CHECK(logged >= 0 && tlsup_spread(calls, logged < n ? logged : (int)n, &sp) == 0,
          "cannot read %s", up->access_log);
    free(calls);
    print_message("pacing burst over TLS: %d calls (up to %d in flight at once, %d over "
                  "HTTP/2) on %d TCP connection%s (%s)\n",
                  sp.calls, sp.in_flight, sp.http2, sp.conns, sp.conns == 1 ? "" : "s",
                  sp.text);
    CHECK(logged == n, "nginx logged %d calls, the fake counted %lld", logged, n);
    CHECK(sp.http2 == sp.calls, "%d of %d calls came over HTTP/2", sp.http2, sp.calls);
}

/* A burst of ten seconds' worth: paced at the upstream's rate, no 429 storm, and
 * the chats that may not start yet wait in Redis, not in the processors' slots.
 * up: the nginx in front of the fake, or NULL when the processors call the fake
 * directly; then it also tells how many connections carried the calls. */
static void pacing_burst(struct stack *s, const struct tlsup *up)
{
    enum { N = 10 * PACING_RATE };
    struct pacing_chat *chats = calloc(N, sizeof(*chats));
    CHECK(chats != NULL, "out of memory");
    json_t *st = stack_fake_stats(s);
    long long req0 = stack_stat(st, "requests", 0),
              lim0 = stack_stat(st, "rate_limited", 0);
    json_decref(st);
    long offset = up != NULL ? tlsup_log_offset(up) : 0;

    struct pacing_batch b = {s, "burst", chats, N, 0};
    pthread_t th;
    long long t0 = harness_now_ms();
    CHECK(pthread_create(&th, NULL, pacing_post_thread, &b) == 0, "no thread");
    struct pacing_room_wait w = {s};
    int parked = harness_poll(harness_timeout(5000), 10, pacing_check_room, &w) == 0;
    pthread_join(th, NULL);
    CHECK(b.failed_posts == 0, "%d POSTs not accepted", b.failed_posts);
    size_t done = pacing_settle(s, chats, N, PACING_SETTLE_MS);
    long long took = pacing_last_done(chats, N) - t0;
    st = stack_fake_stats(s);
    long long calls = stack_stat(st, "requests", 0) - req0;
    long long limited = stack_stat(st, "rate_limited", 0) - lim0;
    json_decref(st);
    double rate = took > 0 ? N * 1000.0 / (double)took : 0;
    print_message("pacing burst: %d chats, %zu completed, %lld upstream calls of which "
                  "%lld 429 (%.1f %%), %.1f chats/s for an upstream allowing %d/s "
                  "(%.2f x)\n",
                  N, pacing_count(chats, N, "completed"), calls, limited,
                  calls > 0 ? 100.0 * (double)limited / (double)calls : 0, rate,
                  PACING_RATE, rate / PACING_RATE);
    CHECK(done == N && pacing_count(chats, N, "completed") == N,
          "%zu of %d completed (%zu final)", pacing_count(chats, N, "completed"), N,
          done);
    CHECK(parked, "no chat ever waited in the wait room");
    CHECK(limited * 50 <= calls, "%lld of %lld upstream answers were 429 (want < 2 %%)",
          limited, calls);
    CHECK(rate >= 0.9 * PACING_RATE && rate <= 1.5 * PACING_RATE,
          "%.1f chats/s, want within 10 %% of the upstream's %d/s (or the first "
          "second's burst above it)",
          rate, PACING_RATE);
    if (up != NULL)
        pacing_connections(up, offset, calls);
    free(chats);
}

static void test_pacing_burst(void **state)
{
    (void)state;
    pacing_burst(&pacing_stack, NULL);
}

static void test_pacing_tls_burst(void **state)
{
    (void)state;
    pacing_burst(&pacing_tls_stack, &pacing_tls_up);
}

/* One user's burst, then another's few chats: the few take turns with the burst
 * instead of waiting behind it. */
static void test_pacing_fair_share(void **state)
{
    (void)state;
    struct stack *s = &pacing_stack;
    enum { BULK = 10 * PACING_RATE, FEW = 10 };
    struct pacing_chat *bulk = calloc(BULK, sizeof(*bulk));
    struct pacing_chat few[FEW];
    memset(few, 0, sizeof(few));
    CHECK(bulk != NULL, "out of memory");

    struct pacing_batch bb = {s, "bulk", bulk, BULK, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, pacing_post_thread, &bb) == 0, "no thread");
    pthread_join(th, NULL);
    struct pacing_room_wait w = {s};
    CHECK(harness_poll(harness_timeout(5000), 10, pacing_check_room, &w) == 0,
          "the bulk user's chats never waited");
    struct pacing_batch fb = {s, "few", few, FEW, 0};
    long long t0 = harness_now_ms();
    pacing_post_thread(&fb);
    CHECK(bb.failed_posts == 0 && fb.failed_posts == 0, "POSTs not accepted");
    size_t done_few = pacing_settle(s, few, FEW, PACING_SETTLE_MS);
    long long few_ms = pacing_last_done(few, FEW) - t0;
    size_t done_bulk = pacing_settle(s, bulk, BULK, PACING_SETTLE_MS);
    long long bulk_ms = pacing_last_done(bulk, BULK) - t0;
    print_message("fair share: %d chats of user 'few' done %lld ms after they were "
                  "posted, behind %d of user 'bulk' (last done after %lld ms)\n",
                  FEW, few_ms, BULK, bulk_ms);
    CHECK(done_few == FEW && pacing_count(few, FEW, "completed") == FEW,
          "%zu of %d 'few' chats completed", pacing_count(few, FEW, "completed"), FEW);
    CHECK(done_bulk == BULK && pacing_count(bulk, BULK, "completed") == BULK,
          "%zu of %d 'bulk' chats completed", pacing_count(bulk, BULK, "completed"),
          BULK);
    /* Alone, ten chats take half a second at 20/s; sharing with one other user,
     * about a second. Waiting behind the bulk would take about ten. */
    CHECK(few_ms <= harness_timeout(3000),
          "the 'few' user's chats took %lld ms: they waited behind the bulk", few_ms);
    free(bulk);
}

/* The key allows half what UPSTREAM_RPM says (other software uses it too): the
 * 429s and their Retry-After pause every processor, and every chat completes. */
static void test_pacing_follows_the_upstream(void **state)
{
    (void)state;
    struct stack *s = &pacing_shared_stack;
    enum { N = 100 };
    struct pacing_chat *chats = calloc(N, sizeof(*chats));
    CHECK(chats != NULL, "out of memory");
    struct pacing_batch b = {s, "shared", chats, N, 0};
    long long t0 = harness_now_ms();
    pacing_post_thread(&b);
    CHECK(b.failed_posts == 0, "%d POSTs not accepted", b.failed_posts);
    size_t done = pacing_settle(s, chats, N, PACING_SETTLE_MS);
    long long took = pacing_last_done(chats, N) - t0;
    json_t *st = stack_fake_stats(s);
    long long calls = stack_stat(st, "requests", 0);
    long long limited = stack_stat(st, "rate_limited", 0);
    json_decref(st);
    print_message("shared key: %d chats in %lld ms, %lld upstream calls of which %lld "
                  "429 (%.1f %%)\n",
                  N, took, calls, limited,
                  calls > 0 ? 100.0 * (double)limited / (double)calls : 0);
    CHECK(done == N && pacing_count(chats, N, "completed") == N, "%zu of %d completed",
          pacing_count(chats, N, "completed"), N);
    /* Without the pause each 429 would be retried on its own, about as many 429s
     * as chats again and again; followed, a few per second at most. */
    CHECK(limited * 4 <= calls, "%lld of %lld upstream answers were 429", limited, calls);
    free(chats);
}

/* ---- adaptive concurrency ---------------------------------------------------- */

static struct stack adaptive_stack;

#define ADAPTIVE_SLOTS 40
static const char *const adaptive_processor[] = {
    "PROCESSOR_CONCURRENCY=40", "UPSTREAM_TIMEOUT_MS=500", "RETRY_BASE_MS=50",
    "RETRY_MAX_MS=100",         "UPSTREAM_MAX_ATTEMPTS=3", NULL};

static int adaptive_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.processor = adaptive_processor};
    return stack_start(&adaptive_stack, "adaptive", "t9:", &set);
}

static int adaptive_teardown(void **state)
{
    (void)state;
    return stack_stop(&adaptive_stack);
}

static int adaptive_check_idle(void *arg)
{
    json_t *st = stack_fake_stats(arg);
    long long n = stack_stat(st, "in_flight", 0);
    json_decref(st);
    return n == 0;
}

/* Posts n chats with message prefix and waits for all of them; 0 or -1. */
static int adaptive_round(struct stack *s, const char *prefix, size_t n)
{
    char msg[96];
    struct pacing_chat *chats = calloc(n, sizeof(*chats));
    int rc = -1;
    if (chats == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        snprintf(msg, sizeof(msg), "%s #%03zu", prefix, i);
        if (pacing_post(s, msg, "adaptive", &chats[i]) != 0)
            goto out;
    }
    rc = pacing_settle(s, chats, n, PACING_SETTLE_MS) == n ? 0 : -1;
out:
    free(chats);
    return rc;
}

/* The upstream times out on everything for a while: the processor keeps fewer
 * calls in flight afterwards than its PROCESSOR_CONCURRENCY. */
static void test_adaptive_concurrency(void **state)
{
    (void)state;
    struct stack *s = &adaptive_stack;
    /* Slower than UPSTREAM_TIMEOUT_MS: every attempt times out, for about 1.5 s. */
    CHECK(adaptive_round(s, "[[fake latency=2000]] slow", ADAPTIVE_SLOTS) == 0,
          "the timed-out chats did not all end");
    CHECK(harness_poll(harness_timeout(10000), 20, adaptive_check_idle, s) == 0,
          "the fake still holds calls");
    struct http_response hr = {0};
    char url[128];
    snprintf(url, sizeof(url), "%s/stats/reset", s->fake_url);
    CHECK(http_request("POST", url, "", 0, PACING_HTTP_MS, &hr) == 0, "stats reset");
    http_response_free(&hr);
    /* Now answers that are fine but take a while: how many at once? */
    CHECK(adaptive_round(s, "[[fake latency=1000]] fine", ADAPTIVE_SLOTS) == 0,
          "the later chats did not all complete");
    json_t *st = stack_fake_stats(s);
    long long most = stack_stat(st, "max_in_flight", 0);
    json_decref(st);
    print_message("adaptive concurrency: after a spell of timeouts, %lld calls at most "
                  "in flight of PROCESSOR_CONCURRENCY %d\n",
                  most, ADAPTIVE_SLOTS);
    CHECK(most >= 1 && most <= ADAPTIVE_SLOTS * 7 / 10,
          "%lld calls in flight at once after the upstream timed out, want 1 to %d", most,
          ADAPTIVE_SLOTS * 7 / 10);
}

static const struct CMUnitTest adaptive_tests[] = {
    cmocka_unit_test(test_adaptive_concurrency),
};

const struct suite_group suite_adaptive = {
    "adaptive", adaptive_tests, sizeof(adaptive_tests) / sizeof(adaptive_tests[0]),
    adaptive_setup, adaptive_teardown};

static const struct CMUnitTest pacing_tests[] = {
    cmocka_unit_test(test_pacing_burst),
    cmocka_unit_test(test_pacing_fair_share),
};

static const struct CMUnitTest pacing_tls_tests[] = {
    cmocka_unit_test(test_pacing_tls_burst),
};

static const struct CMUnitTest pacing_shared_tests[] = {
    cmocka_unit_test(test_pacing_follows_the_upstream),
};

const struct suite_group suite_pacing = {"pacing", pacing_tests,
                                         sizeof(pacing_tests) / sizeof(pacing_tests[0]),
                                         pacing_setup, pacing_teardown};

const struct suite_group suite_pacing_shared = {
    "pacing_shared", pacing_shared_tests,
    sizeof(pacing_shared_tests) / sizeof(pacing_shared_tests[0]), pacing_shared_setup,
    pacing_shared_teardown};

const struct suite_group suite_pacing_tls = {"pacing_tls", pacing_tls_tests,
                                             sizeof(pacing_tls_tests) /
                                                 sizeof(pacing_tls_tests[0]),
                                             pacing_tls_setup, pacing_tls_teardown};
