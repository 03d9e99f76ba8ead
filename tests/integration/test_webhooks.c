/* test_webhooks.c - webhooks as a receiver sees them: a real receiver (a small
 * Python HTTP server, tests/integration/webhook_receiver.py, verifying every
 * signature with the README's own verify()) called by chatq-webhook when chats
 * finish. Signed events for completed and failed chats; retries after about 1, 2
 * and 4 s until the 4th attempt succeeds; 410 stops; the last failed attempt ends
 * in the dead-letter stream; a private address is refused at submit time (400)
 * and at delivery time; SIGTERM lets deliveries in flight finish within the
 * grace and leaves the rest pending; a sender SIGKILLed mid-delivery loses
 * nothing, and sends again only with the same webhook-id; the operator's default
 * WEBHOOK_URL, which the OpenAI front's Responses get too, as OpenAI's own
 * response.* events. */
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

/* A whsec_ secret as Standard Webhooks writes them (24 bytes, base64). */
#define WH_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define WH_MAX_ATTEMPTS 4
#define WH_CLAIM_IDLE_MS 6000
#define WH_DELIVER_MS 20000
#define WH_RETRY_MS 40000
#define WH_KILL_MS 60000
#define WH_CHATS_KILLED 4

static struct stack wh_stack;
static struct proc *wh_receiver;
static char wh_log[PATH_MAX];
static char wh_base[64]; /* http://127.0.0.1:P */

static const char *const wh_api_env[] = {"WEBHOOK_ALLOW=127.0.0.1", NULL};
static const char *const wh_sender_env[] = {"WEBHOOK_SECRET=" WH_SECRET,
                                            "WEBHOOK_ALLOW=127.0.0.1",
                                            "WEBHOOK_MAX_ATTEMPTS=4",
                                            "WEBHOOK_RETRY_BASE_MS=1000",
                                            "WEBHOOK_TIMEOUT_MS=4000",
                                            "CLAIM_IDLE_MS=6000",
                                            NULL};

struct wh_port {
    const char *path;
    int port;
};

static int wh_check_port(void *arg)
{
    struct wh_port *p = arg;
    FILE *f = fopen(p->path, "r");
    if (f == NULL)
        return proc_alive(wh_receiver) ? 0 : -1;
    int ok = fscanf(f, "%d", &p->port) == 1;
    fclose(f);
    return ok ? 1 : 0;
}

static int wh_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.api = wh_api_env};
    struct stack *s = &wh_stack;
    char portfile[PATH_MAX], rlog[PATH_MAX];
    if (stack_start(s, "webhooks", "twh:", &set) != 0)
        return -1;
    snprintf(portfile, sizeof(portfile), "%s/receiver.port", s->dir);
    snprintf(wh_log, sizeof(wh_log), "%s/receiver.jsonl", s->dir);
    snprintf(rlog, sizeof(rlog), "%s/receiver.log", s->dir);
    char *argv[] = {"python3",   "tests/integration/webhook_receiver.py",
                    "README.md", WH_SECRET,
                    portfile,    wh_log,
                    NULL};
    wh_receiver = proc_start("receiver", rlog, argv, NULL, 0);
    struct wh_port p = {.path = portfile};
    if (wh_receiver == NULL ||
        harness_poll(harness_timeout(10000), 20, wh_check_port, &p) != 0) {
        fprintf(stderr, "integration: the webhook receiver did not start; see %s\n",
                rlog);
        return -1;
    }
    snprintf(wh_base, sizeof(wh_base), "http://127.0.0.1:%d", p.port);
    s->webhook = stack_webhook_start(s, "webhook", wh_sender_env);
    return s->webhook != NULL ? 0 : -1;
}

static int wh_teardown(void **state)
{
    (void)state;
    proc_free(wh_receiver); /* SIGTERM ends a Python http.server */
    wh_receiver = NULL;
    return stack_stop(&wh_stack);
}

/* POST /chat {"message", "webhook"} (webhook omitted when NULL). Returns the HTTP
 * status; the body (new, or NULL) in *body; the traceId, on 202, in trace. */
static long wh_post(const char *message, const char *webhook, char trace[UUID_LEN + 1],
                    json_t **body)
{
    char url[128];
    struct http_response r = {0};
    json_t *req = json_pack("{s:s}", "message", message);
    if (webhook != NULL)
        json_object_set_new(req, "webhook", json_string(webhook));
    char *text = json_dumps(req, JSON_COMPACT);
    long status = 0;
    *body = NULL;
    trace[0] = '\0';
    if (text != NULL &&
        http_request("POST", stack_url(&wh_stack, "/chat", url, sizeof(url)), text,
                     strlen(text), 10000, &r) == 0) {
        status = r.status;
        *body = http_json(&r);
        const char *id = http_json_str(*body, "traceId");
        if (status == 202 && id != NULL && strlen(id) == UUID_LEN)
            memcpy(trace, id, UUID_LEN + 1);
    }
    http_response_free(&r);
    json_decref(req);
    free(text);
    return status;
}

