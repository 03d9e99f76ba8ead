/* fuzz_validate.c - a POST /chat body and an Idempotency-Key header, as a client
 * sends them, through the api's validation (api/validate.c). */
#include <math.h>
#include <string.h>

#include <jansson.h>

#include "../../api/validate.h"
#include "fuzz.h"
#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct chat_request req;
    struct validate_error err;
    json_t *doc = validate_chat((const char *)data, size, "gpt-4o-mini", &req, &err);
    if (doc != NULL) {
        /* What the api then stores must be what validate.h promises. */
        FUZZ_CHECK(req.message != NULL && req.message_len > 0);
        FUZZ_CHECK(memchr(req.message, '\0', req.message_len) == NULL);
        FUZZ_CHECK(req.model != NULL && req.model[0] != '\0');
        FUZZ_CHECK(req.temperature >= TEMPERATURE_MIN &&
                   req.temperature <= TEMPERATURE_MAX);
        json_decref(doc);
    } else {
        FUZZ_CHECK(err.status == 400 && err.code != NULL);
        FUZZ_CHECK(memchr(err.message, '\0', sizeof(err.message)) != NULL);
    }

    /* civetweb hands the header value NUL-terminated. */
    char *key = malloc(size + 1);
    if (key == NULL)
        return 0;
    memcpy(key, data, size);
    key[size] = '\0';
    if (validate_idempotency_key(key, &err) == 0) {
        size_t n = strlen(key);
        FUZZ_CHECK(n >= 1 && n <= VALIDATE_IDEM_KEY_MAX);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(key[i] >= 0x20 && key[i] <= 0x7e);
    }
    free(key);
    return 0;
}
