/* chunks.c - see chunks.h. */
#include "chunks.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define CHUNKS_DATA "data:"
#define CHUNKS_DONE "[DONE]"

void chunks_init(struct chunks *c, size_t max_text, size_t max_event)
{
    memset(c, 0, sizeof(*c));
    c->max_text = max_text;
    c->max_event = max_event;
    c->prompt_tokens = c->completion_tokens = c->total_tokens = -1;
}

void chunks_reset(struct chunks *c)
{
    size_t max_text = c->max_text, max_event = c->max_event;
    free(c->text);
    free(c->event);
    free(c->line);
    free(c->model);
    free(c->finish_reason);
    free(c->err);
    chunks_init(c, max_text, max_event);
}

static int chunks_fail(struct chunks *c, int too_long, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int chunks_fail(struct chunks *c, int too_long, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    /* Kept on the heap: a reader of every call in flight, failed or not, should
     * not carry room for a message most never have. NULL (out of memory) reads
     * as "out of memory". */
    if (c->err == NULL)
        c->err = strdup(why);
    c->failed = 1;
    c->too_long = too_long;
    return -1;
}

/* Appends s[0..n) to the buffer *buf (len, cap), keeping it NUL-terminated.
 * Returns 0, or -1 if memory ran out. */
static int chunks_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t want = *cap ? *cap : 256;
        while (want < *len + n + 1)
            want *= 2;
        char *p = realloc(*buf, want);
        if (p == NULL)
            return -1;
        *buf = p;
        *cap = want;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

static long long chunks_count(json_t *usage, const char *name)
{
    json_t *v = json_object_get(usage, name);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : -1;
}

static int chunks_keep(char **dst, json_t *v)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return 0;
    char *s = strdup(json_string_value(v));
    if (s == NULL)
        return -1;
    free(*dst);
    *dst = s;
    return 0;
}

/* One event's data: "[DONE]" or a chunk. */
static int chunks_event(struct chunks *c)
{
    json_error_t jerr;
    int rc = -1;
    if (c->done)
        return chunks_fail(c, 0, "the event stream went on after [DONE]");
    if (strcmp(c->event, CHUNKS_DONE) == 0) {
        c->done = 1;
        return 0;
    }
    json_t *root = json_loadb(c->event, c->event_len, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(root)) {
        rc = chunks_fail(c, 0, "an event of the stream is not a JSON object: %s",
                         root == NULL ? jerr.text : "another JSON value");
        goto out;
    }
    json_t *error = json_object_get(root, "error");
    if (error != NULL) {
        json_t *msg = json_is_object(error) ? json_object_get(error, "message") : error;
        rc = chunks_fail(c, 0, "the upstream sent an error in the stream: %.180s",
                         json_is_string(msg) ? json_string_value(msg) : "(no message)");
        goto out;
    }
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
    if (json_is_string(content)) {
        size_t n = json_string_length(content);
        if (n > c->max_text - c->text_len) {
            rc = chunks_fail(c, 1, "the streamed text exceeded %zu bytes", c->max_text);
            goto out;
        }
        if (chunks_append(&c->text, &c->text_len, &c->text_cap,
                          json_string_value(content), n) != 0)
            goto oom;
    }
    /* Kept when it is a short plain word: it is written to the record as it is. */
    json_t *fr = json_object_get(choice, "finish_reason");
    if (json_is_string(fr) && json_string_length(fr) < 32 &&
        strspn(json_string_value(fr), "abcdefghijklmnopqrstuvwxyz_") ==
            json_string_length(fr) &&
        chunks_keep(&c->finish_reason, fr) != 0)
        goto oom;
    if (c->model == NULL && chunks_keep(&c->model, json_object_get(root, "model")) != 0)
        goto oom;
    json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage)) {
        c->prompt_tokens = chunks_count(usage, "prompt_tokens");
        c->completion_tokens = chunks_count(usage, "completion_tokens");
        c->total_tokens = chunks_count(usage, "total_tokens");
    }
    rc = 0;
    goto out;
oom:
    rc = chunks_fail(c, 0, "out of memory reading the event stream");
