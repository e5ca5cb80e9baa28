/*
 * test_usage: the usage arithmetic (cloud/usage.h) and rollups (cloud/rollup.h), end to end
 * from raw readings to usage per local bucket, as the store and the API compute it:
 * readings (with duplicates and out of order) -> sorted, first copy kept -> 5-minute rows
 * and gaps (rollup_build) -> hourly rows (UTC hours) and daily rows (local days, folded
 * from hourly rows where the offset is whole hours, else from 5-minute rows) -> buckets
 * (usage_buckets) from the tier the API reads: 5-minute rows for 30-minute buckets and for
 * hours in a :30/:45 zone, hourly rows for other hours, daily rows for days and longer.
 *
 * Golden data, worked out by hand: every meter reads every 15 minutes, 7 s past the UTC
 * quarter hour, and its counter rises 0.25 kWh per reading, i.e. 1 kWh per hour. A step
 * counts in the bucket of its later reading, so every full local hour (also a :30 or :45
 * one, whose four readings are hh:30:07, hh:45:07, ... UTC) holds four steps = 1.0 kWh, a
 * local day holds as many kWh as it has hours (23, 24, 25), and each event below changes
 * a figure by a stated amount. The very first reading of a meter has no step (-0.25).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "quantities.h"
#include "rollup.h"
#include "tz.h"
#include "usage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H 3600000LL
#define M 60000LL
#define Q (15 * M) /* one reading interval */
#define OFF 7000   /* readings are 7 s past the quarter hour */
#define GAP_MS (15 * M)
#define MAX_KW 1000.0
#define NMAX 30000

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    int64_t yy = y - (mo <= 2), era = (yy >= 0 ? yy : yy - 399) / 400, yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    return days * 86400000 + h * H + mi * M;
}

/* ---- the step rules, one by one ---- */

static void test_counter_steps(void **state)
{
    static const struct {
        const char *what;
        double prev, cur;
        int64_t dt;
        double want;
        enum usage_step kind;
        double eps;
    } t[] = {
        {"rise", 100.0, 100.25, Q, 0.25, US_NORMAL, 0},
        {"no change", 100.0, 100.0, Q, 0, US_NORMAL, 0},
        {"reset to zero", 5230.5, 0.0, Q, 0, US_RESET, 0},
        {"reset, counted on", 5230.5, 0.75, Q, 0.75, US_RESET, 0},
        {"reset near zero (<= 1% of prev)", 80000.0, 300.0, 12 * H, 300.0, US_RESET, 0},
        /* 99999.75 -> 0.5 on a 100000 register: 0.25 to the wrap, 0.5 after it */
        {"rollover 10^5", 99999.75, 0.5, Q, 0.75, US_ROLLOVER, 0},
        /* a 99999.9 display counter: (100000 - 99999.9) + 0.3 = 0.4 */
        {"rollover 99999.9", 99999.9, 0.3, Q, 0.4, US_ROLLOVER, 1e-9},
        /* u32 register scaled 0.01: wraps at 42949672.96; (42949672.96 - 42949672.5) + 0.25 */
        {"rollover 2^32 * 0.01", 42949672.5, 0.25, Q, 0.71, US_ROLLOVER, 1e-6},
        /* u32 scaled 0.1: 429496729.6 */
        {"rollover 2^32 * 0.1", 429496729.0, 1.0, H, 1.6, US_ROLLOVER, 1e-6},
        /* u16 in kWh: 65536 */
        {"rollover 2^16", 65535.5, 0.25, Q, 0.75, US_ROLLOVER, 0},
        /* far below any boundary and not near zero: a new counter */
        {"replaced, large drop", 5227.25, 100.0, Q, 0, US_REPLACED, 0},
        {"replaced, small drop (glitch)", 5227.25, 5227.0, Q, 0, US_REPLACED, 0},
        /* 2000 kWh in 15 minutes is 8000 kW: not plausible, a new (higher) counter */
        {"replaced, implausible rise", 5000.0, 7000.0, Q, 0, US_REPLACED, 0},
        /* just under 1000 kW for 15 min = 250 kWh */
        {"plausible big rise", 5000.0, 5250.0, Q, 250.0, US_NORMAL, 0},
        /* a rollover that would exceed the power limit is a new counter too */
        {"implausible rollover", 99999.75, 900.0, Q, 0, US_REPLACED, 0},
        {"NaN", 1.0, 0.0 / 0.0, Q, 0, US_REPLACED, 0},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        enum usage_step k;
        double d = usage_counter_step(t[i].prev, t[i].cur, t[i].dt, MAX_KW, &k);
        assert_double_near_ctx(t[i].what, d, t[i].want, t[i].eps);
        assert_i64_eq_ctx(t[i].what, k, t[i].kind);
        assert_true(d >= 0);
    }
}

