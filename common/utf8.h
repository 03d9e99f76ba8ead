/* utf8.h - the UTF-8 rules every binary shares: where a byte limit may cut a
 * string, and which bytes make a well-formed character (RFC 3629). */
#ifndef CHATQ_UTF8_H
#define CHATQ_UTF8_H

#include <stddef.h>

/* Length of the longest prefix of s[0..len) of at most max bytes that does not
 * end inside a multi-byte sequence: len itself when len <= max. Only the bytes
 * around the cut are looked at, so s need not be valid UTF-8; valid input gives a
 * valid prefix. */
size_t utf8_cut(const char *s, size_t len, size_t max);

/* Length (2-4) of the well-formed multi-byte sequence at the start of s[0..n), or
 * 0: for ASCII, a stray continuation byte, an overlong form, a surrogate, a code
 * point past U+10FFFF or a sequence that n cuts short. */
size_t utf8_seq_len(const char *s, size_t n);

#endif
