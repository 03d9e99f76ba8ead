/* record.c - see record.h. */
#include "record.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cmd.h"
#include "stream.h"
#include "uuid.h"

static const char *const record_status_names[] = {"processing", "completed", "failed",
                                                  CHAT_CANCELLED_NAME};

const char *record_status_name(enum chat_status s)
{
    return record_status_names[s];
}

static void record_pair(struct cmd *c, const char *field, const char *value)
{
    if (value) {
        cmd_addz(c, field);
        cmd_addz(c, value);
    }
}

/* The sampling fields, written alike on the stream (for the upstream call) and in
 * the pending hash (for the OpenAI front's Response object). */
static void record_sampling_append(const struct chat_request *req, struct cmd *c)
{
    cmd_addz(c, REC_TEMPERATURE);
    cmd_adddbl(c, req->temperature);
    if (req->has_top_p) {
        cmd_addz(c, REC_TOP_P);
        cmd_adddbl(c, req->top_p);
    }
    if (req->max_tokens > 0) {
        cmd_addz(c, REC_MAX_TOKENS);
        cmd_addll(c, req->max_tokens);
    }
}

void record_request_append(const struct chat_request *req, struct cmd *c)
{
    record_pair(c, REC_TRACE, req->trace);
    if (req->messages != NULL) {
        cmd_addz(c, REC_MESSAGES);
        cmd_add(c, req->messages, req->messages_len);
    } else {
        cmd_addz(c, REC_MESSAGE);
        cmd_add(c, req->message, req->message_len);
    }
    record_pair(c, REC_MODEL, req->model);
    record_sampling_append(req, c);
    if (req->params != NULL) {
        cmd_addz(c, REC_PARAMS);
        cmd_add(c, req->params, req->params_len);
    }
    record_pair(c, REC_ACCEPTED, req->accepted);
    if (req->deadline > 0) {
        cmd_addz(c, REC_DEADLINE);
        cmd_addll(c, req->deadline);
    }
    if (req->user != NULL && req->user[0] != '\0')
        record_pair(c, REC_USER, req->user);
    if (req->stream)
        record_pair(c, REC_STREAM, "1");
}

void record_pending_append(const struct chat_request *req, struct cmd *c)
{
    record_pair(c, REC_TRACE, req->trace);
    record_pair(c, REC_STATUS, record_status_name(CHAT_PROCESSING));
    record_pair(c, REC_MODEL, req->model);
    record_pair(c, REC_ACCEPTED, req->accepted);
    if (req->webhook != NULL && req->webhook[0] != '\0')
        record_pair(c, REC_WEBHOOK, req->webhook);
    if (req->front == NULL)
        return;
    /* What the OpenAI front's Response object echoes back. */
    record_pair(c, REC_FRONT, req->front);
    record_pair(c, REC_INSTRUCTIONS, req->instructions);
    record_pair(c, REC_METADATA, req->metadata);
    record_sampling_append(req, c);
    if (req->background)
        record_pair(c, REC_BACKGROUND, "1");
}

/* Reads an optional number field in [min, max]; 0 (absent: *has = 0), or -1. */
static int record_number(const redisReply *fields, const char *name, double min,
                         double max, double *out, int *has, char *err, size_t errlen)
{
    const char *t = stream_field(fields, name, NULL);
    char *end;
    *has = 0;
    if (t == NULL)
        return 0;
    errno = 0;
    *out = strtod(t, &end);
    if (errno != 0 || end == t || *end != '\0' || !isfinite(*out) || *out < min ||
        *out > max) {
        snprintf(err, errlen, "field '%s' is not a number in [%g, %g]", name, min, max);
        return -1;
    }
    *has = 1;
    return 0;
}

