/* scrub.h - takes the API key, and whatever looks like a credential, out of text
 * that came from the upstream before it is kept, logged or returned. Some proxies
 * and self-hosted servers quote the Authorization header in their error bodies,
 * and OpenAI's own 401 shows part of the key.
 *
 * What is replaced by "[redacted]":
 *   - every run of the text that also occurs in the key and is at least
 *     SCRUB_MIN_RUN bytes long, or at least SCRUB_MIN_MIDDLE bytes long and
 *     covering the key's middle byte (the head and tail OpenAI shows, "sk-S" and
 *     "2345", are 4 bytes at the ends and say little; anything from the inside
 *     does);
 *   - the token after "Bearer " (any case) when it is SCRUB_MIN_BEARER or more
 *     bytes, so that prose such as "using Bearer auth" survives:
 *     "Bearer [redacted]";
 *   - what follows "sk-" at the start of a word when it is 4 or more of
 *     [A-Za-z0-9_-]: "sk-[redacted]", whoever's key it is.
 * A key shorter than SCRUB_MIN_MIDDLE is only matched whole. */
#ifndef CHATQ_PROCESSOR_SCRUB_H
#define CHATQ_PROCESSOR_SCRUB_H

#include <stddef.h>

#define SCRUB_MIN_RUN 6
#define SCRUB_MIN_MIDDLE 4
#define SCRUB_MIN_BEARER 8
#define SCRUB_MARK "[redacted]"

/* text[0..len) scrubbed of key (NUL-terminated, borrowed; NULL or "": only the
 * patterns). Returns a new NUL-terminated string (free) with its length in
 * *out_len (may be NULL), or NULL if memory ran out. */
char *scrub_text(const char *text, size_t len, const char *key, size_t *out_len);

#endif
