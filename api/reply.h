/* reply.h - the api's HTTP responses: a JSON body written in place, then sent with
 * its head in one mg_write (one send per response, no copy of the body).
 *
 * The body is appended after REPLY_HEAD_ROOM free bytes; reply_send formats the head
 * into that room, right before the body. Bodies up to REPLY_INLINE bytes live in the
 * struct itself (on the caller's stack); bigger ones move to the heap. */
#ifndef CHATQ_API_REPLY_H
#define CHATQ_API_REPLY_H

#include <stddef.h>

struct mg_connection;

/* The longest head: a CORS preflight's 204 (its three lines, 146 bytes) to an origin
 * of ACCESS_ORIGIN_MAX bytes, with the Keep-Alive hint: about 550 bytes; an answer
 * with a trace id adds its two lines, about 100; then REPLY_EXTRA. */
#define REPLY_EXTRA 224 /* bytes of header lines added with reply_header */
#define REPLY_HEAD_ROOM (896 + REPLY_EXTRA)
#define REPLY_INLINE 4096
/* Unread request body bytes reply_send reads and drops to keep a connection alive;
 * with more than this left it closes the connection instead. */
#define REPLY_DRAIN_MAX 65536

struct reply {
    char *buf;         /* inline or heap: REPLY_HEAD_ROOM bytes, then the body */
    size_t len;        /* body bytes so far */
    size_t cap;        /* body bytes buf can hold */
    int oom;           /* an append failed: reply_send answers 500 instead */
    int close;         /* close the connection after this response */
    const char *allow; /* Allow header of a 405 (borrowed, static), or NULL */
    const char *head;  /* more header lines, each ending "\r\n" (static), or NULL */
    const char *type;  /* Content-Type (static); NULL: application/json */
    const char *trace; /* X-Trace-Id (borrowed: a UUID, valid until sent), or NULL */
    char extra[REPLY_EXTRA]; /* header lines added with reply_header */
    size_t extra_len;
    char inline_buf[REPLY_HEAD_ROOM + REPLY_INLINE];
};

/* The struct must not move after this: buf may point into it. */
void reply_init(struct reply *r);

/* Frees the body of a reply that will not be sent; safe after reply_send. */
void reply_free(struct reply *r);

void reply_raw(struct reply *r, const char *s, size_t n);
#define reply_lit(r, s) reply_raw((r), "" s, sizeof(s) - 1)

/* Appends s (n bytes, may hold NULs) as a quoted JSON string. Bytes that are not valid
 * UTF-8 become U+FFFD, so the body is always valid JSON whatever the store held. */
void reply_str(struct reply *r, const char *s, size_t n);
void reply_strz(struct reply *r, const char *s);

void reply_ll(struct reply *r, long long v);

/* Adds the header line "name: value" (printf-style value) to the response. Lines
 * that do not fit REPLY_EXTRA are left out (they are short and few: ids, a poll
 * interval). */
void reply_header(struct reply *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1 if the request is for the OpenAI front (/v1/...): its errors then take OpenAI's
 * shape {"error": {"message", "type", "param", "code"}}, and every answer an
 * x-request-id. */
int reply_is_openai(struct mg_connection *conn);

/* Appends OpenAI's error body; param and code may be NULL (JSON null). */
void reply_openai_error_body(struct reply *r, const char *message, const char *type,
                             const char *param, const char *code);

/* OpenAI's error type for an HTTP status (invalid_request_error, ...). */
const char *reply_openai_type(int status);

/* Appends {"error":{"code":code,"message":message}}. */
void reply_error_body(struct reply *r, const char *code, const char *message);

/* Sends the head and body as status with one mg_write, then frees the body. Returns
 * status, which civetweb request handlers return (it goes to the access log). */
int reply_send(struct reply *r, struct mg_connection *conn, int status);

/* From now on every kept-alive response says "Keep-Alive: timeout=<seconds>" (none
 * when 0): a client then closes an idle connection before the server does, instead
 * of sending a request on a connection the server is closing. Process-wide; set
 * once before serving. */
void reply_keep_alive_hint(int seconds);

/* From now on every response says "Connection: close" and closes (the server is
 * draining before it stops). Process-wide; cannot be undone. */
void reply_close_all(void);

/* Writes the error body from code and the printf-style message into r, then sends it
 * (as reply_send). On the OpenAI front the body is OpenAI's, with code and a type
 * from the status. */
int reply_error(struct reply *r, struct mg_connection *conn, int status, const char *code,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
