/* usage: see usage.h. */
#include "usage.h"

#include <math.h>
#include <stddef.h>

#define NEAR 0.01     /* "within 1%" of a boundary, "near zero" relative to prev */
#define RESET_ABS 1.0 /* a counter at or below 1 unit after a drop counted from zero */
#define MS_PER_H 3600000.0

const char *usage_step_name(enum usage_step s)
{
    switch (s) {
    case US_NORMAL:
        return "normal";
    case US_RESET:
        return "reset";
    case US_ROLLOVER:
        return "rollover";
    default:
        return "replaced";
    }
}

/* Register boundaries where a counter may wrap, ascending. Below 10^4 a drop is a reset
 * or a new counter: a real kWh register is not that short, and a false rollover there
 * would add up to 1% of a small boundary. */
static const double bounds[] = {
    1e4,
    65536.0, /* 2^16 */
    1e5,
    1e6,
    2147483.648, /* 2^31 * 0.001 */
    4294967.296, /* 2^32 * 0.001 */
    1e7,
    21474836.48, /* 2^31 * 0.01 */
    42949672.96, /* 2^32 * 0.01 */
    1e8,
    214748364.8, /* 2^31 * 0.1 */
    429496729.6, /* 2^32 * 0.1 */
    1e9,
    2147483648.0, /* 2^31 */
    4294967296.0, /* 2^32 */
    1e10,
    1e11,
    281474976710.656, /* 2^48 * 0.001 */
    1e12,
    2814749767106.56,  /* 2^48 * 0.01 */
    28147497671065.6,  /* 2^48 * 0.1 */
    281474976710656.0, /* 2^48 */
};

static bool plausible(double d, int64_t dt_ms, double max_power_kw)
{
    return max_power_kw <= 0 || d <= max_power_kw * ((double)dt_ms / MS_PER_H) + 1e-9;
}

double usage_counter_step(double prev, double cur, int64_t dt_ms, double max_power_kw,
                          enum usage_step *kind)
{
    enum usage_step k = US_REPLACED;
    double d = 0;

    if (!isfinite(prev) || !isfinite(cur) || dt_ms <= 0) {
        d = 0;
    } else if (cur >= prev) {
        d = cur - prev;
        k = US_NORMAL;
    } else {
        for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
            double b = bounds[i];
            if (prev < b && prev >= b * (1 - NEAR) && cur >= 0 && cur <= b * NEAR) {
                d = (b - prev) + cur;
                k = US_ROLLOVER;
                break;
            }
        }
        if (k == US_REPLACED && cur >= 0 && (cur <= RESET_ABS || cur <= prev * NEAR)) {
            d = cur;
            k = US_RESET;
        }
    }
    if (k != US_REPLACED && !plausible(d, dt_ms, max_power_kw))
        k = US_REPLACED;
    if (k == US_REPLACED)
        d = 0;
    if (kind)
        *kind = k;
    return d;
}

void usage_balance_step(double prev, double cur, double *use, double *topup)
{
    *use = *topup = 0;
    if (!isfinite(prev) || !isfinite(cur))
        return;
    if (cur < prev)
        *use = prev - cur;
    else
        *topup = cur - prev;
}

/* Index of the bucket holding t: -1 before the first, nb after the last. */
static int bucket_of(const int64_t *bound, int nb, int64_t t)
{
    int lo = 0, hi = nb;

    if (t < bound[0])
        return -1;
    if (t >= bound[nb])
        return nb;
    while (hi - lo > 1) { /* bound[lo] <= t < bound[hi] */
        int mid = lo + (hi - lo) / 2;
        if (bound[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

void usage_buckets(const int64_t *bound, int nb, const struct usage_in_row *r, int nr,
                   const struct usage_gap *g, int ng, int64_t span_from, int64_t span_to,
                   int64_t tol_ms, struct usage_bucket *out, struct usage_totals *tot)
{
    int b = 0;

    tot->energy = tot->gap_energy = 0;
    tot->buckets = nb;
    tot->complete = 0;
    for (int i = 0; i < nb; i++) {
        out[i].start = bound[i];
        out[i].end = bound[i + 1];
        out[i].has = false;
        out[i].complete = true;
        out[i].energy = 0;
        out[i].n = 0;
    }
    for (int i = 0; i < nr && nb > 0; i++) {
        if (r[i].ts < bound[0])
            continue;
        while (b < nb && r[i].ts >= bound[b + 1])
            b++;
        if (b == nb)
            break;
        out[b].n += r[i].n;
        out[b].energy += r[i].delta;
        if (r[i].n > 0)
            out[b].has = true;
    }
    for (int i = 0; i < ng && nb > 0; i++) {
        int from = bucket_of(bound, nb, g[i].from_ts), to = bucket_of(bound, nb, g[i].to_ts);
        if (from == to) {
            if (from >= 0 && from < nb) {
                out[from].energy += g[i].delta;
                out[from].has = true;
            }
            continue;
        }
        for (int k = from < 0 ? 0 : from; k <= to && k < nb; k++)
            out[k].complete = false;
        if (to >= 0 && to < nb)
            tot->gap_energy += g[i].delta;
    }
    for (int i = 0; i < nb; i++) {
        if (out[i].n == 0 || out[i].start < span_from - tol_ms || out[i].end > span_to + tol_ms)
            out[i].complete = false;
        if (out[i].has)
            tot->energy += out[i].energy;
        if (out[i].complete)
            tot->complete++;
    }
}

void usage_daily_stats(const struct usage_bucket *d, int n, struct usage_daily *out)
{
    double sum = 0;

    out->days = 0;
    out->min = out->max = out->avg = 0;
    out->min_day = out->max_day = 0;
    for (int i = 0; i < n; i++) {
        if (!d[i].complete || !d[i].has)
            continue;
        if (out->days == 0 || d[i].energy < out->min) {
            out->min = d[i].energy;
            out->min_day = d[i].start;
        }
        if (out->days == 0 || d[i].energy > out->max) {
            out->max = d[i].energy;
            out->max_day = d[i].start;
        }
        sum += d[i].energy;
        out->days++;
    }
    if (out->days)
        out->avg = sum / out->days;
}

void usage_change(double a, double b, double *abs, double *pct, bool *has_pct)
{
    *abs = a - b;
    *has_pct = b != 0;
    *pct = b != 0 ? (a - b) / b * 100.0 : 0;
}

void usage_forecast(double balance, double use, double days, double *per_day, double *days_left)
{
    *per_day = days > 0 ? use / days : 0;
    *days_left = *per_day > 0 ? (balance > 0 ? balance / *per_day : 0) : -1;
}
