/* main.c - chatq-api: reads the settings, starts the HTTP server, and stops it
 * cleanly on SIGINT or SIGTERM. Everything else lives in server.c and the route
 * modules (intake.c, lookup.c). */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "access.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "rconn.h"
#include "server.h"
#include "validate.h"

#define MAIN_PROG "chatq-api"

struct config {
    struct config_common common;
    const char *host;
    long long port;
    long long threads;
    long long max_body;
    const char *default_model;
    long long redis_timeout_ms;
    long long result_ttl;
    long long grace_ms;
    long long default_deadline_ms;
    long long keepalive_ms;
    long long request_timeout_ms;
    long long wait_max_ms;
    long long wait_threads;
    long long wait_max_s;
    long long heartbeat_ms;
    const char *api_keys;
    const char *api_keys_file;
    const char *cors_origins;
    long long key_rpm;
    long long key_inflight;
    const char *key_models;
    long long key_inflight_max_s;
    long long status_page;
    const char *webhook_url;
    const char *webhook_allow;
};

/* glibc raises its mmap threshold to the size of each mmapped block it frees,
 * up to 32 MiB: after the first large answer, later ones are carved from the
 * heaps of the worker threads' arenas, which hand memory back to the kernel only
 * from their top. Fixing the threshold keeps every large buffer (a Redis reply,
 * a response body) in a mapping of its own, returned when freed. */
#define MAIN_MMAP_THRESHOLD (256 * 1024)

static void main_malloc_tune(void)
{
    mallopt(M_MMAP_THRESHOLD, MAIN_MMAP_THRESHOLD);
}

/* Checks what the table's ranges cannot and fills the server's settings. Returns 0,
 * or -1 with the bad setting named in err. */
