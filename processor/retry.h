/* retry.h - how long to wait before trying again: the upstream backoff with
 * jitter and the upstream's own Retry-After / retry-after-ms advice (the
 * reconnect backoff of the Redis connections is rconn_backoff_ms). Pure functions: no
 * clock or random source of their own, so tests are deterministic. */
#ifndef CHATQ_PROCESSOR_RETRY_H
#define CHATQ_PROCESSOR_RETRY_H

#include <stddef.h>

struct retry_policy {
    long long base_ms;      /* RETRY_BASE_MS: the wait after the first attempt */
    long long max_ms;       /* RETRY_MAX_MS: the longest computed wait */
    long long after_max_ms; /* RETRY_AFTER_MAX_MS: the longest wait an upstream can ask */
};

/* The wait after attempt (1-based) failed. With retry_after_ms >= 0 (the upstream
 * said how long) that value capped at after_max_ms; otherwise
 * d = min(max_ms, base_ms * 2^(attempt-1)) spread uniformly over [d/2, d] by u,
 * a random number in [0, 1] drawn by the caller. */
long long retry_delay_ms(const struct retry_policy *p, int attempt,
                         long long retry_after_ms, double u);

/* A Retry-After value (len bytes, not NUL-terminated, surrounding blanks allowed):
 * integer seconds or an HTTP-date, the latter relative to now_ms and never
 * negative. Returns milliseconds, or -1 if the value is neither. */
long long retry_after_parse(const char *value, size_t len, long long now_ms);

/* A duration as OpenAI's x-ratelimit-reset-* headers write it: "20ms", "1s",
 * "1.5s", "6m0s", "1h2m3.4s" (Go's form; blanks around allowed). Returns whole
 * milliseconds (rounded up), or -1 if malformed. */
long long retry_duration_parse(const char *value, size_t len);

/* A non-negative integer header value (x-ratelimit-remaining-*, -limit-*), or -1. */
long long retry_count_parse(const char *value, size_t len);

/* A retry-after-ms value (OpenAI's): non-negative milliseconds, perhaps with a
 * fraction. Returns milliseconds, or -1 if malformed. */
long long retry_after_ms_parse(const char *value, size_t len);

#endif
