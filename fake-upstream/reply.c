/*
 * reply.c - the bodies the fake upstream sends: chat completions, OpenAI error
 * objects (with the messages, types and codes the real API uses, so the processor's
 * error mapping is tested against what it will meet), the model list, and the broken
 * bodies that scripts ask for.
 *
 * Token counts are deterministic so tests can assert them:
 *   prompt_tokens     = words in the content of every message + 7
 *                       (computed by serve.c; 7 stands for the chat framing)
 *   completion_tokens = words in the answer content
 * where a word is a maximal run of non-whitespace bytes.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "fake.h"

#define REPLY_JSON "application/json"
#define REPLY_HTML "text/html"
#define REPLY_PREFIX "Fake answer to: "
/* The huge content repeats this, so it has words and no bytes that need escaping. */
#define REPLY_HUGE_WORD "fake "

long long reply_count_words(const char *s, size_t len)
{
    long long words = 0;
    int in_word = 0;

    for (size_t i = 0; i < len; i++) {
        int space = isspace((unsigned char)s[i]);

        if (!space && !in_word)
            words++;
        in_word = !space;
    }
    return words;
}

int reply_http_date(char *buf, size_t size, time_t t)
{
    struct tm tm;

    /* We never call setlocale(), so %a and %b are the English names HTTP wants. */
    if (gmtime_r(&t, &tm) == NULL)
        return -1;
    if (strftime(buf, size, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
        return -1;
    return 0;
}

int reply_add_json(struct evbuffer *out, const json_t *value, size_t flags)
{
    if (value == NULL)
        return -1;
    char *enc = json_dumps(value, flags);
    int rc = enc != NULL && evbuffer_add(out, enc, strlen(enc)) == 0 ? 0 : -1;
    free(enc);
    return rc;
}

/* Appends s[0..n) as a quoted, escaped JSON string. */
static int reply_add_json_string(struct evbuffer *out, const char *s, size_t n)
{
    json_t *str = json_stringn(s, n);
    int rc = reply_add_json(out, str, JSON_ENCODE_ANY);
    json_decref(str);
    return rc;
}

static int reply_add_huge_content(struct evbuffer *out, size_t bytes)
{
    char chunk[4096];
    size_t wlen = strlen(REPLY_HUGE_WORD);

    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = REPLY_HUGE_WORD[i % wlen];
    if (evbuffer_add(out, "\"", 1) == -1)
        return -1;
    /* sizeof(chunk) is a multiple of the word length, so the pattern never breaks
     * at a chunk boundary. */
    while (bytes > 0) {
        size_t n = bytes < sizeof(chunk) ? bytes : sizeof(chunk);

        if (evbuffer_add(out, chunk, n) == -1)
            return -1;
        bytes -= n;
    }
    return evbuffer_add(out, "\"", 1);
}

int reply_answer(struct evbuffer *out, const struct reply_answer *a,
                 const char **content_type)
{
    char *text = NULL;
    size_t text_len;
    long long completion = 0;
    int rc = -1;

    *content_type = REPLY_JSON;
    if (a->body == SCRIPT_BODY_GARBAGE) {
        /* Cut off mid-token, as a proxy that dropped the connection would leave it. */
        int n = evbuffer_add_printf(out,
                                    "{\"id\": \"chatcmpl-fake-%llu\", \"object\": "
                                    "\"chat.completion\", \"choices\": [tru",
                                    a->id);

        return n < 0 ? -1 : 0;
    }
    if (a->body == SCRIPT_BODY_GARBAGE_HTML) {
        static const char page[] = "<html><body><h1>oops</h1>"
                                   "<p>Something went wrong.</p></body></html>\n";

        *content_type = REPLY_HTML;
        return evbuffer_add(out, page, strlen(page));
    }

    if (a->request != NULL) {
        text = strdup(a->request);
        if (text == NULL)
            goto out;
        text_len = strlen(text);
    } else {
        text_len = strlen(REPLY_PREFIX) + a->echo_len;
        text = malloc(text_len + 1);
        if (text == NULL)
            goto out;
        memcpy(text, REPLY_PREFIX, strlen(REPLY_PREFIX));
        memcpy(text + strlen(REPLY_PREFIX), a->echo, a->echo_len);
        text[text_len] = '\0';
    }
    if (a->body == SCRIPT_BODY_HUGE) {
        size_t wlen = strlen(REPLY_HUGE_WORD);

        completion = (long long)((a->huge + wlen - 1) / wlen);
    } else {
        completion = reply_count_words(text, text_len);
    }

    if (evbuffer_add_printf(
            out,
            "{\"id\":\"chatcmpl-fake-%llu\",\"object\":\"chat.completion\","
            "\"created\":%lld,\"model\":",
            a->id, (long long)time(NULL)) < 0)
        goto out;
    if (reply_add_json_string(out, a->model, strlen(a->model)) == -1)
        goto out;
    if (a->body != SCRIPT_BODY_NOCHOICES) {
        if (evbuffer_add_printf(out, ",\"choices\":[{\"index\":0,\"message\":"
                                     "{\"role\":\"assistant\",\"content\":") < 0)
            goto out;
        if (a->body == SCRIPT_BODY_HUGE) {
            if (reply_add_huge_content(out, a->huge) == -1)
                goto out;
        } else if (reply_add_json_string(out, text, text_len) == -1) {
            goto out;
        }
        if (evbuffer_add_printf(out, "},\"finish_reason\":\"%s\"}]",
                                a->finish_length ? "length" : "stop") < 0)
            goto out;
    }
    if (evbuffer_add_printf(
            out,
            ",\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
            "\"total_tokens\":%lld}}",
            a->prompt_tokens, completion, a->prompt_tokens + completion) < 0)
        goto out;
    rc = 0;
out:
    free(text);
    return rc;
}

int reply_error(struct evbuffer *out, const char *message, const char *type,
                const char *param, const char *code)
{
    json_t *body;
    char *enc = NULL;
    int rc = -1;

    /* "s?" turns NULL into JSON null, as the real API sends for absent param/code. */
    body = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message, "type",
                     type, "param", param, "code", code);
    if (body == NULL)
        goto out;
    /* The real API pretty-prints its errors; keep that so parsers meet newlines. */
    enc = json_dumps(body, JSON_INDENT(2));
    if (enc == NULL)
        goto out;
    if (evbuffer_add_printf(out, "%s\n", enc) < 0)
        goto out;
    rc = 0;
out:
    free(enc);
    json_decref(body);
    return rc;
}

int reply_error_echo_auth(struct evbuffer *out, int status, const char *auth,
                          const char **content_type)
{
    const char *key = auth != NULL ? auth : "";
    size_t len;
    char msg[2048];

    *content_type = REPLY_JSON;
    if (strncasecmp(key, "Bearer ", 7) == 0)
        key += 7;
    len = strlen(key);
    /* The head and tail OpenAI leaves visible, only longer: sk-proj-Ab****xyz123. */
    snprintf(msg, sizeof(msg),
             "Request rejected (HTTP %d): Authorization header was '%.1000s'. "
             "Incorrect API key provided: %.*s****%s.",
             status, auth != NULL ? auth : "(none)", (int)(len < 10 ? len : 10), key,
             len > 16 ? key + len - 6 : "");
    return reply_error(out, msg, status >= 500 ? "server_error" : "invalid_request_error",
                       NULL, status == 401 ? "invalid_api_key" : "invalid_request");
}

int reply_error_for_status(struct evbuffer *out, int status, int quota, const char *model,
                           long long prompt_tokens, const char **content_type)
{
    char msg[512];

    *content_type = REPLY_JSON;
    switch (status) {
    case 400:
        snprintf(msg, sizeof(msg),
                 "This model's maximum context length is 4097 tokens. However, your "
                 "messages resulted in %lld tokens. Please reduce the length of the "
                 "messages.",
                 prompt_tokens + 4097);
        return reply_error(out, msg, "invalid_request_error", "messages",
                           "context_length_exceeded");
    case 401:
        /* Never the key the client sent: logs and test output may be shared. */
        return reply_error(out,
                           "Incorrect API key provided: sk-...****. You can find your "
                           "API key at https://platform.openai.com/account/api-keys.",
                           "invalid_request_error", NULL, "invalid_api_key");
    case 403:
        return reply_error(out, "Country, region, or territory not supported",
                           "request_forbidden", NULL,
                           "unsupported_country_region_territory");
    case 404:
        snprintf(msg, sizeof(msg),
                 "The model '%.200s' does not exist or you do not have access to it.",
                 model);
        return reply_error(out, msg, "invalid_request_error", NULL, "model_not_found");
    case 429:
        if (quota)
            return reply_error(out,
                               "You exceeded your current quota, please check your plan "
                               "and billing details. For more information on this error, "
                               "read the docs: https://platform.openai.com/docs/guides/"
                               "error-codes/api-errors.",
                               "insufficient_quota", NULL, "insufficient_quota");
        snprintf(msg, sizeof(msg),
                 "Rate limit reached for %.200s in organization org-fake on requests per "
                 "min (RPM): Limit 3, Used 3, Requested 1. Please try again "
                 "in 20s. Visit https://platform.openai.com/account/rate-limits to learn "
                 "more.",
                 model);
        return reply_error(out, msg, "requests", NULL, "rate_limit_exceeded");
    case 500:
        return reply_error(out,
                           "The server had an error while processing your request. "
                           "Sorry about that!",
                           "server_error", NULL, NULL);
    case 502: {
        /* What the CDN in front of the API sends, not the API itself. */
        static const char page[] =
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
            "<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
            "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

        *content_type = REPLY_HTML;
        return evbuffer_add(out, page, strlen(page));
    }
    case 503:
        return reply_error(out,
                           "The engine is currently overloaded, please try again later.",
                           "server_error", NULL, NULL);
    case 504:
        return reply_error(out, "Request timed out.", "server_error", NULL, "timeout");
    default:
        snprintf(msg, sizeof(msg), "Fake upstream error (HTTP %d).", status);
        return reply_error(out, msg,
                           status >= 500 ? "server_error" : "invalid_request_error", NULL,
                           NULL);
    }
}

int reply_rate_limited(struct evbuffer *out, const char *model,
                       const struct limit_verdict *v)
{
    int tokens = strcmp(v->type, "tokens") == 0;
    const char *per = tokens ? "tokens per min (TPM)" : "requests per min (RPM)";
    long long limit = tokens ? v->tokens.limit : v->requests.limit;
    long long requested = tokens ? v->cost : 1;
    char msg[512], wait[32];

    if (v->too_large) {
        snprintf(msg, sizeof(msg),
                 "Request too large for %.200s in organization org-fake on %s: Limit "
                 "%lld, Requested %lld. The input or output tokens must be reduced in "
                 "order to run successfully. Visit https://platform.openai.com/account/"
                 "rate-limits to learn more.",
                 model, per, limit, requested);
        return reply_error(out, msg, v->type, NULL, "rate_limit_exceeded");
    }
    if (limit_format_duration(wait, sizeof(wait), v->retry_ms) == -1)
        return -1;
    snprintf(msg, sizeof(msg),
             "Rate limit reached for %.200s in organization org-fake on %s: Limit %lld, "
             "Used %lld, Requested %lld. Please try again in %s. Visit "
             "https://platform.openai.com/account/rate-limits to learn more.",
             model, per, limit, v->used, requested, wait);
    return reply_error(out, msg, v->type, NULL, "rate_limit_exceeded");
}

int reply_models(struct evbuffer *out)
{
    static const char *const ids[] = {"gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo",
                                      "fake-model"};
    json_t *list = json_array();
    json_t *body = NULL;
    int rc = -1;

    if (list == NULL)
        goto out;
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        json_t *m = json_pack("{s:s, s:s, s:i, s:s}", "id", ids[i], "object", "model",
                              "created", 1700000000, "owned_by", "chatq-fake");

        if (m == NULL || json_array_append_new(list, m) == -1)
            goto out;
    }
    /* "o" steals list, so it must not be freed again below. */
    body = json_pack("{s:s, s:o}", "object", "list", "data", list);
    list = NULL;
    rc = reply_add_json(out, body, JSON_COMPACT);
out:
    json_decref(body);
    json_decref(list);
    return rc;
}

