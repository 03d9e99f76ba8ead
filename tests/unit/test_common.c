/* test_common.c - unit tests of common/: record encoding and parsing, config
 * loading, Redis URLs, trace ids (the log line: test_log.c). */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "cmd.h"
#include "config.h"
#include "events.h"
#include "keys.h"
#include "rconn.h"
#include "record.h"
#include "stream.h"
#include "uuid.h"
#include "version.h"
#include "workers.h"

#define TRACE "0b1f7a52-3c1e-4f7a-9d2b-1a2b3c4d5e6f"

/* A field/value array reply, the shape XREADGROUP entries and HGETALL have,
 * built from a command's argv (skipping the command name): so what
 * record_*_append writes is parsed back exactly as Redis would hand it over. */
static redisReply *fields_from_cmd(const struct cmd *c, int skip)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_ARRAY;
    r->elements = (size_t)(c->argc - skip);
    r->element = calloc(r->elements, sizeof(*r->element));
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = calloc(1, sizeof(*e));
        e->type = REDIS_REPLY_STRING;
        e->len = c->len[i + (size_t)skip];
        e->str = malloc(e->len + 1);
        memcpy(e->str, c->argv[i + (size_t)skip], e->len);
        e->str[e->len] = '\0';
        r->element[i] = e;
    }
    return r;
}

static void test_request_roundtrip(void **state)
{
    (void)state;
    struct chat_request req = {.trace = TRACE,
                               .message = "héllo\nworld",
                               .message_len = strlen("héllo\nworld"),
                               .model = "gpt-4o-mini",
                               .temperature = 0.7,
                               .accepted = "2025-08-19T17:45:00.000Z"};
    struct cmd c;
    cmd_init(&c, "XADD");
    record_request_append(&req, &c);
    assert_false(c.overflow);
    redisReply *fields = fields_from_cmd(&c, 1);

    struct chat_request out;
    char err[128];
    assert_int_equal(record_request_parse(fields, &out, err, sizeof(err)), 0);
    assert_string_equal(out.trace, TRACE);
    assert_int_equal(out.message_len, req.message_len);
    assert_memory_equal(out.message, req.message, req.message_len);
    assert_string_equal(out.model, "gpt-4o-mini");
    assert_true(out.temperature == 0.7);
    assert_string_equal(out.accepted, req.accepted);
    freeReplyObject(fields);
    cmd_free(&c);
}

/* The OpenAI front's record: a conversation instead of one message, with top_p, the
 * token cap and the passed-on parameters; a record with neither or both of message
 * and messages is refused. */
static void test_request_messages(void **state)
{
    (void)state;
    static const char conv[] = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    struct chat_request req = {.trace = TRACE,
                               .messages = conv,
                               .messages_len = sizeof(conv) - 1,
                               .model = "m",
                               .temperature = 1,
                               .top_p = 0.25,
                               .has_top_p = 1,
                               .max_tokens = 12,
                               .params = "{\"seed\":1}",
                               .params_len = 10};
    struct cmd c;
    cmd_init(&c, "XADD");
    record_request_append(&req, &c);
    redisReply *fields = fields_from_cmd(&c, 1);
    struct chat_request out;
    char err[128];
    assert_int_equal(record_request_parse(fields, &out, err, sizeof(err)), 0);
    assert_null(out.message);
    assert_memory_equal(out.messages, conv, sizeof(conv) - 1);
    assert_true(out.has_top_p && out.top_p == 0.25);
    assert_int_equal(out.max_tokens, 12);
    assert_memory_equal(out.params, "{\"seed\":1}", 10);
    freeReplyObject(fields);
    cmd_addz(&c, REC_MESSAGE);
    cmd_addz(&c, "both");
    fields = fields_from_cmd(&c, 1);
    assert_int_equal(record_request_parse(fields, &out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "messages"));
    freeReplyObject(fields);
    cmd_free(&c);
}

