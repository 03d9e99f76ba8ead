/* probe.c - the probe thread of chatq-processor and chatq-handler (see probe.h). */
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "rconn.h"
#include "stream.h"
#include "version.h"

/* The readiness check's Redis connect and command timeout: a probe that waits
 * longer than this for an answer is told "not ready" rather than kept waiting. */
#define PROBE_REDIS_TIMEOUT_MS 1000

struct probe {
    struct probe_settings set;
    struct event_base *base;
    struct evhttp *http;
    struct event *wake; /* the read end of stop_pipe: probe_stop's way in */
    int stop_pipe[2];
    int port;
    pthread_t thread;
    int running;
    atomic_llong tick_ms; /* monotonic ms of the main loop's last turn */
    redisContext *redis;  /* the thread's own; NULL until used and after a failure */
};

void probe_tick(struct probe *p)
{
    if (p != NULL)
        atomic_store(&p->tick_ms, clock_mono_ms());
}

int probe_port(const struct probe *p)
{
    return p->port;
}

/* Sends {"status": status, "version": ..., "reason": reason (if any)}. */
static void probe_reply(struct evhttp_request *req, int code, const char *status,
                        const char *reason)
{
    json_t *o = json_pack("{s:s, s:s}", "status", status, "version", CHATQ_VERSION);
    char *text = NULL;
    struct evbuffer *buf = evbuffer_new();

    if (o != NULL && reason != NULL)
        json_object_set_new(o, "reason", json_string(reason));
    if (o != NULL)
        text = json_dumps(o, JSON_COMPACT);
    if (buf == NULL || text == NULL) {
        evhttp_send_error(req, 500, NULL);
        goto out;
    }
    evbuffer_add_printf(buf, "%s\n", text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Service Unavailable", buf);
out:
    if (buf)
        evbuffer_free(buf);
    free(text);
    json_decref(o);
}

/* 1 when Redis answers and the group exists; else 0 with the reason in why. */
static int probe_ready(struct probe *p, char *why, size_t whylen)
{
    char err[256];
    for (int attempt = 0; attempt < 2; attempt++) {
        /* A kept connection may have been closed by a Redis restart since: one more
         * try on a fresh one before saying "unreachable". */
        int fresh = p->redis == NULL;
        if (fresh) {
            p->redis =
                rconn_connect(p->set.url, PROBE_REDIS_TIMEOUT_MS, err, sizeof(err));
            if (p->redis == NULL) {
                snprintf(why, whylen, "Redis is unreachable: %s", err);
                return 0;
            }
        }
        int rc = stream_group_exists(p->redis, p->set.stream, p->set.group, why, whylen);
        if (rc >= 0)
            return rc;
        redisFree(p->redis);
        p->redis = NULL;
        if (fresh)
            return 0;
    }
    return 0;
}

static void probe_metrics(struct evhttp_request *req)
{
    char *text = NULL;
    size_t len = 0;
    struct evbuffer *buf = evbuffer_new();

    if (buf == NULL || metrics_render(&text, &len) != 0) {
        evhttp_send_error(req, 500, NULL);
        goto out;
    }
    evbuffer_add(buf, text, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      METRICS_CONTENT_TYPE);
    evhttp_send_reply(req, 200, "OK", buf);
out:
    if (buf)
        evbuffer_free(buf);
    free(text);
}

static void probe_route(struct evhttp_request *req, void *arg)
{
    struct probe *p = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    char why[512];

    if (path == NULL)
        path = "";
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_send_error(req, 405, NULL);
    } else if (strcmp(path, "/healthz") == 0) {
        long long idle = clock_mono_ms() - atomic_load(&p->tick_ms);
        if (idle > p->set.stall_ms) {
            snprintf(why, sizeof(why), "the main loop has not turned for %lld ms", idle);
            probe_reply(req, 503, "stalled", why);
        } else {
            probe_reply(req, 200, "ok", NULL);
        }
    } else if (strcmp(path, "/readyz") == 0) {
        if (probe_ready(p, why, sizeof(why)))
            probe_reply(req, 200, "ready", NULL);
        else
            probe_reply(req, 503, "not_ready", why);
    } else if (strcmp(path, "/metrics") == 0) {
        probe_metrics(req);
    } else {
        evhttp_send_error(req, 404, NULL);
    }
}

static void probe_on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    (void)fd;
    (void)what;
    event_base_loopbreak(p->base);
}

static void *probe_main(void *arg)
{
    struct probe *p = arg;
    event_base_dispatch(p->base);
    return NULL;
}

/* Frees what probe_start made; the thread must not be running. */
static void probe_free(struct probe *p)
{
    if (p->wake)
        event_free(p->wake);
    if (p->http)
        evhttp_free(p->http);
    if (p->base)
        event_base_free(p->base);
    for (int i = 0; i < 2; i++)
        if (p->stop_pipe[i] >= 0)
            close(p->stop_pipe[i]);
    if (p->redis)
        redisFree(p->redis);
    free(p);
}

struct probe *probe_start(const struct probe_settings *s, char *err, size_t errlen)
{
    struct probe *p = calloc(1, sizeof(*p));
    struct evhttp_bound_socket *sock;

    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->set = *s;
    p->stop_pipe[0] = p->stop_pipe[1] = -1;
    atomic_init(&p->tick_ms, clock_mono_ms());
    if (pipe2(p->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    p->base = event_base_new();
    p->http = p->base ? evhttp_new(p->base) : NULL;
    p->wake =
        p->base ? event_new(p->base, p->stop_pipe[0], EV_READ, probe_on_wake, p) : NULL;
    if (p->http == NULL || p->wake == NULL || event_add(p->wake, NULL) != 0) {
        snprintf(err, errlen, "out of memory setting up the probe port");
        goto fail;
    }
    evhttp_set_gencb(p->http, probe_route, p);
    evhttp_set_timeout(p->http, 10);
    sock = evhttp_bind_socket_with_handle(p->http, s->host, (ev_uint16_t)s->port);
    if (sock == NULL) {
        snprintf(err, errlen, "METRICS_PORT: cannot listen on %s:%d: %s", s->host,
                 s->port, strerror(errno));
        goto fail;
    }
    p->port = s->port;
    if (p->port == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        evutil_socket_t fd = evhttp_bound_socket_get_fd(sock);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET)
            p->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            p->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    /* The stop signals are the main thread's business: the probe thread starts
     * with every signal blocked, so none lands here and leaves the main thread
     * sleeping through it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int started = pthread_create(&p->thread, NULL, probe_main, p) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!started) {
        snprintf(err, errlen, "cannot start the probe thread");
        goto fail;
    }
    p->running = 1;
    return p;
fail:
    probe_free(p);
    return NULL;
}

void probe_stop(struct probe *p)
{
    if (p == NULL)
        return;
    if (p->running) {
        ssize_t n;
        do
            n = write(p->stop_pipe[1], "x", 1);
        while (n < 0 && errno == EINTR);
        pthread_join(p->thread, NULL);
    }
    probe_free(p);
}
