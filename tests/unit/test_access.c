/* test_access.c - gateway keys and allowed origins as api/access.c reads and
 * checks them: the separators, the file's comments, the Bearer header, the owner
 * id, reloads, each key's limits (defaults and the file's overrides), and the
 * mistakes refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../api/access.h"

static char file_path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(file_path, sizeof(file_path), "/tmp/chatq-access-%d", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    access_free();
    unlink(file_path);
    return 0;
}

static void write_file(const char *text)
{
    FILE *f = fopen(file_path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static int allowed(const char *header)
{
    char owner[ACCESS_OWNER_LEN + 1];
    return access_check(header, owner, NULL) == 0;
}

static void test_access_open_without_keys(void **state)
{
    char err[256], owner[ACCESS_OWNER_LEN + 1] = "x";
    (void)state;
    assert_int_equal(access_init(NULL, "", NULL, err, sizeof(err)), 0);
    assert_true(access_open());
    assert_false(access_cors_on());
    assert_int_equal(access_check(NULL, owner, NULL), 0);
    assert_string_equal(owner, "");
    assert_null(access_cors_origin("https://a.example"));
    access_free();
}

static void test_access_keys_from_variable(void **state)
{
    char err[256];
    (void)state;
    assert_int_equal(
        access_init(" key-one ,key-two\nkey-three,,", NULL, NULL, err, sizeof(err)), 0);
    assert_false(access_open());
    assert_true(allowed("Bearer key-one"));
    assert_true(allowed("bearer   key-two  "));
    assert_true(allowed("Bearer key-three"));
    assert_false(allowed(NULL));
    assert_false(allowed(""));
    assert_false(allowed("key-one"));
    assert_false(allowed("Basic key-one"));
    assert_false(allowed("Bearerkey-one"));
    assert_false(allowed("Bearer key-on"));
    assert_false(allowed("Bearer key-one1"));
    assert_false(allowed("Bearer "));
    access_free();
}

static void test_access_owner_is_a_hash(void **state)
{
    char err[256], a[ACCESS_OWNER_LEN + 1], a2[ACCESS_OWNER_LEN + 1],
        b[ACCESS_OWNER_LEN + 1];
    (void)state;
    assert_int_equal(
        access_init("sk-alpha-123456,sk-beta-654321", NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(access_check("Bearer sk-alpha-123456", a, NULL), 0);
    assert_int_equal(access_check("Bearer sk-alpha-123456", a2, NULL), 0);
    assert_int_equal(access_check("Bearer sk-beta-654321", b, NULL), 0);
    assert_int_equal(strlen(a), ACCESS_OWNER_LEN);
    assert_int_equal(strspn(a, "0123456789abcdef"), ACCESS_OWNER_LEN);
    assert_string_equal(a, a2);
    assert_string_not_equal(a, b);
    assert_null(strstr("sk-alpha-123456", a));
    access_free();
}

static void test_access_file_and_reload(void **state)
{
    char err[256];
    size_t count = 0;
    (void)state;
    write_file("# the team's keys\n\n  file-key-1  \r\n\t# old: file-key-0\nfile-key-2");
    assert_int_equal(access_init("var-key", file_path, NULL, err, sizeof(err)), 0);
    assert_true(allowed("Bearer file-key-1"));
    assert_true(allowed("Bearer file-key-2"));
    assert_true(allowed("Bearer var-key"));
    assert_false(allowed("Bearer file-key-0"));
    assert_false(allowed("Bearer # the team's keys"));

    write_file("file-key-3\n");
    assert_int_equal(access_reload(&count, err, sizeof(err)), 0);
    assert_int_equal(count, 2);
    assert_true(allowed("Bearer file-key-3"));
    assert_true(allowed("Bearer var-key"));
    assert_false(allowed("Bearer file-key-1"));

    /* A file gone keeps the keys in force. */
    unlink(file_path);
    assert_int_equal(access_reload(&count, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "API_KEYS_FILE"));
    assert_true(allowed("Bearer file-key-3"));
    access_free();
}

