/* profile: see profile.h. */
#include "profile.h"
#include "quantities.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MLK_PROFILES_DIR
#define MLK_PROFILES_DIR "/usr/share/meterlink/profiles"
#endif

static const char *const type_names[] = {"u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"};
static const char *const order_names[] = {"ABCD", "CDAB", "BADC", "DCBA"};

int reg_words(enum reg_type t)
{
    switch (t) {
    case RT_U16:
    case RT_I16:
        return 1;
    case RT_U32:
    case RT_I32:
    case RT_F32:
        return 2;
    case RT_U64:
    case RT_I64:
    case RT_F64:
        return 4;
    }
    return 0;
}

const char *reg_type_name(enum reg_type t)
{
    if ((unsigned)t < sizeof(type_names) / sizeof(type_names[0]))
        return type_names[t];
    return "?";
}

int reg_type_parse(const char *s)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (strcmp(s, type_names[i]) == 0)
            return (int)i;
    return -1;
}

int reg_order_parse(const char *s)
{
    for (size_t i = 0; i < sizeof(order_names) / sizeof(order_names[0]); i++)
        if (strcmp(s, order_names[i]) == 0)
            return (int)i;
    return -1;
}

/* Word i of the value (0 = most significant) sits in register slot_of(i). */
static int slot_of(const struct prof_reg *r, int i, int n)
{
    int low_first = r->order == RO_CDAB || r->order == RO_DCBA;
    return low_first ? n - 1 - i : i;
}

static int bytes_swapped(const struct prof_reg *r)
{
    return r->order == RO_BADC || r->order == RO_DCBA;
}

/* Gather the value's bits, most significant word first, into a 64-bit integer. */
static uint64_t gather(const struct prof_reg *r, const uint16_t *words)
{
    int n = reg_words(r->type);
    uint64_t bits = 0;

    for (int i = 0; i < n; i++) {
        uint16_t w = words[slot_of(r, i, n)];
        if (bytes_swapped(r))
            w = (uint16_t)((w << 8) | (w >> 8));
        bits = (bits << 16) | w;
    }
    return bits;
}

static void scatter(const struct prof_reg *r, uint64_t bits, uint16_t *words)
{
    int n = reg_words(r->type);

    for (int i = n - 1; i >= 0; i--) {
        uint16_t w = (uint16_t)(bits & 0xffff);
        bits >>= 16;
        if (bytes_swapped(r))
            w = (uint16_t)((w << 8) | (w >> 8));
        words[slot_of(r, i, n)] = w;
    }
}

int reg_decode(const struct prof_reg *r, const uint16_t *words, double *out)
{
    uint64_t bits = gather(r, words);
    double raw;

    for (int i = 0; i < r->ninvalid && i < PROF_REG_MAX_INVALID; i++)
        if ((bits & r->invalid[i].mask) == r->invalid[i].value)
            return -ENODATA;

    switch ((enum reg_type)r->type) {
    case RT_U16:
        raw = (double)(uint16_t)bits;
        break;
    case RT_I16:
        raw = (double)(int16_t)(uint16_t)bits;
        break;
    case RT_U32:
        raw = (double)(uint32_t)bits;
        break;
    case RT_I32:
        raw = (double)(int32_t)(uint32_t)bits;
        break;
    case RT_U64:
        raw = (double)bits;
        break;
    case RT_I64:
        raw = (double)(int64_t)bits;
        break;
    case RT_F32: {
        uint32_t b32 = (uint32_t)bits;
        float f;
        memcpy(&f, &b32, sizeof(f));
        raw = f;
        break;
    }
    case RT_F64:
        memcpy(&raw, &bits, sizeof(raw));
        break;
    default:
        return -EINVAL;
    }
    if (!isfinite(raw))
        return -EDOM;
    *out = raw * r->scale;
    return 0;
}

double reg_multiplier(const struct prof_reg *r, double ct, double pt)
{
    switch ((enum reg_mult)r->multiply) {
    case RM_CT:
        return ct;
    case RM_PT:
        return pt;
    case RM_CTPT:
        return ct * pt;
    case RM_NONE:
        break;
    }
    return 1.0;
}

const char *reg_mult_name(enum reg_mult m)
{
    static const char *const names[] = {"none", "ct", "pt", "ct*pt"};
    return (unsigned)m < sizeof(names) / sizeof(names[0]) ? names[m] : "?";
}

