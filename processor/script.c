/* script.c - see script.h. */
#include "script.h"

#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cmd.h"
#include "log.h"

static struct script *script_all[SCRIPT_MAX];
static size_t script_n;

void script_register(struct script *s)
{
    for (size_t i = 0; i < script_n; i++)
        if (script_all[i] == s)
            return;
    if (script_n < SCRIPT_MAX)
        script_all[script_n++] = s;
}

static void script_on_loaded(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct script *s = privdata;
    const redisReply *r = reply;
    if (r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40)
        memcpy(s->sha, r->str, 41);
    else if (r != NULL && r->type == REDIS_REPLY_ERROR)
        log_warn(NULL, "SCRIPT LOAD failed (the script is sent whole): %s", r->str);
}

void script_load_all(redisAsyncContext *ac)
{
    for (size_t i = 0; i < script_n; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", script_all[i]->body};
        redisAsyncCommandArgv(ac, script_on_loaded, script_all[i], 3, argv, NULL);
    }
}

void script_cmd(struct cmd *c, const struct script *s)
{
    if (s->sha[0] != '\0') {
        cmd_init(c, "EVALSHA");
        cmd_addz(c, s->sha);
    } else {
        cmd_init(c, "EVAL");
        cmd_addz(c, s->body);
    }
}

int script_missing(struct script *s, const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOSCRIPT", 8) != 0)
        return 0;
    s->sha[0] = '\0';
    return 1;
}