/* Posts a chat whose webhook is the receiver's path; fails the test unless 202. */
static void wh_post_ok(const char *message, const char *path, char trace[UUID_LEN + 1])
{
    char hook[160];
    json_t *body = NULL;
    snprintf(hook, sizeof(hook), "%s%s", wh_base, path);
    long status = wh_post(message, hook, trace, &body);
    json_decref(body);
    CHECK(status == 202 && trace[0] != '\0', "POST /chat with webhook %s: HTTP %ld", hook,
          status);
}

/* The receiver's log lines for trace in phase ("start", "end"), oldest first: a new
 * array. */
static json_t *wh_lines(const char *trace, const char *phase)
{
    json_t *all = json_array();
    FILE *f = fopen(wh_log, "r");
    char line[4096];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        json_t *o = json_loads(line, 0, NULL);
        const char *t = http_json_str(o, "trace"), *ph = http_json_str(o, "phase");
        if (o != NULL && t != NULL && ph != NULL && strcmp(t, trace) == 0 &&
            strcmp(ph, phase) == 0)
            json_array_append(all, o);
        json_decref(o);
    }
    if (f != NULL)
        fclose(f);
    return all;
}

/* How many "end" lines of trace answered code. */
static int wh_count_end(const char *trace, long code)
{
    json_t *a = wh_lines(trace, "end");
    size_t i;
    json_t *o;
    int n = 0;
    json_array_foreach (a, i, o)
        n += json_integer_value(json_object_get(o, "code")) == code;
    json_decref(a);
    return n;
}

struct wh_wait {
    const char *trace;
    long code;
};

static int wh_check_end(void *arg)
{
    const struct wh_wait *w = arg;
    return wh_count_end(w->trace, w->code) > 0;
}

/* Waits until the receiver answered code to a delivery of trace. */
static void wh_wait_end(const char *trace, long code, int timeout_ms)
{
    struct wh_wait w = {trace, code};
    CHECK(harness_poll(harness_timeout(timeout_ms), 50, wh_check_end, &w) == 0,
          "no webhook delivery of trace %s answered %ld within %d ms", trace, code,
          timeout_ms);
}

/* Checks what every delivery of trace carried: a valid signature, the webhook-id
 * msg_<trace> in the header and the body, JSON. Returns the number of starts. */
static size_t wh_check_lines(const char *trace, const char *type)
{
    char want[64];
    snprintf(want, sizeof(want), "msg_%s", trace);
    json_t *a = wh_lines(trace, "start");
    size_t i;
    json_t *o;
    json_array_foreach (a, i, o) {
        CHECK(json_is_true(json_object_get(o, "sig")),
              "delivery %zu of %s: the signature did not verify with the secret", i + 1,
              trace);
        CHECK(strcmp(STR(http_json_str(o, "id")), want) == 0 &&
                  strcmp(STR(http_json_str(o, "event_id")), want) == 0,
              "delivery %zu of %s: webhook-id %s, body id %s; want %s", i + 1, trace,
              STR(http_json_str(o, "id")), STR(http_json_str(o, "event_id")), want);
        CHECK(strcmp(STR(http_json_str(o, "type")), type) == 0,
              "delivery %zu of %s: type %s, want %s", i + 1, trace,
              STR(http_json_str(o, "type")), type);
        CHECK(strncmp(STR(http_json_str(o, "content_type")), "application/json", 16) == 0,
              "delivery %zu: Content-Type %s", i + 1,
              STR(http_json_str(o, "content_type")));
    }
    size_t n = json_array_size(a);
    json_decref(a);
    return n;
}

/* The dead letter of the {prefix}webhooks entry for trace: 1 with its reason in
 * out, or 0 (out "") when there is none. */
static int wh_dead_reason(const char *trace, char *out, size_t outlen)
{
    struct stack *s = &wh_stack;
    int found = 0;
    out[0] = '\0';
    redisReply *r = stack_redis(s, "XRANGE %s - +", s->keys.dead);
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements;
         i++) {
        const redisReply *f = r->element[i]->element[1];
        const char *t = NULL, *src = NULL, *why = NULL;
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *name = f->element[k]->str, *v = f->element[k + 1]->str;
            if (strcmp(name, "trace") == 0)
                t = v;
            else if (strcmp(name, "source") == 0)
                src = v;
            else if (strcmp(name, "reason") == 0)
                why = v;
        }
        if (t != NULL && src != NULL && why != NULL && strcmp(t, trace) == 0 &&
            strcmp(src, s->keys.webhooks) == 0)
            found = snprintf(out, outlen, "%s", why) >= 0;
    }
    freeReplyObject(r);
    return found;
}

static int wh_check_dead(void *arg)
{
    char reason[512];
    return wh_dead_reason(arg, reason, sizeof(reason));
}

/* 1 once the event (its webhook-id) waits in the retry schedule. */
static int wh_check_scheduled(void *arg)
{
    struct stack *s = &wh_stack;
    redisReply *r = stack_redis(s, "ZSCORE %s %s", s->keys.webhooks_delayed, (char *)arg);
    int found = r != NULL && r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    return found;
}

