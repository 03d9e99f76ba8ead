/* sign.c - see sign.h. HMAC and base64 come from OpenSSL's libcrypto, which
 * libcurl already loads for https (the processor's idle memory is mostly it), so
 * the sender adds no library a chatq host does not have. */
#include "sign.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

int sign_init(struct sign *s, const char *secret, char *err, size_t errlen)
{
    unsigned char buf[SIGN_KEY_MAX + 4];
    memset(s, 0, sizeof(*s));
    if (secret == NULL || secret[0] == '\0') {
        snprintf(err, errlen,
                 "WEBHOOK_SECRET: not set (a whsec_ secret is required: "
                 "every delivery is signed with it)");
        return -1;
    }
    if (strncmp(secret, SIGN_PREFIX, strlen(SIGN_PREFIX)) == 0)
        secret += strlen(SIGN_PREFIX);
    size_t len = strlen(secret);
    if (len == 0 || len % 4 != 0 || len / 4 * 3 > sizeof(buf)) {
        snprintf(err, errlen,
                 "WEBHOOK_SECRET: not whsec_ followed by base64 of %d to %d bytes",
                 SIGN_KEY_MIN, SIGN_KEY_MAX);
        return -1;
    }
    /* EVP_DecodeBlock counts the '=' padding as zero bytes: take them off. */
    int n = EVP_DecodeBlock(buf, (const unsigned char *)secret, (int)len);
    if (n >= 0 && secret[len - 1] == '=')
        n--;
    if (n >= 0 && secret[len - 2] == '=')
        n--;
    if (n < SIGN_KEY_MIN || n > SIGN_KEY_MAX) {
        OPENSSL_cleanse(buf, sizeof(buf));
        snprintf(err, errlen,
                 "WEBHOOK_SECRET: not whsec_ followed by base64 of %d to %d bytes",
                 SIGN_KEY_MIN, SIGN_KEY_MAX);
        return -1;
    }
    memcpy(s->key, buf, (size_t)n);
    s->keylen = (size_t)n;
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

int sign_message(const struct sign *s, const char *id, long long timestamp,
                 const char *body, size_t bodylen, char *out, size_t outlen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    int rc = -1;
    /* HMAC() rather than HMAC_CTX, which OpenSSL 3 deprecates: one buffer. */
    int headlen = snprintf(NULL, 0, "%s.%lld.", id, timestamp);
    char *msg = headlen < 0 ? NULL : malloc((size_t)headlen + bodylen + 1);
    if (msg == NULL || outlen < SIGN_HEADER_MAX)
        goto out;
    snprintf(msg, (size_t)headlen + 1, "%s.%lld.", id, timestamp);
    memcpy(msg + headlen, body, bodylen);
    if (HMAC(EVP_sha256(), s->key, (int)s->keylen, (const unsigned char *)msg,
             (size_t)headlen + bodylen, mac, &maclen) == NULL)
        goto out;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)maclen);
    rc = 0;
out:
    free(msg);
    return rc;
}

void sign_clear(struct sign *s)
{
    OPENSSL_cleanse(s->key, sizeof(s->key));
    s->keylen = 0;
}
