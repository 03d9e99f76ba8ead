/* loadgen.c - the HTTP load generator of `make bench`.
 *
 * HTTP/1.1 keep-alive over N connections spread across T threads, one epoll
 * loop per thread, one request in flight per connection. Two ways to pace:
 *
 *   closed loop (default)  each connection sends its next request as soon as
 *                          the previous answer is in: the peak rate.
 *   -R RATE                open loop at a fixed total rate. Request k is *due*
 *                          at start + k/RATE and its latency is measured from
 *                          then, not from when a free connection sent it, so a
 *                          stall is charged to every request it delayed (no
 *                          "coordinated omission", as in wrk2).
 *
 * It stops issuing after -d seconds or -n requests, waits for the answers
 * still out (never longer than --timeout), and prints one JSON line:
 *   {"requests","ok","non2xx","errors","rps","p50_ms","p90_ms","p99_ms",
 *    "p999_ms","max_ms","mean_ms","elapsed_s","start_unix_ms",
 *    "last_ok_unix_ms","matched","codes":{...}}
 *
 * POST /chat carries {"message":"bench <k>","model":"gpt-3.5-turbo",
 * "temperature":0.7}; --ids-out saves the traceId of every 2xx answer, one a
 * line. GET /chat/{id}/response cycles through the ids of --ids-in. --expect
 * counts the answers whose body contains a string ("matched"). --header adds one
 * header line to every request (e.g. "Authorization: Bearer <key>").
 *
 * Latencies go into a log-linear histogram (microseconds, < 1% error), so
 * memory does not grow with the number of requests. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define LG_RBUF 65536
#define LG_WBUF 2048
#define LG_HIST_SUB 64 /* sub-buckets per power of two: < 1.6% width, < 0.8% error */
#define LG_HIST_N 4096
#define LG_MAX_CONNS 20000
#define LG_MAX_THREADS 16
#define LG_TICK_MS 20
#define LG_LATE_GRACE_NS (1000000000ULL)
#define LG_CONNECT_WAIT_NS (3ULL * 1000000000ULL)

/* ---- settings ---------------------------------------------------------------- */

struct config {
    char host[64];
    int port;
    int get; /* 0: POST /chat, 1: GET /chat/{id}/response */
    int conns;
    int threads;
    double duration_s; /* 0: until -n */
    long long total;   /* 0: until -d */
    double rate;       /* 0: closed loop */
    double warmup_s;
    double timeout_s; /* hard limit of the whole run */
    double req_timeout_s;
    const char *ids_out;
    const char *ids_in;
    const char *expect;
    const char *header; /* one more header line, without CRLF, or NULL */
    int quiet;
};

static struct config cfg = {
    .host = "127.0.0.1",
    .port = 8080,
    .conns = 64,
    .threads = 2,
    .req_timeout_s = 30,
};

/* ---- time -------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static double unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* ---- histogram ----------------------------------------------------------------- */

struct hist {
    uint64_t counts[LG_HIST_N];
    uint64_t n, max_us;
    double sum_us;
};

static int hist_index(uint64_t v)
{
    if (v < 2 * LG_HIST_SUB)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6; /* v >> shift is in [64, 128) */
    int idx =
        2 * LG_HIST_SUB + (shift - 1) * LG_HIST_SUB + (int)((v >> shift) - LG_HIST_SUB);
    return idx < LG_HIST_N ? idx : LG_HIST_N - 1;
}

/* The middle of bucket idx, in microseconds. */
static double hist_value(int idx)
{
    if (idx < 2 * LG_HIST_SUB)
        return idx;
    int shift = (idx - 2 * LG_HIST_SUB) / LG_HIST_SUB + 1;
    uint64_t top = (uint64_t)((idx - 2 * LG_HIST_SUB) % LG_HIST_SUB) + LG_HIST_SUB;
    double lo = (double)(top << shift), width = (double)(1ULL << shift);
    return lo + width / 2;
}

static void hist_add(struct hist *h, uint64_t us)
{
    h->counts[hist_index(us)]++;
    h->n++;
    h->sum_us += (double)us;
    if (us > h->max_us)
        h->max_us = us;
}

