/* test_metrics.c - unit tests of common/metrics: what a Prometheus server parses
 * from /metrics. Every line must be valid text exposition format 0.0.4 whatever
 * label values came in, label sets stay bounded, and counting from many threads
 * loses nothing. */
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

/* A metric name, a label set and a sample value, as the format allows them. */
#define NAME "[a-zA-Z_:][a-zA-Z0-9_:]*"
#define LABEL "[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\n]|\\\\[\"\\\\n])*\""
#define VALUE "(-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?|NaN|[-+]Inf)"

/* Checks every line of text; fails naming the first bad one. Also checks that
 * each sample belongs to the family whose TYPE came last (a family's lines are
 * together) and that a histogram's buckets never go down and end in its count. */
static void expect_valid(const char *text)
{
    regex_t help, type, sample;
    assert_int_equal(regcomp(&help, "^# HELP " NAME " [^\n]*$", REG_EXTENDED), 0);
    assert_int_equal(
        regcomp(&type, "^# TYPE " NAME " (counter|gauge|histogram|summary|untyped)$",
                REG_EXTENDED),
        0);
    assert_int_equal(regcomp(&sample,
                             "^" NAME "(\\{(" LABEL "(," LABEL ")*)?\\})? " VALUE "$",
                             REG_EXTENDED),
                     0);
    char family[128] = "", kind[16] = "";
    long long last_bucket = -1;
    const char *p = text;
    assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        char line[1024];
        size_t len = (size_t)(nl - p);
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            if (regexec(&help, line, 0, NULL, 0) != 0)
                fail_msg("bad HELP line: %s", line);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            if (regexec(&type, line, 0, NULL, 0) != 0)
                fail_msg("bad TYPE line: %s", line);
            sscanf(line, "# TYPE %127s %15s", family, kind);
            last_bucket = -1;
        } else {
            if (regexec(&sample, line, 0, NULL, 0) != 0)
                fail_msg("bad sample line: '%s'", line);
            size_t n = strlen(family);
            if (family[0] == '\0' || strncmp(line, family, n) != 0)
                fail_msg("sample outside its family %s: %s", family, line);
            const char *rest = line + n;
            if (strcmp(kind, "histogram") == 0) {
                long long v = atoll(strrchr(line, ' ') + 1);
                if (strncmp(rest, "_bucket{", 8) == 0) {
                    if (v < last_bucket)
                        fail_msg("histogram bucket goes down: %s", line);
                    last_bucket = v;
                } else if (strncmp(rest, "_count ", 7) == 0) {
                    if (v != last_bucket)
                        fail_msg("_count %lld is not the +Inf bucket %lld", v,
                                 last_bucket);
                } else if (strncmp(rest, "_sum ", 5) != 0) {
                    fail_msg("not a histogram's line: %s", line);
                }
            } else if (rest[0] != '{' && rest[0] != ' ') {
                fail_msg("sample of another family after %s: %s", family, line);
            }
        }
    }
    regfree(&help);
    regfree(&type);
    regfree(&sample);
}

static char *render(void)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(&text, &len), 0);
    assert_int_equal(strlen(text), len);
    return text;
}

static void test_metrics_valid_exposition(void **state)
{
    (void)state;
    metrics_init(METRICS_ALL, "test");
    metrics_inc2(metrics_api_requests, "chat", "202");
    metrics_inc2(metrics_api_requests, "chat", "400");
    metrics_observe(&metrics_api_duration, 0.003);
    metrics_observe(&metrics_api_duration, 42); /* past every bucket */
    metrics_observe(&metrics_upstream_duration, 0.7);
    metrics_inc1(metrics_chats_failed, "upstream_rate_limited");
    /* A client names the model: quotes, a newline, a backslash, braces, UTF-8. */
    metrics_add(&metrics_tokens, 12, "gpt\"} evil 1\n# TYPE x counter\\", "prompt");
    metrics_add(&metrics_tokens, 5, "modèle", "completion");
    metrics_set(&metrics_group_lag, 7, "processors", NULL);
    metrics_add(&metrics_api_connections, -1, NULL, NULL); /* a gauge may go below 0 */

    char *text = render();
    expect_valid(text);
    assert_non_null(
        strstr(text, "chatq_api_requests_total{route=\"chat\",status=\"202\"} 1\n"));
    assert_non_null(strstr(text, "chatq_build_info{version=\""));
    assert_non_null(strstr(text, "chatq_api_request_duration_seconds_count 2\n"));
    assert_non_null(
        strstr(text, "chatq_api_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
    assert_non_null(
        strstr(text, "chatq_api_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(text,
                           "chatq_processor_tokens_total{model=\"gpt___evil_1___TYPE_x_"
                           "counter_\",kind=\"prompt\"} 12\n"));
    /* A counter that never counted is there, at 0. */
    assert_non_null(strstr(text, "\nchatq_processor_claims_total 0\n"));
    free(text);
}

static void test_metrics_only_the_binary_s_own(void **state)
{
    (void)state;
    metrics_init(METRICS_HANDLER, "handler");
    char *text = render();
    expect_valid(text);
    assert_non_null(strstr(text, "chatq_handler_results_written_total"));
    assert_non_null(strstr(text, "chatq_dead_letters_total"));
    assert_null(strstr(text, "chatq_api_requests_total"));
    assert_null(strstr(text, "chatq_processor_"));
    free(text);
    metrics_init(METRICS_ALL, "test");
}

/* However many models clients name, one family holds at most METRICS_SERIES_MAX
 * label sets, the last one "other", and nothing counted is lost. */
static void test_metrics_label_sets_bounded(void **state)
{
    (void)state;
    char model[32];
    for (int i = 0; i < 500; i++) {
        snprintf(model, sizeof(model), "model-%d", i);
        metrics_inc1(metrics_chats_failed, model);
    }
    char *text = render();
    expect_valid(text);
    size_t series = 0;
    long long total = 0;
    for (const char *p = text; (p = strstr(p, "\nchatq_processor_chats_failed_total{"));
         p++) {
        series++;
        total += atoll(strchr(strchr(p, '}'), ' ') + 1);
    }
    assert_true(series <= METRICS_SERIES_MAX);
    assert_non_null(strstr(text, "chatq_processor_chats_failed_total{code=\"other\"}"));
    /* 500 here, and 1 from the first test. */
    assert_int_equal(total, 501);
    free(text);
}

#define THREADS 4
#define PER_THREAD 20000

static void *count_many(void *arg)
{
    const char *route = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        metrics_inc2(metrics_api_requests, route, i % 2 ? "200" : "503");
        metrics_observe(&metrics_handler_write_duration, 0.001);
    }
    return NULL;
}

static void test_metrics_threads_lose_nothing(void **state)
{
    (void)state;
    static const char *const routes[THREADS] = {"t0", "t1", "t0", "t1"};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, count_many, (void *)routes[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *text = render();
    expect_valid(text);
    char want[128];
    snprintf(want, sizeof(want),
             "chatq_api_requests_total{route=\"t0\",status=\"200\"} %d\n", PER_THREAD);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof(want), "chatq_handler_write_duration_seconds_count %d\n",
             THREADS * PER_THREAD);
    assert_non_null(strstr(text, want));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_valid_exposition),
        cmocka_unit_test(test_metrics_only_the_binary_s_own),
        cmocka_unit_test(test_metrics_label_sets_bounded),
        cmocka_unit_test(test_metrics_threads_lose_nothing),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
