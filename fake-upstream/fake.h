/*
 * fake.h - declarations shared by the files of chatq-fake-upstream, the scriptable
 * stand-in for an OpenAI-compatible chat-completions server used by tests, benchmarks
 * and `make run`.
 *
 *   main.c    options, startup, signals, teardown
 *   serve.c   HTTP routes, the life of one chat request, /stats
 *   script.c  [[fake ...]] directives and the per-message attempt counters
 *   reply.c   OpenAI-shaped bodies (success, errors, model list)
 *
 * From common/ it takes the log line (log.h), clock_timeval and utf8_cut.
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

/* A parsed [[fake ...]] directive. Plain data, no pointers, so it can be copied. */
struct script {
    int found; /* a directive was present (and applies) */
    enum script_action action;
    enum script_body body;
    int status;     /* 0: not set */
    int quota;      /* 429 becomes insufficient_quota */
    int latency_ms; /* -1: not set */
    int drip_ms;    /* 0: send at once */
    long times;     /* -1: every attempt */
    size_t huge;
    char retry_after[32];    /* "" when not set; sent verbatim */
    char retry_after_ms[32]; /* "" when not set; sent verbatim */
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

/* ---- reply.c ---- */
struct reply_answer {
    unsigned long long id;
    const char *model; /* borrowed, valid UTF-8 */
    const char *echo;  /* borrowed: the (truncated) last user text, valid UTF-8 */
    size_t echo_len;
    long long prompt_tokens;
    enum script_body body;
    size_t huge; /* content length for SCRIPT_BODY_HUGE */
};

/* Each writer appends to out and returns 0, or -1 when out of memory. */
int reply_answer(struct evbuffer *out, const struct reply_answer *a,
                 const char **content_type);
int reply_error_for_status(struct evbuffer *out, int status, int quota, const char *model,
                           long long prompt_tokens, const char **content_type);
int reply_error(struct evbuffer *out, const char *message, const char *type,
                const char *param, const char *code);
int reply_models(struct evbuffer *out);
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
