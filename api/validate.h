/* validate.h - the rules of a POST /chat body: JSON text in, a struct chat_request
 * or a client error (status, code, message) out.
 *
 * Pure on purpose (no HTTP, no Redis) so that every rule is unit-tested in
 * tests/unit/test_validate.c. The rules:
 *   - the body is one JSON object (an empty body is invalid_body);
 *   - "message": required string, not empty, not only ASCII whitespace (space, \t,
 *     \n, \v, \f, \r); it is kept as sent, nothing is trimmed;
 *   - "model": optional non-empty string of at most VALIDATE_MODEL_MAX bytes;
 *     default: the configured DEFAULT_MODEL;
 *   - "temperature": optional JSON number (integer or real) in [TEMPERATURE_MIN,
 *     TEMPERATURE_MAX]; default VALIDATE_DEFAULT_TEMPERATURE;
 *   - "deadline_ms": optional JSON integer in [1, VALIDATE_DEADLINE_MAX_MS]:
 *     milliseconds from acceptance after which no upstream attempt starts; left in
 *     req->deadline as given (0 when absent), the caller makes it absolute;
 *   - "user": optional string naming the caller's end user (OpenAI's "user"), 1 to
 *     VALIDATE_USER_MAX bytes of printable ASCII without spaces (0x21-0x7e): it
 *     travels on the request stream so that processors can share the upstream
 *     fairly between users, where it may name Redis keys and is logged as it is;
 *     req->user is NULL when absent;
 *   - "stream": optional boolean (default false); true streams the answer's text
 *     into the chat's events as "delta" events (events.h) while it is written;
 *   - any other field is refused (unknown_field): we never silently drop a
 *     parameter the caller believes is in effect;
 *   - duplicate keys are invalid JSON (which value would win is ambiguous);
 *   - arrays and objects nested more than VALIDATE_DEPTH_MAX deep are refused
 *     (invalid_body) before parsing, to bound the parser's stack use;
 *   - "\u0000" inside message or model is refused (invalid_field): the other hops
 *     handle C strings, and no model needs a NUL;
 *   - "webhook": optional URL called when the chat is final; its syntax is checked
 *     here (netguard_url_parse: http or https, at most NETGUARD_URL_MAX bytes,
 *     invalid_field); where it leads is checked by validate_webhook_target, which
 *     resolves its host and so is kept out of this pure function.
 * And of the Idempotency-Key header (validate_idempotency_key): 1 to
 * VALIDATE_IDEM_KEY_MAX printable ASCII characters (0x20-0x7e), else invalid_header. */
#ifndef CHATQ_API_VALIDATE_H
#define CHATQ_API_VALIDATE_H

#include <stddef.h>

#include <jansson.h>

#include "netguard.h"
#include "record.h"

#define VALIDATE_DEFAULT_TEMPERATURE 0.7
#define VALIDATE_DEADLINE_FIELD "deadline_ms"
#define VALIDATE_DEADLINE_MAX_MS (7LL * 24 * 3600 * 1000)
#define VALIDATE_USER_MAX 64
#define VALIDATE_MODEL_MAX 256
#define VALIDATE_DEPTH_MAX 32
#define VALIDATE_IDEM_HEADER "Idempotency-Key"
#define VALIDATE_IDEM_KEY_MAX 255

struct validate_error {
    int status;       /* HTTP status, 400 */
    const char *code; /* static snake_case code, e.g. "invalid_field" */
    char message[384];
};

/* Parses body (len bytes, need not end in a NUL) and checks it.
 * On success returns a new JSON document (caller json_decref()s it, after the last use
 * of req) that owns the strings req->message, req->model and req->user borrow; req->model
 * borrows default_model when the body names none. req->trace and req->accepted are NULL,
 * for the caller to fill. On failure returns NULL and fills err. */
json_t *validate_chat(const char *body, size_t len, const char *default_model,
                      struct chat_request *req, struct validate_error *err);

/* 1 if the JSON text s (len bytes) nests arrays and objects deeper than
 * VALIDATE_DEPTH_MAX, which jansson's recursive parser must not be handed on a
 * civetweb thread's small stack (brackets inside strings do not count). */
int validate_too_deep(const char *s, size_t len);

/* Checks the value of an Idempotency-Key header (NUL-terminated, as civetweb hands
 * it: leading and trailing blanks already gone). Returns 0, or -1 with err filled. */
int validate_idempotency_key(const char *key, struct validate_error *err);

/* The submit-time server-side request forgery check of a webhook URL: every
 * address its host resolves to must be allowed by g (netguard.h). Returns 0, or
 * -1 with err filled: 400 webhook_not_allowed (a loopback, link-local or private
 * address not in WEBHOOK_ALLOW), webhook_unresolvable (the name does not
 * resolve) or invalid_field (the URL itself). May wait for DNS. */
int validate_webhook_target(const struct netguard *g, const char *url,
                            struct validate_error *err);

#endif
