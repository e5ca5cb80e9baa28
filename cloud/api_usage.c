/*
 * api_usage: usage per local bucket, KPIs, chart series, OHLC bars, readings of several
 * meters and the CSV export (docs/api.md). Everything is read from rollups (rollup.h)
 * where a range is long, and the arithmetic is usage.c's; this file picks the tier,
 * computes the local bucket boundaries (tz.h) and writes JSON.
 *
 * KPI answers are cached per meter for rollup.kpi_cache_ms while the store's generation
 * (store_generation) does not change: a dashboard of many viewers polling the same meters
 * then costs one computation per meter and interval, and a new reading is visible at once.
 */
#include "api_ext.h"

#include "log.h"
#include "quantities.h"
#include "rollup.h"
#include "timeutil.h"
#include "tz.h"
#include "usage.h"
#include "wire.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS_MAX 5000   /* usage buckets or bars in one answer */
#define POINTS_DEFAULT 800 /* series points */
#define POINTS_MAX 5000
#define ROWS_MAX 200000      /* rollup rows read for one answer, at most */
#define RAW_SERIES_MAX 20000 /* raw readings read for a series, at most */
#define GAPS_MAX 10000
#define METERS_MAX 50 /* in meters= */
#define LIMIT_DEFAULT 100
#define LIMIT_MAX 10000
#define EXPORT_PAGE 1000
#define DAY_MS 86400000LL
#define KPI_CACHE 64

const struct cfg_rollup *apx_rollup;
const struct cfg_registry *apx_registry;

static struct cfg_rollup default_rollup = {.raw_days = 60,
                                           .m5_days = 180,
                                           .interval_s = 3600,
                                           .gap_s = 900,
                                           .max_power_kw = 1000,
                                           .kpi_cache_ms = 1000};
static struct cfg_registry default_registry;

void api_usage_setup(const struct cfg_rollup *roll, const struct cfg_registry *reg)
{
    apx_rollup = roll ? roll : &default_rollup;
    apx_registry = reg ? reg : &default_registry;
}

static const struct cfg_rollup *rollup_cfg(void)
{
    return apx_rollup ? apx_rollup : &default_rollup;
}

/* ---- helpers shared with api_registry.c (api_ext.h) ---- */

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    struct apx_params *p = cls;
    char b[48];
    int i;

    for (i = 0; p->names[i]; i++)
        if (strcmp(p->names[i], key) == 0)
            break;
    if (!p->names[i]) {
        snprintf(p->err, sizeof(p->err), "%s: unknown parameter", api_shown(key, b, sizeof(b)));
        return MHD_NO;
    }
    if (p->value[i]) {
        snprintf(p->err, sizeof(p->err), "%s: given more than once", key);
        return MHD_NO;
    }
    if (!value || !*value) {
        snprintf(p->err, sizeof(p->err), "%s: empty value", key);
        return MHD_NO;
    }
    if (strlen(value) >
        (p->list_name && strcmp(key, p->list_name) == 0 ? APX_LIST_VALUE_MAX : APX_VALUE_MAX)) {
        snprintf(p->err, sizeof(p->err), "%s: longer than %d characters", key,
                 p->list_name && strcmp(key, p->list_name) == 0 ? APX_LIST_VALUE_MAX
                                                                : APX_VALUE_MAX);
        return MHD_NO;
    }
    p->value[i] = value;
    return MHD_YES;
}

int apx_params(struct api_req *r, struct apx_params *p, enum MHD_Result *ret)
{
    p->err[0] = '\0';
    memset(p->value, 0, sizeof(p->value));
    MHD_get_connection_values(r->c, MHD_GET_ARGUMENT_KIND, collect, p);
    if (!p->err[0])
        return 0;
    *ret = api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "%s", p->err);
    return -EINVAL;
}

const char *apx_param(const struct apx_params *p, const char *name)
{
    for (int i = 0; p->names[i]; i++)
        if (strcmp(p->names[i], name) == 0)
            return p->value[i];
    return NULL;
}

/* Writes the decimal digits of u (at least min_digits of them) backwards before end;
 * returns the first. */
static char *digits_back(char *end, uint64_t u, int min_digits)
{
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
        min_digits--;
    } while (u || min_digits > 0);
    return end;
}

/* v as %.15g would print it, when v is a whole number of millionths below 1e9 in size
 * (every energy and average the API prints, and most readings): such a value has at most 15
 * significant digits, so %.15g prints exactly them, and they read back as v. Formatted by
 * hand: printf's floating point path was a fifth of a year's usage request. Returns false
 * when v is not such a value. */
static bool fmt_micro(double v, char *buf, size_t len)
{
    char tmp[32], *end = tmp + sizeof(tmp), *p;
    double r;
    uint64_t u, ip, fp;
    int fd = 6;
    size_t n;

    if (!(fabs(v) < 1e9) || len < sizeof(tmp))
        return false;
    r = round(fabs(v) * 1e6);
    if (r / 1e6 != fabs(v))
        return false;
    u = (uint64_t)r;
    ip = u / 1000000;
    fp = u % 1000000;
    while (fd > 0 && fp % 10 == 0) { /* %g drops trailing zeros */
        fp /= 10;
        fd--;
    }
    p = end;
    if (fd > 0) {
        p = digits_back(p, fp, fd);
        *--p = '.';
    }
    p = digits_back(p, ip, 1);
    if (signbit(v))
        *--p = '-'; /* -0 too, as printf has it */
    n = (size_t)(end - p);
    memcpy(buf, p, n);
    buf[n] = '\0';
    return true;
}

/* The shortest of %.15g and %.17g that reads back as v (%.16g rarely helps: skipped). */
static void fmt_double(double v, char *buf, size_t len)
{
    if (fmt_micro(v, buf, len))
        return;
    snprintf(buf, len, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, len, "%.17g", v);
}

cJSON *apx_double(double v)
{
    char buf[32];

    if (!isfinite(v))
        return cJSON_CreateNull();
    fmt_double(v, buf, sizeof(buf));
    return cJSON_CreateRaw(buf);
}

bool apx_add_double(cJSON *o, const char *name, double v)
{
    cJSON *n = apx_double(v);
    if (!n)
        return false;
    cJSON_AddItemToObject(o, name, n);
    return true;
}

/* Energy for output: to the mWh (1e-6 kWh), so that sums of binary fractions read as
 * decimals; -0 is 0. */
static double tidy(double v)
{
    double r = round(v * 1e6) / 1e6;
    return r == 0 ? 0 : r;
}

static bool add_energy(cJSON *o, const char *name, bool has, double v)
{
    return has ? apx_add_double(o, name, tidy(v)) : cJSON_AddNullToObject(o, name) != NULL;
}

cJSON *apx_reading_json(const struct store_reading *sr, bool with_meter)
{
    const struct reading *r = &sr->r;
    cJSON *o = cJSON_CreateObject(), *vals;

    if (!o)
        return NULL;
    if ((with_meter && !cJSON_AddStringToObject(o, "meter", r->meter)) ||
        !api_add_time(o, "ts", r->ts_ms) || !api_add_int(o, "ts_ms", r->ts_ms) ||
        !api_add_int(o, "seq", (int64_t)r->seq) || !cJSON_AddBoolToObject(o, "ok", r->ok) ||
        (!r->ok && !cJSON_AddStringToObject(o, "error", r->error)) ||
        (r->unsynced && !cJSON_AddStringToObject(o, "clock", "unsynced")) ||
        !(vals = cJSON_AddObjectToObject(o, "values")))
        goto fail;
    for (int q = 0; q < qty_count(); q++)
        if ((r->present & (1u << q)) && !apx_add_double(vals, qty_at(q)->name, r->values[q]))
            goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

enum MHD_Result apx_store_error(struct api_req *r, int rc)
{
    return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "store: %s",
                          strerror(-rc));
}

