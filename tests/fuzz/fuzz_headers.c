/* fuzz_headers.c - upstream response headers: the value parsers of
 * processor/retry.c on the whole input, then the input as header lines (split
 * after each LF, as curl's header callback sees them) into an upstream_xfer. */
#include <string.h>

#include "../../processor/retry.h"
#include "../../processor/upstream.h"
#include "fuzz.h"

/* 2026-01-01T00:00:00Z, so that HTTP-dates land on both sides of now. */
#define FUZZ_NOW_MS 1767225600000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    FUZZ_CHECK(retry_after_parse(s, size, FUZZ_NOW_MS) >= -1);
    FUZZ_CHECK(retry_after_ms_parse(s, size) >= -1);
    FUZZ_CHECK(retry_duration_parse(s, size) >= -1);
    FUZZ_CHECK(retry_count_parse(s, size) >= -1);

    struct upstream_xfer x;
    upstream_xfer_init(&x);
    const char *p = s, *end = s + size;
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        size_t len = lf ? (size_t)(lf - p) + 1 : (size_t)(end - p);
        upstream_header_line(&x, p, len, FUZZ_NOW_MS);
        p += len;
    }
    FUZZ_CHECK(upstream_xfer_retry_after(&x) >= -1);
    upstream_xfer_clear(&x);
    return 0;
}
