/* test_push.c - results pushed rather than polled: the long-poll
 * (GET /chat/{traceId}/response?wait=SECONDS) and the event stream
 * (GET /chat/{traceId}/events, server-sent events).
 *
 * A long-poll answers as soon as the chat is final (compared with the record's own
 * completion timestamp), answers processing when its wait runs out, refuses a bad
 * wait, answers a finished chat at once, and never hangs across an api restart;
 * past WAIT_THREADS waiting clients a wait answers at once while POSTs go on.
 *
 * The event stream: a client that leaves after the first "processing" and comes
 * back with Last-Event-ID gets exactly the remaining events (checked against the
 * chat's events in Redis: none missing, none twice), sees heartbeats while
 * nothing happens, and the stream ends after the final event; a reconnect after
 * the end gets 204.
 *
 * Token streaming ("stream": true): the answer's text arrives as delta events
 * before completed, in order, and they add up to the final response; a client
 * that leaves after a few deltas and comes back with Last-Event-ID gets exactly
 * the remaining deltas and completed; a stream broken half-way is retried and the
 * new attempt's deltas start the answer over; a chat without stream has no
 * deltas; a stream that is not a boolean is a 400. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "events.h"
#include "harness.h"
#include "stack.h"
#include "suite.h"

#define PUSH_WAIT_THREADS 4
#define PUSH_HEARTBEAT_MS 300

static struct stack push_stack;

static const char *const push_api_env[] = {"WAIT_THREADS=4", "WAIT_MAX_SECONDS=30",
                                           "EVENTS_HEARTBEAT_MS=300", NULL};

static int push_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.api = push_api_env};
    return stack_start(&push_stack, "push", "t12p:", &set);
}

static int push_teardown(void **state)
{
    (void)state;
    return stack_stop(&push_stack);
}

/* "2025-08-19T17:45:00.123Z" as Unix ms, or -1. */
static long long push_iso_ms(const char *s)
{
    struct tm tm;
    int ms = 0;
    memset(&tm, 0, sizeof(tm));
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
                            &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm) * 1000 + ms;
}

/* GET /chat/{trace}/response with query (e.g. "?wait=5"). 0 or -1 as http_request. */
static int push_get(struct stack *s, const char *trace, const char *query, int timeout_ms,
                    struct http_response *r)
{
    char path[256], url[512];
    snprintf(path, sizeof(path), "/chat/%s/response%s", trace, query);
    return http_request("GET", stack_url(s, path, url, sizeof(url)), NULL, 0, timeout_ms,
                        r);
}

/* Status string of a JSON body (copied into out), "" if none. */
static void push_status(const struct http_response *r, char *out, size_t len)
{
    json_t *j = r->status != 0 ? http_json(r) : NULL;
    snprintf(out, len, "%s",
             j != NULL && http_json_str(j, "status") ? http_json_str(j, "status") : "");
    json_decref(j);
}

static int push_cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* A long-poll on a chat that takes 700 ms answers when it completes: the answer
 * arrives within 50 ms (median of three) of the completion timestamp the record
 * itself carries. */
static void push_longpoll_prompt(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    long long lag[3];
    for (int i = 0; i < 3; i++) {
        char trace[UUID_LEN + 1], msg[64], st[32];
        struct http_response r;
        snprintf(msg, sizeof(msg), "[[fake latency=700]] long-poll %d", i);
        CHECK(chat_post(s, msg, NULL, -1, trace) == 0, "POST failed");
        int rc = push_get(s, trace, "?wait=20", 25000, &r);
        long long now = clock_now_ms();
        CHECK(rc == 0 && r.status == 200, "long-poll: %ld %s", r.status, r.error);
        json_t *j = http_json(&r);
        const char *ts = j != NULL ? http_json_str(j, "timestamp") : NULL;
        snprintf(st, sizeof(st), "%s", j != NULL ? STR(http_json_str(j, "status")) : "");
        lag[i] = now - push_iso_ms(ts);
        json_decref(j);
        CHECK(strcmp(st, "completed") == 0, "long-poll answered %s: %s", st, r.body);
        CHECK(r.elapsed_ms >= 500, "answered after %lld ms, before the chat ended",
              r.elapsed_ms);
        http_response_free(&r);
        print_message("long-poll answered %lld ms after the completion timestamp\n",
                      lag[i]);
    }
    qsort(lag, 3, sizeof(lag[0]), push_cmp_ll);
    CHECK(lag[1] >= 0 && lag[1] <= 50,
          "median answer %lld ms after completion (want <= 50 ms)", lag[1]);
}

/* wait runs out: 200 processing after about the wait; 0 and a finished chat answer at
 * once; a bad wait is a 400; an unknown trace a 404 without waiting. */
