/* finalize.h - the handler's one write: a result-stream entry becomes the
 * trace's final record, exactly once.
 *
 * Each entry is applied by a Lua script that, atomically, writes the fields
 * into the trace's hash only while its status is still "processing", sets the
 * TTL, and XACKs and XDELs the entry (a result whose trace has no record goes to
 * the dead-letter stream instead). A result delivered twice (a handler died
 * after writing, a processor retried a write) therefore changes nothing the
 * second time, and the stream never keeps entries that were handled. Every
 * dead letter is written with dead_letter() from deadletter.h, in the script
 * that acknowledges the entry. */
#ifndef CHATQ_FINALIZE_H
#define CHATQ_FINALIZE_H

#include <stddef.h>

#include "evalsha.h"
#include "keys.h"

struct redisContext;
struct redisReply;

struct finalize_stats {
    long long written;   /* became the trace's final record */
    long long duplicate; /* the trace was already final: ignored */
    long long orphan;    /* no such trace (expired or never accepted): dead-lettered */
    long long dead;      /* malformed entries moved to the dead-letter stream */
    long long gave_up;   /* delivered past MAX_DELIVERIES unwritten: dead-lettered */
};

/* Why the finalize of a recent entry failed, for its dead letter. */
#define FINALIZE_FAILURES 64
#define FINALIZE_ERROR_MAX 256
struct finalize_failure {
    char id[64]; /* "" when unused */
    char error[FINALIZE_ERROR_MAX];
};

struct finalize {
    struct evalsha lua;      /* the finalize script */
    const struct keys *keys; /* borrowed */
    long long ttl_s;
    long long dead_max;
    struct finalize_stats stats;
    struct finalize_failure failures[FINALIZE_FAILURES];
    size_t next_failure;
    const char *last_error; /* the latest failure's error (in failures), or NULL */
};

void finalize_init(struct finalize *f, const struct keys *keys, long long ttl_s,
                   long long dead_max);

/* Applies every entry of an entries array (from XREADGROUP or XCLAIM) in one
 * pipelined round trip. over is NULL, or per entry 0 (finalize it) or its
 * delivery count when that went past MAX_DELIVERIES: such an entry is moved to
 * the dead-letter stream with the count and the last error seen for it. Returns
 * 0, or -1 if the connection failed: the entries not acknowledged stay pending
 * and are delivered again. A finalize that Redis refused is logged and leaves
 * its entry pending. */
int finalize_entries(struct finalize *f, struct redisContext *c,
                     const struct redisReply *entries, const long long *over);

#endif