static void test_request_poison(void **state)
{
    (void)state;
    /* field/value pairs (NULL ends them), then the word the reason must name */
    static const char *const cases[][10] = {
        {"message", "hi", "model", "m", "temperature", "1", NULL, NULL, NULL, "trace"},
        {"trace", "nope", "message", "hi", "model", "m", NULL, NULL, NULL, "trace"},
        {"trace", TRACE, "model", "m", "temperature", "1", NULL, NULL, NULL, "message"},
        {"trace", TRACE, "message", "hi", "temperature", "1", NULL, NULL, NULL, "model"},
        {"trace", TRACE, "message", "hi", "model", "m", NULL, NULL, NULL, "temperature"},
        {"trace", TRACE, "message", "hi", "model", "m", "temperature", "2.5", NULL,
         "temperature"},
        {"trace", TRACE, "message", "", "model", "m", "temperature", "1", NULL,
         "message"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct cmd c;
        cmd_init(&c, "X");
        for (int i = 0; i < 9 && cases[k][i]; i++)
            cmd_addz(&c, cases[k][i]);
        redisReply *fields = fields_from_cmd(&c, 1);
        struct chat_request out;
        char err[128] = "";
        assert_int_equal(record_request_parse(fields, &out, err, sizeof(err)), -1);
        assert_non_null(strstr(err, cases[k][9]));
        /* A well-formed trace survives a bad entry, so the trace can be failed. */
        if (k >= 2)
            assert_string_equal(out.trace, TRACE);
        freeReplyObject(fields);
        cmd_free(&c);
    }
}

static void test_result_roundtrip(void **state)
{
    (void)state;
    struct chat_result r;
    record_result_init(&r);
    r.trace = TRACE;
    r.status = CHAT_COMPLETED;
    r.response = "an answer";
    r.response_len = 9;
    r.model = "gpt-3.5-turbo";
    r.prompt_tokens = 15;
    r.completion_tokens = 20;
    r.total_tokens = 35;
    r.timestamp = "2025-08-19T17:45:00.000Z";
    r.attempts = 2;

    struct cmd c;
    cmd_init(&c, "XADD");
    record_result_append(&r, &c);
    redisReply *fields = fields_from_cmd(&c, 1);
    struct chat_result out;
    char err[128];
    assert_int_equal(record_result_parse(fields, &out, err, sizeof(err)), 0);
    assert_int_equal(out.status, CHAT_COMPLETED);
    assert_string_equal(out.trace, TRACE);
    assert_string_equal(out.response, "an answer");
    assert_string_equal(out.model, "gpt-3.5-turbo");
    assert_int_equal(out.prompt_tokens, 15);
    assert_int_equal(out.completion_tokens, 20);
    assert_int_equal(out.total_tokens, 35);
    assert_int_equal(out.attempts, 2);
    assert_null(out.error_code);
    freeReplyObject(fields);
    cmd_free(&c);

    /* A failure carries its error and no usage. */
    record_result_init(&r);
    r.trace = TRACE;
    r.status = CHAT_FAILED;
    r.error_code = "invalid_api_key";
    r.error_message = "Incorrect API key provided";
    cmd_init(&c, "XADD");
    record_result_append(&r, &c);
    fields = fields_from_cmd(&c, 1);
    assert_int_equal(record_result_parse(fields, &out, err, sizeof(err)), 0);
    assert_int_equal(out.status, CHAT_FAILED);
    assert_string_equal(out.error_code, "invalid_api_key");
    assert_string_equal(out.error_message, "Incorrect API key provided");
    assert_int_equal(out.total_tokens, -1);
    assert_null(out.response);
    freeReplyObject(fields);
    cmd_free(&c);
}

static void test_result_bad_status(void **state)
{
    (void)state;
    struct cmd c;
    cmd_init(&c, "X");
    cmd_addz(&c, "status");
    cmd_addz(&c, "done");
    redisReply *fields = fields_from_cmd(&c, 1);
    struct chat_result out;
    char err[128];
    assert_int_equal(record_result_parse(fields, &out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "done"));
    freeReplyObject(fields);
    cmd_free(&c);
}

static void test_cmd_grows(void **state)
{
    (void)state;
    struct cmd c;
    char num[16];
    cmd_init(&c, "X");
    /* Far past the inline room: the arguments move to the heap, in order. */
    for (int i = 0; i < 5 * CMD_INLINE_ARGS; i++)
        cmd_addll(&c, i % CMD_MAX_NUMS == 0 ? 0 : 1);
    assert_true(c.overflow); /* more numbers than CMD_MAX_NUMS */
    cmd_free(&c);

    cmd_init(&c, "X");
    for (int i = 0; i < 5 * CMD_INLINE_ARGS; i++)
        cmd_addz(&c, i % 2 ? "odd" : "even");
    cmd_addll(&c, 42);
    assert_false(c.overflow);
    assert_int_equal(c.argc, 5 * CMD_INLINE_ARGS + 2);
    assert_string_equal(c.argv[0], "X");
    assert_string_equal(c.argv[2], "odd");
    assert_int_equal(c.len[3], 4);
    snprintf(num, sizeof(num), "%.*s", (int)c.len[c.argc - 1], c.argv[c.argc - 1]);
    assert_string_equal(num, "42");
    cmd_free(&c);
    cmd_free(&c); /* safe twice */
}

/* cmd_format_ll writes what "%lld" writes, at the ends of the range too. */
static void test_cmd_format_ll(void **state)
{
    (void)state;
    const long long v[] = {0,         7,         -7,           10,
                           99,        100,       -1000,        1796000889400790LL,
                           LLONG_MAX, LLONG_MIN, LLONG_MIN + 1};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char got[CMD_LL_MAX], want[32];
        int n = snprintf(want, sizeof(want), "%lld", v[i]);
        assert_int_equal(cmd_format_ll(got, v[i]), (size_t)n);
        assert_string_equal(got, want);
    }
}

