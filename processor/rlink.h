/* rlink.h - one async Redis connection that stays up: connects with hiredis on
 * the libevent loop, authenticates (rconn_async_prepare), and after a failed
 * connect or a lost connection tries again with a backoff of 100 ms doubling to
 * 5 s, logging once per outage and once on recovery. The processor keeps two:
 * one for the blocking XREADGROUP and one for everything else. */
#ifndef CHATQ_PROCESSOR_RLINK_H
#define CHATQ_PROCESSOR_RLINK_H

struct event_base;
struct redisAsyncContext;
struct rconn_url;
struct rlink;

/* up: connected (commands may be sent now). down: the connection is gone (every
 * outstanding command's callback has already had its NULL reply); unless
 * rlink_close was called, a reconnect is scheduled. */
struct rlink_handlers {
    void (*up)(struct rlink *l, void *arg);
    void (*down)(struct rlink *l, void *arg);
    void *arg;
};

/* Returns a new link (free with rlink_free) that starts connecting at once, or
 * NULL. name ("read", "write") is for logs; name and url are borrowed. Waits
 * between reconnects never exceed max_backoff_ms (nor the usual 5 s). */
struct rlink *rlink_new(struct event_base *base, const char *name,
                        const struct rconn_url *url, long long max_backoff_ms,
                        const struct rlink_handlers *h);

/* The context to send on if the link is up and accepting commands, else NULL.
 * Borrowed: valid until the next return to the event loop. */
struct redisAsyncContext *rlink_ctx(struct rlink *l);

/* Stops reconnecting and disconnects once the outstanding replies are in (down
 * is then called). */
void rlink_close(struct rlink *l);

/* 1 once the link is closed for good (after rlink_close), 0 otherwise. */
int rlink_closed(const struct rlink *l);

/* Frees the link, dropping any connection first. Safe with NULL. */
void rlink_free(struct rlink *l);

#endif
