/*
 * tz: see tz.h. GLib answers two questions only: the offset at a UTC instant
 * (g_time_zone_find_interval) and the instant of a local time (g_time_zone_adjust_time).
 * Calendar arithmetic is done here on day numbers (days_from_civil and civil_from_days,
 * the proleptic Gregorian algorithms of H. Hinnant), so nothing allocates per call.
 */
#include "tz.h"

#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY_S 86400
#define CACHE_MAX 512

struct tz {
    GTimeZone *g;
    char name[TZ_NAME_MAX];
};

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int64_t floor_mod(int64_t a, int64_t b)
{
    return a - floor_div(a, b) * b;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    int64_t era, doe, yoe, yy, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    yy = yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yy + (*m <= 2));
}

/* Only the IANA form: letters first, then letters, digits, '/', '_', '+', '-'. Offsets
 * ("+05:30") and file paths are not zone names, though GLib would accept some of them. */
static bool name_ok(const char *name)
{
    size_t n;

    if (!name || !((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z')))
        return false;
    n = strlen(name);
    if (n >= TZ_NAME_MAX || strstr(name, "..") || name[n - 1] == '/')
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '/' || *p == '_' || *p == '+' || *p == '-'))
            return false;
    return true;
}

int tz_open(const char *name, tz_t **out)
{
    tz_t *tz;
    GTimeZone *g;

    *out = NULL;
    if (!name_ok(name))
        return -EINVAL;
    g = strcmp(name, "UTC") == 0 ? g_time_zone_new_utc() : g_time_zone_new_identifier(name);
    if (!g)
        return -EINVAL;
    tz = calloc(1, sizeof(*tz));
    if (!tz) {
        g_time_zone_unref(g);
        return -ENOMEM;
    }
    tz->g = g;
    snprintf(tz->name, sizeof(tz->name), "%s", name);
    *out = tz;
    return 0;
}

void tz_free(tz_t *tz)
{
    if (!tz)
        return;
    g_time_zone_unref(tz->g);
    free(tz);
}

bool tz_valid(const char *name)
{
    const tz_t *tz;
    return tz_get(name, &tz) == 0 && name && *name;
}

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static tz_t *cache[CACHE_MAX];
static int ncache;

int tz_get(const char *name, const tz_t **out)
{
    tz_t *tz;
    int rc;

    if (!name || !*name)
        name = "UTC";
    pthread_mutex_lock(&cache_mu);
    for (int i = 0; i < ncache; i++) {
        if (strcmp(cache[i]->name, name) == 0) {
            *out = cache[i];
            pthread_mutex_unlock(&cache_mu);
            return 0;
        }
    }
    if (ncache == CACHE_MAX) {
        pthread_mutex_unlock(&cache_mu);
        return -ENOSPC;
    }
    /* unknown names are not cached: they would fill the cache from outside input */
    if ((rc = tz_open(name, &tz)) < 0) {
        pthread_mutex_unlock(&cache_mu);
        return rc;
    }
    cache[ncache++] = tz;
    *out = tz;
    pthread_mutex_unlock(&cache_mu);
    return 0;
}

void tz_cache_clear(void)
{
    pthread_mutex_lock(&cache_mu);
    for (int i = 0; i < ncache; i++)
        tz_free(cache[i]);
    ncache = 0;
    pthread_mutex_unlock(&cache_mu);
}

const char *tz_name(const tz_t *tz)
{
    return tz->name;
}

int tz_offset_s(const tz_t *tz, int64_t ms)
{
    gint i = g_time_zone_find_interval(tz->g, G_TIME_TYPE_UNIVERSAL, floor_div(ms, 1000));
    return (int)g_time_zone_get_offset(tz->g, i);
}

bool tz_whole_hours(const tz_t *tz, int64_t from_ms, int64_t to_ms)
{
    gint a = g_time_zone_find_interval(tz->g, G_TIME_TYPE_UNIVERSAL, floor_div(from_ms, 1000));
    gint b = g_time_zone_find_interval(tz->g, G_TIME_TYPE_UNIVERSAL, floor_div(to_ms, 1000));

    /* interval indexes are consecutive: [a, b] are every offset in force in between */
    for (gint i = a; i <= b; i++)
        if (g_time_zone_get_offset(tz->g, i) % 3600 != 0)
            return false;
    return true;
}

int64_t tz_local(const tz_t *tz, int y, int mo, int d, int h, int mi)
{
    gint64 t = (gint64)days_from_civil(y, mo, d) * DAY_S + h * 3600 + mi * 60;
    /* DAYLIGHT: of the two instants of an ambiguous time (clocks going back) the first,
     * since daylight time comes before the change; a time in a gap moves past it */
    gint i = g_time_zone_adjust_time(tz->g, G_TIME_TYPE_DAYLIGHT, &t);
    return ((int64_t)t - g_time_zone_get_offset(tz->g, i)) * 1000;
}

void tz_civil(const tz_t *tz, int64_t ms, struct tz_civil *out)
{
    int64_t local = ms + (int64_t)tz_offset_s(tz, ms) * 1000;
    int64_t days = floor_div(local, (int64_t)DAY_S * 1000);
    int64_t rem = local - days * DAY_S * 1000;

    civil_from_days(days, &out->y, &out->mo, &out->d);
    out->h = (int)(rem / 3600000);
    out->mi = (int)(rem / 60000 % 60);
    out->s = (int)(rem / 1000 % 60);
    out->ms = (int)(rem % 1000);
    out->wday = (int)floor_mod(days + 3, 7); /* 1970-01-01 was a Thursday */
}

static int64_t unit_ms(enum tz_unit u)
{
    return u == TZ_5MIN ? 300000 : u == TZ_30MIN ? 1800000 : 3600000;
}

int64_t tz_floor(const tz_t *tz, int64_t ms, enum tz_unit u)
{
    struct tz_civil c;
    int64_t days;

    if (u <= TZ_HOUR) {
        int64_t local = ms + (int64_t)tz_offset_s(tz, ms) * 1000;
        return ms - floor_mod(local, unit_ms(u));
    }
    tz_civil(tz, ms, &c);
    switch (u) {
    case TZ_WEEK:
        days = days_from_civil(c.y, c.mo, c.d) - c.wday;
        civil_from_days(days, &c.y, &c.mo, &c.d);
        break;
    case TZ_MONTH:
        c.d = 1;
        break;
    case TZ_YEAR:
        c.mo = 1;
        c.d = 1;
        break;
    default:
        break;
    }
    return tz_local(tz, c.y, c.mo, c.d, 0, 0);
}

int64_t tz_next(const tz_t *tz, int64_t start, enum tz_unit u)
{
    struct tz_civil c;
    int64_t days;

    if (u <= TZ_HOUR) {
        int64_t n = tz_floor(tz, start + unit_ms(u), u);
        return n > start ? n : start + unit_ms(u);
    }
    tz_civil(tz, start, &c);
    days = days_from_civil(c.y, c.mo, c.d);
    switch (u) {
    case TZ_DAY:
        days += 1;
        break;
    case TZ_WEEK:
        days += 7;
        break;
    case TZ_MONTH:
        days = days_from_civil(c.mo == 12 ? c.y + 1 : c.y, c.mo == 12 ? 1 : c.mo + 1, 1);
        break;
    default:
        days = days_from_civil(c.y + 1, 1, 1);
        break;
    }
    civil_from_days(days, &c.y, &c.mo, &c.d);
    return tz_local(tz, c.y, c.mo, c.d, 0, 0);
}

char *tz_format(const tz_t *tz, int64_t ms, char *buf, size_t len)
{
    int off = tz_offset_s(tz, ms), a = off < 0 ? -off : off;
    struct tz_civil c;
    char frac[8] = "";

    tz_civil(tz, ms, &c);
    if (c.ms)
        snprintf(frac, sizeof(frac), ".%03d", c.ms);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d%s%c%02d:%02d", c.y, c.mo, c.d, c.h, c.mi, c.s,
             frac, off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
    return buf;
}
