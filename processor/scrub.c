/* scrub.c - redacting the key and credential-like text (see scrub.h). */
#include "scrub.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Marks the runs of text that occur in key (see scrub.h for which). Quadratic in
 * the lengths, which is fine for what is scrubbed: error messages of at most a
 * few KiB and a key of at most a few hundred bytes. */
static void scrub_mark_key(const char *text, size_t len, const char *key,
                           unsigned char *mark)
{
    size_t klen = key != NULL ? strlen(key) : 0;
    size_t mid = klen / 2;
    if (klen == 0)
        return;
    for (size_t i = 0; i < len; i++) {
        size_t best = 0;
        for (size_t k = 0; k < klen; k++) {
            size_t m = 0;
            while (i + m < len && k + m < klen && text[i + m] == key[k + m])
                m++;
            int inside = k <= mid && mid < k + m;
            if (m == klen || m >= SCRUB_MIN_RUN || (m >= SCRUB_MIN_MIDDLE && inside))
                if (m > best)
                    best = m;
        }
        memset(mark + i, 1, best);
    }
}

static int scrub_token_byte(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '"' && c != '\'' && c != ',' && c != ';';
}

static int scrub_sk_byte(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '-';
}

static void scrub_mark_patterns(const char *text, size_t len, unsigned char *mark)
{
    static const char bearer[] = "Bearer ";
    size_t blen = sizeof(bearer) - 1;
    for (size_t i = 0; i < len; i++) {
        int word_start = i == 0 || !scrub_sk_byte((unsigned char)text[i - 1]);
        if (len - i > blen && strncasecmp(text + i, bearer, blen) == 0) {
            size_t j = i + blen;
            while (j < len && text[j] == ' ')
                j++;
            size_t start = j;
            while (j < len && scrub_token_byte((unsigned char)text[j]))
                j++;
            /* The sentence's own punctuation is not part of the token. */
            while (j > start && strchr(".)]}>", text[j - 1]) != NULL)
                j--;
            if (j - start >= SCRUB_MIN_BEARER)
                memset(mark + start, 1, j - start);
        }
        if (word_start && len - i > 3 && memcmp(text + i, "sk-", 3) == 0) {
            size_t j = i + 3;
            while (j < len && scrub_sk_byte((unsigned char)text[j]))
                j++;
            if (j - (i + 3) >= 4)
                memset(mark + i + 3, 1, j - (i + 3));
        }
    }
}

char *scrub_text(const char *text, size_t len, const char *key, size_t *out_len)
{
    size_t mlen = strlen(SCRUB_MARK), n = 0, cap;
    unsigned char *mark = calloc(len + 1, 1);
    char *out = NULL;
    if (mark == NULL)
        return NULL;
    scrub_mark_key(text, len, key, mark);
    scrub_mark_patterns(text, len, mark);
    /* Worst case every other byte starts a marked run. */
    cap = len + (len / 2 + 1) * mlen + 1;
    out = malloc(cap);
    if (out == NULL)
        goto out;
    for (size_t i = 0; i < len;) {
        if (!mark[i]) {
            out[n++] = text[i++];
            continue;
        }
        memcpy(out + n, SCRUB_MARK, mlen);
        n += mlen;
        while (i < len && mark[i])
            i++;
    }
    out[n] = '\0';
    if (out_len != NULL)
        *out_len = n;
out:
    free(mark);
    return out;
}
