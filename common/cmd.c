/* cmd.c - see cmd.h. */
#include "cmd.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cmd_init(struct cmd *c, const char *name)
{
    c->argc = 0;
    c->cap = CMD_INLINE_ARGS;
    c->nnum = 0;
    c->overflow = 0;
    c->argv = c->inline_argv;
    c->len = c->inline_len;
    cmd_addz(c, name);
}

void cmd_free(struct cmd *c)
{
    if (c->argv != c->inline_argv) {
        free(c->argv);
        free(c->len);
    }
    c->argv = c->inline_argv;
    c->len = c->inline_len;
    c->argc = 0;
    c->cap = CMD_INLINE_ARGS;
}

/* Doubles the room for arguments, moving them to the heap; 0 or -1. */
static int cmd_grow(struct cmd *c)
{
    if (c->cap > INT_MAX / 2)
        return -1;
    int ncap = c->cap * 2;
    const char **argv = malloc((size_t)ncap * sizeof(*argv));
    size_t *len = malloc((size_t)ncap * sizeof(*len));
    if (argv == NULL || len == NULL) {
        free(argv);
        free(len);
        return -1;
    }
    memcpy(argv, c->argv, (size_t)c->argc * sizeof(*argv));
    memcpy(len, c->len, (size_t)c->argc * sizeof(*len));
    if (c->argv != c->inline_argv) {
        free(c->argv);
        free(c->len);
    }
    c->argv = argv;
    c->len = len;
    c->cap = ncap;
    return 0;
}

void cmd_add(struct cmd *c, const char *s, size_t len)
{
    if (c->overflow)
        return;
    if (c->argc == c->cap && cmd_grow(c) != 0) {
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

size_t cmd_format_ll(char *b, long long v)
{
    char digits[CMD_LL_MAX];
    size_t n = 0, len = 0;
    /* In unsigned arithmetic, so that LLONG_MIN has its magnitude. */
    unsigned long long u = (unsigned long long)v;
    if (v < 0) {
        u = 0 - u;
        b[len++] = '-';
    }
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    while (n > 0)
        b[len++] = digits[--n];
    b[len] = '\0';
    return len;
}

/* Writes "<mark><n>\r\n" at p; returns the end. */
static char *cmd_resp_head(char *p, char mark, size_t n)
{
    *p++ = mark;
    p += cmd_format_ll(p, (long long)n);
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

char *cmd_resp(int argc, const char *const *argv, const size_t *argvlen, size_t *len)
{
    /* A head is a mark, at most 20 digits and CRLF; each argument ends in CRLF. */
    size_t total = 1 + CMD_LL_MAX + 2;
    for (int i = 0; i < argc; i++) {
        size_t n = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
        if (n > SIZE_MAX - total - (1 + CMD_LL_MAX + 4))
            return NULL;
        total += 1 + CMD_LL_MAX + 2 + n + 2;
    }
    char *buf = malloc(total);
    if (buf == NULL)
        return NULL;
    char *p = cmd_resp_head(buf, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        size_t n = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
        p = cmd_resp_head(p, '$', n);
        memcpy(p, argv[i], n);
        p += n;
        *p++ = '\r';
        *p++ = '\n';
    }
    *len = (size_t)(p - buf);
    return buf;
}

void cmd_addll(struct cmd *c, long long v)
{
    char *b = cmd_numbuf(c);
    if (b == NULL)
        return;
    cmd_add(c, b, cmd_format_ll(b, v));
}

void cmd_adddbl(struct cmd *c, double v)
{
    char *b = cmd_numbuf(c);
    if (b == NULL)
        return;
    /* %.15g keeps what a user typed as typed (0.7 stays 0.7, where %.17g writes
     * 0.69999999999999996); a value it does not give back exactly, such as
     * 0.7555555555555555555, takes the 17 digits every double round-trips in. */
    int n = snprintf(b, sizeof(c->num[0]), "%.15g", v);
    if (strtod(b, NULL) != v)
        n = snprintf(b, sizeof(c->num[0]), "%.17g", v);
    cmd_add(c, b, (size_t)n);
}