static void push_longpoll_timeout(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], st[32];
    struct http_response r;

    CHECK(chat_post(s, "[[fake latency=4000]] slow", NULL, -1, trace) == 0, "POST");
    CHECK(push_get(s, trace, "?wait=1", 10000, &r) == 0 && r.status == 200,
          "wait=1: %ld %s", r.status, r.error);
    push_status(&r, st, sizeof(st));
    CHECK(strcmp(st, "processing") == 0, "wait=1 answered %s", st);
    CHECK(r.elapsed_ms >= 900 && r.elapsed_ms < 3000, "wait=1 took %lld ms",
          r.elapsed_ms);
    http_response_free(&r);

    CHECK(push_get(s, trace, "?wait=0", 10000, &r) == 0 && r.status == 200, "wait=0");
    push_status(&r, st, sizeof(st));
    CHECK(strcmp(st, "processing") == 0 && r.elapsed_ms < 900, "wait=0: %s after %lld ms",
          st, r.elapsed_ms);
    http_response_free(&r);

    static const char *const bad[] = {"?wait=abc", "?wait=-1", "?wait=1.5",
                                      "?wait=", "?wait=1e3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(push_get(s, trace, bad[i], 10000, &r) == 0, "%s: %s", bad[i], r.error);
        json_t *j = http_json(&r);
        const char *code = http_error_code(j);
        CHECK(r.status == 400 && code != NULL && strcmp(code, "invalid_wait") == 0,
              "%s answered %ld %s", bad[i], r.status, r.body);
        json_decref(j);
        http_response_free(&r);
    }

    json_t *done = chat_wait(s, trace, 20000, NULL);
    CHECK(done != NULL, "the chat did not finish");
    json_decref(done);
    CHECK(push_get(s, trace, "?wait=30", 10000, &r) == 0 && r.status == 200, "done");
    push_status(&r, st, sizeof(st));
    CHECK(strcmp(st, "completed") == 0 && r.elapsed_ms < 900,
          "a finished chat: %s after %lld ms", st, r.elapsed_ms);
    http_response_free(&r);

    CHECK(push_get(s, "3f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b", "?wait=30", 10000, &r) == 0,
          "unknown");
    CHECK(r.status == 404 && r.elapsed_ms < 900, "unknown trace: %ld after %lld ms",
          r.status, r.elapsed_ms);
    http_response_free(&r);
}

/* A long-poll in a thread of its own. */
struct push_poll {
    struct stack *s;
    char trace[UUID_LEN + 1];
    const char *query;
    int timeout_ms;
    int rc;
    long status;
    char st[32];
    long long elapsed_ms;
    pthread_t th;
};

static void *push_poll_run(void *arg)
{
    struct push_poll *p = arg;
    struct http_response r;
    p->rc = push_get(p->s, p->trace, p->query, p->timeout_ms, &r);
    p->status = r.status;
    p->elapsed_ms = r.elapsed_ms;
    push_status(&r, p->st, sizeof(p->st));
    http_response_free(&r);
    return NULL;
}

static int push_poll_start(struct push_poll *p, struct stack *s, const char *trace,
                           const char *query, int timeout_ms)
{
    memset(p, 0, sizeof(*p));
    p->s = s;
    snprintf(p->trace, sizeof(p->trace), "%s", trace);
    p->query = query;
    p->timeout_ms = timeout_ms;
    return pthread_create(&p->th, NULL, push_poll_run, p);
}

/* The api's count of waiting clients is not visible; a waiter is known to wait
 * once its thread has been blocked this long. */
#define PUSH_SETTLE_MS 300

/* The api killed (SIGKILL) under a waiting client: the client gets a connection
 * error at once, not a hang; stopped (SIGTERM): it gets its answer (processing) at
 * once. After the restart a new long-poll gets the completed chat. */
static void push_longpoll_restart(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1];
    struct push_poll p;

    CHECK(chat_post(s, "[[fake latency=5000]] restart", NULL, -1, trace) == 0, "POST");
    CHECK(push_poll_start(&p, s, trace, "?wait=30", 20000) == 0, "thread");
    harness_sleep_ms(PUSH_SETTLE_MS);
    proc_signal(s->api, SIGKILL);
    proc_wait(s->api, 5000, NULL);
    pthread_join(p.th, NULL);
    CHECK(p.rc != 0 && p.elapsed_ms < 5000,
          "after SIGKILL the client got %ld after %lld ms (want a connection error)",
          p.status, p.elapsed_ms);
    CHECK(stack_api_restart(s, "api-2", NULL) == 0, "the api did not start again");

    CHECK(push_poll_start(&p, s, trace, "?wait=30", 20000) == 0, "thread");
    harness_sleep_ms(PUSH_SETTLE_MS);
    proc_signal(s->api, SIGTERM);
    pthread_join(p.th, NULL);
    int status = -1;
    proc_wait(s->api, 10000, &status);
    CHECK(p.rc == 0 && p.status == 200 && strcmp(p.st, "processing") == 0,
          "on SIGTERM the client got rc %d, %ld %s", p.rc, p.status, p.st);
    CHECK(p.elapsed_ms < 3000, "on SIGTERM the client waited %lld ms", p.elapsed_ms);
    CHECK(stack_api_restart(s, "api-3", NULL) == 0, "the api did not start again");

    struct http_response r;
    char st[32];
    CHECK(push_get(s, trace, "?wait=30", 25000, &r) == 0 && r.status == 200,
          "after the restart: %ld %s", r.status, r.error);
    push_status(&r, st, sizeof(st));
    http_response_free(&r);
    CHECK(strcmp(st, "completed") == 0, "after the restart: %s", st);
}

/* WAIT_THREADS (4) clients wait; a fifth long-poll answers at once, and POST and
 * GET are served meanwhile. When the chats end, every waiter gets its answer. */
