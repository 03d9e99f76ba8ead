/*
 * main.c - chatq-fake-upstream's entry point: settings (defaults, then FAKE_*
 * environment variables, then flags), process limits, the event loop, and a clean
 * stop on SIGINT/SIGTERM so tests and valgrind see every byte freed.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "fake.h"
#include "log.h"
#include "version.h"

/* Every setting once: its flag, environment variable and default (applied through
 * main_set() like any other value, so --help cannot drift from the real default). */
struct main_option {
    const char *name; /* flag without "--" */
    const char *arg;  /* NULL: a switch */
    const char *env;
    const char *def;
    const char *help;
};

static const struct main_option main_options[] = {
    {"host", "H", "FAKE_HOST", "127.0.0.1", "address to listen on"},
    {"port", "N", "FAKE_PORT", "8089", "port; 0 picks a free one"},
    {"latency-ms", "N", "FAKE_LATENCY_MS", "0", "delay before every chat answer"},
    {"jitter-ms", "N", "FAKE_JITTER_MS", "0", "plus a uniform random 0..N ms"},
    {"require-key", "KEY", "FAKE_REQUIRE_KEY", "", "demand 'Authorization: Bearer KEY'"},
    {"quiet", NULL, "FAKE_QUIET", "0", "no per-request log lines (FAKE_QUIET=1)"},
    {"rpm", "N", "FAKE_RPM", "0", "requests per window and API key; 0: no limit"},
    {"tpm", "N", "FAKE_TPM", "0", "tokens per window and API key; 0: no limit"},
    {"limit-window-ms", "MS", "FAKE_LIMIT_WINDOW_MS", "60000",
     "the window of --rpm/--tpm"},
};

#define MAIN_N_OPTIONS (sizeof(main_options) / sizeof(main_options[0]))

static void main_usage(FILE *f)
{
    fprintf(f, "Usage: " FAKE_NAME " [options]\n\n"
               "A scriptable fake OpenAI-compatible chat-completions server for tests\n"
               "and benchmarks. Its answers are generated, not from a real model.\n\n"
               "Options (flags win over environment variables):\n");
    for (size_t i = 0; i < MAIN_N_OPTIONS; i++) {
        const struct main_option *o = &main_options[i];
        char flag[40];

        snprintf(flag, sizeof(flag), "--%s%s%s", o->name, o->arg != NULL ? " " : "",
                 o->arg != NULL ? o->arg : "");
        fprintf(f, "  %-20s %-20s default %-9s %s\n", flag, o->env,
                o->def[0] != '\0' ? o->def : "(none)", o->help);
    }
    fprintf(f, "  %-20s %-20s %-17s %s\n", "--version", "", "",
            "print the version and exit");
    fprintf(f, "  %-20s %-20s %-17s %s\n\n", "--help", "", "", "print this and exit");
    fprintf(f,
            "Endpoints (the /v1 prefix is optional): POST /v1/chat/completions,\n"
            "GET /v1/models, GET /stats, POST /stats/reset, GET /health.\n\n"
            "Script a reply from the last user message with [[fake key=value ...]]:\n"
            "  status=N quota retry-after=S retry-after-date=S retry-after-ms=MS\n"
            "  times=N latency=MS garbage[=html] nochoices huge=BYTES drip=MS\n"
            "  chunk-ms=MS (the pause between the events of a \"stream\": true answer)\n"
            "  endless[=garbage] hang reset close\n\n"
            "With --rpm or --tpm, each API key (requests without one share a budget)\n"
            "gets OpenAI's 429 and x-ratelimit-* headers; a request costs\n"
            "ceil(message content bytes / 4) + max_tokens tokens.\n");
}

/* Parses an integer setting; a bad one is reported by its name and gives -1. */
static int main_int(const char *key, const char *s, long min, long max, int *out)
{
    char *end;
    long x;

    errno = 0;
    x = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || x < min || x > max) {
        fprintf(stderr, FAKE_NAME ": bad %s '%s': expected an integer from %ld to %ld\n",
                key, s, min, max);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int main_bool(const char *key, const char *s, int *out)
{
    if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0 || strcmp(s, "yes") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(s, "") == 0 || strcmp(s, "0") == 0 || strcmp(s, "false") == 0 ||
        strcmp(s, "no") == 0) {
        *out = 0;
        return 0;
    }
    fprintf(stderr, FAKE_NAME ": bad %s '%s': expected 1 or 0\n", key, s);
    return -1;
}

/* One setting by name, from the environment or a flag; key is for error messages. */
static int main_set(struct config *cfg, const char *name, const char *key, const char *v)
{
    if (strcmp(name, "host") == 0) {
        if (v[0] == '\0') {
            fprintf(stderr, FAKE_NAME ": bad %s: empty\n", key);
            return -1;
        }
        cfg->host = v;
        return 0;
    }
    if (strcmp(name, "port") == 0)
        return main_int(key, v, 0, 65535, &cfg->port);
    if (strcmp(name, "latency-ms") == 0)
        return main_int(key, v, 0, FAKE_MAX_DELAY_MS, &cfg->latency_ms);
    if (strcmp(name, "jitter-ms") == 0)
        return main_int(key, v, 0, FAKE_MAX_DELAY_MS, &cfg->jitter_ms);
    if (strcmp(name, "require-key") == 0) {
        cfg->require_key = v[0] != '\0' ? v : NULL;
        return 0;
    }
    if (strcmp(name, "quiet") == 0)
        return main_bool(key, v, &cfg->quiet);
    if (strcmp(name, "rpm") == 0)
        return main_int(key, v, 0, LIMIT_MAX_CAPACITY, &cfg->rpm);
    if (strcmp(name, "tpm") == 0)
        return main_int(key, v, 0, LIMIT_MAX_CAPACITY, &cfg->tpm);
    if (strcmp(name, "limit-window-ms") == 0)
        return main_int(key, v, 1, LIMIT_MAX_WINDOW_MS, &cfg->limit_window_ms);
    fprintf(stderr, FAKE_NAME ": unknown option %s (see --help)\n", key);
    return -1;
}

