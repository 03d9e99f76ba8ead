/* cmd.h - a Redis command as an argv array, built without allocating.
 *
 * Strings added are borrowed and must outlive the send; numbers are formatted
 * into the struct itself, so a struct cmd must not move once numbers are in. */
#ifndef CHATQ_CMD_H
#define CHATQ_CMD_H

#include <stddef.h>

#define CMD_MAX_ARGS 64
#define CMD_MAX_NUMS 16

struct cmd {
    int argc;
    int nnum;
    int overflow; /* set when an add did not fit; such a command must not be sent */
    const char *argv[CMD_MAX_ARGS];
    size_t len[CMD_MAX_ARGS];
    char num[CMD_MAX_NUMS][32];
};

void cmd_init(struct cmd *c, const char *name);
void cmd_add(struct cmd *c, const char *s, size_t len);
void cmd_addz(struct cmd *c, const char *s);
void cmd_addll(struct cmd *c, long long v);
void cmd_adddbl(struct cmd *c, double v);

#endif
