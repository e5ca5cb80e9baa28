/* registry: see registry.h. */
#include "registry.h"

#include "timeutil.h"
#include "tz.h"
#include "wire.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PRICE_MAX 1e6

static int fail(struct registry_error *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct registry_error *e, const char *field, const char *fmt, ...)
{
    va_list ap;

    snprintf(e->field, sizeof(e->field), "%s", field);
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* A client's string for a message: at most 40 bytes, printable ASCII only. */
static const char *q(const char *s, char *buf, size_t len)
{
    size_t i = 0, max = len > 44 ? 40 : len - 4;

    for (; s[i] && i < max; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (s[i]) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

static bool in_list(const char (*list)[CFG_REG_NAME_MAX], int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

static const struct cfg_region *find_region(const struct cfg_registry *cfg, const char *name)
{
    for (int i = 0; i < cfg->nregions; i++)
        if (strcmp(cfg->regions[i].name, name) == 0)
            return &cfg->regions[i];
    return NULL;
}

/* "a1, a2, a3" into buf, shortened. */
static const char *joined(const char (*list)[CFG_REG_NAME_MAX], int n, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int i = 0; i < n && used + 4 < len; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", list[i]);
        if (w < 0 || (size_t)w >= len - used) {
            snprintf(buf + (len > 4 ? len - 4 : 0), 4, "...");
            break;
        }
        used += (size_t)w;
    }
    return n ? buf : "none configured";
}

/* An id field: a string of 1..63 of [A-Za-z0-9_.-]. */
static int take_id(const cJSON *v, const char *field, char *out, struct registry_error *e)
{
    char b[48];

    if (!cJSON_IsString(v))
        return fail(e, field, "must be a string");
    if (!wire_id_valid(v->valuestring))
        return fail(e, field, "\"%s\" is not an id (1..63 of [A-Za-z0-9_.-])",
                    q(v->valuestring, b, sizeof(b)));
    snprintf(out, WIRE_ID_MAX, "%s", v->valuestring);
    return 0;
}

/* An optional list name: null clears it. */
static int take_name(const cJSON *v, const char *field, char *out, struct registry_error *e)
{
    char b[48];

    if (cJSON_IsNull(v)) {
        out[0] = '\0';
        return 0;
    }
    if (!cJSON_IsString(v))
        return fail(e, field, "must be a string or null");
    if (strlen(v->valuestring) >= STORE_REG_NAME_MAX)
        return fail(e, field, "\"%s\" is longer than %d characters",
                    q(v->valuestring, b, sizeof(b)), STORE_REG_NAME_MAX - 1);
    snprintf(out, STORE_REG_NAME_MAX, "%s", v->valuestring);
    return 0;
}

int registry_meter_apply(const struct cfg_registry *cfg, const cJSON *body, bool create,
                         struct store_reg *r, bool *has_replaced, int64_t *replaced_at,
                         struct registry_error *e)
{
    const cJSON *v;
    bool seen_gw = false, seen_site = false, seen_id = false;
    char b[48], list[160];
    int rc;

    *has_replaced = false;
    if (!cJSON_IsObject(body))
        return fail(e, "body", "must be a JSON object");
    cJSON_ArrayForEach(v, body)
    {
        const char *k = v->string;
        if (strcmp(k, "id") == 0) {
            char id[WIRE_ID_MAX];
            if ((rc = take_id(v, "id", id, e)) < 0)
                return rc;
            if (!create && strcmp(id, r->id) != 0)
                return fail(e, "id", "cannot be changed (the path names \"%s\")", r->id);
            snprintf(r->id, sizeof(r->id), "%s", id);
            seen_id = true;
        } else if (strcmp(k, "gateway") == 0) {
            if ((rc = take_id(v, "gateway", r->gateway, e)) < 0)
                return rc;
            seen_gw = true;
        } else if (strcmp(k, "site") == 0) {
            if ((rc = take_id(v, "site", r->site, e)) < 0)
                return rc;
            seen_site = true;
        } else if (strcmp(k, "region") == 0) {
            if ((rc = take_name(v, "region", r->region, e)) < 0)
                return rc;
        } else if (strcmp(k, "area") == 0) {
            if ((rc = take_name(v, "area", r->area, e)) < 0)
                return rc;
        } else if (strcmp(k, "dwelling_type") == 0) {
            if ((rc = take_name(v, "dwelling_type", r->dwelling, e)) < 0)
                return rc;
        } else if (strcmp(k, "prepaid") == 0) {
            if (!cJSON_IsBool(v))
                return fail(e, "prepaid", "must be true or false");
            r->prepaid = cJSON_IsTrue(v);
        } else if (strcmp(k, "replaced_at") == 0 && !create) {
            if (cJSON_IsString(v)) {
                if (time_parse(v->valuestring, replaced_at) < 0)
                    return fail(e, "replaced_at", "\"%s\" is not a time (ISO 8601 or epoch s/ms)",
                                q(v->valuestring, b, sizeof(b)));
            } else if (cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble >= 0 &&
                       v->valuedouble < 253402300800000.0 &&
                       v->valuedouble == floor(v->valuedouble)) {
                /* epoch: seconds, or ms when 13 digits or more, as time_parse reads them */
                *replaced_at = v->valuedouble >= 1e12 ? (int64_t)v->valuedouble
                                                      : (int64_t)v->valuedouble * 1000;
            } else {
                return fail(e, "replaced_at", "must be a time (ISO 8601 string or epoch number)");
            }
            *has_replaced = true;
        } else {
            return fail(e, k[0] ? k : "body", "unknown field");
        }
    }
    if (create && !seen_id)
        return fail(e, "id", "is required");
    if (create && !seen_gw)
        return fail(e, "gateway", "is required");
    if (create && !seen_site)
        return fail(e, "site", "is required");
    if (r->region[0]) {
        const struct cfg_region *g = find_region(cfg, r->region);
        if (!g) {
            char names[CFG_REGIONS_MAX][CFG_REG_NAME_MAX];
            for (int i = 0; i < cfg->nregions; i++)
                memcpy(names[i], cfg->regions[i].name, CFG_REG_NAME_MAX);
            return fail(
                e, "region", "\"%s\" is not a configured region (%s)", q(r->region, b, sizeof(b)),
                joined((const char(*)[CFG_REG_NAME_MAX])names, cfg->nregions, list, sizeof(list)));
        }
        if (r->area[0] && !in_list((const char(*)[CFG_REG_NAME_MAX])g->areas, g->nareas, r->area))
            return fail(
                e, "area", "\"%s\" is not an area of region %s (%s)", q(r->area, b, sizeof(b)),
                g->name,
                joined((const char(*)[CFG_REG_NAME_MAX])g->areas, g->nareas, list, sizeof(list)));
    } else if (r->area[0]) {
        return fail(e, "area", "needs a region (an area is valid only within its region)");
    }
    if (r->dwelling[0] &&
        !in_list((const char(*)[CFG_REG_NAME_MAX])cfg->dwellings, cfg->ndwellings, r->dwelling))
        return fail(e, "dwelling_type", "\"%s\" is not a configured dwelling type (%s)",
                    q(r->dwelling, b, sizeof(b)),
                    joined((const char(*)[CFG_REG_NAME_MAX])cfg->dwellings, cfg->ndwellings, list,
                           sizeof(list)));
    return 0;
}

static bool currency_ok(const char *s)
{
    return strlen(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' &&
           s[2] >= 'A' && s[2] <= 'Z';
}

static int take_tariff(const cJSON *v, struct store_site *s, struct registry_error *e)
{
    const cJSON *f;
    bool price = false, cur = false;
    char b[48];

    if (cJSON_IsNull(v)) {
        s->has_tariff = false;
        s->price = 0;
        s->currency[0] = '\0';
        return 0;
    }
    if (!cJSON_IsObject(v))
        return fail(e, "tariff", "must be null or {\"price_per_kwh\": ..., \"currency\": ...}");
    cJSON_ArrayForEach(f, v)
    {
        if (strcmp(f->string, "price_per_kwh") == 0) {
            if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || f->valuedouble < 0 ||
                f->valuedouble > PRICE_MAX)
                return fail(e, "tariff.price_per_kwh", "must be a number 0..%g", PRICE_MAX);
            s->price = f->valuedouble;
            price = true;
        } else if (strcmp(f->string, "currency") == 0) {
            if (!cJSON_IsString(f) || !currency_ok(f->valuestring))
                return fail(e, "tariff.currency", "must be an ISO 4217 code such as \"EUR\"%s%s%s",
                            cJSON_IsString(f) ? " (not \"" : "",
                            cJSON_IsString(f) ? q(f->valuestring, b, sizeof(b)) : "",
                            cJSON_IsString(f) ? "\")" : "");
            snprintf(s->currency, sizeof(s->currency), "%s", f->valuestring);
            cur = true;
        } else {
            return fail(e, "tariff", "%.20s: unknown field", f->string);
        }
    }
    if (!price)
        return fail(e, "tariff.price_per_kwh", "is required");
    if (!cur)
        return fail(e, "tariff.currency", "is required");
    s->has_tariff = true;
    return 0;
}

int registry_site_apply(const cJSON *body, bool create, struct store_site *s,
                        struct registry_error *e)
{
    const cJSON *v;
    bool seen_id = false, seen_tz = false;
    char b[48];
    int rc;

    if (!cJSON_IsObject(body))
        return fail(e, "body", "must be a JSON object");
    cJSON_ArrayForEach(v, body)
    {
        const char *k = v->string;
        if (strcmp(k, "id") == 0) {
            char id[WIRE_ID_MAX];
            if ((rc = take_id(v, "id", id, e)) < 0)
                return rc;
            if (!create && strcmp(id, s->id) != 0)
                return fail(e, "id", "cannot be changed (the path names \"%s\")", s->id);
            snprintf(s->id, sizeof(s->id), "%s", id);
            seen_id = true;
        } else if (strcmp(k, "title") == 0) {
            if (cJSON_IsNull(v)) {
                s->title[0] = '\0';
                continue;
            }
            if (!cJSON_IsString(v) || strlen(v->valuestring) >= STORE_TITLE_MAX)
                return fail(e, "title", "must be null or a string of at most %d bytes",
                            STORE_TITLE_MAX - 1);
            for (const char *p = v->valuestring; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    return fail(e, "title", "must not contain control characters");
            snprintf(s->title, sizeof(s->title), "%s", v->valuestring);
        } else if (strcmp(k, "tz") == 0) {
            if (!cJSON_IsString(v))
                return fail(e, "tz", "must be a string (an IANA time zone such as Europe/Berlin)");
            if (!tz_valid(v->valuestring))
                return fail(e, "tz", "\"%s\" is not a known IANA time zone",
                            q(v->valuestring, b, sizeof(b)));
            snprintf(s->tz, sizeof(s->tz), "%s", v->valuestring);
            seen_tz = true;
        } else if (strcmp(k, "tariff") == 0) {
            if ((rc = take_tariff(v, s, e)) < 0)
                return rc;
        } else {
            return fail(e, k[0] ? k : "body", "unknown field");
        }
    }
    if (create && !seen_id)
        return fail(e, "id", "is required");
    if (create && !seen_tz)
        return fail(e, "tz", "is required");
    return 0;
}