static void push_wait_cap(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    struct push_poll p[PUSH_WAIT_THREADS];
    char trace[UUID_LEN + 1], other[UUID_LEN + 1], st[32];
    struct http_response r;

    CHECK(chat_post(s, "[[fake latency=3000]] cap", NULL, -1, trace) == 0, "POST");
    for (int i = 0; i < PUSH_WAIT_THREADS; i++)
        CHECK(push_poll_start(&p[i], s, trace, "?wait=30", 20000) == 0, "thread");
    harness_sleep_ms(PUSH_SETTLE_MS);
    int rc = push_get(s, trace, "?wait=30", 10000, &r);
    push_status(&r, st, sizeof(st));
    long long elapsed = r.elapsed_ms;
    long status = r.status;
    http_response_free(&r);
    int posted = chat_post(s, "while they wait", NULL, -1, other);
    for (int i = 0; i < PUSH_WAIT_THREADS; i++)
        pthread_join(p[i].th, NULL);
    CHECK(rc == 0 && status == 200 && strcmp(st, "processing") == 0 && elapsed < 1500,
          "the fifth waiter got %ld %s after %lld ms (want processing at once)", status,
          st, elapsed);
    CHECK(posted == 0, "POST failed while clients waited");
    for (int i = 0; i < PUSH_WAIT_THREADS; i++)
        CHECK(p[i].rc == 0 && strcmp(p[i].st, "completed") == 0, "waiter %d got %ld %s",
              i, p[i].status, p[i].st);
}

/* ---- server-sent events ---------------------------------------------------------- */

#define PUSH_SSE_MAX 96

struct push_event {
    char id[48], type[32];
    char *data;   /* owned */
    long long ms; /* when it arrived, monotonic */
};

/* What one connection to /events saw. */
struct push_sse {
    int status;
    char head[2048];
    struct push_event ev[PUSH_SSE_MAX];
    int n;
    int heartbeats;
    char last_type[32];  /* event: of the last block, with an id or without */
    int closed;          /* the server closed the stream */
    long long closed_ms; /* when, monotonic */
    long long final_ms;  /* when the final event arrived, monotonic */
};

static void push_sse_free(struct push_sse *x)
{
    for (int i = 0; i < x->n; i++)
        free(x->ev[i].data);
    x->n = 0;
}

/* Parses one event block (without its blank line) into x. */
static void push_sse_block(struct push_sse *x, char *block)
{
    struct push_event e;
    memset(&e, 0, sizeof(e));
    int any = 0;
    for (char *line = strtok(block, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == ':') {
            x->heartbeats++;
        } else if (strncmp(line, "id: ", 4) == 0) {
            snprintf(e.id, sizeof(e.id), "%s", line + 4);
            any = 1;
        } else if (strncmp(line, "event: ", 7) == 0) {
            snprintf(e.type, sizeof(e.type), "%s", line + 7);
        } else if (strncmp(line, "data: ", 6) == 0) {
            free(e.data);
            e.data = strdup(line + 6);
        }
    }
    if (e.type[0] != '\0')
        snprintf(x->last_type, sizeof(x->last_type), "%s", e.type);
    if (any && x->n < PUSH_SSE_MAX)
        x->ev[x->n++] = e;
    else
        free(e.data);
}

/* Connects to GET /chat/{trace}/events (with Last-Event-ID last, unless NULL) and
 * reads until the server closes, timeout_ms passes, or (leave_after not NULL) an
 * event of that type arrived, after which it hangs up. Returns 0, or -1 if it
 * could not connect. */
static int push_sse_read_n(struct stack *s, const char *trace, const char *last,
                           const char *leave_after, int leave_count, int timeout_ms,
                           struct push_sse *x);

static int push_sse_read(struct stack *s, const char *trace, const char *last,
                         const char *leave_after, int timeout_ms, struct push_sse *x)
{
    return push_sse_read_n(s, trace, last, leave_after, 1, timeout_ms, x);
}

/* As push_sse_read, leaving after the leave_count-th event of type leave_after. */
static int push_sse_read_n(struct stack *s, const char *trace, const char *last,
                           const char *leave_after, int leave_count, int timeout_ms,
                           struct push_sse *x)
{
    int seen = 0;
    memset(x, 0, sizeof(*x));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(s->api_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[512];
    int len = snprintf(req, sizeof(req),
                       "GET /chat/%s/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Accept: text/event-stream\r\n%s%s%s\r\n",
                       trace, last ? "Last-Event-ID: " : "", last ? last : "",
                       last ? "\r\n" : "");
    if (write(fd, req, (size_t)len) != len) {
        close(fd);
        return -1;
    }
    size_t cap = 1 << 16, used = 0, parsed = 0;
    char *buf = calloc(1, cap + 1);
    long long end = clock_mono_ms() + timeout_ms;
    int in_body = 0, leave = 0;
    while (buf != NULL && !leave && clock_mono_ms() < end && used < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t n = read(fd, buf + used, cap - used);
        if (n <= 0) {
            x->closed = 1;
            x->closed_ms = clock_mono_ms();
            break;
        }
        used += (size_t)n;
        buf[used] = '\0';
        if (!in_body) {
            char *sep = strstr(buf, "\r\n\r\n");
            if (sep == NULL)
                continue;
            size_t hl = (size_t)(sep - buf);
            snprintf(x->head, sizeof(x->head), "%.*s", (int)hl, buf);
            sscanf(buf, "HTTP/1.1 %d", &x->status);
            parsed = hl + 4;
            in_body = 1;
        }
        char *blank;
        while ((blank = strstr(buf + parsed, "\n\n")) != NULL) {
            *blank = '\0';
            int before = x->n;
            push_sse_block(x, buf + parsed);
            if (x->n > before)
                x->ev[x->n - 1].ms = clock_mono_ms();
            parsed = (size_t)(blank - buf) + 2;
            if (x->n > before && strcmp(x->ev[x->n - 1].type, "completed") == 0)
                x->final_ms = clock_mono_ms();
            if (x->n > before && leave_after != NULL &&
                strcmp(x->ev[x->n - 1].type, leave_after) == 0 && ++seen >= leave_count)
                leave = 1;
        }
    }
    free(buf);
    close(fd);
    return 0;
}

/* The ids of the chat's events in Redis (its hash's "ev:n" fields), in order, into
 * ids; returns how many, or -1. */
static int push_stream_ids(struct stack *s, const char *trace, char ids[][48], int max)
{
    char key[KEYS_MAX + UUID_LEN + 1];
    keys_trace(&s->keys, trace, key, sizeof(key));
    redisReply *r = stack_redis(s, "HGET %s %s", key, EVENTS_LAST);
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return -1;
    }
    int n = atoi(r->str);
    freeReplyObject(r);
    for (int i = 1; i <= n && i <= max; i++) {
        r = stack_redis(s, "HEXISTS %s " EVENTS_FIELD "%d", key, i);
        int there = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        freeReplyObject(r);
        if (!there)
            return -1;
        snprintf(ids[i - 1], 48, "%d", i);
    }
    return n;
}