int profile_probe_match(const struct prof_probe *pr, const uint16_t *words, double *value)
{
    double v;
    int rc = reg_decode(&pr->reg, words, &v);

    if (rc < 0)
        return rc;
    if (value)
        *value = v;
    return v >= pr->min && v <= pr->max;
}

/* Round v to an integer within [lo, hi]; *clamped set when it was outside. */
static double clamp_round(double v, double lo, double hi, int *clamped)
{
    v = nearbyint(v);
    if (v < lo) {
        *clamped = 1;
        return lo;
    }
    if (v > hi) {
        *clamped = 1;
        return hi;
    }
    return v;
}

int reg_encode(const struct prof_reg *r, double v, uint16_t *words)
{
    double raw = r->scale != 0 ? v / r->scale : v;
    int clamped = 0;
    uint64_t bits;

    if (isnan(raw))
        return -EDOM;

    switch ((enum reg_type)r->type) {
    case RT_U16:
        bits = (uint64_t)clamp_round(raw, 0, 65535, &clamped);
        break;
    case RT_I16:
        bits = (uint16_t)(int16_t)clamp_round(raw, -32768, 32767, &clamped);
        break;
    case RT_U32:
        bits = (uint64_t)clamp_round(raw, 0, 4294967295.0, &clamped);
        break;
    case RT_I32:
        bits = (uint32_t)(int32_t)clamp_round(raw, -2147483648.0, 2147483647.0, &clamped);
        break;
    case RT_U64:
        /* 2^64 is not representable below; stay within double's exact range. */
        bits = (uint64_t)clamp_round(raw, 0, 18446744073709549568.0, &clamped);
        break;
    case RT_I64:
        bits = (uint64_t)(int64_t)clamp_round(raw, -9223372036854775808.0, 9223372036854774784.0,
                                              &clamped);
        break;
    case RT_F32: {
        float f;
        uint32_t b32;
        if (fabs(raw) > FLT_MAX) {
            raw = raw < 0 ? -FLT_MAX : FLT_MAX;
            clamped = 1;
        }
        f = (float)raw;
        memcpy(&b32, &f, sizeof(b32));
        bits = b32;
        break;
    }
    case RT_F64:
        memcpy(&bits, &raw, sizeof(bits));
        break;
    default:
        return -EINVAL;
    }
    scatter(r, bits, words);
    return clamped ? -ERANGE : 0;
}

static int perr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int perr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Reads an optional integer member in [lo, hi]; returns 0 (absent: *out untouched),
 * 1 (set) or -1 (present but wrong). */
static int get_int(const cJSON *obj, const char *key, long lo, long hi, long *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it)
        return 0;
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
        it->valuedouble < (double)lo || it->valuedouble > (double)hi)
        return -1;
    *out = (long)it->valuedouble;
    return 1;
}

static int copy_str(const cJSON *obj, const char *key, char *dst, size_t dstlen, int required)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it)
        return required ? -1 : 0;
    if (!cJSON_IsString(it) || it->valuestring[0] == '\0' || strlen(it->valuestring) >= dstlen)
        return -1;
    memcpy(dst, it->valuestring, strlen(it->valuestring) + 1);
    return 1;
}

/* The keys each kind of object may have: a misspelt key ("invalids") must not be ignored
 * silently, because the meter would then be read without the quirk it names. */
static const char *const top_keys[] = {"model", "name",      "function", "type",
                                       "order", "max_read",  "max_gap",  "runs",
                                       "probe", "registers", "notes",    NULL};
static const char *const reg_keys[] = {"quantity", "address", "function", "type",  "order", "scale",
                                       "alone",    "invalid", "multiply", "notes", NULL};
static const char *const probe_keys[] = {"function", "address", "type",  "order", "scale",
                                         "min",      "max",     "notes", NULL};

/* The first member of obj whose name is not in keys, or that repeats an earlier member's
 * (cJSON would silently use the first), or NULL; *dup says which of the two. */
static const char *bad_key(const cJSON *obj, const char *const *keys, int *dup)
{
    const cJSON *it, *prev;

    cJSON_ArrayForEach(it, obj)
    {
        int known = 0;
        for (int k = 0; keys[k] && !known; k++)
            known = strcmp(it->string, keys[k]) == 0;
        *dup = 0;
        if (!known)
            return it->string;
        for (prev = obj->child; prev != it; prev = prev->next)
            if (strcmp(prev->string, it->string) == 0) {
                *dup = 1;
                return it->string;
            }
    }
    return NULL;
}

