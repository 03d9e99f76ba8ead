/* test_config.c - what an operator sees of configuration: every binary's
 * --help lists its settings and never the key, a bad setting stops a binary
 * with exit code 1 naming the variable, the processor refuses the default
 * OpenAI URL without a key, and make install honours PREFIX and DESTDIR.
 * No stack: each test runs the binaries directly. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"
#include "proc.h"
#include "suite.h"

/* Runs one of our binaries to completion with env and args; returns its wait
 * status and leaves its output in log. */
static int config_run(const char *prog, char *const args[], char *const env[], char *log,
                      size_t loglen)
{
    static int seq;
    char bin[PATH_MAX], dir[PATH_MAX - 64];
    char *argv[8] = {bin};
    CHECK(harness_bin(prog, bin, sizeof(bin)) == 0, "no binary %s", prog);
    CHECK(harness_subdir("config", dir, sizeof(dir)) == 0, "no log dir");
    snprintf(log, loglen, "%s/%s-%d.log", dir, prog, ++seq);
    for (int i = 0; args && args[i] && i < 6; i++)
        argv[i + 1] = args[i];
    struct proc *p = proc_start(prog, log, argv, env, PROC_CLEAN);
    CHECK(p != NULL, "cannot start %s", prog);
    int status = -1;
    CHECK(proc_wait(p, harness_timeout(10000), &status) == 0, "%s did not exit", prog);
    proc_free(p);
    return status;
}

static int config_exit_code(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_help_lists_every_setting(void **state)
{
    (void)state;
    static const struct {
        const char *prog;
        const char *vars[9];
    } cases[] = {
        {"chatq-api",
         {"REDIS_URL", "CHATQ_PREFIX", "PORT", "API_THREADS", "MAX_BODY_BYTES",
          "DEFAULT_MODEL", "CHATQ_RESULT_TTL", NULL}},
        {"chatq-processor",
         {"OPENAI_API_KEY", "OPENAI_API_KEY_FILE", "OPENAI_BASE_URL",
          "PROCESSOR_CONCURRENCY", "UPSTREAM_TIMEOUT_MS", "UPSTREAM_MAX_ATTEMPTS",
          "CLAIM_IDLE_MS", "MAX_DELIVERIES", NULL}},
        {"chatq-handler",
         {"REDIS_URL", "CHATQ_RESULT_TTL", "HANDLER_BATCH", "CLAIM_IDLE_MS",
          "DEAD_LETTER_MAX", "LOG_LEVEL", NULL}},
        {"chatq-webhook",
         {"WEBHOOK_SECRET", "WEBHOOK_ALLOW", "WEBHOOK_CONCURRENCY", "WEBHOOK_TIMEOUT_MS",
          "WEBHOOK_MAX_ATTEMPTS", "WEBHOOK_RETRY_BASE_MS", "WEBHOOK_RETRY_MAX_MS",
          "CLAIM_IDLE_MS", NULL}},
    };
    char *const args[] = {"--help", NULL};
    char *const env[] = {"OPENAI_API_KEY=sk-do-not-print-me",
                         "WEBHOOK_SECRET=whsec_ZG8tbm90LXByaW50LXRoaXMtc2VjcmV0", NULL};
    char log[PATH_MAX];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = config_run(cases[i].prog, args, env, log, sizeof(log));
        CHECK(config_exit_code(st) == 0, "%s --help exited %d", cases[i].prog,
              config_exit_code(st));
        for (int v = 0; cases[i].vars[v]; v++)
            CHECK(harness_file_contains(log, cases[i].vars[v]) == 1,
                  "%s --help does not mention %s", cases[i].prog, cases[i].vars[v]);
        CHECK(harness_file_contains(log, "default:") == 1, "%s --help shows no defaults",
              cases[i].prog);
        CHECK(harness_file_contains(log, "sk-do-not-print-me") == 0,
              "%s --help printed the API key", cases[i].prog);
        CHECK(harness_file_contains(log, "ZG8tbm90LXByaW50") == 0,
              "%s --help printed the webhook secret", cases[i].prog);
    }
}