int record_request_parse(const redisReply *fields, struct chat_request *out, char *err,
                         size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *trace = stream_field(fields, REC_TRACE, NULL);
    if (trace && uuid_valid(trace))
        out->trace = trace;
    if (out->trace == NULL) {
        snprintf(err, errlen, "missing or malformed field '%s'", REC_TRACE);
        return -1;
    }
    out->message = stream_field(fields, REC_MESSAGE, &out->message_len);
    out->messages = stream_field(fields, REC_MESSAGES, &out->messages_len);
    if (out->messages != NULL) {
        /* One or the other: which would be sent is otherwise a guess. */
        if (out->message != NULL || out->messages_len == 0) {
            snprintf(err, errlen, "field '%s' is empty or comes with '%s'", REC_MESSAGES,
                     REC_MESSAGE);
            return -1;
        }
    } else if (out->message == NULL || out->message_len == 0) {
        snprintf(err, errlen, "missing or empty field '%s'", REC_MESSAGE);
        return -1;
    }
    out->model = stream_field(fields, REC_MODEL, NULL);
    if (out->model == NULL || out->model[0] == '\0') {
        snprintf(err, errlen, "missing or empty field '%s'", REC_MODEL);
        return -1;
    }
    const char *t = stream_field(fields, REC_TEMPERATURE, NULL);
    if (t == NULL) {
        snprintf(err, errlen, "missing field '%s'", REC_TEMPERATURE);
        return -1;
    }
    char *end;
    errno = 0;
    out->temperature = strtod(t, &end);
    if (errno != 0 || end == t || *end != '\0' || !isfinite(out->temperature) ||
        out->temperature < TEMPERATURE_MIN || out->temperature > TEMPERATURE_MAX) {
        snprintf(err, errlen, "field '%s' is not a number in [0, 2]", REC_TEMPERATURE);
        return -1;
    }
    if (record_number(fields, REC_TOP_P, 0, 1, &out->top_p, &out->has_top_p, err,
                      errlen) != 0)
        return -1;
    const char *mt = stream_field(fields, REC_MAX_TOKENS, NULL);
    if (mt != NULL) {
        errno = 0;
        out->max_tokens = strtoll(mt, &end, 10);
        if (errno != 0 || end == mt || *end != '\0' || out->max_tokens <= 0) {
            snprintf(err, errlen, "field '%s' is not a positive integer", REC_MAX_TOKENS);
            return -1;
        }
    }
    out->params = stream_field(fields, REC_PARAMS, &out->params_len);
    out->accepted = stream_field(fields, REC_ACCEPTED, NULL);
    out->user = stream_field(fields, REC_USER, NULL);
    const char *st = stream_field(fields, REC_STREAM, NULL);
    out->stream = st != NULL && strcmp(st, "1") == 0;
    const char *a = stream_field(fields, REC_ADMITTED, NULL);
    if (a != NULL) {
        errno = 0;
        out->admitted = strtoll(a, &end, 10);
        if (errno != 0 || end == a || *end != '\0' || out->admitted <= 0) {
            snprintf(err, errlen, "field '%s' is not a positive integer", REC_ADMITTED);
            return -1;
        }
    }
    const char *d = stream_field(fields, REC_DEADLINE, NULL);
    if (d != NULL) {
        errno = 0;
        out->deadline = strtoll(d, &end, 10);
        if (errno != 0 || end == d || *end != '\0' || out->deadline <= 0) {
            snprintf(err, errlen, "field '%s' is not a positive integer", REC_DEADLINE);
            return -1;
        }
    }
    return 0;
}

void record_result_init(struct chat_result *r)
{
    memset(r, 0, sizeof(*r));
    r->prompt_tokens = r->completion_tokens = r->total_tokens = -1;
}

static void record_count(struct cmd *c, const char *field, long long v)
{
    if (v >= 0) {
        cmd_addz(c, field);
        cmd_addll(c, v);
    }
}