/* ---- common parameter checks ---- */

static enum MHD_Result bad(struct api_req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static enum MHD_Result bad(struct api_req *r, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "%s", msg);
}

/* Parses time parameter name (absent: *ms unchanged). */
static int time_param(struct api_req *r, const struct apx_params *p, const char *name, int64_t *ms,
                      enum MHD_Result *ret)
{
    const char *v = apx_param(p, name);
    char b[48];

    if (!v)
        return 0;
    if (time_parse(v, ms) < 0) {
        *ret = bad(r, "%s: \"%s\" is not a time (ISO 8601 or epoch s/ms)", name,
                   api_shown(v, b, sizeof(b)));
        return -EINVAL;
    }
    return 0;
}

/* The meter of the path with its registry context and zone; sends the 404 or 500. */
static int meter_of(struct api_req *r, struct store_meter_ctx *ctx, const tz_t **tz,
                    enum MHD_Result *ret)
{
    int rc = store_meter_ctx(r->a->st, r->param[0], ctx);

    if (rc == -ENOENT) {
        *ret = api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "meter \"%s\" not found",
                              r->param[0]);
        return rc;
    }
    if (rc < 0) {
        *ret = apx_store_error(r, rc);
        return rc;
    }
    if (tz_get(ctx->tz, tz) < 0 && tz_get("UTC", tz) < 0) {
        *ret = apx_store_error(r, -ENOMEM);
        return -ENOMEM;
    }
    return 0;
}

