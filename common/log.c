/* log.c - the log line format shared by every binary (see log.h). */
#include "log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Longest value of one key=%s field in a JSON line, before escaping. */
#define LOG_FIELD_MAX 512
#define LOG_FIELDS_MAX 16
/* Longest JSON line; members that would go past it are left out, "msg" last. */
#define LOG_JSON_MAX 32768

static const char *log_component = "chatq";
static enum log_level log_threshold = LOG_INFO;
static enum log_format log_fmt = LOG_FORMAT_LOGFMT;
static char log_consumer[160];

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

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcasecmp(s, "logfmt") == 0)
        *out = LOG_FORMAT_LOGFMT;
    else if (strcasecmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

void log_set_format(enum log_format format)
{
    log_fmt = format;
}

void log_set_consumer(const char *consumer)
{
    snprintf(log_consumer, sizeof(log_consumer), "%s", consumer ? consumer : "");
}

size_t log_escape_json(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;

    if (dstlen == 0)
        return 0;
    while (i < srclen) {
        unsigned char c = (unsigned char)src[i];
        char esc[8];
        const char *out = esc;
        size_t n, used = 1;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            n = 6;
        } else if (c < 0x80) {
            out = &src[i];
            n = 1;
        } else {
            used = utf8_seq_len(&src[i], srclen - i);
            if (used > 0) {
                out = &src[i];
                n = used;
            } else {
                /* Not UTF-8, which JSON must be: the text \xNN, as logfmt shows it. */
                memcpy(esc, "\\\\x", 3);
                esc[3] = hex[c >> 4];
                esc[4] = hex[c & 0xf];
                n = 5;
                used = 1;
            }
        }
        if (o + n >= dstlen)
            break;
        memcpy(dst + o, out, n);
        o += n;
        i += used;
    }
    dst[o] = '\0';
    return o;
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

/* A key=%... field of the format, for a JSON line. */
struct log_field {
    const char *key; /* in the format */
    size_t keylen;
    int number; /* %d, %i or %u: a JSON number */
    char val[LOG_FIELD_MAX];
    size_t len;
};

/* The key right before a conversion at fmt[at]: "key=" or "key=\"" in the format
 * text; its length, 0 if none. */
static size_t log_field_key(const char *fmt, size_t at, const char **key)
{
    size_t e = at;
    if (e > 0 && fmt[e - 1] == '"')
        e--;
    if (e == 0 || fmt[e - 1] != '=')
        return 0;
    size_t b = --e;
    while (b > 0 && (isalnum((unsigned char)fmt[b - 1]) || fmt[b - 1] == '_'))
        b--;
    *key = fmt + b;
    return e - b;
}

/* Adds the field key=val[0..len) to f[*n]. */
static void log_field_add(struct log_field *f, size_t *n, const char *key, size_t keylen,
                          const char *val, size_t len, int number)
{
    f[*n].key = key;
    f[*n].keylen = keylen;
    f[*n].number = number;
    f[*n].len = len < sizeof(f[*n].val) ? len : sizeof(f[*n].val) - 1;
    memcpy(f[*n].val, val, f[*n].len);
    f[*n].val[f[*n].len] = '\0';
    (*n)++;
}

/* At a word of the format's own text: a literal key=value (event=retry) is a
 * field too. Advances *pp past what it read. */
static void log_literal_field(struct log_field *f, size_t *n, const char *fmt,
                              const char **pp)
{
    const char *p = *pp, *k = p;
    if (p != fmt && p[-1] != ' ') {
        *pp = p + 1;
        return;
    }
    while (isalnum((unsigned char)*p) || *p == '_')
        p++;
    if (p == k || *p != '=' || p[1] == '\0' || strchr("%\" ", p[1]) != NULL) {
        *pp = p > k ? p : p + 1;
        return;
    }
    const char *v = ++p;
    while (*p && *p != ' ' && *p != '%' && *p != '"')
        p++;
    *pp = p;
    if (*p == '\0' || *p == ' ')
        log_field_add(f, n, k, (size_t)(v - 1 - k), v, (size_t)(p - v),
                      strspn(v, "0123456789") == (size_t)(p - v));
}

/* Collects the key=%... and literal key=value fields of fmt; returns how many (at
 * most max). */
static size_t log_fields(struct log_field *f, size_t max, char val[LOG_ARG_MAX],
                         const char *fmt, va_list ap)
{
    const char *p = fmt;
    size_t n = 0;
    va_list args;
    va_copy(args, ap);
    while (*p && n < max) {
        if (p[0] != '%') {
            log_literal_field(f, &n, fmt, &p);
            continue;
        }
        if (p[1] == '%') {
            p += 2;
            continue;
        }
        const char *key = NULL;
        size_t keylen = log_field_key(fmt, (size_t)(p - fmt), &key);
        int len = log_convert(val, &p, &args);
        if (len < 0)
            break; /* a conversion we do not know: the arguments are lost from here */
        if (keylen == 0)
            continue;
        log_field_add(f, &n, key, keylen, val, (size_t)len,
                      p[-1] == 'd' || p[-1] == 'i' || p[-1] == 'u');
    }
    va_end(args);
    return n;
}

/* Appends "," "key":"value" (value escaped, or bare when number) to out at *o, all
 * or nothing, leaving room for the closing brace. */
/* What one JSON line needs: on the heap, not the stack (civetweb's threads have
 * small stacks) nor thread-local (static TLS is carved out of each new thread's
 * stack too). */
struct log_json_work {
    char line[LOG_JSON_MAX];
    struct log_field f[LOG_FIELDS_MAX];
    char raw[LOG_MSG_MAX];
    char v[6 * LOG_MSG_MAX + 1];
    char val[LOG_ARG_MAX];
};

static void log_json_member(struct log_json_work *w, size_t *o, const char *key,
                            size_t keylen, const char *val, size_t len, int number)
{
    char *out = w->line, *v = w->v;
    size_t cap = sizeof(w->line);
    char k[64];
    log_escape_json(k, sizeof(k), key, keylen);
    size_t vl = number ? (len < sizeof(w->v) ? len : sizeof(w->v) - 1) : 0;
    if (number)
        memcpy(v, val, vl);
    else
        vl = log_escape_json(v, sizeof(w->v), val, len);
    v[vl] = '\0';
    int n = snprintf(out + *o, cap - *o, ",\"%s\":%s%s%s", k, number ? "" : "\"", v,
                     number ? "" : "\"");
    if (n > 0 && (size_t)n < cap - *o - 2)
        *o += (size_t)n;
    else
        out[*o] = '\0';
}

/* 1 if key (keylen bytes) is one of the members every JSON line has, or was
 * already written. */
static int log_json_taken(const struct log_field *f, size_t i, const char *key,
                          size_t keylen)
{
    static const char *const fixed[] = {"time",     "level", "component",
                                        "consumer", "trace", "msg"};
    for (size_t k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++)
        if (strlen(fixed[k]) == keylen && memcmp(fixed[k], key, keylen) == 0)
            return 1;
    for (size_t k = 0; k < i; k++)
        if (f[k].keylen == keylen && memcmp(f[k].key, key, keylen) == 0)
            return 1;
    return 0;
}

/* The JSON line of one event (see log.h). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
__attribute__((noinline)) static void log_json(enum log_level level, const char *trace,
                                               const char *ts, const char *fmt,
                                               va_list ap)
{
    static const char *const lower[] = {"debug", "info", "warn", "error"};
    struct log_json_work *w = malloc(sizeof(*w));
    size_t o = 0, nf;
    va_list args;

    if (w == NULL) {
        fprintf(stderr, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"out of memory\"}\n",
                ts, lower[level]);
        return;
    }
    struct log_field *f = w->f;
    char *raw = w->raw, *line = w->line;
    va_copy(args, ap);
    nf = log_fields(f, LOG_FIELDS_MAX, w->val, fmt, args);
    va_end(args);
    va_copy(args, ap);
    int rawlen = vsnprintf(raw, sizeof(w->raw), fmt, args);
    va_end(args);
    if (rawlen < 0)
        rawlen = 0;
    if ((size_t)rawlen >= sizeof(w->raw))
        rawlen = (int)sizeof(w->raw) - 1;

    o = (size_t)snprintf(line, sizeof(w->line), "{\"time\":\"%s\",\"level\":\"%s\"", ts,
                         lower[level]);
    log_json_member(w, &o, "component", 9, log_component, strlen(log_component), 0);
    if (log_consumer[0])
        log_json_member(w, &o, "consumer", 8, log_consumer, strlen(log_consumer), 0);
    if (trace)
        log_json_member(w, &o, "trace", 5, trace, strlen(trace), 0);
    for (size_t i = 0; i < nf; i++)
        if (!log_json_taken(f, i, f[i].key, f[i].keylen))
            log_json_member(w, &o, f[i].key, f[i].keylen, f[i].val, f[i].len,
                            f[i].number);
    log_json_member(w, &o, "msg", 3, raw, (size_t)rawlen, 0);
    fprintf(stderr, "%s}\n", line);
    free(w);
}
#pragma GCC diagnostic pop

void log_msg(enum log_level level, const char *trace, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;

    char msg[LOG_MSG_MAX], ts[CLOCK_ISO_LEN], quoted[LOG_TRACE_MAX],
        who[LOG_TRACE_MAX + 16] = "";
    va_list ap;
    clock_iso8601(ts, clock_now_ms());
    if (log_fmt == LOG_FORMAT_JSON) {
        va_start(ap, fmt);
        log_json(level, trace, ts, fmt, ap);
        va_end(ap);
        return;
    }
    va_start(ap, fmt);
    log_format(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (log_consumer[0] && log_plain(log_consumer)) {
        snprintf(who, sizeof(who), " consumer=%s", log_consumer);
    } else if (log_consumer[0]) {
        log_escape(quoted, sizeof(quoted), log_consumer, strlen(log_consumer));
        snprintf(who, sizeof(who), " consumer=\"%s\"", quoted);
    }

    /* One fprintf per line: stdio locks the stream, so lines from civetweb's
     * worker threads never interleave. */
    if (trace && log_plain(trace)) {
        fprintf(stderr, "%s %s %s%s trace=%s %s\n", ts, log_names[level], log_component,
                who, trace, msg);
    } else if (trace) {
        log_escape(quoted, sizeof(quoted), trace, strlen(trace));
        fprintf(stderr, "%s %s %s%s trace=\"%s\" %s\n", ts, log_names[level],
                log_component, who, quoted, msg);
    } else {
        fprintf(stderr, "%s %s %s%s %s\n", ts, log_names[level], log_component, who, msg);
    }
}
