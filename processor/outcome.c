/* outcome.c - classifying an upstream attempt (see outcome.h). */
#include "outcome.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "scrub.h"
#include "utf8.h"

void outcome_init(struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    o->prompt_tokens = o->completion_tokens = o->total_tokens = -1;
    o->retry_after_ms = -1;
}

void outcome_clear(struct outcome *o)
{
    free(o->response);
    free(o->model);
    free(o->finish_reason);
    free(o->code);
    free(o->message);
    outcome_init(o);
}

static char *outcome_strndup(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

static int outcome_set(struct outcome *o, enum outcome_kind kind, const char *code,
                       const char *message, size_t message_len)
{
    o->kind = kind;
    o->code = strdup(code);
    o->message =
        outcome_strndup(message, utf8_cut(message, message_len, OUTCOME_MESSAGE_MAX));
    return o->code && o->message ? 0 : -1;
}

static int outcome_setf(struct outcome *o, enum outcome_kind kind, const char *code,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int outcome_setf(struct outcome *o, enum outcome_kind kind, const char *code,
                        const char *fmt, ...)
{
    char buf[OUTCOME_MESSAGE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return outcome_set(o, kind, code, buf, strlen(buf));
}

static int outcome_curl(const struct outcome_input *in, struct outcome *o)
{
    const char *why = in->curl_error && in->curl_error[0]
                          ? in->curl_error
                          : curl_easy_strerror((CURLcode)in->curl_code);
    switch (in->curl_code) {
    case CURLE_OPERATION_TIMEDOUT:
        return outcome_setf(o, OUTCOME_RETRY, "upstream_timeout",
                            "upstream timed out: %s", why);
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return outcome_setf(o, OUTCOME_RETRY, "upstream_unreachable",
                            "upstream unreachable: %s", why);
    case CURLE_PEER_FAILED_VERIFICATION: /* unknown CA, wrong host name, expired */
    case CURLE_SSL_CACERT_BADFILE:       /* UPSTREAM_CA_FILE cannot be used */
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
        /* The certificate or our trust settings are wrong: that will not change
         * between attempts, and retrying would only delay what the client sees. A
         * failed handshake (CURLE_SSL_CONNECT_ERROR) stays a connection error: a
         * reset in the middle of one is as transient as any other. */
        return outcome_setf(o, OUTCOME_FAILED, "upstream_tls_error",
                            "TLS with upstream failed: %s", why);
    case CURLE_ABORTED_BY_CALLBACK:
        /* upstream.c refuses libcurl's silent second request on a fresh
         * connection (no other callback of ours aborts): say what happened
         * rather than curl's words for that. */
        return outcome_setf(o, OUTCOME_RETRY, "upstream_connection_error",
                            "connection to upstream failed: it closed a kept-alive "
                            "connection without answering the request sent on it");
    default:
        return outcome_setf(o, OUTCOME_RETRY, "upstream_connection_error",
                            "connection to upstream failed: %s", why);
    }
}

/* The OpenAI error object: {"error": {"message", "type", "code"}}; some
 * compatible servers send {"error": "text"}. Borrowed from root; NULL if absent. */
struct outcome_error {
    const char *message;
    size_t message_len;
    const char *type;
    const char *code;
};

static void outcome_error_read(json_t *root, struct outcome_error *e)
{
    memset(e, 0, sizeof(*e));
    json_t *err = json_is_object(root) ? json_object_get(root, "error") : NULL;
    json_t *msg = NULL;
    if (json_is_string(err)) {
        msg = err;
    } else if (json_is_object(err)) {
        msg = json_object_get(err, "message");
        json_t *type = json_object_get(err, "type");
        json_t *code = json_object_get(err, "code");
        e->type = json_is_string(type) ? json_string_value(type) : NULL;
        e->code = json_is_string(code) ? json_string_value(code) : NULL;
    }
    if (json_is_string(msg)) {
        e->message = json_string_value(msg);
        e->message_len = strlen(e->message);
    }
}

/* An upstream error message, or "upstream answered HTTP <n>" if there is none. */
static int outcome_http_error(struct outcome *o, enum outcome_kind kind, const char *code,
                              const struct outcome_error *e, long status)
{
    if (e->message && e->message[0])
        return outcome_set(o, kind, code, e->message, e->message_len);
    return outcome_setf(o, kind, code, "upstream answered HTTP %ld", status);
}

static long long outcome_count(json_t *usage, const char *name)
{
    json_t *v = json_object_get(usage, name);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : -1;
}

/* Refused rather than cut: a truncated answer passed off as whole is worse than
 * none. Final: the same question would get as long an answer again. */
static int outcome_too_long(const struct outcome_input *in, struct outcome *o)
{
    return outcome_setf(
        o, OUTCOME_FAILED, "completion_too_large",
        "the upstream's answer exceeded MAX_COMPLETION_BYTES (%lld bytes)",
        in->max_completion_bytes);
}

static int outcome_completion(const struct outcome_input *in, json_t *root,
                              struct outcome *o)
{
    const char *why = NULL;
    json_t *choices = json_object_get(root, "choices");
    json_t *message = json_object_get(json_array_get(choices, 0), "message");
    json_t *content = json_object_get(message, "content");
    if (!json_is_object(root))
        why = "it is not a JSON object";
    else if (!json_is_array(choices) || json_array_size(choices) == 0)
        why = "it has no choices";
    else if (!json_is_string(content))
        why = "choices[0].message.content is not a string";
    if (why)
        return outcome_setf(o, OUTCOME_RETRY, "upstream_invalid_response",
                            "upstream answered HTTP %ld but %s", in->http_status, why);

    if (json_string_length(content) > (size_t)in->max_completion_bytes)
        return outcome_too_long(in, o);
    o->kind = OUTCOME_COMPLETED;
    o->response_len = json_string_length(content);
    o->response = outcome_strndup(json_string_value(content), o->response_len);
    json_t *model = json_object_get(root, "model");
    o->model = strdup(json_is_string(model) && json_string_length(model) > 0
                          ? json_string_value(model)
                          : in->request_model);
    json_t *usage = json_object_get(root, "usage");
    o->prompt_tokens = outcome_count(usage, "prompt_tokens");
    o->completion_tokens = outcome_count(usage, "completion_tokens");
    o->total_tokens = outcome_count(usage, "total_tokens");
    /* Kept when it is a short plain word: it is written to the record as it is. */
    json_t *fr = json_object_get(json_array_get(choices, 0), "finish_reason");
    if (json_is_string(fr) && json_string_length(fr) > 0 && json_string_length(fr) < 32 &&
        strspn(json_string_value(fr), "abcdefghijklmnopqrstuvwxyz_") ==
            json_string_length(fr)) {
        o->finish_reason = strdup(json_string_value(fr));
        if (o->finish_reason == NULL)
            return -1;
    }
    return o->response && o->model ? 0 : -1;
}

static int outcome_http(const struct outcome_input *in, json_t *root, struct outcome *o)
{
    long status = in->http_status;
    struct outcome_error e;
    outcome_error_read(root, &e);

    if (status == 429) {
        if ((e.code && strcmp(e.code, "insufficient_quota") == 0) ||
            (e.type && strcmp(e.type, "insufficient_quota") == 0))
            return outcome_http_error(o, OUTCOME_FAILED, "insufficient_quota", &e,
                                      status);
        o->retry_after_ms = in->retry_after_ms;
        return outcome_http_error(o, OUTCOME_RETRY, "upstream_rate_limited", &e, status);
    }
    if (status == 408 || status == 409 || (status >= 500 && status <= 599)) {
        /* A server that is overloaded often says when to come back, as for 429. */
        o->retry_after_ms = in->retry_after_ms;
        const char *code = status == 408   ? "upstream_timeout"
                           : status == 409 ? "upstream_conflict"
                                           : "upstream_unavailable";
        return outcome_http_error(o, OUTCOME_RETRY, code, &e, status);
    }
    if (status >= 300 && status <= 499) {
        /* The request itself is wrong (bad key, unknown model, too long...), or the
         * base URL is (a redirect is not followed): asking again cannot help. */
        char code[64];
        if (e.code && e.code[0] && strlen(e.code) < sizeof(code))
            snprintf(code, sizeof(code), "%s", e.code);
        else
            snprintf(code, sizeof(code), "upstream_%ld", status);
        return outcome_http_error(o, OUTCOME_FAILED, code, &e, status);
    }
    /* 1xx as a final status, or outside 100..599: not a server we understand. */
    return outcome_setf(o, OUTCOME_RETRY, "upstream_invalid_response",
                        "upstream answered HTTP %ld", status);
}

/* Whatever the upstream said is scrubbed here, in one place, before anything
 * keeps, logs or returns it. The answer itself is not: it is the model's text the
 * client asked for, and may be megabytes. */
static int outcome_scrub(const struct outcome_input *in, struct outcome *o)
{
    char **fields[] = {&o->message, &o->model};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        char *s = *fields[i];
        size_t len;
        if (s == NULL)
            continue;
        char *clean = scrub_text(s, strlen(s), in->secret, &len);
        if (clean == NULL)
            return -1;
        /* "[redacted]" may be longer than what it replaced. */
        if (fields[i] == &o->message)
            clean[utf8_cut(clean, len, OUTCOME_MESSAGE_MAX)] = '\0';
        free(s);
        *fields[i] = clean;
    }
    return 0;
}

int outcome_classify(const struct outcome_input *in, struct outcome *out)
{
    int rc;
    json_t *root = NULL;

    outcome_clear(out);
    if (in->too_long) {
        rc = outcome_too_long(in, out);
        goto out;
    }
    if (in->too_large) {
        rc = outcome_setf(out, OUTCOME_FAILED, "upstream_response_too_large",
                          "upstream response exceeded %lld bytes", in->max_bytes);
        goto out;
    }
    if (in->curl_code != CURLE_OK) {
        rc = outcome_curl(in, out);
        goto out;
    }

    if (in->invalid_stream != NULL) {
        rc = outcome_setf(out, OUTCOME_RETRY, "upstream_invalid_response",
                          "upstream answered HTTP %ld but its event stream is "
                          "unusable: %s",
                          in->http_status, in->invalid_stream);
        goto out;
    }
    /* JSON_ALLOW_NUL: an answer may legitimately contain U+0000; it is kept with
     * its length. */
    json_error_t jerr;
    root = json_loadb(in->body ? in->body : "", in->body_len, JSON_ALLOW_NUL, &jerr);
    if (in->http_status >= 200 && in->http_status <= 299) {
        if (root == NULL)
            rc = outcome_setf(out, OUTCOME_RETRY, "upstream_invalid_response",
                              "upstream answered HTTP %ld with invalid JSON: %s",
                              in->http_status, jerr.text);
        else
            rc = outcome_completion(in, root, out);
        goto out;
    }
    rc = outcome_http(in, root, out);

out:
    json_decref(root);
    if (rc == 0 && !in->too_large && in->curl_code == CURLE_OK)
        out->http_status = in->http_status;
    if (rc == 0)
        rc = outcome_scrub(in, out);
    if (rc != 0) {
        /* Never leave the zero value, OUTCOME_COMPLETED, behind: that would write a
         * completed chat with no answer. Trying again is the safe reading. */
        outcome_clear(out);
        out->kind = OUTCOME_RETRY;
    }
    return rc;
}

int outcome_fail(struct outcome *o, const char *code, const char *message)
{
    char *c = strdup(code), *m = strdup(message);
    if (c == NULL || m == NULL) {
        free(c);
        free(m);
        return -1;
    }
    outcome_clear(o);
    o->kind = OUTCOME_FAILED;
    o->code = c;
    o->message = m;
    return 0;
}

int outcome_give_up(struct outcome *o, int attempts)
{
    /* The message is already cut to OUTCOME_MESSAGE_MAX, so this never truncates. */
    char buf[OUTCOME_MESSAGE_MAX + 64];
    snprintf(buf, sizeof(buf), "gave up after %d attempts: %s", attempts,
             o->message ? o->message : "");
    char *m = strdup(buf);
    if (m == NULL)
        return -1;
    free(o->message);
    o->message = m;
    o->kind = OUTCOME_FAILED;
    o->retry_after_ms = -1;
    return 0;
}