/* The message for bad_key's answer. */
static const char *key_problem(int dup)
{
    return dup ? "given twice" : "unknown key (free text goes in \"notes\")";
}

static const char *unknown_key(const cJSON *obj, const char *const *keys)
{
    int dup;
    return bad_key(obj, keys, &dup);
}

/* "notes" is free text for people: a string or an array of strings. */
static int notes_ok(const cJSON *obj)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(obj, "notes"), *it;

    if (!n || cJSON_IsString(n))
        return 1;
    if (!cJSON_IsArray(n))
        return 0;
    cJSON_ArrayForEach(it, n)
    {
        if (!cJSON_IsString(it))
            return 0;
    }
    return 1;
}

/* The defaults a register or probe inherits from the file. */
struct defaults {
    long fc;
    int type;
    int order;
    int max_read;
};

/* Parses what registers and probes share: address, function, type, order, scale; path
 * names the object in messages ("registers[3]"). */
static int parse_loc(const cJSON *it, const struct defaults *d, struct prof_reg *r,
                     const char *origin, const char *path, char *err, size_t errlen)
{
    const cJSON *s;
    long addr = -1, rfc = d->fc;
    int t = d->type, o = d->order;

    if (get_int(it, "address", 0, 65535, &addr) <= 0)
        return perr(err, errlen, "%s: %s.address: required, an integer 0..65535", origin, path);
    if (get_int(it, "function", 3, 4, &rfc) < 0)
        return perr(err, errlen, "%s: %s.function: must be 3 or 4", origin, path);
    s = cJSON_GetObjectItemCaseSensitive(it, "type");
    if (s && (!cJSON_IsString(s) || (t = reg_type_parse(s->valuestring)) < 0))
        return perr(err, errlen, "%s: %s.type: must be one of u16 i16 u32 i32 u64 i64 f32 f64",
                    origin, path);
    s = cJSON_GetObjectItemCaseSensitive(it, "order");
    if (s && (!cJSON_IsString(s) || (o = reg_order_parse(s->valuestring)) < 0))
        return perr(err, errlen, "%s: %s.order: must be one of ABCD CDAB BADC DCBA", origin, path);
    r->scale = 1.0;
    s = cJSON_GetObjectItemCaseSensitive(it, "scale");
    if (s) {
        if (!cJSON_IsNumber(s) || !isfinite(s->valuedouble) || s->valuedouble == 0)
            return perr(err, errlen, "%s: %s.scale: must be a non-zero number", origin, path);
        r->scale = s->valuedouble;
    }
    if (addr + reg_words((enum reg_type)t) > 65536)
        return perr(err, errlen, "%s: %s.address: value runs past register 65535", origin, path);
    if (reg_words((enum reg_type)t) > d->max_read)
        return perr(err, errlen, "%s: %s: a %s needs more registers than max_read %d", origin, path,
                    reg_type_name((enum reg_type)t), d->max_read);
    r->addr = (uint16_t)addr;
    r->fc = (uint8_t)rfc;
    r->type = (uint8_t)t;
    r->order = (uint8_t)o;
    return 0;
}

/* All bits of a value of type t. */
static uint64_t type_mask(enum reg_type t)
{
    int bits = 16 * reg_words(t);
    return bits >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << bits) - 1;
}

/* A hex bit pattern "0x..." of at most the type's width; 0 or -1. */
static int parse_hex(const char *s, enum reg_type t, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X') || !isxdigit((unsigned char)s[2]) ||
        strlen(s + 2) > 16)
        return -1;
    errno = 0;
    v = strtoull(s + 2, &end, 16);
    if (errno || *end != '\0' || (uint64_t)v > type_mask(t))
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* The bits of the raw value v (a JSON number) in type t; 0 or -1 when v is not exactly
 * a value of the type. Integers beyond 2^53 are not exact in JSON: write them as hex. */