void record_result_append(const struct chat_result *r, struct cmd *c)
{
    record_pair(c, REC_TRACE, r->trace);
    record_pair(c, REC_STATUS, record_status_name(r->status));
    if (r->response) {
        cmd_addz(c, REC_RESPONSE);
        cmd_add(c, r->response, r->response_len);
    }
    record_pair(c, REC_MODEL, r->model);
    record_count(c, REC_PROMPT_TOKENS, r->prompt_tokens);
    record_count(c, REC_COMPLETION_TOKENS, r->completion_tokens);
    record_count(c, REC_TOTAL_TOKENS, r->total_tokens);
    record_pair(c, REC_ERROR_CODE, r->error_code);
    record_pair(c, REC_ERROR_MESSAGE, r->error_message);
    record_pair(c, REC_ACCEPTED, r->accepted);
    record_pair(c, REC_TIMESTAMP, r->timestamp);
    if (r->attempts > 0)
        record_count(c, REC_ATTEMPTS, r->attempts);
    record_pair(c, REC_FINISH_REASON, r->finish_reason);
    if (r->upstream_status > 0)
        record_count(c, REC_UPSTREAM_STATUS, r->upstream_status);
}

static long long record_ll(const redisReply *fields, const char *name)
{
    const char *s = stream_field(fields, name, NULL);
    if (s == NULL)
        return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    return end == s || *end != '\0' || v < 0 ? -1 : v;
}

int record_result_parse(const redisReply *fields, struct chat_result *out, char *err,
                        size_t errlen)
{
    record_result_init(out);
    out->trace = stream_field(fields, REC_TRACE, NULL);
    const char *status = stream_field(fields, REC_STATUS, NULL);
    if (status == NULL) {
        snprintf(err, errlen, "missing field '%s'", REC_STATUS);
        return -1;
    }
    size_t i;
    for (i = 0; i < sizeof(record_status_names) / sizeof(record_status_names[0]); i++)
        if (strcmp(status, record_status_names[i]) == 0)
            break;
    if (i == sizeof(record_status_names) / sizeof(record_status_names[0])) {
        snprintf(err, errlen, "unknown status '%.32s'", status);
        return -1;
    }
    out->status = (enum chat_status)i;
    out->response = stream_field(fields, REC_RESPONSE, &out->response_len);
    out->model = stream_field(fields, REC_MODEL, NULL);
    out->prompt_tokens = record_ll(fields, REC_PROMPT_TOKENS);
    out->completion_tokens = record_ll(fields, REC_COMPLETION_TOKENS);
    out->total_tokens = record_ll(fields, REC_TOTAL_TOKENS);
    out->error_code = stream_field(fields, REC_ERROR_CODE, NULL);
    out->error_message = stream_field(fields, REC_ERROR_MESSAGE, NULL);
    out->accepted = stream_field(fields, REC_ACCEPTED, NULL);
    out->timestamp = stream_field(fields, REC_TIMESTAMP, NULL);
    long long attempts = record_ll(fields, REC_ATTEMPTS);
    out->attempts = attempts > 0 ? attempts : 0;
    out->finish_reason = stream_field(fields, REC_FINISH_REASON, NULL);
    long long us = record_ll(fields, REC_UPSTREAM_STATUS);
    out->upstream_status = us > 0 ? us : 0;
    const char *del = stream_field(fields, REC_DELETED, NULL);
    out->deleted = del != NULL && strcmp(del, "1") == 0;
    out->front = stream_field(fields, REC_FRONT, NULL);
    out->instructions = stream_field(fields, REC_INSTRUCTIONS, NULL);
    out->metadata = stream_field(fields, REC_METADATA, NULL);
    out->temperature = stream_field(fields, REC_TEMPERATURE, NULL);
    out->top_p = stream_field(fields, REC_TOP_P, NULL);
    out->max_tokens = stream_field(fields, REC_MAX_TOKENS, NULL);
    long long tries = record_ll(fields, REC_TRIES);
    out->tries = tries > 0 ? tries : 0;
    const char *bg = stream_field(fields, REC_BACKGROUND, NULL);
    out->background = bg != NULL && strcmp(bg, "1") == 0;
    return 0;
}
