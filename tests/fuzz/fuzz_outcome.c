/* fuzz_outcome.c - an upstream response through processor/outcome.c's classifier.
 * The first byte picks the curl result, the next two the HTTP status, the rest is
 * the body. */
#include <string.h>

#include <curl/curl.h>

#include "../../processor/outcome.h"
#include "fuzz.h"

#define FUZZ_SECRET "sk-fuzz-0123456789abcdef"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    static const int curl_codes[] = {CURLE_OK,
                                     CURLE_OPERATION_TIMEDOUT,
                                     CURLE_COULDNT_CONNECT,
                                     CURLE_COULDNT_RESOLVE_HOST,
                                     CURLE_RECV_ERROR,
                                     CURLE_SEND_ERROR,
                                     CURLE_GOT_NOTHING,
                                     CURLE_WRITE_ERROR,
                                     CURLE_PEER_FAILED_VERIFICATION,
                                     CURLE_SSL_CONNECT_ERROR,
                                     CURLE_SSL_CACERT_BADFILE,
                                     CURLE_PARTIAL_FILE};
    size_t ncodes = sizeof(curl_codes) / sizeof(curl_codes[0]);
    /* Most inputs are a response that arrived: curl said OK. */
    int curl_code = data[0] < 0xc0 ? CURLE_OK : curl_codes[data[0] % ncodes];
    long status =
        curl_code == CURLE_OK ? 100 + (long)((data[1] << 8 | data[2]) % 500) : 0;

    struct outcome_input in = {.curl_code = curl_code,
                               .curl_error = curl_code ? "curl said no" : NULL,
                               .too_large = curl_code == CURLE_WRITE_ERROR,
                               .max_bytes = 1048576,
                               .max_completion_bytes = 1048576,
                               .http_status = status,
                               .body = (const char *)data + 3,
                               .body_len = size - 3,
                               .retry_after_ms = data[0] & 1 ? 1500 : -1,
                               .request_model = "gpt-4o-mini",
                               .secret = FUZZ_SECRET};
    struct outcome out;
    outcome_init(&out);
    if (outcome_classify(&in, &out) == 0) {
        FUZZ_CHECK(out.kind == OUTCOME_COMPLETED || out.kind == OUTCOME_RETRY ||
                   out.kind == OUTCOME_FAILED);
        if (out.kind == OUTCOME_COMPLETED) {
            FUZZ_CHECK(out.response != NULL && out.model != NULL);
        } else {
            FUZZ_CHECK(out.code != NULL && out.message != NULL);
            FUZZ_CHECK(strlen(out.message) <= OUTCOME_MESSAGE_MAX);
            /* The API key never leaves in what the outcome says. */
            FUZZ_CHECK(strstr(out.message, FUZZ_SECRET) == NULL);
        }
        if (out.model != NULL)
            FUZZ_CHECK(strstr(out.model, FUZZ_SECRET) == NULL);
        /* The last attempt turns a retryable outcome into a failure. */
        if (out.kind == OUTCOME_RETRY && outcome_give_up(&out, 3) == 0) {
            FUZZ_CHECK(out.kind == OUTCOME_FAILED && out.message != NULL);
            FUZZ_CHECK(strstr(out.message, FUZZ_SECRET) == NULL);
        }
    }
    outcome_clear(&out);
    return 0;
}
