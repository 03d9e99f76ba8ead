/* test_utf8.c - unit tests of common/utf8: cutting at a byte limit and telling
 * well-formed sequences from the rest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "utf8.h"

static void test_utf8_cut_short_enough(void **state)
{
    (void)state;
    assert_int_equal(utf8_cut("abc", 3, 3), 3);
    assert_int_equal(utf8_cut("abc", 3, 10), 3);
    assert_int_equal(utf8_cut("", 0, 0), 0);
    /* Even a string that ends inside a sequence is left alone under the limit:
     * the cut only ever moves a cut it has to make. */
    assert_int_equal(utf8_cut("a\xc3", 2, 2), 2);
}

static void test_utf8_cut_ascii(void **state)
{
    (void)state;
    assert_int_equal(utf8_cut("abcdef", 6, 4), 4);
    assert_int_equal(utf8_cut("abcdef", 6, 0), 0);
}

static void test_utf8_cut_never_splits(void **state)
{
    (void)state;
    /* "aé€😀": a, then 2, 3 and 4 bytes. */
    const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    size_t len = strlen(s);
    const size_t want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10};
    for (size_t max = 0; max <= len; max++)
        assert_int_equal(utf8_cut(s, len, max), want[max]);
}

static void test_utf8_cut_not_utf8(void **state)
{
    (void)state;
    /* Stray continuation bytes are stepped over but never read before s. */
    assert_int_equal(utf8_cut("\x80\x80\x80\x80", 4, 2), 0);
    /* A stray lead byte is an ordinary place to cut. */
    assert_int_equal(utf8_cut("ab\xff"
                              "cd",
                              5, 3),
                     3);
}

static void test_utf8_seq_len_well_formed(void **state)
{
    (void)state;
    assert_int_equal(utf8_seq_len("\xc2\x80", 2), 2);         /* U+0080 */
    assert_int_equal(utf8_seq_len("\xdf\xbf", 2), 2);         /* U+07FF */
    assert_int_equal(utf8_seq_len("\xe0\xa0\x80", 3), 3);     /* U+0800 */
    assert_int_equal(utf8_seq_len("\xed\x9f\xbf", 3), 3);     /* U+D7FF */
    assert_int_equal(utf8_seq_len("\xef\xbf\xbf", 3), 3);     /* U+FFFF */
    assert_int_equal(utf8_seq_len("\xf0\x90\x80\x80", 4), 4); /* U+10000 */
    assert_int_equal(utf8_seq_len("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF */
    assert_int_equal(utf8_seq_len("\xc3\xa9xyz", 5), 2);      /* only the first */
}

static void test_utf8_seq_len_ill_formed(void **state)
{
    (void)state;
    assert_int_equal(utf8_seq_len("a", 1), 0); /* ASCII */
    assert_int_equal(utf8_seq_len("", 0), 0);
    assert_int_equal(utf8_seq_len("\x80", 1), 0);             /* continuation */
    assert_int_equal(utf8_seq_len("\xc0\x80", 2), 0);         /* overlong NUL */
    assert_int_equal(utf8_seq_len("\xc1\xbf", 2), 0);         /* overlong */
    assert_int_equal(utf8_seq_len("\xe0\x9f\xbf", 3), 0);     /* overlong */
    assert_int_equal(utf8_seq_len("\xed\xa0\x80", 3), 0);     /* surrogate */
    assert_int_equal(utf8_seq_len("\xf0\x8f\xbf\xbf", 4), 0); /* overlong */
    assert_int_equal(utf8_seq_len("\xf4\x90\x80\x80", 4), 0); /* past U+10FFFF */
    assert_int_equal(utf8_seq_len("\xf5\x80\x80\x80", 4), 0);
    assert_int_equal(utf8_seq_len("\xff", 1), 0);
    assert_int_equal(utf8_seq_len("\xc3"
                                  "a",
                                  2),
                     0); /* no continuation */
    assert_int_equal(utf8_seq_len("\xe2\x82"
                                  "a",
                                  3),
                     0);
    /* Cut short by n, although the bytes after would complete it. */
    assert_int_equal(utf8_seq_len("\xe2\x82\xac", 2), 0);
    assert_int_equal(utf8_seq_len("\xf0\x9f\x98\x80", 3), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_cut_short_enough),
        cmocka_unit_test(test_utf8_cut_ascii),
        cmocka_unit_test(test_utf8_cut_never_splits),
        cmocka_unit_test(test_utf8_cut_not_utf8),
        cmocka_unit_test(test_utf8_seq_len_well_formed),
        cmocka_unit_test(test_utf8_seq_len_ill_formed),
    };
    return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
