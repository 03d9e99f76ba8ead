/* worker.h - what each civetweb worker thread owns: its Redis connection.
 *
 * hiredis contexts are not thread-safe, so every worker thread has its own,
 * connected lazily on first use: the api starts and answers 503 while Redis is
 * down, and a request after Redis came back reconnects by itself. */
#ifndef CHATQ_API_WORKER_H
#define CHATQ_API_WORKER_H

#include <stddef.h>

#include "access.h"

struct server;
struct redisContext;
struct redisReply;

struct worker {
    struct server *srv;         /* borrowed */
    struct redisContext *redis; /* owned; NULL until first use and after a failure */
    int reused;                 /* redis served an earlier request */
    /* The owner id of the request being served ("" when the gateway is open), set
     * by server.c before the route runs. */
    char owner[ACCESS_OWNER_LEN + 1];
    /* That key's limits (borrowed from access.c), NULL when the gateway is open. */
    const struct access_limits *limits;
};

/* Returns a new worker (free with worker_free), or NULL if out of memory. */
struct worker *worker_new(struct server *srv);

/* Closes the connection and frees w; NULL is fine. */
void worker_free(struct worker *w);

/* The thread's Redis connection, connecting now if there is none. Returns it
 * (borrowed: valid until worker_redis_failed or worker_free), or NULL if Redis cannot
 * be reached (logged). trace (may be NULL) is for the log. */
struct redisContext *worker_redis(struct worker *w, const char *trace);

/* Drops the connection after an I/O error or a timeout on it: a reply may still be
 * in flight, so it cannot be reused; the next worker_redis reconnects. what says
 * what failed, for the log.
 * Returns 1 if the failure was the end of a connection that had served earlier
 * requests: Redis restarted, or closed it as idle, since, so the command never
 * reached it and the caller may try once more, on a new connection. Otherwise 0
 * (the failure is logged). */
int worker_redis_failed(struct worker *w, const char *trace, const char *what);

/* What became of a command that must not run twice (worker_command_once). */
enum worker_fate {
    WORKER_ANSWERED, /* Redis answered (maybe with an error reply) */
    WORKER_NOT_SENT, /* Redis not reached, or the command did not leave whole: not run */
    WORKER_UNKNOWN,  /* sent whole, then no answer in time or the connection lost: it
                        may have run, or may still run (a slow Redis runs it later) */
};

/* Runs one command (argc arguments of argvlen bytes) that must not run twice: no
 * retry once it has left. "Sent" is well defined for one command: Redis runs none
 * that did not arrive whole, so a failure to connect or to write it means it did not
 * run; only after it left whole is a missing answer a fate unknown. On
 * WORKER_ANSWERED *reply is the answer (new: caller frees), else NULL (logged). */
enum worker_fate worker_command_once(struct worker *w, const char *trace, int argc,
                                     const char **argv, const size_t *argvlen,
                                     struct redisReply **reply);

/* Runs one command (argv, NUL-terminated strings) on the thread's connection, with
 * the one retry worker_redis_failed allows. Returns the reply (new: caller frees
 * with freeReplyObject; may be a Redis error reply), or NULL if Redis could not be
 * reached (logged). Only for commands safe to repeat. */
struct redisReply *worker_command(struct worker *w, const char *trace, int argc,
                                  const char **argv);

#endif