static void hist_merge(struct hist *into, const struct hist *h)
{
    for (int i = 0; i < LG_HIST_N; i++)
        into->counts[i] += h->counts[i];
    into->n += h->n;
    into->sum_us += h->sum_us;
    if (h->max_us > into->max_us)
        into->max_us = h->max_us;
}

/* Percentile p (0..1) in milliseconds; 0 when empty. */
static double hist_pct_ms(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(p * (double)h->n + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < LG_HIST_N; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            double v = hist_value(i);
            if (v > (double)h->max_us)
                v = (double)h->max_us;
            return v / 1000.0;
        }
    }
    return (double)h->max_us / 1000.0;
}

/* ---- shared run state -------------------------------------------------------- */

static atomic_llong next_request; /* number of the next request to claim */
static uint64_t t_start, t_measure, t_stop_issue, t_hard_end;
static volatile sig_atomic_t interrupted;
static char **ids;
static size_t nids;

/* ---- connections --------------------------------------------------------------- */

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_IDLE, CONN_BUSY };

struct conn {
    int fd;
    enum conn_state state;
    int want_out;
    char wbuf[LG_WBUF];
    size_t wlen, woff;
    char *rbuf;
    size_t rlen;
    uint64_t t_begin;  /* latency is measured from here */
    uint64_t retry_at; /* CONN_DOWN: when to reconnect */
    int measured;      /* the request counts (began after the warm-up) */
    int reused;        /* the request went out on a connection used before */
    int resend;        /* CONN_CONNECTING: send wbuf again once connected */
};

struct worker {
    int id;
    pthread_t th;
    int ep, tfd;
    struct conn *conns;
    int nconns;
    int *idle; /* stack of idle connection indexes */
    int nidle;
    int busy;
    /* open loop */
    double interval_ns;
    uint64_t sched_k; /* this worker's next scheduled request */
    uint64_t phase_ns;
    uint64_t armed;
    int issuing;
    /* results */
    struct hist hist;
    uint64_t ok, non2xx, errors, matched, resent, unsent, codes[600];
    uint64_t last_ok_ns, first_begin_ns;
    char *idbuf;
    size_t idlen, idcap;
};

static struct sockaddr_in server_addr;

static void conn_close(struct worker *w, struct conn *c, uint64_t retry_at)
{
    if (c->fd >= 0) {
        epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->state == CONN_IDLE) {
        for (int i = 0; i < w->nidle; i++) {
            if (&w->conns[w->idle[i]] == c) {
                w->idle[i] = w->idle[--w->nidle];
                break;
            }
        }
    }
    if (c->state == CONN_BUSY)
        w->busy--;
    if (c->state == CONN_CONNECTING && c->resend) {
        /* The request being sent again is lost with this connection. */
        w->busy--;
        w->errors++;
        c->resend = 0;
    }
    c->fd = -1;
    c->state = CONN_DOWN;
    c->rlen = 0;
    c->retry_at = retry_at;
}

static void conn_set_events(struct worker *w, struct conn *c, int out)
{
    if (c->want_out == out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
}

static void conn_idle(struct worker *w, struct conn *c)
{
    c->state = CONN_IDLE;
    w->idle[w->nidle++] = (int)(c - w->conns);
}

static int conn_open(struct worker *w, struct conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->rlen = 0;
    c->want_out = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) != 0 &&
        errno != EINPROGRESS) {
        close(fd);
        c->fd = -1;
        return -1;
    }
    epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
    c->state = CONN_CONNECTING;
    return 0;
}

/* ---- requests ------------------------------------------------------------------ */

