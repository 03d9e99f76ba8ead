/* http.c - libcurl easy requests and JSON checks for the tests; see http.h. */
#include "http.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "harness.h"
#include "uuid.h"

static size_t http_collect(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_response *r = arg;
    size_t n = size * nmemb;
    char *nbody = realloc(r->body, r->body_len + n + 1);
    if (nbody == NULL)
        return 0;
    memcpy(nbody + r->body_len, data, n);
    r->body = nbody;
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

/* Keeps the header lines of the last response only: a "100 Continue" or a redirect
 * comes before it, and each starts with its status line. */
static size_t http_collect_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_response *r = arg;
    size_t n = size * nmemb;
    size_t have = r->headers != NULL ? strlen(r->headers) : 0;
    char *nh;

    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
        have = 0;
    nh = realloc(r->headers, have + n + 1);
    if (nh == NULL)
        return 0;
    memcpy(nh + have, data, n);
    nh[have + n] = '\0';
    r->headers = nh;
    return n;
}

/* Sends one request on h (options reset first; its open connections kept). fresh:
 * forbid reusing a connection for it, and keeping it open after. extra: more
 * "Name: value" header lines (NULL-terminated, may be NULL). */
static int http_perform(CURL *h, int fresh, const char *method, const char *url,
                        const char *const *extra, const char *body, size_t body_len,
                        int timeout_ms, struct http_response *out)
{
    struct curl_slist *headers = NULL;
    char *ct = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    out->body = calloc(1, 1);
    if (h == NULL || out->body == NULL) {
        snprintf(out->error, sizeof(out->error), "out of memory");
        goto out;
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, http_collect_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
    /* A fresh connection per request: the servers under test must not be
     * helped (or hurt) by a connection the previous request left open. */
    if (fresh)
        curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    if (body != NULL)
        headers = curl_slist_append(headers, "Content-Type: application/json");
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        headers = curl_slist_append(headers, extra[i]);
    if (headers != NULL)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    long long t0 = harness_now_ms();
    CURLcode cc = curl_easy_perform(h);
    out->elapsed_ms = harness_now_ms() - t0;
    if (cc != CURLE_OK) {
        snprintf(out->error, sizeof(out->error), "%s %s: %s (after %lld ms)", method, url,
                 curl_easy_strerror(cc), out->elapsed_ms);
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    if (ct != NULL)
        snprintf(out->content_type, sizeof(out->content_type), "%s", ct);
    rc = 0;
out:
    curl_slist_free_all(headers);
    return rc;
}

int http_request(const char *method, const char *url, const char *body, size_t body_len,
                 int timeout_ms, struct http_response *out)
{
    return http_request_with(method, url, NULL, body, body_len, timeout_ms, out);
}

int http_request_with(const char *method, const char *url, const char *const *headers,
                      const char *body, size_t body_len, int timeout_ms,
                      struct http_response *out)
{
    CURL *h = curl_easy_init();
    int rc = http_perform(h, 1, method, url, headers, body, body_len, timeout_ms, out);
    if (h != NULL)
        curl_easy_cleanup(h);
    return rc;
}

struct http_client {
    CURL *h;
};

struct http_client *http_client_new(void)
{
    struct http_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->h = curl_easy_init();
    if (c->h == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void http_client_free(struct http_client *c)
{
    if (c == NULL)
        return;
    curl_easy_cleanup(c->h);
    free(c);
}

int http_client_request(struct http_client *c, const char *method, const char *url,
                        const char *body, size_t body_len, int timeout_ms,
                        struct http_response *out)
{
    return http_perform(c->h, 0, method, url, NULL, body, body_len, timeout_ms, out);
}

int http_client_request_with(struct http_client *c, const char *method, const char *url,
                             const char *const *headers, const char *body,
                             size_t body_len, int timeout_ms, struct http_response *out)
{
    return http_perform(c->h, 0, method, url, headers, body, body_len, timeout_ms, out);
}

void http_response_free(struct http_response *r)
{
    if (r == NULL)
        return;
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
    free(r->headers);
    r->headers = NULL;
}

int http_header(const struct http_response *r, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);

    if (len > 0)
        out[0] = '\0';
    for (const char *line = r->headers; line != NULL && *line != '\0';) {
        const char *end = strstr(line, "\r\n");
        size_t ll = end != NULL ? (size_t)(end - line) : strlen(line);

        if (ll > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            size_t vl = ll - n - 1;

            while (vl > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vl--;
            }
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (len > 0)
                snprintf(out, len, "%.*s", (int)vl, v);
            return 1;
        }
        line = end != NULL ? end + 2 : line + ll;
    }
    return 0;
}

json_t *http_json(const struct http_response *r)
{
    json_error_t err;
    json_t *j = json_loadb(r->body, r->body_len, 0, &err);
    if (j == NULL)
        fprintf(stderr, "integration: response (HTTP %ld) is not JSON (%s): %.300s\n",
                r->status, err.text, r->body);
    return j;
}

int http_is_json(const struct http_response *r)
{
    const char *want = "application/json";
    size_t n = strlen(want);
    return strncasecmp(r->content_type, want, n) == 0 &&
           (r->content_type[n] == '\0' || r->content_type[n] == ';');
}

const char *http_json_str(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

const char *http_error_code(const json_t *body)
{
    return http_json_str(json_object_get(body, "error"), "code");
}

const char *http_error_message(const json_t *body)
{
    return http_json_str(json_object_get(body, "error"), "message");
}

static int http_match(const char *pattern, const char *s)
{
    regex_t re;
    if (s == NULL || regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
        return 0;
    int ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

int http_is_iso8601_utc(const char *s)
{
    return http_match("^[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]"
                      "(\\.[0-9]{1,9})?Z$",
                      s);
}

int http_is_uuid_v4(const char *s)
{
    return s != NULL && uuid_valid(s) &&
           http_match(
               "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-"
               "[0-9a-fA-F]{12}$",
               s);
}