static void test_balance_steps(void **state)
{
    double use, top;

    usage_balance_step(80.0, 79.5, &use, &top);
    assert_double_eq(use, 0.5);
    assert_double_eq(top, 0);
    /* a top-up of 50 with 0.5 used in the same interval: a rise of 49.5, never negative use */
    usage_balance_step(30.5, 80.0, &use, &top);
    assert_double_eq(use, 0);
    assert_double_eq(top, 49.5);
}

static void test_forecast(void **state)
{
    double per_day, left, abs, pct;
    bool has;

    /* 97.0 used over 2 days: 48.5 a day; 32.5 left lasts 32.5 / 48.5 = 0.6701... days */
    usage_forecast(32.5, 97.0, 2.0, &per_day, &left);
    assert_double_eq(per_day, 48.5);
    assert_double_near_ctx("days left", left, 32.5 / 48.5, 1e-12);
    usage_forecast(10.0, 0, 7.0, &per_day, &left);
    assert_double_eq(left, -1); /* nothing used: no forecast */
    usage_change(30.0, 24.0, &abs, &pct, &has);
    assert_double_eq(abs, 6.0);
    assert_double_eq(pct, 25.0);
    assert_true(has);
    usage_change(3.0, 0, &abs, &pct, &has);
    assert_false(has);
}

/* ---- the golden table ---- */

struct fixture {
    const tz_t *tz;
    struct rollup_row *m5, *h1, *d1;
    int n5, nh, nd;
    struct usage_gap *gaps;
    int ng;
    int64_t first, last;
};

static struct rollup_point arrivals[NMAX * 2];
static int narr;

/* Appends reading k of a series starting at s (k intervals later, 7 s past) with value v. */
static void add(int64_t s, int k, double v)
{
    assert_true(narr < NMAX * 2);
    arrivals[narr].ts = s + k * Q + OFF;
    arrivals[narr].v = v;
    narr++;
}

/* Shuffles arrivals[from..narr) with a fixed LCG: out-of-order arrival. */
static void shuffle(int from)
{
    uint32_t x = 12345;
    for (int i = narr - 1; i > from; i--) {
        int j;
        struct rollup_point t;
        x = x * 1103515245u + 12345u;
        j = from + (int)((x >> 8) % (uint32_t)(i - from + 1));
        t = arrivals[i];
        arrivals[i] = arrivals[j];
        arrivals[j] = t;
    }
}

/* Folds rows r[0..n) with from <= ts < to into acc. */
static void fold(const struct rollup_row *r, int n, int64_t from, int64_t to,
                 struct rollup_row *acc)
{
    memset(acc, 0, sizeof(*acc));
    acc->ts = from;
    for (int i = 0; i < n; i++)
        if (r[i].ts >= from && r[i].ts < to)
            rollup_merge(acc, &r[i]);
}

