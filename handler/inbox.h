/* inbox.h - the handler's hop off the results stream: its Redis connection, the
 * "handlers" consumer group, reading new results, taking over results that a
 * handler which died left pending, and the delivery limit that moves a result
 * no handler can write to the dead-letter stream instead of taking it over for
 * ever. What becomes of each entry is finalize.c's.
 *
 * The blocking read waits in ppoll with the stop signals open, so SIGTERM ends
 * it at once: Redis is told to CLIENT UNBLOCK the read (from a second, short
 * connection) and whatever the read still brings is finalized, so nothing is
 * left behind but what Redis itself holds pending. Everywhere else the caller
 * keeps those signals blocked. */
#ifndef CHATQ_HANDLER_INBOX_H
#define CHATQ_HANDLER_INBOX_H

#include <signal.h>

#include "keys.h"
#include "rconn.h"

struct redisContext;
struct finalize;

struct inbox_settings {
    long long batch;          /* HANDLER_BATCH: entries per read or claim */
    long long block_ms;       /* HANDLER_BLOCK_MS: longest wait of one read */
    long long claim_idle_ms;  /* CLAIM_IDLE_MS: idle time before a takeover */
    long long max_deliveries; /* MAX_DELIVERIES: more, and it is dead-lettered */
};

struct inbox {
    struct inbox_settings set;
    const struct rconn_url *url;       /* borrowed */
    const struct keys *keys;           /* borrowed */
    struct finalize *fin;              /* borrowed */
    const volatile sig_atomic_t *stop; /* borrowed: set by the stop signals */
    const sigset_t *waitmask;          /* borrowed: the signal mask while waiting */
    char consumer[256];
    struct redisContext *c; /* owned; NULL while disconnected */
    long long client_id;    /* c's CLIENT ID, for CLIENT UNBLOCK */
    long long next_claim;   /* monotonic ms of the next look for abandoned results */
    int own_pending;        /* read this consumer's own pending entries first */
};

/* Everything borrowed must outlive the inbox. Connects nothing yet. */
void inbox_init(struct inbox *in, const struct inbox_settings *set,
                const struct rconn_url *url, const struct keys *keys,
                struct finalize *fin, const volatile sig_atomic_t *stop,
                const sigset_t *waitmask);

/* Connects and makes sure the group exists. Returns 0, or -1 with the reason
 * in err (never the password; the caller logs it) if Redis cannot be used now. */
int inbox_connect(struct inbox *in, char *err, size_t errlen);

/* One turn: takes over abandoned results if that is due, then one read and the
 * writes it brings. Returns 0, or -1 when the connection was lost (it is then
 * closed, and in->c is NULL); entries not acknowledged stay pending. */
int inbox_step(struct inbox *in);

/* Leaves: retires the consumer if it holds nothing, then closes. */
void inbox_close(struct inbox *in);

#endif
