/* validate.c - the POST /chat body rules (see validate.h). */
#include "validate.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "utf8.h"

/* A field name echoed back in a message is cut to this many bytes. */
#define VALIDATE_NAME_ECHO 64

static void validate_fail(struct validate_error *err, const char *code, const char *fmt,
                          ...) __attribute__((format(printf, 3, 4)));

static void validate_fail(struct validate_error *err, const char *code, const char *fmt,
                          ...)
{
    va_list ap;
    err->status = 400;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

static const char *validate_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

static int validate_only_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (strchr(" \t\n\v\f\r", s[i]) == NULL || s[i] == '\0')
            return 0;
    return 1;
}

/* 1 if the JSON text nests arrays and objects deeper than VALIDATE_DEPTH_MAX.
 * jansson's parser recurses once per level and civetweb's worker threads have
 * 100 KiB stacks: a body of a thousand '[' overflows one long before jansson's own
 * limit (2048 levels) applies. Brackets inside strings do not count. */
int validate_too_deep(const char *s, size_t len)
{
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character cannot end the string */
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > VALIDATE_DEPTH_MAX)
                return 1;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 0;
}

static int validate_known(const char *key)
{
    return strcmp(key, REC_MESSAGE) == 0 || strcmp(key, REC_MODEL) == 0 ||
           strcmp(key, REC_TEMPERATURE) == 0 ||
           strcmp(key, VALIDATE_DEADLINE_FIELD) == 0 || strcmp(key, REC_USER) == 0 ||
           strcmp(key, REC_WEBHOOK) == 0 || strcmp(key, REC_STREAM) == 0;
}

static int validate_message(const json_t *root, struct chat_request *req,
                            struct validate_error *err)
{
    const json_t *v = json_object_get(root, REC_MESSAGE);
    if (v == NULL) {
        validate_fail(err, "missing_field", "'message' is required");
        return -1;
    }
    if (!json_is_string(v)) {
        validate_fail(err, "invalid_field", "'message' must be a string, not %s",
                      validate_type_name(v));
        return -1;
    }
    req->message = json_string_value(v);
    req->message_len = json_string_length(v);
    if (req->message_len == 0 || validate_only_space(req->message, req->message_len)) {
        validate_fail(err, "invalid_field",
                      "'message' must not be empty or only whitespace");
        return -1;
    }
    if (memchr(req->message, '\0', req->message_len) != NULL) {
        validate_fail(err, "invalid_field",
                      "'message' must not contain NUL (\\u0000) characters");
        return -1;
    }
    return 0;
}

static int validate_model(const json_t *root, const char *default_model,
                          struct chat_request *req, struct validate_error *err)
{
    const json_t *v = json_object_get(root, REC_MODEL);
    if (v == NULL) {
        req->model = default_model;
        return 0;
    }
    if (!json_is_string(v)) {
        validate_fail(err, "invalid_field", "'model' must be a string, not %s",
                      validate_type_name(v));
        return -1;
    }
    size_t len = json_string_length(v);
    req->model = json_string_value(v);
    if (len == 0) {
        validate_fail(err, "invalid_field", "'model' must not be empty");
        return -1;
    }
    if (len > VALIDATE_MODEL_MAX) {
        validate_fail(err, "invalid_field", "'model' must be at most %d bytes long",
                      VALIDATE_MODEL_MAX);
        return -1;
    }
    if (memchr(req->model, '\0', len) != NULL) {
        validate_fail(err, "invalid_field",
                      "'model' must not contain NUL (\\u0000) characters");
        return -1;
    }
    return 0;
}

