/* test_openai.c - the OpenAI front over plain HTTP, as any client sees it: background
 * responses queued at once and read by their id, the conversation and its parameters
 * reaching the upstream in order, length-cut answers ending incomplete, waiting calls
 * (chat completions, responses without background) answering the result or the
 * upstream's error, OpenAI's error bodies, and both fronts reading one record. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define OAI_HTTP_MS 10000
#define OAI_CHAT_MS 15000
#define OAI_SDK_MS 180000
#define OAI_SDK_DIR "tests/sdk"

static struct stack oai_stack;

static const char *const oai_claim_env[] = {"CLAIM_IDLE_MS=1500", NULL};

static int oai_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.processor = oai_claim_env, .handler = oai_claim_env};
    return stack_start(&oai_stack, "openai", "t20:", &set);
}

static int oai_teardown(void **state)
{
    (void)state;
    return stack_stop(&oai_stack);
}

/* Sends method path with body (may be NULL); returns the parsed body (new, or NULL
 * when it is not JSON) with the response in *r (free it). */
static json_t *oai_call(const char *method, const char *path, const char *body,
                        struct http_response *r)
{
    char url[256];
    stack_url(&oai_stack, path, url, sizeof(url));
    if (http_request(method, url, body, body ? strlen(body) : 0, OAI_HTTP_MS, r) != 0) {
        fprintf(stderr, "integration: %s %s: %s\n", method, path, r->error);
        return NULL;
    }
    return http_json(r);
}

/* Checks an OpenAI error body: {"error": {"message", "type", "param", "code"}}. */
static void oai_check_error(const json_t *j, const char *type, const char *param)
{
    json_t *e = json_object_get(j, "error");
    CHECK(json_is_object(e), "no error object");
    CHECK(json_is_string(json_object_get(e, "message")) &&
              json_string_length(json_object_get(e, "message")) > 0,
          "error.message missing");
    CHECK(json_object_get(e, "param") != NULL && json_object_get(e, "code") != NULL,
          "error.param and error.code must be present (null or a value)");
    CHECK(strcmp(STR(http_json_str(e, "type")), type) == 0, "error.type %s, want %s",
          STR(http_json_str(e, "type")), type);
    if (param != NULL)
        CHECK(strcmp(STR(http_json_str(e, "param")), param) == 0,
              "error.param %s, want %s", STR(http_json_str(e, "param")), param);
}

/* The first output_text of a Response object, or NULL. */
static const char *oai_output_text(const json_t *resp)
{
    json_t *item = json_array_get(json_object_get(resp, "output"), 0);
    json_t *part = json_array_get(json_object_get(item, "content"), 0);
    return http_json_str(part, "text");
}

/* Polls GET /v1/responses/{id} until its status is not queued or in_progress;
 * returns the final object (new) or NULL. */
static json_t *oai_wait(const char *id)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/responses/%s", id);
    long long deadline = harness_now_ms() + harness_timeout(OAI_CHAT_MS);
    for (;;) {
        struct http_response r;
        json_t *j = oai_call("GET", path, NULL, &r);
        long status = r.status;
        http_response_free(&r);
        const char *st = http_json_str(j, "status");
        if (status != 200 || st == NULL) {
            fprintf(stderr, "integration: GET %s: HTTP %ld\n", path, status);
            json_decref(j);
            return NULL;
        }
        if (strcmp(st, "queued") != 0 && strcmp(st, "in_progress") != 0)
            return j;
        json_decref(j);
        if (harness_now_ms() >= deadline)
            return NULL;
        harness_sleep_ms(20);
    }
}

