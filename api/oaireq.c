/* oaireq.c - the OpenAI front's request rules (see oaireq.h). */
#include "oaireq.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "validate.h"

/* A field name echoed back is cut to this many bytes. */
#define OAIREQ_NAME_ECHO 64

#define OAIREQ_INVALID "invalid_request_error"

static void oaireq_fail(struct oaireq_error *err, const char *param, const char *code,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void oaireq_fail(struct oaireq_error *err, const char *param, const char *code,
                        const char *fmt, ...)
{
    va_list ap;
    err->status = 400;
    err->type = OAIREQ_INVALID;
    err->code = code;
    snprintf(
        err->param, sizeof(err->param), "%.*s",
        (int)utf8_cut(param ? param : "", strlen(param ? param : ""), OAIREQ_NAME_ECHO),
        param ? param : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

void oaireq_clear(struct oaireq *o)
{
    free(o->messages);
    free(o->params);
    free(o->metadata);
    memset(o, 0, sizeof(*o));
}

/* The field, or NULL when absent or null. */
static json_t *oaireq_get(const json_t *root, const char *name)
{
    json_t *v = json_object_get(root, name);
    return json_is_null(v) ? NULL : v;
}

/* 1 if s (len bytes, valid UTF-8: jansson checked it) has no NUL, which the other
 * hops, handling C strings, would cut at. */
static int oaireq_text_ok(const char *s, size_t len)
{
    return memchr(s, '\0', len) == NULL;
}

/* Characters (code points) of valid UTF-8. */
static size_t oaireq_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

static int oaireq_number(const json_t *root, const char *name, double min, double max,
                         double *out, int *has, struct oaireq_error *err)
{
    json_t *v = oaireq_get(root, name);
    *has = 0;
    if (v == NULL)
        return 0;
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    if (!json_is_number(v) || !isfinite(d) || d < min || d > max) {
        oaireq_fail(err, name, "invalid_value", "'%s' must be a number between %g and %g",
                    name, min, max);
        return -1;
    }
    *out = d == 0.0 ? 0.0 : d; /* -0 would travel as "-0" */
    *has = 1;
    return 0;
}

static int oaireq_tokens(const json_t *root, const char *name, long long *out,
                         struct oaireq_error *err)
{
    json_t *v = oaireq_get(root, name);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        oaireq_fail(err, name, "invalid_value",
                    "'%s' must be a whole number of at least 1", name);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int oaireq_model(const json_t *root, struct chat_request *req,
                        struct oaireq_error *err)
{
    json_t *v = oaireq_get(root, "model");
    if (v == NULL) {
        oaireq_fail(err, "model", "missing_required_parameter",
                    "you must provide a model parameter");
        return -1;
    }
    size_t len = json_is_string(v) ? json_string_length(v) : 0;
    if (!json_is_string(v) || len == 0 || len > VALIDATE_MODEL_MAX ||
        memchr(json_string_value(v), '\0', len) != NULL) {
        oaireq_fail(err, "model", "invalid_value",
                    "'model' must be a string of 1 to %d bytes", VALIDATE_MODEL_MAX);
        return -1;
    }
    req->model = json_string_value(v);
    return 0;
}

static int oaireq_user(const json_t *root, struct chat_request *req,
                       struct oaireq_error *err)
{
    json_t *v = oaireq_get(root, "user");
    if (v == NULL)
        return 0;
    size_t len = json_is_string(v) ? json_string_length(v) : 0;
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    int ok = len > 0 && len <= VALIDATE_USER_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char)s[i] >= 0x21 && (unsigned char)s[i] <= 0x7e;
    if (!ok) {
        oaireq_fail(err, "user", "invalid_value",
                    "'user' must be 1 to %d bytes of printable ASCII without spaces",
                    VALIDATE_USER_MAX);
        return -1;
    }
    req->user = s;
    return 0;
}

/* The text of a message's content: a string, or an array of parts {type, text}
 * whose type is one of types (NULL-terminated), joined with newlines. Returns a new
 * string (caller frees), or NULL with err filled. param names the content. */
static char *oaireq_content(const json_t *content, const char *const *types,
                            const char *param, struct oaireq_error *err)
{
    if (json_is_string(content)) {
        if (!oaireq_text_ok(json_string_value(content), json_string_length(content))) {
            oaireq_fail(err, param, "invalid_value",
                        "'%s' must be valid UTF-8 without NUL characters", param);
            return NULL;
        }
        return strdup(json_string_value(content));
    }
    if (!json_is_array(content) || json_array_size(content) == 0) {
        oaireq_fail(err, param, "invalid_type",
                    "'%s' must be a string or a non-empty array of text parts", param);
        return NULL;
    }
    size_t total = 0, i;
    json_t *part;
    json_array_foreach (content, i, part) {
        json_t *type = json_object_get(part, "type");
        json_t *text = json_object_get(part, "text");
        int known = 0;
        for (size_t k = 0; json_is_string(type) && types[k] != NULL; k++)
            known |= strcmp(json_string_value(type), types[k]) == 0;
        if (!json_is_object(part) || !known || !json_is_string(text) ||
            json_object_size(part) != 2) {
            oaireq_fail(err, param, "unsupported_value",
                        "'%s[%zu]' must be {\"type\": \"%s\", \"text\": string}: chatq "
                        "supports text parts only (no images, files or audio)",
                        param, i, types[0]);
            return NULL;
        }
        if (!oaireq_text_ok(json_string_value(text), json_string_length(text))) {
            oaireq_fail(err, param, "invalid_value",
                        "'%s[%zu].text' must be valid UTF-8 without NUL characters",
                        param, i);
            return NULL;
        }
        total += json_string_length(text) + 1;
    }
    char *out = malloc(total + 1), *p = out;
    if (out == NULL) {
        oaireq_fail(err, param, NULL, "out of memory");
        err->status = 500;
        err->type = "server_error";
        return NULL;
    }
    json_array_foreach (content, i, part) {
        json_t *text = json_object_get(part, "text");
        if (i > 0)
            *p++ = '\n';
        memcpy(p, json_string_value(text), json_string_length(text));
        p += json_string_length(text);
    }
    *p = '\0';
    return out;
}

/* Appends {"role": role, "content": text} (text: steals) to out. */
static int oaireq_push(json_t *out, const char *role, char *text,
                       struct oaireq_error *err)
{
    json_t *content = text != NULL ? json_string(text) : NULL;
    free(text);
    if (content == NULL ||
        json_array_append_new(
            out, json_pack("{s:s, s:o}", "role", role, "content", content)) != 0) {
        oaireq_fail(err, NULL, NULL, "out of memory");
        err->status = 500;
        err->type = "server_error";
        return -1;
    }
    return 0;
}

/* One message item of input[] or messages[] (param names it) appended to out. */
static int oaireq_item(const json_t *item, const char *param, int responses, json_t *out,
                       struct oaireq_error *err)
{
    static const char *const input_types[] = {"input_text", "output_text", NULL};
    static const char *const chat_types[] = {"text", NULL};
    char cparam[OAIREQ_NAME_ECHO + 16];
    const char *key;
    json_t *value;

    if (!json_is_object(item)) {
        oaireq_fail(err, param, "invalid_type", "'%s' must be a message object", param);
        return -1;
    }
    json_object_foreach ((json_t *)item, key, value) {
        int known = strcmp(key, "role") == 0 || strcmp(key, "content") == 0 ||
                    (responses && strcmp(key, "type") == 0);
        if (!known && !json_is_null(value)) {
            oaireq_fail(err, param, "unsupported_parameter",
                        "'%s.%.*s' is not supported by chatq: only role and content "
                        "(no tool calls, names or audio)",
                        param, (int)utf8_cut(key, strlen(key), OAIREQ_NAME_ECHO), key);
            return -1;
        }
    }
    json_t *type = oaireq_get(item, "type");
    if (type != NULL &&
        (!json_is_string(type) || strcmp(json_string_value(type), "message") != 0)) {
        oaireq_fail(err, param, "unsupported_value",
                    "'%s.type' must be \"message\": chatq supports message items only "
                    "(no function calls, reasoning or item references)",
                    param);
        return -1;
    }
    json_t *role = oaireq_get(item, "role");
    const char *r = json_is_string(role) ? json_string_value(role) : "";
    if (strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0 &&
        strcmp(r, "system") != 0 && strcmp(r, "developer") != 0) {
        oaireq_fail(err, param, "invalid_value",
                    "'%s.role' must be one of user, assistant, system, developer", param);
        return -1;
    }
    json_t *content = oaireq_get(item, "content");
    snprintf(cparam, sizeof(cparam), "%s.content", param);
    if (content == NULL) {
        oaireq_fail(err, cparam, "missing_required_parameter", "'%s' is required",
                    cparam);
        return -1;
    }
    char *text =
        oaireq_content(content, responses ? input_types : chat_types, cparam, err);
    if (text == NULL)
        return -1;
    return oaireq_push(out, strcmp(r, "developer") == 0 ? "system" : r, text, err);
}

/* The conversation's items (array under name) appended to out. */
static int oaireq_items(const json_t *items, const char *name, int responses, json_t *out,
                        struct oaireq_error *err)
{
    char param[OAIREQ_NAME_ECHO];
    size_t i;
    json_t *item;
    if (!json_is_array(items) || json_array_size(items) == 0) {
        oaireq_fail(err, name, "invalid_type", "'%s' must be a non-empty array%s", name,
                    responses ? " of message items, or a string" : " of messages");
        return -1;
    }
    json_array_foreach (items, i, item) {
        snprintf(param, sizeof(param), "%s[%zu]", name, i);
        if (oaireq_item(item, param, responses, out, err) != 0)
            return -1;
    }
    return 0;
}

/* Moves the built conversation into o. */
static int oaireq_keep_messages(json_t *messages, struct oaireq *o,
                                struct oaireq_error *err)
{
    o->messages = json_dumps(messages, JSON_COMPACT);
    if (o->messages == NULL) {
        oaireq_fail(err, NULL, NULL, "out of memory");
        err->status = 500;
        err->type = "server_error";
        return -1;
    }
    o->req.messages = o->messages;
    o->req.messages_len = strlen(o->messages);
    return 0;
}

static int oaireq_bool(const json_t *root, const char *name, int *out,
                       struct oaireq_error *err)
{
    json_t *v = oaireq_get(root, name);
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v)) {
        oaireq_fail(err, name, "invalid_type", "'%s' must be a boolean", name);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int oaireq_metadata(const json_t *root, struct oaireq *o, struct oaireq_error *err)
{
    json_t *v = oaireq_get(root, "metadata");
    const char *key;
    json_t *value;
    if (v == NULL)
        return 0;
    if (!json_is_object(v) || json_object_size(v) > OAIREQ_METADATA_PAIRS) {
        oaireq_fail(err, "metadata", "invalid_value",
                    "'metadata' must be an object of at most %d string pairs",
                    OAIREQ_METADATA_PAIRS);
        return -1;
    }
    json_object_foreach (v, key, value) {
        if (oaireq_chars(key, strlen(key)) > OAIREQ_METADATA_KEY_MAX ||
            !json_is_string(value) ||
            oaireq_chars(json_string_value(value), json_string_length(value)) >
                OAIREQ_METADATA_VALUE_MAX ||
            !oaireq_text_ok(json_string_value(value), json_string_length(value))) {
            oaireq_fail(err, "metadata", "invalid_value",
                        "'metadata' keys must be at most %d characters and its values "
                        "strings of at most %d",
                        OAIREQ_METADATA_KEY_MAX, OAIREQ_METADATA_VALUE_MAX);
            return -1;
        }
    }
    if (json_object_size(v) == 0)
        return 0;
    o->metadata = json_dumps(v, JSON_COMPACT);
    if (o->metadata == NULL) {
        oaireq_fail(err, NULL, NULL, "out of memory");
        err->status = 500;
        err->type = "server_error";
        return -1;
    }
    o->req.metadata = o->metadata;
    return 0;
}

/* Refuses any field of root not in known (NULL-terminated) unless null. */
static int oaireq_only(const json_t *root, const char *const *known,
                       struct oaireq_error *err)
{
    const char *key;
    json_t *value;
    json_object_foreach ((json_t *)root, key, value) {
        int ok = json_is_null(value);
        for (size_t i = 0; !ok && known[i] != NULL; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok) {
            size_t n = utf8_cut(key, strlen(key), OAIREQ_NAME_ECHO);
            oaireq_fail(err, key, "unsupported_parameter",
                        "unsupported parameter '%.*s': chatq does not pass it on, and "
                        "does not drop parameters silently",
                        (int)n, key);
            return -1;
        }
    }
    return 0;
}

/* The body as a JSON object, or NULL with err filled. */
static json_t *oaireq_load(const char *body, size_t len, struct oaireq_error *err)
{
    json_error_t jerr;
    if (len == 0) {
        oaireq_fail(err, NULL, NULL, "the request body is empty; expected a JSON object");
        return NULL;
    }
    if (validate_too_deep(body, len)) {
        oaireq_fail(err, NULL, NULL,
                    "the request body nests arrays or objects more than %d levels deep",
                    VALIDATE_DEPTH_MAX);
        return NULL;
    }
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        oaireq_fail(err, NULL, NULL,
                    "We could not parse the JSON body of your request: %s (line %d, "
                    "column %d)",
                    jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        oaireq_fail(err, NULL, NULL, "the request body must be a JSON object");
        json_decref(root);
        return NULL;
    }
    return root;
}

json_t *oaireq_responses(const char *body, size_t len, struct oaireq *o,
                         struct oaireq_error *err)
{
    static const char *const known[] = {"model",       "input",      "instructions",
                                        "temperature", "top_p",      "max_output_tokens",
                                        "metadata",    "background", "store",
                                        "user",        "stream",     NULL};
    json_t *messages = NULL, *root;
    int stream = 0, store = 1;

    memset(o, 0, sizeof(*o));
    o->req.front = REC_FRONT_RESPONSES;
    o->req.temperature = OAIREQ_DEFAULT_TEMPERATURE;
    root = oaireq_load(body, len, err);
    if (root == NULL)
        return NULL;
    if (oaireq_only(root, known, err) != 0 || oaireq_model(root, &o->req, err) != 0 ||
        oaireq_bool(root, "stream", &stream, err) != 0 ||
        oaireq_bool(root, "background", &o->req.background, err) != 0 ||
        oaireq_bool(root, "store", &store, err) != 0)
        goto fail;
    if (stream) {
        oaireq_fail(err, "stream", "unsupported_value",
                    "'stream': true is not supported by chatq yet; poll "
                    "GET /v1/responses/{id} or wait for the whole answer");
        goto fail;
    }
    if (!store && o->req.background) {
        oaireq_fail(err, "store", "invalid_value",
                    "background responses must be stored: 'store' cannot be false");
        goto fail;
    }
    int has_temp;
    if (oaireq_number(root, "temperature", TEMPERATURE_MIN, TEMPERATURE_MAX,
                      &o->req.temperature, &has_temp, err) != 0 ||
        oaireq_number(root, "top_p", 0, 1, &o->req.top_p, &o->req.has_top_p, err) != 0 ||
        oaireq_tokens(root, "max_output_tokens", &o->req.max_tokens, err) != 0 ||
        oaireq_metadata(root, o, err) != 0 || oaireq_user(root, &o->req, err) != 0)
        goto fail;
    if (!has_temp)
        o->req.temperature = OAIREQ_DEFAULT_TEMPERATURE;

    messages = json_array();
    if (messages == NULL) {
        oaireq_fail(err, NULL, NULL, "out of memory");
        err->status = 500;
        err->type = "server_error";
        goto fail;
    }
    json_t *instructions = oaireq_get(root, "instructions");
    if (instructions != NULL) {
        if (!json_is_string(instructions)) {
            oaireq_fail(err, "instructions", "invalid_type",
                        "'instructions' must be a string");
            goto fail;
        }
        char *text = oaireq_content(instructions, NULL, "instructions", err);
        if (text == NULL || oaireq_push(messages, "system", text, err) != 0)
            goto fail;
        o->req.instructions = json_string_value(instructions);
    }
    json_t *input = oaireq_get(root, "input");
    if (input == NULL) {
        oaireq_fail(err, "input", "missing_required_parameter",
                    "'input' is required: a string or an array of message items");
        goto fail;
    }
    if (json_is_string(input)) {
        if (json_string_length(input) == 0) {
            oaireq_fail(err, "input", "invalid_value", "'input' must not be empty");
            goto fail;
        }
        char *text = oaireq_content(input, NULL, "input", err);
        if (text == NULL || oaireq_push(messages, "user", text, err) != 0)
            goto fail;
    } else if (oaireq_items(input, "input", 1, messages, err) != 0) {
        goto fail;
    }
    if (oaireq_keep_messages(messages, o, err) != 0)
        goto fail;
    json_decref(messages);
    return root;

fail:
    json_decref(messages);
    json_decref(root);
    oaireq_clear(o);
    return NULL;
}

/* "stop", "seed" and "response_format", checked, into o->params. */
static int oaireq_passthrough(const json_t *root, struct oaireq *o,
                              struct oaireq_error *err)
{
    json_t *params = json_object(), *v;
    int rc = -1;
    if (params == NULL)
        goto out;
    v = oaireq_get(root, "stop");
    if (v != NULL) {
        size_t i;
        json_t *s;
        int ok = json_is_string(v) ||
                 (json_is_array(v) && json_array_size(v) >= 1 && json_array_size(v) <= 4);
        if (json_is_array(v))
            json_array_foreach (v, i, s)
                ok = ok && json_is_string(s);
        if (!ok) {
            oaireq_fail(err, "stop", "invalid_type",
                        "'stop' must be a string or an array of 1 to 4 strings");
            goto out;
        }
        json_object_set(params, "stop", v);
    }
    v = oaireq_get(root, "seed");
    if (v != NULL) {
        if (!json_is_integer(v)) {
            oaireq_fail(err, "seed", "invalid_type", "'seed' must be an integer");
            goto out;
        }
        json_object_set(params, "seed", v);
    }
    v = oaireq_get(root, "response_format");
    if (v != NULL) {
        json_t *type = json_object_get(v, "type");
        const char *t = json_is_string(type) ? json_string_value(type) : "";
        if (!json_is_object(v) ||
            (strcmp(t, "text") != 0 && strcmp(t, "json_object") != 0 &&
             strcmp(t, "json_schema") != 0)) {
            oaireq_fail(
                err, "response_format", "invalid_value",
                "'response_format.type' must be text, json_object or json_schema");
            goto out;
        }
        json_object_set(params, "response_format", v);
    }
    rc = 0;
    if (json_object_size(params) == 0)
        goto out;
    o->params = json_dumps(params, JSON_COMPACT);
    if (o->params == NULL) {
        rc = -1;
        oaireq_fail(err, NULL, NULL, "out of memory");
        err->status = 500;
        err->type = "server_error";
        goto out;
    }
    o->req.params = o->params;
    o->req.params_len = strlen(o->params);
out:
    json_decref(params);
    return rc;
}

json_t *oaireq_chat(const char *body, size_t len, struct oaireq *o,
                    struct oaireq_error *err)
{
    static const char *const known[] = {"model", "messages",   "temperature",
                                        "top_p", "max_tokens", "max_completion_tokens",
                                        "stop",  "seed",       "user",
                                        "n",     "stream",     "response_format",
                                        NULL};
    json_t *messages = NULL, *root;
    int stream = 0, has_temp;

    memset(o, 0, sizeof(*o));
    o->req.front = REC_FRONT_CHAT;
    root = oaireq_load(body, len, err);
    if (root == NULL)
        return NULL;
    if (oaireq_only(root, known, err) != 0 || oaireq_model(root, &o->req, err) != 0 ||
        oaireq_bool(root, "stream", &stream, err) != 0)
        goto fail;
    if (stream) {
        oaireq_fail(err, "stream", "unsupported_value",
                    "'stream': true is not supported by chatq yet");
        goto fail;
    }
    json_t *n = oaireq_get(root, "n");
    if (n != NULL && (!json_is_integer(n) || json_integer_value(n) != 1)) {
        oaireq_fail(err, "n", "unsupported_value", "chatq supports only 'n': 1");
        goto fail;
    }
    if (oaireq_get(root, "max_tokens") != NULL &&
        oaireq_get(root, "max_completion_tokens") != NULL) {
        oaireq_fail(err, "max_tokens", "invalid_value",
                    "give 'max_tokens' or 'max_completion_tokens', not both");
        goto fail;
    }
    if (oaireq_number(root, "temperature", TEMPERATURE_MIN, TEMPERATURE_MAX,
                      &o->req.temperature, &has_temp, err) != 0 ||
        oaireq_number(root, "top_p", 0, 1, &o->req.top_p, &o->req.has_top_p, err) != 0 ||
        oaireq_tokens(root, "max_tokens", &o->req.max_tokens, err) != 0 ||
        oaireq_tokens(root, "max_completion_tokens", &o->req.max_tokens, err) != 0 ||
        oaireq_user(root, &o->req, err) != 0 || oaireq_passthrough(root, o, err) != 0)
        goto fail;
    if (!has_temp)
        o->req.temperature = OAIREQ_DEFAULT_TEMPERATURE;
    json_t *items = oaireq_get(root, "messages");
    if (items == NULL) {
        oaireq_fail(err, "messages", "missing_required_parameter",
                    "'messages' is required");
        goto fail;
    }
    messages = json_array();
    if (messages == NULL) {
        oaireq_fail(err, NULL, NULL, "out of memory");
        err->status = 500;
        err->type = "server_error";
        goto fail;
    }
    if (oaireq_items(items, "messages", 0, messages, err) != 0 ||
        oaireq_keep_messages(messages, o, err) != 0)
        goto fail;
    json_decref(messages);
    return root;

fail:
    json_decref(messages);
    json_decref(root);
    oaireq_clear(o);
    return NULL;
}
