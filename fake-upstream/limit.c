/*
 * limit.c - the fake upstream's rate limiter: per API key, a budget of requests and
 * one of tokens per window (--rpm, --tpm, --limit-window-ms), as OpenAI enforces its
 * RPM and TPM limits, and the duration format of its x-ratelimit-reset-* headers.
 *
 * Why a continuously refilling token bucket: that is how OpenAI's limits behave
 * from outside. Its x-ratelimit-remaining-* headers climb back smoothly between
 * requests rather than jumping at a minute boundary, x-ratelimit-reset-* is the time
 * until the budget is whole again (short after one request, about a window after a
 * burst), and a limit of 60 RPM refuses a burst of 61 but allows one more request
 * a second after. A fixed window would allow two full budgets back to back across
 * its edge; a sliding log would need memory per request. The bucket holds capacity
 * = the per-window budget and refills at capacity / window, so a client pacing at
 * the limit never waits and a burst gets exactly the budget.
 *
 * The clock is passed in (monotonic ms) so the unit tests are deterministic.
 * A refused request is not charged: the budget a client sees is the one it spent.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"

#define LIMIT_SLOTS 256 /* hash chains; a test or benchmark uses a handful of keys */

struct limit_entry {
    uint64_t hash; /* of the key: the key itself is never kept */
    struct limit_bucket requests, tokens;
    struct limit_entry *next;
};

struct limiter {
    long long rpm, tpm, window_ms;
    struct limit_entry *slots[LIMIT_SLOTS];
};

static long long limit_clamp(long long x, long long lo, long long hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

void limit_bucket_init(struct limit_bucket *b, long long capacity, long long window_ms,
                       long long now_ms)
{
    b->capacity = limit_clamp(capacity, 1, LIMIT_MAX_CAPACITY);
    b->window_ms = limit_clamp(window_ms, 1, LIMIT_MAX_WINDOW_MS);
    b->level = b->capacity * b->window_ms;
    b->stamp_ms = now_ms;
}

void limit_bucket_refill(struct limit_bucket *b, long long now_ms)
{
    long long full = b->capacity * b->window_ms;
    long long elapsed = now_ms - b->stamp_ms;

    if (elapsed <= 0)
        return;
    b->stamp_ms = now_ms;
    /* After a whole window any bucket is full; this also keeps the product small. */
    if (elapsed >= b->window_ms || full - b->level <= elapsed * b->capacity)
        b->level = full;
    else
        b->level += elapsed * b->capacity;
}

long long limit_bucket_remaining(const struct limit_bucket *b)
{
    return b->level / b->window_ms;
}

/* ms until level reaches want (scaled units): level gains capacity per ms. */
static long long limit_bucket_until(const struct limit_bucket *b, long long want)
{
    long long need = want - b->level;

    return need <= 0 ? 0 : (need + b->capacity - 1) / b->capacity;
}

long long limit_bucket_wait_ms(const struct limit_bucket *b, long long n)
{
    if (n > b->capacity)
        return -1;
    return limit_bucket_until(b, (n < 0 ? 0 : n) * b->window_ms);
}

long long limit_bucket_reset_ms(const struct limit_bucket *b)
{
    return limit_bucket_until(b, b->capacity * b->window_ms);
}

void limit_bucket_take(struct limit_bucket *b, long long n)
{
    b->level -= n * b->window_ms;
    if (b->level < 0)
        b->level = 0;
}

struct limiter *limit_new(long long rpm, long long tpm, long long window_ms)
{
    struct limiter *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->rpm = rpm > 0 ? limit_clamp(rpm, 1, LIMIT_MAX_CAPACITY) : 0;
    l->tpm = tpm > 0 ? limit_clamp(tpm, 1, LIMIT_MAX_CAPACITY) : 0;
    l->window_ms = limit_clamp(window_ms, 1, LIMIT_MAX_WINDOW_MS);
    return l;
}

void limit_clear(struct limiter *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < LIMIT_SLOTS; i++) {
        struct limit_entry *e = l->slots[i];

        while (e != NULL) {
            struct limit_entry *next = e->next;

            free(e);
            e = next;
        }
        l->slots[i] = NULL;
    }
}

void limit_free(struct limiter *l)
{
    limit_clear(l);
    free(l);
}