/* Nothing pending in the group, nothing scheduled. */
static int wh_idle(void *arg)
{
    (void)arg;
    struct stack *s = &wh_stack;
    long long pending = stack_xpending(s, s->keys.webhooks, KEYS_GROUP_WEBHOOKS);
    redisReply *r = stack_redis(s, "ZCARD %s", s->keys.webhooks_delayed);
    long long delayed = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return pending == 0 && delayed == 0 && stack_xlen(s, s->keys.webhooks) == 0;
}

/* A completed and a failed chat each get one signed event of the right type,
 * whose timestamp is the one GET shows. */
static void test_webhooks_signed_events(void **state)
{
    (void)state;
    char ok[UUID_LEN + 1], bad[UUID_LEN + 1];
    wh_post_ok("hello webhooks", "/ok", ok);
    wh_post_ok("[[fake status=400]] refused upstream", "/ok", bad);
    wh_wait_end(ok, 200, WH_DELIVER_MS);
    wh_wait_end(bad, 200, WH_DELIVER_MS);
    CHECK(wh_check_lines(ok, "chat.completed") == 1, "completed chat: not one delivery");
    CHECK(wh_check_lines(bad, "chat.failed") == 1, "failed chat: not one delivery");

    long status;
    json_t *got = chat_get(&wh_stack, ok, &status);
    json_t *lines = wh_lines(ok, "start");
    json_t *first = json_array_get(lines, 0);
    CHECK(got != NULL && strcmp(STR(http_json_str(got, "timestamp")),
                                STR(http_json_str(first, "timestamp"))) == 0,
          "event timestamp %s, GET says %s", STR(http_json_str(first, "timestamp")),
          STR(http_json_str(got, "timestamp")));
    long long ts = atoll(STR(http_json_str(first, "ts")));
    CHECK(llabs(ts - (long long)time(NULL)) < 120, "webhook-timestamp %lld is not now",
          ts);
    json_decref(lines);
    json_decref(got);
    CHECK(harness_poll(harness_timeout(5000), 50, wh_idle, NULL) == 0,
          "deliveries left pending or scheduled");
}

/* A receiver that fails the first 3 deliveries gets the 4th (the last allowed),
 * after about 1, 2 and 4 s, each with the same webhook-id. */
static void test_webhooks_retry_with_backoff(void **state)
{
    (void)state;
    char trace[UUID_LEN + 1];
    wh_post_ok("fail three times", "/fail3", trace);
    wh_wait_end(trace, 200, WH_RETRY_MS);
    CHECK(wh_check_lines(trace, "chat.completed") == 4, "want exactly 4 deliveries");
    json_t *a = wh_lines(trace, "start");
    const double want[] = {1.0, 2.0, 4.0};
    for (size_t i = 1; i < 4; i++) {
        double gap = json_real_value(json_object_get(json_array_get(a, i), "t")) -
                     json_real_value(json_object_get(json_array_get(a, i - 1), "t"));
        /* Generous: the retry is looked for every 100 ms, the machine is busy. */
        CHECK(gap >= want[i - 1] * 0.8 && gap <= want[i - 1] + 3.0,
              "gap before attempt %zu: %.2f s, want about %.0f s", i + 1, gap,
              want[i - 1]);
    }
    json_decref(a);
    char dead[512];
    CHECK(!wh_dead_reason(trace, dead, sizeof(dead)),
          "a delivered event was dead-lettered: %s", dead);
}

/* 410 Gone ends it: one delivery, no retry scheduled, no dead letter. */
static int wh_check_second(void *arg)
{
    json_t *a = wh_lines(arg, "start");
    size_t n = json_array_size(a);
    json_decref(a);
    return n > 1;
}

static void test_webhooks_gone_stops(void **state)
{
    (void)state;
    char trace[UUID_LEN + 1];
    wh_post_ok("the receiver is gone", "/gone", trace);
    wh_wait_end(trace, 410, WH_DELIVER_MS);
    /* A retry would come after 1 s: give it three. */
    CHECK(harness_poll(3000, 100, wh_check_second, trace) != 0,
          "a 410 Gone was delivered again");
    CHECK(harness_poll(harness_timeout(5000), 50, wh_idle, NULL) == 0,
          "something is left pending or scheduled after 410");
    char dead[512];
    CHECK(!wh_dead_reason(trace, dead, sizeof(dead)), "410 was dead-lettered: %s", dead);
}

/* Every attempt failing: after the 4th the event is in the dead-letter stream with
 * the count and the last status. */
static void test_webhooks_dead_after_last_attempt(void **state)
{
    (void)state;
    char trace[UUID_LEN + 1];
    wh_post_ok("always failing receiver", "/fail", trace);
    CHECK(harness_poll(harness_timeout(WH_RETRY_MS), 100, wh_check_dead, trace) == 0,
          "no dead letter for %s", trace);
    char reason[512];
    CHECK(wh_dead_reason(trace, reason, sizeof(reason)) &&
              strstr(reason, "after 4 attempts") != NULL &&
              strstr(reason, "HTTP 500") != NULL,
          "dead letter reason \"%s\": want the attempts and the last status", reason);
    CHECK(wh_check_lines(trace, "chat.completed") == WH_MAX_ATTEMPTS,
          "want exactly %d deliveries", WH_MAX_ATTEMPTS);
    CHECK(harness_poll(harness_timeout(5000), 50, wh_idle, NULL) == 0,
          "something is left pending or scheduled after the dead letter");
}

