/* cmd.c - see cmd.h. */
#include "cmd.h"

#include <stdio.h>
#include <string.h>

void cmd_init(struct cmd *c, const char *name)
{
    c->argc = 0;
    c->nnum = 0;
    c->overflow = 0;
    cmd_addz(c, name);
}

void cmd_add(struct cmd *c, const char *s, size_t len)
{
    if (c->argc == CMD_MAX_ARGS) {
        c->overflow = 1;
        return;
    }
    c->argv[c->argc] = s;
    c->len[c->argc] = len;
    c->argc++;
}

void cmd_addz(struct cmd *c, const char *s)
{
    cmd_add(c, s, strlen(s));
}

static char *cmd_numbuf(struct cmd *c)
{
    if (c->nnum == CMD_MAX_NUMS) {
        c->overflow = 1;
        return NULL;
    }
    return c->num[c->nnum++];
}

void cmd_addll(struct cmd *c, long long v)
{
    char *b = cmd_numbuf(c);
    if (b == NULL)
        return;
    int n = snprintf(b, sizeof(c->num[0]), "%lld", v);
    cmd_add(c, b, (size_t)n);
}

void cmd_adddbl(struct cmd *c, double v)
{
    char *b = cmd_numbuf(c);
    if (b == NULL)
        return;
    /* %.15g round-trips every value a user can reasonably type (0.7 stays 0.7). */
    int n = snprintf(b, sizeof(c->num[0]), "%.15g", v);
    cmd_add(c, b, (size_t)n);
}
