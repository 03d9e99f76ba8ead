/* evalsha.c - see evalsha.h. SHA1 from OpenSSL's libcrypto (which libcurl and the
 * webhook signatures already use) rather than one more hand-written digest. */
#include "evalsha.h"

#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include "cmd.h"

void evalsha_init(struct evalsha *e, const char *body)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    e->body = body;
    SHA1((const unsigned char *)body, strlen(body), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(e->sha + 2 * i, 3, "%02x", md[i]);
}

void evalsha_cmd(struct cmd *c, const struct evalsha *e)
{
    cmd_init(c, "EVALSHA");
    cmd_add(c, e->sha, 40);
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