/* A quantity parameter: absent gives def (when def >= 0). */
static int qty_param(struct api_req *r, const struct apx_params *p, int def, bool counters_only,
                     int *q, enum MHD_Result *ret)
{
    const char *v = apx_param(p, "quantity");
    char b[48];

    if (!v) {
        if (def >= 0) {
            *q = def;
            return 0;
        }
        *ret = bad(r, "quantity: required (a quantity name such as power or energy_import)");
        return -EINVAL;
    }
    *q = qty_index(v);
    if (*q < 0) {
        *ret = bad(r, "quantity: \"%s\" is not a quantity", api_shown(v, b, sizeof(b)));
        return -EINVAL;
    }
    if (counters_only && qty_at(*q)->kind == QTY_GAUGE) {
        *ret = bad(r, "quantity: %s is not a counter or balance: it has no usage", v);
        return -EINVAL;
    }
    return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* Civil date of a day count since 1970-01-01 (H. Hinnant's algorithm). */
static void civil_of(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* tz_format(), with one offset lookup instead of two (none when off, the offset at ms, is
 * known; INT_MIN: not known) and without printf: a year of day buckets formats 366 of these
 * per request. Same text. */
static const char *iso_off(const tz_t *tz, int64_t ms, int off, char *buf)
{
    int a, y, mo, d;
    int64_t local, days, rem;
    char *p = buf;

    if (off == INT_MIN)
        off = tz_offset_s(tz, ms);
    a = off < 0 ? -off : off;
    local = ms + (int64_t)off * 1000;
    days = floor_div(local, DAY_MS);
    rem = local - days * DAY_MS;

    civil_of(days, &y, &mo, &d);
    if (y < 0 || y > 9999)
        return tz_format(tz, ms, buf, TZ_ISO_MAX);
#define PUT2(v) (*p++ = (char)('0' + (v) / 10), *p++ = (char)('0' + (v) % 10))
    PUT2(y / 100);
    PUT2(y % 100);
    *p++ = '-';
    PUT2(mo);
    *p++ = '-';
    PUT2(d);
    *p++ = 'T';
    PUT2((int)(rem / 3600000));
    *p++ = ':';
    PUT2((int)(rem / 60000 % 60));
    *p++ = ':';
    PUT2((int)(rem / 1000 % 60));
    if (rem % 1000) {
        int f = (int)(rem % 1000);
        *p++ = '.';
        *p++ = (char)('0' + f / 100);
        PUT2(f % 100);
    }
    *p++ = off < 0 ? '-' : '+';
    PUT2(a / 3600);
    *p++ = ':';
    PUT2(a / 60 % 60);
#undef PUT2
    *p = '\0';
    return buf;
}

static const char *iso(const tz_t *tz, int64_t ms, char *buf)
{
    return iso_off(tz, ms, INT_MIN, buf);
}

/* ---- usage ---- */

struct period {
    const char *name;
    enum tz_unit unit;
    int64_t default_span; /* from = to - this when from is not given */
};

static const struct period periods[] = {
    {"30m", TZ_30MIN, DAY_MS},         {"hour", TZ_HOUR, DAY_MS},
    {"day", TZ_DAY, 30 * DAY_MS},      {"week", TZ_WEEK, 12 * 7 * DAY_MS},
    {"month", TZ_MONTH, 365 * DAY_MS}, {"year", TZ_YEAR, 5 * 365 * DAY_MS},
};

/* Bucket boundaries [from, to) of unit u into *out (malloc'd, *nb buckets, nb + 1 bounds).
 * -E2BIG when more than BUCKETS_MAX. */
/* tz_next(tz, start, TZ_DAY) with one offset lookup on most days: when start is a local
 * midnight and the offset 24 hours later is the same, that is the next local midnight.
 * Otherwise (a change of offset that day, a day that did not start at midnight) it asks
 * tz_next. */
static int64_t next_day(const tz_t *tz, int64_t start, int *off)
{
    int64_t c = start + DAY_MS;
    int o = *off == INT_MIN ? tz_offset_s(tz, start) : *off;

    *off = tz_offset_s(tz, c); /* c is the next start on the fast path */
    if (*off == o && (start + (int64_t)o * 1000) % DAY_MS == 0)
        return c;
    *off = INT_MIN;
    return tz_next(tz, start, TZ_DAY);
}

/* The bucket bounds of unit u covering [from, to): *out (malloc'd, *nb + 1 entries). With
 * offs, also *offs (malloc'd): the offset at each bound where next_day() learnt it, else
 * INT_MIN. */
static int bounds_of(const tz_t *tz, enum tz_unit u, int64_t from, int64_t to, int64_t **out,
                     int *nb, int **offs)
{
    int64_t *b = malloc((BUCKETS_MAX + 1) * sizeof(*b));
    int *o = offs ? malloc((BUCKETS_MAX + 1) * sizeof(*o)) : NULL;
    int n = 0, off = INT_MIN;

    *out = NULL;
    *nb = 0;
    if (offs)
        *offs = NULL;
    if (!b || (offs && !o)) {
        free(b);
        free(o);
        return -ENOMEM;
    }
    b[0] = tz_floor(tz, from, u);
    if (o)
        o[0] = INT_MIN;
    while (b[n] < to) {
        if (n == BUCKETS_MAX) {
            free(b);
            free(o);
            return -E2BIG;
        }
        b[n + 1] = u == TZ_DAY ? next_day(tz, b[n], &off) : tz_next(tz, b[n], u);
        if (o)
            o[n + 1] = u == TZ_DAY ? off : INT_MIN;
        n++;
    }
    if (offs)
        *offs = o;
    *out = b;
    *nb = n;
    return 0;
}

/* Usage buckets of quantity q over the bounds b[0..nb], read from the right tier. */
static int usage_of(store_t *st, int64_t mid, int q, const tz_t *tz, enum tz_unit u,
                    const int64_t *b, int nb, struct usage_bucket *out, struct usage_totals *tot)
{
    enum store_tier tier;
    struct rollup_row *rows = NULL;
    struct usage_in_row *in = NULL;
    struct usage_gap *gaps = NULL;
    int64_t first = 0, last = 0, tol = (int64_t)rollup_cfg()->gap_s * 1000;
    int nr = 0, ng = 0, cap, rc;

    if (u == TZ_30MIN || (u == TZ_HOUR && !tz_whole_hours(tz, b[0], b[nb])))
        tier = STORE_TIER_5M; /* :30 and :45 offsets: local hours are not UTC hours */
    else if (u == TZ_HOUR)
        tier = STORE_TIER_1H;
    else
        tier = STORE_TIER_1D;
    if (mid == 0 || store_span(st, mid, q, &first, &last) == -ENOENT) {
        usage_buckets(b, nb, NULL, 0, NULL, 0, 0, -1, 0, out, tot);
        return 0;
    }
    {
        int64_t unit = tier == STORE_TIER_5M   ? ROLLUP_5M_MS
                       : tier == STORE_TIER_1H ? ROLLUP_1H_MS
                                               : DAY_MS / 2;
        int64_t want = (b[nb] - b[0]) / unit + 2;
        cap = want < ROWS_MAX ? (int)want : ROWS_MAX;
    }
    rows = malloc((size_t)cap * sizeof(*rows));
    gaps = malloc(GAPS_MAX * sizeof(*gaps));
    if (!rows || !gaps) {
        rc = -ENOMEM;
        goto end;
    }
    if ((rc = store_rollups(st, mid, q, tier, b[0], b[nb], cap, rows, &nr)) < 0 ||
        (rc = store_gaps(st, mid, q, b[0], b[nb], GAPS_MAX, gaps, &ng)) < 0)
        goto end;
    if (!(in = malloc((size_t)(nr ? nr : 1) * sizeof(*in)))) {
        rc = -ENOMEM;
        goto end;
    }
    for (int i = 0; i < nr; i++) {
        in[i].ts = rows[i].ts;
        in[i].n = rows[i].n;
        in[i].delta = rows[i].delta;
    }
    usage_buckets(b, nb, in, nr, gaps, ng, first, last, tol, out, tot);
end:
    free(rows);
    free(gaps);
    free(in);
    return rc;
}

static enum MHD_Result h_usage(struct api_req *r)
{
    static const char *const names[] = {"period", "from", "to", "quantity", NULL};
    struct apx_params p = {.names = names};
    struct store_meter_ctx ctx;
    const struct period *per = &periods[2];
    const tz_t *tz;
    int64_t to = now_ms(), from, *b = NULL, *db = NULL;
    int *offs = NULL;
    struct usage_bucket *bk = NULL, *dk = NULL;
    struct usage_totals tot, dtot;
    struct usage_daily daily;
    cJSON *root = NULL, *arr, *o;
    enum MHD_Result ret;
    int q, nb = 0, ndb = 0, rc;
    char buf[TZ_ISO_MAX], b1[48];
    const char *v;

    if (apx_params(r, &p, &ret) < 0 || meter_of(r, &ctx, &tz, &ret) < 0)
        return ret;
    if ((v = apx_param(&p, "period"))) {
        per = NULL;
        for (size_t i = 0; i < sizeof(periods) / sizeof(periods[0]); i++)
            if (strcmp(periods[i].name, v) == 0)
                per = &periods[i];
        if (!per)
            return bad(r, "period: \"%s\" is not one of 30m, hour, day, week, month, year",
                       api_shown(v, b1, sizeof(b1)));
    }
    if (time_param(r, &p, "to", &to, &ret) < 0)
        return ret;
    from = to - per->default_span;
    if (time_param(r, &p, "from", &from, &ret) < 0 ||
        qty_param(r, &p, qty_index("energy_import"), true, &q, &ret) < 0)
        return ret;
    if (from >= to)
        return bad(r, "from: %s is not before to: %s", iso(tz, from, buf),
                   time_format(to, b1, sizeof(b1)));
    rc = bounds_of(tz, per->unit, from, to, &b, &nb, &offs);
    if (rc == -E2BIG)
        return bad(r,
                   "from..to: more than %d buckets of %s; shorten the range or use a longer "
                   "period",
                   BUCKETS_MAX, per->name);
    if (rc < 0)
        return apx_store_error(r, rc);
    if (!(bk = calloc((size_t)nb, sizeof(*bk)))) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = usage_of(r->a->st, ctx.id, q, tz, per->unit, b, nb, bk, &tot)) < 0)
        goto fail;
    /* daily statistics over the local days of the range */
    if (per->unit == TZ_DAY) {
        dk = bk;
        ndb = nb;
    } else if ((rc = bounds_of(tz, TZ_DAY, b[0], b[nb], &db, &ndb, NULL)) == 0) {
        if (!(dk = calloc((size_t)ndb, sizeof(*dk)))) {
            rc = -ENOMEM;
            goto fail;
        }
        if ((rc = usage_of(r->a->st, ctx.id, q, tz, TZ_DAY, db, ndb, dk, &dtot)) < 0)
            goto fail;
    } else if (rc == -E2BIG) {
        ndb = 0; /* more days than we list: no daily statistics */
        rc = 0;
    } else {
        goto fail;
    }
    usage_daily_stats(dk, ndb, &daily);

    root = cJSON_CreateObject();
    if (!root || !cJSON_AddStringToObject(root, "meter", r->param[0]) ||
        !cJSON_AddStringToObject(root, "quantity", qty_at(q)->name) ||
        !cJSON_AddStringToObject(root, "unit", qty_at(q)->unit) ||
        !cJSON_AddStringToObject(root, "period", per->name) ||
        !cJSON_AddStringToObject(root, "tz", tz_name(tz)) ||
        !cJSON_AddStringToObject(root, "from", iso(tz, b[0], buf)) ||
        !cJSON_AddStringToObject(root, "to", iso(tz, b[nb], buf)) ||
        !(arr = cJSON_AddArrayToObject(root, "buckets")))
        goto oom;
    for (int i = 0; i < nb; i++) {
        if (!(o = cJSON_CreateObject()))
            goto oom;
        cJSON_AddItemToArray(arr, o);
        if (!cJSON_AddStringToObject(o, "start", iso_off(tz, bk[i].start, offs[i], buf)) ||
            !add_energy(o, "energy", bk[i].has, bk[i].energy) ||
            !cJSON_AddBoolToObject(o, "complete", bk[i].complete) ||
            (ctx.has_tariff && !add_energy(o, "cost", bk[i].has, bk[i].energy * ctx.price)))
            goto oom;
    }
    if (!(o = cJSON_AddObjectToObject(root, "totals")) ||
        !add_energy(o, "energy", true, tot.energy) ||
        !add_energy(o, "gap_energy", true, tot.gap_energy) ||
        !api_add_int(o, "buckets", tot.buckets) || !api_add_int(o, "complete", tot.complete) ||
        (ctx.has_tariff && (!add_energy(o, "cost", true, tot.energy * ctx.price) ||
                            !cJSON_AddStringToObject(o, "currency", ctx.currency))))
        goto oom;
    if (!(o = cJSON_AddObjectToObject(root, "daily")) || !api_add_int(o, "days", daily.days))
        goto oom;
    if (daily.days && (!add_energy(o, "min", true, daily.min) ||
                       !cJSON_AddStringToObject(o, "min_day", iso(tz, daily.min_day, buf)) ||
                       !add_energy(o, "max", true, daily.max) ||
                       !cJSON_AddStringToObject(o, "max_day", iso(tz, daily.max_day, buf)) ||
                       !add_energy(o, "avg", true, daily.avg)))
        goto oom;
    if (!daily.days && (!cJSON_AddNullToObject(o, "min") || !cJSON_AddNullToObject(o, "max") ||
                        !cJSON_AddNullToObject(o, "avg")))
        goto oom;
    if (dk != bk)
        free(dk);
    free(bk);
    free(b);
    free(offs);
    free(db);
    return api_send_json(r->c, MHD_HTTP_OK, root);
oom:
    cJSON_Delete(root);
    root = NULL;
    rc = -ENOMEM;
fail:
    if (dk != bk)
        free(dk);
    free(bk);
    free(b);
    free(offs);
    free(db);
    return apx_store_error(r, rc);
}

/* ---- KPIs ---- */

struct kpi_entry {
    char meter[WIRE_ID_MAX];
    uint64_t gen;
    int64_t made; /* mono_ms */
    char *json;
};

static pthread_mutex_t kpi_mu = PTHREAD_MUTEX_INITIALIZER;
static struct kpi_entry kpi_cache[KPI_CACHE];
static unsigned kpi_next;

/* A cached answer for meter (malloc'd copy), or NULL. */
static char *kpi_cached(const char *meter, uint64_t gen, int64_t now, int ttl)
{
    char *copy = NULL;

    if (ttl <= 0)
        return NULL;
    pthread_mutex_lock(&kpi_mu);
    for (int i = 0; i < KPI_CACHE; i++) {
        struct kpi_entry *e = &kpi_cache[i];
        if (e->json && e->gen == gen && now - e->made < ttl && strcmp(e->meter, meter) == 0) {
            copy = strdup(e->json);
            break;
        }
    }
    pthread_mutex_unlock(&kpi_mu);
    return copy;
}

static void kpi_keep(const char *meter, uint64_t gen, int64_t now, const char *json)
{
    struct kpi_entry *e = NULL;
    char *copy = strdup(json);

    if (!copy)
        return;
    pthread_mutex_lock(&kpi_mu);
    for (int i = 0; i < KPI_CACHE && !e; i++)
        if (kpi_cache[i].json && strcmp(kpi_cache[i].meter, meter) == 0)
            e = &kpi_cache[i];
    if (!e)
        e = &kpi_cache[kpi_next++ % KPI_CACHE];
    free(e->json);
    snprintf(e->meter, sizeof(e->meter), "%s", meter);
    e->gen = gen;
    e->made = now;
    e->json = copy;
    pthread_mutex_unlock(&kpi_mu);
}

static enum MHD_Result send_text_json(struct MHD_Connection *c, char *body)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ret;

    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* One compared pair of a KPI: this period so far and the last one to the same point. A
 * period without any reading has null energy (and so no change), not 0. */
static bool add_pair(cJSON *root, const char *name, const struct store_sum *now_s,
                     const struct store_sum *before, const struct store_meter_ctx *ctx,
                     const tz_t *tz, int64_t start, int64_t prev_start)
{
    cJSON *o = cJSON_AddObjectToObject(root, name);
    bool has_a = now_s->n > 0 || now_s->use > 0, has_b = before->n > 0 || before->use > 0;
    double abs, pct;
    bool has_pct;
    char buf[TZ_ISO_MAX];

    usage_change(tidy(now_s->use), tidy(before->use), &abs, &pct, &has_pct);
    has_pct = has_pct && has_a && has_b;
    return o && cJSON_AddStringToObject(o, "start", iso(tz, start, buf)) &&
           add_energy(o, "energy", has_a, now_s->use) &&
           cJSON_AddStringToObject(o, "previous_start", iso(tz, prev_start, buf)) &&
           add_energy(o, "previous", has_b, before->use) &&
           add_energy(o, "change", has_a && has_b, abs) &&
           (has_pct ? apx_add_double(o, "change_pct", round(pct * 100) / 100)
                    : cJSON_AddNullToObject(o, "change_pct") != NULL) &&
           cJSON_AddBoolToObject(o, "complete",
                                 now_s->gaps_crossing == 0 && before->gaps_crossing == 0) &&
           (!ctx->has_tariff || (add_energy(o, "cost", has_a, now_s->use * ctx->price) &&
                                 add_energy(o, "previous_cost", has_b, before->use * ctx->price)));
}

/* The instant on the day starting at day that shows the local clock time of t. */
static int64_t same_time(const tz_t *tz, int64_t day, int64_t t, int64_t limit)
{
    struct tz_civil c, d;
    int64_t x;

    tz_civil(tz, t, &c);
    tz_civil(tz, day, &d);
    x = tz_local(tz, d.y, d.mo, d.d, c.h, c.mi) + c.s * 1000 + c.ms;
    return x < day ? day : x > limit ? limit : x;
}

static int kpi_json(store_t *st, const char *meter, const struct store_meter_ctx *ctx,
                    const tz_t *tz, int64_t now, cJSON **out)
{
    int e = qty_index("energy_import"), pw = qty_index("power"), bal = qty_index("balance");
    int64_t today = tz_floor(tz, now, TZ_DAY), yday = tz_floor(tz, today - 1, TZ_DAY);
    int64_t week = tz_floor(tz, now, TZ_WEEK), pweek = tz_floor(tz, week - 1, TZ_WEEK);
    int64_t month = tz_floor(tz, now, TZ_MONTH), pmonth = tz_floor(tz, month - 1, TZ_MONTH);
    int64_t ycut = same_time(tz, yday, now, today), wcut = pweek + (now - week);
    int64_t mcut = pmonth + (now - month);
    struct store_sum s_today, s_yday, s_week, s_pweek, s_month, s_pmonth;
    struct store_reading *last = NULL;
    cJSON *root = cJSON_CreateObject(), *o;
    char buf[TZ_ISO_MAX];
    int nl = 0, rc = 0;

    *out = NULL;
    if (!root)
        return -ENOMEM;
    if (wcut > week)
        wcut = week;
    if (mcut > month)
        mcut = month;
    memset(&s_today, 0, sizeof(s_today));
    s_yday = s_week = s_pweek = s_month = s_pmonth = s_today;
    if (ctx->id) {
        const struct store_sum_range rg[6] = {
            {today, today, now}, {yday, yday, ycut},
            {week, today, now},  {pweek, tz_floor(tz, wcut, TZ_DAY), wcut},
            {month, today, now}, {pmonth, tz_floor(tz, mcut, TZ_DAY), mcut},
        };
        struct store_sum sums[6];
        if ((rc = store_usage_sums(st, ctx->id, e, rg, 6, sums)) < 0)
            goto fail;
        s_today = sums[0];
        s_yday = sums[1];
        s_week = sums[2];
        s_pweek = sums[3];
        s_month = sums[4];
        s_pmonth = sums[5];
    }
    if (ctx->id && (rc = store_readings(st, meter, 0, now + 1, 1, &last, &nl)) < 0 && rc != -ENOENT)
        goto fail;
    rc = -ENOMEM;
    if (!cJSON_AddStringToObject(root, "meter", meter) ||
        !cJSON_AddStringToObject(root, "tz", tz_name(tz)) ||
        !cJSON_AddStringToObject(root, "at", iso(tz, now, buf)) ||
        !cJSON_AddStringToObject(root, "unit", "kWh") ||
        !add_pair(root, "today", &s_today, &s_yday, ctx, tz, today, yday) ||
        !add_pair(root, "week", &s_week, &s_pweek, ctx, tz, week, pweek) ||
        !add_pair(root, "month", &s_month, &s_pmonth, ctx, tz, month, pmonth))
        goto fail;
    if (ctx->has_tariff && !cJSON_AddStringToObject(root, "currency", ctx->currency))
        goto fail;
    if (!(o = cJSON_AddObjectToObject(root, "power")))
        goto fail;
    if (nl == 1 && (last->r.present & (1u << pw))) {
        if (!apx_add_double(o, "w", last->r.values[pw]) || !api_add_time(o, "ts", last->r.ts_ms))
            goto fail;
    } else if (!cJSON_AddNullToObject(o, "w") || !cJSON_AddNullToObject(o, "ts")) {
        goto fail;
    }
    if (!cJSON_AddBoolToObject(root, "prepaid", ctx->prepaid))
        goto fail;
    if (ctx->prepaid) {
        struct store_sum week_use;
        struct rollup_row *rows = NULL;
        int64_t since = tz_floor(tz, today - 7 * DAY_MS + DAY_MS / 2, TZ_DAY), first = 0, lastts;
        double days, per_day, left;
        int nr = 0;
        cJSON *p = cJSON_AddObjectToObject(root, "balance"), *tops;

        if (!p)
            goto fail;
        memset(&week_use, 0, sizeof(week_use));
        if (ctx->id && (rc = store_usage_sum(st, ctx->id, bal, since, today, now, &week_use)) < 0)
            goto fail;
        if (ctx->id && store_span(st, ctx->id, bal, &first, &lastts) == 0 && first > since)
            since = first; /* a meter younger than a week: its own age */
        days = (double)(now - since) / DAY_MS;
        usage_forecast(nl == 1 && (last->r.present & (1u << bal)) ? last->r.values[bal] : 0,
                       week_use.use, days, &per_day, &left);
        rc = -ENOMEM;
        if (nl == 1 && (last->r.present & (1u << bal))) {
            if (!apx_add_double(p, "value", last->r.values[bal]))
                goto fail;
        } else if (!cJSON_AddNullToObject(p, "value")) {
            goto fail;
        }
        if (!add_energy(p, "avg_daily_use", days > 0, per_day) ||
            !apx_add_double(p, "window_days", round(days * 1000) / 1000) ||
            (left >= 0 ? !apx_add_double(p, "days_left", round(left * 10) / 10)
                       : !cJSON_AddNullToObject(p, "days_left")) ||
            !add_energy(p, "topups_7d", true, week_use.topup) ||
            !(tops = cJSON_AddArrayToObject(p, "topups")))
            goto fail;
        /* top-ups of the last 30 days, to the hour, newest last */
        if (ctx->id && (rows = malloc(31 * 25 * sizeof(*rows)))) {
            if (store_rollups(st, ctx->id, bal, STORE_TIER_1H, now - 30 * DAY_MS, now + 1, 31 * 25,
                              rows, &nr) == 0)
                for (int i = 0; i < nr; i++) {
                    cJSON *t;
                    if (rows[i].topup <= 0)
                        continue;
                    if (!(t = cJSON_CreateObject())) {
                        free(rows);
                        goto fail;
                    }
                    cJSON_AddItemToArray(tops, t);
                    if (!cJSON_AddStringToObject(t, "hour", iso(tz, rows[i].ts, buf)) ||
                        !add_energy(t, "amount", true, rows[i].topup)) {
                        free(rows);
                        goto fail;
                    }
                }
            free(rows);
        }
    }
    free(last);
    *out = root;
    return 0;
fail:
    free(last);
    cJSON_Delete(root);
    return rc;
}

static enum MHD_Result h_kpi(struct api_req *r)
{
    static const char *const names[] = {"at", NULL};
    struct apx_params p = {.names = names};
    struct store_meter_ctx ctx;
    const tz_t *tz;
    int64_t now = now_ms(), mono = mono_ms();
    uint64_t gen;
    enum MHD_Result ret;
    bool at;
    char *body;
    cJSON *root;
    int rc;

    if (apx_params(r, &p, &ret) < 0)
        return ret;
    at = apx_param(&p, "at") != NULL;
    gen = store_generation(r->a->st);
    if (!at && (body = kpi_cached(r->param[0], gen, mono, rollup_cfg()->kpi_cache_ms)))
        return send_text_json(r->c, body);
    if (time_param(r, &p, "at", &now, &ret) < 0 || meter_of(r, &ctx, &tz, &ret) < 0)
        return ret;
    if ((rc = kpi_json(r->a->st, r->param[0], &ctx, tz, now, &root)) < 0)
        return apx_store_error(r, rc);
    if (!(body = cJSON_PrintUnformatted(root))) {
        cJSON_Delete(root);
        return apx_store_error(r, -ENOMEM);
    }
    cJSON_Delete(root);
    if (!at && rollup_cfg()->kpi_cache_ms > 0)
        kpi_keep(r->param[0], gen, mono, body);
    return send_text_json(r->c, body);
}

/* ---- series and bars ---- */

static int int_param(struct api_req *r, const struct apx_params *p, const char *name, int lo,
                     int hi, int *out, enum MHD_Result *ret)
{
    const char *v = apx_param(p, name);
    char *end, b[48];
    long x;

    if (!v)
        return 0;
    errno = 0;
    x = strtol(v, &end, 10);
    if (*v < '0' || *v > '9' || errno || *end || x < lo || x > hi) {
        *ret =
            bad(r, "%s: \"%s\" is not an integer %d..%d", name, api_shown(v, b, sizeof(b)), lo, hi);
        return -EINVAL;
    }
    *out = (int)x;
    return 0;
}

static cJSON *row4(int64_t ts, double mn, double avg, double mx)
{
    cJSON *a = cJSON_CreateArray();
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRId64, ts);
    if (!a)
        return NULL;
    cJSON_AddItemToArray(a, cJSON_CreateRaw(buf));
    cJSON_AddItemToArray(a, apx_double(mn));
    cJSON_AddItemToArray(a, apx_double(avg));
    cJSON_AddItemToArray(a, apx_double(mx));
    return cJSON_GetArraySize(a) == 4 ? a : (cJSON_Delete(a), NULL);
}