/* A chat that fails twice (each failure after 600 ms) and then completes. One
 * client leaves after the first "processing"; a second comes back with its id
 * as Last-Event-ID and gets exactly the rest, with heartbeats in the quiet
 * stretches, and the stream closes right after "completed". */
static void push_sse_resume(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], ids[PUSH_SSE_MAX][48];
    struct push_sse a, b;

    CHECK(chat_post(s, "[[fake status=500 times=2 latency=600]] sse resume", NULL, -1,
                    trace) == 0,
          "POST");
    CHECK(push_sse_read(s, trace, NULL, "processing", 10000, &a) == 0, "connect");
    CHECK(a.status == 200 && strstr(a.head, "Content-Type: text/event-stream") != NULL,
          "first stream: %d %s", a.status, a.head);
    CHECK(a.n == 2 && strcmp(a.ev[0].type, "queued") == 0 &&
              strcmp(a.ev[1].type, "processing") == 0,
          "first stream: %d events, then %s", a.n, a.n > 0 ? a.ev[a.n - 1].type : "-");
    CHECK(strstr(a.ev[1].data, "\"attempt\":1") != NULL, "processing: %s", a.ev[1].data);

    CHECK(push_sse_read(s, trace, a.ev[1].id, NULL, 20000, &b) == 0, "reconnect");
    CHECK(b.status == 200 && b.closed, "second stream: status %d, closed %d", b.status,
          b.closed);
    int n = push_stream_ids(s, trace, ids, PUSH_SSE_MAX);
    CHECK(n == a.n + b.n, "Redis holds %d events; the client got %d + %d", n, a.n, b.n);
    for (int i = 0; i < n; i++) {
        const struct push_event *e = i < a.n ? &a.ev[i] : &b.ev[i - a.n];
        CHECK(strcmp(e->id, ids[i]) == 0, "event %d: id %s, Redis has %s", i, e->id,
              ids[i]);
    }
    static const char *const want[] = {"queued",   "processing", "retrying", "processing",
                                       "retrying", "processing", "completed"};
    CHECK(n == 7, "%d events, want 7", n);
    for (int i = 0; i < 7; i++) {
        const struct push_event *e = i < a.n ? &a.ev[i] : &b.ev[i - a.n];
        CHECK(strcmp(e->type, want[i]) == 0, "event %d is %s, want %s", i, e->type,
              want[i]);
    }
    CHECK(strstr(b.ev[0].data, "\"delay_ms\":") != NULL, "retrying: %s", b.ev[0].data);
    CHECK(strstr(b.ev[3].data, "\"attempt\":3") != NULL, "processing: %s", b.ev[3].data);
    json_t *j = json_loads(b.ev[4].data, 0, NULL);
    CHECK(j != NULL && strcmp(STR(http_json_str(j, "status")), "completed") == 0 &&
              strstr(STR(http_json_str(j, "response")), "sse resume") != NULL,
          "completed: %s", b.ev[4].data);
    json_decref(j);
    CHECK(b.heartbeats >= 1, "no heartbeat in %d events over the retries", b.n);
    CHECK(b.closed_ms - b.final_ms < 1000, "the stream stayed open %lld ms after the end",
          b.closed_ms - b.final_ms);
    push_sse_free(&a);
    push_sse_free(&b);
}

/* After the end: a new client gets every event and the close; one that has seen
 * the final event gets 204; a chat without events its record as the one event;
 * an unknown trace 404; a bad Last-Event-ID 400. */
