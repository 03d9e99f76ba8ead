/* script.h - the processor's Lua scripts, sent by their SHA1 once Redis knows
 * them.
 *
 * Some scripts run once per chat or per attempt and carry a few kilobytes of Lua;
 * sent whole each time they filled the write connection's buffer by thousands of
 * copies under load (about 1.5 KiB more per request in flight). Each script is
 * loaded (SCRIPT LOAD) first thing on every new write connection; once its SHA1
 * is known it goes as EVALSHA. Anything sent on that connection after the load
 * runs after it, so EVALSHA cannot meet an empty script cache there, not even
 * after a Redis restart. Only an operator's SCRIPT FLUSH can: a NOSCRIPT answer
 * makes the script go whole again until it is reloaded. */
#ifndef CHATQ_PROCESSOR_SCRIPT_H
#define CHATQ_PROCESSOR_SCRIPT_H

struct cmd;
struct redisAsyncContext;
struct redisReply;

struct script {
    const char *body; /* static */
    char sha[41];     /* "" until Redis answered the load */
};

/* Makes s known to script_load_all (s must be static). At most SCRIPT_MAX. */
#define SCRIPT_MAX 16
void script_register(struct script *s);

/* Sends SCRIPT LOAD of every registered script on a fresh connection. */
void script_load_all(struct redisAsyncContext *ac);

/* Starts c with "EVALSHA sha" or "EVAL body". */
void script_cmd(struct cmd *c, const struct script *s);

/* 1 if r is Redis's NOSCRIPT (someone flushed the cache): s goes whole from now
 * on, until the next connection loads it again. Else 0. */
int script_missing(struct script *s, const struct redisReply *r);

#endif
