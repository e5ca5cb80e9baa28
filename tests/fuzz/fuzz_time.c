/*
 * fuzz_time: times in HTTP query parameters (time_parse: ?from=...&to=...).
 *
 * Checks: time_parse() never reads past the NUL of its argument; and every time it
 * accepts survives a round trip through its own output format: time_format(ms) written
 * into the documented 25 bytes parses back to the same ms.
 */
#include "fuzz.h"

#include "timeutil.h"

#include <errno.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s, out[25]; /* the size timeutil.h promises is enough */
    int64_t ms = 0, back = 0;
    int rc;

    if (size > 256)
        return 0; /* longer than any query parameter we accept; time_parse stops at 40 */
    s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    rc = time_parse(s, &ms);
    if (rc == 0) {
        time_format(ms, out, sizeof(out));
        rc = time_parse(out, &back);
        FUZZ_CHECK(rc == 0 && back == ms,
                   "time_parse(\"%s\") = %lld, time_format = \"%s\", parsed back: rc %d, %lld", s,
                   (long long)ms, out, rc, (long long)back);
    } else {
        FUZZ_CHECK(rc == -EINVAL, "time_parse(\"%s\") returned %d", s, rc);
    }
    free(s);
    return 0;
}
