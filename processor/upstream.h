/* upstream.h - the processor's HTTP side: many chat-completion requests in flight
 * at once on one curl multi handle driven by libevent (the shape of curl's
 * docs/examples/hiperfifo.c), easy handles reused from a pool, and the request
 * itself (URL, headers, JSON body). What an answer means is outcome.h's job. */
#ifndef CHATQ_PROCESSOR_UPSTREAM_H
#define CHATQ_PROCESSOR_UPSTREAM_H

#include <stddef.h>

#include <curl/curl.h>

#include "chunks.h"

struct event_base;
struct upstream;

#define UPSTREAM_ID_MAX 128
#define UPSTREAM_TRACE_LINE 96

struct upstream_settings {
    const char *base_url; /* OPENAI_BASE_URL, borrowed */
    const char *api_key;  /* OPENAI_API_KEY, borrowed; NULL or "": no header */
    const char *ca_file;  /* UPSTREAM_CA_FILE, borrowed; NULL: the system's CAs */
    long long timeout_ms; /* whole transfer */
    long long connect_timeout_ms;
    long long max_response_bytes;   /* larger bodies are cut off: too_large */
    long long max_completion_bytes; /* MAX_COMPLETION_BYTES: see too_long */
    long long max_connections;      /* kept-alive connections: the concurrency */
};

/* What an answer said of the key's rate limits (x-ratelimit-*); -1: not sent. */
struct upstream_limits {
    long long limit_requests, remaining_requests, reset_requests_ms;
    long long limit_tokens, remaining_tokens, reset_tokens_ms;
};

/* Text an answer may carry besides the completion itself (id, model, role,
 * finish reason, the member names), in bytes. */
#define UPSTREAM_ENVELOPE_BYTES 65536

/* Counts the text inside the JSON strings of a body as it arrives, decoded
 * (\uXXXX as the UTF-8 bytes it stands for, \n as one byte), so that a body can
 * be stopped as soon as its text is more than a capped completion can need,
 * however the upstream escapes it. Bytes outside strings are not text. */
struct upstream_scan {
    int state; /* outside a string, inside, after a backslash, in \uXXXX */
    unsigned hex, nhex;
    size_t text; /* decoded bytes so far */
};

/* Feeds len more bytes of the body; returns the decoded text so far. */
size_t upstream_scan_feed(struct upstream_scan *sc, const char *buf, size_t len);

/* One transfer's state, embedded in the caller's job. The caller owns body (set
 * it before upstream_start, e.g. from upstream_body_build) and frees everything
 * with upstream_xfer_clear once the transfer is not running. */
struct upstream_xfer {
    struct upstream *up; /* set while running */
    CURL *easy;          /* set while running */
    char *body;          /* owned: the request JSON, sent again on retries */
    size_t body_len;
    int requests; /* requests curl began in this transfer: 1, see upstream.c */
    char *resp;   /* owned: the response body so far, NUL-terminated */
    size_t resp_len, resp_cap;
    long long retry_after_ms;      /* from Retry-After, -1: none */
    long long retry_after_ms_hdr;  /* from retry-after-ms, -1: none */
    struct upstream_limits limits; /* from the x-ratelimit-* headers */
    int too_large;                 /* we stopped the body at max_response_bytes */
    int too_long; /* we stopped the body: its text is past max_completion_bytes +
                     UPSTREAM_ENVELOPE_BYTES, so the completion is past the cap */
    struct upstream_scan scan;
    /* Streaming: set stream (the request asked for it) before upstream_start. An
     * answer that is a 2xx text/event-stream is read by chunks as it arrives
     * (sse = 1; resp stays empty) and each piece of text announced to the
     * delta callback; any other answer (an error status, a plain JSON body) is
     * collected in resp as without streaming (sse = 0). */
    int stream;
    int sse;      /* -1: no body yet; 0: plain; 1: an event stream */
    int sse_type; /* the answer's Content-Type is text/event-stream */
    struct chunks chunks;
    char errbuf[CURL_ERROR_SIZE]; /* curl's detail on a failure */
    double seconds;               /* the last call's time, for the metrics */
    /* The upstream's own x-request-id of the last answer ("" if none), for the
     * log: what its operators ask for when a call is to be looked into. */
    char upstream_id[UPSTREAM_ID_MAX];
    /* X-Request-Id and traceparent (upstream_xfer_trace): two list nodes put in
     * front of the headers every call shares, so no call copies those (the
     * Authorization line among them). */
    struct curl_slist trace_hdr[2];
    char trace_lines[2][UPSTREAM_TRACE_LINE];
};