static void test_openai_background(void **state)
{
    (void)state;
    struct http_response r;
    char trace[80], reqid[80];
    const char *body = "{\"model\":\"gpt-4o-mini\",\"input\":\"hello from the sdk\","
                       "\"background\":true,\"metadata\":{\"team\":\"blue\"}}";
    json_t *j = oai_call("POST", "/v1/responses", body, &r);
    CHECK(r.status == 200, "POST /v1/responses: HTTP %ld: %s", r.status, STR(r.body));
    CHECK(http_header(&r, "x-chatq-trace-id", trace, sizeof(trace)) &&
              http_is_uuid_v4(trace),
          "no x-chatq-trace-id header with a UUID");
    CHECK(http_header(&r, "x-request-id", reqid, sizeof(reqid)), "no x-request-id");
    http_response_free(&r);
    const char *id = http_json_str(j, "id");
    CHECK(id != NULL && strncmp(id, "resp_", 5) == 0 && strlen(id) == 37,
          "id %s is not resp_<32 hex>", STR(id));
    CHECK(strcmp(STR(http_json_str(j, "object")), "response") == 0, "object");
    CHECK(strcmp(STR(http_json_str(j, "status")), "queued") == 0 ||
              strcmp(STR(http_json_str(j, "status")), "in_progress") == 0,
          "status %s, want queued", STR(http_json_str(j, "status")));
    CHECK(json_is_true(json_object_get(j, "background")), "background not true");
    CHECK(json_integer_value(json_object_get(j, "created_at")) > 1700000000,
          "created_at is not a Unix time");
    CHECK(json_is_null(json_object_get(j, "error")), "a queued response has no error");
    CHECK(strcmp(STR(http_json_str(json_object_get(j, "metadata"), "team")), "blue") == 0,
          "metadata not echoed");
    char rid[64];
    snprintf(rid, sizeof(rid), "%s", id);
    json_decref(j);

    json_t *done = oai_wait(rid);
    CHECK(done != NULL, "response %s did not finish", rid);
    CHECK(strcmp(STR(http_json_str(done, "status")), "completed") == 0, "status %s",
          STR(http_json_str(done, "status")));
    CHECK(strcmp(STR(oai_output_text(done)), "Fake answer to: hello from the sdk") == 0,
          "output_text %s", STR(oai_output_text(done)));
    json_t *usage = json_object_get(done, "usage");
    CHECK(json_integer_value(json_object_get(usage, "total_tokens")) ==
                  json_integer_value(json_object_get(usage, "input_tokens")) +
                      json_integer_value(json_object_get(usage, "output_tokens")) &&
              json_integer_value(json_object_get(usage, "total_tokens")) > 0,
          "usage does not add up");
    CHECK(strcmp(STR(http_json_str(done, "model")), "gpt-4o-mini") == 0, "model");
    json_decref(done);

    /* The same record through the other front. */
    json_t *seed = chat_wait(&oai_stack, trace, OAI_CHAT_MS, NULL);
    CHECK(seed != NULL && strcmp(STR(http_json_str(seed, "response")),
                                 "Fake answer to: hello from the sdk") == 0,
          "GET /chat/%s/response does not show the same chat", trace);
    json_decref(seed);
}

static void test_openai_conversation(void **state)
{
    (void)state;
    struct http_response r;
    const char *body =
        "{\"model\":\"m\",\"instructions\":\"be brief\",\"temperature\":0.3,"
        "\"top_p\":0.9,\"max_output_tokens\":50,\"background\":true,\"input\":["
        "{\"role\":\"developer\",\"content\":\"no jokes\"},"
        "{\"role\":\"user\",\"content\":\"first\"},"
        "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":"
        "\"output_text\",\"text\":\"answer one\"}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":"
        "\"[[fake echo-request]] second\"}]}]}";
    json_t *j = oai_call("POST", "/v1/responses", body, &r);
    CHECK(r.status == 200, "POST: HTTP %ld: %s", r.status, STR(r.body));
    http_response_free(&r);
    char rid[64];
    snprintf(rid, sizeof(rid), "%s", STR(http_json_str(j, "id")));
    json_decref(j);

    json_t *done = oai_wait(rid);
    CHECK(done != NULL, "response %s did not finish", rid);
    CHECK(strcmp(STR(http_json_str(done, "instructions")), "be brief") == 0,
          "instructions not echoed");
    CHECK(json_real_value(json_object_get(done, "temperature")) == 0.3 &&
              json_integer_value(json_object_get(done, "max_output_tokens")) == 50,
          "temperature or max_output_tokens not echoed");
    const char *seen = oai_output_text(done);
    const char *want =
        "{\"max_tokens\":50,\"messages\":[{\"content\":\"be brief\",\"role\":\"system\"},"
        "{\"content\":\"no jokes\",\"role\":\"system\"},"
        "{\"content\":\"first\",\"role\":\"user\"},"
        "{\"content\":\"answer one\",\"role\":\"assistant\"},"
        "{\"content\":\"[[fake echo-request]] second\",\"role\":\"user\"}],"
        "\"temperature\":0.3,\"top_p\":0.9}";
    CHECK(seen != NULL && strcmp(seen, want) == 0, "the upstream got\n%s\nwant\n%s",
          STR(seen), want);
    json_decref(done);
}

static void test_openai_incomplete(void **state)
{
    (void)state;
    struct http_response r;
    const char *body = "{\"model\":\"m\",\"input\":\"[[fake finish=length]] go on\","
                       "\"max_output_tokens\":16}";
    /* Without background: the call waits and answers the final object. */
    json_t *j = oai_call("POST", "/v1/responses", body, &r);
    CHECK(r.status == 200, "POST: HTTP %ld: %s", r.status, STR(r.body));
    http_response_free(&r);
    CHECK(strcmp(STR(http_json_str(j, "status")), "incomplete") == 0, "status %s",
          STR(http_json_str(j, "status")));
    CHECK(strcmp(STR(http_json_str(json_object_get(j, "incomplete_details"), "reason")),
                 "max_output_tokens") == 0,
          "incomplete_details.reason");
    CHECK(oai_output_text(j) != NULL, "the cut answer is still there");
    json_decref(j);
}

