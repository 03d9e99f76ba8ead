/* retry.c - backoff arithmetic and Retry-After parsing (see retry.h). */
#include "retry.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

long long retry_delay_ms(const struct retry_policy *p, int attempt,
                         long long retry_after_ms, double u)
{
    if (retry_after_ms >= 0)
        return retry_after_ms < p->after_max_ms ? retry_after_ms : p->after_max_ms;

    /* Doubling step by step rather than shifting keeps a large attempt count from
     * overflowing. */
    long long d = p->base_ms;
    for (int i = 1; i < attempt && d < p->max_ms; i++)
        d *= 2;
    if (d > p->max_ms)
        d = p->max_ms;

    if (!(u >= 0.0)) /* also catches NaN */
        u = 0.0;
    if (u > 1.0)
        u = 1.0;
    long long lo = d / 2;
    return lo + (long long)((double)(d - lo) * u);
}

/* Copies value without surrounding blanks into buf; returns its length, or -1 if
 * it does not fit. */
static long retry_trim(const char *value, size_t len, char *buf, size_t buflen)
{
    while (len > 0 && isspace((unsigned char)value[0])) {
        value++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)value[len - 1]))
        len--;
    if (len >= buflen)
        return -1;
    memcpy(buf, value, len);
    buf[len] = '\0';
    return (long)len;
}

long long retry_after_parse(const char *value, size_t len, long long now_ms)
{
    char buf[64];
    long n = retry_trim(value, len, buf, sizeof(buf));
    if (n <= 0)
        return -1;

    if (strspn(buf, "0123456789") == (size_t)n) {
        /* Beyond a day is nonsense and would only risk overflow; the cap the
         * caller applies is far lower anyway. */
        if (n > 6)
            return 86400LL * 1000;
        return strtoll(buf, NULL, 10) * 1000;
    }

    /* Only something that looks like a date goes to curl_getdate, which is
     * lenient enough to read a bare number or a word as some point in time. */
    if (!isalpha((unsigned char)buf[0]))
        return -1;
    time_t t = curl_getdate(buf, NULL);
    if (t == (time_t)-1)
        return -1;
    /* curl reads any year, so the date may be far off: compare in seconds first
     * and saturate at a day, as above, before anything is multiplied. */
    long long now_s = now_ms / 1000;
    if ((long long)t > now_s + 86400)
        return 86400LL * 1000;
    if ((long long)t < now_s)
        return 0;
    long long ms = (long long)t * 1000 - now_ms;
    return ms > 0 ? ms : 0;
}

long long retry_duration_parse(const char *value, size_t len)
{
    char buf[64];
    long n = retry_trim(value, len, buf, sizeof(buf));
    if (n <= 0)
        return -1;
    double total = 0;
    const char *s = buf;
    while (*s) {
        char *end;
        if (!isdigit((unsigned char)*s))
            return -1;
        double v = strtod(s, &end);
        if (end == s || !isfinite(v) || v < 0)
            return -1;
        s = end;
        double unit;
        if (s[0] == 'm' && s[1] == 's') {
            unit = 1;
            s += 2;
        } else if (s[0] == 'u' && s[1] == 's') {
            unit = 0.001;
            s += 2;
        } else if (s[0] == 'n' && s[1] == 's') {
            unit = 0.000001;
            s += 2;
        } else if (s[0] == 'h') {
            unit = 3600000;
            s++;
        } else if (s[0] == 'm') {
            unit = 60000;
            s++;
        } else if (s[0] == 's') {
            unit = 1000;
            s++;
        } else {
            return -1;
        }
        total += v * unit;
    }
    if (total > 86400.0 * 1000)
        total = 86400.0 * 1000;
    return (long long)ceil(total);
}

long long retry_count_parse(const char *value, size_t len)
{
    char buf[64];
    long n = retry_trim(value, len, buf, sizeof(buf));
    if (n <= 0 || n > 18)
        return -1;
    long long v = 0;
    for (long i = 0; i < n; i++) {
        if (!isdigit((unsigned char)buf[i]))
            return -1;
        v = v * 10 + (buf[i] - '0');
    }
    return v;
}

long long retry_after_ms_parse(const char *value, size_t len)
{
    char buf[64];
    long n = retry_trim(value, len, buf, sizeof(buf));
    if (n <= 0 || !isdigit((unsigned char)buf[0]))
        return -1;
    char *end;
    double v = strtod(buf, &end);
    if (*end != '\0' || !isfinite(v) || v < 0)
        return -1;
    if (v > 86400.0 * 1000)
        v = 86400.0 * 1000;
    return (long long)ceil(v);
}
