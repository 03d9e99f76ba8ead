/* test_log.c - unit tests of common/log: what an operator's log parser sees when
 * user or upstream text reaches a log line. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "log.h"

#define TRACE "0b1f7a52-3c1e-4f7a-9d2b-1a2b3c4d5e6f"

/* stderr is pointed at a temporary file between capture_begin and capture_end. */
static FILE *capture_tmp;
static int capture_saved = -1;

static void capture_begin(void)
{
    capture_tmp = tmpfile();
    assert_non_null(capture_tmp);
    fflush(stderr);
    capture_saved = dup(STDERR_FILENO);
    assert_true(capture_saved >= 0);
    assert_true(dup2(fileno(capture_tmp), STDERR_FILENO) >= 0);
}

/* The one line written since capture_begin, without its newline; borrowed, valid
 * until the next capture (static, so a failed assertion leaks nothing). */
static char *capture_end(void)
{
    static char line[16384];
    FILE *tmp = capture_tmp;
    int saved = capture_saved;
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);

    long size = ftell(tmp);
    assert_true(size > 0 && (size_t)size < sizeof(line));
    rewind(tmp);
    assert_int_equal(fread(line, 1, (size_t)size, tmp), (size_t)size);
    fclose(tmp);
    line[size] = '\0';
    /* One event, one line: the only newline is the last byte. */
    assert_int_equal(line[size - 1], '\n');
    assert_ptr_equal(strchr(line, '\n'), line + size - 1);
    line[size - 1] = '\0';
    return line;
}

/* The fields a logfmt reader finds: key=value or key="value" with \" and \\
 * inside quotes. Words without '=' are skipped. Returns how many were found. */
struct field {
    char key[32];
    char value[512];
};

static size_t parse_fields(const char *line, struct field *out, size_t max)
{
    size_t n = 0;
    const char *p = line;
    while (*p && n < max) {
        while (*p == ' ')
            p++;
        const char *k = p;
        while (*p && *p != ' ' && *p != '=')
            p++;
        if (*p != '=') {
            continue; /* a bare word */
        }
        struct field *f = &out[n++];
        memset(f, 0, sizeof(*f));
        memcpy(f->key, k, (size_t)(p - k) < sizeof(f->key) - 1 ? (size_t)(p - k) : 0);
        p++;
        size_t o = 0;
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                if (o < sizeof(f->value) - 1)
                    f->value[o++] = *p;
                p++;
            }
            if (*p == '"')
                p++;
        } else {
            while (*p && *p != ' ') {
                if (o < sizeof(f->value) - 1)
                    f->value[o++] = *p;
                p++;
            }
        }
    }
    return n;
}

static size_t count_key(const struct field *f, size_t n, const char *key)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += strcmp(f[i].key, key) == 0;
    return c;
}

static const char *value_of(const struct field *f, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(f[i].key, key) == 0)
            return f[i].value;
    return NULL;
}

/* Upstream text inside message="..." cannot close the quotes and add fields. */
static void test_log_quote_cannot_forge_fields(void **state)
{
    (void)state;
    const char *evil = "x\" trace=evil level=ERROR code=\"y";
    capture_begin();
    log_info(TRACE, "failed code=rate_limited message=\"%s\"", evil);
    char *line = capture_end();
    struct field f[16];
    size_t n = parse_fields(line, f, 16);
    assert_int_equal(count_key(f, n, "trace"), 1);
    assert_string_equal(value_of(f, n, "trace"), TRACE);
    assert_int_equal(count_key(f, n, "level"), 0);
    assert_int_equal(count_key(f, n, "code"), 1);
    assert_string_equal(value_of(f, n, "code"), "rate_limited");
    assert_non_null(value_of(f, n, "message"));
    assert_string_equal(value_of(f, n, "message"), evil);
    assert_non_null(strstr(line, "message=\"x\\\" trace=evil level=ERROR code=\\\"y\""));
}

/* A backslash in the text cannot escape the quote that follows it. */
static void test_log_backslash_escaped(void **state)
{
    (void)state;
    const char *evil = "a\\\" trace=evil b\\";
    capture_begin();
    log_info(TRACE, "message=\"%s\" code=x", evil);
    char *line = capture_end();
    struct field f[16];
    size_t n = parse_fields(line, f, 16);
    assert_int_equal(count_key(f, n, "trace"), 1);
    assert_string_equal(value_of(f, n, "trace"), TRACE);
    assert_string_equal(value_of(f, n, "message"), evil);
    assert_string_equal(value_of(f, n, "code"), "x");
    assert_non_null(strstr(line, "message=\"a\\\\\\\" trace=evil b\\\\\" code=x"));
}

/* Newlines and other control characters cannot start a line of their own. */
static void test_log_control_characters(void **state)
{
    (void)state;
    capture_begin();
    log_info(TRACE, "message=\"%s\"",
             "a\nb\r\tc\x01\x1b\x7f"
             "d");
    char *line = capture_end();
    assert_non_null(strstr(line, "message=\"a\\nb\\r\\tc\\x01\\x1b\\x7fd\""));
}

