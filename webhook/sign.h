/* sign.h - Standard Webhooks signatures: the whsec_ secret, and the
 * webhook-signature header of one delivery,
 *
 *   v1,<base64 of HMAC-SHA256(secret bytes, "<webhook-id>.<webhook-timestamp>.<body>")>
 *
 * The secret is WEBHOOK_SECRET: "whsec_" and the base64 of the key's bytes (as
 * Standard Webhooks and its libraries write it; a secret without the prefix is
 * read as base64 too). It is never logged and never written to Redis. */
#ifndef CHATQ_WEBHOOK_SIGN_H
#define CHATQ_WEBHOOK_SIGN_H

#include <stddef.h>

#define SIGN_PREFIX "whsec_"
#define SIGN_KEY_MIN 16 /* bytes: shorter keys are refused at start */
#define SIGN_KEY_MAX 256
#define SIGN_HEADER_MAX 64 /* "v1," + 44 base64 characters + NUL, rounded up */

struct sign {
    unsigned char key[SIGN_KEY_MAX];
    size_t keylen;
};

/* Decodes secret into s. Returns 0, or -1 with the reason in err (which never
 * quotes the secret). */
int sign_init(struct sign *s, const char *secret, char *err, size_t errlen);

/* Writes the webhook-signature value of (id, timestamp, body) into out (at least
 * SIGN_HEADER_MAX bytes). Returns 0, or -1 if HMAC failed. */
int sign_message(const struct sign *s, const char *id, long long timestamp,
                 const char *body, size_t bodylen, char *out, size_t outlen);

/* Wipes the key. */
void sign_clear(struct sign *s);

#endif
