/* log.h - one line per event: time, level, component, consumer, trace id, message.
 *
 * Two formats (LOG_FORMAT): logfmt, the default,
 *   2025-08-19T17:45:00.123Z INFO chatq-processor consumer=processor-h-7 trace=5f0c...
 * event=retry attempt=1 ... and json, one object per line:
 *   {"time":"...","level":"info","component":"chatq-processor","consumer":"...",
 *    "trace":"...","event":"retry","attempt":1,...,"msg":"event=retry attempt=1 ..."}
 * where every conversion the format writes right after "key=" (or inside
 * key="...") also becomes a member of its own: a number for %d, %i and %u, else a
 * string. Keys come from the format only, never from a value.
 *
 * The message is printf-formatted, and what each conversion (%s, %d, ...) writes
 * is escaped with log_escape, so that user or upstream text can neither split a
 * log line nor close the quotes of a field (message="%s") and forge another. The
 * format's own text is trusted: only its control characters are escaped. A
 * conversion right after "=" (model=%s) whose text holds a space, a quote, a
 * backslash or anything escaped is also put in double quotes. A trace
 * id that is not a plain token (letters, digits, "-_.:") is written quoted and
 * escaped the same way. The API key is never passed here. */
#ifndef CHATQ_LOG_H
#define CHATQ_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_LOGFMT, LOG_FORMAT_JSON };

/* Sets the component name (borrowed, must outlive the process) and level. */
void log_init(const char *component, enum log_level level);

/* Parses "debug", "info", "warn" or "error"; returns 0, or -1 if unknown. */
int log_level_parse(const char *s, enum log_level *out);

int log_enabled(enum log_level level);

/* Parses "logfmt" or "json"; returns 0, or -1 if unknown. */
int log_format_parse(const char *s, enum log_format *out);

void log_set_format(enum log_format format);

/* The consumer name every later line carries (copied; NULL or "": none). Call
 * before other threads log. */
void log_set_consumer(const char *consumer);

/* Appends src[0..srclen) to dst (dstlen bytes, NUL-terminated) as the inside of a
 * JSON string: '"' and '\' escaped, control characters as \n, \r, \t or \u00NN,
 * a byte that starts no well-formed UTF-8 sequence as the text \xNN (escaped
 * backslash), whole escapes and characters only. Returns the length written. */
size_t log_escape_json(char *dst, size_t dstlen, const char *src, size_t srclen);

/* Copies src[0..srclen) into dst (dstlen bytes, always NUL-terminated) with
 *   "  ->  \"      \  ->  \\      newline, CR, tab  ->  \n, \r, \t
 *   other bytes below 0x20, 0x7f, and bytes that start no well-formed UTF-8
 *   sequence  ->  \xNN (two lower-case hex digits)
 * and everything else (printable ASCII, whole UTF-8 characters) as it is. When dst
 * is too small the copy stops before the first escape or character that does not
 * fit whole: never half an escape, a lone trailing backslash or part of a
 * character. Returns the length written (without the NUL). */
size_t log_escape(char *dst, size_t dstlen, const char *src, size_t srclen);

/* trace may be NULL when the event belongs to no request. */
void log_msg(enum log_level level, const char *trace, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(trace, ...) log_msg(LOG_DEBUG, (trace), __VA_ARGS__)
#define log_info(trace, ...) log_msg(LOG_INFO, (trace), __VA_ARGS__)
#define log_warn(trace, ...) log_msg(LOG_WARN, (trace), __VA_ARGS__)
#define log_error(trace, ...) log_msg(LOG_ERROR, (trace), __VA_ARGS__)

#endif