/* One "data: {chunk}\n\n" event: a chat.completion.chunk of answer whose only
 * choice carries delta (stolen) and finish_reason (NULL: null), or, with choices
 * NULL, no choice and usage (stolen). */
static int reply_stream_event(struct evbuffer *out, json_t *answer, json_t *delta,
                              const char *finish, json_t *usage)
{
    json_t *chunk = json_pack(
        "{s:O?, s:s, s:O?, s:O?}", "id", json_object_get(answer, "id"), "object",
        "chat.completion.chunk", "created", json_object_get(answer, "created"), "model",
        json_object_get(answer, "model"));
    json_t *choices = json_array();
    int rc = -1;

    if (chunk == NULL || choices == NULL)
        goto out;
    if (delta != NULL) {
        json_t *c =
            json_pack("{s:i, s:O, s:o}", "index", 0, "delta", delta, "finish_reason",
                      finish != NULL ? json_string(finish) : json_null());
        if (c == NULL || json_array_append_new(choices, c) != 0)
            goto out;
    }
    if (json_object_set(chunk, "choices", choices) != 0)
        goto out;
    if (usage != NULL && json_object_set(chunk, "usage", usage) != 0)
        goto out;
    if (evbuffer_add(out, "data: ", 6) != 0 ||
        reply_add_json(out, chunk, JSON_COMPACT) != 0 ||
        evbuffer_add(out, "\n\n", 2) != 0)
        goto out;
    rc = 0;
out:
    json_decref(delta);
    json_decref(usage);
    json_decref(choices);
    json_decref(chunk);
    return rc;
}

