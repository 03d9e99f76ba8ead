/* floor.c - the floors `make bench` measures chatq-api against.
 *
 * A civetweb server configured like the api (keep-alive, tcp_nodelay=1,
 * num_threads 64) that does the least work a request of each kind can cost:
 *
 *   --mode bare     read the body, write a fixed reply            (floor a)
 *   --mode xadd     + one pipelined XADD + HSET round trip         (floor b)
 *   --mode hgetall  + one HGETALL of the trace's hash              (floor c)
 *
 * It answers the api's routes (POST /chat -> 202 {"traceId":...},
 * GET /chat/{id}/response, GET /health) so the same load generator drives both.
 * The trace ids written by --mode xadd are the keys --mode hgetall reads, so
 * floor c reads hashes of the same shape and size as the api does.
 *
 * One hiredis context per civetweb worker thread (init_thread /
 * mg_get_thread_pointer): hiredis contexts are not thread-safe. Every reply is
 * one mg_write of headers and body. Runs until SIGINT or SIGTERM. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <civetweb.h>
#include <hiredis/hiredis.h>

#define FLOOR_BODY_MAX 65536
#define FLOOR_ID_LEN 36

enum floor_mode { FLOOR_BARE, FLOOR_XADD, FLOOR_HGETALL };

struct config {
    enum floor_mode mode;
    const char *port;
    const char *threads;
    const char *redis_host;
    int redis_port;
    const char *prefix;
};

static struct config cfg = {FLOOR_BARE, "8090", "64", "127.0.0.1", 6379, "floor:"};

/* Per worker thread: its Redis connection (NULL until first use or after an
 * error) and the state of its id generator. */
struct worker {
    redisContext *rc;
    uint64_t rng;
};

static void *floor_init_thread(const struct mg_context *ctx, int thread_type)
{
    (void)ctx;
    if (thread_type != 1)
        return NULL;
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    w->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uintptr_t)w;
    return w;
}

static void floor_exit_thread(const struct mg_context *ctx, int thread_type, void *p)
{
    (void)ctx;
    (void)thread_type;
    struct worker *w = p;
    if (w == NULL)
        return;
    if (w->rc != NULL)
        redisFree(w->rc);
    free(w);
}

static uint64_t floor_rand(struct worker *w)
{
    /* xorshift64*: ids only need to be unique within one bench run. */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 0x2545F4914F6CDD1DULL;
}

/* Writes a UUID-shaped id (36 chars + NUL) into out. */
static void floor_new_id(struct worker *w, char *out)
{
    uint64_t a = floor_rand(w), b = floor_rand(w);
    snprintf(out, FLOOR_ID_LEN + 1,
             "%08" PRIx32 "-%04" PRIx32 "-4%03" PRIx32 "-%04" PRIx32 "-%012" PRIx64,
             (uint32_t)(a >> 32), (uint32_t)(a >> 16) & 0xffff, (uint32_t)a & 0xfff,
             ((uint32_t)(b >> 48) & 0x3fff) | 0x8000, b & (uint64_t)0xffffffffffff);
}

/* Returns the thread's connection, connecting on first use; NULL on failure. */
static redisContext *floor_redis(struct worker *w)
{
    if (w == NULL)
        return NULL;
    if (w->rc != NULL && w->rc->err == 0)
        return w->rc;
    if (w->rc != NULL) {
        redisFree(w->rc);
        w->rc = NULL;
    }
    redisContext *rc = redisConnect(cfg.redis_host, cfg.redis_port);
    if (rc == NULL)
        return NULL;
    if (rc->err != 0) {
        fprintf(stderr, "floor: redis %s:%d: %s\n", cfg.redis_host, cfg.redis_port,
                rc->errstr);
        redisFree(rc);
        return NULL;
    }
    w->rc = rc;
    return rc;
}