/* Private, loopback, link-local: 400 webhook_not_allowed at submit time, naming the
 * address; not a URL chatq calls: invalid_field. */
static void test_webhooks_private_refused_at_submit(void **state)
{
    (void)state;
    static const struct {
        const char *url, *code, *says;
    } cases[] = {
        {"http://10.0.0.1/hook", "webhook_not_allowed", "10.0.0.1"},
        {"http://169.254.169.254/latest/meta-data/", "webhook_not_allowed", "link-local"},
        {"http://[::1]:8080/", "webhook_not_allowed", "loopback"},
        {"https://192.168.1.10/", "webhook_not_allowed", "private"},
        {"http://100.64.0.1/", "webhook_not_allowed", "100.64"},
        /* 127.0.0.2 in octal: still loopback, and not the allowed 127.0.0.1 */
        {"http://0177.0.0.2/", "webhook_not_allowed", "127.0.0.2"},
        {"http://[::ffff:10.0.0.1]/", "webhook_not_allowed", "10.0.0.0/8"},
        {"ftp://example.com/", "invalid_field", "http"},
        {"http://user:pw@example.com/", "invalid_field", "password"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char trace[UUID_LEN + 1];
        json_t *body = NULL;
        long status = wh_post("hi", cases[i].url, trace, &body);
        const char *code = http_error_code(body), *msg = http_error_message(body);
        CHECK(status == 400 && code != NULL && strcmp(code, cases[i].code) == 0 &&
                  msg != NULL && strstr(msg, cases[i].says) != NULL,
              "webhook %s: HTTP %ld %s \"%s\"; want 400 %s mentioning %s", cases[i].url,
              status, STR(code), STR(msg), cases[i].code, cases[i].says);
        json_decref(body);
    }
}

/* An address that became private after submit (DNS rebinding; here written into
 * the stream by hand): the sender refuses to connect, and dead-letters it. */
static void test_webhooks_refused_at_delivery(void **state)
{
    (void)state;
    struct stack *s = &wh_stack;
    char trace[UUID_LEN + 1], event[64];
    CHECK(uuid_v4(trace) == 0, "uuid_v4 failed");
    snprintf(event, sizeof(event), "msg_%s", trace);
    redisReply *r = stack_redis(s,
                                "XADD %s * trace %s url http://10.9.8.7:9/hook type "
                                "chat.completed event %s timestamp 2026-01-01T00:00:00Z "
                                "attempts 0",
                                s->keys.webhooks, trace, event);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING, "XADD failed");
    freeReplyObject(r);
    CHECK(harness_poll(harness_timeout(WH_DELIVER_MS), 50, wh_check_dead, trace) == 0,
          "a delivery to 10.9.8.7 was not dead-lettered");
    char reason[512];
    CHECK(wh_dead_reason(trace, reason, sizeof(reason)) &&
              strstr(reason, "refused at delivery") != NULL &&
              strstr(reason, "10.9.8.7") != NULL,
          "reason \"%s\"", reason);
}

/* Kill -9 the sender while the receiver holds deliveries open: a new sender takes
 * them over, every event arrives, and a second delivery carries the same
 * webhook-id as the first. */
struct wh_traces {
    char t[WH_CHATS_KILLED][UUID_LEN + 1];
};

static int wh_check_any_start(void *arg)
{
    struct wh_traces *tr = arg;
    for (int i = 0; i < WH_CHATS_KILLED; i++) {
        json_t *a = wh_lines(tr->t[i], "start");
        size_t n = json_array_size(a);
        json_decref(a);
        if (n > 0)
            return 1;
    }
    return 0;
}

static int wh_check_all_ended(void *arg)
{
    struct wh_traces *tr = arg;
    for (int i = 0; i < WH_CHATS_KILLED; i++)
        if (wh_count_end(tr->t[i], 200) == 0)
            return 0;
    return wh_idle(NULL);
}