int reply_stream(struct evbuffer *out, struct evbuffer *answer_json, int include_usage)
{
    size_t len = evbuffer_get_length(answer_json);
    const char *data = len > 0 ? (const char *)evbuffer_pullup(answer_json, -1) : "";
    json_error_t jerr;
    json_t *answer = json_loadb(data != NULL ? data : "", len, 0, &jerr);
    json_t *choice = json_array_get(json_object_get(answer, "choices"), 0);
    json_t *content = json_object_get(json_object_get(choice, "message"), "content");
    json_t *finish = json_object_get(choice, "finish_reason");
    int rc = -1;

    if (!json_is_string(content))
        goto out;
    const char *s = json_string_value(content);
    size_t n = json_string_length(content), at = 0;
    /* One chunk per word with the blanks after it; the first also names the role,
     * as OpenAI's does. Cut at ASCII blanks only, so never inside a UTF-8 sequence. */
    if (reply_stream_event(out, answer, json_pack("{s:s}", "role", "assistant"), NULL,
                           NULL) != 0)
        goto out;
    while (at < n) {
        size_t end = at;
        while (end < n && !isspace((unsigned char)s[end]))
            end++;
        while (end < n && isspace((unsigned char)s[end]))
            end++;
        json_t *piece = json_stringn(s + at, end - at);
        if (piece == NULL ||
            reply_stream_event(out, answer, json_pack("{s:o}", "content", piece), NULL,
                               NULL) != 0)
            goto out;
        at = end;
    }
    if (reply_stream_event(out, answer, json_object(),
                           json_is_string(finish) ? json_string_value(finish) : "stop",
                           NULL) != 0)
        goto out;
    if (include_usage &&
        reply_stream_event(out, answer, NULL, NULL,
                           json_incref(json_object_get(answer, "usage"))) != 0)
        goto out;
    if (evbuffer_add(out, "data: [DONE]\n\n", 14) != 0)
        goto out;
    rc = 0;
out:
    json_decref(answer);
    return rc;
}