static int number_bits(double v, enum reg_type t, uint64_t *out)
{
    static const double lim53 = 9007199254740992.0;
    static const double lo[] = {0, -32768, 0, -2147483648.0, 0, -lim53, 0, 0};
    static const double hi[] = {65535, 32767, 4294967295.0, 2147483647.0, lim53, lim53, 0, 0};

    if (t == RT_F32) {
        float f = (float)v;
        uint32_t b;
        if ((double)f != v)
            return -1;
        memcpy(&b, &f, sizeof(b));
        *out = b;
        return 0;
    }
    if (t == RT_F64) {
        memcpy(out, &v, sizeof(*out));
        return 0;
    }
    if (v != floor(v) || v < lo[t] || v > hi[t])
        return -1;
    *out = (uint64_t)(int64_t)v & type_mask(t);
    return 0;
}

/* One sentinel: a number or "0x..." string (every bit must match), or
 * {"value": ..., "mask": "0x..."} (the bits in mask must match). */
static int parse_sentinel(const cJSON *e, enum reg_type t, struct prof_invalid *out)
{
    const cJSON *v = e, *m = NULL;

    out->mask = type_mask(t);
    if (cJSON_IsObject(e)) {
        if (unknown_key(e, (const char *const[]){"value", "mask", NULL}))
            return -1;
        v = cJSON_GetObjectItemCaseSensitive(e, "value");
        m = cJSON_GetObjectItemCaseSensitive(e, "mask");
        if (!v || !cJSON_IsString(m) || parse_hex(m->valuestring, t, &out->mask) < 0 ||
            out->mask == 0)
            return -1;
    }
    if (cJSON_IsNumber(v)) {
        if (number_bits(v->valuedouble, t, &out->value) < 0)
            return -1;
    } else if (!cJSON_IsString(v) || parse_hex(v->valuestring, t, &out->value) < 0) {
        return -1;
    }
    return (out->value & ~out->mask) ? -1 : 0;
}

static int parse_invalid(const cJSON *arr, struct prof_reg *r, const char *origin, const char *path,
                         char *err, size_t errlen)
{
    const cJSON *e;
    int k = 0;

    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1 ||
        cJSON_GetArraySize(arr) > PROF_REG_MAX_INVALID)
        return perr(err, errlen, "%s: %s.invalid: must be an array of 1..%d raw values", origin,
                    path, PROF_REG_MAX_INVALID);
    cJSON_ArrayForEach(e, arr)
    {
        if (parse_sentinel(e, (enum reg_type)r->type, &r->invalid[k]) < 0)
            return perr(err, errlen,
                        "%s: %s.invalid[%d]: must be a raw %s value: a number (integers up to "
                        "2^53), a \"0x...\" bit pattern, or {\"value\": ..., \"mask\": "
                        "\"0x...\"}",
                        origin, path, k, reg_type_name((enum reg_type)r->type));
        k++;
    }
    r->ninvalid = (uint8_t)k;
    return 0;
}

static int parse_multiply(const cJSON *m, uint8_t *out)
{
    for (int i = RM_CT; i <= RM_CTPT; i++)
        if (cJSON_IsString(m) && strcmp(m->valuestring, reg_mult_name((enum reg_mult)i)) == 0) {
            *out = (uint8_t)i;
            return 0;
        }
    return -1;
}

