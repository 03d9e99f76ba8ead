/* stack.h - one whole chatq system for a group of tests: redis-server, the fake
 * upstream, chatq-api, chatq-processor and chatq-handler, each on its own free
 * loopback port with its log in <tmp>/<group>/<name>.log, plus what a test
 * uses to talk to it (chat_post, chat_wait, the fake's /stats, Redis).
 *
 * Groups share nothing: each has its own Redis and its own key prefix. */
#ifndef CHATQ_TEST_STACK_H
#define CHATQ_TEST_STACK_H

#include <limits.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "http.h"
#include "keys.h"
#include "proc.h"
#include "uuid.h"

#define STACK_API_KEY "test-key"
#define STACK_RESULT_TTL 600 /* CHATQ_RESULT_TTL of every stack, seconds */

/* What a group changes from the defaults: NULL-terminated "NAME=value" lists
 * (may be NULL), applied after the defaults; fake: NULL-terminated command-line
 * words appended to the fake upstream's (e.g. "--rpm", "100"), for a group that
 * needs a rate-limited upstream. */
struct stack_settings {
    const char *const *api;
    const char *const *processor;
    const char *const *handler;
    const char *const *fake;
    /* Redis with credentials: redis-server command-line words (e.g.
     * "--requirepass", "pw", "--user", ...) appended to the stack's; the user and
     * password the binaries' REDIS_URL carries (user may be NULL: password
     * alone); and the default user's password the tests' own connections send
     * (NULL: none). */
    const char *const *redis;
    const char *redis_user, *redis_pass;
    const char *redis_admin_pass;
};

struct stack {
    char name[32];
    char dir[1024]; /* <tmp>/<name>: logs and redis data */
    struct stack_settings settings;
    char redis_url[256]; /* redis://[user:pass@]127.0.0.1:P/0 */
    struct keys keys;
    int redis_port, fake_port, api_port;
    struct proc *redis, *fake, *api, *processor, *handler;
    struct proc *webhook; /* only when a group started one: stack_webhook_start */
    redisContext *rc;     /* the tests' own connection, for assertions */
    /* Last: gcc bounds a string read from a member of a static struct stack by
     * what follows it in the struct, and warns when that exceeds a test's buffer. */
    char prefix[KEYS_PREFIX_MAX + 1];
    char api_url[64];  /* http://127.0.0.1:P */
    char fake_url[64]; /* http://127.0.0.1:P */
};

/* Starts all five processes and waits (polling) until each is ready. On -1 the
 * reason has been printed; call stack_stop either way. */
int stack_start(struct stack *s, const char *name, const char *prefix,
                const struct stack_settings *settings);

/* Stops what is running, api first, redis last. Returns 0, or -1 (with the
 * reason printed) if one of our binaries did not exit 0 on SIGTERM or its log
 * holds a sanitizer report: then the group's teardown fails, and so does the
 * run (harness_mark_failed). NULL is fine. */
int stack_stop(struct stack *s);

/* (Re)starts redis-server on s->redis_port with the data of s->dir/redis and
 * waits for PING. 0 or -1. */
int stack_redis_start(struct stack *s);

/* Sends AUTH with settings.redis_admin_pass (if set) on c, a connection of the
 * tests' own. 0, or -1 if Redis refused it. */
int stack_redis_auth(const struct stack *s, redisContext *c);

/* SIGTERMs redis-server and waits for it to exit. 0 or -1. */
int stack_redis_stop(struct stack *s);

/* Starts a chatq-processor (log <name>.log) with the stack's settings plus
 * extra (may be NULL) and waits until its consumer group exists and it is
 * reading (so a signal sent next is handled, not fatal).
 * Returns a new proc, or NULL. */
struct proc *stack_processor_start(struct stack *s, const char *name,
                                   const char *const *extra);

/* Starts a chatq-processor or chatq-handler like the above, without waiting for
 * anything (for one that cannot get ready). Returns a new proc, or NULL. */
struct proc *stack_processor_spawn(struct stack *s, const char *name,
                                   const char *const *extra);
struct proc *stack_handler_spawn(struct stack *s, const char *name,
                                 const char *const *extra);

/* The same for a chatq-handler. */
struct proc *stack_handler_start(struct stack *s, const char *name);