static void request_build(struct conn *c, long long k)
{
    int n;
    if (cfg.get) {
        n = snprintf(c->wbuf, sizeof(c->wbuf),
                     "GET /chat/%s/response HTTP/1.1\r\nHost: %s:%d\r\n%s%s\r\n",
                     ids[(size_t)k % nids], cfg.host, cfg.port,
                     cfg.header ? cfg.header : "", cfg.header ? "\r\n" : "");
    } else {
        char body[128];
        int blen = snprintf(body, sizeof(body),
                            "{\"message\":\"bench %lld\",\"model\":\"gpt-3.5-turbo\","
                            "\"temperature\":0.7}",
                            k);
        n = snprintf(
            c->wbuf, sizeof(c->wbuf),
            "POST /chat HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            "%s%sContent-Length: %d\r\n\r\n%s",
            cfg.host, cfg.port, cfg.header ? cfg.header : "", cfg.header ? "\r\n" : "",
            blen, body);
    }
    c->wlen = (size_t)n;
    c->woff = 0;
}

static void conn_flush(struct worker *w, struct conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            conn_set_events(w, c, 1);
            return;
        }
        if (n <= 0) {
            w->errors++;
            conn_close(w, c, now_ns());
            return;
        }
        c->woff += (size_t)n;
    }
    conn_set_events(w, c, 0);
}

/* Sends request k on c, with its latency measured from begin. */
static void conn_send(struct worker *w, struct conn *c, long long k, uint64_t begin)
{
    request_build(c, k);
    c->reused = c->t_begin != 0;
    c->t_begin = begin;
    c->measured = begin >= t_measure;
    if (w->first_begin_ns == 0)
        w->first_begin_ns = begin;
    c->state = CONN_BUSY;
    w->busy++;
    conn_flush(w, c);
}

/* Claims the number of the next request, or returns -1 when -n is used up. */
static long long request_claim(void)
{
    long long k = atomic_fetch_add(&next_request, 1);
    if (cfg.total > 0 && k >= cfg.total)
        return -1;
    return k;
}

/* Sends what is due on the idle connections. */
static void worker_pump(struct worker *w)
{
    uint64_t now = now_ns();
    if (!w->issuing)
        return;
    /* Open loop: what fell due before the end still goes out, late, for up to
     * LG_LATE_GRACE_NS; what is left after that counts as "unsent". */
    uint64_t stop = t_stop_issue;
    if (stop != 0 && cfg.rate > 0)
        stop += LG_LATE_GRACE_NS;
    if (interrupted || (stop != 0 && now >= stop)) {
        w->issuing = 0;
        return;
    }
    /* Bounded by the idle connections: each round takes one off the stack. */
    while (w->nidle > 0) {
        uint64_t due = now;
        if (cfg.rate > 0) {
            due = t_start + w->phase_ns + (uint64_t)((double)w->sched_k * w->interval_ns);
            if (t_stop_issue != 0 && due >= t_stop_issue) {
                w->issuing = 0;
                return;
            }
            if (due > now)
                return;
        }
        long long k = request_claim();
        if (k < 0) {
            w->issuing = 0;
            return;
        }
        w->sched_k++;
        struct conn *c = &w->conns[w->idle[--w->nidle]];
        conn_send(w, c, k, due);
    }
}

/* Returns the length of a complete response at the start of buf, 0 if more is
 * needed, -1 if it is not HTTP. *status, *body and *blen describe it; *close is
 * set when the server will close the connection. Chunked bodies are decoded in
 * place (*body points into buf). */