static void test_openai_chat_completions(void **state)
{
    (void)state;
    struct http_response r;
    char trace[80];
    const char *body = "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\","
                       "\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi there\"}],"
                       "\"max_tokens\":20,\"n\":1,\"seed\":7,\"stop\":[\"x\"]}";
    json_t *j = oai_call("POST", "/v1/chat/completions", body, &r);
    CHECK(r.status == 200, "POST: HTTP %ld: %s", r.status, STR(r.body));
    CHECK(http_header(&r, "x-chatq-trace-id", trace, sizeof(trace)) &&
              http_is_uuid_v4(trace),
          "no x-chatq-trace-id");
    http_response_free(&r);
    CHECK(strcmp(STR(http_json_str(j, "object")), "chat.completion") == 0, "object");
    CHECK(strncmp(STR(http_json_str(j, "id")), "chatcmpl-", 9) == 0, "id");
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    CHECK(strcmp(STR(http_json_str(json_object_get(c, "message"), "content")),
                 "Fake answer to: hi there") == 0,
          "content %s", STR(http_json_str(json_object_get(c, "message"), "content")));
    CHECK(strcmp(STR(http_json_str(c, "finish_reason")), "stop") == 0, "finish_reason");
    CHECK(json_integer_value(
              json_object_get(json_object_get(j, "usage"), "total_tokens")) > 0,
          "usage");
    json_decref(j);

    /* Readable afterwards through the seed contract, by the header's id. */
    json_t *seed = chat_wait(&oai_stack, trace, OAI_CHAT_MS, NULL);
    CHECK(seed != NULL && strcmp(STR(http_json_str(seed, "status")), "completed") == 0,
          "GET /chat/%s/response", trace);
    json_decref(seed);

    /* stop and seed reach the upstream as they were sent. */
    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
           "\"[[fake echo-request]] p\"}],\"seed\":7,\"stop\":\"x\"}";
    j = oai_call("POST", "/v1/chat/completions", body, &r);
    CHECK(r.status == 200, "POST: HTTP %ld: %s", r.status, STR(r.body));
    http_response_free(&r);
    c = json_array_get(json_object_get(j, "choices"), 0);
    const char *seen = http_json_str(json_object_get(c, "message"), "content");
    CHECK(seen != NULL && strstr(seen, "\"temperature\":1") != NULL,
          "OpenAI's default temperature 1 was not sent: %s", STR(seen));
    json_decref(j);
}

static void test_openai_upstream_errors(void **state)
{
    (void)state;
    struct http_response r;
    char retry[16];
    /* A waiting call gets the upstream's status, message and code. */
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"[[fake status=400]] too long\"}]}";
    json_t *j = oai_call("POST", "/v1/chat/completions", body, &r);
    CHECK(r.status == 400, "upstream 400: HTTP %ld: %s", r.status, STR(r.body));
    CHECK(http_header(&r, "x-should-retry", retry, sizeof(retry)) &&
              strcmp(retry, "false") == 0,
          "x-should-retry: false missing");
    http_response_free(&r);
    oai_check_error(j, "invalid_request_error", NULL);
    CHECK(strcmp(STR(http_json_str(json_object_get(j, "error"), "code")),
                 "context_length_exceeded") == 0,
          "code %s", STR(http_json_str(json_object_get(j, "error"), "code")));
    json_decref(j);

    /* A background one ends failed, with the code. */
    body = "{\"model\":\"m\",\"input\":\"[[fake status=401]] hi\",\"background\":true}";
    j = oai_call("POST", "/v1/responses", body, &r);
    CHECK(r.status == 200, "POST: HTTP %ld: %s", r.status, STR(r.body));
    http_response_free(&r);
    char rid[64];
    snprintf(rid, sizeof(rid), "%s", STR(http_json_str(j, "id")));
    json_decref(j);
    json_t *done = oai_wait(rid);
    CHECK(done != NULL, "response %s did not finish", rid);
    CHECK(strcmp(STR(http_json_str(done, "status")), "failed") == 0, "status %s",
          STR(http_json_str(done, "status")));
    CHECK(strcmp(STR(http_json_str(json_object_get(done, "error"), "code")),
                 "invalid_api_key") == 0,
          "error.code %s", STR(http_json_str(json_object_get(done, "error"), "code")));
    json_decref(done);
}