static void push_sse_after_end(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1];
    struct push_sse a;

    CHECK(chat_post(s, "sse after the end", NULL, -1, trace) == 0, "POST");
    json_t *done = chat_wait(s, trace, 20000, NULL);
    CHECK(done != NULL, "the chat did not finish");
    json_decref(done);
    CHECK(push_sse_read(s, trace, NULL, NULL, 10000, &a) == 0, "connect");
    CHECK(a.status == 200 && a.closed && a.n == 3 &&
              strcmp(a.ev[2].type, "completed") == 0,
          "status %d, closed %d, %d events", a.status, a.closed, a.n);
    char final_id[48];
    snprintf(final_id, sizeof(final_id), "%s", a.ev[2].id);
    push_sse_free(&a);

    CHECK(push_sse_read(s, trace, final_id, NULL, 10000, &a) == 0, "connect");
    CHECK(a.status == 204 && a.n == 0, "after the final event: %d, %d events", a.status,
          a.n);
    /* A chat without events (made before they were kept): its record, then the
     * end. */
    char key[KEYS_MAX + UUID_LEN + 1];
    keys_trace(&s->keys, trace, key, sizeof(key));
    freeReplyObject(stack_redis(s,
                                "HDEL %s " EVENTS_LAST " " EVENTS_FIELD "1 " EVENTS_FIELD
                                "2 " EVENTS_FIELD "3",
                                key));
    CHECK(push_sse_read(s, trace, NULL, NULL, 10000, &a) == 0, "connect");
    CHECK(a.status == 200 && a.closed && a.n == 0 && a.heartbeats == 0,
          "without events: status %d, closed %d, %d events with ids", a.status, a.closed,
          a.n);
    CHECK(a.last_type[0] != '\0' && strcmp(a.last_type, "completed") == 0,
          "without events: last event '%s'", a.last_type);
    push_sse_free(&a);
    CHECK(push_sse_read(s, trace, "12-0", NULL, 10000, &a) == 0, "connect");
    CHECK(a.status == 400, "a bad Last-Event-ID: %d", a.status);
    CHECK(push_sse_read(s, "3f2b8c1e-7d4a-4e5f-9a6b-0c1d2e3f4a5b", NULL, NULL, 10000,
                        &a) == 0,
          "connect");
    CHECK(a.status == 404, "an unknown trace: %d", a.status);
}

/* ---- token streaming ------------------------------------------------------------ */

/* POST /chat {"message": message, "stream": true}; the traceId into trace. */
static int push_post_stream(struct stack *s, const char *message,
                            char trace[UUID_LEN + 1])
{
    char url[256];
    struct http_response r;
    json_t *req = json_pack("{s:s, s:b}", "message", message, "stream", 1);
    char *text = json_dumps(req, JSON_COMPACT);
    int rc = -1;
    json_decref(req);
    if (text != NULL && http_request("POST", stack_url(s, "/chat", url, sizeof(url)),
                                     text, strlen(text), 10000, &r) == 0) {
        json_t *j = r.status == 202 ? http_json(&r) : NULL;
        const char *id = j != NULL ? http_json_str(j, "traceId") : NULL;
        if (id != NULL && strlen(id) == UUID_LEN) {
            memcpy(trace, id, UUID_LEN + 1);
            rc = 0;
        } else {
            fprintf(stderr, "POST stream: %ld %s\n", r.status, STR(r.body));
        }
        json_decref(j);
    }
    http_response_free(&r);
    free(text);
    return rc;
}

/* The text of a delta event's data, appended to out (at most outlen). Returns 0,
 * or -1 if the data is not {"traceId": trace, "delta": string}. */
static int push_delta_text(const struct push_event *e, const char *trace, char *out,
                           size_t outlen)
{
    json_t *j = json_loads(STR(e->data), 0, NULL);
    const char *t = j != NULL ? http_json_str(j, "traceId") : NULL;
    const char *d = j != NULL ? http_json_str(j, "delta") : NULL;
    int rc = -1;
    if (t != NULL && strcmp(t, trace) == 0 && d != NULL &&
        strlen(out) + strlen(d) < outlen) {
        strcat(out, d);
        rc = 0;
    }
    json_decref(j);
    return rc;
}

/* The final response of trace, copied into out. */
static void push_final_response(struct stack *s, const char *trace, char *out,
                                size_t outlen)
{
    json_t *j = chat_wait(s, trace, 20000, NULL);
    snprintf(out, outlen, "%s", j != NULL ? STR(http_json_str(j, "response")) : "");
    json_decref(j);
}

/* The chat completes, and its response is text, what its deltas added up to. */
static void push_check_adds_up(struct stack *s, const char *trace, const char *text)
{
    char final[4096];
    push_final_response(s, trace, final, sizeof(final));
    CHECK(final[0] != '\0' && strcmp(text, final) == 0,
          "the deltas add up to '%s', the response is '%s'", text, final);
}

/* A streamed chat: delta events arrive one by one before completed (the first
 * at least 500 ms before it), in order of their ids, and add up to the final
 * response. */