/* Builds the three tiers from the arrivals, as the store does. */
static void build(struct fixture *f, const char *zone, int kind, const int64_t *replaced, int nrep)
{
    struct rollup_params pr = {.kind = kind,
                               .gap_ms = GAP_MS,
                               .max_power_kw = MAX_KW,
                               .replaced = replaced,
                               .nreplaced = nrep};
    struct rollup_point *p = malloc((size_t)narr * sizeof(*p));
    int n;

    memset(f, 0, sizeof(*f));
    assert_int_equal(tz_get(zone, &f->tz), 0);
    assert_non_null(p);
    memcpy(p, arrivals, (size_t)narr * sizeof(*p));
    n = rollup_sort_unique(p, narr);
    assert_true(n > 0);
    f->first = p[0].ts;
    f->last = p[n - 1].ts;
    f->m5 = calloc((size_t)n, sizeof(*f->m5));
    f->gaps = calloc((size_t)n, sizeof(*f->gaps));
    f->h1 = calloc((size_t)n, sizeof(*f->h1));
    f->d1 = calloc((size_t)n, sizeof(*f->d1));
    assert_true(f->m5 && f->gaps && f->h1 && f->d1);
    rollup_build(&pr, NULL, p, n, ROLLUP_5M_MS, f->m5, &f->n5, f->gaps, &f->ng);
    for (int64_t h = f->m5[0].ts - f->m5[0].ts % H; h <= f->last; h += H) {
        fold(f->m5, f->n5, h, h + H, &f->h1[f->nh]);
        if (f->h1[f->nh].n > 0)
            f->nh++;
    }
    for (int64_t d = tz_floor(f->tz, f->first, TZ_DAY); d <= f->last;) {
        int64_t e = tz_next(f->tz, d, TZ_DAY);
        if (tz_whole_hours(f->tz, d, e))
            fold(f->h1, f->nh, d, e, &f->d1[f->nd]);
        else
            fold(f->m5, f->n5, d, e, &f->d1[f->nd]);
        if (f->d1[f->nd].n > 0)
            f->nd++;
        d = e;
    }
    free(p);
    narr = 0;
}

static void release(struct fixture *f)
{
    free(f->m5);
    free(f->h1);
    free(f->d1);
    free(f->gaps);
}

/* Usage in local buckets of unit u over [from, to), from the tier the API reads. */
static int usage(const struct fixture *f, enum tz_unit u, int64_t from, int64_t to,
                 struct usage_bucket *out, struct usage_totals *tot)
{
    int64_t b[2000];
    const struct rollup_row *rows;
    struct usage_in_row *in;
    int nb = 0, nr;

    b[0] = tz_floor(f->tz, from, u);
    while (b[nb] < to) {
        assert_true(nb < 1999);
        b[nb + 1] = tz_next(f->tz, b[nb], u);
        nb++;
    }
    if (u == TZ_30MIN || (u == TZ_HOUR && !tz_whole_hours(f->tz, b[0], b[nb]))) {
        rows = f->m5;
        nr = f->n5;
    } else if (u == TZ_HOUR) {
        rows = f->h1;
        nr = f->nh;
    } else {
        rows = f->d1;
        nr = f->nd;
    }
    in = calloc((size_t)nr, sizeof(*in));
    assert_non_null(in);
    for (int i = 0; i < nr; i++) {
        in[i].ts = rows[i].ts;
        in[i].n = rows[i].n;
        in[i].delta = rows[i].delta;
    }
    usage_buckets(b, nb, in, nr, f->gaps, f->ng, f->first, f->last, GAP_MS, out, tot);
    free(in);
    return nb;
}

#define NONE -1.0 /* energy null: no data */

struct want {
    const char *start; /* the bucket's local start as the API prints it */
    double energy;     /* NONE: null */
    bool complete;
};

/* Checks the buckets of [from, to) against w[0..n) exactly, and that none is negative. */
static void expect(const struct fixture *f, const char *what, enum tz_unit u, int64_t from,
                   int64_t to, const struct want *w, int n, double total, double gap_energy)
{
    struct usage_bucket out[2000];
    struct usage_totals tot;
    char ctx[160], buf[TZ_ISO_MAX];
    int nb = usage(f, u, from, to, out, &tot);

    snprintf(ctx, sizeof(ctx), "%s: bucket count", what);
    assert_i64_eq_ctx(ctx, nb, n);
    for (int i = 0; i < nb; i++) {
        tz_format(f->tz, out[i].start, buf, sizeof(buf));
        snprintf(ctx, sizeof(ctx), "%s: bucket %d (%s)", what, i, buf);
        assert_string_equal(buf, w[i].start);
        assert_i64_eq_ctx(ctx, out[i].has, w[i].energy != NONE);
        if (out[i].has) {
            assert_double_eq_ctx(ctx, out[i].energy, w[i].energy);
            assert_true(out[i].energy >= 0);
        }
        assert_i64_eq_ctx(ctx, out[i].complete, w[i].complete);
    }
    snprintf(ctx, sizeof(ctx), "%s: total", what);
    assert_double_eq_ctx(ctx, tot.energy, total);
    snprintf(ctx, sizeof(ctx), "%s: gap energy", what);
    assert_double_eq_ctx(ctx, tot.gap_energy, gap_energy);
}