static void test_bad_setting_names_it(void **state)
{
    (void)state;
    static const struct {
        const char *prog;
        const char *env;
        const char *named;
    } cases[] = {
        {"chatq-api", "PORT=http", "PORT"},
        {"chatq-api", "REDIS_URL=http://127.0.0.1:6379", "REDIS_URL"},
        {"chatq-api", "LOG_LEVEL=loud", "LOG_LEVEL"},
        {"chatq-processor", "PROCESSOR_CONCURRENCY=0", "PROCESSOR_CONCURRENCY"},
        {"chatq-handler", "CHATQ_RESULT_TTL=-5", "CHATQ_RESULT_TTL"},
        {"chatq-handler", "HANDLER_BATCH=many", "HANDLER_BATCH"},
        {"chatq-handler", "LOG_FORMAT=xml", "LOG_FORMAT"},
        {"chatq-processor", "METRICS_PORT=70000", "METRICS_PORT"},
        {"chatq-api", "WEBHOOK_URL=ftp://example.com/", "WEBHOOK_URL"},
        {"chatq-api", "WEBHOOK_URL=http://10.1.2.3/hook", "WEBHOOK_URL"},
        {"chatq-api", "WEBHOOK_ALLOW=10.0.0.0/33", "WEBHOOK_ALLOW"},
        {"chatq-webhook", "WEBHOOK_SECRET=", "WEBHOOK_SECRET"},
        {"chatq-webhook", "WEBHOOK_SECRET=whsec_c2hvcnQ=", "WEBHOOK_SECRET"},
        {"chatq-webhook", "WEBHOOK_ALLOW=no such host", "WEBHOOK_ALLOW"},
        {"chatq-webhook", "CLAIM_IDLE_MS=5000", "WEBHOOK_TIMEOUT_MS"},
    };
    char log[PATH_MAX];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* The case's setting last: a later entry wins. */
        char *const env[] = {"OPENAI_API_KEY=k", "OPENAI_BASE_URL=http://127.0.0.1:9/v1",
                             "WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                             (char *)cases[i].env, NULL};
        int st = config_run(cases[i].prog, NULL, env, log, sizeof(log));
        CHECK(config_exit_code(st) == 1, "%s with %s exited %d, not 1", cases[i].prog,
              cases[i].env, config_exit_code(st));
        CHECK(harness_file_contains(log, cases[i].named) == 1,
              "%s with %s did not name %s", cases[i].prog, cases[i].env, cases[i].named);
    }
    /* Flags are checked as well as the environment. */
    char *const args[] = {"--no-such-option", "1", NULL};
    int st = config_run("chatq-handler", args, NULL, log, sizeof(log));
    CHECK(config_exit_code(st) == 1, "an unknown flag did not exit 1");
    CHECK(harness_file_contains(log, "--no-such-option") == 1, "unknown flag not named");
}

static void test_processor_refuses_openai_without_key(void **state)
{
    (void)state;
    char log[PATH_MAX];
    /* PROC_CLEAN drops any OPENAI_* of the caller: the defaults apply. */
    int st = config_run("chatq-processor", NULL, NULL, log, sizeof(log));
    CHECK(config_exit_code(st) == 1, "processor without a key exited %d, not 1",
          config_exit_code(st));
    CHECK(harness_file_contains(log, "OPENAI_API_KEY is not set") == 1,
          "the refusal does not say why");
}