static cJSON *series_head(const char *meter, int q, const char *tier, int64_t w, cJSON **arr)
{
    cJSON *root = cJSON_CreateObject();

    if (!root || !cJSON_AddStringToObject(root, "meter", meter) ||
        !cJSON_AddStringToObject(root, "quantity", qty_at(q)->name) ||
        !cJSON_AddStringToObject(root, "unit", qty_at(q)->unit) ||
        !cJSON_AddStringToObject(root, "tier", tier) || !api_add_int(root, "bucket_ms", w) ||
        !(*arr = cJSON_AddArrayToObject(root, "points"))) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* A series from 5-minute or hourly rows, summed up by the store (SQL); frees rows, pts. */
static enum MHD_Result series_sql(struct api_req *r, const struct store_meter_ctx *ctx, int q,
                                  enum store_tier tier, int64_t origin, int64_t to, int64_t w,
                                  int points, struct rollup_row *rows, struct rollup_point *pts)
{
    struct store_point4 *v = NULL;
    cJSON *root, *arr;
    int n = 0, rc = 0;

    free(rows);
    free(pts);
    if (!(v = malloc((size_t)(points + 2) * sizeof(*v))))
        return apx_store_error(r, -ENOMEM);
    if (ctx->id &&
        (rc = store_series(r->a->st, ctx->id, q, tier, origin, to, w, points + 2, v, &n)) < 0) {
        free(v);
        return apx_store_error(r, rc);
    }
    if (!(root = series_head(r->param[0], q, tier == STORE_TIER_5M ? "5m" : "1h", w, &arr)))
        goto oom;
    for (int i = 0; i < n; i++) {
        /* the average to 6 decimals: min and max are exact readings, the average of many
         * would otherwise print 17 digits of noise */
        cJSON *a = row4(v[i].ts, v[i].min, round(v[i].avg * 1e6) / 1e6, v[i].max);
        if (!a)
            goto oom;
        cJSON_AddItemToArray(arr, a);
    }
    free(v);
    return api_send_json(r->c, MHD_HTTP_OK, root);
oom:
    free(v);
    cJSON_Delete(root);
    return apx_store_error(r, -ENOMEM);
}

static enum MHD_Result h_series(struct api_req *r)
{
    static const char *const names[] = {"quantity", "from", "to", "points", NULL};
    static const char *const tier_name[] = {"5m", "1h", "1d"};
    struct apx_params p = {.names = names};
    struct store_meter_ctx ctx;
    const tz_t *tz;
    int64_t to = now_ms(), from, w, unit;
    int points = POINTS_DEFAULT, q, n = 0, cap, rc;
    struct rollup_row *rows = NULL, acc;
    struct rollup_point *pts = NULL, prev;
    bool raw = false, has_prev;
    enum store_tier tier = STORE_TIER_5M;
    enum MHD_Result ret;
    cJSON *root = NULL, *arr;
    char b1[48], b2[48];

    if (apx_params(r, &p, &ret) < 0 || meter_of(r, &ctx, &tz, &ret) < 0 ||
        qty_param(r, &p, -1, false, &q, &ret) < 0 || time_param(r, &p, "to", &to, &ret) < 0)
        return ret;
    from = to - DAY_MS;
    if (time_param(r, &p, "from", &from, &ret) < 0 ||
        int_param(r, &p, "points", 1, POINTS_MAX, &points, &ret) < 0)
        return ret;
    if (from >= to)
        return bad(r, "from: %s is not before to: %s", time_format(from, b1, sizeof(b1)),
                   time_format(to, b2, sizeof(b2)));
    /* the coarsest tier that still gives close to `points` points: a tier's rows are read
     * only while a bucket holds at most 6 of them (a year of hourly rows costs ~10 ms) */
    w = (to - from + points - 1) / points;
    if (w < ROLLUP_5M_MS) {
        raw = true;
        unit = 1;
    } else if (w < 6 * ROLLUP_5M_MS) {
        unit = ROLLUP_5M_MS;
    } else if (w < 6 * ROLLUP_1H_MS) {
        tier = STORE_TIER_1H;
        unit = ROLLUP_1H_MS;
    } else {
        tier = STORE_TIER_1D;
        unit = DAY_MS;
    }
    {
        /* room for the rows of the range in the chosen tier (or the raw readings) */
        int64_t want = (to - from) / (raw ? ROLLUP_5M_MS : unit) + 2;
        cap = want < ROWS_MAX ? (int)want : ROWS_MAX;
        if (raw && cap < RAW_SERIES_MAX)
            cap = RAW_SERIES_MAX;
    }
    rows = malloc((size_t)cap * sizeof(*rows));
    if (!rows) {
        rc = -ENOMEM;
        goto fail;
    }
    if (raw && ctx.id) {
        /* raw readings for a short range, unless there are too many: then 5-minute rows */
        if (!(pts = malloc(RAW_SERIES_MAX * sizeof(*pts)))) {
            rc = -ENOMEM;
            goto fail;
        }
        if ((rc = store_points(r->a->st, ctx.id, q, from, to, RAW_SERIES_MAX, pts, &n, &prev,
                               &has_prev)) < 0)
            goto fail;
        if (n == RAW_SERIES_MAX) {
            raw = false;
            unit = ROLLUP_5M_MS;
        } else {
            for (int i = 0; i < n; i++) {
                memset(&rows[i], 0, sizeof(rows[i]));
                rows[i].ts = pts[i].ts;
                rows[i].n = 1;
                rows[i].min = rows[i].max = rows[i].sum = rows[i].first = rows[i].last = pts[i].v;
                rows[i].first_ts = rows[i].last_ts = pts[i].ts;
            }
        }
    }
    if (!raw)
        w = (w + unit - 1) / unit * unit; /* buckets of whole rows */
    if (!raw && tier != STORE_TIER_1D)
        return series_sql(r, &ctx, q, tier, floor_div(from, unit) * unit, to, w, points, rows, pts);
    if (!raw && ctx.id &&
        (rc = store_rollups(r->a->st, ctx.id, q, tier,
                            tier == STORE_TIER_1D ? tz_floor(tz, from, TZ_DAY)
                                                  : floor_div(from, unit) * unit,
                            to, cap, rows, &n)) < 0)
        goto fail;
    if (!ctx.id)
        n = 0;
    if (!(root = series_head(r->param[0], q, raw ? "raw" : tier_name[tier], w, &arr)))
        goto oom;
    memset(&acc, 0, sizeof(acc));
    for (int i = 0; i <= n; i++) {
        int64_t start = i < n ? from + floor_div(rows[i].ts - from, w) * w : 0;
        if (acc.n > 0 && (i == n || start != acc.ts)) {
            /* the average to 6 decimals: min and max are exact readings, the average
             * of many would otherwise print 17 digits of noise */
            cJSON *a = row4(acc.ts, acc.min, round(acc.sum / (double)acc.n * 1e6) / 1e6, acc.max);
            if (!a)
                goto oom;
            cJSON_AddItemToArray(arr, a);
            memset(&acc, 0, sizeof(acc));
        }
        if (i == n)
            break;
        if (acc.n == 0)
            acc.ts = start;
        rollup_merge(&acc, &rows[i]);
    }
    free(rows);
    free(pts);
    return api_send_json(r->c, MHD_HTTP_OK, root);
oom:
    rc = -ENOMEM;
fail:
    cJSON_Delete(root);
    free(rows);
    free(pts);
    return apx_store_error(r, rc);
}

static enum MHD_Result h_bars(struct api_req *r)
{
    static const char *const names[] = {"quantity", "interval", "from", "to", NULL};
    struct apx_params p = {.names = names};
    struct store_meter_ctx ctx;
    const tz_t *tz;
    int64_t to = now_ms(), from, unit = ROLLUP_1H_MS;
    enum store_tier tier = STORE_TIER_1H;
    struct rollup_row *rows = NULL;
    enum MHD_Result ret;
    const char *iv;
    cJSON *root = NULL, *arr;
    char b1[48], b2[48];
    int q, n = 0, rc;

    if (apx_params(r, &p, &ret) < 0 || meter_of(r, &ctx, &tz, &ret) < 0 ||
        qty_param(r, &p, -1, false, &q, &ret) < 0 || time_param(r, &p, "to", &to, &ret) < 0)
        return ret;
    if ((iv = apx_param(&p, "interval"))) {
        if (strcmp(iv, "5m") == 0) {
            tier = STORE_TIER_5M;
            unit = ROLLUP_5M_MS;
        } else if (strcmp(iv, "day") == 0) {
            tier = STORE_TIER_1D;
            unit = DAY_MS;
        } else if (strcmp(iv, "hour") != 0) {
            return bad(r, "interval: \"%s\" is not one of 5m, hour, day",
                       api_shown(iv, b1, sizeof(b1)));
        }
    }
    from = to - 100 * unit;
    if (time_param(r, &p, "from", &from, &ret) < 0)
        return ret;
    if (from >= to)
        return bad(r, "from: %s is not before to: %s", time_format(from, b1, sizeof(b1)),
                   time_format(to, b2, sizeof(b2)));
    if ((to - from) / unit > BUCKETS_MAX + 1)
        return bad(r,
                   "from..to: more than %d bars of %s; shorten the range or use a longer "
                   "interval",
                   BUCKETS_MAX, iv ? iv : "hour");
    from = tier == STORE_TIER_1D ? tz_floor(tz, from, TZ_DAY) : floor_div(from, unit) * unit;
    if (!(rows = malloc((BUCKETS_MAX + 2) * sizeof(*rows)))) {
        rc = -ENOMEM;
        goto fail;
    }
    if (ctx.id &&
        (rc = store_rollups(r->a->st, ctx.id, q, tier, from, to, BUCKETS_MAX + 2, rows, &n)) < 0)
        goto fail;
    root = cJSON_CreateObject();
    if (!root || !cJSON_AddStringToObject(root, "meter", r->param[0]) ||
        !cJSON_AddStringToObject(root, "quantity", qty_at(q)->name) ||
        !cJSON_AddStringToObject(root, "unit", qty_at(q)->unit) ||
        !cJSON_AddStringToObject(root, "interval", iv ? iv : "hour") ||
        !cJSON_AddStringToObject(root, "tz", tz_name(tz)) ||
        !(arr = cJSON_AddArrayToObject(root, "bars")))
        goto oom;
    for (int i = 0; i < n; i++) {
        cJSON *a = cJSON_CreateArray();
        char buf[24];
        if (!a)
            goto oom;
        cJSON_AddItemToArray(arr, a);
        snprintf(buf, sizeof(buf), "%" PRId64, rows[i].ts);
        cJSON_AddItemToArray(a, cJSON_CreateRaw(buf));
        cJSON_AddItemToArray(a, apx_double(rows[i].first));
        cJSON_AddItemToArray(a, apx_double(rows[i].max));
        cJSON_AddItemToArray(a, apx_double(rows[i].min));
        cJSON_AddItemToArray(a, apx_double(rows[i].last));
        snprintf(buf, sizeof(buf), "%" PRId64, rows[i].n);
        cJSON_AddItemToArray(a, cJSON_CreateRaw(buf));
        if (cJSON_GetArraySize(a) != 6)
            goto oom;
    }
    free(rows);
    return api_send_json(r->c, MHD_HTTP_OK, root);
oom:
    rc = -ENOMEM;
fail:
    cJSON_Delete(root);
    free(rows);
    return apx_store_error(r, rc);
}

/* ---- readings of several meters, export ---- */

struct meter_list {
    int n;
    char id[METERS_MAX][WIRE_ID_MAX];
};

/* Parses "a,b,c" (meters=), checking each id and that it is known. */
static int meters_param(struct api_req *r, const char *v, struct meter_list *m,
                        enum MHD_Result *ret)
{
    char b[48];

    m->n = 0;
    if (!v) {
        *ret = bad(r, "meters: required (meter ids separated by commas)");
        return -EINVAL;
    }
    for (const char *s = v; *s;) {
        size_t len = strcspn(s, ",");
        char id[WIRE_ID_MAX + 8];
        struct store_meter_ctx ctx;
        int rc;
        snprintf(id, sizeof(id), "%.*s", len < WIRE_ID_MAX + 4 ? (int)len : WIRE_ID_MAX + 4, s);
        if (len == 0 || len >= WIRE_ID_MAX || !wire_id_valid(id)) {
            *ret = bad(r, "meters: \"%s\" is not a meter id (1..63 of [A-Za-z0-9_.-])",
                       api_shown(id, b, sizeof(b)));
            return -EINVAL;
        }
        if (m->n == METERS_MAX) {
            *ret = bad(r, "meters: more than %d meters", METERS_MAX);
            return -EINVAL;
        }
        rc = store_meter_ctx(r->a->st, id, &ctx);
        if (rc == -ENOENT) {
            *ret =
                api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "meter \"%s\" not found", id);
            return rc;
        }
        if (rc < 0) {
            *ret = apx_store_error(r, rc);
            return rc;
        }
        memcpy(m->id[m->n++], id, len + 1); /* len < WIRE_ID_MAX: checked above */
        s += len;
        if (*s == ',')
            s++;
        if (*s == '\0' && s[-1] == ',') {
            *ret = bad(r, "meters: ends with a comma");
            return -EINVAL;
        }
    }
    return 0;
}