/* One mg_write of the status line, headers and body. */
static int floor_reply(struct mg_connection *conn, int status, const char *body,
                       size_t len)
{
    char buf[1024];
    const char *reason = status == 200   ? "OK"
                         : status == 202 ? "Accepted"
                         : status == 404 ? "Not Found"
                                         : "Error";
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     status, reason, len);
    if (n < 0 || (size_t)n + len > sizeof(buf))
        return 500;
    memcpy(buf + n, body, len);
    mg_write(conn, buf, (size_t)n + len);
    return status;
}

/* Reads the whole body into buf (at most max bytes); returns its length or -1. */
static long floor_read_body(struct mg_connection *conn, char *buf, size_t max)
{
    size_t len = 0;
    /* Bounded: each round either reads at least one byte or ends the loop. */
    while (len < max) {
        int n = mg_read(conn, buf + len, max - len);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    return (long)len;
}

static int floor_post(struct mg_connection *conn, struct worker *w)
{
    char body[4096];
    long len = floor_read_body(conn, body, sizeof(body));
    if (len == (long)sizeof(body)) {
        /* Longer than any bench body: drain the rest, keep the first 4 KiB. */
        char sink[4096];
        for (int i = 0; i < FLOOR_BODY_MAX / (int)sizeof(sink); i++)
            if (floor_read_body(conn, sink, sizeof(sink)) < (long)sizeof(sink))
                break;
    }
    if (len < 0)
        return floor_reply(conn, 500, "{\"error\":\"read\"}", 16);

    char id[FLOOR_ID_LEN + 1] = "00000000-0000-4000-8000-000000000000";
    if (cfg.mode == FLOOR_XADD) {
        redisContext *rc = floor_redis(w);
        if (rc == NULL)
            return floor_reply(conn, 503, "{\"error\":\"redis\"}", 17);
        floor_new_id(w, id);
        char key[128];
        snprintf(key, sizeof(key), "%strace:%s", cfg.prefix, id);
        /* The same shape as the api's pending record and request entry. */
        redisAppendCommand(rc, "XADD %srequests * trace %s message %b", cfg.prefix, id,
                           body, (size_t)len);
        redisAppendCommand(rc,
                           "HSET %s trace %s status processing message %b "
                           "model gpt-3.5-turbo temperature 0.7",
                           key, id, body, (size_t)len);
        int ok = 1;
        for (int i = 0; i < 2; i++) {
            redisReply *r = NULL;
            if (redisGetReply(rc, (void **)&r) != REDIS_OK || r == NULL) {
                ok = 0;
                break;
            }
            if (r->type == REDIS_REPLY_ERROR)
                ok = 0;
            freeReplyObject(r);
        }
        if (!ok)
            return floor_reply(conn, 503, "{\"error\":\"redis\"}", 17);
    }
    char out[160];
    int n = snprintf(out, sizeof(out),
                     "{\"traceId\":\"%s\",\"message\":\"Chat request accepted\","
                     "\"status\":\"processing\"}",
                     id);
    return floor_reply(conn, 202, out, (size_t)n);
}

static int floor_get(struct mg_connection *conn, struct worker *w, const char *uri)
{
    if (cfg.mode != FLOOR_HGETALL)
        return floor_reply(conn, 200, "{\"status\":\"processing\"}", 23);
    /* /chat/{id}/response */
    const char *id = uri + strlen("/chat/");
    const char *end = strchr(id, '/');
    size_t idlen = end != NULL ? (size_t)(end - id) : strlen(id);
    if (idlen == 0 || idlen > 64)
        return floor_reply(conn, 404, "{\"error\":\"not found\"}", 21);
    redisContext *rc = floor_redis(w);
    if (rc == NULL)
        return floor_reply(conn, 503, "{\"error\":\"redis\"}", 17);
    redisReply *r = redisCommand(rc, "HGETALL %strace:%b", cfg.prefix, id, idlen);
    if (r == NULL)
        return floor_reply(conn, 503, "{\"error\":\"redis\"}", 17);
    int status = 404;
    char out[512];
    int n = snprintf(out, sizeof(out), "{\"error\":\"not found\"}");
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
        const char *st = "unknown";
        for (size_t i = 0; i + 1 < r->elements; i += 2)
            if (strcmp(r->element[i]->str, "status") == 0)
                st = r->element[i + 1]->str;
        n = snprintf(out, sizeof(out),
                     "{\"traceId\":\"%.*s\",\"status\":\"%s\",\"fields\":%zu}",
                     (int)idlen, id, st, r->elements / 2);
        status = 200;
    }
    freeReplyObject(r);
    if (n < 0 || (size_t)n >= sizeof(out))
        n = 0;
    return floor_reply(conn, status, out, (size_t)n);
}

