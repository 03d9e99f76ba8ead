/*
 * log.c - one line per event on stderr: UTC time, level, component, message.
 * --quiet drops the info lines (one per request, too many for a benchmark) but never
 * warnings or errors. Callers never pass user text or API keys.
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#include "fake.h"

static int log_quiet;

void log_set_quiet(int quiet)
{
    log_quiet = quiet;
}

static void log_line(const char *level, const char *fmt, va_list ap)
{
    struct timeval tv;
    struct tm tm;
    char stamp[32];

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per part would let lines interleave with libevent's own output;
     * format the message first and write the line in one call. */
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    fprintf(stderr, "%s.%03ldZ %s fake-upstream: %s\n", stamp, (long)(tv.tv_usec / 1000),
            level, msg);
}

void log_info(const char *fmt, ...)
{
    va_list ap;

    if (log_quiet)
        return;
    va_start(ap, fmt);
    log_line("INFO", fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_line("WARN", fmt, ap);
    va_end(ap);
}

void log_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_line("ERROR", fmt, ap);
    va_end(ap);
}
