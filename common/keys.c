/* keys.c - see keys.h. */
#include "keys.h"

#include <stdio.h>
#include <string.h>

int keys_init(struct keys *k, const char *prefix)
{
    if (strlen(prefix) > KEYS_PREFIX_MAX)
        return -1;
    snprintf(k->requests, sizeof(k->requests), "%srequests", prefix);
    snprintf(k->results, sizeof(k->results), "%sresults", prefix);
    snprintf(k->dead, sizeof(k->dead), "%sdead", prefix);
    snprintf(k->trace_prefix, sizeof(k->trace_prefix), "%strace:", prefix);
    snprintf(k->idem_prefix, sizeof(k->idem_prefix), "%sidem:", prefix);
    snprintf(k->quota_rpm_prefix, sizeof(k->quota_rpm_prefix), "%squota:rpm:", prefix);
    snprintf(k->quota_inflight_prefix, sizeof(k->quota_inflight_prefix),
             "%squota:inflight:", prefix);
    return 0;
}

void keys_trace(const struct keys *k, const char *trace, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s", k->trace_prefix, trace);
}

void keys_idem(const struct keys *k, const char *key, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s", k->idem_prefix, key);
}

void keys_cancel(const struct keys *k, char *out, size_t outlen)
{
    /* The prefix is what precedes "trace:" in the trace keys' prefix. */
    size_t n = strlen(k->trace_prefix) - strlen("trace:");
    snprintf(out, outlen, "%.*scancel", (int)n, k->trace_prefix);
}

void keys_quota(const char *prefix, const char *owner, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s", prefix, owner);
}
