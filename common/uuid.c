/* uuid.c - see uuid.h. */
#include "uuid.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

/* Trace ids are the only key to a chat's answer, so they come from the kernel's
 * CSPRNG; a per-thread pool turns one getrandom() per request into one per 256. */
#define UUID_POOL 4096

static _Thread_local unsigned char uuid_pool[UUID_POOL];
static _Thread_local size_t uuid_pool_used = UUID_POOL;

int uuid_v4(char out[UUID_LEN + 1])
{
    if (uuid_pool_used == UUID_POOL) {
        if (getrandom(uuid_pool, sizeof(uuid_pool), 0) != (ssize_t)sizeof(uuid_pool))
            return -1;
        uuid_pool_used = 0;
    }
    unsigned char *b = uuid_pool + uuid_pool_used;
    uuid_pool_used += 16;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
    explicit_bzero(b, 16); /* a used id's bytes do not linger in the pool */
    return 0;
}

int uuid_valid(const char *s)
{
    for (int i = 0; i < UUID_LEN; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return 0;
    }
    return s[UUID_LEN] == '\0';
}

void uuid_hex(const char *uuid, char out[UUID_HEX_LEN + 1])
{
    size_t n = 0;
    for (const char *p = uuid; *p != '\0' && n < UUID_HEX_LEN; p++)
        if (*p != '-')
            out[n++] = *p;
    out[n] = '\0';
}