/*
 * Europe/Berlin: readings k = 0..23524 from S = 2026-02-28 23:00Z (03-01 00:00 CET) to
 * 2026-11-01 00:00:07Z, value 1000 + 0.25k; a counter reset at k = 2644 (03-28 12:00:07Z)
 * to 0.25, counting on from there; every reading of local 03-29 sent twice, the copy
 * (value + 100) after the original; all arrivals shuffled.
 */
static void test_berlin(void **state)
{
    const int64_t s = utc(2026, 2, 28, 23, 0);
    struct fixture f;

    for (int k = 0; k <= 23524; k++)
        add(s, k, k < 2644 ? 1000 + 0.25 * k : 0.25 + 0.25 * (k - 2644));
    shuffle(0);
    for (int k = 0; k <= 23524; k++) /* duplicates of local 03-29, arriving later */
        if (s + k * Q >= utc(2026, 3, 28, 23, 0) && s + k * Q < utc(2026, 3, 29, 22, 0))
            add(s, k, 5000 + k);
    build(&f, "Europe/Berlin", QTY_COUNTER, NULL, 0);

    {
        /* 03-29: clocks 02:00 CET -> 03:00 CEST; 23 local hours of 1.0; the copies change
         * nothing */
        static const struct want w[] = {
            {"2026-03-29T00:00:00+01:00", 1.0, true},
            {"2026-03-29T01:00:00+01:00", 1.0, true},
            {"2026-03-29T03:00:00+02:00", 1.0, true},
            {"2026-03-29T04:00:00+02:00", 1.0, true},
        };
        expect(&f, "berlin spring hours", TZ_HOUR, utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 3, 0),
               w, 4, 4.0, 0);
    }
    {
        /* days: 03-28 has the reset (its step is the 0.25 counted since the reset: 24.0),
         * 03-29 has 23 hours, 03-30 24 */
        static const struct want w[] = {
            {"2026-03-28T00:00:00+01:00", 24.0, true},
            {"2026-03-29T00:00:00+01:00", 23.0, true},
            {"2026-03-30T00:00:00+02:00", 24.0, true},
        };
        expect(&f, "berlin spring days", TZ_DAY, utc(2026, 3, 27, 23, 0), utc(2026, 3, 30, 22, 0),
               w, 3, 71.0, 0);
    }
    {
        /* 10-25: clocks 03:00 CEST -> 02:00 CET: 25 hours; 02:00 twice */
        static const struct want w[] = {
            {"2026-10-25T01:00:00+02:00", 1.0, true},
            {"2026-10-25T02:00:00+02:00", 1.0, true},
            {"2026-10-25T02:00:00+01:00", 1.0, true},
            {"2026-10-25T03:00:00+01:00", 1.0, true},
        };
        expect(&f, "berlin autumn hours", TZ_HOUR, utc(2026, 10, 24, 23, 0),
               utc(2026, 10, 25, 3, 0), w, 4, 4.0, 0);
    }
    {
        static const struct want w[] = {
            {"2026-10-24T00:00:00+02:00", 24.0, true},
            {"2026-10-25T00:00:00+02:00", 25.0, true},
            {"2026-10-26T00:00:00+01:00", 24.0, true},
        };
        expect(&f, "berlin autumn days", TZ_DAY, utc(2026, 10, 23, 22, 0), utc(2026, 10, 26, 23, 0),
               w, 3, 73.0, 0);
    }
    {
        /* weeks (Monday): 03-23..03-29 = 6 * 24 + 23 = 167; 10-19..10-25 = 6 * 24 + 25 = 169 */
        static const struct want w1[] = {{"2026-03-23T00:00:00+01:00", 167.0, true}};
        static const struct want w2[] = {{"2026-10-19T00:00:00+02:00", 169.0, true}};
        expect(&f, "berlin spring week", TZ_WEEK, utc(2026, 3, 25, 0, 0), utc(2026, 3, 25, 1, 0),
               w1, 1, 167.0, 0);
        expect(&f, "berlin autumn week", TZ_WEEK, utc(2026, 10, 20, 0, 0), utc(2026, 10, 20, 1, 0),
               w2, 1, 169.0, 0);
    }
    {
        /* months: March = 31 * 24 - 1 = 743 hours, less the first reading's missing step:
         * 742.75; April = 720; ...; October = 31 * 24 + 1 = 745; November: only the five
         * readings of 11-01 00:00..01:00 CET so far: 1.25, not complete */
        static const struct want w[] = {
            {"2026-03-01T00:00:00+01:00", 742.75, true}, {"2026-04-01T00:00:00+02:00", 720.0, true},
            {"2026-05-01T00:00:00+02:00", 744.0, true},  {"2026-06-01T00:00:00+02:00", 720.0, true},
            {"2026-07-01T00:00:00+02:00", 744.0, true},  {"2026-08-01T00:00:00+02:00", 744.0, true},
            {"2026-09-01T00:00:00+02:00", 720.0, true},  {"2026-10-01T00:00:00+02:00", 745.0, true},
            {"2026-11-01T00:00:00+01:00", 1.25, false},
        };
        /* 742.75 + 720 + 744 + 720 + 744 + 744 + 720 + 745 + 1.25 = 5881 */
        expect(&f, "berlin months", TZ_MONTH, utc(2026, 3, 1, 0, 0), utc(2026, 11, 1, 0, 0), w, 9,
               5881.0, 0);
    }
    {
        /* the day before the data: null, not 0 */
        static const struct want w[] = {
            {"2026-02-28T00:00:00+01:00", NONE, false},
            {"2026-03-01T00:00:00+01:00", 23.75, true}, /* 95 steps: the first has none */
        };
        expect(&f, "berlin start", TZ_DAY, utc(2026, 2, 27, 23, 0), utc(2026, 3, 1, 23, 0), w, 2,
               23.75, 0);
    }
    release(&f);
}

