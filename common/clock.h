/* clock.h - wall-clock time in milliseconds and its ISO-8601 UTC form; a duration
 * in milliseconds as the struct timeval libevent and hiredis take. */
#ifndef CHATQ_CLOCK_H
#define CHATQ_CLOCK_H

#include <sys/time.h>
#include <time.h>

/* "2025-08-19T17:45:00.123Z" plus NUL, with room the compiler can prove */
#define CLOCK_ISO_LEN 48

long long clock_now_ms(void);

/* Monotonic milliseconds, for timeouts and durations. */
long long clock_mono_ms(void);

/* Writes ms (Unix epoch) as ISO-8601 UTC with milliseconds into out. */
void clock_iso8601(char out[CLOCK_ISO_LEN], long long ms);

/* Reads clock_iso8601's form back into *ms. Returns 0, or -1 if s (may be NULL)
 * is not in that form. */
int clock_iso8601_parse(const char *s, long long *ms);

/* ms (non-negative) milliseconds as a struct timespec, for nanosleep and ppoll. */
struct timespec clock_timespec(long long ms);

/* ms milliseconds as a struct timeval; a negative ms counts as 0 (a negative
 * tv_usec is not a time that libevent or hiredis accept). */
struct timeval clock_timeval(long long ms);

#endif
