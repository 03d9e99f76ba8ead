/* send.h - the HTTP side of the sender: signed POSTs of webhook events, many at
 * once on one curl multi handle.
 *
 * Each delivery is checked once more where it matters: libcurl's open-socket
 * callback sees the address it is about to connect to and refuses it unless the
 * netguard allows it, so DNS that changed since the api checked the URL (DNS
 * rebinding) cannot point a delivery at loopback or a private network. Proxies
 * from the environment are ignored (the check must judge where the packets go)
 * and redirects are not followed (a 3xx is a failed attempt). */
#ifndef CHATQ_WEBHOOK_SEND_H
#define CHATQ_WEBHOOK_SEND_H

#include <curl/curl.h>

#include "netguard.h"
#include "sign.h"

/* One delivery attempt of one event: what the queue read, and the transfer. */
struct delivery {
    char id[64]; /* the {prefix}webhooks entry id */
    char trace[64];
    char url[NETGUARD_URL_MAX + 1];
    char host[NETGUARD_HOST_MAX + 1]; /* for logs: the URL may carry a token */
    char type[64];
    char event[80]; /* the webhook-id */
    char timestamp[40];
    long long attempts; /* failed attempts before this one */
    int host_listed;    /* the host is named in WEBHOOK_ALLOW */
    int aborted;        /* set by send_free: the attempt was cut off, not failed */

    const struct netguard *guard; /* borrowed, for the open-socket callback */
    CURL *easy;                   /* owned while in flight */
    struct curl_slist *headers;   /* owned while in flight */
    char *body;                   /* owned while in flight */
    char refused[200];            /* why an address was refused, "" if none */
    int opened;                   /* connections opened to allowed addresses */
    char errbuf[CURL_ERROR_SIZE];
    struct delivery *prev, *next; /* send's list while in flight, else the caller's */
};

enum send_result {
    SEND_DELIVERED, /* 2xx */
    SEND_GONE,      /* 410: the receiver wants no more of these */
    SEND_FAILED,    /* another status, a timeout, a connection error: retry */
    SEND_REFUSED,   /* every address tried was refused by the netguard: no retry */
};

struct send {
    CURLM *multi;
    const struct sign *sign;      /* borrowed */
    const struct netguard *guard; /* borrowed */
    long timeout_ms;
    int inflight;
    struct delivery *flight; /* in flight, newest first */
};

/* Returns 0, or -1 if curl could not be set up. */
int send_init(struct send *s, const struct sign *sign, const struct netguard *guard,
              long timeout_ms);

/* Aborts what is still in flight (the deliveries are handed to done as
 * SEND_FAILED with d->aborted set), then frees. */
typedef void send_done_fn(struct delivery *d, enum send_result r, const char *why,
                          void *arg);
void send_free(struct send *s, send_done_fn *done, void *arg);

/* Starts an attempt of d (its event fields filled in): builds the event body,
 * signs it with the current time and adds the transfer. Returns 0, or -1 with
 * the reason in why (d is untouched then and still the caller's). */
int send_start(struct send *s, struct delivery *d, char *why, size_t whylen);

/* Runs the transfers, waiting up to wait_ms for something to happen, and hands
 * every finished delivery to done (which takes it back). */
void send_run(struct send *s, int wait_ms, send_done_fn *done, void *arg);

/* The event body of d: {"type","id","timestamp","data":{"traceId"}}; for a
 * response.* event (a chat of the OpenAI Responses front, webhook.h) OpenAI's own
 * shape, {"object":"event","id":"evt_<hex>","type","created_at","data":{"id":
 * "resp_<hex>"}}, so that an OpenAI webhook handler reads it unchanged. Returns a
 * new string (free()), or NULL when out of memory. */
char *send_body(const struct delivery *d);

#endif