/*
 * America/New_York: k = 0..24192 from S = 2026-03-01 05:00Z (00:00 EST), value
 * (99000 + 0.25k) mod 100000: the register wraps to 0.0 at k = 4000 (04-11 21:00:07Z); the
 * step 99999.75 -> 0.0 is a rollover worth 0.25. Readings k = 23524..23535 (11-01
 * 06:00:07Z .. 08:45:07Z) never arrive: a gap of 13 steps = 3.25 kWh from 05:45:07Z to
 * 09:00:07Z, on the day clocks go back (02:00 EDT -> 01:00 EST at 06:00Z).
 */
static void test_new_york(void **state)
{
    const int64_t s = utc(2026, 3, 1, 5, 0);
    struct fixture f;

    for (int k = 0; k <= 24192; k++) {
        double v = 99000 + 0.25 * k;
        if (k >= 23524 && k <= 23535)
            continue;
        add(s, k, v >= 100000 ? v - 100000 : v);
    }
    shuffle(0);
    build(&f, "America/New_York", QTY_COUNTER, NULL, 0);
    {
        /* 03-08: 02:00 EST -> 03:00 EDT, 23 hours */
        static const struct want w[] = {
            {"2026-03-07T00:00:00-05:00", 24.0, true},
            {"2026-03-08T00:00:00-05:00", 23.0, true},
            {"2026-03-09T00:00:00-04:00", 24.0, true},
        };
        expect(&f, "new york spring days", TZ_DAY, utc(2026, 3, 7, 5, 0), utc(2026, 3, 10, 4, 0), w,
               3, 71.0, 0);
    }
    {
        /* the rollover day 04-11 and April: nothing lost at the wrap */
        static const struct want w[] = {{"2026-04-11T00:00:00-04:00", 24.0, true}};
        static const struct want m[] = {{"2026-04-01T00:00:00-04:00", 720.0, true}};
        expect(&f, "new york rollover day", TZ_DAY, utc(2026, 4, 11, 4, 0), utc(2026, 4, 12, 4, 0),
               w, 1, 24.0, 0);
        expect(&f, "new york april", TZ_MONTH, utc(2026, 4, 1, 4, 0), utc(2026, 4, 2, 4, 0), m, 1,
               720.0, 0);
    }
    {
        /* hours of 11-01 around the gap:
         *   01:00 EDT [05Z, 06Z): its 4 steps, 1.0, but the gap starts at 05:45:07: incomplete
         *   01:00 EST, 02:00 EST, 03:00 EST: no readings: null
         *   04:00 EST [09Z, 10Z): 09:00:07 ends the gap (no step), 3 steps: 0.75, incomplete
         * total 1.0 (00:00 EDT) + 1.0 + 0.75 + 1.0 (05:00 EST) = 3.75; the gap's 3.25 is in
         * no hour: gap_energy */
        static const struct want w[] = {
            {"2026-11-01T00:00:00-04:00", 1.0, true},   {"2026-11-01T01:00:00-04:00", 1.0, false},
            {"2026-11-01T01:00:00-05:00", NONE, false}, {"2026-11-01T02:00:00-05:00", NONE, false},
            {"2026-11-01T03:00:00-05:00", NONE, false}, {"2026-11-01T04:00:00-05:00", 0.75, false},
            {"2026-11-01T05:00:00-05:00", 1.0, true},
        };
        expect(&f, "new york gap hours", TZ_HOUR, utc(2026, 11, 1, 4, 0), utc(2026, 11, 1, 11, 0),
               w, 7, 3.75, 3.25);
    }
    {
        /* the day 11-01 has 25 hours; the gap lies inside it, so its 3.25 counts there and
         * the day is complete: 25.0. The week 10-26..11-01 = 6 * 24 + 25 = 169. */
        static const struct want d[] = {
            {"2026-10-31T00:00:00-04:00", 24.0, true},
            {"2026-11-01T00:00:00-04:00", 25.0, true},
            {"2026-11-02T00:00:00-05:00", 24.0, true},
        };
        static const struct want wk[] = {{"2026-10-26T00:00:00-04:00", 169.0, true}};
        expect(&f, "new york gap days", TZ_DAY, utc(2026, 10, 31, 4, 0), utc(2026, 11, 3, 5, 0), d,
               3, 73.0, 0);
        expect(&f, "new york gap week", TZ_WEEK, utc(2026, 10, 28, 0, 0), utc(2026, 10, 28, 1, 0),
               wk, 1, 169.0, 0);
    }
    release(&f);
}