out:
    json_decref(root);
    return rc;
}

/* One whole line (without its end). */
static int chunks_line(struct chunks *c)
{
    const char *l = c->line ? c->line : "";
    size_t n = c->line_len;
    int rc = 0;
    if (n == 0) {
        if (c->event_len > 0 || c->event != NULL)
            rc = chunks_event(c);
        c->event_len = 0;
        free(c->event);
        c->event = NULL;
        c->event_cap = 0;
    } else if (n >= sizeof(CHUNKS_DATA) - 1 &&
               memcmp(l, CHUNKS_DATA, sizeof(CHUNKS_DATA) - 1) == 0) {
        const char *v = l + sizeof(CHUNKS_DATA) - 1;
        size_t vn = n - (sizeof(CHUNKS_DATA) - 1);
        if (vn > 0 && *v == ' ') {
            v++;
            vn--;
        }
        if (c->event_len + vn + 1 > c->max_event)
            return chunks_fail(c, 1, "an event of the stream exceeded %zu bytes",
                               c->max_event);
        if ((c->event != NULL &&
             chunks_append(&c->event, &c->event_len, &c->event_cap, "\n", 1) != 0) ||
            chunks_append(&c->event, &c->event_len, &c->event_cap, v, vn) != 0)
            return chunks_fail(c, 0, "out of memory reading the event stream");
    }
    c->line_len = 0;
    return rc;
}

int chunks_feed(struct chunks *c, const char *buf, size_t len)
{
    if (c->failed)
        return -1;
    size_t i = 0;
    while (i < len) {
        if (c->after_cr && buf[i] == '\n') {
            c->after_cr = 0;
            i++;
            continue;
        }
        c->after_cr = 0;
        /* The rest of the line, in one copy. */
        size_t j = i;
        while (j < len && buf[j] != '\n' && buf[j] != '\r')
            j++;
        if (j > i) {
            if (c->line_len + (j - i) > c->max_event)
                return chunks_fail(c, 1, "a line of the stream exceeded %zu bytes",
                                   c->max_event);
            if (chunks_append(&c->line, &c->line_len, &c->line_cap, buf + i, j - i) != 0)
                return chunks_fail(c, 0, "out of memory reading the event stream");
        }
        if (j == len)
            break;
        c->after_cr = buf[j] == '\r';
        i = j + 1;
        if (chunks_line(c) != 0)
            return -1;
    }
    return 0;
}

char *chunks_body(const struct chunks *c, char *err, size_t errlen)
{
    char *out = NULL;
    if (c->failed) {
        snprintf(err, errlen, "%s", c->err != NULL ? c->err : "out of memory");
        return NULL;
    }
    if (!c->done) {
        snprintf(err, errlen, "the event stream ended before data: " CHUNKS_DONE);
        return NULL;
    }
    snprintf(err, errlen, "out of memory");
    json_t *content = json_stringn(c->text ? c->text : "", c->text_len);
    json_t *root =
        json_pack("{s:s, s:[{s:i, s:{s:s, s:o}, s:s?}]}", "object", "chat.completion",
                  "choices", "index", 0, "message", "role", "assistant", "content",
                  content, "finish_reason", c->finish_reason);
    if (root == NULL)
        return NULL;
    if (c->model != NULL &&
        json_object_set_new(root, "model", json_string(c->model)) != 0)
        goto out;
    if (c->prompt_tokens >= 0 || c->completion_tokens >= 0 || c->total_tokens >= 0) {
        json_t *usage = json_object();
        const char *names[] = {"prompt_tokens", "completion_tokens", "total_tokens"};
        long long values[] = {c->prompt_tokens, c->completion_tokens, c->total_tokens};
        for (size_t k = 0; usage != NULL && k < 3; k++)
            if (values[k] >= 0)
                json_object_set_new(usage, names[k], json_integer(values[k]));
        if (json_object_set_new(root, "usage", usage) != 0)
            goto out;
    }
    out = json_dumps(root, JSON_COMPACT);
out:
    json_decref(root);
    return out;
}