static long response_parse(char *buf, size_t len, int *status, char **body, size_t *blen,
                           int *close_after)
{
    char *hend = memmem(buf, len, "\r\n\r\n", 4);
    if (hend == NULL)
        return len > LG_RBUF / 2 ? -1 : 0;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(buf + 9);
    size_t hlen = (size_t)(hend - buf) + 4;
    long long clen = -1;
    int chunked = 0;
    *close_after = buf[7] == '0';
    /* Bounded by the header block: each round moves to the next line. */
    for (char *line = memchr(buf, '\n', hlen); line != NULL && line < hend;
         line = memchr(line + 1, '\n', (size_t)(hend - line))) {
        char *h = line + 1;
        if (strncasecmp(h, "content-length:", 15) == 0)
            clen = atoll(h + 15);
        else if (strncasecmp(h, "transfer-encoding:", 18) == 0 &&
                 strncasecmp(h + 18 + strspn(h + 18, " "), "chunked", 7) == 0)
            chunked = 1;
        else if (strncasecmp(h, "connection:", 11) == 0) {
            const char *v = h + 11 + strspn(h + 11, " ");
            if (strncasecmp(v, "close", 5) == 0)
                *close_after = 1;
            else if (strncasecmp(v, "keep-alive", 10) == 0)
                *close_after = 0;
        }
    }
    if (*status == 204 || *status == 304 || (*status >= 100 && *status < 200))
        clen = 0;
    if (chunked) {
        /* First make sure the whole body is in, then decode it in place. */
        size_t in = hlen, total = 0;
        int last = 0;
        for (int guard = 0; guard < 100000 && !last; guard++) {
            char *eol = memmem(buf + in, len - in, "\r\n", 2);
            if (eol == NULL)
                return 0;
            size_t sz = strtoul(buf + in, NULL, 16);
            size_t data = (size_t)(eol - buf) + 2;
            if (data + sz + 2 > len)
                return 0;
            last = sz == 0; /* no trailers expected: "0\r\n\r\n" */
            total += sz;
            in = data + sz + 2;
        }
        if (!last)
            return -1;
        size_t end = in, out = hlen;
        in = hlen;
        for (size_t sz = 1; sz != 0;) {
            char *eol = memmem(buf + in, end - in, "\r\n", 2);
            sz = strtoul(buf + in, NULL, 16);
            size_t data = (size_t)(eol - buf) + 2;
            memmove(buf + out, buf + data, sz);
            out += sz;
            in = data + sz + 2;
        }
        *body = buf + hlen;
        *blen = total;
        return (long)end;
    }
    if (clen < 0) {
        if (!*close_after)
            return -1; /* neither length nor close: not supported */
        return 0;      /* read until close (handled by the caller) */
    }
    if (hlen + (size_t)clen > len)
        return 0;
    *body = buf + hlen;
    *blen = (size_t)clen;
    return (long)(hlen + (size_t)clen);
}

static void worker_save_id(struct worker *w, const char *body, size_t blen)
{
    const char *p = memmem(body, blen, "\"traceId\"", 9);
    if (p == NULL)
        return;
    p += 9;
    const char *end = body + blen;
    while (p < end && (*p == ' ' || *p == ':'))
        p++;
    if (p >= end || *p != '"')
        return;
    p++;
    const char *q = memchr(p, '"', (size_t)(end - p));
    if (q == NULL || q - p > 128)
        return;
    size_t n = (size_t)(q - p);
    if (w->idlen + n + 2 > w->idcap) {
        size_t cap = w->idcap ? w->idcap * 2 : 65536;
        while (cap < w->idlen + n + 2)
            cap *= 2;
        char *nb = realloc(w->idbuf, cap);
        if (nb == NULL)
            return;
        w->idbuf = nb;
        w->idcap = cap;
    }
    memcpy(w->idbuf + w->idlen, p, n);
    w->idlen += n;
    w->idbuf[w->idlen++] = '\n';
}

static void worker_complete(struct worker *w, struct conn *c, int status,
                            const char *body, size_t blen)
{
    uint64_t now = now_ns();
    if (status >= 200 && status < 300) {
        w->last_ok_ns = now;
        if (cfg.ids_out != NULL)
            worker_save_id(w, body, blen);
    }
    if (c->measured) {
        hist_add(&w->hist, (now - c->t_begin) / 1000);
        if (status >= 200 && status < 300)
            w->ok++;
        else
            w->non2xx++;
        if (status > 0 && status < 600)
            w->codes[status]++;
        if (cfg.expect != NULL && body != NULL &&
            memmem(body, blen, cfg.expect, strlen(cfg.expect)) != NULL)
            w->matched++;
    }
}

