/* log.c - the log line format shared by every binary (see log.h). */
#include "log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "clock.h"
#include "utf8.h"

/* Longest text one conversion (one %s, %d, ...) contributes before escaping. */
#define LOG_ARG_MAX 2048
/* Longest message after escaping, without time, level, component and trace. */
#define LOG_MSG_MAX 4096
/* Longest trace id, escaped, when it is not the plain token a trace id should be. */
#define LOG_TRACE_MAX 256

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

/* log_escape, with quotes and backslashes left alone when quotes is 0: the
 * format's own text may quote a field (message="%s") but never holds a control
 * character that could end the line. */
static size_t log_escape_as(char *dst, size_t dstlen, const char *src, size_t srclen,
                            int quotes, size_t *consumed)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;

    if (consumed)
        *consumed = 0;
    if (dstlen == 0)
        return 0;
    while (i < srclen) {
        unsigned char c = (unsigned char)src[i];
        char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 0xf]};
        const char *out = esc;
        size_t n = 4, used = 1;

        if (c == '\n' || c == '\r' || c == '\t') {
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            n = 2;
        } else if ((c == '"' || c == '\\') && quotes) {
            esc[1] = (char)c;
            n = 2;
        } else if (c >= 0x20 && c < 0x7f) {
            out = &src[i];
            n = 1;
        } else if (c >= 0x80) {
            used = utf8_seq_len(&src[i], srclen - i);
            if (used > 0) {
                out = &src[i];
                n = used;
            } else {
                used = 1; /* not UTF-8: \xNN, as for control characters */
            }
        }
        /* Whole sequences or nothing: a cut never leaves half an escape, a lone
         * backslash or part of a character. */
        if (o + n >= dstlen)
            break;
        memcpy(dst + o, out, n);
        o += n;
        i += used;
    }
    dst[o] = '\0';
    if (consumed)
        *consumed = i;
    return o;
}

size_t log_escape(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    return log_escape_as(dst, dstlen, src, srclen, 1, NULL);
}

/* One conversion written with its own format, spec, which the caller's format
 * attribute has checked against the argument; the compiler cannot see that here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#define LOG_CONVERT(type)                                                                \
    do {                                                                                 \
        type v_ = va_arg(*ap, type);                                                     \
        if (nstar == 0)                                                                  \
            n = snprintf(val, LOG_ARG_MAX, spec, v_);                                    \
        else if (nstar == 1)                                                             \
            n = snprintf(val, LOG_ARG_MAX, spec, star[0], v_);                           \
        else                                                                             \
            n = snprintf(val, LOG_ARG_MAX, spec, star[0], star[1], v_);                  \
    } while (0)

/* Formats the one conversion that starts at *fmtp ('%') into val (at most
 * LOG_ARG_MAX bytes, cut if longer) and advances *fmtp past it. Returns the length
 * of val, or -1 for a conversion log_msg does not know (%n, %ls, ...). */
static int log_convert(char val[LOG_ARG_MAX], const char **fmtp, va_list *ap)
{
    const char *p = *fmtp + 1;
    int star[2], nstar = 0, n = -1;
    char spec[32];

    p += strspn(p, "-+ #0'");
    if (*p == '*') {
        star[nstar++] = va_arg(*ap, int);
        p++;
    } else {
        p += strspn(p, "0123456789");
    }
    if (*p == '.') {
        p++;
        if (*p == '*') {
            star[nstar++] = va_arg(*ap, int);
            p++;
        } else {
            p += strspn(p, "0123456789");
        }
    }
    const char *len = p;
    p += strspn(p, "hljztL");
    size_t speclen = (size_t)(p + 1 - *fmtp);
    if (*p == '\0' || speclen >= sizeof(spec))
        return -1;
    memcpy(spec, *fmtp, speclen);
    spec[speclen] = '\0';

    char l0 = p > len ? len[0] : '\0';
    int two = p - len == 2; /* hh or ll */
    switch (*p) {
    case 'd':
    case 'i':
        if (l0 == 'l' && two)
            LOG_CONVERT(long long);
        else if (l0 == 'l')
            LOG_CONVERT(long);
        else if (l0 == 'j')
            LOG_CONVERT(intmax_t);
        else if (l0 == 'z')
            LOG_CONVERT(ssize_t);
        else if (l0 == 't')
            LOG_CONVERT(ptrdiff_t);
        else if (l0 == '\0' || l0 == 'h')
            LOG_CONVERT(int);
        break;
    case 'o':
    case 'u':
    case 'x':
    case 'X':
        if (l0 == 'l' && two)
            LOG_CONVERT(unsigned long long);
        else if (l0 == 'l')
            LOG_CONVERT(unsigned long);
        else if (l0 == 'j')
            LOG_CONVERT(uintmax_t);
        else if (l0 == 'z')
            LOG_CONVERT(size_t);
        else if (l0 == 't')
            LOG_CONVERT(ptrdiff_t);
        else if (l0 == '\0' || l0 == 'h')
            LOG_CONVERT(unsigned);
        break;
    case 'c':
        if (l0 == '\0')
            LOG_CONVERT(int);
        break;
    case 's':
        if (l0 == '\0')
            LOG_CONVERT(const char *);
        break;
    case 'p':
        if (l0 == '\0')
            LOG_CONVERT(void *);
        break;
    case 'a':
    case 'A':
    case 'e':
    case 'E':
    case 'f':
    case 'F':
    case 'g':
    case 'G':
        if (l0 == 'L')
            LOG_CONVERT(long double);
        else if (l0 == '\0' || l0 == 'l')
            LOG_CONVERT(double);
        break;
    default:
        break;
    }
    if (n < 0)
        return -1;
    *fmtp = p + 1;
    /* %c may write a NUL: the length is n, not strlen. */
    return n < LOG_ARG_MAX ? n : LOG_ARG_MAX - 1;
}
#pragma GCC diagnostic pop
#undef LOG_CONVERT