/* Writes text to <config dir>/name and its path into path. */
static void config_write_file(const char *name, const char *text, char *path, size_t len)
{
    char dir[PATH_MAX - 64];
    CHECK(harness_subdir("config", dir, sizeof(dir)) == 0, "no config dir");
    snprintf(path, len, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL && fputs(text, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

/* OPENAI_API_KEY_FILE: each mistake stops the processor at start, names what is
 * wrong, and never prints a key. */
static void test_processor_key_file_mistakes(void **state)
{
    (void)state;
    char good[PATH_MAX], empty[PATH_MAX], missing[PATH_MAX + 16], log[PATH_MAX];
    char env_good[PATH_MAX + 32], env_empty[PATH_MAX + 32], env_missing[PATH_MAX + 48];
    config_write_file("key-good", "sk-from-file-Zq8TwX3nPd\n", good, sizeof(good));
    config_write_file("key-empty", " \n", empty, sizeof(empty));
    snprintf(missing, sizeof(missing), "%s.absent", good);
    snprintf(env_good, sizeof(env_good), "OPENAI_API_KEY_FILE=%s", good);
    snprintf(env_empty, sizeof(env_empty), "OPENAI_API_KEY_FILE=%s", empty);
    snprintf(env_missing, sizeof(env_missing), "OPENAI_API_KEY_FILE=%s", missing);
    struct {
        char *env[3];
        const char *says;
    } cases[] = {
        {{"OPENAI_API_KEY=sk-from-env-Mv4KcB7wLs", env_good, NULL},
         "OPENAI_API_KEY and OPENAI_API_KEY_FILE are both set"},
        {{env_missing, NULL}, missing},
        {{env_empty, NULL}, "holds no key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = config_run("chatq-processor", NULL, cases[i].env, log, sizeof(log));
        CHECK(config_exit_code(st) == 1, "processor with %s exited %d, not 1",
              cases[i].env[0], config_exit_code(st));
        CHECK(harness_file_contains(log, cases[i].says) == 1,
              "processor with %s did not say \"%s\" (see %s)", cases[i].env[0],
              cases[i].says, log);
        CHECK(harness_file_contains(log, "sk-from-") == 0, "%s printed a key", log);
    }
}

static void test_make_install_honours_prefix_and_destdir(void **state)
{
    (void)state;
    char dest[PATH_MAX], out[PATH_MAX], cmd[3 * PATH_MAX], path[2 * PATH_MAX];
    CHECK(harness_subdir("install", dest, sizeof(dest)) == 0, "no temp dir");
    snprintf(out, sizeof(out), "%s", harness_bin_dir());
    /* The tests' binaries live in O/bin; "bin" itself is the plain build. */
    char *slash = strrchr(out, '/');
    if (slash != NULL && strcmp(slash, "/bin") == 0)
        *slash = '\0';
    else
        out[0] = '\0';
    struct stat sb;
    if (stat("Makefile", &sb) != 0)
        skip(); /* not run from the source tree */
    /* -o all: install what the tests built, never rebuild it with other flags. */
    snprintf(
        cmd, sizeof(cmd),
        "make -s --no-print-directory install -o all O=%s DESTDIR=%s PREFIX=/opt/chatq"
        " >/dev/null 2>&1",
        out, dest);
    CHECK(system(cmd) == 0, "'%s' failed", cmd);
    static const char *const progs[] = {"chatq-api", "chatq-processor", "chatq-handler",
                                        "chatq-fake-upstream"};
    for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
        snprintf(path, sizeof(path), "%s/opt/chatq/bin/%s", dest, progs[i]);
        CHECK(stat(path, &sb) == 0 && (sb.st_mode & S_IXUSR), "%s was not installed",
              path);
    }
}

static const struct CMUnitTest config_tests[] = {
    cmocka_unit_test(test_help_lists_every_setting),
    cmocka_unit_test(test_bad_setting_names_it),
    cmocka_unit_test(test_processor_refuses_openai_without_key),
    cmocka_unit_test(test_processor_key_file_mistakes),
    cmocka_unit_test(test_make_install_honours_prefix_and_destdir),
};

const struct suite_group suite_config = {
    "config", config_tests, sizeof(config_tests) / sizeof(config_tests[0]), NULL, NULL};
