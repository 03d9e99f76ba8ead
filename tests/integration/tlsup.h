/* tlsup.h - an HTTPS + HTTP/2 upstream for the tests: nginx terminating TLS
 * in front of a plain HTTP server (the fake upstream), with certificates from
 * a CA made at test time with the openssl CLI.
 *
 * nginx's access log records, for each call, the connection's serial number
 * and the protocol, so a test can tell how many TCP connections carried how
 * many calls (HTTP/2 multiplexing) and how many were in flight at once.
 *
 *   struct tlsup t;
 *   tlsup_init(&t, "mygroup/pki");          CA, server cert, one free port
 *   ... OPENAI_BASE_URL=https://127.0.0.1:<t.ports[0]>/v1, UPSTREAM_CA_FILE=<t.ca>
 *   tlsup_start(&t, fake_port, log);         nginx, waits until it answers
 *   tlsup_stop(&t);                          at the group's end */
#ifndef CHATQ_TEST_TLSUP_H
#define CHATQ_TEST_TLSUP_H

#include <limits.h>

#include "proc.h"

#define TLSUP_SERVERS_MAX 4

struct tlsup {
    char dir[PATH_MAX - 64]; /* certificates, nginx's files */
    char ca[PATH_MAX];       /* <dir>/ca.pem: the CA the clients trust */
    char access_log[PATH_MAX], error_log[PATH_MAX];
    /* nginx's HTTPS servers: ports[i] presents <dir>/<certs[i]>.pem; server 0
     * is tlsup_init's, with the certificate for 127.0.0.1 and localhost */
    int nservers;
    int ports[TLSUP_SERVERS_MAX];
    char certs[TLSUP_SERVERS_MAX][32];
    struct proc *nginx; /* NULL until tlsup_start */
};

/* Creates <tmp>/<subdir> with an openssl configuration, the CA ca.pem/ca.key
 * and the server certificate server.pem/key (127.0.0.1, localhost; signed by
 * ca.pem, valid two days), and gives server 0 a free port. 0, or -1 with the
 * reason printed. */
int tlsup_init(struct tlsup *t, const char *subdir);

/* Another self-signed CA <name>.pem/.key in t->dir, with subject CN subject
 * (a CA the clients do not trust). 0 or -1. */
int tlsup_ca_make(struct tlsup *t, const char *name, const char *subject);

/* A certificate <name>.pem/.key signed by ca.pem with the extension section
 * ext of the openssl configuration ("server": for 127.0.0.1 and localhost;
 * "wrong": for example.invalid), valid for days from now ("2"; "-1": expired
 * since yesterday). 0 or -1. */
int tlsup_leaf_make(struct tlsup *t, const char *name, const char *ext, const char *days);

/* One more HTTPS server, on a free port, presenting certificate <cert> (made
 * with tlsup_leaf_make). Call before tlsup_start. Returns the port, or -1. */
int tlsup_add_server(struct tlsup *t, const char *cert);

/* Writes nginx's configuration (every server proxying to the plain HTTP server
 * on 127.0.0.1:upstream_port, passing slow answers through as they come) and
 * starts nginx, its output in log; waits until GET /health on server 0 answers
 * 200 over TLS. 0, or -1 with the reason printed (call tlsup_stop either
 * way). */
int tlsup_start(struct tlsup *t, int upstream_port, const char *log);

/* Stops nginx (NULL-safe, idempotent). */
void tlsup_stop(struct tlsup *t);

/* Size of the access log now: the offset to read later calls from. */
long tlsup_log_offset(const struct tlsup *t);

/* One chat call (POST /v1/chat/completions) as nginx logged it. */
struct tlsup_call {
    long long conn; /* nginx's connection serial number */
    char proto[16]; /* "HTTP/2.0", "HTTP/1.1" */
    int status;
    double start, end; /* s since the epoch */
};

/* The chat calls logged from byte offset on, the first max of them into calls
 * (may be NULL with max 0). Returns how many there are, or -1 if the log
 * cannot be read. */
int tlsup_calls_since(const struct tlsup *t, long offset, struct tlsup_call *calls,
                      int max);

/* Waits (up to 5 s) until want calls were logged since offset (nginx logs a
 * call once its answer has been sent, a moment before the chat is seen to end),
 * then reads them as tlsup_calls_since. */
int tlsup_calls_wait(const struct tlsup *t, long offset, int want,
                     struct tlsup_call *calls, int max);

/* What the calls say about the connections that carried them. */
struct tlsup_spread {
    int calls;
    int http2;      /* calls over HTTP/2 */
    int conns;      /* distinct TCP connections */
    int busiest;    /* most calls carried by one connection */
    int in_flight;  /* most calls in flight at one time */
    char text[256]; /* calls per connection in order of first use: "100 + 97 + 3" */
};

/* Fills *sp from n calls. 0, or -1 when out of memory. */
int tlsup_spread(const struct tlsup_call *calls, int n, struct tlsup_spread *sp);

#endif
