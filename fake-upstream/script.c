/*
 * script.c - the per-request scripting language of the fake upstream: a directive
 * "[[fake key=value key ...]]" anywhere in the last user message, and the attempt
 * counters that make times=N work across retries of the same message.
 *
 * The processor retries a failed job with the same text, so "the same message" is the
 * only identity the fake can see; counters are keyed by a 64-bit FNV-1a hash of the
 * whole text (a collision between two test messages is not a practical concern).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"

#define SCRIPT_OPEN "[[fake"
#define SCRIPT_CLOSE_MARK "]]"

struct script_slot {
    uint64_t key; /* 0: empty */
    unsigned long count;
};

struct script_counts {
    struct script_slot *slots;
    size_t cap; /* power of two */
    size_t used;
};

static void script_defaults(struct script *s)
{
    memset(s, 0, sizeof(*s));
    s->latency_ms = -1;
    s->times = -1;
}

/* Parses a whole token as a decimal integer within [min, max]. */
static int script_number(const char *v, size_t n, long min, long max, long *out)
{
    char buf[32];
    char *end;
    long x;

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    errno = 0;
    x = strtol(buf, &end, 10);
    if (errno != 0 || *end != '\0' || x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

/* Header values are sent verbatim so tests can feed odd ones ("1.5", "soon") to the
 * processor; only printable ASCII, and short, so the header stays well-formed. */
static int script_header_value(const char *v, size_t n, char *dst, size_t size)
{
    if (n == 0 || n >= size)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x21 || v[i] > 0x7e)
            return -1;
    memcpy(dst, v, n);
    dst[n] = '\0';
    return 0;
}

static int script_key_is(const char *k, size_t kn, const char *name)
{
    return strlen(name) == kn && memcmp(k, name, kn) == 0;
}

/* Applies one key[=value] token; unknown keys and bad values are ignored so that a
 * typo gives a plain success rather than a confusing failure elsewhere. */
static void script_apply(struct script *s, const char *tok, size_t n)
{
    const char *eq = memchr(tok, '=', n);
    size_t kn = eq != NULL ? (size_t)(eq - tok) : n;
    const char *v = eq != NULL ? eq + 1 : NULL;
    size_t vn = eq != NULL ? n - kn - 1 : 0;
    long x;

    if (script_key_is(tok, kn, "status")) {
        if (v != NULL && script_number(v, vn, 200, 599, &x) == 0)
            s->status = (int)x;
    } else if (script_key_is(tok, kn, "quota")) {
        s->quota = 1;
    } else if (script_key_is(tok, kn, "echo-auth")) {
        s->echo_auth = 1;
    } else if (script_key_is(tok, kn, "echo-request")) {
        s->echo_request = 1;
    } else if (script_key_is(tok, kn, "finish")) {
        if (v != NULL && vn == 6 && memcmp(v, "length", 6) == 0)
            s->finish_length = 1;
    } else if (script_key_is(tok, kn, "retry-after")) {
        if (v != NULL)
            script_header_value(v, vn, s->retry_after, sizeof(s->retry_after));
    } else if (script_key_is(tok, kn, "retry-after-ms")) {
        if (v != NULL)
            script_header_value(v, vn, s->retry_after_ms, sizeof(s->retry_after_ms));
    } else if (script_key_is(tok, kn, "retry-after-date")) {
        if (v != NULL && script_number(v, vn, -1000000000L, 1000000000L, &x) == 0) {
            s->has_retry_after_date = 1;
            s->retry_after_date = x;
        }
    } else if (script_key_is(tok, kn, "times")) {
        if (v != NULL && script_number(v, vn, 0, 1000000000L, &x) == 0)
            s->times = x;
    } else if (script_key_is(tok, kn, "latency")) {
        if (v != NULL && script_number(v, vn, 0, FAKE_MAX_DELAY_MS, &x) == 0)
            s->latency_ms = (int)x;
    } else if (script_key_is(tok, kn, "drip")) {
        if (v != NULL && script_number(v, vn, 1, FAKE_MAX_DELAY_MS, &x) == 0)
            s->drip_ms = (int)x;
    } else if (script_key_is(tok, kn, "chunk-ms")) {
        if (v != NULL && script_number(v, vn, 1, FAKE_MAX_DELAY_MS, &x) == 0)
            s->chunk_ms = (int)x;
    } else if (script_key_is(tok, kn, "huge")) {
        /* Larger asks are clamped rather than ignored: the test wants "too big". */
        if (v != NULL && script_number(v, vn, 0, LONG_MAX, &x) == 0) {
            s->huge = (size_t)x > FAKE_MAX_HUGE ? FAKE_MAX_HUGE : (size_t)x;
            if (s->body == SCRIPT_BODY_NORMAL)
                s->body = SCRIPT_BODY_HUGE;
        }
    } else if (script_key_is(tok, kn, "endless")) {
        s->endless = v != NULL && vn == 7 && memcmp(v, "garbage", 7) == 0
                         ? SCRIPT_ENDLESS_GARBAGE
                         : SCRIPT_ENDLESS_TEXT;
    } else if (script_key_is(tok, kn, "garbage")) {
        if (v != NULL && vn == 4 && memcmp(v, "html", 4) == 0)
            s->body = SCRIPT_BODY_GARBAGE_HTML;
        else
            s->body = SCRIPT_BODY_GARBAGE;
    } else if (script_key_is(tok, kn, "nochoices")) {
        if (s->body != SCRIPT_BODY_GARBAGE && s->body != SCRIPT_BODY_GARBAGE_HTML)
            s->body = SCRIPT_BODY_NOCHOICES;
    } else if (script_key_is(tok, kn, "close")) {
        s->action = SCRIPT_CLOSE;
    } else if (script_key_is(tok, kn, "reset")) {
        if (s->action != SCRIPT_CLOSE)
            s->action = SCRIPT_RESET;
    } else if (script_key_is(tok, kn, "hang")) {
        if (s->action == SCRIPT_ANSWER)
            s->action = SCRIPT_HANG;
    }
}

int script_parse(const char *text, size_t len, struct script *out)
{
    const char *open, *close, *p;
    size_t olen = strlen(SCRIPT_OPEN);

    script_defaults(out);
    open = memmem(text, len, SCRIPT_OPEN, olen);
    if (open == NULL)
        return 0;
    p = open + olen;
    close = memmem(p, len - (size_t)(p - text), SCRIPT_CLOSE_MARK, 2);
    if (close == NULL)
        return 0;
    /* "[[fakery]]" is not a directive. */
    if (p < close && !isspace((unsigned char)*p))
        return 0;

    while (p < close) {
        const char *tok;

        while (p < close && isspace((unsigned char)*p))
            p++;
        tok = p;
        while (p < close && !isspace((unsigned char)*p))
            p++;
        if (p > tok)
            script_apply(out, tok, (size_t)(p - tok));
    }
    out->found = 1;
    return 1;
}

static uint64_t script_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h != 0 ? h : 1; /* 0 marks an empty slot */
}