/* The same with extra settings (may be NULL) after the stack's. */
struct proc *stack_handler_start_with(struct stack *s, const char *name,
                                      const char *const *extra);

/* Starts a chatq-webhook (log <name>.log) with the stack's Redis and prefix plus
 * extra (may be NULL) and waits until its consumer group exists. Returns a new
 * proc, or NULL. A group that keeps it in s->webhook has stack_stop stop it (and
 * check its exit and log) with the others. */
struct proc *stack_webhook_start(struct stack *s, const char *name,
                                 const char *const *extra);

/* Starts chatq-api again on s->api_port (log <name>.log) with the stack's
 * settings plus extra (may be NULL), after the previous one exited (it is
 * freed), and waits for GET /health. 0 or -1 (reason printed). */
int stack_api_restart(struct stack *s, const char *name, const char *const *extra);

/* Starts chatq-api as s->api (which must be NULL) like the above, without
 * waiting for it. 0 or -1. */
int stack_api_spawn(struct stack *s, const char *name, const char *const *extra);

/* Runs a command on the tests' Redis connection, reconnecting first if the
 * connection was lost. Returns a new reply (freeReplyObject), or NULL. */
redisReply *stack_redis(struct stack *s, const char *fmt, ...);

/* Calls fn with every key of the stack's Redis, its type and its whole value
 * (GET, HGETALL, XRANGE, LRANGE, SMEMBERS or ZRANGE WITHSCORES; NULL for another
 * type), until fn returns nonzero. Returns what fn returned, 0 when every key was
 * seen, or -1 if Redis failed. */
int stack_redis_each(struct stack *s,
                     int (*fn)(const char *key, const char *type, const redisReply *value,
                               void *arg),
                     void *arg);

/* Makes Redis slow rather than down: sends DEBUG SLEEP seconds (e.g. "1.5") on a
 * connection of its own without waiting, and returns once Redis has stopped
 * answering. Returns that connection (new: read the reply, which comes when Redis
 * wakes, with redisGetReply, then redisFree), or NULL (reason printed). */
redisContext *stack_redis_sleep(struct stack *s, const char *seconds);

/* XLEN of key (0 when it does not exist), or -1. */
long long stack_xlen(struct stack *s, const char *key);

/* Entries ever added to a stream (XINFO STREAM entries-added; 0 when the
 * stream does not exist), or -1. Unlike XLEN it cannot go back down. */
long long stack_xadded(struct stack *s, const char *key);

/* Pending (delivered, not acked) entries of group on key, or -1. */
long long stack_xpending(struct stack *s, const char *key, const char *group);

/* Polls until both streams are empty and neither group has pending entries
 * (everything processed, acked and deleted). Returns 0, or -1 after timeout_ms
 * with what was left written into why. */
int stack_drained(struct stack *s, int timeout_ms, char *why, size_t whylen);

/* The fake upstream's GET /stats: new, or NULL. */
json_t *stack_fake_stats(struct stack *s);

/* A counter of /stats: by_status[status] when status > 0, else the top-level
 * member name. 0 when absent; -1 if stats is NULL. */
long long stack_stat(const json_t *stats, const char *name, int status);

/* The api's URL for path ("/chat") into out; returns out. */
const char *stack_url(const struct stack *s, const char *path, char *out, size_t len);

/* POST /chat {"message", "model" (omitted if NULL), "temperature" (omitted if
 * < 0)}. Returns 0 when the api answered 202 with a traceId (copied to trace),
 * -1 otherwise with the reason printed. */
int chat_post(struct stack *s, const char *message, const char *model, double temperature,
              char trace[UUID_LEN + 1]);

/* GET /chat/{trace}/response once. Returns the parsed body (new) and the HTTP
 * status in *status, or NULL. */
json_t *chat_get(struct stack *s, const char *trace, long *status);

/* Polls GET /chat/{trace}/response every 20 ms until its status is no longer
 * "processing". Returns the final body (new), or NULL with the reason printed
 * after timeout_ms. If done_ms is not NULL it receives the monotonic time at
 * which the final state was first seen. */
json_t *chat_wait(struct stack *s, const char *trace, int timeout_ms, long long *done_ms);

#endif