static void conn_readable(struct worker *w, struct conn *c)
{
    ssize_t n = read(c->fd, c->rbuf + c->rlen, LG_RBUF - c->rlen);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 && c->state == CONN_BUSY && c->rlen == 0 && c->reused) {
        /* The server closed a keep-alive connection as we reused it (civetweb
         * closes idle ones after keep_alive_timeout_ms): not an answer, so
         * send the request again on a new connection, as browsers do. Its
         * latency still counts from the first attempt. */
        epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        if (conn_open(w, c) == 0) {
            c->resend = 1;
            c->reused = 0;
            w->resent++;
            return;
        }
        c->state = CONN_BUSY;
        w->errors++;
        conn_close(w, c, now_ns() + 20000000ULL);
        return;
    }
    if (n <= 0) {
        if (c->state == CONN_BUSY) {
            /* A body delimited by the close of the connection ends here. */
            int status = 0, cl = 0;
            char *body = NULL;
            size_t blen = 0;
            char *hend = c->rlen > 0 ? memmem(c->rbuf, c->rlen, "\r\n\r\n", 4) : NULL;
            if (hend != NULL &&
                response_parse(c->rbuf, c->rlen, &status, &body, &blen, &cl) == 0 && cl) {
                body = hend + 4;
                blen = c->rlen - (size_t)(body - c->rbuf);
                worker_complete(w, c, status, body, blen);
            } else {
                w->errors++;
            }
        }
        conn_close(w, c, now_ns());
        return;
    }
    c->rlen += (size_t)n;
    if (c->state != CONN_BUSY) {
        /* Nothing was asked: the server is talking out of turn. */
        w->errors++;
        conn_close(w, c, now_ns());
        return;
    }
    int status = 0, close_after = 0;
    char *body = NULL;
    size_t blen = 0;
    long used = response_parse(c->rbuf, c->rlen, &status, &body, &blen, &close_after);
    if (used == 0 && c->rlen < LG_RBUF)
        return;
    if (used <= 0) {
        w->errors++;
        conn_close(w, c, now_ns());
        return;
    }
    worker_complete(w, c, status, body, blen);
    c->rlen = 0; /* one request in flight per connection: nothing follows */
    w->busy--;
    if (close_after) {
        c->state = CONN_DOWN; /* busy was counted down above */
        conn_close(w, c, now_ns());
        return;
    }
    conn_idle(w, c);
}

static void conn_writable(struct worker *w, struct conn *c)
{
    if (c->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            w->errors++;
            conn_close(w, c, now_ns() + 20000000ULL);
            return;
        }
        conn_set_events(w, c, 0);
        if (c->resend) {
            c->resend = 0;
            c->state = CONN_BUSY;
            c->woff = 0;
            conn_flush(w, c);
            return;
        }
        conn_idle(w, c);
        return;
    }
    if (c->state == CONN_BUSY)
        conn_flush(w, c);
}

/* Reconnects what is down and fails requests older than --req-timeout. */
static void worker_housekeeping(struct worker *w, uint64_t now)
{
    uint64_t limit = (uint64_t)(cfg.req_timeout_s * 1e9);
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->state == CONN_DOWN && now >= c->retry_at && w->issuing) {
            if (conn_open(w, c) != 0) {
                w->errors++;
                c->retry_at = now + 20000000ULL;
            }
        } else if (c->state == CONN_BUSY && now - c->t_begin > limit &&
                   now > c->t_begin) {
            w->errors++;
            conn_close(w, c, now);
        }
    }
}

static void worker_arm(struct worker *w)
{
    if (cfg.rate <= 0 || !w->issuing || w->nidle == 0)
        return;
    uint64_t due =
        t_start + w->phase_ns + (uint64_t)((double)w->sched_k * w->interval_ns);
    if (due == w->armed)
        return;
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(due / 1000000000ULL);
    its.it_value.tv_nsec = (long)(due % 1000000000ULL);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    timerfd_settime(w->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    w->armed = due;
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    uint64_t last_tick = 0;
    /* Bounded in time: ends at t_hard_end at the latest. */
    for (;;) {
        uint64_t now = now_ns();
        if (now >= t_hard_end)
            break;
        if (!w->issuing && w->busy == 0)
            break;
        if (now - last_tick >= LG_TICK_MS * 1000000ULL) {
            worker_housekeeping(w, now);
            last_tick = now;
        }
        worker_pump(w);
        worker_arm(w);
        int n = epoll_wait(w->ep, evs, 256, LG_TICK_MS);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t exp;
                if (read(w->tfd, &exp, sizeof(exp)) < 0)
                    (void)0; /* spurious wake-up: nothing to do */
                w->armed = 0;
                continue;
            }
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                conn_readable(w, c);
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                conn_writable(w, c);
        }
    }
    /* Open loop: requests that fell due but never went out mean the target
     * rate was more than the server (or this generator) could take. */
    if (cfg.rate > 0 && cfg.total <= 0 && t_stop_issue > t_start + w->phase_ns) {
        double due = (double)(t_stop_issue - t_start - w->phase_ns) / w->interval_ns;
        uint64_t n = (uint64_t)ceil(due);
        if (n > w->sched_k)
            w->unsent = n - w->sched_k;
    }
    /* What is still out when time is up failed. */
    for (int i = 0; i < w->nconns; i++) {
        if (w->conns[i].state == CONN_BUSY)
            w->errors++;
        conn_close(w, &w->conns[i], 0);
    }
    return NULL;
}