static void test_webhooks_sigkill_mid_delivery(void **state)
{
    (void)state;
    struct stack *s = &wh_stack;
    struct wh_traces tr;
    int started_before[WH_CHATS_KILLED];
    for (int i = 0; i < WH_CHATS_KILLED; i++)
        wh_post_ok("slow receiver", "/slow", tr.t[i]);
    CHECK(harness_poll(harness_timeout(WH_DELIVER_MS), 20, wh_check_any_start, &tr) == 0,
          "no delivery started");
    CHECK(proc_signal(s->webhook, SIGKILL) == 0, "cannot SIGKILL the sender");
    CHECK(proc_wait(s->webhook, 5000, NULL) == 0, "the sender outlived SIGKILL");
    proc_free(s->webhook);
    s->webhook = NULL;
    for (int i = 0; i < WH_CHATS_KILLED; i++) {
        json_t *a = wh_lines(tr.t[i], "start");
        started_before[i] = (int)json_array_size(a);
        json_decref(a);
    }
    s->webhook = stack_webhook_start(s, "webhook2", wh_sender_env);
    CHECK(s->webhook != NULL, "the second sender did not start");
    CHECK(harness_poll(harness_timeout(WH_KILL_MS), 100, wh_check_all_ended, &tr) == 0,
          "not every event was delivered after the kill (CLAIM_IDLE_MS %d)",
          WH_CLAIM_IDLE_MS);
    int again = 0;
    for (int i = 0; i < WH_CHATS_KILLED; i++) {
        size_t n = wh_check_lines(tr.t[i], "chat.completed");
        CHECK(n >= 1 && n <= 2, "trace %s delivered %zu times", tr.t[i], n);
        if (started_before[i] > 0)
            again += n == 2;
        char dead[512];
        CHECK(!wh_dead_reason(tr.t[i], dead, sizeof(dead)), "dead-lettered: %s", dead);
    }
    CHECK(again > 0, "no delivery cut by the kill was sent again");
}

static int wh_check_started(void *arg)
{
    json_t *a = wh_lines(arg, "start");
    size_t n = json_array_size(a);
    json_decref(a);
    return n > 0;
}

/* SIGTERMs the group's sender and checks it exits 0 within timeout_ms. */
static void wh_sender_term(int timeout_ms)
{
    struct stack *s = &wh_stack;
    int status = -1;
    char how[64];
    CHECK(proc_signal(s->webhook, SIGTERM) == 0, "cannot signal the sender");
    CHECK(proc_wait(s->webhook, harness_timeout(timeout_ms), &status) == 0,
          "the sender did not exit within %d ms of SIGTERM", timeout_ms);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the sender %s on SIGTERM",
          proc_describe(status, how, sizeof(how)));
    proc_free(s->webhook);
    s->webhook = NULL;
}

/* SIGTERM lets a delivery in flight finish within SHUTDOWN_GRACE_MS; one that
 * the grace cuts off stays pending and is sent again, with the same
 * webhook-id, by the sender that takes it over. */
static void test_webhooks_sigterm_grace(void **state)
{
    (void)state;
    struct stack *s = &wh_stack;
    char done[UUID_LEN + 1], cut[UUID_LEN + 1];
    static const char *const short_grace[] = {
        "WEBHOOK_SECRET=" WH_SECRET, "WEBHOOK_ALLOW=127.0.0.1", "WEBHOOK_TIMEOUT_MS=4000",
        "CLAIM_IDLE_MS=6000",        "SHUTDOWN_GRACE_MS=200",   NULL};

    wh_post_ok("finished within the grace", "/slow", done);
    CHECK(harness_poll(harness_timeout(WH_DELIVER_MS), 20, wh_check_started, done) == 0,
          "no delivery started");
    wh_sender_term(8000); /* the receiver answers after 2 s; the grace is 10 s */
    CHECK(wh_count_end(done, 200) == 1, "the delivery in flight did not finish");
    CHECK(harness_poll(harness_timeout(5000), 50, wh_idle, NULL) == 0,
          "a delivery finished within the grace was left pending");

    s->webhook = stack_webhook_start(s, "webhook-short-grace", short_grace);
    CHECK(s->webhook != NULL, "the sender did not start");
    wh_post_ok("cut off by the grace", "/slow", cut);
    CHECK(harness_poll(harness_timeout(WH_DELIVER_MS), 20, wh_check_started, cut) == 0,
          "no delivery started");
    wh_sender_term(3000);
    CHECK(stack_xpending(s, s->keys.webhooks, KEYS_GROUP_WEBHOOKS) == 1,
          "the delivery cut off is not pending");

    s->webhook = stack_webhook_start(s, "webhook-after-grace", wh_sender_env);
    CHECK(s->webhook != NULL, "the sender did not start");
    CHECK(harness_poll(harness_timeout(WH_KILL_MS), 100, wh_idle, NULL) == 0,
          "the delivery cut off was not taken over and finished");
    CHECK(wh_check_lines(cut, "chat.completed") == 2,
          "want the delivery cut off, then one more with the same webhook-id");
    CHECK(wh_check_lines(done, "chat.completed") == 1, "the finished one came again");
}

/* The retry schedule lives in Redis: with a retry waiting, the sender is
 * SIGKILLed and Redis restarted; a new sender still makes the remaining
 * attempts, and the 4th is delivered. */