static void test_openai_bad_requests(void **state)
{
    (void)state;
    static const struct {
        const char *path, *body, *param;
    } cases[] = {
        {"/v1/responses", "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{}]}", "tools"},
        {"/v1/responses",
         "{\"model\":\"m\",\"input\":\"x\",\"previous_response_id\":\"r\"}",
         "previous_response_id"},
        {"/v1/responses", "{\"model\":\"m\",\"input\":\"x\",\"stream\":true}", "stream"},
        {"/v1/responses", "{\"input\":\"x\"}", "model"},
        {"/v1/responses", "{\"model\":\"m\"}", "input"},
        {"/v1/responses", "{\"model\":\"m\",\"input\":\"x\",\"temperature\":3}",
         "temperature"},
        {"/v1/responses",
         "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":"
         "\"input_image\",\"image_url\":\"u\"}]}]}",
         "input[0].content"},
        {"/v1/responses",
         "{\"model\":\"m\",\"input\":\"x\",\"metadata\":{\"a\":\"1\",\"b\":\"2\",\"c\":"
         "\"3\",\"d\":\"4\",\"e\":\"5\",\"f\":\"6\",\"g\":\"7\",\"h\":\"8\",\"i\":\"9\","
         "\"j\":\"10\",\"k\":\"11\",\"l\":\"12\",\"m\":\"13\",\"n\":\"14\",\"o\":\"15\","
         "\"p\":\"16\",\"q\":\"17\"}}",
         "metadata"},
        {"/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}",
         "n"},
        {"/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
         "messages[0]"},
        {"/v1/chat/completions", "{\"model\":\"m\",\"messages\":[]}", "messages"},
        {"/v1/chat/completions", "not json", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http_response r;
        json_t *j = oai_call("POST", cases[i].path, cases[i].body, &r);
        CHECK(r.status == 400, "%s %s: HTTP %ld, want 400", cases[i].path, cases[i].body,
              r.status);
        http_response_free(&r);
        oai_check_error(j, "invalid_request_error", cases[i].param);
        json_decref(j);
    }
}

static void test_openai_not_found(void **state)
{
    (void)state;
    const char *paths[] = {"/v1/responses/resp_0123456789abcdef0123456789abcdef",
                           "/v1/responses/resp_nope", "/v1/responses/chatcmpl-x",
                           "/v1/models"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct http_response r;
        json_t *j = oai_call("GET", paths[i], NULL, &r);
        CHECK(r.status == 404, "GET %s: HTTP %ld, want 404", paths[i], r.status);
        http_response_free(&r);
        oai_check_error(j, "not_found_error", NULL);
        json_decref(j);
    }
}

/* POSTs a background response; its id goes into id (64 bytes), its trace into
 * trace (when not NULL). */
static void oai_background(const char *input, char *id, char *trace)
{
    struct http_response r;
    char body[512], hdr[80];
    snprintf(body, sizeof(body), "{\"model\":\"m\",\"input\":\"%s\",\"background\":true}",
             input);
    json_t *j = oai_call("POST", "/v1/responses", body, &r);
    CHECK(r.status == 200, "POST: HTTP %ld: %s", r.status, STR(r.body));
    CHECK(http_header(&r, "x-chatq-trace-id", hdr, sizeof(hdr)), "no trace header");
    http_response_free(&r);
    snprintf(id, 64, "%s", STR(http_json_str(j, "id")));
    if (trace != NULL)
        snprintf(trace, UUID_LEN + 1, "%.36s", hdr);
    json_decref(j);
}

/* POST /v1/responses/{id}/cancel: the status it answers (new string in *status,
 * caller frees) and the HTTP status. */
static long oai_cancel(const char *id, char **status)
{
    struct http_response r;
    char path[128];
    snprintf(path, sizeof(path), "/v1/responses/%s/cancel", id);
    json_t *j = oai_call("POST", path, NULL, &r);
    long http = r.status;
    http_response_free(&r);
    *status = strdup(STR(http_json_str(j, "status")));
    json_decref(j);
    return http;
}

struct oai_watch {
    struct stack *s;
    const char *name;
    long long above;
    long long seen;
};

/* 1 once the fake's counter name is above w->above. */
static int oai_check_stat(void *arg)
{
    struct oai_watch *w = arg;
    json_t *st = stack_fake_stats(w->s);
    w->seen = stack_stat(st, w->name, 0);
    json_decref(st);
    return w->seen > w->above;
}

/* A running upstream call is aborted within a second of the cancel; the chat ends
 * cancelled, through both fronts; cancelling again returns the same object. */
static void test_openai_cancel_aborts(void **state)
{
    (void)state;
    struct stack *s = &oai_stack;
    char id[64], trace[UUID_LEN + 1], *st = NULL;
    json_t *stats = stack_fake_stats(s);
    long long aborted = stack_stat(stats, "aborted", 0);
    long long in_flight = stack_stat(stats, "in_flight", 0);
    json_decref(stats);

    oai_background("[[fake latency=60000]] a slow one", id, trace);
    struct oai_watch w = {s, "in_flight", in_flight, 0};
    CHECK(harness_poll(harness_timeout(10000), 10, oai_check_stat, &w) == 0,
          "the call never reached the upstream");

    long long t0 = harness_now_ms();
    CHECK(oai_cancel(id, &st) == 200 && strcmp(st, "cancelled") == 0,
          "cancel answered %s", STR(st));
    free(st);
    struct oai_watch a = {s, "aborted", aborted, 0};
    CHECK(harness_poll(harness_timeout(5000), 10, oai_check_stat, &a) == 0,
          "the upstream call was not aborted (aborted %lld)", a.seen);
    long long took = harness_now_ms() - t0;
    fprintf(stderr, "integration: cancel -> upstream call aborted in %lld ms\n", took);
    CHECK(took < harness_timeout(1000) + 1000,
          "the abort took %lld ms, want about a second at most", took);

    CHECK(oai_cancel(id, &st) == 200 && strcmp(st, "cancelled") == 0,
          "a second cancel answered %s", STR(st));
    free(st);
    json_t *seed = chat_wait(s, trace, OAI_CHAT_MS, NULL);
    CHECK(seed != NULL && strcmp(STR(http_json_str(seed, "status")), "cancelled") == 0,
          "GET /chat/%s/response: %s", trace, STR(http_json_str(seed, "status")));
    json_decref(seed);
    char why[256];
    CHECK(stack_drained(s, harness_timeout(10000), why, sizeof(why)) == 0,
          "the cancelled chat's entries were not all acknowledged: %s", why);
    json_t *done = oai_wait(id);
    CHECK(done != NULL && strcmp(STR(http_json_str(done, "status")), "cancelled") == 0,
          "the record changed after the cancel: %s", STR(http_json_str(done, "status")));
    CHECK(json_array_size(json_object_get(done, "output")) == 0, "a cancelled output");
    json_decref(done);
}

#define OAI_RACE_CHATS 40

/* Cancels racing completions: each chat ends exactly one way, the way the cancel
 * answered, and stays so. */
static void test_openai_cancel_race(void **state)
{
    (void)state;
    struct stack *s = &oai_stack;
    char ids[OAI_RACE_CHATS][64], answered[OAI_RACE_CHATS][16];
    int cancelled = 0, completed = 0;
    for (int i = 0; i < OAI_RACE_CHATS; i++) {
        char input[96];
        /* Latencies around the moment the cancel comes. */
        snprintf(input, sizeof(input), "[[fake latency=%d]] race %d", (i % 8) * 15, i);
        oai_background(input, ids[i], NULL);
        harness_sleep_ms((i % 5) * 12);
        char *st = NULL;
        CHECK(oai_cancel(ids[i], &st) == 200, "cancel %d failed", i);
        snprintf(answered[i], sizeof(answered[i]), "%s", STR(st));
        free(st);
    }
    for (int i = 0; i < OAI_RACE_CHATS; i++) {
        json_t *done = oai_wait(ids[i]);
        CHECK(done != NULL, "response %d did not end", i);
        const char *st = STR(http_json_str(done, "status"));
        CHECK(strcmp(st, answered[i]) == 0, "chat %d: cancel answered %s, now %s", i,
              answered[i], st);
        if (strcmp(st, "cancelled") == 0) {
            cancelled++;
            CHECK(json_array_size(json_object_get(done, "output")) == 0 &&
                      json_is_null(json_object_get(done, "usage")),
                  "chat %d is cancelled and has an answer too", i);
        } else {
            completed++;
            CHECK(strcmp(st, "completed") == 0, "chat %d ended %s", i, st);
            CHECK(oai_output_text(done) != NULL, "chat %d completed without output", i);
        }
        json_decref(done);
    }
    fprintf(stderr, "integration: cancel race: %d cancelled, %d completed\n", cancelled,
            completed);
    char why[256];
    CHECK(stack_drained(s, harness_timeout(15000), why, sizeof(why)) == 0,
          "not drained: %s", why);
    CHECK(stack_xlen(s, s->keys.dead) <= 0, "dead letters were written");
}

/* A processor dies mid-call; the chat is cancelled while nobody holds it; the
 * processor that takes it over makes no new upstream call and acknowledges it. */
static void test_openai_cancel_takeover(void **state)
{
    (void)state;
    struct stack *s = &oai_stack;
    char id[64], trace[UUID_LEN + 1], how[64], *st = NULL, why[256];
    int status;
    json_t *stats = stack_fake_stats(s);
    long long requests = stack_stat(stats, "requests", 0);
    long long in_flight = stack_stat(stats, "in_flight", 0);
    json_decref(stats);

    oai_background("[[fake latency=60000]] orphaned", id, trace);
    struct oai_watch w = {s, "in_flight", in_flight, 0};
    CHECK(harness_poll(harness_timeout(10000), 10, oai_check_stat, &w) == 0,
          "the call never reached the upstream");
    CHECK(proc_signal(s->processor, SIGKILL) == 0, "the processor is not running");
    CHECK(proc_wait(s->processor, 5000, &status) == 0, "the processor did not die (%s)",
          proc_describe(status, how, sizeof(how)));
    proc_free(s->processor);
    s->processor = NULL;

    CHECK(oai_cancel(id, &st) == 200 && strcmp(st, "cancelled") == 0,
          "cancel answered %s", STR(st));
    free(st);
    s->processor = stack_processor_start(s, "processor-b", NULL);
    CHECK(s->processor != NULL, "processor B did not start");
    /* B takes the entry over after CLAIM_IDLE_MS and must only acknowledge it. */
    CHECK(stack_drained(s, harness_timeout(20000), why, sizeof(why)) == 0,
          "the cancelled entry was not taken over and acknowledged: %s", why);
    stats = stack_fake_stats(s);
    long long after = stack_stat(stats, "requests", 0);
    json_decref(stats);
    CHECK(after == requests + 1, "the upstream got %lld calls for the chat, want 1",
          after - requests);
    json_t *done = oai_wait(id);
    CHECK(done != NULL && strcmp(STR(http_json_str(done, "status")), "cancelled") == 0,
          "status %s", STR(http_json_str(done, "status")));
    json_decref(done);
    char log[sizeof(s->dir) + 32];
    snprintf(log, sizeof(log), "%.1000s/processor-b.log", s->dir);
    CHECK(harness_file_contains(log, "cancelled by the client") == 1,
          "processor B did not see the cancel");
}

/* The seed contract's cancel: POST /chat/{traceId}/cancel and DELETE /chat/{traceId}
 * abort the call the same way, and the OpenAI front reads the same record. */
static void test_chat_cancel(void **state)
{
    (void)state;
    struct stack *s = &oai_stack;
    struct http_response r;
    char trace[UUID_LEN + 1], path[128], hex[40];
    json_t *stats = stack_fake_stats(s);
    long long aborted = stack_stat(stats, "aborted", 0);
    long long in_flight = stack_stat(stats, "in_flight", 0);
    json_decref(stats);

    CHECK(chat_post(s, "[[fake latency=60000]] cancel me", NULL, -1, trace) == 0,
          "POST /chat failed");
    struct oai_watch w = {s, "in_flight", in_flight, 0};
    CHECK(harness_poll(harness_timeout(10000), 10, oai_check_stat, &w) == 0,
          "the call never reached the upstream");
    snprintf(path, sizeof(path), "/chat/%s/cancel", trace);
    json_t *j = oai_call("POST", path, NULL, &r);
    CHECK(r.status == 200, "POST %s: HTTP %ld: %s", path, r.status, STR(r.body));
    http_response_free(&r);
    CHECK(strcmp(STR(http_json_str(j, "status")), "cancelled") == 0 &&
              strcmp(STR(http_json_str(j, "traceId")), trace) == 0,
          "cancel answered status %s", STR(http_json_str(j, "status")));
    json_decref(j);
    struct oai_watch a = {s, "aborted", aborted, 0};
    CHECK(harness_poll(harness_timeout(5000), 10, oai_check_stat, &a) == 0,
          "the upstream call was not aborted");

    snprintf(path, sizeof(path), "/chat/%s", trace);
    j = oai_call("DELETE", path, NULL, &r);
    CHECK(r.status == 200 && strcmp(STR(http_json_str(j, "status")), "cancelled") == 0,
          "DELETE %s: HTTP %ld: %s", path, r.status, STR(r.body));
    http_response_free(&r);
    json_decref(j);
    j = oai_call("GET", path, NULL, &r);
    CHECK(r.status == 405, "GET %s: HTTP %ld, want 405", path, r.status);
    http_response_free(&r);
    json_decref(j);

    size_t n = 0;
    for (const char *p = trace; *p; p++)
        if (*p != '-')
            hex[n++] = *p;
    hex[n] = '\0';
    snprintf(path, sizeof(path), "/v1/responses/resp_%s", hex);
    j = oai_call("GET", path, NULL, &r);
    CHECK(r.status == 200 && strcmp(STR(http_json_str(j, "status")), "cancelled") == 0,
          "GET %s: HTTP %ld: %s", path, r.status, STR(r.body));
    http_response_free(&r);
    json_decref(j);

    j = oai_call("POST", "/chat/0f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b/cancel", NULL, &r);
    CHECK(r.status == 404 && strcmp(STR(http_error_code(j)), "trace_not_found") == 0,
          "cancel of an unknown trace: HTTP %ld: %s", r.status, STR(r.body));
    http_response_free(&r);
    json_decref(j);
}

/* Prints a file to stderr (the SDK run's whole report, when it failed). */
static void oai_print_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        fputs(line, stderr);
    if (f != NULL)
        fclose(f);
}