static void push_stream_deltas(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], text[4096] = "";
    struct push_sse a;

    CHECK(push_post_stream(s, "[[fake chunk-ms=150]] one two three four five six",
                           trace) == 0,
          "POST");
    CHECK(push_sse_read(s, trace, NULL, NULL, 20000, &a) == 0, "connect");
    CHECK(a.status == 200 && a.closed, "status %d, closed %d", a.status, a.closed);
    int deltas = 0;
    long long first_ms = -1;
    for (int i = 0; i < a.n; i++) {
        CHECK(i == 0 || atoll(a.ev[i].id) == atoll(a.ev[i - 1].id) + 1,
              "event %d has id %s after %s", i, a.ev[i].id, a.ev[i - 1].id);
        if (strcmp(a.ev[i].type, EVENTS_DELTA) != 0)
            continue;
        deltas++;
        if (first_ms < 0)
            first_ms = a.ev[i].ms;
        CHECK(push_delta_text(&a.ev[i], trace, text, sizeof(text)) == 0, "delta %d: %s",
              i, STR(a.ev[i].data));
        CHECK(i + 1 < a.n, "a delta is the last event");
    }
    /* The words come over about 1.6 s: the first must be seen long before the end,
     * not written in a burst when the call is over. */
    CHECK(first_ms >= 0 && a.final_ms - first_ms >= 500,
          "the first delta came %lld ms before completed", a.final_ms - first_ms);
    CHECK(a.n >= 2 && strcmp(a.ev[a.n - 1].type, "completed") == 0,
          "the last of %d events is %s", a.n, a.n > 0 ? a.ev[a.n - 1].type : "-");
    /* 11 words 150 ms apart, written at most every 50 ms: several deltas. */
    CHECK(deltas >= 4, "only %d delta events of %d", deltas, a.n);
    push_check_adds_up(s, trace, text);
    push_sse_free(&a);
}

/* A client leaves after three deltas and comes back with the last id it got: it
 * gets exactly the remaining deltas and completed (checked against the ids in
 * Redis), and both halves add up to the response. */
static void push_stream_resume(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], text[4096] = "", ids[PUSH_SSE_MAX][48];
    struct push_sse a, b;

    CHECK(push_post_stream(s, "[[fake chunk-ms=200]] alpha beta gamma delta epsilon zeta",
                           trace) == 0,
          "POST");
    CHECK(push_sse_read_n(s, trace, NULL, EVENTS_DELTA, 3, 20000, &a) == 0, "connect");
    CHECK(a.status == 200 && a.n >= 3 && strcmp(a.ev[a.n - 1].type, EVENTS_DELTA) == 0,
          "first stream: %d, %d events, last %s", a.status, a.n,
          a.n > 0 ? a.ev[a.n - 1].type : "-");
    CHECK(push_sse_read(s, trace, a.ev[a.n - 1].id, NULL, 20000, &b) == 0, "reconnect");
    CHECK(b.status == 200 && b.closed && b.n >= 2,
          "second stream: %d, closed %d, %d events", b.status, b.closed, b.n);
    CHECK(strcmp(b.ev[0].type, EVENTS_DELTA) == 0,
          "the second stream starts with %s, not a delta (left too late?)", b.ev[0].type);
    CHECK(strcmp(b.ev[b.n - 1].type, "completed") == 0, "the second stream ends with %s",
          b.ev[b.n - 1].type);
    int n = push_stream_ids(s, trace, ids, PUSH_SSE_MAX);
    CHECK(n == a.n + b.n, "Redis holds %d events; the client got %d + %d", n, a.n, b.n);
    for (int i = 0; i < n; i++) {
        const struct push_event *e = i < a.n ? &a.ev[i] : &b.ev[i - a.n];
        CHECK(strcmp(e->id, ids[i]) == 0, "event %d: id %s, Redis has %s", i, e->id,
              ids[i]);
        if (strcmp(e->type, EVENTS_DELTA) == 0)
            CHECK(push_delta_text(e, trace, text, sizeof(text)) == 0, "delta %d: %s", i,
                  STR(e->data));
    }
    push_check_adds_up(s, trace, text);
    push_sse_free(&a);
    push_sse_free(&b);
}

/* The first attempt's stream breaks half-way (the fake resets the connection):
 * its deltas are followed by retrying, and the second attempt's deltas start the
 * answer over: they alone add up to the response, and the first attempt's text
 * was the start of it. */
static void push_stream_retry(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], before[4096] = "", after[4096] = "", final[4096];
    struct push_sse a;

    CHECK(push_post_stream(s, "[[fake reset times=1]] retried after half a stream",
                           trace) == 0,
          "POST");
    CHECK(push_sse_read(s, trace, NULL, NULL, 20000, &a) == 0, "connect");
    CHECK(a.status == 200 && a.closed && a.n >= 2 &&
              strcmp(a.ev[a.n - 1].type, "completed") == 0,
          "status %d, closed %d, %d events, the last %s", a.status, a.closed, a.n,
          a.n > 0 ? a.ev[a.n - 1].type : "-");
    int retried = 0, early = 0;
    for (int i = 0; i < a.n; i++) {
        if (strcmp(a.ev[i].type, "retrying") == 0) {
            retried++;
            continue;
        }
        if (strcmp(a.ev[i].type, EVENTS_DELTA) != 0)
            continue;
        early += !retried;
        CHECK(push_delta_text(&a.ev[i], trace, retried ? after : before,
                              retried ? sizeof(after) : sizeof(before)) == 0,
              "delta %d: %s", i, STR(a.ev[i].data));
    }
    CHECK(retried == 1, "%d retrying events", retried);
    CHECK(early >= 1, "no delta before the stream broke");
    push_final_response(s, trace, final, sizeof(final));
    CHECK(final[0] != '\0' && strcmp(after, final) == 0,
          "the second attempt's deltas add up to '%s', the response is '%s'", after,
          final);
    CHECK(strlen(before) < strlen(final) && strncmp(before, final, strlen(before)) == 0,
          "the broken attempt's text '%s' is not the start of '%s'", before, final);
    push_sse_free(&a);
}