/* runs: [[start, end], ...] for every function code, or {"3": [...], "4": [...]}. */
static int parse_runs(const cJSON *runs, struct profile *out, const char *origin, char *err,
                      size_t errlen)
{
    const cJSON *lists[2] = {runs, NULL};
    const char *fcname[2] = {"", ""};
    uint8_t fcs[2] = {0, 0};
    int nlists = 1;

    if (cJSON_IsObject(runs)) {
        static const char *const fc_keys[] = {"3", "4", NULL};
        const char *bad;
        const cJSON *it;
        int dup;

        /* at most one list per function code: lists[] has room for two */
        if ((bad = bad_key(runs, fc_keys, &dup)) != NULL)
            return perr(err, errlen, "%s: runs.%s: %s", origin, bad,
                        dup ? "given twice" : "the keys are function codes \"3\", \"4\"");
        nlists = 0;
        cJSON_ArrayForEach(it, runs)
        {
            lists[nlists] = it;
            fcname[nlists] = strcmp(it->string, "3") == 0 ? ".3" : ".4";
            fcs[nlists] = strcmp(it->string, "3") == 0 ? 3 : 4;
            nlists++;
        }
    }
    for (int l = 0; l < nlists; l++) {
        const cJSON *pair;
        int k = 0;

        if (!cJSON_IsArray(lists[l]))
            return perr(err, errlen,
                        "%s: runs%s: must be an array of [start, end] address pairs (or an "
                        "object of such arrays by function code)",
                        origin, fcname[l]);
        cJSON_ArrayForEach(pair, lists[l])
        {
            struct prof_run *run = &out->runs[out->nruns];
            const cJSON *a = cJSON_GetArrayItem(pair, 0), *b = cJSON_GetArrayItem(pair, 1);

            if (out->nruns == PROFILE_MAX_RUNS)
                return perr(err, errlen, "%s: runs: more than %d runs", origin, PROFILE_MAX_RUNS);
            if (!cJSON_IsArray(pair) || cJSON_GetArraySize(pair) != 2 || !cJSON_IsNumber(a) ||
                !cJSON_IsNumber(b) || a->valuedouble != floor(a->valuedouble) ||
                b->valuedouble != floor(b->valuedouble) || a->valuedouble < 0 ||
                b->valuedouble > 65535 || a->valuedouble > b->valuedouble)
                return perr(err, errlen,
                            "%s: runs%s[%d]: must be [start, end], integers with 0 <= start <= "
                            "end <= 65535",
                            origin, fcname[l], k);
            run->fc = fcs[l];
            run->start = (uint16_t)a->valuedouble;
            run->end = (uint16_t)b->valuedouble;
            for (int j = 0; j < out->nruns; j++) {
                const struct prof_run *o = &out->runs[j];
                if (o->fc == run->fc && o->start <= run->end && run->start <= o->end)
                    return perr(err, errlen, "%s: runs%s[%d]: overlaps [%u, %u]", origin, fcname[l],
                                k, o->start, o->end);
            }
            out->nruns++;
            k++;
        }
    }
    return 0;
}

int profile_run_find(const struct profile *p, int fc, long addr, long n)
{
    int any = 0;

    for (int i = 0; i < p->nruns; i++) {
        const struct prof_run *r = &p->runs[i];
        if (r->fc != 0 && r->fc != fc)
            continue;
        any = 1;
        if (addr >= r->start && addr + n - 1 <= r->end)
            return i;
    }
    return any ? -2 : -1;
}

static int parse_probes(const cJSON *arr, const struct defaults *d, struct profile *out,
                        const char *origin, char *err, size_t errlen)
{
    const cJSON *it;

    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) > PROFILE_MAX_PROBES)
        return perr(err, errlen, "%s: probe: must be an array of at most %d probes", origin,
                    PROFILE_MAX_PROBES);
    cJSON_ArrayForEach(it, arr)
    {
        struct prof_probe *pr = &out->probes[out->nprobes];
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(it, "min");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(it, "max");
        const char *bad;
        char path[32];
        int rc, dup;

        snprintf(path, sizeof(path), "probe[%d]", out->nprobes);
        if (!cJSON_IsObject(it))
            return perr(err, errlen, "%s: %s: must be an object", origin, path);
        if ((bad = bad_key(it, probe_keys, &dup)) != NULL)
            return perr(err, errlen, "%s: %s.%s: %s", origin, path, bad, key_problem(dup));
        if (!notes_ok(it))
            return perr(err, errlen, "%s: %s.notes: must be a string or an array of strings",
                        origin, path);
        if ((rc = parse_loc(it, d, &pr->reg, origin, path, err, errlen)) < 0)
            return rc;
        pr->reg.qty = -1;
        if (!cJSON_IsNumber(mn) || !isfinite(mn->valuedouble))
            return perr(err, errlen, "%s: %s.min: required, a number", origin, path);
        if (!cJSON_IsNumber(mx) || !isfinite(mx->valuedouble))
            return perr(err, errlen, "%s: %s.max: required, a number", origin, path);
        if (mx->valuedouble < mn->valuedouble)
            return perr(err, errlen, "%s: %s.max: %g is below min %g", origin, path,
                        mx->valuedouble, mn->valuedouble);
        pr->min = mn->valuedouble;
        pr->max = mx->valuedouble;
        out->nprobes++;
    }
    return 0;
}

