/* probe.h - the small HTTP port of chatq-processor and chatq-handler
 * (METRICS_PORT): GET /healthz, GET /readyz and GET /metrics, served by a thread
 * of its own with its own libevent base and its own Redis connection.
 *
 * A thread rather than the binary's own loop: the handler's loop blocks in Redis
 * reads, and a readiness check that asks Redis must not stall the processor's
 * event loop while Redis is slow or gone. So the thread shares nothing with the
 * main loop but atomics: the loop's tick (probe_tick), which /healthz checks,
 * and the metrics (metrics.h).
 *
 *   /healthz  200 while the main loop has ticked within stall_ms, else 503
 *   /readyz   200 when Redis answers and the group exists on the stream, else 503
 *             with the reason
 *   /metrics  Prometheus text format 0.0.4 (metrics.h)
 * The first two answer JSON with the version. */
#ifndef CHATQ_PROBE_H
#define CHATQ_PROBE_H

#include <stddef.h>

struct rconn_url;

struct probe_settings {
    const char *host;            /* address to listen on (borrowed) */
    int port;                    /* 0: any free port, see probe_port */
    const struct rconn_url *url; /* Redis (borrowed, must outlive the probe) */
    const char *stream, *group;  /* what /readyz looks for (borrowed) */
    long long stall_ms;          /* /healthz fails after this long without a tick */
};

struct probe;

/* Binds host:port and starts the probe's thread (every signal blocked in it).
 * Returns a new probe (stop and free with probe_stop), or NULL with the reason in
 * err (e.g. the port is taken). */
struct probe *probe_start(const struct probe_settings *s, char *err, size_t errlen);

/* The main loop turned: /healthz stays 200 while it keeps doing so. Any thread;
 * NULL is fine (no probe configured). */
void probe_tick(struct probe *p);

/* The port bound (the one asked for, or the one picked for port 0). */
int probe_port(const struct probe *p);

/* Stops the thread, closes the port and the Redis connection, frees p. NULL is
 * fine. */
void probe_stop(struct probe *p);

#endif
