/* log.h - one line per event: time, level, component, trace id, message.
 *
 * The message is printf-formatted and then escaped (control characters and
 * quotes become \n, \", \xNN) so that user or upstream text can never split a
 * log line or forge another. The API key is never passed here. */
#ifndef CHATQ_LOG_H
#define CHATQ_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the component name (borrowed, must outlive the process) and level. */
void log_init(const char *component, enum log_level level);

/* Parses "debug", "info", "warn" or "error"; returns 0, or -1 if unknown. */
int log_level_parse(const char *s, enum log_level *out);

int log_enabled(enum log_level level);

/* trace may be NULL when the event belongs to no request. */
void log_msg(enum log_level level, const char *trace, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(trace, ...) log_msg(LOG_DEBUG, (trace), __VA_ARGS__)
#define log_info(trace, ...) log_msg(LOG_INFO, (trace), __VA_ARGS__)
#define log_warn(trace, ...) log_msg(LOG_WARN, (trace), __VA_ARGS__)
#define log_error(trace, ...) log_msg(LOG_ERROR, (trace), __VA_ARGS__)

#endif