/*
 * Asia/Kolkata (+05:30, local hours start at hh:30Z): k = 0..2688 from S = 2026-01-31
 * 18:30Z (02-01 00:00 IST), value 5000 + 0.25k; at k = 910 (02-10 06:00:07Z, 11:30:07 IST)
 * the meter is swapped for one reading 100.0, counting on from there: a drop from 5227.25
 * that is neither near zero (100 > 1% of 5227.25) nor a rollover: a new counter, step 0.
 */
static void test_kolkata(void **state)
{
    const int64_t s = utc(2026, 1, 31, 18, 30);
    struct fixture f;

    for (int k = 0; k <= 2688; k++)
        add(s, k, k < 910 ? 5000 + 0.25 * k : 100.0 + 0.25 * (k - 910));
    shuffle(0);
    build(&f, "Asia/Kolkata", QTY_COUNTER, NULL, 0);
    {
        /* local hour 11:00 IST = [05:30Z, 06:30Z): 05:30:07, 05:45:07, 06:00:07 (the new
         * meter: 0), 06:15:07: 0.75 */
        static const struct want w[] = {
            {"2026-02-10T10:00:00+05:30", 1.0, true},
            {"2026-02-10T11:00:00+05:30", 0.75, true},
            {"2026-02-10T12:00:00+05:30", 1.0, true},
        };
        expect(&f, "kolkata hours", TZ_HOUR, utc(2026, 2, 10, 4, 30), utc(2026, 2, 10, 7, 30), w, 3,
               2.75, 0);
    }
    {
        /* 30-minute buckets: 11:30 IST = [06:00Z, 06:30Z): 0 + 0.25 */
        static const struct want w[] = {
            {"2026-02-10T11:00:00+05:30", 0.5, true},
            {"2026-02-10T11:30:00+05:30", 0.25, true},
            {"2026-02-10T12:00:00+05:30", 0.5, true},
        };
        expect(&f, "kolkata half hours", TZ_30MIN, utc(2026, 2, 10, 5, 30), utc(2026, 2, 10, 7, 0),
               w, 3, 1.25, 0);
    }
    {
        /* day 02-10: 24 - 0.25 = 23.75; February: 28 * 24 = 672, less the first reading's
         * step and the swap's: 671.5 */
        static const struct want d[] = {
            {"2026-02-09T00:00:00+05:30", 24.0, true},
            {"2026-02-10T00:00:00+05:30", 23.75, true},
        };
        static const struct want m[] = {{"2026-02-01T00:00:00+05:30", 671.5, true}};
        expect(&f, "kolkata days", TZ_DAY, utc(2026, 2, 8, 18, 30), utc(2026, 2, 10, 18, 30), d, 2,
               47.75, 0);
        expect(&f, "kolkata month", TZ_MONTH, utc(2026, 2, 5, 0, 0), utc(2026, 2, 5, 1, 0), m, 1,
               671.5, 0);
    }
    release(&f);
}

