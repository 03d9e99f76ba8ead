/* fuzz_record.c - a request-stream entry and a result entry / trace hash, as
 * Redis would hand them over, through common/record.c's parsers; an entry that
 * parses must survive being written back and parsed again unchanged.
 *
 * The input is split on NUL bytes into the strings of the field/value array; a
 * string that is exactly "\xfe" becomes a nil element and "\xfd" an integer, so
 * the parsers also meet elements of the wrong type. */
#include <string.h>

#include <hiredis/hiredis.h>

#include "cmd.h"
#include "fuzz.h"
#include "record.h"

/* Returns a new array reply (free with freeReplyObject) of n string elements
 * taken from c's arguments from skip on, or NULL if memory ran out. */
static redisReply *fuzz_reply_from_cmd(const struct cmd *c, int skip)
{
    redisReply *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->type = REDIS_REPLY_ARRAY;
    r->elements = (size_t)(c->argc - skip);
    r->element = calloc(r->elements ? r->elements : 1, sizeof(*r->element));
    if (r->element == NULL)
        goto fail;
    for (size_t i = 0; i < r->elements; i++) {
        const char *s = c->argv[i + (size_t)skip];
        size_t len = c->len[i + (size_t)skip];
        redisReply *e = calloc(1, sizeof(*e));
        if (e == NULL)
            goto fail;
        r->element[i] = e;
        if (len == 1 && (unsigned char)s[0] == 0xfe) {
            e->type = REDIS_REPLY_NIL;
            continue;
        }
        if (len == 1 && (unsigned char)s[0] == 0xfd) {
            e->type = REDIS_REPLY_INTEGER;
            e->integer = 42;
            continue;
        }
        e->type = REDIS_REPLY_STRING;
        e->len = len;
        e->str = malloc(len + 1);
        if (e->str == NULL)
            goto fail;
        memcpy(e->str, s, len);
        e->str[len] = '\0';
    }
    return r;
fail:
    freeReplyObject(r);
    return NULL;
}

static int fuzz_str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void fuzz_request(const redisReply *fields)
{
    struct chat_request a, b;
    char err[256];
    if (record_request_parse(fields, &a, err, sizeof(err)) != 0) {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
        return;
    }
    struct cmd c;
    cmd_init(&c, "XADD");
    record_request_append(&a, &c);
    redisReply *again = c.overflow ? NULL : fuzz_reply_from_cmd(&c, 1);
    if (again != NULL) {
        FUZZ_CHECK(record_request_parse(again, &b, err, sizeof(err)) == 0);
        FUZZ_CHECK(strcmp(a.trace, b.trace) == 0);
        /* A request has message or, from the OpenAI front, messages. */
        FUZZ_CHECK(
            a.message_len == b.message_len &&
            (a.message_len == 0 || memcmp(a.message, b.message, a.message_len) == 0));
        FUZZ_CHECK(
            a.messages_len == b.messages_len &&
            (a.messages_len == 0 || memcmp(a.messages, b.messages, a.messages_len) == 0));
        FUZZ_CHECK(strcmp(a.model, b.model) == 0);
        FUZZ_CHECK(a.temperature == b.temperature);
        FUZZ_CHECK(fuzz_str_eq(a.accepted, b.accepted));
        FUZZ_CHECK(a.deadline == b.deadline);
        FUZZ_CHECK(fuzz_str_eq(a.user && a.user[0] ? a.user : NULL, b.user));
        freeReplyObject(again);
    }
    cmd_free(&c);
}

static void fuzz_result(const redisReply *fields)
{
    struct chat_result a, b;
    char err[256];
    if (record_result_parse(fields, &a, err, sizeof(err)) != 0) {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
        return;
    }
    struct cmd c;
    cmd_init(&c, "XADD");
    record_result_append(&a, &c);
    redisReply *again = c.overflow ? NULL : fuzz_reply_from_cmd(&c, 1);
    if (again != NULL) {
        FUZZ_CHECK(record_result_parse(again, &b, err, sizeof(err)) == 0);
        FUZZ_CHECK(a.status == b.status);
        FUZZ_CHECK(fuzz_str_eq(a.trace, b.trace));
        FUZZ_CHECK((a.response == NULL) == (b.response == NULL));
        FUZZ_CHECK(a.response == NULL ||
                   (a.response_len == b.response_len &&
                    memcmp(a.response, b.response, a.response_len) == 0));
        FUZZ_CHECK(fuzz_str_eq(a.model, b.model));
        FUZZ_CHECK(a.prompt_tokens == b.prompt_tokens);
        FUZZ_CHECK(a.completion_tokens == b.completion_tokens);
        FUZZ_CHECK(a.total_tokens == b.total_tokens);
        FUZZ_CHECK(fuzz_str_eq(a.error_code, b.error_code));
        FUZZ_CHECK(fuzz_str_eq(a.error_message, b.error_message));
        FUZZ_CHECK(fuzz_str_eq(a.accepted, b.accepted));
        FUZZ_CHECK(fuzz_str_eq(a.timestamp, b.timestamp));
        FUZZ_CHECK(a.attempts == b.attempts);
        freeReplyObject(again);
    }
    cmd_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The split goes through a cmd, as the real entries are written. */
    struct cmd c;
    cmd_init(&c, "FIELDS");
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        size_t len = nul ? (size_t)(nul - p) : (size_t)(end - p);
        cmd_add(&c, p, len);
        p += len + 1;
    }
    redisReply *fields = c.overflow ? NULL : fuzz_reply_from_cmd(&c, 1);
    if (fields != NULL) {
        fuzz_request(fields);
        fuzz_result(fields);
        freeReplyObject(fields);
    }
    cmd_free(&c);
    return 0;
}
