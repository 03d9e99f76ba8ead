/* test_secrets.c - the upstream key never comes back out: with an upstream that
 * quotes the Authorization header in its error bodies (as some proxies and
 * self-hosted servers do) and the key's head and tail (as OpenAI does), no 6-byte
 * piece of the key may appear in any log of the group, any Redis key or value, or
 * any answer of GET /chat/{id}/response. The processor takes its key from
 * OPENAI_API_KEY_FILE, as docker secrets hand it over; test_config checks that
 * setting's mistakes. */
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define SEC_CHAT_MS 20000
#define SEC_PIECE 6
/* Long and random-looking, like a real one, so that a 6-byte piece of it never
 * turns up in a log or a record by chance. */
#define SEC_KEY "sk-test-DNxril3RavGD5MfvJ7NScUykT8C8UBkkpdhiG37L"

static struct stack sec_stack;

/* The key comes from OPENAI_API_KEY_FILE (the stack's OPENAI_API_KEY emptied),
 * and the fake demands it: a chat that gets past the fake's key check proves the
 * file was read, and read right. */
static char sec_key_file_env[PATH_MAX + 32];
static const char *const sec_processor_env[] = {"OPENAI_API_KEY=",
                                                sec_key_file_env,
                                                "UPSTREAM_MAX_ATTEMPTS=2",
                                                "RETRY_BASE_MS=50",
                                                "RETRY_MAX_MS=100",
                                                "PARK_MIN_MS=0",
                                                NULL};
static const char *const sec_fake_args[] = {"--require-key", SEC_KEY, NULL};

/* The answers of GET /chat/{id}/response, kept for the sweep at the end. */
#define SEC_MAX_BODIES 8
static char *sec_bodies[SEC_MAX_BODIES];
static size_t sec_nbodies;

static int sec_setup(void **state)
{
    (void)state;
    char dir[PATH_MAX - 64], path[PATH_MAX];
    struct stack_settings set = {.processor = sec_processor_env, .fake = sec_fake_args};
    if (harness_subdir("secrets-key", dir, sizeof(dir)) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/openai-key", dir);
    FILE *f = fopen(path, "w");
    /* The line end a text editor on Windows leaves, which must not be sent. */
    if (f == NULL || fputs(SEC_KEY "\r\n", f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "integration: cannot write %s\n", path);
        return -1;
    }
    snprintf(sec_key_file_env, sizeof(sec_key_file_env), "OPENAI_API_KEY_FILE=%s", path);
    return stack_start(&sec_stack, "secrets", "t9:", &set);
}

static int sec_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < sec_nbodies; i++)
        free(sec_bodies[i]);
    sec_nbodies = 0;
    return stack_stop(&sec_stack);
}

/* 1 with the piece in piece if some SEC_PIECE-byte piece of the key occurs in
 * hay[0..len), else 0. */
static int sec_has_piece(const char *hay, size_t len, char piece[SEC_PIECE + 1])
{
    const char *key = SEC_KEY;
    size_t klen = strlen(key);
    for (size_t k = 0; k + SEC_PIECE <= klen; k++)
        if (memmem(hay, len, key + k, SEC_PIECE) != NULL) {
            memcpy(piece, key + k, SEC_PIECE);
            piece[SEC_PIECE] = '\0';
            return 1;
        }
    return 0;
}

static int sec_reply_has(const redisReply *r, char piece[SEC_PIECE + 1])
{
    if (r == NULL)
        return 0;
    if (r->str != NULL && sec_has_piece(r->str, r->len, piece))
        return 1;
    for (size_t i = 0; i < r->elements; i++)
        if (sec_reply_has(r->element[i], piece))
            return 1;
    return 0;
}

/* Every key of the group's Redis, its name and its whole value (the dead-letter
 * stream included). 1 with the key in where if a piece is found, 0 if not, -1 on
 * error. */
struct sec_where {
    char *where;
    size_t len;
};

static int sec_check_key(const char *key, const char *type, const redisReply *value,
                         void *arg)
{
    struct sec_where *w = arg;
    char piece[SEC_PIECE + 1];
    if (!sec_has_piece(key, strlen(key), piece) && !sec_reply_has(value, piece))
        return 0;
    snprintf(w->where, w->len, "\"%s\" in %s (%s)", piece, key, type);
    return 1;
}

static int sec_redis_has(struct stack *s, char *where, size_t len)
{
    /* The dead-letter stream may not exist yet; SCAN sees it if it does. */
    struct sec_where w = {where, len};
    return stack_redis_each(s, sec_check_key, &w);
}