static int validate_temperature(const json_t *root, struct chat_request *req,
                                struct validate_error *err)
{
    const json_t *v = json_object_get(root, REC_TEMPERATURE);
    if (v == NULL) {
        req->temperature = VALIDATE_DEFAULT_TEMPERATURE;
        return 0;
    }
    if (!json_is_number(v)) {
        validate_fail(err, "invalid_field",
                      "'temperature' must be a number between %g and %g, not %s",
                      TEMPERATURE_MIN, TEMPERATURE_MAX, validate_type_name(v));
        return -1;
    }
    double t = json_number_value(v);
    if (!isfinite(t) || t < TEMPERATURE_MIN || t > TEMPERATURE_MAX) {
        validate_fail(err, "invalid_field",
                      "'temperature' must be a number between %g and %g", TEMPERATURE_MIN,
                      TEMPERATURE_MAX);
        return -1;
    }
    /* -0 passes the range check but would travel as "-0". */
    req->temperature = t == 0.0 ? 0.0 : t;
    return 0;
}

static int validate_deadline(const json_t *root, struct chat_request *req,
                             struct validate_error *err)
{
    const json_t *v = json_object_get(root, VALIDATE_DEADLINE_FIELD);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v)) {
        validate_fail(err, "invalid_field",
                      "'" VALIDATE_DEADLINE_FIELD "' must be a whole number of "
                      "milliseconds, not %s",
                      json_is_real(v) ? "a fraction" : validate_type_name(v));
        return -1;
    }
    if (json_integer_value(v) < 1 || json_integer_value(v) > VALIDATE_DEADLINE_MAX_MS) {
        validate_fail(err, "invalid_field",
                      "'" VALIDATE_DEADLINE_FIELD "' must be between 1 and %lld "
                      "milliseconds, not %lld",
                      VALIDATE_DEADLINE_MAX_MS, (long long)json_integer_value(v));
        return -1;
    }
    req->deadline = json_integer_value(v);
    return 0;
}

static int validate_user(const json_t *root, struct chat_request *req,
                         struct validate_error *err)
{
    const json_t *v = json_object_get(root, REC_USER);
    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        validate_fail(err, "invalid_field", "'" REC_USER "' must be a string, not %s",
                      validate_type_name(v));
        return -1;
    }
    const char *user = json_string_value(v);
    size_t len = json_string_length(v);
    if (len == 0 || len > VALIDATE_USER_MAX) {
        validate_fail(err, "invalid_field",
                      "'" REC_USER "' must be 1 to %d bytes long, not %zu",
                      VALIDATE_USER_MAX, len);
        return -1;
    }
    /* No spaces or control bytes: the id may name Redis keys and is logged as it
     * is. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)user[i];
        if (c < 0x21 || c > 0x7e) {
            validate_fail(err, "invalid_field",
                          "'" REC_USER "' must be printable ASCII without spaces; "
                          "byte %zu is 0x%02x",
                          i + 1, c);
            return -1;
        }
    }
    req->user = user;
    return 0;
}

static int validate_webhook(const json_t *root, struct chat_request *req,
                            struct validate_error *err)
{
    const json_t *v = json_object_get(root, REC_WEBHOOK);
    char why[160];
    struct netguard_url u;
    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        validate_fail(err, "invalid_field", "'" REC_WEBHOOK "' must be a string, not %s",
                      validate_type_name(v));
        return -1;
    }
    const char *url = json_string_value(v);
    size_t len = json_string_length(v);
    if (memchr(url, '\0', len) != NULL) {
        validate_fail(err, "invalid_field",
                      "'" REC_WEBHOOK "' must not contain NUL (\\u0000) characters");
        return -1;
    }
    if (netguard_url_parse(url, &u, why, sizeof(why)) != 0) {
        validate_fail(err, "invalid_field",
                      "'" REC_WEBHOOK "' is not a URL chatq calls: %s", why);
        return -1;
    }
    req->webhook = url;
    return 0;
}

static int validate_stream(const json_t *root, struct chat_request *req,
                           struct validate_error *err)
{
    const json_t *v = json_object_get(root, REC_STREAM);
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v)) {
        validate_fail(err, "invalid_field", "'" REC_STREAM "' must be a boolean, not %s",
                      validate_type_name(v));
        return -1;
    }
    req->stream = json_is_true(v);
    return 0;
}

json_t *validate_chat(const char *body, size_t len, const char *default_model,
                      struct chat_request *req, struct validate_error *err)
{
    json_t *root = NULL, *result = NULL;
    json_error_t jerr;

    memset(req, 0, sizeof(*req));
    if (len == 0) {
        validate_fail(err, "invalid_body",
                      "the request body is empty; expected a JSON "
                      "object with at least a 'message' field");
        goto out;
    }
    if (validate_too_deep(body, len)) {
        validate_fail(err, "invalid_body",
                      "the request body nests arrays or objects more than %d levels deep",
                      VALIDATE_DEPTH_MAX);
        goto out;
    }
    /* JSON_ALLOW_NUL so that a "\u0000" reaches the field checks, which name the field;
     * jansson itself still refuses NUL inside object keys. */
    root = json_loadb(body, len,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        validate_fail(err, "invalid_json",
                      "the request body is not valid JSON: %s (line %d, column %d, "
                      "byte %d)",
                      jerr.text, jerr.line, jerr.column, jerr.position);
        goto out;
    }
    if (!json_is_object(root)) {
        validate_fail(err, "invalid_body",
                      "the request body must be a JSON object, not %s",
                      validate_type_name(root));
        goto out;
    }

    const char *key;
    json_t *value;
    json_object_foreach (root, key, value) {
        if (!validate_known(key)) {
            size_t klen = strlen(key);
            validate_fail(err, "unknown_field",
                          "unknown field '%.*s%s'; the supported fields are 'message', "
                          "'model', 'temperature', '" VALIDATE_DEADLINE_FIELD "', "
                          "'" REC_USER "', '" REC_WEBHOOK "' and '" REC_STREAM "'",
                          (int)utf8_cut(key, klen, VALIDATE_NAME_ECHO), key,
                          klen > VALIDATE_NAME_ECHO ? "..." : "");
            goto out;
        }
    }
    if (validate_message(root, req, err) != 0 ||
        validate_model(root, default_model, req, err) != 0 ||
        validate_temperature(root, req, err) != 0 ||
        validate_deadline(root, req, err) != 0 || validate_user(root, req, err) != 0 ||
        validate_webhook(root, req, err) != 0 || validate_stream(root, req, err) != 0)
        goto out;
    result = root;
    root = NULL;