static int main_settings(const struct config *cfg, struct server *s, char *err,
                         size_t errlen)
{
    char why[256];
    size_t model_len = strlen(cfg->default_model);

    memset(s, 0, sizeof(*s));
    if (cfg->host[0] == '\0') {
        snprintf(err, errlen, "HOST: must not be empty");
        return -1;
    }
    if (model_len == 0 || model_len > VALIDATE_MODEL_MAX) {
        snprintf(err, errlen, "DEFAULT_MODEL: must be 1 to %d bytes long",
                 VALIDATE_MODEL_MAX);
        return -1;
    }
    if (rconn_url_parse(cfg->common.redis_url, &s->redis, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    if (keys_init(&s->keys, cfg->common.prefix) != 0) {
        snprintf(err, errlen, "CHATQ_PREFIX: longer than %d bytes", KEYS_PREFIX_MAX);
        return -1;
    }
    s->host = cfg->host;
    s->port = (int)cfg->port;
    s->threads = (int)cfg->threads;
    s->max_body = (size_t)cfg->max_body;
    s->default_model = cfg->default_model;
    s->redis_timeout_ms = (int)cfg->redis_timeout_ms;
    s->result_ttl = cfg->result_ttl;
    s->grace_ms = cfg->grace_ms;
    s->default_deadline_ms = cfg->default_deadline_ms;
    s->inflight_max_ms = cfg->key_inflight_max_s * 1000;
    s->keepalive_ms = (int)cfg->keepalive_ms;
    s->request_timeout_ms = (int)cfg->request_timeout_ms;
    s->wait_max_ms = cfg->wait_max_ms;
    s->status_page = (int)cfg->status_page;
    if (netguard_init(&s->webhook_guard, cfg->webhook_allow, err, errlen) != 0)
        return -1;
    if (cfg->webhook_url != NULL && cfg->webhook_url[0] != '\0') {
        /* Checked once, here, not with every chat that takes it: a DNS lookup per
         * POST, and a resolver's hiccup answered to clients as their 400. The
         * sender checks the address it connects to at each delivery anyway. */
        switch (
            netguard_check_url(&s->webhook_guard, cfg->webhook_url, why, sizeof(why))) {
        case NETGUARD_OK:
            break;
        case NETGUARD_BAD_URL:
            snprintf(err, errlen, "WEBHOOK_URL: not a URL chatq calls: %s", why);
            return -1;
        case NETGUARD_REFUSED:
            snprintf(err, errlen,
                     "WEBHOOK_URL: may not be called: %s (loopback, link-local and "
                     "private addresses need WEBHOOK_ALLOW)",
                     why);
            return -1;
        case NETGUARD_UNRESOLVED:
            log_warn(NULL,
                     "WEBHOOK_URL cannot be checked now (%s); its deliveries will "
                     "be checked when they are sent",
                     why);
            break;
        }
        s->webhook_default = cfg->webhook_url;
    }
    s->wait_threads = (int)cfg->wait_threads;
    s->wait_max_s = cfg->wait_max_s;
    s->heartbeat_ms = cfg->heartbeat_ms;
    return 0;
}

/* Says at start whether Redis answers; it need not: requests get 503 until it does. */
static void main_probe_redis(const struct server *s, const char *where)
{
    char err[256];
    redisContext *c = rconn_connect(&s->redis, s->redis_timeout_ms, err, sizeof(err));
    if (c == NULL)
        log_warn(NULL, "Redis %s is not reachable yet (%s); answering 503 until it is",
                 where, err);
    redisFree(c);
}

int main(int argc, char **argv)
{
    struct config cfg = {0};
    struct server srv;
    char err[512], where[300];
    sigset_t stop;
    int sig;

    const struct config_var vars[] = {
        {"HOST", "host", CONFIG_STR, "0.0.0.0",
         "address to listen on (0.0.0.0: every interface; 127.0.0.1: this host only)",
         &cfg.host, 0, 0, 0},
        {"API_KEYS", "api-keys", CONFIG_STR, NULL,
         "gateway keys, comma- or newline-separated: every request but GET /health then "
         "needs 'Authorization: Bearer <key>' (unset, with API_KEYS_FILE: open to all)",
         &cfg.api_keys, 0, 0, 1},
        {"API_KEYS_FILE", "api-keys-file", CONFIG_STR, NULL,
         "file of gateway keys, one a line ('#' comments), read again on SIGHUP",
         &cfg.api_keys_file, 0, 0, 0},
        {"KEY_RPM", "key-rpm", CONFIG_INT, "0",
         "requests a minute each gateway key may make (0: no limit); a key's line in "
         "API_KEYS_FILE may set its own with rpm=N",
         &cfg.key_rpm, 0, 1000000000, 0},
        {"KEY_INFLIGHT", "key-inflight", CONFIG_INT, "0",
         "chats each gateway key may have accepted and not yet final (0: no limit); "
         "per key: inflight=N",
         &cfg.key_inflight, 0, 1000000000, 0},
        {"KEY_MODELS", "key-models", CONFIG_STR, NULL,
         "models each gateway key may use, comma-separated (unset or '*': any); per "
         "key: models=a,b",
         &cfg.key_models, 0, 0, 0},
        {"KEY_INFLIGHT_MAX_S", "key-inflight-max-s", CONFIG_INT, "900",
         "longest a chat counts against KEY_INFLIGHT: a slot whose release was lost "
         "frees itself after this (or up to as long again later); the same on every api",
         &cfg.key_inflight_max_s, 1, 7 * 86400, 0},
        {"CORS_ORIGINS", "cors-origins", CONFIG_STR, NULL,
         "origins browsers may call the api from, comma-separated, e.g. "
         "https://app.example.com (unset: none)",
         &cfg.cors_origins, 0, 0, 0},
        {"PORT", "port", CONFIG_INT, "3000", "TCP port to listen on (0: any free port)",
         &cfg.port, 0, 65535, 0},
        {"API_THREADS", "threads", CONFIG_INT, "256",
         "HTTP worker threads for POST and GET; each holds one connection, idle ones "
         "included, for as long as it is open; at most this many Redis connections are "
         "kept open between requests",
         &cfg.threads, 1, 4096, 0},
        {"KEEPALIVE_TIMEOUT_MS", "keepalive-timeout-ms", CONFIG_INT, "10000",
         "how long an idle kept-alive connection stays open; clients are told half "
         "(Keep-Alive: timeout=, in seconds) so they retire it first even when late "
         "(0: one request per connection)",
         &cfg.keepalive_ms, 0, 600000, 0},
        {"REQUEST_TIMEOUT_MS", "request-timeout-ms", CONFIG_INT, "10000",
         "a request's headers must arrive within this; a connection silent this long "
         "while a body is due is closed (408)",
         &cfg.request_timeout_ms, 100, 600000, 0},
        {"WAIT_THREADS", "wait-threads", CONFIG_INT, "256",
         "more threads, for clients waiting (GET .../response?wait=, GET .../events); "
         "past this many at once ?wait answers at once and /events gets 503",
         &cfg.wait_threads, 0, 30000, 0},
        {"WAIT_MAX_SECONDS", "wait-max-seconds", CONFIG_INT, "60",
         "longest ?wait= of GET /chat/{traceId}/response; a longer one waits this long",
         &cfg.wait_max_s, 0, 3600, 0},
        {"EVENTS_HEARTBEAT_MS", "events-heartbeat-ms", CONFIG_INT, "15000",
         "an event stream (GET /chat/{traceId}/events) sends a comment line this often "
         "when nothing happens, so proxies keep it open",
         &cfg.heartbeat_ms, 10, 3600000, 0},
        {"MAX_BODY_BYTES", "max-body-bytes", CONFIG_INT, "1048576",
         "largest POST /chat body accepted; larger ones get 413", &cfg.max_body, 1,
         1LL << 30, 0},
        {"DEFAULT_MODEL", "default-model", CONFIG_STR, "gpt-3.5-turbo",
         "model used when a request names none", &cfg.default_model, 0, 0, 0},
        {"REDIS_TIMEOUT_MS", "redis-timeout-ms", CONFIG_INT, "1000",
         "Redis connect and command timeout; past it the request gets 503",
         &cfg.redis_timeout_ms, 1, 60000, 0},
        {"SHUTDOWN_GRACE_MS", "shutdown-grace-ms", CONFIG_INT, "10000",
         "on SIGTERM, how long open requests may take to finish before the api stops",
         &cfg.grace_ms, 0, 3600000, 0},
        {"DEFAULT_DEADLINE_MS", "default-deadline-ms", CONFIG_INT, "0",
         "deadline of a chat that sets no deadline_ms: ms after acceptance past which "
         "no upstream attempt starts (0: none)",
         &cfg.default_deadline_ms, 0, VALIDATE_DEADLINE_MAX_MS, 0},
        {"WAIT_MAX_MS", "wait-max-ms", CONFIG_INT, "600000",
         "longest a call that answers with the result (POST /v1/chat/completions, POST "
         "/v1/responses without background) waits for it; the chat itself goes on",
         &cfg.wait_max_ms, 0, 3600000, 0},
        {"STATUS_PAGE", "status-page", CONFIG_INT, "1",
         "1: GET / serves the status page and GET /status.json its data (which needs a "
         "gateway key when there are any); 0: both 404",
         &cfg.status_page, 0, 1, 0},
        {"WEBHOOK_URL", "webhook-url", CONFIG_STR, NULL,
         "webhook of chats that name none in their 'webhook' field (unset: none)",
         &cfg.webhook_url, 0, 0, 0},
        {"WEBHOOK_ALLOW", "webhook-allow", CONFIG_STR, NULL,
         "hosts, addresses and CIDRs a webhook may reach although loopback, link-local "
         "or private, comma-separated (e.g. 127.0.0.1,10.1.0.0/16)",
         &cfg.webhook_allow, 0, 0, 0},
        CONFIG_TTL_VAR(cfg.result_ttl),
        CONFIG_COMMON_VARS(cfg.common),
    };
    const size_t nvars = sizeof(vars) / sizeof(vars[0]);

    enum config_result cr =
        config_start(MAIN_PROG,
                     "The chatq HTTP api: accepts chat requests and serves "
                     "their results.",
                     vars, nvars, argc, argv, &cfg.common);
    if (cr == CONFIG_HELP)
        return 0;
    if (cr == CONFIG_ERROR)
        return 1;
    metrics_init(METRICS_API, "api");
    if (main_settings(&cfg, &srv, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: bad setting: %s\n", MAIN_PROG, err);
        return 1;
    }
    if (access_defaults(cfg.key_rpm, cfg.key_inflight, cfg.key_models, err,
                        sizeof(err)) != 0 ||
        access_init(cfg.api_keys, cfg.api_keys_file, cfg.cors_origins, err,
                    sizeof(err)) != 0) {
        fprintf(stderr, "%s: bad setting: %s\n", MAIN_PROG, err);
        access_free();
        return 1;
    }

    main_malloc_tune();

    /* Block the stop signals in every thread (civetweb's inherit this mask) and take
     * them with sigwait below: mg_stop must not run in a signal handler. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that hung up is an error return, not death */

    rconn_url_describe(&srv.redis, where, sizeof(where));
    if (server_start(&srv, err, sizeof(err)) != 0) {
        log_error(NULL, "%s", err);
        access_free();
        return 1;
    }
    log_info(NULL,
             "listening on http://%s:%d, redis %s, %d threads (+%d for waiting "
             "clients)",
             srv.host, srv.bound_port, where, srv.threads, srv.wait_threads);
    if (access_open())
        log_warn(NULL,
                 "no API_KEYS or API_KEYS_FILE: the gateway is open, anyone who "
                 "reaches %s:%d can submit chats on the upstream key and read "
                 "every result",
                 srv.host, srv.bound_port);
    if (access_open() && (cfg.key_rpm > 0 || cfg.key_inflight > 0 ||
                          (cfg.key_models != NULL && cfg.key_models[0] != '\0')))
        log_warn(NULL, "KEY_RPM, KEY_INFLIGHT and KEY_MODELS limit gateway keys; with "
                       "none configured they limit nothing");
    main_probe_redis(&srv, where);

    for (;;) {
        if (sigwait(&stop, &sig) != 0)
            sig = SIGTERM;
        if (sig != SIGHUP)
            break;
        size_t count = 0;
        if (access_reload(&count, err, sizeof(err)) != 0)
            log_error(NULL, "SIGHUP: keys not reloaded, the old ones stay: %s", err);
        else
            log_info(NULL, "SIGHUP: %zu gateway keys in force", count);
    }
    log_info(NULL, "%s: finishing open requests and stopping", strsignal(sig));
    server_stop(&srv);
    access_free();
    log_info(NULL, "stopped");
    return 0;
}