/* The official openai npm package, unchanged, against this stack: node runs
 * tests/sdk/sdk.test.mjs (make test installs the package, pinned by
 * tests/sdk/package-lock.json); any failing SDK test fails this one. */
static void test_openai_sdk(void **state)
{
    (void)state;
    char log[1100], base[128], fake[128], desc[64];
    int status = -1;
    CHECK(access(OAI_SDK_DIR "/node_modules/openai/package.json", R_OK) == 0,
          "the openai npm package is not installed: run make test, or npm ci in "
          "%s",
          OAI_SDK_DIR);
    snprintf(log, sizeof(log), "%.1000s/sdk.log", oai_stack.dir);
    snprintf(base, sizeof(base), "CHATQ_BASE_URL=%s/v1", oai_stack.api_url);
    snprintf(fake, sizeof(fake), "CHATQ_FAKE_URL=%s", oai_stack.fake_url);
    char *const argv[] = {"node", "--test", "--test-reporter=spec",
                          OAI_SDK_DIR "/sdk.test.mjs", NULL};
    char *const env[] = {base, fake, NULL};
    struct proc *p = proc_start("sdk", log, argv, env, 0);
    CHECK(p != NULL, "cannot start node");
    int waited = proc_wait(p, harness_timeout(OAI_SDK_MS), &status);
    proc_free(p);
    if (waited != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        oai_print_file(log);
        fail_msg("the SDK tests failed (%s); their report is above",
                 waited != 0 ? "still running"
                             : proc_describe(status, desc, sizeof(desc)));
    }
}