/*
 * Asia/Kathmandu (+05:45, local hours start at hh:15Z): k = 0..1344 from S = 2026-01-04
 * 18:15Z (01-05 00:00 NPT, a Monday), value 2000 + 0.25k; the registry records a
 * replacement at 01-07 06:20Z, and from k = 241 (06:30:07Z) the new meter reads
 * 7.0 + 0.25(k - 241). By the values alone the drop to 7.0 (<= 1% of 2060) would be a
 * reset worth 7.0; the registry's event makes the step 0.
 */
static void test_kathmandu(void **state)
{
    const int64_t s = utc(2026, 1, 4, 18, 15), replaced = utc(2026, 1, 7, 6, 20);
    struct fixture f;

    for (int k = 0; k <= 1344; k++)
        add(s, k, k < 241 ? 2000 + 0.25 * k : 7.0 + 0.25 * (k - 241));
    shuffle(0);
    build(&f, "Asia/Kathmandu", QTY_COUNTER, &replaced, 1);
    {
        /* 12:00 NPT = [06:15Z, 07:15Z): 06:15:07, 06:30:07 (replaced: 0), 06:45:07, 07:00:07 */
        static const struct want w[] = {
            {"2026-01-07T11:00:00+05:45", 1.0, true},
            {"2026-01-07T12:00:00+05:45", 0.75, true},
            {"2026-01-07T13:00:00+05:45", 1.0, true},
        };
        expect(&f, "kathmandu hours", TZ_HOUR, utc(2026, 1, 7, 5, 15), utc(2026, 1, 7, 8, 15), w, 3,
               2.75, 0);
    }
    {
        /* weeks: 01-05..01-11: 168 - 0.25 (first reading) - 0.25 (replacement) = 167.5;
         * 01-12..01-18: 168, complete up to the last reading at 01-19 00:00:07 NPT */
        static const struct want w[] = {
            {"2026-01-05T00:00:00+05:45", 167.5, true},
            {"2026-01-12T00:00:00+05:45", 168.0, true},
        };
        expect(&f, "kathmandu weeks", TZ_WEEK, utc(2026, 1, 5, 0, 0), utc(2026, 1, 13, 0, 0), w, 2,
               335.5, 0);
    }
    {
        static const struct want d[] = {{"2026-01-07T00:00:00+05:45", 23.75, true}};
        expect(&f, "kathmandu day", TZ_DAY, utc(2026, 1, 7, 0, 0), utc(2026, 1, 7, 1, 0), d, 1,
               23.75, 0);
    }
    release(&f);
}

/*
 * Australia/Adelaide: summer time (+10:30) ends 2026-04-05 03:00 -> 02:00 (+09:30), and
 * starts again 2026-10-04 02:00 -> 03:00. Counter: k = 0..195 from S = 2026-04-03 13:30Z
 * (04-04 00:00 ACDT), then nothing until k = 17476 (10-02 14:30:07Z, 10-03 00:00:07
 * ACST), then k = 17476..17664 (to 10-05 00:00:07 ACDT); value 500 + 0.25k throughout, so
 * the gap's step is 0.25 * (17476 - 195) = 4320.25. Prepaid balance on the first part:
 * 80 - 0.5k, topped up by 50 at k = 100 (in the interval that also used 0.5).
 */