/* ---- set-up and report ------------------------------------------------------- */

static int ids_load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "loadgen: --ids-in %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 1024;
    ids = malloc(cap * sizeof(*ids));
    char line[256];
    /* Bounded by the file. */
    while (ids != NULL && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        if (nids == cap) {
            cap *= 2;
            char **n = realloc(ids, cap * sizeof(*ids));
            if (n == NULL)
                break;
            ids = n;
        }
        ids[nids++] = strdup(line);
    }
    fclose(f);
    if (nids == 0) {
        fprintf(stderr, "loadgen: --ids-in %s: no ids\n", path);
        return -1;
    }
    return 0;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: loadgen -u http://HOST:PORT [options]\n"
        "  -m POST|GET       POST /chat (default) or GET /chat/{id}/response\n"
        "  -c N              connections (default 64)\n"
        "  -t N              threads (default 2)\n"
        "  -d SECONDS        stop issuing after this long\n"
        "  -n N              stop after N requests\n"
        "  -R RATE           open loop at RATE requests/s in total (default: closed)\n"
        "  -w SECONDS        warm-up: requests begun before this are not counted\n"
        "  --timeout S       hard limit of the whole run (default d+w+30 or 120)\n"
        "  --req-timeout S   a request unanswered this long is an error (default 30)\n"
        "  --ids-out FILE    save the traceId of each 2xx answer\n"
        "  --ids-in FILE     ids for GET, used round-robin\n"
        "  --expect STRING   count answers whose body contains STRING\n"
        "  --header LINE     add the header line LINE (\"Name: value\") to every "
        "request\n");
}

