/* record.h - the request and result record formats.
 *
 * A request travels api -> processor as a request-stream entry. Its outcome
 * travels processor -> handler as a result-stream entry whose fields are
 * exactly the fields the handler writes into the trace's hash, which the api
 * reads back on GET; so one parser (record_result_parse) serves both. Parsed
 * records borrow their strings from the redisReply they came from. */
#ifndef CHATQ_RECORD_H
#define CHATQ_RECORD_H

#include <stddef.h>

#include "clock.h"

struct cmd;
struct redisReply;

#define REC_TRACE "trace"
#define REC_MESSAGE "message"
/* request: instead of message, the conversation as a JSON array of
 * {"role","content"} objects (content a string), in order */
#define REC_MESSAGES "messages"
#define REC_TOP_P "top_p"           /* request: optional, in [0, 1] */
#define REC_MAX_TOKENS "max_tokens" /* request: optional cap of completion tokens */
/* request: optional JSON object of more upstream parameters, sent as they are
 * (stop, seed, response_format), never overriding the fields above */
#define REC_PARAMS "params"
#define REC_MODEL "model"
#define REC_TEMPERATURE "temperature"
#define REC_ACCEPTED "accepted"
#define REC_DEADLINE "deadline" /* request: Unix ms after which no attempt starts */
#define REC_USER "user"         /* request: the end user it is for, for fair share */
#define REC_ADMITTED "admitted" /* request: the attempt a dispatch already counted */
#define REC_TRIES "tries" /* trace hash: upstream attempts begun, by every processor */
#define REC_OWNER "owner" /* trace hash: owner id of the api key that made it */
#define REC_SLOT "slot"   /* trace hash: the quota slice it holds a slot in (quota.h) */
#define REC_WEBHOOK "webhook" /* trace hash: URL called when the chat is final */
/* request: "1" when the chat asked for "stream": true: the processor streams the
 * upstream's answer and appends its text to the chat's events as "delta" events
 * (events.h); absent otherwise */
#define REC_STREAM "stream"
#define REC_STATUS "status"
#define REC_RESPONSE "response"
#define REC_PROMPT_TOKENS "prompt_tokens"
#define REC_COMPLETION_TOKENS "completion_tokens"
#define REC_TOTAL_TOKENS "total_tokens"
#define REC_ERROR_CODE "error_code"
#define REC_ERROR_MESSAGE "error_message"
#define REC_TIMESTAMP "timestamp"
#define REC_ATTEMPTS "attempts"
#define REC_FINISH_REASON "finish_reason" /* result: the upstream's, e.g. "length" */
/* Trace hash, written on acceptance by the OpenAI front only: what its Response
 * object echoes back. */
#define REC_FRONT "front"                 /* "responses" or "chat.completions" */
#define REC_FRONT_RESPONSES "responses"   /* REC_FRONT of POST /v1/responses */
#define REC_FRONT_CHAT "chat.completions" /* REC_FRONT of POST /v1/chat/completions */
#define REC_INSTRUCTIONS "instructions"   /* as given */
#define REC_METADATA "metadata"           /* a JSON object of strings */
#define REC_BACKGROUND "background"       /* "1" when made with background: true */
/* Trace hash: "1" once DELETE /v1/responses/{id} removed a chat that was still
 * running (cancelled, kept until its outcome cannot come any more) */
#define REC_DELETED "deleted"
/* result: the upstream's HTTP status behind a failure, when it answered one */
#define REC_UPSTREAM_STATUS "upstream_status"

/* A dead-letter entry: these fields, then the original entry's fields. */
#define REC_DEAD_SOURCE "source"         /* the stream the entry came from */
#define REC_DEAD_ID "id"                 /* its id there */
#define REC_DEAD_REASON "reason"         /* why nobody could use it */
#define REC_DEAD_DELIVERIES "deliveries" /* how often it was delivered, if known */

#define TEMPERATURE_MIN 0.0
#define TEMPERATURE_MAX 2.0

/* CHAT_CANCELLED is final like the other two: written by the api's cancel, never
 * by a result (see handler/finalize.h: only a processing record takes one). */
enum chat_status { CHAT_PROCESSING, CHAT_COMPLETED, CHAT_FAILED, CHAT_CANCELLED };
#define CHAT_CANCELLED_NAME                                                              \
    "cancelled" /* record_status_name(CHAT_CANCELLED), for Lua                           \
                 */

const char *record_status_name(enum chat_status s);

struct chat_request {
    const char *trace;
    const char *message; /* NULL when messages is given */
    size_t message_len;
    const char *messages; /* NULL, or a JSON array (see REC_MESSAGES) */
    size_t messages_len;
    const char *model;
    double temperature;
    double top_p; /* when has_top_p */
    int has_top_p;
    long long max_tokens; /* 0: not given */
    const char *params;   /* NULL, or a JSON object (see REC_PARAMS) */
    size_t params_len;
    const char *accepted; /* ISO-8601 */
    long long deadline;   /* Unix ms; 0: none. On POST: deadline_ms, relative */
    const char *user;     /* NULL or "": anonymous */
    long long admitted;   /* > 0: the attempt counted when it was dispatched */
    /* The OpenAI front's, for the pending hash only (NULL: none). */
    const char *front, *instructions, *metadata;
    int background;
    const char *webhook; /* NULL: none. Kept in the trace hash only */
    int stream;          /* 1: stream the answer as delta events (REC_STREAM) */
};

/* Appends the request-stream fields (for XADD). */
void record_request_append(const struct chat_request *req, struct cmd *c);

/* Appends the fields of the pending hash written when a request is accepted. */
void record_pending_append(const struct chat_request *req, struct cmd *c);

/* Reads a request-stream entry's field/value array. Returns 0, or -1 with the
 * reason in err (a poison entry). out->trace is set whenever the entry carried
 * a well-formed trace id, even on -1, so the trace can still be failed. */
int record_request_parse(const struct redisReply *fields, struct chat_request *out,
                         char *err, size_t errlen);

struct chat_result {
    const char *trace;
    enum chat_status status;
    const char *response; /* completed */
    size_t response_len;
    const char *model;
    long long prompt_tokens, completion_tokens, total_tokens; /* -1: unknown */
    const char *error_code;                                   /* failed */
    const char *error_message;                                /* failed */
    const char *accepted;
    const char *timestamp; /* when it finished */
    long long attempts;    /* 0: unknown */
    const char *finish_reason;
    long long upstream_status; /* failed: the upstream's HTTP status, 0: none */
    /* The pending record's (trace hash only; NULL when absent): numbers as
     * written, checked by whoever prints them. */
    const char *front, *instructions, *metadata;
    const char *temperature, *top_p, *max_tokens;
    long long tries; /* upstream attempts begun so far, 0: none */
    int background;
    int deleted;
};

void record_result_init(struct chat_result *r);

/* Appends the result fields that are set (for XADD, and HSET by the handler). */
void record_result_append(const struct chat_result *r, struct cmd *c);

/* Reads a result-stream entry or a trace hash (HGETALL). Returns 0, or -1 with
 * the reason in err if the status is missing or unknown. */
int record_result_parse(const struct redisReply *fields, struct chat_result *out,
                        char *err, size_t errlen);

#endif
