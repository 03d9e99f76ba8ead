/* main.c - runs the integration groups, each with its own stack, and keeps the
 * logs (printing their tails) of any group that failed.
 *
 *   build/test/bin/tests/integration [-j JOBS] [FILTER]
 *
 * FILTER is a shell pattern (fnmatch) on test names, e.g. "*redis*"; only the
 * matching tests run, and a group none of whose tests match is not started at
 * all, which keeps a filtered run fast. (cmocka_set_test_filter would still run
 * every group's setup, i.e. start a whole stack for nothing.)
 *
 * With JOBS above 1 (the default is CHATQ_TEST_JOBS, else 1), up to JOBS groups
 * run at once, each in a child process of its own whose output is printed whole
 * when it ends, with how long it took. Most of a group's time is spent waiting
 * (for latencies, timeouts, retries), not computing, so two at once on two cores
 * take about half the time. A group in main_alone starts only when nothing else
 * runs, and nothing starts beside it. */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "harness.h"
#include "suite.h"

#define MAIN_LOG_LINES 30
#define MAIN_MAX_JOBS 8

/* The longest first, so that with JOBS above 1 the others run beside it. */
static const struct suite_group *const main_groups[] = {
    &suite_faults,      &suite_config,    &suite_api,      &suite_access,
    &suite_strict,      &suite_intake,    &suite_upstream, &suite_recovery,
    &suite_handler,     &suite_tls,       &suite_secrets,  &suite_redis_auth,
    &suite_fake_limits, &suite_lifecycle, &suite_pacing,   &suite_pacing_shared,
    &suite_pacing_tls,  &suite_adaptive,  &suite_clients,  &suite_front,
    &suite_ops,         &suite_openai,    &suite_quota,    &suite_workers,
    &suite_status_page, &suite_capacity,  &suite_webhooks, &suite_memory_cap,
    &suite_memory_api,  &suite_push,
};
#define MAIN_NGROUPS (sizeof(main_groups) / sizeof(main_groups[0]))

/* The fault suite loads the machine, and its chats must end within deadlines:
 * beside two other groups its 200 kB answers timed out into a second attempt and
 * its 20 000 bounded-memory chats did not all end in time. */
static const struct suite_group *const main_alone[] = {&suite_faults};

static int main_is_alone(const struct suite_group *g)
{
    for (size_t i = 0; i < sizeof(main_alone) / sizeof(main_alone[0]); i++)
        if (main_alone[i] == g)
            return 1;
    return 0;
}

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

/* Runs the tests of g that match filter; returns how many failed (a failure the
 * harness saw outside any test counts as one), printing the group's logs if any
 * did. -1 when none matched: the group did not run. */
static int main_run_group(const struct suite_group *g, const char *filter)
{
    struct CMUnitTest *tests = calloc(g->count, sizeof(*tests));
    if (tests == NULL)
        return 1;
    size_t count = main_select(g, filter, tests);
    int n = -1, before = harness_failures();
    if (count > 0) {
        n = _cmocka_run_group_tests(g->name, tests, count, g->setup, g->teardown);
        if (n == 0 && harness_failures() != before)
            n = 1;
    }
    free(tests);
    if (n > 0) {
        char dir[4096];
        harness_mark_failed();
        snprintf(dir, sizeof(dir), "%s/%s", harness_dir(), g->name);
        fprintf(stderr, "integration: group %s failed; its logs:\n", g->name);
        harness_dump_logs(dir, MAIN_LOG_LINES);
    }
    return n;
}

/* Whether g has a test that matches filter. */
static int main_matches(const struct suite_group *g, const char *filter)
{
    for (size_t i = 0; i < g->count; i++)
        if (filter == NULL || fnmatch(filter, g->tests[i].name, 0) == 0)
            return 1;
    return 0;
}

struct main_job {
    pid_t pid;
    size_t group;
    long long t0;
    char out[4096]; /* the child's stdout and stderr */
};