/* cmd_resp writes what hiredis would send for the same arguments: empty ones,
 * ones holding NUL and CRLF, a long one, NUL-terminated or with lengths. */
static void test_cmd_resp(void **state)
{
    (void)state;
    static char big[70000];
    memset(big, 'x', sizeof(big));
    const char *argv[] = {"EVALSHA", "", "a\0b\r\nc", big, "42"};
    const size_t lens[] = {7, 0, 6, sizeof(big), 2};
    for (int argc = 1; argc <= 5; argc++) {
        char *want = NULL;
        long long wlen = redisFormatCommandArgv(&want, argc, argv, lens);
        size_t len = 0;
        char *got = cmd_resp(argc, argv, lens, &len);
        assert_non_null(got);
        assert_int_equal(len, (size_t)wlen);
        assert_memory_equal(got, want, len);
        free(got);
        redisFreeCommand(want);
    }
    const char *z[] = {"GET", "chatq:trace:1"};
    size_t len = 0;
    char *got = cmd_resp(2, z, NULL, &len);
    assert_non_null(got);
    const char want[] = "*2\r\n$3\r\nGET\r\n$13\r\nchatq:trace:1\r\n";
    assert_int_equal(len, sizeof(want) - 1);
    assert_memory_equal(got, want, len);
    free(got);
}

static void test_uuid(void **state)
{
    (void)state;
    char a[UUID_LEN + 1], b[UUID_LEN + 1];
    assert_int_equal(uuid_v4(a), 0);
    assert_int_equal(uuid_v4(b), 0);
    assert_true(uuid_valid(a));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
    assert_true(uuid_valid("0B1F7A52-3C1E-4F7A-9D2B-1A2B3C4D5E6F"));
    assert_false(uuid_valid(""));
    assert_false(uuid_valid("0b1f7a52-3c1e-4f7a-9d2b-1a2b3c4d5e6"));
    assert_false(uuid_valid("0b1f7a52-3c1e-4f7a-9d2b-1a2b3c4d5e6ff"));
    assert_false(uuid_valid("0b1f7a52x3c1e-4f7a-9d2b-1a2b3c4d5e6f"));
    assert_false(uuid_valid("0b1f7a52-3c1e-4f7a-9d2b-1a2b3c4d5e6g"));
}

static void test_clock_iso(void **state)
{
    (void)state;
    char ts[CLOCK_ISO_LEN];
    clock_iso8601(ts, 1755625500123LL);
    assert_string_equal(ts, "2025-08-19T17:45:00.123Z");
}

static void test_clock_timeval(void **state)
{
    (void)state;
    const struct {
        long long ms;
        long sec, usec;
    } cases[] = {{0, 0, 0},
                 {1, 0, 1000},
                 {999, 0, 999000},
                 {1000, 1, 0},
                 {1001, 1, 1000},
                 {2500, 2, 500000},
                 {-1, 0, 0},
                 {-1500, 0, 0},
                 {86400123LL, 86400, 123000},
                 {4102444800999LL, 4102444800L, 999000}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct timeval tv = clock_timeval(cases[i].ms);
        assert_int_equal(tv.tv_sec, cases[i].sec);
        assert_int_equal(tv.tv_usec, cases[i].usec);
        struct timespec ts = clock_timespec(cases[i].ms);
        assert_int_equal(ts.tv_sec, cases[i].sec);
        assert_int_equal(ts.tv_nsec, cases[i].usec * 1000);
    }
}

static void test_stream_id_index(void **state)
{
    (void)state;
    const char *ids[] = {"1-0", "1-1", "2-0", "3-7"};
    size_t hint = 0;
    /* In order: each found at the first look. */
    for (long i = 0; i < 4; i++)
        assert_int_equal(stream_id_index(ids, 4, ids[i], &hint), i);
    /* Out of order and missing ones too. */
    assert_int_equal(stream_id_index(ids, 4, "1-1", &hint), 1);
    assert_int_equal(hint, 2);
    assert_int_equal(stream_id_index(ids, 4, "9-9", &hint), -1);
    assert_int_equal(stream_id_index(ids, 0, "1-0", &hint), -1);
}

