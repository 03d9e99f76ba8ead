/* test_access.c - gateway keys and allowed origins as api/access.c reads and
 * checks them: the separators, the file's comments, the Bearer header, the owner
 * id, reloads, and the mistakes refused. */
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
    return access_check(header, owner) == 0;
}

static void test_access_open_without_keys(void **state)
{
    char err[256], owner[ACCESS_OWNER_LEN + 1] = "x";
    (void)state;
    assert_int_equal(access_init(NULL, "", NULL, err, sizeof(err)), 0);
    assert_true(access_open());
    assert_false(access_cors_on());
    assert_int_equal(access_check(NULL, owner), 0);
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
    assert_int_equal(access_check("Bearer sk-alpha-123456", a), 0);
    assert_int_equal(access_check("Bearer sk-alpha-123456", a2), 0);
    assert_int_equal(access_check("Bearer sk-beta-654321", b), 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_access_open_without_keys),
        cmocka_unit_test(test_access_keys_from_variable),
        cmocka_unit_test(test_access_owner_is_a_hash),
        cmocka_unit_test(test_access_file_and_reload),
        cmocka_unit_test(test_access_mistakes_refused),
        cmocka_unit_test(test_access_origins),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
