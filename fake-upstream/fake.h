/*
 * fake.h - declarations shared by the files of chatq-fake-upstream, the scriptable
 * stand-in for an OpenAI-compatible chat-completions server used by tests, benchmarks
 * and `make run`.
 *
 *   main.c    options, startup, signals, teardown
 *   serve.c   HTTP routes, the life of one chat request, /stats
 *   script.c  [[fake ...]] directives and the per-message attempt counters
 *   reply.c   OpenAI-shaped bodies (success, errors, model list)
 *   limit.c   the per-key rate limiter (--rpm, --tpm) and its header values
 *
 * From common/ it takes the log line (log.h), clock_timeval, clock_mono_ms and
 * utf8_cut.
 */
#ifndef CHATQ_FAKE_H
#define CHATQ_FAKE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>
#include <event2/buffer.h>
#include <event2/event.h>

#define FAKE_NAME "chatq-fake-upstream"
#define FAKE_MAX_HUGE (64u * 1024 * 1024) /* cap for huge=BYTES */
#define FAKE_MAX_DELAY_MS (3600 * 1000)   /* cap for latency and drip */
#define FAKE_MAX_BODY (64u * 1024 * 1024) /* largest request body we read */
#define FAKE_ECHO_MAX 200                 /* bytes of user text echoed back */

struct config {
    const char *host; /* borrowed from argv, the environment or a literal */
    int port;         /* 0: let the kernel pick */
    int latency_ms;
    int jitter_ms;
    const char *require_key; /* NULL: accept any key */
    int quiet;
    int rpm;             /* requests per limit window and key; 0: unlimited */
    int tpm;             /* tokens per limit window and key; 0: unlimited */
    int limit_window_ms; /* the window of rpm and tpm, 60000 like OpenAI's minute */
};

/* ---- script.c ---- */
enum script_action {
    SCRIPT_ANSWER = 0, /* send a reply (maybe dripped) */
    SCRIPT_HANG,       /* never answer */
    SCRIPT_CLOSE,      /* close without a byte */
    SCRIPT_RESET       /* headers and half a body, then RST */
};

enum script_body {
    SCRIPT_BODY_NORMAL = 0,
    SCRIPT_BODY_GARBAGE,      /* truncated JSON */
    SCRIPT_BODY_GARBAGE_HTML, /* an HTML page where JSON was expected */
    SCRIPT_BODY_NOCHOICES,    /* valid JSON without "choices" */
    SCRIPT_BODY_HUGE          /* content of script.huge bytes */
};

enum script_endless {
    SCRIPT_ENDLESS_NO = 0,
    SCRIPT_ENDLESS_TEXT,   /* a 200 whose content string never ends */
    SCRIPT_ENDLESS_GARBAGE /* a 200 of random bytes that never end */
};

/* A parsed [[fake ...]] directive. Plain data, no pointers, so it can be copied. */
struct script {
    int found; /* a directive was present (and applies) */
    enum script_action action;
    enum script_body body;
    int status;        /* 0: not set */
    int quota;         /* 429 becomes insufficient_quota */
    int echo_auth;     /* an error body that quotes the Authorization header */
    int echo_request;  /* the answer is what was received: messages, temperature,
                          top_p, max_tokens as JSON text */
    int finish_length; /* finish_reason "length", as if max_tokens cut the answer */
    int latency_ms;    /* -1: not set */
    int drip_ms;       /* 0: send at once */
    int chunk_ms;      /* a streamed answer: the pause between its events */
    long times;        /* -1: every attempt */
    size_t huge;
    enum script_endless endless; /* sent as fast as the client reads */
    char retry_after[32];        /* "" when not set; sent verbatim */
    char retry_after_ms[32];     /* "" when not set; sent verbatim */
    int has_retry_after_date;
    long retry_after_date; /* seconds from now */
};

/* Fills *out from the first "[[fake ...]]" in text[0..len). Returns 1 if a directive
 * was found, 0 if not (then *out holds the defaults). */
int script_parse(const char *text, size_t len, struct script *out);

/* Attempt counters for times=N, keyed by a hash of the whole message text. */
struct script_counts;
struct script_counts *script_counts_new(void); /* new; NULL on ENOMEM */
void script_counts_free(struct script_counts *counts);
void script_counts_clear(struct script_counts *counts);
/* Counts one more attempt for text; returns the attempt number (1 for the first),
 * or 0 when out of memory. */
unsigned long script_counts_bump(struct script_counts *counts, const char *text,
                                 size_t len);

/* ---- limit.c ---- */
/* A bucket that refills continuously: capacity units per window_ms, never more than
 * capacity held. level counts units times window_ms so the refill is exact integer
 * arithmetic (capacity * window_ms must fit a long long: limit_bucket_init clamps). */
struct limit_bucket {
    long long capacity; /* > 0 */
    long long window_ms;
    long long level;    /* units available * window_ms */
    long long stamp_ms; /* the clock when level was last brought up to date */
};

#define LIMIT_MAX_CAPACITY 1000000000LL /* 1e9 units ... */
#define LIMIT_MAX_WINDOW_MS 86400000LL  /* ... per at most a day: fits 64 bits */