static int main_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < MAIN_N_OPTIONS; i++)
        if (main_set(cfg, main_options[i].name, "default", main_options[i].def) == -1)
            return -1;
    return 0;
}

static int main_from_env(struct config *cfg)
{
    for (size_t i = 0; i < MAIN_N_OPTIONS; i++) {
        const char *v = getenv(main_options[i].env);

        if (v != NULL &&
            main_set(cfg, main_options[i].name, main_options[i].env, v) == -1)
            return -1;
    }
    return 0;
}

static int main_known(const char *name)
{
    for (size_t i = 0; i < MAIN_N_OPTIONS; i++)
        if (strcmp(main_options[i].name, name) == 0)
            return 1;
    return 0;
}

/* Returns 0, 1 when --help or --version was printed, or -1 on a bad flag (reported). */
static int main_from_args(struct config *cfg, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        char name[32];
        const char *eq, *v;
        size_t n;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            main_usage(stdout);
            return 1;
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            printf(FAKE_NAME " %s\n", CHATQ_VERSION);
            return 1;
        }
        if (strcmp(arg, "--quiet") == 0) {
            cfg->quiet = 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, FAKE_NAME ": unexpected argument '%s' (see --help)\n", arg);
            return -1;
        }
        /* --name=value or --name value */
        eq = strchr(arg, '=');
        n = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        if (n >= sizeof(name)) {
            fprintf(stderr, FAKE_NAME ": unknown option %s (see --help)\n", arg);
            return -1;
        }
        memcpy(name, arg + 2, n);
        name[n] = '\0';
        if (!main_known(name)) {
            fprintf(stderr, FAKE_NAME ": unknown option %s (see --help)\n", arg);
            return -1;
        }
        if (eq != NULL) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            fprintf(stderr, FAKE_NAME ": %s needs a value (see --help)\n", arg);
            return -1;
        }
        if (main_set(cfg, name, arg, v) == -1)
            return -1;
    }
    return 0;
}

/* Thousands of held connections need thousands of descriptors; the soft limit is
 * often 1024 while the hard limit allows far more. */
static void main_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        /* Linux refuses an unlimited soft limit for files; 1M is its usual nr_open. */
        rlim_t want = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;

        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
            log_warn(NULL, "cannot raise the open-file limit to %llu: %s",
                     (unsigned long long)want, strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        log_info(NULL, "open-file limit %llu", (unsigned long long)rl.rlim_cur);
}

static void main_on_libevent_log(int severity, const char *msg)
{
    if (severity == EVENT_LOG_DEBUG)
        return;
    if (severity == EVENT_LOG_MSG)
        log_info(NULL, "libevent: %s", msg);
    else if (severity == EVENT_LOG_WARN)
        log_warn(NULL, "libevent: %s", msg);
    else
        log_error(NULL, "libevent: %s", msg);
}

static void main_on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info(NULL, "signal %d: stopping", (int)sig);
    event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
    struct config cfg;
    struct event_base *base = NULL;
    struct server *srv = NULL;
    struct event *sigint = NULL, *sigterm = NULL;
    int port = 0, rc = 1, r;

    if (main_defaults(&cfg) == -1 || main_from_env(&cfg) == -1)
        return 1;
    r = main_from_args(&cfg, argc, argv);
    if (r != 0)
        return r == 1 ? 0 : 1;
    /* --quiet drops the info lines (one per request, too many for a benchmark)
     * but never warnings or errors. */
    log_init(FAKE_NAME, cfg.quiet ? LOG_WARN : LOG_INFO);

    /* A client that leaves mid-reply would otherwise kill us on the next write. */
    signal(SIGPIPE, SIG_IGN);
    main_raise_nofile();
    event_set_log_callback(main_on_libevent_log);

    base = event_base_new();
    if (base == NULL) {
        log_error(NULL, "cannot create the event loop");
        goto out;
    }
    srv = serve_new(base, &cfg);
    if (srv == NULL || serve_listen(srv, &port) == -1)
        goto out;
    sigint = evsignal_new(base, SIGINT, main_on_signal, base);
    sigterm = evsignal_new(base, SIGTERM, main_on_signal, base);
    if (sigint == NULL || sigterm == NULL || evsignal_add(sigint, NULL) == -1 ||
        evsignal_add(sigterm, NULL) == -1) {
        log_error(NULL, "cannot install signal handlers");
        goto out;
    }

    fprintf(stderr, "FAKE upstream: answers are generated, not from a real model\n");
    /* Tests wait for this line, so it goes out only once we accept connections. */
    printf(FAKE_NAME " listening on http://%s%s%s:%d/v1\n",
           strchr(cfg.host, ':') != NULL ? "[" : "", cfg.host,
           strchr(cfg.host, ':') != NULL ? "]" : "", port);
    fflush(stdout);

    if (event_base_dispatch(base) == -1) {
        log_error(NULL, "event loop failed");
        goto out;
    }
    rc = 0;
out:
    serve_free(srv);
    if (sigint != NULL)
        event_free(sigint);
    if (sigterm != NULL)
        event_free(sigterm);
    if (base != NULL)
        event_base_free(base);
    /* Frees libevent's global tables too, so valgrind reports nothing reachable. */
    libevent_global_shutdown();
    return rc;
}
