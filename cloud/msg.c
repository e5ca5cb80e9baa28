/* msg: see msg.h. */
#include "msg.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define TS_MAX 253402300799999.0 /* 9999-12-31T23:59:59.999Z in ms */
#define SEQ_MAX 9007199254740991.0

static int eset(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int eset(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* An integer-valued JSON number in [lo, hi] (both exactly representable as doubles). */
static bool int_in(const cJSON *it, double lo, double hi, double *out)
{
    double v;

    if (!cJSON_IsNumber(it))
        return false;
    v = it->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses buf as exactly one JSON value, JSON white space around it allowed. cJSON takes
 * every byte up to 0x20 for white space, NUL included: such bytes, and NUL anywhere, are
 * refused here first. */
static cJSON *parse_whole(const char *buf, size_t len)
{
    const char *end = NULL, *p = buf;
    cJSON *root;

    if (len == 0 || memchr(buf, '\0', len))
        return NULL;
    while (p < buf + len && json_space(*p))
        p++;
    if (p == buf + len || (unsigned char)*p <= 0x20)
        return NULL;
    root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root)
        return NULL;
    while (end && end < buf + len && json_space(*end))
        end++;
    if (!end || end != buf + len) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

bool msg_loss_reason_valid(const char *reason)
{
    static const char *const reasons[] = {"queue_full", "disk_error", "queue_corrupt",
                                          "not_queued"};

    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (strcmp(reason, reasons[i]) == 0)
            return true;
    return false;
}

/* The envelope both messages share: v and gw. */
static int parse_envelope(const cJSON *root, char *gw, char *err, size_t errlen)
{
    const cJSON *it;
    double v;

    if (!cJSON_IsObject(root))
        return eset(err, errlen, "not a JSON object");
    if (!int_in(cJSON_GetObjectItemCaseSensitive(root, "v"), 0, 1e9, &v) || v != WIRE_VERSION)
        return eset(err, errlen, "v: required, protocol version %d", WIRE_VERSION);
    it = cJSON_GetObjectItemCaseSensitive(root, "gw");
    if (!cJSON_IsString(it) || !wire_id_valid(it->valuestring))
        return eset(err, errlen, "gw: required, 1..63 of [A-Za-z0-9_.-]");
    memcpy(gw, it->valuestring, strlen(it->valuestring) + 1);
    return 0;
}

static int parse_entry(const cJSON *o, int i, struct store_loss *l, char *err, size_t errlen)
{
    const cJSON *it;
    double first, last, count, ts;

    if (!cJSON_IsObject(o))
        return eset(err, errlen, "losses[%d]: not an object", i);
    if (!int_in(cJSON_GetObjectItemCaseSensitive(o, "first"), 1, SEQ_MAX, &first))
        return eset(err, errlen, "losses[%d].first: required, an integer 1..2^53-1", i);
    if (!int_in(cJSON_GetObjectItemCaseSensitive(o, "last"), first, SEQ_MAX, &last))
        return eset(err, errlen, "losses[%d].last: required, an integer first..2^53-1", i);
    if (!int_in(cJSON_GetObjectItemCaseSensitive(o, "count"), 0, last - first + 1, &count))
        return eset(err, errlen, "losses[%d].count: required, an integer 0..last-first+1", i);
    it = cJSON_GetObjectItemCaseSensitive(o, "reason");
    if (!cJSON_IsString(it) || !msg_loss_reason_valid(it->valuestring))
        return eset(err, errlen,
                    "losses[%d].reason: required, queue_full, disk_error, queue_corrupt or "
                    "not_queued",
                    i);
    if (!int_in(cJSON_GetObjectItemCaseSensitive(o, "ts"), 0, TS_MAX, &ts))
        return eset(err, errlen, "losses[%d].ts: required, integer ms since the epoch", i);
    l->first = (uint64_t)first;
    l->last = (uint64_t)last;
    l->count = (uint64_t)count;
    snprintf(l->reason, sizeof(l->reason), "%s", it->valuestring);
    l->ts_ms = (int64_t)ts;
    return 0;
}

int msg_parse_loss(const char *buf, size_t len, struct msg_loss *out, char *err, size_t errlen)
{
    const cJSON *it, *arr;
    cJSON *root;
    int rc, n, i = 0;

    memset(out, 0, sizeof(*out));
    if (len > MSG_LOSS_MAX_PAYLOAD)
        return eset(err, errlen, "loss report of %zu bytes exceeds %d", len, MSG_LOSS_MAX_PAYLOAD);
    root = parse_whole(buf, len);
    if (!root)
        return eset(err, errlen, "loss report: not valid JSON");
    if ((rc = parse_envelope(root, out->gw, err, errlen)) < 0)
        goto done;
    it = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (!cJSON_IsString(it) || !wire_stream_valid(it->valuestring)) {
        rc = eset(err, errlen, "stream: required, 8..32 lowercase hex digits");
        goto done;
    }
    memcpy(out->stream, it->valuestring, strlen(it->valuestring) + 1);
    arr = cJSON_GetObjectItemCaseSensitive(root, "losses");
    if (!cJSON_IsArray(arr) || (n = cJSON_GetArraySize(arr)) < 1 || n > MSG_LOSSES_MAX) {
        rc = eset(err, errlen, "losses: required, an array of 1..%d entries", MSG_LOSSES_MAX);
        goto done;
    }
    cJSON_ArrayForEach(it, arr)
    {
        if ((rc = parse_entry(it, i, &out->losses[i], err, errlen)) < 0)
            goto done;
        i++;
    }
    out->n = i;
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

bool msg_utf8_valid(const char *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf, *end = p + len;

    while (p < end) {
        unsigned c = *p;
        size_t n;
        uint32_t cp;

        if (c == 0)
            return false;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false; /* a continuation byte, 0xc0/0xc1 (overlong) or above U+10FFFF */
        }
        if ((size_t)(end - p) <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((p[k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

/* A non-negative integer member of o, or -1. */
static int64_t gauge(const cJSON *o, const char *name)
{
    double v;

    if (!int_in(cJSON_GetObjectItemCaseSensitive(o, name), 0, SEQ_MAX, &v))
        return -1;
    return (int64_t)v;
}

int msg_parse_health(const char *buf, size_t len, struct msg_health *out, char *err, size_t errlen)
{
    const cJSON *q;
    cJSON *root;
    double ts;
    int rc;

    memset(out, 0, sizeof(*out));
    out->h.queue_depth = out->h.oldest_age_s = -1;
    if (len > MSG_HEALTH_MAX_PAYLOAD)
        return eset(err, errlen, "health of %zu bytes exceeds %d", len, MSG_HEALTH_MAX_PAYLOAD);
    if (!msg_utf8_valid(buf, len))
        return eset(err, errlen, "health: not valid UTF-8 text");
    root = parse_whole(buf, len);
    if (!root)
        return eset(err, errlen, "health: not valid JSON");
    if ((rc = parse_envelope(root, out->gw, err, errlen)) < 0)
        goto done;
    if (int_in(cJSON_GetObjectItemCaseSensitive(root, "ts"), 0, TS_MAX, &ts)) {
        out->has_ts = true;
        out->h.ts_ms = (int64_t)ts;
    }
    q = cJSON_GetObjectItemCaseSensitive(root, "queue");
    if (cJSON_IsObject(q)) {
        out->h.queue_depth = gauge(q, "depth");
        out->h.oldest_age_s = gauge(q, "oldest_age_s");
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int msg_format_ack(const struct store_ack *a, char *buf, size_t len)
{
    int n, m;

    if (!wire_stream_valid(a->stream) || a->nmissing < 0 || a->nmissing > STORE_ACK_MISSING_MAX)
        return -EINVAL;
    n = snprintf(buf, len, "{\"v\":%d,\"stream\":\"%s\",\"upto\":%llu,\"missing\":", WIRE_VERSION,
                 a->stream, (unsigned long long)a->upto);
    if (n < 0 || (size_t)n >= len)
        return -ENOSPC;
    m = seq_ranges_format(a->missing, (size_t)a->nmissing, buf + n, len - (size_t)n);
    if (m < 0 || (size_t)(n + m) + 1 >= len)
        return -ENOSPC;
    buf[n + m] = '}';
    buf[n + m + 1] = '\0';
    return n + m + 1;
}
