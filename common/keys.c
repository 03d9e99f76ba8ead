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
    snprintf(k->quota_prefix, sizeof(k->quota_prefix), "%squota:", prefix);
    snprintf(k->worker_prefix, sizeof(k->worker_prefix), "%sworker:", prefix);
    snprintf(k->workers, sizeof(k->workers), "%sworkers", prefix);
    snprintf(k->stats, sizeof(k->stats), "%sstats", prefix);
    snprintf(k->webhooks, sizeof(k->webhooks), "%swebhooks", prefix);
    snprintf(k->webhooks_delayed, sizeof(k->webhooks_delayed), "%swebhooks:delayed",
             prefix);
    snprintf(k->webhooks_entries, sizeof(k->webhooks_entries),
             "%swebhooks:delayed:entries", prefix);
    snprintf(k->events_prefix, sizeof(k->events_prefix), "%sevents:", prefix);
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

void keys_quota(const struct keys *k, const char *owner, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s", k->quota_prefix, owner);
}

void keys_events(const struct keys *k, const char *trace, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s", k->events_prefix, trace);
}