/* Called when a transfer ended, after its handle left the multi handle, with the
 * CURLcode and the HTTP status (0 if none). The xfer is not running any more; the
 * callback may start it (or any other) again. */
typedef void upstream_done_fn(struct upstream_xfer *x, int curl_code, long http_status,
                              void *arg);

/* Called from curl's write callback when a streamed answer's text grew (the text
 * so far is x->chunks.text, valid until the callback returns). It must not start,
 * cancel or clear x. */
typedef void upstream_delta_fn(struct upstream_xfer *x, void *arg);

/* Sets the delta callback (called with upstream_new's arg); none by default. */
void upstream_set_delta(struct upstream *up, upstream_delta_fn *delta);

/* Returns a new upstream (free with upstream_free), or NULL with the reason in
 * err. settings' strings are borrowed and must outlive it. */
struct upstream *upstream_new(struct event_base *base, const struct upstream_settings *s,
                              upstream_done_fn *done, void *arg, char *err,
                              size_t errlen);

/* Frees the pool, the connections and the multi handle. No transfer may be
 * running (upstream_cancel them first). Safe with NULL. */
void upstream_free(struct upstream *up);

/* Starts sending x->body. Returns 0 (done will be called exactly once), or -1. */
int upstream_start(struct upstream *up, struct upstream_xfer *x);

/* Stops a running transfer without calling done; nothing if x is not running. */
void upstream_cancel(struct upstream_xfer *x);

/* Number of transfers running. */
long upstream_running(const struct upstream *up);

void upstream_xfer_init(struct upstream_xfer *x);

/* The next call of x carries "X-Request-Id: <trace>" and a W3C "traceparent:
 * 00-<trace without dashes>-<span>-01", span a hash of trace and attempt: the
 * upstream's logs can then be joined with ours. Nothing if trace is no UUID. */
void upstream_xfer_trace(struct upstream_xfer *x, const char *trace, int attempt);

/* What a call came to, as the metrics' outcome label (static): "2xx", "3xx",
 * "4xx", "429", "5xx", "timeout" or "connection_error". */
const char *upstream_outcome_label(int curl_code, long http_status);

/* Frees body and response and re-initialises. x must not be running. */
void upstream_xfer_clear(struct upstream_xfer *x);

/* The upstream's advice on when to try again: retry-after-ms if given (it is the
 * more precise), else Retry-After; -1 if neither. */
long long upstream_xfer_retry_after(const struct upstream_xfer *x);

/* Reads one response header line (as curl's header callback sees it, CRLF
 * included) into x: Retry-After and retry-after-ms; a status line starts a new
 * response and forgets what an interim one said. */
void upstream_header_line(struct upstream_xfer *x, const char *line, size_t len,
                          long long now_ms);

/* {base}/chat/completions without doubling a trailing slash of base. Returns new
 * (caller frees) or NULL. */
char *upstream_url_build(const char *base);

/* The request body {"model":..,"messages":[..],"temperature":..} plus "top_p" and
 * "max_tokens" when req has them, and "stream": true with stream_options'
 * include_usage (the usage comes as a last chunk) when req->stream: messages is
 * req->messages (a JSON array of
 * {"role","content"} objects, checked here), or else one user message holding
 * req->message. Returns new (caller frees) or NULL with the reason in err: the
 * message is not valid UTF-8, messages is not such an array, or memory ran out. */
struct chat_request;
char *upstream_body_build(const struct chat_request *req, char *err, size_t errlen);

#endif