static int floor_chat(struct mg_connection *conn, void *data)
{
    (void)data;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct worker *w = mg_get_thread_pointer(conn);
    if (strcmp(ri->request_method, "POST") == 0 && strcmp(ri->local_uri, "/chat") == 0)
        return floor_post(conn, w);
    if (strcmp(ri->request_method, "GET") == 0 &&
        strncmp(ri->local_uri, "/chat/", 6) == 0)
        return floor_get(conn, w, ri->local_uri);
    return floor_reply(conn, 404, "{\"error\":\"not found\"}", 21);
}

static int floor_health(struct mg_connection *conn, void *data)
{
    (void)data;
    return floor_reply(conn, 200, "{\"status\":\"ok\"}", 15);
}

static int floor_log(const struct mg_connection *conn, const char *msg)
{
    (void)conn;
    (void)msg;
    return 1; /* civetweb's own error lines would only slow the floor down */
}

static void floor_usage(FILE *out)
{
    fprintf(out,
            "usage: floor --mode bare|xadd|hgetall [--port N] [--threads N]\n"
            "             [--redis-host H] [--redis-port N] [--prefix P]\n"
            "  defaults: --mode bare --port 8090 --threads 64 --redis-host 127.0.0.1\n"
            "            --redis-port 6379 --prefix floor:\n");
}

static int floor_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            floor_usage(stdout);
            exit(0);
        }
        if (v == NULL) {
            fprintf(stderr, "floor: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "bare") == 0)
                cfg.mode = FLOOR_BARE;
            else if (strcmp(v, "xadd") == 0)
                cfg.mode = FLOOR_XADD;
            else if (strcmp(v, "hgetall") == 0)
                cfg.mode = FLOOR_HGETALL;
            else {
                fprintf(stderr, "floor: --mode: unknown mode '%s'\n", v);
                return -1;
            }
        } else if (strcmp(a, "--port") == 0) {
            cfg.port = v;
        } else if (strcmp(a, "--threads") == 0) {
            cfg.threads = v;
        } else if (strcmp(a, "--redis-host") == 0) {
            cfg.redis_host = v;
        } else if (strcmp(a, "--redis-port") == 0) {
            cfg.redis_port = atoi(v);
        } else if (strcmp(a, "--prefix") == 0) {
            cfg.prefix = v;
        } else {
            fprintf(stderr, "floor: unknown option %s\n", a);
            floor_usage(stderr);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (floor_args(argc, argv) != 0)
        return 1;

    /* Block the stop signals before civetweb starts its threads, so they all
     * inherit the mask and only sigwait below sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%s", cfg.port);
    const char *options[] = {"listening_ports",
                             listen,
                             "num_threads",
                             cfg.threads,
                             "enable_keep_alive",
                             "yes",
                             "tcp_nodelay",
                             "1",
                             "request_timeout_ms",
                             "30000",
                             "listen_backlog",
                             "1024",
                             NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.init_thread = floor_init_thread;
    cb.exit_thread = floor_exit_thread;
    cb.log_message = floor_log;

    mg_init_library(0);
    struct mg_context *ctx = mg_start(&cb, NULL, options);
    if (ctx == NULL) {
        fprintf(stderr, "floor: cannot start civetweb on %s\n", listen);
        mg_exit_library();
        return 1;
    }
    mg_set_request_handler(ctx, "/chat", floor_chat, NULL);
    mg_set_request_handler(ctx, "/health", floor_health, NULL);

    int sig = 0;
    sigwait(&set, &sig);
    mg_stop(ctx);
    mg_exit_library();
    return 0;
}
