/* server.h - the api's HTTP server: civetweb set up with our routes, one worker (and
 * so one Redis connection) per civetweb thread, and JSON for every error civetweb
 * itself answers. */
#ifndef CHATQ_API_SERVER_H
#define CHATQ_API_SERVER_H

#include <stdatomic.h>
#include <stddef.h>

#include "keys.h"
#include "rconn.h"

struct mg_connection;
struct mg_context;

struct server {
    /* Settings, filled in by main before server_start; strings borrowed. */
    const char *host;
    int port; /* 0: any free port, see bound_port */
    int threads;
    size_t max_body; /* request bodies over this get a 413 */
    const char *default_model;
    int redis_timeout_ms;
    long long result_ttl;          /* seconds, EXPIRE of a trace's hash */
    long long grace_ms;            /* on stop, longest wait for open requests */
    long long default_deadline_ms; /* for chats without deadline_ms; 0: none */
    int keepalive_ms;              /* idle kept-alive connection; 0: no keep-alive */
    int request_timeout_ms;        /* headers, and each wait for body bytes */
    long long wait_max_ms;         /* WAIT_MAX_MS: longest a waiting call waits */
    long long inflight_max_ms;     /* longest a chat holds a KEY_INFLIGHT slot */
    struct rconn_url redis;
    struct keys keys;

    /* State. */
    struct mg_context *ctx;
    int bound_port;
    /* 1 while Redis is known to be unreachable, so that an outage is logged once at
     * warn by whichever thread sees it first, not once per request. */
    atomic_int redis_down;
    /* Requests inside one of our handlers right now: server_stop waits for them. */
    atomic_int inflight;
    /* 1 once server_stop began: waiting calls answer with what they have. */
    atomic_int draining;
    /* One per route; civetweb hands the route to server_route as its cbdata. */
    struct server_route {
        struct server *srv;
        const char *name; /* the metrics' route label */
        int (*fn)(struct mg_connection *conn, void *cbdata);
    } routes[9];
};

/* Starts listening and serving; returns 0, or -1 with the reason in err (e.g. the
 * port is taken). */
int server_start(struct server *s, char *err, size_t errlen);

/* Drains, then stops: from now on every response closes its connection; the
 * requests being served (a body still arriving, a Redis round trip) finish, for
 * up to grace_ms; then civetweb stops and joins its threads (which closes their
 * Redis connections). Safe if server_start failed. */
void server_stop(struct server *s);

#endif