static void test_webhooks_schedule_survives_restarts(void **state)
{
    (void)state;
    struct stack *s = &wh_stack;
    char trace[UUID_LEN + 1], event[64];
    wh_post_ok("a retry across restarts", "/fail3", trace);
    snprintf(event, sizeof(event), "msg_%s", trace);
    CHECK(harness_poll(harness_timeout(WH_DELIVER_MS), 20, wh_check_scheduled, event) ==
              0,
          "no retry was scheduled");
    CHECK(proc_signal(s->webhook, SIGKILL) == 0, "cannot SIGKILL the sender");
    CHECK(proc_wait(s->webhook, 5000, NULL) == 0, "the sender outlived SIGKILL");
    proc_free(s->webhook);
    s->webhook = NULL;
    CHECK(stack_redis_stop(s) == 0, "redis-server did not stop");
    CHECK(stack_redis_start(s) == 0, "redis-server did not start again");
    s->webhook = stack_webhook_start(s, "webhook-after-restarts", wh_sender_env);
    CHECK(s->webhook != NULL, "the sender did not start");
    wh_wait_end(trace, 200, WH_KILL_MS);
    size_t n = wh_check_lines(trace, "chat.completed");
    CHECK(n == 4, "%zu deliveries, want 4", n);
}

/* Redis restarted while a delivery is in flight: the sender cannot record the
 * end of the attempt, keeps running, reconnects, and sends the event again with
 * the same webhook-id; nothing is left pending. */
static void test_webhooks_redis_restart_mid_delivery(void **state)
{
    (void)state;
    struct stack *s = &wh_stack;
    char trace[UUID_LEN + 1];
    wh_post_ok("redis goes away meanwhile", "/slow", trace);
    CHECK(harness_poll(harness_timeout(WH_DELIVER_MS), 20, wh_check_started, trace) == 0,
          "no delivery started");
    CHECK(stack_redis_stop(s) == 0, "redis-server did not stop");
    /* The receiver answers after 2 s, with Redis still down. */
    struct wh_wait w = {trace, 200};
    CHECK(harness_poll(harness_timeout(5000), 20, wh_check_end, &w) == 0,
          "the delivery did not finish");
    CHECK(stack_redis_start(s) == 0, "redis-server did not start again");
    CHECK(harness_poll(harness_timeout(WH_KILL_MS), 100, wh_idle, NULL) == 0,
          "the delivery was not settled after Redis came back");
    CHECK(proc_alive(s->webhook), "the sender died with Redis");
    size_t n = wh_check_lines(trace, "chat.completed");
    CHECK(n >= 1 && n <= 2, "%zu deliveries, want 1 or 2 (the same webhook-id)", n);
}

/* POSTs body with Idempotency-Key key; returns the status, the traceId in trace. */
static long wh_post_idem(const char *body, const char *key, char trace[UUID_LEN + 1])
{
    char url[128], header[128];
    const char *headers[] = {header, NULL};
    struct http_response r = {0};
    snprintf(header, sizeof(header), "Idempotency-Key: %s", key);
    trace[0] = '\0';
    long status = 0;
    if (http_request_with("POST", stack_url(&wh_stack, "/chat", url, sizeof(url)),
                          headers, body, strlen(body), 10000, &r) == 0) {
        status = r.status;
        json_t *j = http_json(&r);
        const char *id = http_json_str(j, "traceId");
        if (id != NULL && strlen(id) == UUID_LEN)
            memcpy(trace, id, UUID_LEN + 1);
        json_decref(j);
    }
    http_response_free(&r);
    return status;
}

/* The webhook is part of what an Idempotency-Key stands for: the same body again
 * is the same chat; another webhook under the same key is refused (422), not
 * silently dropped. */
static void test_webhooks_idempotency_key(void **state)
{
    (void)state;
    char body[256], other[256], t1[UUID_LEN + 1], t2[UUID_LEN + 1], t3[UUID_LEN + 1];
    snprintf(body, sizeof(body), "{\"message\":\"idem\",\"webhook\":\"%s/ok\"}", wh_base);
    snprintf(other, sizeof(other), "{\"message\":\"idem\",\"webhook\":\"%s/gone\"}",
             wh_base);
    CHECK(wh_post_idem(body, "wh-idem-1", t1) == 202, "first POST not 202");
    CHECK(wh_post_idem(body, "wh-idem-1", t2) == 202 && strcmp(t1, t2) == 0,
          "the same request again got traceId %s, want %s", t2, t1);
    long st = wh_post_idem(other, "wh-idem-1", t3);
    CHECK(st == 422, "another webhook under the same key got HTTP %ld, want 422", st);
    wh_wait_end(t1, 200, WH_DELIVER_MS);
    CHECK(wh_check_lines(t1, "chat.completed") == 1, "want one delivery for one chat");
}

/* WEBHOOK_URL: a chat that names no webhook gets the operator's. */
static void test_webhooks_default_url(void **state)
{
    (void)state;
    struct stack *s = &wh_stack;
    char env[200], trace[UUID_LEN + 1];
    snprintf(env, sizeof(env), "WEBHOOK_URL=%s/ok", wh_base);
    const char *const extra[] = {env, NULL};
    CHECK(proc_stop(s->api) == 0, "the api did not stop");
    CHECK(stack_api_restart(s, "api-default-webhook", extra) == 0, "api restart failed");
    CHECK(chat_post(s, "no webhook of its own", NULL, -1, trace) == 0, "POST failed");
    wh_wait_end(trace, 200, WH_DELIVER_MS);
    CHECK(wh_check_lines(trace, "chat.completed") == 1, "not one delivery");
}