static int parse_args(int argc, char **argv)
{
    static const struct option longs[] = {{"timeout", required_argument, NULL, 'T'},
                                          {"req-timeout", required_argument, NULL, 'q'},
                                          {"ids-out", required_argument, NULL, 'o'},
                                          {"ids-in", required_argument, NULL, 'i'},
                                          {"expect", required_argument, NULL, 'e'},
                                          {"header", required_argument, NULL, 'H'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int opt;
    const char *url = NULL;
    while ((opt = getopt_long(argc, argv, "u:m:c:t:d:n:R:w:h", longs, NULL)) != -1) {
        switch (opt) {
        case 'u':
            url = optarg;
            break;
        case 'm':
            cfg.get = strcasecmp(optarg, "GET") == 0;
            break;
        case 'c':
            cfg.conns = atoi(optarg);
            break;
        case 't':
            cfg.threads = atoi(optarg);
            break;
        case 'd':
            cfg.duration_s = atof(optarg);
            break;
        case 'n':
            cfg.total = atoll(optarg);
            break;
        case 'R':
            cfg.rate = atof(optarg);
            break;
        case 'w':
            cfg.warmup_s = atof(optarg);
            break;
        case 'T':
            cfg.timeout_s = atof(optarg);
            break;
        case 'q':
            cfg.req_timeout_s = atof(optarg);
            break;
        case 'o':
            cfg.ids_out = optarg;
            break;
        case 'i':
            cfg.ids_in = optarg;
            break;
        case 'e':
            cfg.expect = optarg;
            break;
        case 'H':
            if (strlen(optarg) > 512 || strpbrk(optarg, "\r\n") != NULL) {
                fprintf(stderr, "loadgen: --header: one line of at most 512 bytes\n");
                return -1;
            }
            cfg.header = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (url == NULL || sscanf(url, "http://%63[^:/]:%d", cfg.host, &cfg.port) != 2) {
        fprintf(stderr, "loadgen: -u http://HOST:PORT is required\n");
        return -1;
    }
    if (cfg.conns < 1 || cfg.conns > LG_MAX_CONNS) {
        fprintf(stderr, "loadgen: -c must be 1..%d\n", LG_MAX_CONNS);
        return -1;
    }
    if (cfg.threads < 1 || cfg.threads > LG_MAX_THREADS)
        cfg.threads = 1;
    if (cfg.threads > cfg.conns)
        cfg.threads = cfg.conns;
    if (cfg.duration_s <= 0 && cfg.total <= 0) {
        fprintf(stderr, "loadgen: give -d SECONDS or -n N\n");
        return -1;
    }
    if (cfg.get && cfg.ids_in == NULL) {
        fprintf(stderr, "loadgen: -m GET needs --ids-in FILE\n");
        return -1;
    }
    if (cfg.timeout_s <= 0)
        cfg.timeout_s = cfg.duration_s > 0 ? cfg.duration_s + cfg.warmup_s + 30 : 120;
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0)
        return 2;
    if (cfg.ids_in != NULL && ids_load(cfg.ids_in) != 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    memset(&server_addr, 0, sizeof(server_addr));
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)cfg.port);
    if (inet_pton(AF_INET, cfg.host, &server_addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: host must be an IPv4 address, not %s\n", cfg.host);
        return 2;
    }

    struct worker *ws = calloc((size_t)cfg.threads, sizeof(*ws));
    if (ws == NULL)
        return 2;
    for (int t = 0; t < cfg.threads; t++) {
        struct worker *w = &ws[t];
        w->id = t;
        w->nconns = cfg.conns / cfg.threads + (t < cfg.conns % cfg.threads);
        w->conns = calloc((size_t)w->nconns, sizeof(*w->conns));
        w->idle = calloc((size_t)w->nconns, sizeof(int));
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (w->conns == NULL || w->idle == NULL || w->ep < 0 || w->tfd < 0) {
            fprintf(stderr, "loadgen: out of resources\n");
            return 2;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(w->ep, EPOLL_CTL_ADD, w->tfd, &ev);
        if (cfg.rate > 0) {
            double per = cfg.rate / cfg.threads;
            w->interval_ns = 1e9 / per;
            w->phase_ns = (uint64_t)(w->interval_ns * t / cfg.threads);
        }
        w->issuing = 1;
        for (int i = 0; i < w->nconns; i++) {
            w->conns[i].fd = -1;
            w->conns[i].rbuf = malloc(LG_RBUF + 1);
            if (w->conns[i].rbuf == NULL || conn_open(w, &w->conns[i]) != 0) {
                fprintf(stderr, "loadgen: cannot open connection %d: %s\n", i,
                        strerror(errno));
                return 2;
            }
        }
    }

    /* Connect everything before the clock starts, so the first second does not
     * measure the handshakes. */
    uint64_t connect_end = now_ns() + LG_CONNECT_WAIT_NS;
    int ready = 0;
    while (!ready && now_ns() < connect_end) {
        ready = 1;
        for (int t = 0; t < cfg.threads; t++) {
            struct worker *w = &ws[t];
            struct epoll_event evs[256];
            int n = epoll_wait(w->ep, evs, 256, 5);
            for (int i = 0; i < n; i++) {
                struct conn *c = evs[i].data.ptr;
                if (c != NULL && c->state == CONN_CONNECTING &&
                    (evs[i].events & EPOLLOUT))
                    conn_writable(w, c);
            }
            for (int i = 0; i < w->nconns; i++)
                if (w->conns[i].state == CONN_CONNECTING)
                    ready = 0;
        }
    }
    int connected = 0;
    for (int t = 0; t < cfg.threads; t++)
        connected += ws[t].nidle;
    if (connected == 0) {
        fprintf(stderr, "loadgen: could not connect to %s:%d\n", cfg.host, cfg.port);
        return 2;
    }

    double start_unix_ms = unix_ms();
    t_start = now_ns();
    t_measure = t_start + (uint64_t)(cfg.warmup_s * 1e9);
    t_stop_issue = cfg.duration_s > 0 ? t_measure + (uint64_t)(cfg.duration_s * 1e9) : 0;
    t_hard_end = t_start + (uint64_t)(cfg.timeout_s * 1e9);

    for (int t = 0; t < cfg.threads; t++)
        pthread_create(&ws[t].th, NULL, worker_run, &ws[t]);
    for (int t = 0; t < cfg.threads; t++)
        pthread_join(ws[t].th, NULL);

    struct hist *h = calloc(1, sizeof(*h));
    uint64_t ok = 0, non2xx = 0, errors = 0, matched = 0, last_ok = 0, codes[600] = {0};
    uint64_t resent = 0, unsent = 0;
    for (int t = 0; t < cfg.threads; t++) {
        struct worker *w = &ws[t];
        hist_merge(h, &w->hist);
        ok += w->ok;
        non2xx += w->non2xx;
        errors += w->errors;
        matched += w->matched;
        resent += w->resent;
        unsent += w->unsent;
        if (w->last_ok_ns > last_ok)
            last_ok = w->last_ok_ns;
        for (int i = 0; i < 600; i++)
            codes[i] += w->codes[i];
    }
    if (cfg.ids_out != NULL) {
        FILE *f = fopen(cfg.ids_out, "w");
        if (f == NULL) {
            fprintf(stderr, "loadgen: --ids-out %s: %s\n", cfg.ids_out, strerror(errno));
            return 2;
        }
        for (int t = 0; t < cfg.threads; t++)
            if (ws[t].idlen > 0)
                fwrite(ws[t].idbuf, 1, ws[t].idlen, f);
        fclose(f);
    }

    /* The rate is over the measured window: from the end of the warm-up to the
     * last answer, or to the end of -d when answers stopped earlier. */
    uint64_t end = last_ok > t_measure ? last_ok : now_ns();
    if (t_stop_issue != 0 && cfg.rate <= 0 && end < t_stop_issue)
        end = t_stop_issue;
    double window = (double)(end - t_measure) / 1e9;
    double elapsed = (double)(now_ns() - t_start) / 1e9;
    uint64_t answered = ok + non2xx;
    printf("{\"requests\":%llu,\"ok\":%llu,\"non2xx\":%llu,\"errors\":%llu,"
           "\"rps\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"p999_ms\":%.3f,\"max_ms\":%.3f,\"mean_ms\":%.3f,\"elapsed_s\":%.3f,"
           "\"start_unix_ms\":%.1f,\"last_ok_unix_ms\":%.1f,\"matched\":%llu,"
           "\"resent\":%llu,\"unsent\":%llu,\"conns\":%d,\"threads\":%d,\"rate\":%.1f,"
           "\"codes\":{",
           (unsigned long long)answered, (unsigned long long)ok,
           (unsigned long long)non2xx, (unsigned long long)errors,
           window > 0 ? (double)answered / window : 0.0, hist_pct_ms(h, 0.50),
           hist_pct_ms(h, 0.90), hist_pct_ms(h, 0.99), hist_pct_ms(h, 0.999),
           (double)h->max_us / 1000.0, h->n ? h->sum_us / (double)h->n / 1000.0 : 0.0,
           elapsed, start_unix_ms,
           last_ok ? start_unix_ms + (double)(last_ok - t_start) / 1e6 : 0.0,
           (unsigned long long)matched, (unsigned long long)resent,
           (unsigned long long)unsent, cfg.conns, cfg.threads, cfg.rate);
    const char *sep = "";
    for (int i = 0; i < 600; i++) {
        if (codes[i] == 0)
            continue;
        printf("%s\"%d\":%llu", sep, i, (unsigned long long)codes[i]);
        sep = ",";
    }
    printf("}}\n");
    fflush(stdout);
    return 0;
}
