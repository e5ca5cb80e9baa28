/*
 * fuzz_jsonc: comment stripping of configuration files (json_strip_comments).
 *
 * Checks, with a scanner written independently of the one under test:
 *   - it works in place on exactly len bytes (ASan: the buffer has no spare byte) and
 *     changes bytes only into spaces, never a newline, so lengths and line numbers stay;
 *   - outside strings, the result contains no "//" and no "/" followed by "*";
 *   - stripping the result again changes nothing.
 */
#include "fuzz.h"

#include "jsonc.h"

#include <string.h>

/* Offset of the first comment start outside strings, or -1. */
static long first_comment(const char *s, size_t len)
{
    int in_string = 0;

    for (size_t i = 0; i < len; i++) {
        if (in_string) {
            if (s[i] == '\\')
                i++; /* the escaped character, whatever it is */
            else if (s[i] == '"')
                in_string = 0;
        } else if (s[i] == '"') {
            in_string = 1;
        } else if (s[i] == '/' && i + 1 < len && (s[i + 1] == '/' || s[i + 1] == '*')) {
            return (long)i;
        }
    }
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1), *again = malloc(size ? size : 1);
    long at;

    if (!buf || !again)
        goto out;
    memcpy(buf, data, size);
    json_strip_comments(buf, size);
    for (size_t i = 0; i < size; i++) {
        char in = (char)data[i];
        FUZZ_CHECK(buf[i] == in || (buf[i] == ' ' && in != '\n'), "byte %zu: 0x%02x became 0x%02x",
                   i, (unsigned char)in, (unsigned char)buf[i]);
    }
    at = first_comment(buf, size);
    FUZZ_CHECK(at < 0, "a comment starts at byte %ld after stripping: \"%.*s\"", at,
               (int)(size - (size_t)at < 20 ? size - (size_t)at : 20), buf + at);
    memcpy(again, buf, size);
    json_strip_comments(again, size);
    FUZZ_CHECK(memcmp(again, buf, size) == 0, "stripping twice changed the result");
out:
    free(again);
    free(buf);
    return 0;
}