int profile_parse(const char *json, size_t len, const char *origin, struct profile *out, char *err,
                  size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *regs, *it;
    struct defaults d = {.fc = 3, .type = RT_F32, .order = RO_ABCD, .max_read = 125};
    long max_read = 125, max_gap = 0;
    const char *bad;
    int rc = -EINVAL, dup;

    memset(out, 0, sizeof(*out));
    if (!root || !cJSON_IsObject(root)) {
        perr(err, errlen, "%s: not a JSON object", origin);
        goto done;
    }
    if ((bad = bad_key(root, top_keys, &dup)) != NULL) {
        perr(err, errlen, "%s: %s: %s", origin, bad, key_problem(dup));
        goto done;
    }
    if (copy_str(root, "model", out->model, sizeof(out->model), 1) < 0) {
        perr(err, errlen, "%s: model: required, a string of 1..%d characters", origin,
             PROFILE_NAME_MAX - 1);
        goto done;
    }
    if (copy_str(root, "name", out->name, sizeof(out->name), 0) < 0) {
        perr(err, errlen, "%s: name: must be a string of 1..%d characters", origin,
             PROFILE_NAME_MAX - 1);
        goto done;
    }
    if (!out->name[0])
        memcpy(out->name, out->model, sizeof(out->name));
    if (!notes_ok(root)) {
        perr(err, errlen, "%s: notes: must be a string or an array of strings", origin);
        goto done;
    }
    if (get_int(root, "function", 3, 4, &d.fc) < 0) {
        perr(err, errlen, "%s: function: must be 3 or 4", origin);
        goto done;
    }
    if (get_int(root, "max_read", 1, 125, &max_read) < 0) {
        perr(err, errlen, "%s: max_read: must be an integer 1..125", origin);
        goto done;
    }
    if (get_int(root, "max_gap", 0, 124, &max_gap) < 0) {
        perr(err, errlen, "%s: max_gap: must be an integer 0..124", origin);
        goto done;
    }
    it = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (it && (!cJSON_IsString(it) || (d.type = reg_type_parse(it->valuestring)) < 0)) {
        perr(err, errlen, "%s: type: must be one of u16 i16 u32 i32 u64 i64 f32 f64", origin);
        goto done;
    }
    it = cJSON_GetObjectItemCaseSensitive(root, "order");
    if (it && (!cJSON_IsString(it) || (d.order = reg_order_parse(it->valuestring)) < 0)) {
        perr(err, errlen, "%s: order: must be one of ABCD CDAB BADC DCBA", origin);
        goto done;
    }
    out->max_read = (int)max_read;
    out->max_gap = (int)max_gap;
    d.max_read = out->max_read;
    it = cJSON_GetObjectItemCaseSensitive(root, "runs");
    if (it && parse_runs(it, out, origin, err, errlen) < 0)
        goto done;
    it = cJSON_GetObjectItemCaseSensitive(root, "probe");
    if (it && parse_probes(it, &d, out, origin, err, errlen) < 0)
        goto done;

    regs = cJSON_GetObjectItemCaseSensitive(root, "registers");
    if (!cJSON_IsArray(regs) || cJSON_GetArraySize(regs) == 0) {
        perr(err, errlen, "%s: registers: required, a non-empty array", origin);
        goto done;
    }
    if (cJSON_GetArraySize(regs) > PROFILE_MAX_REGS) {
        perr(err, errlen, "%s: registers: more than %d entries", origin, PROFILE_MAX_REGS);
        goto done;
    }
    cJSON_ArrayForEach(it, regs)
    {
        int i = out->nregs;
        struct prof_reg *r = &out->regs[i];
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(it, "quantity");
        const cJSON *s;
        char path[32];

        snprintf(path, sizeof(path), "registers[%d]", i);
        if (!cJSON_IsObject(it)) {
            perr(err, errlen, "%s: %s: must be an object", origin, path);
            goto done;
        }
        if ((bad = bad_key(it, reg_keys, &dup)) != NULL) {
            perr(err, errlen, "%s: %s.%s: %s", origin, path, bad, key_problem(dup));
            goto done;
        }
        if (!cJSON_IsString(q) || qty_index(q->valuestring) < 0) {
            perr(err, errlen, "%s: %s.quantity: %s", origin, path,
                 cJSON_IsString(q) ? "not a known quantity" : "required, a string");
            goto done;
        }
        r->qty = qty_index(q->valuestring);
        for (int j = 0; j < i; j++)
            if (out->regs[j].qty == r->qty) {
                perr(err, errlen, "%s: %s.quantity: \"%s\" is already mapped", origin, path,
                     q->valuestring);
                goto done;
            }
        if (parse_loc(it, &d, r, origin, path, err, errlen) < 0)
            goto done;
        s = cJSON_GetObjectItemCaseSensitive(it, "alone");
        if (s) {
            if (!cJSON_IsBool(s)) {
                perr(err, errlen, "%s: %s.alone: must be true or false", origin, path);
                goto done;
            }
            r->alone = cJSON_IsTrue(s);
        }
        s = cJSON_GetObjectItemCaseSensitive(it, "multiply");
        if (s && parse_multiply(s, &r->multiply) < 0) {
            perr(err, errlen, "%s: %s.multiply: must be one of \"ct\" \"pt\" \"ct*pt\"", origin,
                 path);
            goto done;
        }
        s = cJSON_GetObjectItemCaseSensitive(it, "invalid");
        if (s && parse_invalid(s, r, origin, path, err, errlen) < 0)
            goto done;
        if (!notes_ok(it)) {
            perr(err, errlen, "%s: %s.notes: must be a string or an array of strings", origin,
                 path);
            goto done;
        }
        if (profile_run_find(out, r->fc, r->addr, reg_words((enum reg_type)r->type)) == -2) {
            perr(err, errlen,
                 "%s: %s.address: registers %u..%d are outside every run of function %u", origin,
                 path, r->addr, r->addr + reg_words((enum reg_type)r->type) - 1, r->fc);
            goto done;
        }
        out->nregs++;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

/* Reads a whole file of at most maxlen bytes; caller frees. */
static char *slurp(const char *path, size_t maxlen, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || (size_t)n > maxlen ||
        fseek(f, 0, SEEK_SET) != 0) {
        errno = EFBIG;
        goto out;
    }
    buf = malloc((size_t)n + 1);
    if (!buf)
        goto out;
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
        errno = EIO;
        goto out;
    }
    buf[n] = '\0';
    *len = (size_t)n;
out:
    fclose(f);
    return buf;
}