static void test_redis_url(void **state)
{
    (void)state;
    struct rconn_url u;
    char err[128];
    assert_int_equal(rconn_url_parse("redis://127.0.0.1:6379/0", &u, err, sizeof(err)),
                     0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.pass, "");

    assert_int_equal(
        rconn_url_parse("redis://bob:s3cret@redis:7000/3", &u, err, sizeof(err)), 0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.pass, "s3cret");
    assert_string_equal(u.host, "redis");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);
    char desc[128];
    rconn_url_describe(&u, desc, sizeof(desc));
    assert_null(strstr(desc, "s3cret"));

    assert_int_equal(rconn_url_parse("redis://:pw@h", &u, err, sizeof(err)), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "pw");
    assert_int_equal(u.port, 6379);

    assert_int_equal(rconn_url_parse("http://h:1", &u, err, sizeof(err)), -1);
    assert_int_equal(rconn_url_parse("redis://h:99999", &u, err, sizeof(err)), -1);
    assert_int_equal(rconn_url_parse("redis://h:1/x", &u, err, sizeof(err)), -1);
    assert_int_equal(rconn_url_parse("redis://:pw@", &u, err, sizeof(err)), -1);
    assert_null(strstr(err, "pw"));
}

struct test_cfg {
    struct config_common common;
    long long n;
    const char *key;
};

static void test_reconnect_backoff(void **state)
{
    (void)state;
    long long expect[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000};
    long long d = 0;
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        d = rconn_backoff_ms(d);
        assert_int_equal(d, expect[i]);
    }
}

static void test_config_layers(void **state)
{
    (void)state;
    struct test_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    const struct config_var vars[] = {
        CONFIG_COMMON_VARS(cfg.common),
        {"CHATQ_TEST_N", "n", CONFIG_INT, "5", "a number", &cfg.n, 1, 10, 0},
        {"CHATQ_TEST_KEY", "key", CONFIG_STR, NULL, "a secret", &cfg.key, 0, 0, 1},
    };
    size_t n = sizeof(vars) / sizeof(vars[0]);
    char err[256];
    char *argv0[] = {"prog", NULL};

    unsetenv("CHATQ_TEST_N");
    unsetenv("CHATQ_PREFIX");
    assert_int_equal(config_load(vars, n, 1, argv0, err, sizeof(err)), CONFIG_OK);
    assert_int_equal(cfg.n, 5);
    assert_string_equal(cfg.common.prefix, "chatq:");
    assert_null(cfg.key);

    setenv("CHATQ_TEST_N", "7", 1);
    assert_int_equal(config_load(vars, n, 1, argv0, err, sizeof(err)), CONFIG_OK);
    assert_int_equal(cfg.n, 7);

    char *argv1[] = {"prog", "--n", "9", "--prefix=x:", NULL};
    assert_int_equal(config_load(vars, n, 4, argv1, err, sizeof(err)), CONFIG_OK);
    assert_int_equal(cfg.n, 9);
    assert_string_equal(cfg.common.prefix, "x:");

    setenv("CHATQ_TEST_N", "11", 1);
    assert_int_equal(config_load(vars, n, 1, argv0, err, sizeof(err)), CONFIG_ERROR);
    assert_non_null(strstr(err, "CHATQ_TEST_N"));
    setenv("CHATQ_TEST_N", "abc", 1);
    assert_int_equal(config_load(vars, n, 1, argv0, err, sizeof(err)), CONFIG_ERROR);
    assert_non_null(strstr(err, "CHATQ_TEST_N"));
    unsetenv("CHATQ_TEST_N");

    char *argv2[] = {"prog", "--nope", "1", NULL};
    assert_int_equal(config_load(vars, n, 3, argv2, err, sizeof(err)), CONFIG_ERROR);
    assert_non_null(strstr(err, "--nope"));
    char *argv3[] = {"prog", "--n", NULL};
    assert_int_equal(config_load(vars, n, 2, argv3, err, sizeof(err)), CONFIG_ERROR);
    char *argv4[] = {"prog", "--help", NULL};
    assert_int_equal(config_load(vars, n, 2, argv4, err, sizeof(err)), CONFIG_HELP);
}

static void test_config_usage_hides_secrets(void **state)
{
    (void)state;
    struct test_cfg cfg;
    const struct config_var vars[] = {
        {"CHATQ_TEST_KEY", "key", CONFIG_STR, "sk-default-secret", "a secret", &cfg.key,
         0, 0, 1},
    };
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_usage(f, "prog", "summary", vars, 1);
    fclose(f);
    assert_non_null(strstr(buf, "CHATQ_TEST_KEY"));
    assert_null(strstr(buf, "sk-default-secret"));
    free(buf);
}

