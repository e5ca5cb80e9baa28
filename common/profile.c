/* profile: see profile.h. */
#include "profile.h"
#include "quantities.h"

#include <cjson/cJSON.h>
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
        bits = (uint64_t)(int64_t)clamp_round(raw, -9223372036854775808.0,
                                              9223372036854774784.0, &clamped);
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

int profile_parse(const char *json, size_t len, const char *origin, struct profile *out,
                  char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *regs, *it;
    long fc = 3, max_read = 125, max_gap = 0;
    int dtype = RT_F32, dorder = RO_ABCD;
    int rc = -EINVAL;

    memset(out, 0, sizeof(*out));
    if (!root || !cJSON_IsObject(root)) {
        perr(err, errlen, "%s: not a JSON object", origin);
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
    if (get_int(root, "function", 3, 4, &fc) < 0) {
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
    if (it && (!cJSON_IsString(it) || (dtype = reg_type_parse(it->valuestring)) < 0)) {
        perr(err, errlen, "%s: type: must be one of u16 i16 u32 i32 u64 i64 f32 f64", origin);
        goto done;
    }
    it = cJSON_GetObjectItemCaseSensitive(root, "order");
    if (it && (!cJSON_IsString(it) || (dorder = reg_order_parse(it->valuestring)) < 0)) {
        perr(err, errlen, "%s: order: must be one of ABCD CDAB BADC DCBA", origin);
        goto done;
    }
    out->max_read = (int)max_read;
    out->max_gap = (int)max_gap;

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
        long addr = -1, rfc = fc;
        int t = dtype, o = dorder;

        if (!cJSON_IsObject(it)) {
            perr(err, errlen, "%s: registers[%d]: must be an object", origin, i);
            goto done;
        }
        if (!cJSON_IsString(q) || qty_index(q->valuestring) < 0) {
            perr(err, errlen, "%s: registers[%d].quantity: %s", origin, i,
                 cJSON_IsString(q) ? "not a known quantity" : "required, a string");
            goto done;
        }
        r->qty = qty_index(q->valuestring);
        for (int j = 0; j < i; j++)
            if (out->regs[j].qty == r->qty) {
                perr(err, errlen, "%s: registers[%d].quantity: \"%s\" is already mapped",
                     origin, i, q->valuestring);
                goto done;
            }
        if (get_int(it, "address", 0, 65535, &addr) <= 0) {
            perr(err, errlen, "%s: registers[%d].address: required, an integer 0..65535", origin,
                 i);
            goto done;
        }
        if (get_int(it, "function", 3, 4, &rfc) < 0) {
            perr(err, errlen, "%s: registers[%d].function: must be 3 or 4", origin, i);
            goto done;
        }
        s = cJSON_GetObjectItemCaseSensitive(it, "type");
        if (s && (!cJSON_IsString(s) || (t = reg_type_parse(s->valuestring)) < 0)) {
            perr(err, errlen, "%s: registers[%d].type: must be one of u16 i16 u32 i32 u64 i64 "
                 "f32 f64", origin, i);
            goto done;
        }
        s = cJSON_GetObjectItemCaseSensitive(it, "order");
        if (s && (!cJSON_IsString(s) || (o = reg_order_parse(s->valuestring)) < 0)) {
            perr(err, errlen, "%s: registers[%d].order: must be one of ABCD CDAB BADC DCBA",
                 origin, i);
            goto done;
        }
        r->scale = 1.0;
        s = cJSON_GetObjectItemCaseSensitive(it, "scale");
        if (s) {
            if (!cJSON_IsNumber(s) || !isfinite(s->valuedouble) || s->valuedouble == 0) {
                perr(err, errlen, "%s: registers[%d].scale: must be a non-zero number", origin,
                     i);
                goto done;
            }
            r->scale = s->valuedouble;
        }
        if (addr + reg_words((enum reg_type)t) > 65536) {
            perr(err, errlen, "%s: registers[%d].address: value runs past register 65535",
                 origin, i);
            goto done;
        }
        if (reg_words((enum reg_type)t) > out->max_read) {
            perr(err, errlen, "%s: registers[%d]: a %s needs more registers than max_read %d",
                 origin, i, reg_type_name((enum reg_type)t), out->max_read);
            goto done;
        }
        r->addr = (uint16_t)addr;
        r->fc = (uint8_t)rfc;
        r->type = (uint8_t)t;
        r->order = (uint8_t)o;
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
