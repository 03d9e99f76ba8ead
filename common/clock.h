/* clock.h - wall-clock time in milliseconds and its ISO-8601 UTC form. */
#ifndef CHATQ_CLOCK_H
#define CHATQ_CLOCK_H

/* "2025-08-19T17:45:00.123Z" plus NUL, with room the compiler can prove */
#define CLOCK_ISO_LEN 48

#include <sys/time.h>

long long clock_now_ms(void);

/* Monotonic milliseconds, for timeouts and durations. */
long long clock_mono_ms(void);

/* ms (non-negative) as a struct timeval, for libevent timers and socket timeouts. */
struct timeval clock_timeval(long long ms);

/* Writes ms (Unix epoch) as ISO-8601 UTC with milliseconds into out. */
void clock_iso8601(char out[CLOCK_ISO_LEN], long long ms);

#endif