/* FNV-1a, 64 bits: two test keys colliding would need ~2^32 of them. */
static uint64_t limit_hash(const char *key)
{
    uint64_t h = 14695981039346656037ULL;

    for (const unsigned char *s = (const unsigned char *)key; *s != '\0'; s++) {
        h ^= *s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The entry of key, created with full buckets on first sight; NULL on ENOMEM. */
static struct limit_entry *limit_entry_get(struct limiter *l, const char *key,
                                           long long now_ms)
{
    uint64_t h = limit_hash(key);
    struct limit_entry **slot = &l->slots[h % LIMIT_SLOTS];
    struct limit_entry *e;

    for (e = *slot; e != NULL; e = e->next)
        if (e->hash == h)
            return e;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->hash = h;
    /* An unlimited budget still gets a bucket (never consulted) so the code
     * below need not ask twice. */
    limit_bucket_init(&e->requests, l->rpm > 0 ? l->rpm : 1, l->window_ms, now_ms);
    limit_bucket_init(&e->tokens, l->tpm > 0 ? l->tpm : 1, l->window_ms, now_ms);
    e->next = *slot;
    *slot = e;
    return e;
}

static void limit_report(const struct limit_bucket *b, long long limit,
                         struct limit_budget *out)
{
    out->limit = limit;
    out->remaining = limit > 0 ? limit_bucket_remaining(b) : 0;
    out->reset_ms = limit > 0 ? limit_bucket_reset_ms(b) : 0;
}

int limit_admit(struct limiter *l, const char *key, long long cost, long long now_ms,
                struct limit_verdict *v)
{
    struct limit_entry *e;
    long long wait_req = 0, wait_tok = 0;

    memset(v, 0, sizeof(*v));
    v->cost = cost < 0 ? 0 : cost;
    if (l->rpm == 0 && l->tpm == 0) {
        v->allowed = 1;
        return 0;
    }
    e = limit_entry_get(l, key, now_ms);
    if (e == NULL)
        return -1;
    limit_bucket_refill(&e->requests, now_ms);
    limit_bucket_refill(&e->tokens, now_ms);
    if (l->rpm > 0)
        wait_req = limit_bucket_wait_ms(&e->requests, 1);
    if (l->tpm > 0)
        wait_tok = limit_bucket_wait_ms(&e->tokens, v->cost);

    if (wait_tok < 0) {
        /* OpenAI answers this with a 429 too, one that no waiting cures. */
        v->too_large = 1;
        v->type = "tokens";
        v->retry_ms = -1;
    } else if (wait_req > 0 || wait_tok > 0) {
        /* Name the budget that holds the request back longest. */
        int by_tokens = wait_tok > wait_req;
        const struct limit_bucket *b = by_tokens ? &e->tokens : &e->requests;

        v->type = by_tokens ? "tokens" : "requests";
        v->used = b->capacity - limit_bucket_remaining(b);
        v->retry_ms = by_tokens ? wait_tok : wait_req;
    } else {
        v->allowed = 1;
        if (l->rpm > 0)
            limit_bucket_take(&e->requests, 1);
        if (l->tpm > 0)
            limit_bucket_take(&e->tokens, v->cost);
    }
    limit_report(&e->requests, l->rpm, &v->requests);
    limit_report(&e->tokens, l->tpm, &v->tokens);
    return 0;
}

int limit_format_duration(char *buf, size_t size, long long ms)
{
    long long h, m, s, frac;
    int n, len = 0;
    char fbuf[8] = "";

    if (size == 0)
        return -1;
    buf[0] = '\0';
    if (ms <= 0) {
        n = snprintf(buf, size, "0s");
        goto check;
    }
    if (ms < 1000) {
        n = snprintf(buf, size, "%lldms", ms);
        goto check;
    }
    h = ms / 3600000;
    m = ms / 60000 % 60;
    s = ms / 1000 % 60;
    frac = ms % 1000;
    if (frac > 0) {
        /* ".5" for 500 ms, ".05" for 50, ".005" for 5: Go trims trailing zeros. */
        snprintf(fbuf, sizeof(fbuf), ".%03lld", frac);
        for (len = (int)strlen(fbuf); fbuf[len - 1] == '0'; len--)
            fbuf[len - 1] = '\0';
    }
    if (h > 0)
        n = snprintf(buf, size, "%lldh%lldm%lld%ss", h, m, s, fbuf);
    else if (m > 0)
        n = snprintf(buf, size, "%lldm%lld%ss", m, s, fbuf);
    else
        n = snprintf(buf, size, "%lld%ss", s, fbuf);
check:
    if (n < 0 || (size_t)n >= size) {
        buf[0] = '\0';
        return -1;
    }
    return 0;
}
