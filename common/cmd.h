/* cmd.h - a Redis command as an argv array: the one argv builder of the project.
 *
 * Up to CMD_INLINE_ARGS arguments live in the struct itself, so the common short
 * command allocates nothing; longer ones (a claim of a thousand ids, a dead
 * letter carrying a whole entry) move to the heap. Strings added are borrowed
 * and must outlive the send; numbers are formatted into the struct itself, so a
 * struct cmd must not move once anything is in it. Every cmd_init is paired with
 * a cmd_free. */
#ifndef CHATQ_CMD_H
#define CHATQ_CMD_H

#include <stddef.h>

#define CMD_INLINE_ARGS 32
#define CMD_MAX_NUMS 16

struct cmd {
    int argc;
    int cap;
    int nnum;
    int overflow; /* an add did not fit (out of memory): the command must not be sent */
    const char **argv;
    size_t *len;
    const char *inline_argv[CMD_INLINE_ARGS];
    size_t inline_len[CMD_INLINE_ARGS];
    char num[CMD_MAX_NUMS][32];
};

void cmd_init(struct cmd *c, const char *name);
/* Frees what longer commands took from the heap; the cmd may be inited again. */
void cmd_free(struct cmd *c);
void cmd_add(struct cmd *c, const char *s, size_t len);
void cmd_addz(struct cmd *c, const char *s);
void cmd_addll(struct cmd *c, long long v);
void cmd_adddbl(struct cmd *c, double v);

/* Writes v in decimal into b, which has room for CMD_LL_MAX bytes, with a NUL;
 * returns its length. What snprintf's "%lld" writes, at a tenth of the cost: every
 * request formats a dozen numbers. */
#define CMD_LL_MAX 21
size_t cmd_format_ll(char *b, long long v);

/* The command argv[0..argc) (argvlen[i] bytes each, or NUL-terminated when argvlen
 * is NULL) in Redis's protocol, as hiredis would send it, for
 * redisAppendFormattedCommand: a malloc'd buffer of *len bytes, or NULL when out of
 * memory. hiredis 0.14 formats each argument's length with its own printf-like
 * sdscatfmt and copies the whole twice: a quarter of the api's instructions per
 * POST. */
char *cmd_resp(int argc, const char *const *argv, const size_t *argvlen, size_t *len);

#endif
