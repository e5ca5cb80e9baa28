/* wire: see wire.h. */
#include "wire.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const reject_names[WR_COUNT] = {
    "not_object", "bad_seq", "bad_meter", "bad_ts", "bad_ok", "bad_values",
};

const char *wire_reject_name(enum wire_reject r)
{
    return (unsigned)r < WR_COUNT ? reject_names[r] : "?";
}

bool wire_id_valid(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= WIRE_ID_MAX - 1)
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return n > 0;
}

bool wire_stream_valid(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= WIRE_STREAM_MAX - 1 || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return n >= 8;
}

int wire_format_double(double v, char *buf, size_t len)
{
    int n;

    if (!isfinite(v))
        return snprintf(buf, len, "null");
    if (v == floor(v) && fabs(v) < 1e15)
        return snprintf(buf, len, "%.0f", v);
    for (int prec = 15; prec < 17; prec++) {
        n = snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return n;
    }
    return snprintf(buf, len, "%.17g", v);
}

/* Appends formatted text to buf at *pos; returns -1 once it no longer fits. */
static int put(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int put(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*pos >= len)
        return -1;
    va_start(ap, fmt);
    n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len - *pos)
        return -1;
    *pos += (size_t)n;
    return 0;
}

/* Copies s keeping only characters that need no JSON escaping and are printable. */
static void safe_text(const char *s, char *out, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; s[i] && j + 1 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        out[j++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    out[j] = '\0';
}

int wire_encode_reading(const struct reading *r, char *buf, size_t len)
{
    size_t pos = 0;
    char num[40];
    int first = 1;

    if (put(buf, len, &pos, "{\"seq\":%llu,\"meter\":\"%s\",\"ts\":%lld,\"ok\":%s",
            (unsigned long long)r->seq, r->meter, (long long)r->ts_ms,
            r->ok ? "true" : "false") < 0)
        return -ENOSPC;
    if (r->unsynced && put(buf, len, &pos, ",\"clock\":\"unsynced\"") < 0)
        return -ENOSPC;
    if (!r->ok) {
        char err[WIRE_ERROR_MAX];
        safe_text(r->error[0] ? r->error : "failed", err, sizeof(err));
        if (put(buf, len, &pos, ",\"error\":\"%s\"}", err) < 0)
            return -ENOSPC;
        return (int)pos;
    }
    if (put(buf, len, &pos, ",\"values\":{") < 0)
        return -ENOSPC;
    for (int q = 0; q < qty_count(); q++) {
        if (!(r->present & (1u << q)) || !isfinite(r->values[q]))
            continue;
        wire_format_double(r->values[q], num, sizeof(num));
        if (put(buf, len, &pos, "%s\"%s\":%s", first ? "" : ",", qty_at(q)->name, num) < 0)
            return -ENOSPC;
        first = 0;
    }
    if (put(buf, len, &pos, "}}") < 0)
        return -ENOSPC;
    return (int)pos;
}

char *wire_encode_batch(const char *gw, const char *stream, const struct reading *r, int n)
{
    size_t cap = 256 + (size_t)(n > 0 ? n : 0) * WIRE_READING_MAX, pos = 0;
    char *out = malloc(cap);

    if (!out)
        return NULL;
    if (put(out, cap, &pos, "{\"v\":%d,\"gw\":\"%s\",\"stream\":\"%s\",\"readings\":[",
            WIRE_VERSION, gw, stream) < 0)
        goto fail;
    for (int i = 0; i < n; i++) {
        int w;
        if (i > 0)
            out[pos++] = ',';
        w = wire_encode_reading(&r[i], out + pos, cap - pos);
        if (w < 0)
            goto fail;
        pos += (size_t)w;
    }
    if (put(out, cap, &pos, "]}") < 0)
        goto fail;
    return out;
fail:
    free(out);
    return NULL;
}

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

/* An integer-valued JSON number in [lo, hi] (both exactly representable). */
static bool int_in(const cJSON *it, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(it))
        return false;
    double v = it->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static void reject(struct wire_batch *b, enum wire_reject why, int idx, const char *detail)
{
    if (b->nrejected++ == 0)
        snprintf(b->first_reject, sizeof(b->first_reject), "readings[%d]: %s", idx, detail);
    b->rejected[why]++;
}

/* Fills *r from o; returns -1 and counts the reject when o is not a valid reading. */
static int parse_reading(struct wire_batch *b, int idx, const cJSON *o, struct reading *r)
{
    const cJSON *it;
    double v;

    memset(r, 0, sizeof(*r));
    if (!cJSON_IsObject(o)) {
        reject(b, WR_NOT_OBJECT, idx, "not an object");
        return -1;
    }
    if (!int_in(cJSON_GetObjectItemCaseSensitive(o, "seq"), 0, 9007199254740991.0, &v)) {
        reject(b, WR_SEQ, idx, "seq: required, an integer 0..2^53-1");
        return -1;
    }
    r->seq = (uint64_t)v;
    it = cJSON_GetObjectItemCaseSensitive(o, "meter");
    if (!cJSON_IsString(it) || !wire_id_valid(it->valuestring)) {
        reject(b, WR_METER, idx, "meter: required, 1..63 of [A-Za-z0-9_.-]");
        return -1;
    }
    memcpy(r->meter, it->valuestring, strlen(it->valuestring) + 1);
    /* ts: ms since the epoch, up to year 9999 */
    if (!int_in(cJSON_GetObjectItemCaseSensitive(o, "ts"), 0, 253402300799999.0, &v)) {
        reject(b, WR_TS, idx, "ts: required, integer ms since the epoch");
        return -1;
    }
    r->ts_ms = (int64_t)v;
    it = cJSON_GetObjectItemCaseSensitive(o, "ok");
    if (!cJSON_IsBool(it)) {
        reject(b, WR_OK, idx, "ok: required, true or false");
        return -1;
    }
    r->ok = cJSON_IsTrue(it);
    it = cJSON_GetObjectItemCaseSensitive(o, "clock");
    r->unsynced = cJSON_IsString(it) && strcmp(it->valuestring, "unsynced") == 0;
    if (!r->ok) {
        it = cJSON_GetObjectItemCaseSensitive(o, "error");
        snprintf(r->error, sizeof(r->error), "%s",
                 cJSON_IsString(it) ? it->valuestring : "failed");
        return 0;
    }
    it = cJSON_GetObjectItemCaseSensitive(o, "values");
    if (!cJSON_IsObject(it)) {
        reject(b, WR_VALUES, idx, "values: required when ok, an object");
        return -1;
    }
    const cJSON *val;
    cJSON_ArrayForEach(val, it)
    {
        int q = qty_index(val->string);
        if (q < 0)
            continue; /* unknown quantities are ignored (forward compatibility) */
        if (!cJSON_IsNumber(val) || !isfinite(val->valuedouble) ||
            fabs(val->valuedouble) > 1e15) {
            reject(b, WR_VALUES, idx, "values: each must be a finite number");
            return -1;
        }
        r->values[q] = val->valuedouble;
        r->present |= 1u << q;
    }
    return 0;
}

int wire_parse_batch(const char *buf, size_t len, struct wire_batch *b, char *err,
                     size_t errlen)
{
    cJSON *root;
    const cJSON *it, *arr;
    double v;
    int rc = -EINVAL, n, i = 0;

    memset(b, 0, sizeof(*b));
    if (len > WIRE_MAX_PAYLOAD)
        return eset(err, errlen, "payload of %zu bytes exceeds %d", len, WIRE_MAX_PAYLOAD);
    root = cJSON_ParseWithLength(buf, len);
    if (!root)
        return eset(err, errlen, "not valid JSON");
    if (!cJSON_IsObject(root)) {
        eset(err, errlen, "not a JSON object");
        goto done;
    }
    if (!int_in(cJSON_GetObjectItemCaseSensitive(root, "v"), 0, 1e9, &v) ||
        v != WIRE_VERSION) {
        eset(err, errlen, "v: required, protocol version %d", WIRE_VERSION);
        goto done;
    }
    it = cJSON_GetObjectItemCaseSensitive(root, "gw");
    if (!cJSON_IsString(it) || !wire_id_valid(it->valuestring)) {
        eset(err, errlen, "gw: required, 1..63 of [A-Za-z0-9_.-]");
        goto done;
    }
    memcpy(b->gw, it->valuestring, strlen(it->valuestring) + 1);
    it = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (!cJSON_IsString(it) || !wire_stream_valid(it->valuestring)) {
        eset(err, errlen, "stream: required, 8..32 lowercase hex digits");
        goto done;
    }
    memcpy(b->stream, it->valuestring, strlen(it->valuestring) + 1);
    arr = cJSON_GetObjectItemCaseSensitive(root, "readings");
    if (!cJSON_IsArray(arr)) {
        eset(err, errlen, "readings: required, an array");
        goto done;
    }
    n = cJSON_GetArraySize(arr);
    if (n > WIRE_MAX_READINGS) {
        eset(err, errlen, "readings: %d entries exceed %d", n, WIRE_MAX_READINGS);
        goto done;
    }
    b->readings = calloc(n ? (size_t)n : 1, sizeof(*b->readings));
    if (!b->readings) {
        rc = -ENOMEM;
        eset(err, errlen, "out of memory");
        goto done;
    }
    cJSON_ArrayForEach(it, arr)
    {
        if (parse_reading(b, i, it, &b->readings[b->n]) == 0)
            b->n++;
        i++;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    if (rc < 0)
        wire_batch_free(b);
    return rc;
}

void wire_batch_free(struct wire_batch *b)
{
    free(b->readings);
    b->readings = NULL;
    b->n = 0;
}
