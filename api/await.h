/* await.h - clients that wait for a chat (GET .../response?wait=, GET .../events),
 * held without holding what serves POST and GET.
 *
 * civetweb serves a connection on one thread from start to end, so a waiting client
 * takes a thread. The api therefore runs API_THREADS + WAIT_THREADS civetweb
 * threads, and at most WAIT_THREADS of them wait at once (await_enter): POST and GET
 * always keep API_THREADS. A waiting thread holds no Redis connection (it gives its
 * own back to the pool, worker.h) and polls nothing: it sleeps on a condition
 * variable of the chat's entry in a table keyed by traceId. One subscriber thread
 * per api process holds the one Redis connection in pub/sub mode, SUBSCRIBEs to the
 * channel of each chat somebody waits for ({prefix}events:{traceId}, events.h) and
 * UNSUBSCRIBEs when the last one stops waiting; every state change of a chat is
 * PUBLISHed there by the script that makes it, and wakes exactly that chat's
 * waiters. So a thousand waiting clients cost a thousand sleeping threads (their
 * stacks' touched pages, measured by make bench) and one Redis connection, and
 * Redis sends the api only the news of chats someone waits for.
 *
 * Nothing is missed between reading a chat's state and sleeping: a waiter first
 * subscribes and waits until Redis confirmed the subscription (await_ready), and
 * only then reads the state; anything changed later is announced. When the
 * subscriber's connection drops (Redis restarted) messages may have been lost:
 * every waiter is woken (AWAIT_LOST), waits for the new subscription, and reads
 * again. */
#ifndef CHATQ_API_AWAIT_H
#define CHATQ_API_AWAIT_H

#include <stddef.h>

struct await;
struct server;
struct worker;

/* Blocks until the trace's status is final or the monotonic deadline
 * (clock_mono_ms) passes. Returns 1 final (any status but processing/queued, or no
 * record at all: nothing to wait for), 0 timed out, -1 Redis error. Also 0 at once
 * when WAIT_THREADS clients wait already, and when the api is stopping. w (borrowed)
 * is the calling thread's worker; its Redis connection is given back while it
 * waits. */
int await_final(struct server *srv, struct worker *w, const char *trace,
                long long deadline_ms);

/* Returns a new subscriber for srv (not started), or NULL if out of memory. */
struct await *await_new(struct server *srv);

/* Starts the subscriber thread. 0, or -1 with the reason in err. */
int await_start(struct await *a, char *err, size_t errlen);

/* From now on every wait ends at once (as timed out) and no new one begins; joins
 * the subscriber thread. NULL is fine. */
void await_stop(struct await *a);

/* Frees a (stopped) subscriber; NULL is fine. */
void await_free(struct await *a);

/* Takes one of the WAIT_THREADS places of waiting clients: 1, or 0 when all are
 * taken (or the api is stopping). Each 1 is paired with an await_leave. */
int await_enter(struct await *a);
void await_leave(struct await *a);

/* 1 once await_stop was called: waits end, streams close. */
int await_stopping(struct await *a);

/* Clients waiting now. */
int await_waiting(const struct await *a);

/* One waiter's interest in one chat. */
struct await_watch;

/* Subscribes to trace's channel (shared with other waiters of the same chat).
 * Returns a new watch (free with await_unwatch), or NULL if out of memory. */
struct await_watch *await_watch(struct await *a, const char *trace);

/* Stops watching and frees; NULL is fine. */
void await_unwatch(struct await_watch *w);

/* Waits until Redis has confirmed the subscription, so that every change from now
 * on wakes await_next. Returns 1; 0 when the deadline passed or the api is
 * stopping; -1 when the subscriber could not reach Redis within REDIS_TIMEOUT_MS. */
int await_ready(struct await_watch *w, long long deadline_ms);

#define AWAIT_NEWS 1    /* something was announced since the last call */
#define AWAIT_TIMEOUT 0 /* the deadline passed, or the api is stopping */
#define AWAIT_LOST -1   /* the subscription was lost: await_ready, then read again */

/* Waits for the next announcement of the chat after the ready watch's last one.
 * Returns AWAIT_NEWS, AWAIT_TIMEOUT or AWAIT_LOST. */
int await_next(struct await_watch *w, long long deadline_ms);

/* 1 if a final event of the chat was announced while watched. */
int await_final_seen(const struct await_watch *w);

#endif