static int cmp_newest(const void *a, const void *b)
{
    const struct store_reading *x = a, *y = b;
    if (x->r.ts_ms != y->r.ts_ms)
        return x->r.ts_ms > y->r.ts_ms ? -1 : 1;
    return strcmp(x->r.meter, y->r.meter);
}

static enum MHD_Result h_all_readings(struct api_req *r)
{
    static const char *const names[] = {"meters", "from", "to", "limit", NULL};
    struct apx_params p = {.names = names, .list_name = "meters"};
    struct meter_list *m = malloc(sizeof(*m));
    struct store_reading *all = NULL;
    int64_t from = 0, to = INT64_MAX;
    int limit = LIMIT_DEFAULT, total = 0, rc = 0;
    enum MHD_Result ret;
    cJSON *root = NULL, *arr;
    char b1[48], b2[48];

    if (!m)
        return apx_store_error(r, -ENOMEM);
    if (apx_params(r, &p, &ret) < 0 || time_param(r, &p, "from", &from, &ret) < 0 ||
        time_param(r, &p, "to", &to, &ret) < 0 ||
        int_param(r, &p, "limit", 1, LIMIT_MAX, &limit, &ret) < 0 ||
        meters_param(r, apx_param(&p, "meters"), m, &ret) < 0) {
        free(m);
        return ret;
    }
    if (from >= to) {
        free(m);
        return bad(r, "from: %s is not before to: %s", time_format(from, b1, sizeof(b1)),
                   time_format(to, b2, sizeof(b2)));
    }
    for (int i = 0; i < m->n; i++) {
        struct store_reading *v = NULL, *grown;
        int n = 0;
        rc = store_readings(r->a->st, m->id[i], from, to, limit, &v, &n);
        if (rc == -ENOENT)
            continue; /* registered, no readings yet */
        if (rc < 0)
            goto fail;
        if (n && !(grown = realloc(all, (size_t)(total + n) * sizeof(*all)))) {
            free(v);
            rc = -ENOMEM;
            goto fail;
        }
        if (n) {
            all = grown;
            memcpy(all + total, v, (size_t)n * sizeof(*v));
            total += n;
        }
        free(v);
    }
    if (total)
        qsort(all, (size_t)total, sizeof(*all), cmp_newest);
    if (total > limit)
        total = limit;
    root = cJSON_CreateObject();
    if (!root || !(arr = cJSON_AddArrayToObject(root, "readings")))
        goto oom;
    for (int i = 0; i < total; i++) {
        cJSON *o = apx_reading_json(&all[i], true);
        if (!o)
            goto oom;
        cJSON_AddItemToArray(arr, o);
    }
    free(all);
    free(m);
    return api_send_json(r->c, MHD_HTTP_OK, root);
oom:
    rc = -ENOMEM;
fail:
    cJSON_Delete(root);
    free(all);
    free(m);
    return apx_store_error(r, rc);
}