/* Gives the delivery (a receiver's log line: raw body, headers) to the official
 * openai npm package's client.webhooks.unwrap(), which verifies the signature with
 * the secret and parses the event (tests/sdk/unwrap.mjs); its one-line answer goes
 * into out. 0 when it accepted the delivery. */
static int wh_sdk_unwrap(const json_t *line, char *out, size_t outlen)
{
    char path[PATH_MAX], log[PATH_MAX];
    int status = -1;
    out[0] = '\0';
    snprintf(path, sizeof(path), "%s/unwrap.json", wh_stack.dir);
    snprintf(log, sizeof(log), "%s/unwrap.log", wh_stack.dir);
    if (json_dump_file(line, path, 0) != 0)
        return -1;
    char *const argv[] = {"node", "tests/sdk/unwrap.mjs", path, NULL};
    char *const env[] = {"WEBHOOK_SECRET=" WH_SECRET, NULL};
    struct proc *p = proc_start("unwrap", log, argv, env, 0);
    if (p == NULL)
        return -1;
    int waited = proc_wait(p, harness_timeout(20000), &status);
    proc_free(p);
    FILE *f = fopen(log, "r");
    if (f != NULL) {
        if (fgets(out, (int)outlen, f) != NULL)
            out[strcspn(out, "\n")] = '\0';
        fclose(f);
    }
    return waited == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* POST /v1/responses with background, the api's WEBHOOK_URL set: the response's end
 * comes as OpenAI's webhook event (object "event", type response.completed,
 * response.failed or response.incomplete, created_at in Unix seconds, data.id the
 * response's id), signed as every delivery is, and the official SDK's
 * client.webhooks.unwrap() accepts it as it would one of OpenAI's. */
static void test_webhooks_openai_events(void **state)
{
    (void)state;
    struct stack *s = &wh_stack;
    char env[200], url[128];
    snprintf(env, sizeof(env), "WEBHOOK_URL=%s/ok", wh_base);
    const char *const extra[] = {env, NULL};
    CHECK(proc_stop(s->api) == 0, "the api did not stop");
    CHECK(stack_api_restart(s, "api-openai-webhook", extra) == 0, "api restart failed");
    stack_url(s, "/v1/responses", url, sizeof(url));

    const char *inputs[] = {"openai webhook", "[[fake status=400]] openai webhook",
                            "[[fake finish=length]] openai webhook"};
    const char *types[] = {"response.completed", "response.failed",
                           "response.incomplete"};
    char ids[3][64];
    for (int i = 0; i < 3; i++) {
        char body[256];
        struct http_response r;
        snprintf(body, sizeof(body),
                 "{\"model\":\"gpt-4o-mini\",\"input\":\"%s\",\"background\":true}",
                 inputs[i]);
        CHECK(http_request("POST", url, body, strlen(body), 10000, &r) == 0,
              "POST /v1/responses: %s", r.error);
        json_t *j = r.status == 200 ? http_json(&r) : NULL;
        snprintf(ids[i], sizeof(ids[i]), "%s", STR(http_json_str(j, "id")));
        json_decref(j);
        long st = r.status;
        http_response_free(&r);
        CHECK(st == 200 && strncmp(ids[i], "resp_", 5) == 0,
              "POST /v1/responses: HTTP %ld, id %s", st, ids[i]);
    }
    for (int i = 0; i < 3; i++) {
        wh_wait_end(ids[i], 200, WH_DELIVER_MS);
        json_t *a = wh_lines(ids[i], "start");
        json_t *o = json_array_get(a, 0);
        char evt[64];
        snprintf(evt, sizeof(evt), "evt_%s", ids[i] + 5);
        json_int_t at = json_integer_value(json_object_get(o, "created_at"));
        CHECK(json_array_size(a) == 1 && json_is_true(json_object_get(o, "sig")) &&
                  strcmp(STR(http_json_str(o, "object")), "event") == 0 &&
                  strcmp(STR(http_json_str(o, "type")), types[i]) == 0 &&
                  strcmp(STR(http_json_str(o, "event_id")), evt) == 0 &&
                  llabs((long long)at - (long long)time(NULL)) < 120,
              "%s: %zu deliveries, signature %s, object %s, type %s (want %s), id %s "
              "(want %s), created_at %lld",
              ids[i], json_array_size(a),
              json_is_true(json_object_get(o, "sig")) ? "good" : "bad",
              STR(http_json_str(o, "object")), STR(http_json_str(o, "type")), types[i],
              STR(http_json_str(o, "event_id")), evt, (long long)at);
        if (i == 0) {
            char said[300], want[256];
            int rc = wh_sdk_unwrap(o, said, sizeof(said));
            snprintf(want, sizeof(want), "%s %s", types[i], ids[i]);
            CHECK(rc == 0 && strcmp(said, want) == 0,
                  "the SDK's webhooks.unwrap() said '%s', want '%s'", said, want);
        }
        json_decref(a);
    }
}

/* A name with an allowed and a refused address: curl resolves "localhost" to
 * 127.0.0.1 and ::1 itself, and WEBHOOK_ALLOW has only the first. When the
 * allowed address fails too (nothing listens), that is a failed attempt to
 * retry, not a refusal to dead-letter. Last in the group: it leaves a retry
 * scheduled. */
static void test_webhooks_allowed_address_failing_is_retried(void **state)
{
    (void)state;
    struct stack *s = &wh_stack;
    char trace[UUID_LEN + 1], event[64], url[64];
    CHECK(uuid_v4(trace) == 0, "uuid_v4 failed");
    snprintf(event, sizeof(event), "msg_%s", trace);
    snprintf(url, sizeof(url), "http://localhost:%d/hook", harness_free_port());
    redisReply *r = stack_redis(s,
                                "XADD %s * trace %s url %s type chat.completed event %s "
                                "timestamp 2026-01-01T00:00:00Z attempts 0",
                                s->keys.webhooks, trace, url, event);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING, "XADD failed");
    freeReplyObject(r);
    int scheduled =
        harness_poll(harness_timeout(WH_DELIVER_MS), 20, wh_check_scheduled, event) == 0;
    char dead[512];
    int lettered = wh_dead_reason(trace, dead, sizeof(dead));
    CHECK(scheduled && !lettered,
          "a failed delivery to %s was %s; want a retry scheduled", url,
          lettered ? dead : "neither retried nor dead-lettered");
}

