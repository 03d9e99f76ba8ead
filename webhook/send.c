/* send.c - see send.h. */
#include "send.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>

#include "clock.h"
#include "uuid.h"
#include "version.h"
#include "webhook.h"

int send_init(struct send *s, const struct sign *sign, const struct netguard *guard,
              long timeout_ms)
{
    memset(s, 0, sizeof(*s));
    s->sign = sign;
    s->guard = guard;
    s->timeout_ms = timeout_ms;
    s->multi = curl_multi_init();
    return s->multi != NULL ? 0 : -1;
}

static void send_release(struct send *s, struct delivery *d)
{
    if (d->prev != NULL)
        d->prev->next = d->next;
    else
        s->flight = d->next;
    if (d->next != NULL)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
    curl_multi_remove_handle(s->multi, d->easy);
    curl_easy_cleanup(d->easy);
    curl_slist_free_all(d->headers);
    free(d->body);
    d->easy = NULL;
    d->headers = NULL;
    d->body = NULL;
    s->inflight--;
}

void send_free(struct send *s, send_done_fn *done, void *arg)
{
    if (s->multi == NULL)
        return;
    while (s->flight != NULL) {
        struct delivery *d = s->flight;
        send_release(s, d);
        d->aborted = 1;
        done(d, SEND_FAILED, "aborted: the sender is stopping", arg);
    }
    curl_multi_cleanup(s->multi);
    s->multi = NULL;
}

char *send_body(const struct delivery *d)
{
    json_t *o;
    if (strncmp(d->type, WEBHOOK_RESPONSE_PREFIX, strlen(WEBHOOK_RESPONSE_PREFIX)) == 0) {
        char hex[UUID_HEX_LEN + 1], evt[UUID_HEX_LEN + 8], resp[UUID_HEX_LEN + 8];
        long long ms = 0;
        uuid_hex(d->trace, hex);
        snprintf(evt, sizeof(evt), "evt_%s", hex);
        snprintf(resp, sizeof(resp), "resp_%s", hex);
        if (clock_iso8601_parse(d->timestamp, &ms) != 0)
            ms = 0;
        o = json_pack("{s:s, s:s, s:s, s:I, s:{s:s}}", "object", "event", "id", evt,
                      "type", d->type, "created_at", (json_int_t)(ms / 1000), "data",
                      "id", resp);
    } else {
        o = json_pack("{s:s, s:s, s:s, s:{s:s}}", "type", d->type, "id", d->event,
                      "timestamp", d->timestamp, "data", "traceId", d->trace);
    }
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return body;
}

/* libcurl is about to connect to address: refuse it unless allowed. The address
 * curl connects to is the only one that counts: the api's check resolved the
 * name earlier, perhaps to something else. */
static curl_socket_t send_open_socket(void *clientp, curlsocktype purpose,
                                      struct curl_sockaddr *address)
{
    struct delivery *d = clientp;
    (void)purpose;
    if (!d->host_listed &&
        !netguard_addr_allowed(d->guard, &address->addr, d->refused, sizeof(d->refused)))
        return CURL_SOCKET_BAD;
    d->opened++;
    return socket(address->family, address->socktype, address->protocol);
}

/* The body of an answer is not kept: only the status counts. */
static size_t send_discard(char *ptr, size_t size, size_t n, void *arg)
{
    (void)ptr;
    (void)arg;
    return size * n;
}

int send_start(struct send *s, struct delivery *d, char *why, size_t whylen)
{
    char h_id[128], h_ts[64], h_sig[32 + SIGN_HEADER_MAX];
    char sig[SIGN_HEADER_MAX];
    long long now = (long long)time(NULL);
    struct curl_slist *hl = NULL, *t;
    CURL *e = NULL;
    char *body = send_body(d);

    if (body == NULL) {
        snprintf(why, whylen, "out of memory building the event");
        goto fail;
    }
    if (sign_message(s->sign, d->event, now, body, strlen(body), sig, sizeof(sig)) != 0) {
        snprintf(why, whylen, "signing failed");
        goto fail;
    }
    snprintf(h_id, sizeof(h_id), "webhook-id: %s", d->event);
    snprintf(h_ts, sizeof(h_ts), "webhook-timestamp: %lld", now);
    snprintf(h_sig, sizeof(h_sig), "webhook-signature: %s", sig);
    const char *lines[] = {"Content-Type: application/json",
                           h_id,
                           h_ts,
                           h_sig,
                           "User-Agent: chatq-webhook/" CHATQ_VERSION,
                           "Expect:"}; /* no 100-continue round trip */
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        t = curl_slist_append(hl, lines[i]);
        if (t == NULL) {
            snprintf(why, whylen, "out of memory building the headers");
            goto fail;
        }
        hl = t;
    }
    e = curl_easy_init();
    if (e == NULL) {
        snprintf(why, whylen, "curl_easy_init failed");
        goto fail;
    }
    d->refused[0] = '\0';
    d->opened = 0;
    d->errbuf[0] = '\0';
    d->guard = s->guard;
    curl_easy_setopt(e, CURLOPT_URL, d->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* not http_proxy from the environment */
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, send_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, d);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, send_discard);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, d->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, d);
    if (curl_multi_add_handle(s->multi, e) != CURLM_OK) {
        snprintf(why, whylen, "curl_multi_add_handle failed");
        goto fail;
    }
    d->easy = e;
    d->headers = hl;
    d->body = body;
    d->prev = NULL;
    d->next = s->flight;
    if (s->flight != NULL)
        s->flight->prev = d;
    s->flight = d;
    s->inflight++;
    return 0;
fail:
    curl_easy_cleanup(e);
    curl_slist_free_all(hl);
    free(body);
    return -1;
}

void send_run(struct send *s, int wait_ms, send_done_fn *done, void *arg)
{
    int running = 0, left = 0;
    curl_multi_perform(s->multi, &running);
    if (wait_ms > 0 && s->inflight > 0) {
        curl_multi_poll(s->multi, NULL, 0, wait_ms, NULL);
        curl_multi_perform(s->multi, &running);
    }
    CURLMsg *m;
    while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct delivery *d = NULL;
        char why[CURL_ERROR_SIZE + 64];
        enum send_result r;
        CURLcode cc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&d);
        if (cc == CURLE_OK) {
            long code = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            snprintf(why, sizeof(why), "HTTP %ld", code);
            r = code >= 200 && code < 300 ? SEND_DELIVERED
                : code == 410             ? SEND_GONE
                                          : SEND_FAILED;
        } else if (d->refused[0] != '\0' && d->opened == 0) {
            /* A name with an allowed and a refused address ("localhost", which
             * curl resolves to 127.0.0.1 and ::1 itself) fails like any other
             * connection when the allowed one fails: that is retried. */
            snprintf(why, sizeof(why), "refused at delivery: %s", d->refused);
            r = SEND_REFUSED;
        } else {
            snprintf(why, sizeof(why), "%s",
                     d->errbuf[0] ? d->errbuf : curl_easy_strerror(cc));
            r = SEND_FAILED;
        }
        send_release(s, d);
        done(d, r, why, arg);
    }
}