/* Starts group i in a child process writing into j->out; 0 or -1. */
static int main_start(struct main_job *j, size_t i, const char *filter)
{
    snprintf(j->out, sizeof(j->out), "%s/%s.out", harness_dir(), main_groups[i]->name);
    fflush(stdout);
    fflush(stderr);
    j->group = i;
    j->t0 = harness_now_ms();
    j->pid = fork();
    if (j->pid < 0)
        return -1;
    if (j->pid == 0) {
        int fd = open(j->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(2);
        close(fd);
        int n = main_run_group(main_groups[i], filter);
        fflush(stdout);
        fflush(stderr);
        /* exit, not _exit: the harness stops the group's processes (it keeps
         * the temp dir, which is the parent's). */
        exit(n > 0 ? 1 : 0);
    }
    return 0;
}

/* Waits for one of the n jobs to end, prints its output, and takes it out of
 * the array; returns 1 if its group failed, else 0. */
static int main_reap(struct main_job *jobs, size_t *n)
{
    int st = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &st, 0)) < 0 && errno == EINTR)
        ;
    for (size_t k = 0; k < *n; k++) {
        struct main_job *j = &jobs[k];
        if (j->pid != pid)
            continue;
        const struct suite_group *g = main_groups[j->group];
        FILE *f = fopen(j->out, "rb");
        if (f != NULL) {
            char buf[8192];
            size_t got;
            while ((got = fread(buf, 1, sizeof(buf), f)) > 0)
                fwrite(buf, 1, got, stdout);
            fclose(f);
        }
        int failed = !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        printf("integration: group %s %s in %.1f s\n", g->name,
               failed ? "FAILED" : "passed", (double)(harness_now_ms() - j->t0) / 1000.0);
        fflush(stdout);
        if (failed)
            harness_mark_failed();
        jobs[k] = jobs[--*n];
        return failed;
    }
    return 0; /* not one of ours */
}

/* The groups, up to jobs at once (see the top of the file); how many failed. */
static int main_run_parallel(const char *filter, int njobs)
{
    struct main_job jobs[MAIN_MAX_JOBS];
    size_t running = 0, next = 0;
    int failed = 0, alone = 0;
    while (next < MAIN_NGROUPS || running > 0) {
        while (next < MAIN_NGROUPS && running < (size_t)njobs && !alone) {
            const struct suite_group *g = main_groups[next];
            if (!main_matches(g, filter)) {
                next++;
                continue;
            }
            if (main_is_alone(g) && running > 0)
                break;
            if (main_start(&jobs[running], next, filter) != 0) {
                fprintf(stderr, "integration: fork: %s\n", strerror(errno));
                return failed + 1;
            }
            running++;
            next++;
            alone = main_is_alone(g);
        }
        if (running == 0)
            continue;
        failed += main_reap(jobs, &running);
        if (running == 0)
            alone = 0;
    }
    return failed;
}

int main(int argc, char **argv)
{
    const char *filter = NULL, *env = getenv("CHATQ_TEST_JOBS");
    int njobs = env != NULL ? atoi(env) : 1, failed = 0, opt;
    while ((opt = getopt(argc, argv, "j:")) != -1) {
        if (opt != 'j') {
            fprintf(stderr, "usage: %s [-j JOBS] [FILTER]\n", argv[0]);
            return 2;
        }
        njobs = atoi(optarg);
    }
    if (optind < argc)
        filter = argv[optind];
    if (njobs < 1)
        njobs = 1;
    if (njobs > MAIN_MAX_JOBS)
        njobs = MAIN_MAX_JOBS;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || harness_init() != 0)
        return 2;
    fprintf(stderr, "integration: binaries from %s, temp dir %s, %d group(s) at once\n",
            harness_bin_dir(), harness_dir(), njobs);
    if (njobs > 1) {
        failed = main_run_parallel(filter, njobs);
    } else {
        for (size_t i = 0; i < MAIN_NGROUPS; i++) {
            long long t0 = harness_now_ms();
            int n = main_run_group(main_groups[i], filter);
            if (n >= 0)
                printf("integration: group %s %s in %.1f s\n", main_groups[i]->name,
                       n > 0 ? "FAILED" : "passed",
                       (double)(harness_now_ms() - t0) / 1000.0);
            failed += n > 0 ? n : 0;
        }
    }
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
