/* fuzz_chunks.c - an upstream's event stream through processor/chunks.c, fed whole
 * and cut where the first byte says: both readings agree, the limits hold, and a
 * finished stream's body is JSON whose content is the text read. */
#include <string.h>

#include <jansson.h>

#include "../../processor/chunks.h"
#include "fuzz.h"

#define FUZZ_MAX_TEXT 4096
#define FUZZ_MAX_EVENT 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1, cut = n > 0 ? data[0] % (n + 1) : 0;
    struct chunks whole, parts;
    chunks_init(&whole, FUZZ_MAX_TEXT, FUZZ_MAX_EVENT);
    chunks_init(&parts, FUZZ_MAX_TEXT, FUZZ_MAX_EVENT);
    int a = chunks_feed(&whole, s, n);
    int b = chunks_feed(&parts, s, cut);
    if (b == 0)
        b = chunks_feed(&parts, s + cut, n - cut);
    FUZZ_CHECK(a == b);
    FUZZ_CHECK(whole.done == parts.done && whole.failed == parts.failed);
    FUZZ_CHECK(whole.text_len == parts.text_len);
    FUZZ_CHECK(whole.text_len == 0 ||
               memcmp(whole.text, parts.text, whole.text_len) == 0);
    FUZZ_CHECK(whole.text_len <= FUZZ_MAX_TEXT);
    FUZZ_CHECK(whole.line_len <= FUZZ_MAX_EVENT && whole.event_len <= FUZZ_MAX_EVENT);

    char err[256];
    char *body = chunks_body(&whole, err, sizeof(err));
    if (body != NULL) {
        FUZZ_CHECK(whole.done && !whole.failed);
        json_error_t jerr;
        json_t *root = json_loads(body, JSON_ALLOW_NUL, &jerr);
        json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
        json_t *content = json_object_get(json_object_get(choice, "message"), "content");
        FUZZ_CHECK(json_is_string(content) &&
                   json_string_length(content) == whole.text_len);
        FUZZ_CHECK(whole.text_len == 0 ||
                   memcmp(json_string_value(content), whole.text, whole.text_len) == 0);
        json_decref(root);
        free(body);
    }
    chunks_reset(&whole);
    chunks_reset(&parts);
    return 0;
}
