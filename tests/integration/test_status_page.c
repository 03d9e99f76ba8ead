/* test_status_page.c - the api's status page, with gateway keys on: GET / is the
 * page (no key needed: it holds no data), GET /status.json needs a key and gives
 * the snapshot; headless Chromium loads the page, gives it the key, sees the
 * workers, sends a chat through the form and sees it completed
 * (status_page.py), and leaves a screenshot in <tmp>/status_page/status.png;
 * STATUS_PAGE=0 turns both paths into 404s. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define SP_KEY "sp-Vt4Lq9Wm2Xc7Rb1Nz5Hk8Jd3"
#define SP_CHROMIUM "/usr/bin/chromium"
#define SP_MESSAGE "Hello from the status page"

static struct stack sp_stack;

static const char *const sp_api_env[] = {"API_KEYS=" SP_KEY, NULL};

static int sp_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.api = sp_api_env};
    return stack_start(&sp_stack, "status_page", "sp:", &set);
}

static int sp_teardown(void **state)
{
    (void)state;
    return stack_stop(&sp_stack);
}

static void test_status_page_http(void **state)
{
    (void)state;
    struct stack *s = &sp_stack;
    char url[256], type[128];
    struct http_response r;
    const char *const auth[] = {"Authorization: Bearer " SP_KEY, NULL};

    CHECK(http_request("GET", stack_url(s, "/", url, sizeof(url)), NULL, 0, 10000, &r) ==
              0,
          "GET /: %s", r.error);
    CHECK(r.status == 200, "GET / without a key: HTTP %ld, want 200", r.status);
    CHECK(http_header(&r, "Content-Type", type, sizeof(type)) &&
              strncmp(type, "text/html", 9) == 0,
          "GET /: Content-Type \"%s\"", type);
    CHECK(r.body != NULL && strstr(r.body, "<title>chatq status</title>") != NULL &&
              strstr(r.body, "status.json") != NULL,
          "GET / is not the status page: %.200s", STR(r.body));
    CHECK(strstr(r.body, "http://") == NULL && strstr(r.body, "https://") == NULL,
          "the page loads something from elsewhere");
    http_response_free(&r);

    CHECK(http_request("GET", stack_url(s, "/status.json", url, sizeof(url)), NULL, 0,
                       10000, &r) == 0,
          "GET /status.json: %s", r.error);
    CHECK(r.status == 401, "GET /status.json without a key: HTTP %ld, want 401",
          r.status);
    http_response_free(&r);

    CHECK(http_request_with("GET", url, auth, NULL, 0, 10000, &r) == 0,
          "GET /status.json: %s", r.error);
    CHECK(r.status == 200 && http_is_json(&r), "GET /status.json with the key: HTTP %ld",
          r.status);
    json_t *j = http_json(&r);
    http_response_free(&r);
    CHECK(j != NULL, "status.json is not JSON");
    json_t *groups = json_object_get(j, "groups");
    CHECK(json_array_size(groups) == 2 &&
              strcmp(STR(http_json_str(json_array_get(groups, 0), "group")),
                     "processors") == 0,
          "status.json has no groups");
    CHECK(
        json_is_array(json_object_get(j, "workers")) &&
            json_is_integer(json_object_get(json_object_get(j, "totals"), "completed")) &&
            json_is_integer(json_object_get(j, "time")),
        "status.json lacks workers, totals or time");
    json_decref(j);
}

/* The page in a real browser; its screenshot is kept as the test's artefact. */
static void test_status_page_chromium(void **state)
{
    (void)state;
    struct stack *s = &sp_stack;
    char url[256], shot[PATH_MAX], profile[PATH_MAX], log[PATH_MAX], how[64];
    char expect[128];
    int status;

    snprintf(shot, sizeof(shot), "%s/status.png", s->dir);
    snprintf(profile, sizeof(profile), "%s/chromium-profile", s->dir);
    snprintf(log, sizeof(log), "%s/chromium.log", s->dir);
    snprintf(expect, sizeof(expect), "Fake answer to: %s", SP_MESSAGE);
    stack_url(s, "/", url, sizeof(url));
    char *argv[] = {"python3",
                    "tests/integration/status_page.py",
                    "--chromium",
                    SP_CHROMIUM,
                    "--url",
                    url,
                    "--key",
                    SP_KEY,
                    "--message",
                    SP_MESSAGE,
                    "--expect",
                    expect,
                    "--workers",
                    "2",
                    "--screenshot",
                    shot,
                    "--profile",
                    profile,
                    NULL};
    struct proc *p = proc_start("status_page.py", log, argv, NULL, 0);
    CHECK(p != NULL, "cannot start status_page.py");
    int waited = proc_wait(p, harness_timeout(120000), &status);
    proc_free(p);
    CHECK(waited == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the status page test in Chromium failed (%s); see %s",
          proc_describe(status, how, sizeof(how)), log);
    FILE *f = fopen(shot, "rb");
    unsigned char magic[8] = {0};
    size_t n = f != NULL ? fread(magic, 1, sizeof(magic), f) : 0;
    if (f != NULL)
        fclose(f);
    CHECK(n == 8 && memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0, "no PNG screenshot in %s",
          shot);
}

/* STATUS_PAGE=0: neither path is served. */
static void test_status_page_off(void **state)
{
    (void)state;
    struct stack *s = &sp_stack;
    const char *const off_env[] = {"STATUS_PAGE=0", NULL};
    const char *const auth[] = {"Authorization: Bearer " SP_KEY, NULL};
    char url[256];
    struct http_response r;

    int st = proc_stop(s->api);
    CHECK(st == 0, "the api did not exit 0 on SIGTERM (status %d)", st);
    CHECK(stack_api_restart(s, "api-nopage", off_env) == 0,
          "the api did not start with STATUS_PAGE=0");
    static const char *const paths[] = {"/", "/status.json"};
    for (size_t i = 0; i < 2; i++) {
        CHECK(http_request_with("GET", stack_url(s, paths[i], url, sizeof(url)), auth,
                                NULL, 0, 10000, &r) == 0,
              "GET %s: %s", paths[i], r.error);
        json_t *j = http_json(&r);
        CHECK(r.status == 404 && strcmp(STR(http_error_code(j)), "not_found") == 0,
              "GET %s with STATUS_PAGE=0: HTTP %ld, want 404 not_found", paths[i],
              r.status);
        json_decref(j);
        http_response_free(&r);
    }
}

static const struct CMUnitTest sp_tests[] = {
    cmocka_unit_test(test_status_page_http),
    cmocka_unit_test(test_status_page_chromium),
    cmocka_unit_test(test_status_page_off),
};

const struct suite_group suite_status_page = {"status_page", sp_tests,
                                              sizeof(sp_tests) / sizeof(sp_tests[0]),
                                              sp_setup, sp_teardown};