/* 1 if s[0..len) cannot stand unquoted after "key=": it holds a space, a quote,
 * a backslash or anything log_escape would escape. */
static int log_needs_quotes(const char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = 1;
        if (c <= 0x20 || c == '"' || c == '\\' || c == 0x7f)
            return 1;
        if (c >= 0x80) {
            n = utf8_seq_len(&s[i], len - i);
            if (n == 0)
                return 1;
        }
        i += n;
    }
    return 0;
}

/* Appends src[0..len), escaped, to out at *o; 0 when out is full. */
static int log_put(char *out, size_t outlen, size_t *o, const char *src, size_t len,
                   int quotes)
{
    size_t used;
    *o += log_escape_as(out + *o, outlen - *o, src, len, quotes, &used);
    return used == len;
}

/* vsnprintf into out, except that what each conversion produces is escaped with
 * log_escape (and quoted if it follows "=" and is not a plain word), and the
 * format's own text only for control characters. A message too long for out is
 * cut after the last piece that fits whole. */
static void log_format(char *out, size_t outlen, const char *fmt, va_list ap)
{
    char val[LOG_ARG_MAX];
    va_list args;
    size_t o = 0;

    va_copy(args, ap);
    out[0] = '\0';
    while (*fmt) {
        size_t len = strcspn(fmt, "%");
        const char *text = fmt;
        int quotes = 0, wrap = 0;

        if (fmt[0] == '%' && fmt[1] == '%') {
            text = "%";
            len = 1;
            fmt += 2;
        } else if (fmt[0] == '%') {
            int n = log_convert(val, &fmt, &args);
            if (n < 0) {
                /* Known to the compiler but not to us: show the rest of the format
                 * as it is rather than guess at the arguments. */
                len = strlen(fmt);
                fmt += len;
            } else {
                text = val;
                len = (size_t)n;
                quotes = 1;
                /* model=%s with an upstream's "gpt level=ERROR" would otherwise
                 * still make a field of its own. */
                wrap = o > 0 && out[o - 1] == '=' && log_needs_quotes(val, len);
            }
        } else {
            fmt += len;
        }
        if (wrap && !log_put(out, outlen, &o, "\"", 1, 0))
            break;
        if (!log_put(out, outlen, &o, text, len, quotes))
            break; /* out is full */
        if (wrap && !log_put(out, outlen, &o, "\"", 1, 0))
            break;
    }
    va_end(args);
}

/* 1 if s can stand unquoted as a field value: a trace id the api made always can,
 * but results and requests written into Redis by hand carry whatever they like. */
static int log_plain(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && strchr("-_.:", *s) == NULL)
            return 0;
    return 1;
}

void log_msg(enum log_level level, const char *trace, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;

    char msg[LOG_MSG_MAX], ts[CLOCK_ISO_LEN], quoted[LOG_TRACE_MAX];
    va_list ap;
    va_start(ap, fmt);
    log_format(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    clock_iso8601(ts, clock_now_ms());

    /* One fprintf per line: stdio locks the stream, so lines from civetweb's
     * worker threads never interleave. */
    if (trace && log_plain(trace)) {
        fprintf(stderr, "%s %s %s trace=%s %s\n", ts, log_names[level], log_component,
                trace, msg);
    } else if (trace) {
        log_escape(quoted, sizeof(quoted), trace, strlen(trace));
        fprintf(stderr, "%s %s %s trace=\"%s\" %s\n", ts, log_names[level], log_component,
                quoted, msg);
    } else {
        fprintf(stderr, "%s %s %s %s\n", ts, log_names[level], log_component, msg);
    }
}
