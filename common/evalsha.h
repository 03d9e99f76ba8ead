/* evalsha.h - Lua scripts sent by their SHA1 on blocking connections.
 *
 * A script sent whole with EVAL costs Redis a SHA1 of its body on every call, to
 * find the compiled function in its cache: for the api's intake script that was a
 * third of Redis's work per POST. The SHA1 is worked out here once, at start, and
 * the script goes as EVALSHA. A Redis that does not know it (restarted, or an
 * operator's SCRIPT FLUSH) answers NOSCRIPT without running anything, and the same
 * command goes again whole with EVAL, which caches it for the calls that follow.
 * (The processor, on async connections, loads its scripts per connection instead:
 * processor/script.h.) */
#ifndef CHATQ_EVALSHA_H
#define CHATQ_EVALSHA_H

struct cmd;
struct redisReply;

struct evalsha {
    const char *body; /* borrowed: static */
    char sha[41];     /* hex SHA1 of body */
};

/* Fills e for body (which must outlive e). */
void evalsha_init(struct evalsha *e, const char *body);

/* Starts c (cmd_free it) as "EVALSHA sha"; the keys count and arguments follow. */
void evalsha_cmd(struct cmd *c, const struct evalsha *e);

/* 1 if r is Redis's NOSCRIPT: the script did not run. Else 0. */
int evalsha_missing(const struct redisReply *r);

/* Turns c, started by evalsha_cmd, into the EVAL of the whole body, to be sent
 * again after a NOSCRIPT. */
void evalsha_whole(struct cmd *c, const struct evalsha *e);

#endif
