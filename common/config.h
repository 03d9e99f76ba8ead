/* config.h - settings from defaults, then the environment, then --flags.
 *
 * Each binary owns one struct config and describes its fields in a table of
 * struct config_var; config_load() fills the struct from that table. String
 * values are borrowed from the defaults, the environment or argv, all of which
 * live as long as the process. */
#ifndef CHATQ_CONFIG_H
#define CHATQ_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum config_type { CONFIG_STR, CONFIG_INT };

struct config_var {
    const char *env;  /* environment variable, e.g. "REDIS_URL" */
    const char *flag; /* long option without dashes, e.g. "redis-url" */
    enum config_type type;
    const char *def; /* default, as text; NULL means unset */
    const char *help;
    void *dst; /* const char ** for CONFIG_STR, long long * for CONFIG_INT */
    long long min, max;
    int secret; /* value never printed */
};

/* The settings every binary has. */
struct config_common {
    const char *redis_url;
    const char *prefix;
    const char *log_level;
    const char *log_format;
};

#define CONFIG_COMMON_VARS(c)                                                            \
    {"REDIS_URL",                                                                        \
     "redis-url",                                                                        \
     CONFIG_STR,                                                                         \
     "redis://127.0.0.1:6379/0",                                                         \
     "Redis to use: redis://[user:pass@]host:port[/db]",                                 \
     &(c).redis_url,                                                                     \
     0,                                                                                  \
     0,                                                                                  \
     0},                                                                                 \
        {"CHATQ_PREFIX",                                                                 \
         "prefix",                                                                       \
         CONFIG_STR,                                                                     \
         "chatq:",                                                                       \
         "prefix of every Redis key chatq uses",                                         \
         &(c).prefix,                                                                    \
         0,                                                                              \
         0,                                                                              \
         0},                                                                             \
        {"LOG_LEVEL",    "log-level", CONFIG_STR, "info", "debug, info, warn or error",  \
         &(c).log_level, 0,           0,          0},                                    \
    {                                                                                    \
        "LOG_FORMAT", "log-format", CONFIG_STR, "logfmt",                                \
            "logfmt (one line of key=value per event) or json (one object per line)",    \
            &(c).log_format, 0, 0, 0                                                     \
    }

#define CONFIG_TTL_VAR(dst)                                                              \
    {                                                                                    \
        "CHATQ_RESULT_TTL", "result-ttl", CONFIG_INT, "86400",                           \
            "seconds a trace's record is kept after it was accepted or finished",        \
            &(dst), 1, 365LL * 86400, 0                                                  \
    }

#define CONFIG_CLAIM_IDLE_VAR(dst)                                                       \
    {                                                                                    \
        "CLAIM_IDLE_MS", "claim-idle-ms", CONFIG_INT, "30000",                           \
            "ms an entry may sit unacknowledged with a dead consumer before another "    \
            "takes it",                                                                  \
            &(dst), 300, 86400000, 0                                                     \
    }

#define CONFIG_MAX_DELIVERIES_VAR(dst)                                                   \
    {                                                                                    \
        "MAX_DELIVERIES", "max-deliveries", CONFIG_INT, "5",                             \
            "an entry delivered more often than this (its first read included; "         \
            "hand-backs "                                                                \
            "not counted) is dead-lettered when next taken over",                        \
            &(dst), 1, 1000, 0                                                           \
    }

#define CONFIG_DEAD_MAX_VAR(dst)                                                         \
    {                                                                                    \
        "DEAD_LETTER_MAX", "dead-letter-max", CONFIG_INT, "10000",                       \
            "entries kept (about) in the dead-letter stream", &(dst), 10, 100000000, 0   \
    }

/* The probe port of the processor and the handler (probe.h). */
#define CONFIG_METRICS_VARS(host, port)                                                  \
    {"METRICS_PORT",                                                                     \
     "metrics-port",                                                                     \
     CONFIG_INT,                                                                         \
     "0",                                                                                \
     "port of GET /healthz, /readyz and /metrics (0: none)",                             \
     &(port),                                                                            \
     0,                                                                                  \
     65535,                                                                              \
     0},                                                                                 \
    {                                                                                    \
        "METRICS_HOST", "metrics-host", CONFIG_STR, "127.0.0.1",                         \
            "address METRICS_PORT listens on (0.0.0.0: every interface)", &(host), 0, 0, \
            0                                                                            \
    }

/* CONFIG_VERSION: --version (or -V) was given; config_start prints the version
 * and answers CONFIG_HELP, so every binary exits 0 on both without a case of its own. */
enum config_result {
    CONFIG_OK = 0,
    CONFIG_HELP = 1,
    CONFIG_ERROR = -1,
    CONFIG_VERSION = 2
};

/* Fills every var's dst. On CONFIG_ERROR, err names the setting and the reason.
 * On CONFIG_HELP (--help or -h was given) or CONFIG_VERSION nothing else is done. */
enum config_result config_load(const struct config_var *vars, size_t n, int argc,
                               char **argv, char *err, size_t errlen);

/* Prints usage, one line per setting with its variable, flag and default. */
void config_usage(FILE *out, const char *prog, const char *summary,
                  const struct config_var *vars, size_t n);

/* Shared start-up of every binary: load, print --help (CONFIG_HELP: exit 0) or
 * the error (CONFIG_ERROR: exit 1), and set up logging (CONFIG_OK: go on). */
enum config_result config_start(const char *prog, const char *summary,
                                const struct config_var *vars, size_t n, int argc,
                                char **argv, const struct config_common *common);

#endif
