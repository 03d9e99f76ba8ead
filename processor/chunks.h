/* chunks.h - reading a streamed chat completion: the upstream's text/event-stream
 * of chat.completion.chunk objects (OpenAI's "stream": true), fed as curl hands
 * the bytes over, in pieces cut anywhere. Pure (no I/O), so it is unit-tested
 * with the stream cut at every byte.
 *
 * Lines end in LF, CRLF or CR; a "data:" line's value (one leading space
 * dropped) is added to the event, several joined by LF; a blank line ends the
 * event. Other fields (event:, id:, retry:) and comments (":") are ignored. An
 * event's data is "[DONE]" (the end) or one JSON object: its
 * choices[0].delta.content is appended to the text, choices[0].finish_reason,
 * model and usage are kept (usage comes in a chunk of its own, with empty
 * choices, when stream_options.include_usage asked for it); an "error" member is
 * the upstream failing mid-stream. */
#ifndef CHATQ_PROCESSOR_CHUNKS_H
#define CHATQ_PROCESSOR_CHUNKS_H

#include <stddef.h>

struct chunks {
    size_t max_text;  /* more text than this: too_long */
    size_t max_event; /* a line or event longer than this: too_long */
    char *text;       /* owned: the completion so far, NUL-terminated; may be NULL */
    size_t text_len, text_cap;
    char *event; /* owned: the data of the event being read */
    size_t event_len, event_cap;
    char *line; /* owned: the line being read */
    size_t line_len, line_cap;
    int after_cr;        /* the last byte was a CR: an LF next is the same line end */
    char *model;         /* owned, or NULL */
    char *finish_reason; /* owned, or NULL: a short lower-case word */
    long long prompt_tokens, completion_tokens, total_tokens; /* -1: not sent */
    int done;                                                 /* "data: [DONE]" came */
    int failed;   /* the stream is unusable: err says why */
    int too_long; /* failed because of max_text or max_event */
    char *err;    /* owned, or NULL: why it failed */
};

/* Ready to read a stream of at most max_text bytes of text. */
void chunks_init(struct chunks *c, size_t max_text, size_t max_event);

/* Frees what c holds and makes it as chunks_init left it (same limits). */
void chunks_reset(struct chunks *c);

/* Reads len more bytes. Returns 0, or -1 once the stream failed (c->failed,
 * c->err; c->too_long when a limit was passed; every later call returns -1). */
int chunks_feed(struct chunks *c, const char *buf, size_t len);

/* The completion read as one chat.completion JSON body, as a call without
 * "stream" would have had it: {"model", "choices":[{"message":{"role","content"},
 * "finish_reason"}], "usage"} (model, finish_reason and usage only when sent).
 * Returns new (caller frees), or NULL if the stream failed, did not end with
 * [DONE], or memory ran out (then err says which). */
char *chunks_body(const struct chunks *c, char *err, size_t errlen);

#endif
