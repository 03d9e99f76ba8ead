/* http.h - a small HTTP client over libcurl's easy API, plus the JSON reading
 * the tests do on what comes back. */
#ifndef CHATQ_TEST_HTTP_H
#define CHATQ_TEST_HTTP_H

#include <stddef.h>

#include <jansson.h>

struct http_response {
    long status; /* 0 when no response came */
    char *body;  /* NUL-terminated; owned, freed by http_response_free */
    size_t body_len;
    char content_type[128]; /* "" when the server sent none */
    long long elapsed_ms;
    char error[256]; /* why no response came, when http_request returns -1 */
    char *headers;   /* the final response's header lines, "Name: value\r\n"...;
                        owned, freed by http_response_free; may be NULL */
};

/* Sends method url with body (may be NULL; sent as application/json) and waits
 * up to timeout_ms. Returns 0 when a response came (any status), or -1 with
 * the reason in out->error; out is filled either way and must be freed. */
int http_request(const char *method, const char *url, const char *body, size_t body_len,
                 int timeout_ms, struct http_response *out);

/* The same with extra header lines ("Name: value", NULL-terminated, may be NULL;
 * "Name;" sends the header with an empty value, as curl spells it). */
int http_request_with(const char *method, const char *url, const char *const *headers,
                      const char *body, size_t body_len, int timeout_ms,
                      struct http_response *out);

void http_response_free(struct http_response *r);

/* Copies the value of response header name (case-insensitive, the first one)
 * into out. Returns 1 if the response had it, 0 if not. */
int http_header(const struct http_response *r, const char *name, char *out, size_t len);

/* A client that keeps its connection open between requests (HTTP keep-alive),
 * for tests that send thousands of requests: a fresh connection per request
 * would fill the ephemeral port range with TIME_WAIT sockets. One per thread
 * (libcurl handles are not thread-safe). New, or NULL; free with
 * http_client_free (NULL is fine). */
struct http_client;
struct http_client *http_client_new(void);
void http_client_free(struct http_client *c);

/* Like http_request, on c's connection (opened again if the server closed it). */
int http_client_request(struct http_client *c, const char *method, const char *url,
                        const char *body, size_t body_len, int timeout_ms,
                        struct http_response *out);

/* The same with extra header lines, as http_request_with. */
int http_client_request_with(struct http_client *c, const char *method, const char *url,
                             const char *const *headers, const char *body,
                             size_t body_len, int timeout_ms, struct http_response *out);

/* The body parsed as JSON: new (caller decrefs), or NULL with the reason
 * printed. */
json_t *http_json(const struct http_response *r);

/* 1 if the Content-Type is application/json (parameters allowed). */
int http_is_json(const struct http_response *r);

/* Borrowed string member key of obj, or NULL if absent or not a string. */
const char *http_json_str(const json_t *obj, const char *key);

/* Borrowed "error.code" / "error.message" of an error body, or NULL. */
const char *http_error_code(const json_t *body);
const char *http_error_message(const json_t *body);

/* 1 if s is an ISO-8601 UTC timestamp ("2025-08-19T17:45:00.123Z"). */
int http_is_iso8601_utc(const char *s);

/* 1 if s is a version-4 UUID. */
int http_is_uuid_v4(const char *s);

#endif
