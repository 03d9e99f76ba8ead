/* fuzz_redis_url.c - a REDIS_URL value through common/rconn.c's parser. */
#include <string.h>

#include "fuzz.h"
#include "rconn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The environment hands the value NUL-terminated. */
    char *url = malloc(size + 1);
    if (url == NULL)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';

    struct rconn_url u;
    char err[256];
    if (rconn_url_parse(url, &u, err, sizeof(err)) == 0) {
        FUZZ_CHECK(memchr(u.host, '\0', sizeof(u.host)) != NULL && u.host[0] != '\0');
        FUZZ_CHECK(u.port > 0 && u.port <= 65535);
        FUZZ_CHECK(u.db >= 0);
        FUZZ_CHECK(memchr(u.user, '\0', sizeof(u.user)) != NULL);
        FUZZ_CHECK(memchr(u.pass, '\0', sizeof(u.pass)) != NULL);
        /* The description goes to the log: it says whether there is a password,
         * but does not depend on what it is. */
        struct rconn_url other = u;
        if (other.pass[0] != '\0')
            strcpy(other.pass, "x");
        char desc[512], desc_other[512];
        rconn_url_describe(&u, desc, sizeof(desc));
        rconn_url_describe(&other, desc_other, sizeof(desc_other));
        FUZZ_CHECK(strcmp(desc, desc_other) == 0);
    } else {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    }
    free(url);
    return 0;
}