static void test_access_mistakes_refused(void **state)
{
    char err[256], big[ACCESS_KEY_MAX + 2];
    (void)state;
    write_file("# nothing here\n\n");
    assert_int_equal(access_init(NULL, file_path, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "holds no key"));
    access_free();
    unlink(file_path);
    assert_int_equal(access_init(NULL, file_path, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot open"));
    access_free();
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(access_init(big, NULL, NULL, err, sizeof(err)), -1);
    access_free();
    assert_int_equal(access_init("k", NULL, "*", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "CORS_ORIGINS"));
    access_free();
}

static void test_access_origins(void **state)
{
    char err[256];
    (void)state;
    assert_int_equal(access_init(NULL, NULL, " https://a.example/ ,http://b.example:8080",
                                 err, sizeof(err)),
                     0);
    assert_true(access_cors_on());
    assert_string_equal(access_cors_origin("https://a.example"), "https://a.example");
    assert_string_equal(access_cors_origin("http://b.example:8080"),
                        "http://b.example:8080");
    assert_null(access_cors_origin("https://a.example.evil"));
    assert_null(access_cors_origin("http://a.example"));
    assert_null(access_cors_origin("null"));
    assert_null(access_cors_origin(NULL));
    access_free();
}

/* The limits of the key in header, or the test fails. */
static const struct access_limits *limits_of(const char *header)
{
    char owner[ACCESS_OWNER_LEN + 1];
    const struct access_limits *lim = NULL;
    assert_int_equal(access_check(header, owner, &lim), 0);
    assert_non_null(lim);
    return lim;
}

static int model_ok(const char *header, const char *model)
{
    return access_model_allowed(limits_of(header), model, strlen(model));
}

static void test_access_limits(void **state)
{
    char err[256];
    size_t count = 0;
    const struct access_limits *lim;
    (void)state;
    assert_int_equal(access_defaults(60, 4, " gpt-4o-mini , gpt-4o,", err, sizeof(err)),
                     0);
    write_file("plain-key\n"
               "own-key  rpm=5\tinflight=0 models=m-a,m-b\r\n"
               "any-key models=*\n"
               "half-key inflight=2\n");
    assert_int_equal(access_init("var-key", file_path, NULL, err, sizeof(err)), 0);

    /* Keys of the variable and plain lines: the defaults. */
    lim = limits_of("Bearer var-key");
    assert_int_equal(lim->rpm, 60);
    assert_int_equal(lim->inflight, 4);
    assert_string_equal(lim->models, "gpt-4o-mini,gpt-4o");
    assert_int_equal(limits_of("Bearer plain-key")->rpm, 60);
    assert_true(model_ok("Bearer plain-key", "gpt-4o"));
    assert_true(model_ok("Bearer plain-key", "gpt-4o-mini"));
    assert_false(model_ok("Bearer plain-key", "gpt-4"));
    assert_false(model_ok("Bearer plain-key", "gpt-4o-min"));

    /* A line's own limits replace the defaults they name, and only those. */
    lim = limits_of("Bearer own-key");
    assert_int_equal(lim->rpm, 5);
    assert_int_equal(lim->inflight, 0);
    assert_true(model_ok("Bearer own-key", "m-b"));
    assert_false(model_ok("Bearer own-key", "gpt-4o"));
    assert_null(limits_of("Bearer any-key")->models);
    assert_true(model_ok("Bearer any-key", "anything"));
    lim = limits_of("Bearer half-key");
    assert_int_equal(lim->inflight, 2);
    assert_int_equal(lim->rpm, 60);
    /* The options are not part of the key. */
    assert_false(allowed("Bearer own-key  rpm=5"));

    /* A reload applies new limits. */
    write_file("own-key rpm=7\n");
    assert_int_equal(access_reload(&count, err, sizeof(err)), 0);
    assert_int_equal(limits_of("Bearer own-key")->rpm, 7);
    assert_int_equal(limits_of("Bearer own-key")->inflight, 4);

    /* Mistakes on a line name it, and keep the limits in force. */
    write_file("own-key rpm=8\nother-key rpm=lots\n");
    assert_int_equal(access_reload(&count, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "line 2"));
    write_file("own-key burst=3\n");
    assert_int_equal(access_reload(&count, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "burst=3"));
    write_file("own-key rpm=-1\n");
    assert_int_equal(access_reload(&count, err, sizeof(err)), -1);
    assert_int_equal(limits_of("Bearer own-key")->rpm, 7);
    access_free();

    /* No defaults: no limits. An open gateway has none at all. */
    assert_int_equal(access_defaults(0, 0, "*", err, sizeof(err)), 0);
    assert_int_equal(access_init("k1", NULL, NULL, err, sizeof(err)), 0);
    lim = limits_of("Bearer k1");
    assert_int_equal(lim->rpm, 0);
    assert_null(lim->models);
    access_free();
    assert_int_equal(access_init(NULL, NULL, NULL, err, sizeof(err)), 0);
    char owner[ACCESS_OWNER_LEN + 1];
    lim = (const struct access_limits *)1;
    assert_int_equal(access_check(NULL, owner, &lim), 0);
    assert_null(lim);
    assert_true(access_model_allowed(NULL, "m", 1));
    access_free();
    assert_int_equal(access_defaults(0, 0, "a b", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "KEY_MODELS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_access_open_without_keys),
        cmocka_unit_test(test_access_keys_from_variable),
        cmocka_unit_test(test_access_owner_is_a_hash),
        cmocka_unit_test(test_access_file_and_reload),
        cmocka_unit_test(test_access_mistakes_refused),
        cmocka_unit_test(test_access_origins),
        cmocka_unit_test(test_access_limits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