static void test_keys(void **state)
{
    (void)state;
    struct keys k;
    assert_int_equal(keys_init(&k, "chatq:"), 0);
    assert_string_equal(k.requests, "chatq:requests");
    assert_string_equal(k.results, "chatq:results");
    assert_string_equal(k.dead, "chatq:dead");
    char t[KEYS_MAX + 64];
    keys_trace(&k, TRACE, t, sizeof(t));
    assert_string_equal(t, "chatq:trace:" TRACE);
    keys_idem(&k, "order-42", t, sizeof(t));
    assert_string_equal(t, "chatq:idem:order-42");
    keys_events(&k, TRACE, t, sizeof(t));
    assert_string_equal(t, "chatq:events:" TRACE);
    char long_prefix[KEYS_PREFIX_MAX + 2];
    memset(long_prefix, 'p', sizeof(long_prefix) - 1);
    long_prefix[sizeof(long_prefix) - 1] = '\0';
    assert_int_equal(keys_init(&k, long_prefix), -1);
}

/* The heartbeat: its keys, the version, the counters, and a last error cut to
 * fit; the sweep spread over 0.5x-1.5x of half the idle time, 30 s at most. */
static void test_workers(void **state)
{
    (void)state;
    struct keys k;
    struct workers w;
    struct cmd c;
    char longmsg[1000];
    assert_int_equal(keys_init(&k, "chatq:"), 0);
    assert_string_equal(k.workers, "chatq:workers");
    assert_string_equal(k.stats, "chatq:stats");
    workers_init(&w, &k, "processor-h-1", "processor", 15000);
    assert_string_equal(w.key, "chatq:worker:processor-h-1");
    assert_int_equal(workers_beat_ms(&w), 5000);
    w.done = 7;
    memset(longmsg, 'x', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = '\0';
    workers_error(&w, "upstream_timeout", longmsg);
    assert_int_equal(strncmp(w.last_error, "upstream_timeout: xxx", 21), 0);
    assert_int_equal(strlen(w.last_error), WORKERS_ERROR_MAX - 1);
    assert_true(w.last_error_at[0] != '\0');
    workers_beat_cmd(&w, &c);
    assert_string_equal(c.argv[0], "EVAL");
    assert_string_equal(c.argv[3], "chatq:worker:processor-h-1");
    assert_string_equal(c.argv[4], "chatq:workers");
    int version = 0, done = 0;
    for (int i = 6; i + 1 < c.argc; i++) {
        version |= strcmp(c.argv[i], "version") == 0 &&
                   strcmp(c.argv[i + 1], CHATQ_VERSION) == 0;
        done |= strcmp(c.argv[i], "done") == 0 && strcmp(c.argv[i + 1], "7") == 0;
    }
    assert_true(version && done);
    cmd_free(&c);
    assert_int_equal(workers_sweep_wait_ms(1000, 0.0), 250);
    assert_int_equal(workers_sweep_wait_ms(1000, 0.999), 749);
    assert_int_equal(workers_sweep_wait_ms(300000, 0.5), 30000);
    assert_int_equal(workers_sweep_wait_ms(10, 0.0), 50);
}

/* Only the three on-the-way events are not final, so that a final status added
 * later (cancelled) ends waits and streams without a change here. */
static void test_events_final(void **state)
{
    (void)state;
    assert_false(events_final("queued"));
    assert_false(events_final("processing"));
    assert_false(events_final("retrying"));
    assert_false(events_final("delta"));
    assert_true(events_final("completed"));
    assert_true(events_final("failed"));
    assert_true(events_final("cancelled"));
    assert_false(events_final(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_roundtrip),
        cmocka_unit_test(test_request_messages),
        cmocka_unit_test(test_request_poison),
        cmocka_unit_test(test_result_roundtrip),
        cmocka_unit_test(test_result_bad_status),
        cmocka_unit_test(test_cmd_grows),
        cmocka_unit_test(test_cmd_format_ll),
        cmocka_unit_test(test_cmd_resp),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_clock_iso),
        cmocka_unit_test(test_clock_timeval),
        cmocka_unit_test(test_stream_id_index),
        cmocka_unit_test(test_redis_url),
        cmocka_unit_test(test_reconnect_backoff),
        cmocka_unit_test(test_config_layers),
        cmocka_unit_test(test_config_usage_hides_secrets),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_events_final),
    };
    return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