/* A CSV export being streamed: one page of readings at a time from the store. */
struct export
{
    store_t *st;
    struct meter_list m;
    int cur;        /* meter being written */
    int64_t cursor; /* next ts of that meter */
    int64_t from, to;
    char *buf; /* formatted lines not yet sent */
    size_t len, off, cap;
    bool header, done;
};

static int out_add(struct export *x, const char *s, size_t n)
{
    if (x->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 65536;
        char *nb;
        while (cap < x->len + n + 1)
            cap *= 2;
        if (!(nb = realloc(x->buf, cap)))
            return -ENOMEM;
        x->buf = nb;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, s, n);
    x->len += n;
    return 0;
}

/* Formats the next page into x->buf; x->done when there is nothing more. */
static int export_page(struct export *x)
{
    struct store_reading *v = NULL;
    char line[2048], num[32], ts[32];
    int n = 0, rc;

    x->len = x->off = 0;
    if (!x->header) {
        size_t l = (size_t)snprintf(line, sizeof(line), "meter,ts,ts_ms,ok,error");
        for (int q = 0; q < qty_count() && l < sizeof(line); q++)
            l += (size_t)snprintf(line + l, sizeof(line) - l, ",%s", qty_at(q)->name);
        if (l < sizeof(line) - 1)
            line[l++] = '\n';
        x->header = true;
        return out_add(x, line, l);
    }
    while (x->cur < x->m.n) {
        rc = store_readings_asc(x->st, x->m.id[x->cur], x->cursor, x->to, EXPORT_PAGE, &v, &n);
        if (rc < 0 && rc != -ENOENT)
            return rc;
        if (rc == -ENOENT || n == 0) {
            free(v);
            v = NULL;
            x->cur++;
            x->cursor = x->from;
            continue;
        }
        break;
    }
    if (x->cur >= x->m.n) {
        x->done = true;
        return 0;
    }
    for (int i = 0; i < n; i++) {
        const struct reading *rd = &v[i].r;
        size_t l = (size_t)snprintf(line, sizeof(line), "%s,%s,%" PRId64 ",%s,%s", rd->meter,
                                    time_format(rd->ts_ms, ts, sizeof(ts)), rd->ts_ms,
                                    rd->ok ? "true" : "false", rd->ok ? "" : rd->error);
        for (int q = 0; q < qty_count() && l < sizeof(line); q++) {
            num[0] = '\0';
            if (rd->present & (1u << q))
                fmt_double(rd->values[q], num, sizeof(num));
            l += (size_t)snprintf(line + l, sizeof(line) - l, ",%s", num);
        }
        if (l >= sizeof(line) - 1)
            l = sizeof(line) - 2;
        line[l++] = '\n';
        if ((rc = out_add(x, line, l)) < 0) {
            free(v);
            return rc;
        }
    }
    x->cursor = v[n - 1].r.ts_ms + 1;
    if (n < EXPORT_PAGE) {
        x->cur++;
        x->cursor = x->from;
    }
    free(v);
    return 0;
}