/* Reads the whole file at path: new (free), or NULL. */
static char *sec_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        if (*len + 4096 > cap) {
            char *b = realloc(buf, cap + 65536);
            if (b == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
            cap += 65536;
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        *len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    return buf;
}

/* Every *.log of the group (ours, the fake's and Redis's). 1 with where filled if
 * a piece is found, 0 if not, -1 if one cannot be read. */
static int sec_logs_have(struct stack *s, char *where, size_t len)
{
    char pattern[PATH_MAX], piece[SEC_PIECE + 1];
    glob_t g;
    int rc = 0;
    snprintf(pattern, sizeof(pattern), "%s/*.log", s->dir);
    if (glob(pattern, 0, NULL, &g) != 0)
        return -1;
    size_t used = 0;
    where[0] = '\0';
    /* Every file is looked at, so that a failure names each that leaks. */
    for (size_t i = 0; i < g.gl_pathc && rc >= 0; i++) {
        size_t n;
        const char *base = strrchr(g.gl_pathv[i], '/') + 1;
        char *text = sec_slurp(g.gl_pathv[i], &n);
        if (text == NULL) {
            snprintf(where, len, "cannot read %s", g.gl_pathv[i]);
            rc = -1;
        } else if (sec_has_piece(text, n, piece) && used < len) {
            used += (size_t)snprintf(where + used, len - used, "%s\"%s\" in %s",
                                     rc ? ", " : "", piece, base);
            rc = 1;
        }
        free(text);
    }
    globfree(&g);
    return rc;
}

/* Posts message, waits for it to fail with code, keeps the answer's body. */
static void sec_expect_failed(const char *message, const char *code)
{
    char trace[UUID_LEN + 1], url[256];
    CHECK(chat_post(&sec_stack, message, NULL, -1, trace) == 0, "POST \"%s\" failed",
          message);
    json_t *j = chat_wait(&sec_stack, trace, SEC_CHAT_MS, NULL);
    CHECK(j != NULL, "chat \"%s\" did not finish", message);
    CHECK(strcmp(STR(http_json_str(j, "status")), "failed") == 0 &&
              strcmp(STR(http_error_code(j)), code) == 0,
          "chat \"%s\" ended %s/%s, want failed/%s", message,
          STR(http_json_str(j, "status")), STR(http_error_code(j)), code);
    /* The upstream's words are still there, only without the key. */
    CHECK(strstr(STR(http_error_message(j)), "Authorization header was") != NULL,
          "error.message \"%s\" is not the upstream's", STR(http_error_message(j)));
    json_decref(j);

    /* The raw bytes a client gets, not a re-encoding of them. */
    struct http_response r;
    char path[128];
    snprintf(path, sizeof(path), "/chat/%s/response", trace);
    int rc = http_request("GET", stack_url(&sec_stack, path, url, sizeof(url)), NULL, 0,
                          5000, &r);
    CHECK(rc == 0 && r.status == 200, "GET %s: %ld %s", path, r.status, r.error);
    if (sec_nbodies < SEC_MAX_BODIES) {
        sec_bodies[sec_nbodies++] = r.body;
        r.body = NULL;
    }
    http_response_free(&r);
}

static void test_secrets_echoed_key_is_scrubbed(void **state)
{
    (void)state;
    char where[512], piece[SEC_PIECE + 1], trace[UUID_LEN + 1];

    /* The fake accepts the key from the file. */
    CHECK(chat_post(&sec_stack, "hello from a key file", NULL, -1, trace) == 0,
          "POST failed");
    json_t *done = chat_wait(&sec_stack, trace, SEC_CHAT_MS, NULL);
    CHECK(done != NULL && strcmp(STR(http_json_str(done, "status")), "completed") == 0,
          "a plain chat ended %s (%s), want completed: the key from "
          "OPENAI_API_KEY_FILE was not the fake's",
          STR(http_json_str(done, "status")), STR(http_error_message(done)));
    json_decref(done);

    sec_expect_failed("[[fake status=401 echo-auth]] who am I", "invalid_api_key");
    sec_expect_failed("[[fake status=400 echo-auth]] a bad request", "invalid_request");
    /* Retried, so logged on every attempt, then given up on. */
    sec_expect_failed("[[fake status=503 echo-auth]] overloaded", "upstream_unavailable");

    /* Every place is looked at before failing, so a failure names them all. */
    char found[2048] = "";
    size_t n = 0;
    for (size_t i = 0; i < sec_nbodies; i++)
        if (sec_has_piece(sec_bodies[i], strlen(sec_bodies[i]), piece))
            n += (size_t)snprintf(found + n, sizeof(found) - n, "\"%s\" in answer %zu; ",
                                  piece, i + 1);
    int hit = sec_redis_has(&sec_stack, where, sizeof(where));
    if (hit != 0 && n < sizeof(found))
        n += (size_t)snprintf(found + n, sizeof(found) - n, "%s; ",
                              hit < 0 ? "cannot scan Redis" : where);
    hit = sec_logs_have(&sec_stack, where, sizeof(where));
    if (hit != 0 && n < sizeof(found))
        n += (size_t)snprintf(found + n, sizeof(found) - n, "%s; ", where);
    CHECK(n == 0, "pieces of the API key found: %s", found);
}

static const struct CMUnitTest sec_tests[] = {
    cmocka_unit_test(test_secrets_echoed_key_is_scrubbed),
};

const struct suite_group suite_secrets = {"secrets", sec_tests,
                                          sizeof(sec_tests) / sizeof(sec_tests[0]),
                                          sec_setup, sec_teardown};
