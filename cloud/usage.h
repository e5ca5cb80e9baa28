/*
 * usage: the pure arithmetic of energy usage, for the store's rollups and the API: how a
 * step between two consecutive readings of a counter or a prepaid balance counts, how
 * rollup rows and gaps add up to usage per local bucket, and the prepaid forecast. No I/O,
 * no SQLite, no time zone: callers pass bucket boundaries (tz.h computes them), so every
 * rule here is unit-tested on hand-made numbers (tests/unit/test_usage.c).
 *
 * Counter rules (usage_counter_step), for consecutive readings prev -> cur of a counter,
 * dt apart; each step's usage is >= 0 and never more than max_power_kw allows:
 *   cur >= prev                 normal: cur - prev; but a rise that would need more than
 *                               max_power_kw over dt is taken as a new counter (replacement
 *                               by one that starts higher): 0
 *   cur < prev, rollover        prev lies within 1% below a register boundary B (10^3 ..
 *                               10^12, or 2^16, 2^31, 2^32 or 2^48 times 1, 0.1, 0.01 or
 *                               0.001) and cur is within 1% of B above 0: the register
 *                               wrapped: (B - prev) + cur. Profile-independent: B is found
 *                               from the value alone, so it works for a 99999.9 display
 *                               counter and for a u32 register with any of those scales.
 *   cur < prev, reset           cur is near zero (<= 1 unit or <= 1% of prev): the meter
 *                               counted from 0 again: cur
 *   cur < prev, otherwise       a new counter (meter replaced, or a glitch): 0; cur is the
 *                               new baseline
 * A meter replacement recorded in the registry (replaced_at) inside (prev.ts, cur.ts]
 * makes that step 0 whatever the values.
 *
 * Balance rules (usage_balance_step): a fall is use, a rise is a top-up; a top-up is
 * never negative use.
 */
#ifndef MLK_CLOUD_USAGE_H
#define MLK_CLOUD_USAGE_H

#include <stdbool.h>
#include <stdint.h>

enum usage_step {
    US_NORMAL,
    US_RESET,
    US_ROLLOVER,
    US_REPLACED, /* a new counter: a large drop, an implausible rise, or a registry event */
};

const char *usage_step_name(enum usage_step s);

/* Usage of the step prev -> cur of a counter taken dt_ms apart (dt_ms > 0), by the rules
 * above; *kind says which applied (may be NULL). max_power_kw <= 0: no plausibility limit.
 * Never negative, never NaN. */
double usage_counter_step(double prev, double cur, int64_t dt_ms, double max_power_kw,
                          enum usage_step *kind);

/* Splits the step prev -> cur of a balance into use (a fall) and top-up (a rise). */
void usage_balance_step(double prev, double cur, double *use, double *topup);

/* What the usage of one bucket adds up from. Filled by the store from rollup rows:
 * n readings, delta the usage of steps whose later reading lies in the bucket. */
struct usage_in_row {
    int64_t ts; /* a rollup bucket start */
    int64_t n;
    double delta;
};

/* Two consecutive readings further apart than the gap limit: the usage across it is
 * known (the counter tells) but not when it happened. */
struct usage_gap {
    int64_t from_ts, to_ts;
    double delta;
};

struct usage_bucket {
    int64_t start, end; /* UTC ms, [start, end) */
    bool has;           /* some usage is known for it (energy is meaningful) */
    bool complete;      /* readings cover the whole bucket, no gap crosses its edges */
    double energy;      /* usage in it (when has) */
    int64_t n;          /* readings in it */
};

struct usage_totals {
    double energy;     /* sum over buckets with has */
    double gap_energy; /* usage across gaps that cross bucket edges: in no bucket */
    int buckets, complete;
};

/* Adds rows r[0..nr) (sorted by ts) and gaps g[0..ng) up into the nb buckets
 * [bound[i], bound[i+1]) (bound: nb + 1 ascending instants). A gap whose two readings lie
 * in the same bucket counts there (the total is exact); one that crosses bucket edges
 * makes every bucket it touches incomplete, and its usage goes to totals->gap_energy.
 * A bucket with no readings and no usage has has = false (shown as null, not 0).
 * span_from..span_to are the first and newest reading of the quantity (no data outside);
 * tol_ms: a bucket edge within tol of them still counts as covered. */
void usage_buckets(const int64_t *bound, int nb, const struct usage_in_row *r, int nr,
                   const struct usage_gap *g, int ng, int64_t span_from, int64_t span_to,
                   int64_t tol_ms, struct usage_bucket *out, struct usage_totals *tot);

/* Daily statistics over the complete day buckets d[0..n): min, max, average energy. */
struct usage_daily {
    int days; /* complete days counted; 0: min/max/avg are not set */
    double min, max, avg;
    int64_t min_day, max_day; /* their starts */
};
void usage_daily_stats(const struct usage_bucket *d, int n, struct usage_daily *out);

/* Change from b (before) to a (now): abs a - b; pct relative to b (false when b is 0). */
void usage_change(double a, double b, double *abs, double *pct, bool *has_pct);

/* Prepaid forecast: average daily use over `days` days of use total, and how many days
 * balance lasts at that rate (-1 when nothing is used). */
void usage_forecast(double balance, double use, double days, double *per_day, double *days_left);

#endif
