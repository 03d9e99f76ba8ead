/* fuzz_oaireq.c - a POST /v1/responses or /v1/chat/completions body, as a client
 * sends it, through the OpenAI front's rules (api/oaireq.c); the first byte picks
 * which. What is accepted must be what the rest of the pipeline can carry. */
#include <string.h>

#include <jansson.h>

#include "../../api/oaireq.h"
#include "fuzz.h"
#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct oaireq o;
    struct oaireq_error err;
    if (size == 0)
        return 0;
    const char *body = (const char *)data + 1;
    json_t *doc = data[0] & 1 ? oaireq_chat(body, size - 1, &o, &err)
                              : oaireq_responses(body, size - 1, &o, &err);
    if (doc == NULL) {
        FUZZ_CHECK(err.status == 400 || err.status == 500);
        FUZZ_CHECK(memchr(err.message, '\0', sizeof(err.message)) != NULL);
        return 0;
    }
    /* The conversation the processor will send: a non-empty array of
     * {role, content} strings without NUL. */
    FUZZ_CHECK(o.req.messages != NULL && o.req.messages_len == strlen(o.req.messages));
    json_t *m = json_loads(o.req.messages, 0, NULL);
    FUZZ_CHECK(json_is_array(m) && json_array_size(m) > 0);
    size_t i;
    json_t *item;
    json_array_foreach (m, i, item) {
        FUZZ_CHECK(json_object_size(item) == 2);
        FUZZ_CHECK(json_is_string(json_object_get(item, "role")));
        FUZZ_CHECK(json_is_string(json_object_get(item, "content")));
    }
    json_decref(m);
    FUZZ_CHECK(o.req.model != NULL && o.req.model[0] != '\0');
    FUZZ_CHECK(o.req.temperature >= TEMPERATURE_MIN &&
               o.req.temperature <= TEMPERATURE_MAX);
    FUZZ_CHECK(!o.req.has_top_p || (o.req.top_p >= 0 && o.req.top_p <= 1));
    FUZZ_CHECK(o.req.max_tokens >= 0);
    json_decref(doc);
    oaireq_clear(&o);
    return 0;
}