out:
    json_decref(root);
    if (result == NULL)
        memset(req, 0, sizeof(*req));
    return result;
}

int validate_idempotency_key(const char *key, struct validate_error *err)
{
    size_t len = strlen(key);
    if (len == 0) {
        validate_fail(err, "invalid_header",
                      "the " VALIDATE_IDEM_HEADER " header must not be empty");
        return -1;
    }
    if (len > VALIDATE_IDEM_KEY_MAX) {
        validate_fail(err, "invalid_header",
                      "the " VALIDATE_IDEM_HEADER " header must be at most %d characters "
                      "long, not %zu",
                      VALIDATE_IDEM_KEY_MAX, len);
        return -1;
    }
    /* Printable ASCII only: the key goes into a Redis key name and into logs. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c > 0x7e) {
            validate_fail(err, "invalid_header",
                          "the " VALIDATE_IDEM_HEADER " header must be printable ASCII; "
                          "byte %zu is 0x%02x",
                          i + 1, c);
            return -1;
        }
    }
    return 0;
}

int validate_webhook_target(const struct netguard *g, const char *url,
                            struct validate_error *err)
{
    char why[320];
    switch (netguard_check_url(g, url, why, sizeof(why))) {
    case NETGUARD_OK:
        return 0;
    case NETGUARD_BAD_URL:
        validate_fail(err, "invalid_field",
                      "'" REC_WEBHOOK "' is not a URL chatq calls: %s", why);
        return -1;
    case NETGUARD_REFUSED:
        validate_fail(err, "webhook_not_allowed",
                      "'" REC_WEBHOOK "' may not be called: %s (loopback, link-local and "
                      "private addresses are refused)",
                      why);
        return -1;
    case NETGUARD_UNRESOLVED:
        validate_fail(err, "webhook_unresolvable",
                      "'" REC_WEBHOOK "' cannot be checked: %s", why);
        return -1;
    }
    return -1;
}
