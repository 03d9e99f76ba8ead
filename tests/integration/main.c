/* main.c - runs the integration groups in order, each with its own stack, and
 * keeps the logs (printing their tails) of any group that failed.
 *
 *   build/test/bin/tests/integration [FILTER]
 *
 * FILTER is a shell pattern (fnmatch) on test names, e.g. "*redis*"; only the
 * matching tests run, and a group none of whose tests match is not started at
 * all, which keeps a filtered run fast. (cmocka_set_test_filter would still run
 * every group's setup, i.e. start a whole stack for nothing.) */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "harness.h"
#include "suite.h"

#define MAIN_LOG_LINES 30

static const struct suite_group *const main_groups[] = {
    &suite_config,    &suite_api,      &suite_access,        &suite_strict,
    &suite_intake,    &suite_upstream, &suite_recovery,      &suite_handler,
    &suite_tls,       &suite_secrets,  &suite_redis_auth,    &suite_fake_limits,
    &suite_lifecycle, &suite_pacing,   &suite_pacing_shared, &suite_pacing_tls,
    &suite_adaptive,  &suite_clients,  &suite_front,         &suite_ops,
    &suite_openai,    &suite_quota,    &suite_faults,
};

/* Copies the tests of g that match filter into out; returns how many. */
static size_t main_select(const struct suite_group *g, const char *filter,
                          struct CMUnitTest *out)
{
    size_t n = 0;
    for (size_t i = 0; i < g->count; i++)
        if (filter == NULL || fnmatch(filter, g->tests[i].name, 0) == 0)
            out[n++] = g->tests[i];
    return n;
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int failed = 0;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || harness_init() != 0)
        return 2;
    fprintf(stderr, "integration: binaries from %s, temp dir %s\n", harness_bin_dir(),
            harness_dir());

    for (size_t i = 0; i < sizeof(main_groups) / sizeof(main_groups[0]); i++) {
        const struct suite_group *g = main_groups[i];
        struct CMUnitTest *tests = calloc(g->count, sizeof(*tests));
        if (tests == NULL)
            return 2;
        size_t count = main_select(g, filter, tests);
        int n = 0, before = harness_failures();
        if (count > 0)
            n = _cmocka_run_group_tests(g->name, tests, count, g->setup, g->teardown);
        free(tests);
        if (n != 0 || harness_failures() != before) {
            char dir[4096];
            failed += n != 0 ? n : 1;
            harness_mark_failed();
            snprintf(dir, sizeof(dir), "%s/%s", harness_dir(), g->name);
            fprintf(stderr, "integration: group %s failed; its logs:\n", g->name);
            harness_dump_logs(dir, MAIN_LOG_LINES);
        }
    }
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
