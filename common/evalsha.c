/* evalsha.c - see evalsha.h. */
#include "evalsha.h"

#include <string.h>

#include <hiredis/hiredis.h>

#include "cmd.h"

void evalsha_init(struct evalsha *e, const char *body)
{
    e->body = body;
    e->sha[0] = '\0';
}

int evalsha_learn(struct evalsha *e, const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len != 40)
        return -1;
    memcpy(e->sha, r->str, 40);
    e->sha[40] = '\0';
    return 0;
}

void evalsha_cmd(struct cmd *c, const struct evalsha *e)
{
    if (e->sha[0] != '\0') {
        cmd_init(c, "EVALSHA");
        cmd_add(c, e->sha, 40);
    } else {
        cmd_init(c, "EVAL");
        cmd_addz(c, e->body);
    }
}

int evalsha_missing(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR &&
           strncmp(r->str, "NOSCRIPT", 8) == 0;
}

void evalsha_whole(struct cmd *c, const struct evalsha *e)
{
    c->argv[0] = "EVAL";
    c->len[0] = 4;
    c->argv[1] = e->body;
    c->len[1] = strlen(e->body);
}