/* A wait that ends (WAIT_MAX_MS) loses nothing: the chat goes on and is read by the
 * id the answer carried. Runs last: it restarts the api with a short wait. */
static void test_openai_wait_bounded(void **state)
{
    (void)state;
    struct stack *s = &oai_stack;
    static const char *const short_wait[] = {"WAIT_MAX_MS=300", NULL};
    struct http_response r;
    char trace[80], retry[16], poll[16];
    int status = proc_stop(s->api);
    CHECK(status >= 0, "the api did not stop on SIGTERM");
    CHECK(stack_api_restart(s, "api-short-wait", short_wait) == 0,
          "the api did not start");

    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"[[fake latency=1500]] slow\"}]}";
    json_t *j = oai_call("POST", "/v1/chat/completions", body, &r);
    CHECK(r.status == 504, "HTTP %ld, want 504: %s", r.status, STR(r.body));
    CHECK(http_header(&r, "x-chatq-trace-id", trace, sizeof(trace)), "no trace id");
    CHECK(http_header(&r, "x-should-retry", retry, sizeof(retry)) &&
              strcmp(retry, "false") == 0,
          "x-should-retry: false missing");
    http_response_free(&r);
    CHECK(strcmp(STR(http_json_str(json_object_get(j, "error"), "code")),
                 "wait_timeout") == 0,
          "code %s", STR(http_json_str(json_object_get(j, "error"), "code")));
    json_decref(j);
    json_t *done = chat_wait(s, trace, OAI_CHAT_MS, NULL);
    CHECK(done != NULL && strcmp(STR(http_json_str(done, "status")), "completed") == 0,
          "the chat behind the 504 did not complete");
    json_decref(done);

    body = "{\"model\":\"m\",\"input\":\"[[fake latency=1500]] slow too\"}";
    j = oai_call("POST", "/v1/responses", body, &r);
    CHECK(r.status == 200, "HTTP %ld: %s", r.status, STR(r.body));
    CHECK(http_header(&r, "openai-poll-after-ms", poll, sizeof(poll)),
          "no openai-poll-after-ms on an unfinished response");
    http_response_free(&r);
    const char *st = STR(http_json_str(j, "status"));
    CHECK(strcmp(st, "queued") == 0 || strcmp(st, "in_progress") == 0, "status %s", st);
    char rid[64];
    snprintf(rid, sizeof(rid), "%s", STR(http_json_str(j, "id")));
    json_decref(j);
    done = oai_wait(rid);
    CHECK(done != NULL && strcmp(STR(http_json_str(done, "status")), "completed") == 0,
          "the response behind the ended wait did not complete");
    json_decref(done);
}

