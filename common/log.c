/* log.c - the log line format shared by every binary (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clock.h"

static const char *log_component = "chatq";
static enum log_level log_threshold = LOG_INFO;

static const char *const log_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_init(const char *component, enum log_level level)
{
    log_component = component;
    log_threshold = level;
}

int log_level_parse(const char *s, enum log_level *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_enabled(enum log_level level)
{
    return level >= log_threshold;
}

/* Copies src into dst escaping anything that could break the one-line format. */
static void log_escape(char *dst, size_t dstlen, const char *src)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && o + 5 < dstlen; p++) {
        if (*p == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else if (*p == '\r') {
            dst[o++] = '\\';
            dst[o++] = 'r';
        } else if (*p == '\t') {
            dst[o++] = '\\';
            dst[o++] = 't';
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(dst + o, dstlen - o, "\\x%02x", *p);
        } else {
            dst[o++] = (char)*p;
        }
    }
    dst[o] = '\0';
}

void log_msg(enum log_level level, const char *trace, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;

    char raw[2048], msg[4096], ts[CLOCK_ISO_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    log_escape(msg, sizeof(msg), raw);
    clock_iso8601(ts, clock_now_ms());

    /* One fprintf per line: stdio locks the stream, so lines from civetweb's
     * worker threads never interleave. */
    if (trace)
        fprintf(stderr, "%s %s %s trace=%s %s\n", ts, log_names[level], log_component,
                trace, msg);
    else
        fprintf(stderr, "%s %s %s %s\n", ts, log_names[level], log_component, msg);
}
