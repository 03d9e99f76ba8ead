/* oaireq.h - the rules of the OpenAI front's request bodies: POST /v1/responses and
 * POST /v1/chat/completions, JSON text in, a struct chat_request (the same record
 * POST /chat makes) or an OpenAI-style client error (status, type, param, code,
 * message) out.
 *
 * Pure on purpose (no HTTP, no Redis): every rule is unit-tested in
 * tests/unit/test_oaireq.c. The rules:
 *   - a field chatq does not support (tools, files, images, previous_response_id,
 *     stream: true, n > 1, ...) is refused with 400 naming it in param: never
 *     silently dropped. A field whose value is null counts as absent;
 *   - /v1/responses: "model" required; "input" required, a string (one user message)
 *     or an array of message items {"type"?: "message", "role": user | assistant |
 *     system | developer, "content": string | [{"type": input_text | output_text,
 *     "text"}]}; "instructions" a string, sent first as a system message;
 *     "temperature" in [0, 2] (default 1, OpenAI's); "top_p" in [0, 1];
 * "max_output_tokens" >= 1; "metadata" at most 16 string pairs, keys <= 64 and values <=
 * 512 characters; "background", "store" booleans (store false with background true is
 * refused, as OpenAI does); "user" as on POST /chat;
 *   - /v1/chat/completions: "model" and "messages" required, messages as input's
 *     items (content parts of type "text"); "temperature", "top_p", "max_tokens" or
 *     "max_completion_tokens" (not both), "n" only 1, "stream" only false, "user";
 *     "stop" (a string or up to 4), "seed" (an integer) and "response_format"
 *     ({"type": text | json_object | json_schema, ...}) are passed to the upstream
 *     as they are;
 *   - every text must be valid UTF-8 without NUL (the other hops handle C strings);
 *     a developer message travels as a system message (every compatible server
 *     knows that role; OpenAI treats them alike for chat models). */
#ifndef CHATQ_API_OAIREQ_H
#define CHATQ_API_OAIREQ_H

#include <stddef.h>

#include <jansson.h>

#include "record.h"

/* OpenAI's default, rather than POST /chat's 0.7: a client of the SDK expects it. */
#define OAIREQ_DEFAULT_TEMPERATURE 1.0
#define OAIREQ_METADATA_PAIRS 16
#define OAIREQ_METADATA_KEY_MAX 64
#define OAIREQ_METADATA_VALUE_MAX 512

struct oaireq_error {
    int status;       /* 400 */
    const char *type; /* "invalid_request_error" */
    const char *code; /* static, or NULL */
    char param[96];   /* the field at fault, "" when none */
    char message[384];
};

/* A parsed request. req borrows its strings from the returned document and from
 * the owned buffers here. */
struct oaireq {
    struct chat_request req;
    char *messages; /* owned: req.messages */
    char *params;   /* owned: req.params, or NULL */
    char *metadata; /* owned: req.metadata, or NULL */
};

/* Parse POST /v1/responses or POST /v1/chat/completions (body: len bytes, need not
 * end in NUL). Returns a new JSON document (json_decref it, then oaireq_clear, after
 * the last use of out->req), or NULL with err filled (out needs no clearing then).
 * out->req.front is set; trace and accepted are left NULL for the caller. */
json_t *oaireq_responses(const char *body, size_t len, struct oaireq *out,
                         struct oaireq_error *err);
json_t *oaireq_chat(const char *body, size_t len, struct oaireq *out,
                    struct oaireq_error *err);

/* Frees the owned buffers; safe twice. */
void oaireq_clear(struct oaireq *o);

#endif