/* Sends method path with body and "Authorization: Bearer key" (no header when key
 * is NULL); returns the parsed body, the response in *r. */
static json_t *oai_call_as(const char *key, const char *method, const char *path,
                           const char *body, struct http_response *r)
{
    char url[256], auth[128];
    const char *headers[] = {auth, NULL};
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key ? key : "");
    stack_url(&oai_stack, path, url, sizeof(url));
    if (http_request_with(method, url, key ? headers : NULL, body,
                          body ? strlen(body) : 0, OAI_HTTP_MS, r) != 0) {
        fprintf(stderr, "integration: %s %s: %s\n", method, path, r->error);
        return NULL;
    }
    return http_json(r);
}

/* With gateway keys, a response is its key's alone: another key reads, cancels and
 * deletes nothing (404, as if it did not exist), and no key is a 401 in OpenAI's
 * shape. Runs last: it restarts the api with keys. */
static void test_openai_keys(void **state)
{
    (void)state;
    struct stack *s = &oai_stack;
    static const char *const keys[] = {"API_KEYS=key-one-1234,key-two-5678", NULL};
    struct http_response r;
    char path[128], www[64];
    CHECK(proc_stop(s->api) >= 0, "the api did not stop on SIGTERM");
    CHECK(stack_api_restart(s, "api-keys", keys) == 0, "the api did not start");

    json_t *j = oai_call_as("key-one-1234", "POST", "/v1/responses",
                            "{\"model\":\"m\",\"input\":\"[[fake latency=3000]] "
                            "mine\",\"background\":true}",
                            &r);
    CHECK(r.status == 200, "POST with key one: HTTP %ld: %s", r.status, STR(r.body));
    http_response_free(&r);
    char id[64];
    snprintf(id, sizeof(id), "%s", STR(http_json_str(j, "id")));
    json_decref(j);

    snprintf(path, sizeof(path), "/v1/responses/%s", id);
    j = oai_call_as(NULL, "GET", path, NULL, &r);
    CHECK(r.status == 401 && http_header(&r, "WWW-Authenticate", www, sizeof(www)),
          "no key: HTTP %ld, want 401 with WWW-Authenticate", r.status);
    http_response_free(&r);
    oai_check_error(j, "authentication_error", NULL);
    json_decref(j);

    j = oai_call_as("key-two-5678", "GET", path, NULL, &r);
    CHECK(r.status == 404, "another key's GET: HTTP %ld, want 404", r.status);
    http_response_free(&r);
    json_decref(j);
    snprintf(path, sizeof(path), "/v1/responses/%s/cancel", id);
    j = oai_call_as("key-two-5678", "POST", path, NULL, &r);
    CHECK(r.status == 404, "another key's cancel: HTTP %ld, want 404", r.status);
    http_response_free(&r);
    json_decref(j);
    snprintf(path, sizeof(path), "/v1/responses/%s", id);
    j = oai_call_as("key-two-5678", "DELETE", path, NULL, &r);
    CHECK(r.status == 404, "another key's DELETE: HTTP %ld, want 404", r.status);
    http_response_free(&r);
    json_decref(j);

    /* Untouched by the other key: it runs to its end for its own. */
    j = oai_call_as("key-one-1234", "GET", path, NULL, &r);
    CHECK(r.status == 200, "key one's GET: HTTP %ld", r.status);
    const char *st = STR(http_json_str(j, "status"));
    CHECK(strcmp(st, "queued") == 0 || strcmp(st, "in_progress") == 0 ||
              strcmp(st, "completed") == 0,
          "status %s after another key's cancel and delete", st);
    http_response_free(&r);
    json_decref(j);
    j = oai_call_as("key-one-1234", "DELETE", path, NULL, &r);
    CHECK(r.status == 200 && json_is_true(json_object_get(j, "deleted")),
          "key one's DELETE: HTTP %ld: %s", r.status, STR(r.body));
    http_response_free(&r);
    json_decref(j);
    j = oai_call_as("key-one-1234", "GET", path, NULL, &r);
    CHECK(r.status == 404, "GET after DELETE: HTTP %ld, want 404", r.status);
    http_response_free(&r);
    json_decref(j);
    char why[256];
    CHECK(stack_drained(s, harness_timeout(10000), why, sizeof(why)) == 0,
          "the deleted chat's entries were not all acknowledged: %s", why);
    CHECK(stack_xlen(s, s->keys.dead) <= 0, "the deleted chat left a dead letter");
}

static const struct CMUnitTest oai_tests[] = {
    cmocka_unit_test(test_openai_background),
    cmocka_unit_test(test_openai_conversation),
    cmocka_unit_test(test_openai_incomplete),
    cmocka_unit_test(test_openai_chat_completions),
    cmocka_unit_test(test_openai_upstream_errors),
    cmocka_unit_test(test_openai_bad_requests),
    cmocka_unit_test(test_openai_not_found),
    cmocka_unit_test(test_openai_cancel_aborts),
    cmocka_unit_test(test_openai_cancel_race),
    cmocka_unit_test(test_openai_cancel_takeover),
    cmocka_unit_test(test_chat_cancel),
    cmocka_unit_test(test_openai_sdk),
    cmocka_unit_test(test_openai_wait_bounded),
    cmocka_unit_test(test_openai_keys),
};

const struct suite_group suite_openai = {"openai", oai_tests,
                                         sizeof(oai_tests) / sizeof(oai_tests[0]),
                                         oai_setup, oai_teardown};