/* A full bucket at now_ms. capacity and window_ms are clamped to 1..the maxima. */
void limit_bucket_init(struct limit_bucket *b, long long capacity, long long window_ms,
                       long long now_ms);
/* Adds what flowed in since the last call (a clock going back adds nothing). The
 * queries below describe the bucket as of the last refill. */
void limit_bucket_refill(struct limit_bucket *b, long long now_ms);
long long limit_bucket_remaining(const struct limit_bucket *b); /* whole units */
/* ms until n units are available: 0 if they are now, -1 if never (n > capacity). */
long long limit_bucket_wait_ms(const struct limit_bucket *b, long long n);
/* ms until the bucket is full again: OpenAI's x-ratelimit-reset-*. */
long long limit_bucket_reset_ms(const struct limit_bucket *b);
/* Takes n units (the caller checked limit_bucket_wait_ms(b, n) == 0). */
void limit_bucket_take(struct limit_bucket *b, long long n);

/* One budget as the headers report it, after the request was counted. */
struct limit_budget {
    long long limit; /* 0: this budget is not limited (no headers) */
    long long remaining;
    long long reset_ms;
};

struct limit_verdict {
    int allowed;
    int too_large;      /* the cost exceeds the whole token budget: never allowed */
    const char *type;   /* when refused: "requests" or "tokens" (static) */
    long long used;     /* when refused: limit - remaining of that budget */
    long long retry_ms; /* when refused and not too_large: until both budgets allow */
    long long cost;     /* tokens charged (or asked for) */
    struct limit_budget requests, tokens;
};

/* Buckets per API key. new; NULL on ENOMEM. rpm / tpm of 0 leave that budget
 * unlimited; with both 0 every request is allowed. */
struct limiter;
struct limiter *limit_new(long long rpm, long long tpm, long long window_ms);
void limit_free(struct limiter *l);
/* Forgets every key: all budgets are full again. */
void limit_clear(struct limiter *l);
/* Decides on one request of key (borrowed; only its hash is kept) costing cost
 * tokens at now_ms, and charges it if allowed. Returns 0 with *v filled, or -1 when
 * out of memory. */
int limit_admit(struct limiter *l, const char *key, long long cost, long long now_ms,
                struct limit_verdict *v);
/* ms as Go's time.Duration prints it, which is what OpenAI's reset headers show:
 * "0s", "20ms", "1s", "1.5s", "6m0s", "1h0m0s". Returns 0, or -1 if buf is too
 * small (then buf holds ""). */
int limit_format_duration(char *buf, size_t size, long long ms);

/* ---- reply.c ---- */
struct reply_answer {
    unsigned long long id;
    const char *model; /* borrowed, valid UTF-8 */
    const char *echo;  /* borrowed: the (truncated) last user text, valid UTF-8 */
    size_t echo_len;
    long long prompt_tokens;
    enum script_body body;
    size_t huge;         /* content length for SCRIPT_BODY_HUGE */
    const char *request; /* borrowed: with echo-request, the whole answer text */
    int finish_length;
};

/* Each writer appends to out and returns 0, or -1 when out of memory. */
int reply_answer(struct evbuffer *out, const struct reply_answer *a,
                 const char **content_type);
int reply_error_for_status(struct evbuffer *out, int status, int quota, const char *model,
                           long long prompt_tokens, const char **content_type);
int reply_error(struct evbuffer *out, const char *message, const char *type,
                const char *param, const char *code);
/* The error of echo-auth: status's body, its message quoting auth (the request's
 * Authorization header, borrowed; NULL if none) verbatim and the key's head and
 * tail as OpenAI masks it, as careless proxies and servers do. */
int reply_error_echo_auth(struct evbuffer *out, int status, const char *auth,
                          const char **content_type);
/* The 429 the limiter refused v with (v->allowed == 0), in OpenAI's words. */
int reply_rate_limited(struct evbuffer *out, const char *model,
                       const struct limit_verdict *v);
int reply_models(struct evbuffer *out);
/* The answer answer_json (a chat.completion body, as reply_answer makes it) as
 * OpenAI streams it (text/event-stream): "data: {chat.completion.chunk}" events, one
 * per word of the content (the first naming the role), then one with the
 * finish_reason, then, with include_usage, one with the usage and no choices, then
 * "data: [DONE]". Each event ends in a blank line. -1 if answer_json has no content
 * string, or out of memory. */
int reply_stream(struct evbuffer *out, struct evbuffer *answer_json, int include_usage);
/* Appends value encoded with jansson's flags; -1 if value is NULL or on failure. */
int reply_add_json(struct evbuffer *out, const json_t *value, size_t flags);
/* Whitespace-separated words in s[0..len). */
long long reply_count_words(const char *s, size_t len);
/* RFC 7231 IMF-fixdate of t into buf; returns 0 or -1. */
int reply_http_date(char *buf, size_t size, time_t t);

/* ---- serve.c ---- */
struct server;
/* new; NULL on failure (already logged). cfg is borrowed and must outlive it. */
struct server *serve_new(struct event_base *base, const struct config *cfg);
/* Binds cfg->host:cfg->port; *port_out gets the real port. 0 or -1 (logged). */
int serve_listen(struct server *srv, int *port_out);
/* Aborts every open request and frees everything; NULL is fine. */
void serve_free(struct server *srv);

#endif
