/* outcome.h - what one upstream attempt came to: completed, worth retrying, or
 * failed for good. Pure: the input is what curl reported and what the upstream
 * sent; the output is what the processor writes or waits on.
 *
 * Codes (error_code in the result record):
 *   retryable: upstream_timeout, upstream_unreachable, upstream_connection_error,
 *              upstream_invalid_response, upstream_rate_limited,
 *              upstream_unavailable (5xx), upstream_timeout (also 408),
 *              upstream_conflict (409)
 *   final:     upstream_tls_error (certificate not trusted, wrong host name,
 *              expired; the CA file unusable), insufficient_quota,
 *              upstream_response_too_large, completion_too_large (the
 *              answer's text over MAX_COMPLETION_BYTES), deadline_exceeded,
 *              upstream_attempts_exhausted (both decided by processor.c, not
 *              here), the upstream's own
 *              error.code for other 4xx (e.g. invalid_api_key,
 *              context_length_exceeded) else upstream_<status> */
#ifndef CHATQ_PROCESSOR_OUTCOME_H
#define CHATQ_PROCESSOR_OUTCOME_H

#include <stddef.h>

/* Longest upstream error message kept, in bytes (cut at a UTF-8 boundary). */
#define OUTCOME_MESSAGE_MAX 1000

enum outcome_kind { OUTCOME_COMPLETED, OUTCOME_RETRY, OUTCOME_FAILED };

struct outcome_input {
    int curl_code;          /* a CURLcode */
    const char *curl_error; /* curl's error buffer; NULL or "" if none */
    int too_large;          /* our write callback stopped the body at the cap */
    long long max_bytes;    /* that cap, for the message */
    int too_long; /* our write callback stopped the body: its text is past what a
                     completion of max_completion_bytes can need */
    long long max_completion_bytes; /* MAX_COMPLETION_BYTES */
    long http_status;               /* 0 if no response */
    const char *body;               /* borrowed; need not be NUL-terminated */
    /* A 2xx event stream (chunks.h) that cannot be used: why (borrowed), or NULL.
     * Retryable, as invalid JSON is. */
    const char *invalid_stream;
    size_t body_len;
    long long retry_after_ms; /* the upstream's advice from the headers, -1: none */
    const char *request_model;
    const char *secret; /* the API key, borrowed; NULL: none. Scrubbed from the
                           message and model (scrub.h) */
};

/* Every string is owned by the outcome (outcome_clear frees them). */
struct outcome {
    enum outcome_kind kind;
    char *response; /* completed: the assistant's text, may hold NULs */
    size_t response_len;
    char *model; /* completed: the upstream's model, else the request's */
    long long prompt_tokens, completion_tokens, total_tokens; /* -1: absent */
    char *finish_reason;      /* completed: choices[0].finish_reason, or NULL */
    long http_status;         /* the upstream's HTTP status, 0: it answered none */
    char *code;               /* retry / failed */
    char *message;            /* retry / failed; scrubbed of the API key */
    long long retry_after_ms; /* retry: the upstream's advice, -1: none */
};

void outcome_init(struct outcome *o);

/* Fills out (which must be initialised or cleared) from in. Returns 0, or -1 if
 * memory ran out (out is then cleared and marked OUTCOME_RETRY). */
int outcome_classify(const struct outcome_input *in, struct outcome *out);

/* Turns a retryable outcome into a final failure after the last allowed attempt:
 * same code, message "gave up after N attempts: <message>". Returns 0 or -1
 * (memory; the outcome is then left retryable). */
int outcome_give_up(struct outcome *o, int attempts);

/* Makes o a final failure with code and message (copied), whatever it was.
 * Returns 0, or -1 if memory ran out (o is then left as it was). */
int outcome_fail(struct outcome *o, const char *code, const char *message);

/* Frees the strings and re-initialises; safe on an initialised outcome. */
void outcome_clear(struct outcome *o);

#endif