static ssize_t export_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct export *x = cls;
    size_t n;

    while (x->off == x->len) {
        if (x->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (export_page(x) < 0) {
            log_warnx("http: export: the store failed; the download is cut short");
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    n = x->len - x->off < max ? x->len - x->off : max;
    memcpy(buf, x->buf + x->off, n);
    x->off += n;
    return (ssize_t)n;
}

static void export_free(void *cls)
{
    struct export *x = cls;
    free(x->buf);
    free(x);
}

static enum MHD_Result h_export(struct api_req *r)
{
    static const char *const names[] = {"meters", "from", "to", "format", NULL};
    struct apx_params p = {.names = names, .list_name = "meters"};
    struct export *x = calloc(1, sizeof(*x));
    struct MHD_Response *resp;
    int64_t from = INT64_MIN, to = INT64_MAX;
    enum MHD_Result ret;
    const char *fmt;
    char b1[48], b2[48];

    if (!x)
        return apx_store_error(r, -ENOMEM);
    if (apx_params(r, &p, &ret) < 0 || time_param(r, &p, "from", &from, &ret) < 0 ||
        time_param(r, &p, "to", &to, &ret) < 0 ||
        meters_param(r, apx_param(&p, "meters"), &x->m, &ret) < 0) {
        free(x);
        return ret;
    }
    fmt = apx_param(&p, "format");
    if (fmt && strcmp(fmt, "csv") != 0) {
        free(x);
        return bad(r, "format: \"%s\" is not csv (the only format)",
                   api_shown(fmt, b1, sizeof(b1)));
    }
    if (from >= to) {
        free(x);
        return bad(r, "from: %s is not before to: %s", time_format(from, b1, sizeof(b1)),
                   time_format(to, b2, sizeof(b2)));
    }
    x->st = r->a->st;
    x->cursor = x->from = from;
    x->to = to;
    resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, export_read, x, export_free);
    if (!resp) {
        export_free(x);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/csv; charset=utf-8");
    MHD_add_response_header(resp, "Content-Disposition", "attachment; filename=\"readings.csv\"");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    ret = MHD_queue_response(r->c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

const struct api_route api_usage_routes[] = {
    {"GET", "/api/v1/meters/{meter}/usage", AUTH_ROLE_VIEWER, h_usage},
    {"GET", "/api/v1/meters/{meter}/kpi", AUTH_ROLE_VIEWER, h_kpi},
    {"GET", "/api/v1/meters/{meter}/series", AUTH_ROLE_VIEWER, h_series},
    {"GET", "/api/v1/meters/{meter}/bars", AUTH_ROLE_VIEWER, h_bars},
    {"GET", "/api/v1/readings", AUTH_ROLE_VIEWER, h_all_readings},
    {"GET", "/api/v1/export", AUTH_ROLE_VIEWER, h_export},
    {NULL, NULL, AUTH_ROLE_NONE, NULL},
};