/* 1 if every backslash in s starts a whole escape: \" \\ \n \r \t or \xNN. */
static int escapes_whole(const char *s)
{
    for (; *s; s++) {
        if (*s != '\\')
            continue;
        s++;
        if (*s == 'x') {
            if (!isxdigit((unsigned char)s[1]) || !isxdigit((unsigned char)s[2]))
                return 0;
            s += 2;
        } else if (*s == '\0' || strchr("\"\\nrt", *s) == NULL) {
            return 0;
        }
    }
    return 1;
}

/* An unquoted key=%s field gets quotes when the text needs them, and only then. */
static void test_log_unquoted_field_cannot_forge(void **state)
{
    (void)state;
    const char *model = "gpt level=ERROR trace=evil";
    capture_begin();
    log_info(TRACE, "completed model=%s total_tokens=%d", model, 5);
    char *line = capture_end();
    struct field f[16];
    size_t n = parse_fields(line, f, 16);
    assert_int_equal(count_key(f, n, "trace"), 1);
    assert_string_equal(value_of(f, n, "trace"), TRACE);
    assert_int_equal(count_key(f, n, "level"), 0);
    assert_string_equal(value_of(f, n, "model"), model);
    assert_string_equal(value_of(f, n, "total_tokens"), "5");

    capture_begin();
    log_info(TRACE, "completed model=%s code=%s x=%s", "gpt-4o-mini", "", "a\"b");
    line = capture_end();
    assert_non_null(strstr(line, " completed model=gpt-4o-mini code= x=\"a\\\"b\""));
}

/* A trace id read back from Redis is whatever was written there: one that is not
 * a plain token is quoted and escaped like any other text. */
static void test_log_trace_cannot_forge_fields(void **state)
{
    (void)state;
    const char *trace = "abc level=ERROR \"x\\";
    capture_begin();
    log_msg(LOG_WARN, trace, "code=%s", "unknown_trace");
    char *line = capture_end();
    struct field f[16];
    size_t n = parse_fields(line, f, 16);
    assert_int_equal(count_key(f, n, "trace"), 1);
    assert_string_equal(value_of(f, n, "trace"), trace);
    assert_int_equal(count_key(f, n, "level"), 0);
    assert_string_equal(value_of(f, n, "code"), "unknown_trace");
    assert_true(escapes_whole(line));
}

/* Conversions come out as printf writes them (nothing in them needs escaping). */
static void test_log_conversions_as_printf(void **state)
{
    (void)state;
    char want[256];
    int w = 6;
    void *p = &w;
    snprintf(want, sizeof(want), "%d %5.2f [%-*s] %.*s %zu %lld %llu %x %c %% %p %s", -42,
             3.14159, w, "ab", 3, "abcdef", (size_t)7, -9LL, 18446744073709551615ULL,
             255u, 'z', p, "end");
    capture_begin();
    log_msg(LOG_ERROR, NULL, "%d %5.2f [%-*s] %.*s %zu %lld %llu %x %c %% %p %s", -42,
            3.14159, w, "ab", 3, "abcdef", (size_t)7, -9LL, 18446744073709551615ULL, 255u,
            'z', p, "end");
    char *line = capture_end();
    assert_non_null(strstr(line, " ERROR "));
    size_t ll = strlen(line), wl = strlen(want);
    assert_true(ll > wl);
    assert_string_equal(line + ll - wl, want);
}

/* UTF-8 characters pass whole; bytes that are not UTF-8 become \xNN. */
static void test_log_utf8(void **state)
{
    (void)state;
    capture_begin();
    log_info(NULL, "message=\"%s\"", "h\xc3\xa9llo \xe2\x82\xac \xff\xc3( \xe2\x82");
    char *line = capture_end();
    assert_non_null(strstr(line, "message=\"h\xc3\xa9llo \xe2\x82\xac \\xff\\xc3( "
                                 "\\xe2\\x82\""));
}

/* log_escape stops before anything that does not fit whole. */
static void test_log_escape_cut(void **state)
{
    (void)state;
    char d[16];
    assert_int_equal(log_escape(d, 4, "ab\"", 3), 2);
    assert_string_equal(d, "ab");
    assert_int_equal(log_escape(d, 5, "ab\"", 3), 4);
    assert_string_equal(d, "ab\\\"");
    assert_int_equal(log_escape(d, 3, "a\\", 2), 1);
    assert_string_equal(d, "a"); /* never a lone trailing backslash */
    assert_int_equal(log_escape(d, 5, "a\x01", 2), 1);
    assert_string_equal(d, "a");
    assert_int_equal(log_escape(d, 6, "a\x01", 2), 5);
    assert_string_equal(d, "a\\x01");
    assert_int_equal(log_escape(d, 3, "a\xc3\xa9", 3), 1);
    assert_string_equal(d, "a"); /* never part of a character */
    assert_int_equal(log_escape(d, 4, "a\xc3\xa9", 3), 3);
    assert_string_equal(d, "a\xc3\xa9");
    assert_int_equal(log_escape(d, 1, "abc", 3), 0);
    assert_string_equal(d, "");
    assert_int_equal(log_escape(d, sizeof(d), "\\\"\n\r\t\x7f", 6), 14);
    assert_string_equal(d, "\\\\\\\"\\n\\r\\t\\x7f");
    /* srclen, not the NUL, ends the text. */
    assert_int_equal(log_escape(d, sizeof(d), "a\0b", 3), 6);
    assert_string_equal(d, "a\\x00b");
}

