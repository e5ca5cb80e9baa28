/* fault: see fault.h. */
#include "fault.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {
    [FAULT_NONE] = "none",           [FAULT_NOREPLY] = "noreply", [FAULT_CRC] = "crc",
    [FAULT_EXCEPTION] = "exception", [FAULT_SLOW] = "slow",       [FAULT_GARBAGE] = "garbage",
};

const char *fault_kind_name(enum fault_kind k)
{
    if ((unsigned)k >= sizeof(kind_names) / sizeof(kind_names[0]))
        return "?";
    return kind_names[k];
}

/* Strict decimal in [lo, hi]: digits only, nothing after. */
static int parse_arg(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    if (s == NULL || !isdigit((unsigned char)s[0]))
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -ERANGE;
    *out = v;
    return 0;
}

int fault_parse(const char *kind, const char *arg, struct fault *f, char *err, size_t errlen)
{
    int k = -1;
    long v = 0;

    for (size_t i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++)
        if (strcmp(kind, kind_names[i]) == 0)
            k = (int)i;
    if (k < 0) {
        snprintf(err, errlen,
                 "unknown fault \"%s\" (none, noreply, crc, exception N, slow MS, garbage)", kind);
        return -EINVAL;
    }
    if (k == FAULT_EXCEPTION || k == FAULT_SLOW) {
        long hi = k == FAULT_EXCEPTION ? 255 : FAULT_SLOW_MAX_MS;

        if (arg == NULL) {
            snprintf(err, errlen, "%s needs %s", kind_names[k],
                     k == FAULT_EXCEPTION ? "an exception code 1..255" : "a delay in ms");
            return -EINVAL;
        }
        if (parse_arg(arg, k == FAULT_EXCEPTION ? 1 : 0, hi, &v) < 0) {
            snprintf(err, errlen, "%s \"%s\": not a number in %d..%ld", kind_names[k], arg,
                     k == FAULT_EXCEPTION ? 1 : 0, hi);
            return -EINVAL;
        }
    } else if (arg != NULL) {
        snprintf(err, errlen, "%s takes no argument (got \"%s\")", kind_names[k], arg);
        return -EINVAL;
    }
    f->kind = (enum fault_kind)k;
    f->arg = (int)v;
    return 0;
}

char *fault_format(const struct fault *f, char *buf, size_t len)
{
    if (f->kind == FAULT_EXCEPTION || f->kind == FAULT_SLOW)
        snprintf(buf, len, "%s %d", fault_kind_name(f->kind), f->arg);
    else
        snprintf(buf, len, "%s", fault_kind_name(f->kind));
    return buf;
}

int line_bits_per_char(char parity, int stop_bits)
{
    return 1 + 8 + (parity == 'E' || parity == 'O' ? 1 : 0) + stop_bits;
}

int64_t line_reply_us(int baud, int bits_per_char, size_t req_chars, size_t rep_chars)
{
    /* In half characters so that the 3.5-character silence stays an integer. */
    int64_t half_chars = 2 * (int64_t)(req_chars + rep_chars) + 7;
    int64_t num = half_chars * bits_per_char * 1000000;
    int64_t den = 2 * (int64_t)baud;

    if (baud <= 0)
        return 0;
    return (num + den - 1) / den;
}

int64_t line_silence_us(int baud, int bits_per_char)
{
    int64_t num = 7 * (int64_t)bits_per_char * 1000000;
    int64_t den = 2 * (int64_t)baud;

    if (baud <= 0)
        return 0;
    return (num + den - 1) / den;
}