int profile_load_file(const char *path, struct profile *out, char *err, size_t errlen)
{
    size_t len = 0;
    char *buf = slurp(path, 1 << 20, &len);
    int rc;

    if (!buf) {
        int e = errno;
        perr(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    rc = profile_parse(buf, len, path, out, err, errlen);
    free(buf);
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int profile_set_load_dir(struct profile_set *set, const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t nnames = 0, cap = 0;
    int rc = 0;

    set->n = 0;
    set->items = NULL;
    if (!d) {
        int e = errno;
        perr(err, errlen, "%s: %s", dir, strerror(e));
        return -e;
    }
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0 || de->d_name[0] == '.')
            continue;
        if (nnames == cap) {
            char **nn = realloc(names, (cap ? cap * 2 : 16) * sizeof(*names));
            if (!nn) {
                rc = -ENOMEM;
                goto out;
            }
            names = nn;
            cap = cap ? cap * 2 : 16;
        }
        names[nnames] = strdup(de->d_name);
        if (!names[nnames]) {
            rc = -ENOMEM;
            goto out;
        }
        nnames++;
    }
    if (nnames > 1)
        qsort(names, nnames, sizeof(*names), name_cmp);
    set->items = calloc(nnames ? nnames : 1, sizeof(*set->items));
    if (!set->items) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nnames; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        rc = profile_load_file(path, &set->items[set->n], err, errlen);
        if (rc < 0)
            goto out;
        if (profile_set_find(set, set->items[set->n].model)) {
            rc = perr(err, errlen, "%s: model: \"%s\" is defined twice", path,
                      set->items[set->n].model);
            goto out;
        }
        set->n++;
    }
    if (set->n == 0)
        rc = perr(err, errlen, "%s: no profiles (*.json) found", dir);
out:
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    closedir(d);
    if (rc < 0)
        profile_set_free(set);
    return rc;
}

void profile_set_free(struct profile_set *set)
{
    free(set->items);
    set->items = NULL;
    set->n = 0;
}

const struct profile *profile_set_find(const struct profile_set *set, const char *model)
{
    for (int i = 0; i < set->n; i++)
        if (strcmp(set->items[i].model, model) == 0)
            return &set->items[i];
    return NULL;
}

const char *profile_default_dir(void)
{
    const char *env = getenv("MLK_PROFILES");
    return env && *env ? env : MLK_PROFILES_DIR;
}