/* An error status to a streamed request is handled as without stream: the 503
 * is retried (no delta before the retrying), and the next attempt streams. */
static void push_stream_error_status(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], text[4096] = "";
    struct push_sse a;

    CHECK(push_post_stream(s, "[[fake status=503 times=1]] streamed after a 503",
                           trace) == 0,
          "POST");
    CHECK(push_sse_read(s, trace, NULL, NULL, 20000, &a) == 0, "connect");
    CHECK(a.status == 200 && a.closed && a.n >= 2 &&
              strcmp(a.ev[a.n - 1].type, "completed") == 0,
          "status %d, closed %d, %d events, the last %s", a.status, a.closed, a.n,
          a.n > 0 ? a.ev[a.n - 1].type : "-");
    int retried = 0, deltas = 0;
    for (int i = 0; i < a.n; i++) {
        if (strcmp(a.ev[i].type, "retrying") == 0)
            retried++;
        if (strcmp(a.ev[i].type, EVENTS_DELTA) != 0)
            continue;
        CHECK(retried == 1, "delta %d before the retrying", i);
        deltas++;
        CHECK(push_delta_text(&a.ev[i], trace, text, sizeof(text)) == 0, "delta %d: %s",
              i, STR(a.ev[i].data));
    }
    CHECK(retried == 1 && deltas >= 1, "%d retrying, %d deltas", retried, deltas);
    push_check_adds_up(s, trace, text);
    push_sse_free(&a);
}

/* More events than the api reads at once (32): a client that comes after the
 * end, and one that resumes from event 5, get every event after theirs once,
 * in order, and the deltas add up to the response. */
static void push_stream_long(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], msg[512] = "[[fake chunk-ms=60]]", final[4096];
    struct push_sse a, b;

    for (int i = 0; i < 45; i++)
        snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), " w%d", i);
    CHECK(push_post_stream(s, msg, trace) == 0, "POST");
    push_final_response(s, trace, final, sizeof(final));
    CHECK(final[0] != '\0', "the chat did not complete");
    CHECK(push_sse_read(s, trace, NULL, NULL, 20000, &a) == 0, "connect");
    CHECK(push_sse_read(s, trace, "5", NULL, 20000, &b) == 0, "connect from 5");
    CHECK(a.status == 200 && a.closed && a.n > 40 && b.status == 200 && b.closed &&
              b.n == a.n - 5,
          "%d events (status %d), from 5: %d (status %d)", a.n, a.status, b.n, b.status);
    char text[4096] = "";
    for (int i = 0; i < a.n; i++) {
        CHECK(atoll(a.ev[i].id) == i + 1, "event %d has id %s", i, a.ev[i].id);
        CHECK(strcmp(b.ev[i < 5 ? 0 : i - 5].id, i < 5 ? "6" : a.ev[i].id) == 0,
              "resumed event %d has id %s", i - 5, b.ev[i < 5 ? 0 : i - 5].id);
        if (strcmp(a.ev[i].type, EVENTS_DELTA) == 0)
            CHECK(push_delta_text(&a.ev[i], trace, text, sizeof(text)) == 0,
                  "delta %d: %s", i, STR(a.ev[i].data));
    }
    CHECK(strcmp(a.ev[a.n - 1].type, "completed") == 0, "the last event is %s",
          a.ev[a.n - 1].type);
    /* All at once: none of them waits for a heartbeat's wake-up. */
    CHECK(a.heartbeats == 0 && b.heartbeats == 0, "heartbeats: %d, %d", a.heartbeats,
          b.heartbeats);
    CHECK(strcmp(text, final) == 0, "the deltas add up to '%s', the response is '%s'",
          text, final);
    push_sse_free(&a);
    push_sse_free(&b);
}

/* A streamed answer's record is the one a plain call makes: the model, the usage
 * (from the stream's last chunk) and the finish_reason (here "length"). */
static void push_stream_record(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], key[KEYS_MAX + UUID_LEN + 1];

    CHECK(push_post_stream(s, "[[fake finish=length]] usage and finish", trace) == 0,
          "POST");
    json_t *j = chat_wait(s, trace, 20000, NULL);
    CHECK(j != NULL, "the chat did not finish");
    json_t *usage = json_object_get(j, "usage");
    const char *status = http_json_str(j, "status"), *model = http_json_str(j, "model");
    json_int_t prompt = json_integer_value(json_object_get(usage, "prompt_tokens"));
    json_int_t completion =
        json_integer_value(json_object_get(usage, "completion_tokens"));
    json_int_t total = json_integer_value(json_object_get(usage, "total_tokens"));
    /* The fake counts the words of its answer, "Fake answer to: " and the message. */
    int ok = status != NULL && strcmp(status, "completed") == 0 && model != NULL &&
             model[0] != '\0' && prompt > 0 && completion == 8 &&
             total == prompt + completion;
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    CHECK(ok, "record: %s", STR(text));
    free(text);
    keys_trace(&s->keys, trace, key, sizeof(key));
    redisReply *r = stack_redis(s, "HGET %s %s", key, "finish_reason");
    int length =
        r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, "length") == 0;
    freeReplyObject(r);
    CHECK(length, "finish_reason is not length");
}

/* Without "stream" no delta is written; "stream" must be a boolean; a retry with
 * the same Idempotency-Key that adds it is another request (422). */