struct script_counts *script_counts_new(void)
{
    struct script_counts *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->cap = 64;
    c->slots = calloc(c->cap, sizeof(*c->slots));
    if (c->slots == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void script_counts_free(struct script_counts *c)
{
    if (c == NULL)
        return;
    free(c->slots);
    free(c);
}

void script_counts_clear(struct script_counts *c)
{
    memset(c->slots, 0, c->cap * sizeof(*c->slots));
    c->used = 0;
}

static struct script_slot *script_counts_find(struct script_slot *slots, size_t cap,
                                              uint64_t key)
{
    size_t i = (size_t)key & (cap - 1);

    /* Linear probing; the table is never full (load <= 70%), so this ends. */
    while (slots[i].key != 0 && slots[i].key != key)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static int script_counts_grow(struct script_counts *c)
{
    size_t cap = c->cap * 2;
    struct script_slot *slots = calloc(cap, sizeof(*slots));

    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].key != 0)
            *script_counts_find(slots, cap, c->slots[i].key) = c->slots[i];
    free(c->slots);
    c->slots = slots;
    c->cap = cap;
    return 0;
}

unsigned long script_counts_bump(struct script_counts *c, const char *text, size_t len)
{
    uint64_t key = script_hash(text, len);
    struct script_slot *slot;

    if ((c->used + 1) * 10 > c->cap * 7 && script_counts_grow(c) == -1)
        return 0;
    slot = script_counts_find(c->slots, c->cap, key);
    if (slot->key == 0) {
        slot->key = key;
        c->used++;
    }
    return ++slot->count;
}