static void test_adelaide(void **state)
{
    const int64_t s = utc(2026, 4, 3, 13, 30);
    struct fixture f;

    for (int k = 0; k <= 17664; k++)
        if (k <= 195 || k >= 17476)
            add(s, k, 500 + 0.25 * k);
    shuffle(0);
    build(&f, "Australia/Adelaide", QTY_COUNTER, NULL, 0);
    {
        /* 04-04: 95 steps (the first reading has none) = 23.75; 04-05: 25 hours, 100 steps
         * = 25.0, but the gap starts at its last reading: incomplete; 04-06: nothing */
        static const struct want w[] = {
            {"2026-04-04T00:00:00+10:30", 23.75, true},
            {"2026-04-05T00:00:00+10:30", 25.0, false},
            {"2026-04-06T00:00:00+09:30", NONE, false},
        };
        expect(&f, "adelaide april days", TZ_DAY, utc(2026, 4, 3, 13, 30), utc(2026, 4, 6, 14, 30),
               w, 3, 48.75, 0);
    }
    {
        /* 10-03: the gap ends at its first reading: 95 steps = 23.75, incomplete;
         * 10-04: 23 hours = 23.0; 10-05: its first reading's step 0.25, incomplete */
        static const struct want w[] = {
            {"2026-10-03T00:00:00+09:30", 23.75, false},
            {"2026-10-04T00:00:00+09:30", 23.0, true},
            {"2026-10-05T00:00:00+10:30", 0.25, false},
        };
        /* the range ends where the gap ends: its 4320.25 is the range's gap energy */
        expect(&f, "adelaide october days", TZ_DAY, utc(2026, 10, 2, 14, 30),
               utc(2026, 10, 5, 13, 30), w, 3, 47.0, 4320.25);
    }
    {
        /* months: April 48.75 and October 47.0, both incomplete; May..September no data */
        static const struct want w[] = {
            {"2026-04-01T00:00:00+10:30", 48.75, false}, {"2026-05-01T00:00:00+09:30", NONE, false},
            {"2026-06-01T00:00:00+09:30", NONE, false},  {"2026-07-01T00:00:00+09:30", NONE, false},
            {"2026-08-01T00:00:00+09:30", NONE, false},  {"2026-09-01T00:00:00+09:30", NONE, false},
            {"2026-10-01T00:00:00+09:30", 47.0, false},
        };
        expect(&f, "adelaide months", TZ_MONTH, utc(2026, 4, 1, 0, 0), utc(2026, 10, 15, 0, 0), w,
               7, 95.75, 4320.25);
    }
    release(&f);

    /* the balance: use 0.5 a step, the top-up step a rise of 49.5: top-up, no use */
    for (int k = 0; k <= 195; k++)
        add(s, k, k < 100 ? 80 - 0.5 * k : 130 - 0.5 * k);
    build(&f, "Australia/Adelaide", QTY_BALANCE, NULL, 0);
    {
        /* 04-04: 95 steps of 0.5 = 47.5; 04-05: 100 steps, one the top-up: 99 * 0.5 = 49.5 */
        static const struct want w[] = {
            {"2026-04-04T00:00:00+10:30", 47.5, true},
            {"2026-04-05T00:00:00+10:30", 49.5, true},
        };
        struct rollup_row day;
        expect(&f, "adelaide balance use", TZ_DAY, utc(2026, 4, 3, 13, 30), utc(2026, 4, 5, 14, 0),
               w, 2, 97.0, 0);
        fold(f.d1, f.nd, utc(2026, 4, 4, 13, 30), utc(2026, 4, 5, 14, 30), &day);
        assert_double_eq(day.topup, 49.5);
        assert_double_eq(day.last, 32.5); /* 130 - 0.5 * 195 */
        assert_double_eq(f.d1[0].topup, 0);
    }
    release(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_steps), cmocka_unit_test(test_balance_steps),
        cmocka_unit_test(test_forecast),      cmocka_unit_test(test_berlin),
        cmocka_unit_test(test_new_york),      cmocka_unit_test(test_kolkata),
        cmocka_unit_test(test_kathmandu),     cmocka_unit_test(test_adelaide),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tz_cache_clear();
    return rc;
}