/* A message too long for one line is cut between escapes. */
static void test_log_long_message_cut(void **state)
{
    (void)state;
    static char evil[5000];
    memset(evil, '"', sizeof(evil) - 1);
    capture_begin();
    log_info(TRACE, "message=\"%s\" code=x", evil);
    char *line = capture_end();
    assert_true(escapes_whole(line));
    struct field f[16];
    size_t n = parse_fields(line, f, 16);
    assert_int_equal(count_key(f, n, "trace"), 1);
    assert_int_equal(count_key(f, n, "code"), 0); /* cut off, not forged */
    const char *m = strstr(line, "message=\"");
    assert_non_null(m);
    m += strlen("message=\"");
    assert_true(strlen(m) > 4000);
    assert_true(strlen(m) % 2 == 0);
    for (size_t i = 0; m[i]; i += 2) {
        assert_int_equal(m[i], '\\');
        assert_int_equal(m[i + 1], '"');
    }
}

/* The consumer is a field of every line once set, quoted when it must be. */
static void test_log_consumer_field(void **state)
{
    (void)state;
    struct field f[16];
    log_set_consumer("processor-host-7");
    capture_begin();
    log_info(TRACE, "event=retry attempt=%d", 2);
    char *line = capture_end();
    size_t n = parse_fields(line, f, 16);
    assert_string_equal(value_of(f, n, "consumer"), "processor-host-7");
    assert_string_equal(value_of(f, n, "trace"), TRACE);
    assert_string_equal(value_of(f, n, "event"), "retry");

    log_set_consumer("a host\" trace=evil");
    capture_begin();
    log_info(TRACE, "event=retry");
    line = capture_end();
    n = parse_fields(line, f, 16);
    assert_int_equal(count_key(f, n, "trace"), 1);
    assert_string_equal(value_of(f, n, "trace"), TRACE);
    assert_string_equal(value_of(f, n, "consumer"), "a host\" trace=evil");
    log_set_consumer(NULL);
}

/* LOG_FORMAT=json: one object per line, whatever the text; the key=%s fields are
 * members of their own, and a value can neither close its string nor add a
 * member or a line. */
static void test_log_json_cannot_forge(void **state)
{
    (void)state;
    const char *evil =
        "x\" trace=evil\n{\"level\":\"error\",\"forged\":1}\\ a=b \x01\xff";
    const char *model = "gpt\",\"forged\":\"1";
    json_error_t jerr;

    log_set_format(LOG_FORMAT_JSON);
    log_set_consumer("handler-h-1");
    capture_begin();
    log_warn(TRACE, "event=failed model=%s attempts=%d message=\"%s\" plain %s", model, 3,
             evil, "tail");
    char *line = capture_end();
    log_set_format(LOG_FORMAT_LOGFMT);
    log_set_consumer(NULL);

    json_t *o = json_loads(line, 0, &jerr);
    if (o == NULL)
        fail_msg("not JSON (%s): %s", jerr.text, line);
    assert_true(json_is_object(o));
    assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(o, "trace")), TRACE);
    assert_string_equal(json_string_value(json_object_get(o, "consumer")), "handler-h-1");
    assert_string_equal(json_string_value(json_object_get(o, "event")), "failed");
    assert_string_equal(json_string_value(json_object_get(o, "model")), model);
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), 3);
    assert_true(json_is_integer(json_object_get(o, "attempts")));
    /* The message's invalid byte shows as the text \xff, as in logfmt. */
    const char *m = json_string_value(json_object_get(o, "message"));
    assert_non_null(m);
    assert_int_equal(strncmp(m, evil, strlen(evil) - 1), 0);
    assert_string_equal(m + strlen(evil) - 1, "\\xff");
    assert_null(json_object_get(o, "forged"));
    assert_null(json_object_get(o, "a"));
    assert_non_null(json_object_get(o, "time"));
    assert_non_null(strstr(json_string_value(json_object_get(o, "msg")), "plain tail"));
    assert_int_equal(json_object_size(o), 10);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_quote_cannot_forge_fields),
        cmocka_unit_test(test_log_backslash_escaped),
        cmocka_unit_test(test_log_control_characters),
        cmocka_unit_test(test_log_unquoted_field_cannot_forge),
        cmocka_unit_test(test_log_trace_cannot_forge_fields),
        cmocka_unit_test(test_log_conversions_as_printf),
        cmocka_unit_test(test_log_utf8),
        cmocka_unit_test(test_log_escape_cut),
        cmocka_unit_test(test_log_long_message_cut),
        cmocka_unit_test(test_log_consumer_field),
        cmocka_unit_test(test_log_json_cannot_forge),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