static void push_stream_off(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], url[256];
    struct push_sse a;
    struct http_response r;

    CHECK(chat_post(s, "[[fake chunk-ms=100]] not streamed at all", NULL, -1, trace) == 0,
          "POST");
    CHECK(push_sse_read(s, trace, NULL, NULL, 20000, &a) == 0, "connect");
    CHECK(a.status == 200 && a.closed && a.n == 3 &&
              strcmp(a.ev[2].type, "completed") == 0,
          "status %d, closed %d, %d events, the last %s", a.status, a.closed, a.n,
          a.n > 0 ? a.ev[a.n - 1].type : "-");
    for (int i = 0; i < a.n; i++)
        CHECK(strcmp(a.ev[i].type, EVENTS_DELTA) != 0, "event %d is a delta", i);
    push_sse_free(&a);

    static const char body[] = "{\"message\":\"hi\",\"stream\":\"yes\"}";
    CHECK(http_request("POST", stack_url(s, "/chat", url, sizeof(url)), body,
                       strlen(body), 10000, &r) == 0,
          "POST: %s", r.error);
    json_t *j = r.status == 400 ? http_json(&r) : NULL;
    json_t *err = j != NULL ? json_object_get(j, "error") : NULL;
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    CHECK(r.status == 400 && code != NULL && strcmp(code, "invalid_field") == 0 &&
              msg != NULL && strstr(msg, "'stream' must be a boolean") != NULL,
          "\"stream\": \"yes\" answered %ld %s", r.status, STR(r.body));
    json_decref(j);
    http_response_free(&r);

    /* stream is part of the request an Idempotency-Key stands for. */
    static const char *const key[] = {"Idempotency-Key: push-stream-off-1", NULL};
    static const char plain[] = "{\"message\":\"keyed\"}";
    static const char streamed[] = "{\"message\":\"keyed\",\"stream\":true}";
    long st[3];
    const char *bodies[3] = {plain, plain, streamed};
    for (int i = 0; i < 3; i++) {
        CHECK(http_request_with("POST", stack_url(s, "/chat", url, sizeof(url)), key,
                                bodies[i], strlen(bodies[i]), 10000, &r) == 0,
              "POST %d: %s", i, r.error);
        st[i] = r.status;
        http_response_free(&r);
    }
    CHECK(st[0] == 202 && st[1] == 202 && st[2] == 422,
          "the same key: %ld, again %ld, with stream %ld (want 202, 202, 422)", st[0],
          st[1], st[2]);
}

/* Redis restarted under a waiting client: the client gets an answer (503 while
 * Redis is away, or the completed chat), not a hang; afterwards the api's
 * subscriber is back, so a long-poll on a new chat ends with its completion, not
 * with an error or its timeout. */
static void push_redis_restart(void **state)
{
    (void)state;
    struct stack *s = &push_stack;
    char trace[UUID_LEN + 1], st[32];
    struct push_poll p;
    struct http_response r;

    CHECK(chat_post(s, "[[fake latency=2500]] redis restart", NULL, -1, trace) == 0,
          "POST");
    CHECK(push_poll_start(&p, s, trace, "?wait=20", 25000) == 0, "thread");
    harness_sleep_ms(PUSH_SETTLE_MS);
    int down = stack_redis_stop(s) == 0;
    int up = stack_redis_start(s) == 0;
    pthread_join(p.th, NULL);
    CHECK(down && up, "redis-server did not restart");
    CHECK(p.rc == 0 && (p.status == 503 || strcmp(p.st, "completed") == 0),
          "across the restart the client got rc %d, %ld %s", p.rc, p.status, p.st);
    CHECK(p.elapsed_ms < 15000, "across the restart the client waited %lld ms",
          p.elapsed_ms);
    /* A new chat, still running when the long-poll starts: only the subscriber can
     * end its wait with completed. */
    CHECK(chat_post(s, "[[fake latency=1000]] after the restart", NULL, -1, trace) == 0,
          "POST after the restart");
    CHECK(push_get(s, trace, "?wait=20", 25000, &r) == 0 && r.status == 200,
          "after the restart: %ld %s", r.status, r.error);
    push_status(&r, st, sizeof(st));
    long long elapsed = r.elapsed_ms;
    http_response_free(&r);
    CHECK(strcmp(st, "completed") == 0 && elapsed >= 500 && elapsed < 15000,
          "after the restart: %s after %lld ms", st, elapsed);
}

static const struct CMUnitTest push_tests[] = {
    cmocka_unit_test(push_sse_resume),
    cmocka_unit_test(push_sse_after_end),
    cmocka_unit_test(push_longpoll_prompt),
    cmocka_unit_test(push_longpoll_timeout),
    cmocka_unit_test(push_wait_cap),
    cmocka_unit_test(push_longpoll_restart),
    cmocka_unit_test(push_redis_restart),
    cmocka_unit_test(push_stream_deltas),
    cmocka_unit_test(push_stream_resume),
    cmocka_unit_test(push_stream_retry),
    cmocka_unit_test(push_stream_error_status),
    cmocka_unit_test(push_stream_long),
    cmocka_unit_test(push_stream_record),
    cmocka_unit_test(push_stream_off),
};

const struct suite_group suite_push = {"push", push_tests,
                                       sizeof(push_tests) / sizeof(push_tests[0]),
                                       push_setup, push_teardown};
