/* test_clients.c - the clients people use, with keep-alive and 200 connections at
 * once: Node's fetch (undici), Python's requests and httpx, and curl. Every POST
 * must get its 202: no "other side closed", no reset, no connection error. Their
 * pauses between requests land on the idle timeouts servers use (half a second,
 * four to six seconds), where a server that closes a kept-alive connection the
 * client is about to reuse fails the client's next POST.
 *
 * The scripts are tests/clients/keepalive.{mjs,py}; each prints one JSON line
 * with what it sent, what was accepted and why the rest failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define CLI_CONNS "200"
#define CLI_ROUNDS "4"
#define CLI_RUN_MS 120000

static struct stack cli_stack;

/* A slow Redis (a loaded test host) must not pass for a dropped connection. */
static const char *const cli_api_env[] = {"REDIS_TIMEOUT_MS=5000", NULL};

static int cli_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.api = cli_api_env};
    return stack_start(&cli_stack, "clients", "tc:", &set);
}

static int cli_teardown(void **state)
{
    (void)state;
    return stack_stop(&cli_stack);
}

/* Runs argv (a client script), its output in <group dir>/<name>.log, and checks
 * that it exited 0 and that its JSON line says every POST was accepted. */
static void cli_run(const char *name, char *const argv[])
{
    char log[PATH_MAX], how[64];
    int status = -1;

    snprintf(log, sizeof(log), "%s/%s.log", cli_stack.dir, name);
    struct proc *p = proc_start(name, log, argv, NULL, 0);
    CHECK(p != NULL, "cannot start %s", argv[0]);
    if (proc_wait(p, CLI_RUN_MS, &status) != 0) {
        proc_free(p);
        fail_msg("%s still running after %d ms; see %s", name, CLI_RUN_MS, log);
    }
    proc_free(p);

    FILE *f = fopen(log, "r");
    char line[4096], result[4096] = "";
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, "\"client\"") != NULL)
            snprintf(result, sizeof(result), "%s", line);
    if (f != NULL)
        fclose(f);
    fprintf(stderr, "integration: %s", result[0] ? result : "(no result line)\n");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "%s %s: not every POST was accepted: %s (see %s)", name,
          proc_describe(status, how, sizeof(how)), result, log);
}

static void test_clients_node_fetch(void **state)
{
    (void)state;
    char *argv[] = {
        "node", "tests/clients/keepalive.mjs", cli_stack.api_url, CLI_CONNS, CLI_ROUNDS,
        NULL};
    cli_run("node-fetch", argv);
}

static void test_clients_python_requests(void **state)
{
    (void)state;
    char *argv[] = {"/usr/bin/python3",
                    "tests/clients/keepalive.py",
                    "requests",
                    cli_stack.api_url,
                    CLI_CONNS,
                    CLI_ROUNDS,
                    NULL};
    cli_run("python-requests", argv);
}

static void test_clients_python_httpx(void **state)
{
    (void)state;
    char *argv[] = {"/usr/bin/python3",
                    "tests/clients/keepalive.py",
                    "httpx",
                    cli_stack.api_url,
                    CLI_CONNS,
                    CLI_ROUNDS,
                    NULL};
    cli_run("python-httpx", argv);
}

/* curl's own connection pool: 1 000 POSTs over at most 200 connections, each
 * reused; -w prints every status on its own line. The URLs go in a config file
 * (-K): there are too many for a command line. */
static void test_clients_curl(void **state)
{
    (void)state;
    char url[128], conf[PATH_MAX], log[PATH_MAX], line[64];
    int ok = 0, other = 0, status = -1;

    snprintf(conf, sizeof(conf), "%s/curl.conf", cli_stack.dir);
    snprintf(log, sizeof(log), "%s/curl.log", cli_stack.dir);
    stack_url(&cli_stack, "/chat", url, sizeof(url));
    FILE *f = fopen(conf, "w");
    CHECK(f != NULL, "cannot write %s", conf);
    fputs("silent\nshow-error\nheader = \"Content-Type: application/json\"\n"
          "data = \"{\\\"message\\\":\\\"curl\\\",\\\"model\\\":\\\"gpt-4o-mini\\\"}\"\n"
          "write-out = \"%{http_code}\\n\"\n",
          f);
    for (int i = 0; i < 1000; i++)
        fprintf(f, "url = \"%s\"\noutput = \"/dev/null\"\n", url);
    CHECK(fclose(f) == 0, "cannot write %s", conf);

    char *argv[] = {"curl",       "--no-progress-meter",
                    "--parallel", "--parallel-max",
                    CLI_CONNS,    "-K",
                    conf,         NULL};
    struct proc *p = proc_start("curl", log, argv, NULL, 0);
    CHECK(p != NULL, "cannot start curl");
    CHECK(proc_wait(p, CLI_RUN_MS, &status) == 0, "curl still running; see %s", log);
    proc_free(p);
    f = fopen(log, "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strcmp(line, "202\n") == 0)
            ok++;
        else
            other++;
    }
    if (f != NULL)
        fclose(f);
    fprintf(stderr, "integration: curl: %d accepted, %d other lines\n", ok, other);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && ok == 1000 && other == 0,
          "curl: %d of 1000 POSTs accepted, %d other lines (see %s)", ok, other, log);
}

static const struct CMUnitTest cli_tests[] = {
    cmocka_unit_test(test_clients_node_fetch),
    cmocka_unit_test(test_clients_python_requests),
    cmocka_unit_test(test_clients_python_httpx),
    cmocka_unit_test(test_clients_curl),
};

const struct suite_group suite_clients = {"clients", cli_tests,
                                          sizeof(cli_tests) / sizeof(cli_tests[0]),
                                          cli_setup, cli_teardown};