/* The secret (its base64, or any 12 characters of it) is in no log of the group
 * and in no Redis key or value. */
#define WH_SECRET_B64 "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define WH_PIECE 12

static const char *wh_secret_piece(const char *text, size_t len)
{
    static char piece[WH_PIECE + 1];
    size_t n = strlen(WH_SECRET_B64);
    for (size_t at = 0; at + WH_PIECE <= n; at++) {
        memcpy(piece, WH_SECRET_B64 + at, WH_PIECE);
        piece[WH_PIECE] = '\0';
        if (memmem(text, len, piece, WH_PIECE) != NULL)
            return piece;
    }
    return NULL;
}

static int wh_reply_has_secret(const redisReply *r)
{
    if (r == NULL)
        return 0;
    if (r->str != NULL && wh_secret_piece(r->str, r->len) != NULL)
        return 1;
    for (size_t i = 0; i < r->elements; i++)
        if (wh_reply_has_secret(r->element[i]))
            return 1;
    return 0;
}

static int wh_key_has_secret(const char *key, const char *type, const redisReply *value,
                             void *arg)
{
    (void)type;
    if (wh_secret_piece(key, strlen(key)) == NULL && !wh_reply_has_secret(value))
        return 0;
    snprintf(arg, 256, "%s", key);
    return 1;
}

static void test_webhooks_secret_never_written(void **state)
{
    (void)state;
    struct stack *s = &wh_stack;
    char pattern[PATH_MAX], key[256] = "";
    glob_t g;
    snprintf(pattern, sizeof(pattern), "%s/*.log", s->dir);
    CHECK(glob(pattern, 0, NULL, &g) == 0, "no logs in %s", s->dir);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        FILE *f = fopen(g.gl_pathv[i], "r");
        char line[8192];
        const char *found = NULL;
        while (f != NULL && found == NULL && fgets(line, sizeof(line), f) != NULL)
            found = wh_secret_piece(line, strlen(line));
        if (f != NULL)
            fclose(f);
        if (found != NULL) {
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s", g.gl_pathv[i]);
            globfree(&g);
            fail_msg("a piece of the webhook secret (%s) is in %s", found, path);
        }
    }
    globfree(&g);
    CHECK(stack_redis_each(s, wh_key_has_secret, key) == 0,
          "a piece of the webhook secret is in Redis, key %s", key);
}

static const struct CMUnitTest wh_tests[] = {
    cmocka_unit_test(test_webhooks_private_refused_at_submit),
    cmocka_unit_test(test_webhooks_signed_events),
    cmocka_unit_test(test_webhooks_gone_stops),
    cmocka_unit_test(test_webhooks_refused_at_delivery),
    cmocka_unit_test(test_webhooks_retry_with_backoff),
    cmocka_unit_test(test_webhooks_dead_after_last_attempt),
    cmocka_unit_test(test_webhooks_sigterm_grace),
    cmocka_unit_test(test_webhooks_sigkill_mid_delivery),
    cmocka_unit_test(test_webhooks_schedule_survives_restarts),
    cmocka_unit_test(test_webhooks_redis_restart_mid_delivery),
    cmocka_unit_test(test_webhooks_idempotency_key),
    cmocka_unit_test(test_webhooks_default_url),
    cmocka_unit_test(test_webhooks_openai_events),
    cmocka_unit_test(test_webhooks_allowed_address_failing_is_retried),
    cmocka_unit_test(test_webhooks_secret_never_written),
};

const struct suite_group suite_webhooks = {
    "webhooks", wh_tests, sizeof(wh_tests) / sizeof(wh_tests[0]), wh_setup, wh_teardown};
