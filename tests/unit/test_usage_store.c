/*
 * test_usage_store: the store's rollups (cloud/store.c, "registry, rollups and usage")
 * against rollups built from scratch with the pure code (rollup.h). Readings of one meter
 * arrive in shuffled batches of random sizes, one batch twice, a late one days after the
 * rest; after every way of arriving, the 5-minute, hourly and daily rows and the gaps in the
 * store must be exactly those of the sorted readings. Then the site's time zone changes
 * (daily rows rebuilt), a replacement is recorded, and the retention tiers run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "quantities.h"
#include "rollup.h"
#include "store.h"
#include "tz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIN 60000LL
#define N 4400 /* about 3 days of 1-minute readings */
#define ROWS 20000

static char dir[64], path[96];
static store_t *st;
static struct reading rd[N];
static int e_q;

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    int64_t yy = y - (mo <= 2), era = (yy >= 0 ? yy : yy - 399) / 400, yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    return days * 86400000 + h * 3600000LL + mi * MIN;
}

static int setup(void **state)
{
    struct store_site s;
    struct store_reg g;
    char err[200];

    snprintf(dir, sizeof(dir), "/tmp/test_usage_store.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/cloud.db", dir);
    assert_int_equal(store_open(path, &st, err, sizeof(err)), 0);
    store_usage_config(st, 15 * MIN, 1000, 0);
    memset(&s, 0, sizeof(s));
    snprintf(s.id, sizeof(s.id), "home");
    snprintf(s.tz, sizeof(s.tz), "Europe/Berlin");
    assert_int_equal(store_site_put(st, &s, true, 1), 0);
    assert_int_equal(store_site_put(st, &s, true, 1), -EEXIST);
    memset(&g, 0, sizeof(g));
    snprintf(g.id, sizeof(g.id), "m1");
    snprintf(g.gateway, sizeof(g.gateway), "gw");
    snprintf(g.site, sizeof(g.site), "home");
    assert_int_equal(store_reg_put(st, &g, true, 1), 0);
    snprintf(g.site, sizeof(g.site), "nosuch");
    assert_int_equal(store_reg_put(st, &g, false, 1), -ENXIO);
    e_q = qty_index("energy_import");
    return 0;
}

static int teardown(void **state)
{
    char cmd[160];
    store_close(st);
    tz_cache_clear();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Readings around Berlin's spring switch: 1-minute steps of varying size, a reset, a
 * 40-minute gap, and power. */
static void make_readings(void)
{
    int64_t s = utc(2026, 3, 27, 22, 0) + 2500;
    double e = 100;
    int p = qty_index("power");

    for (int k = 0; k < N; k++) {
        memset(&rd[k], 0, sizeof(rd[k]));
        snprintf(rd[k].meter, sizeof(rd[k].meter), "m1");
        rd[k].ts_ms = s + k * MIN + (k >= 2000 ? 40 * MIN : 0); /* the gap before k = 2000 */
        rd[k].ok = true;
        e = k == 1500 ? 0.004 : e + 0.001 * (k % 7 + 1); /* k = 1500: reset */
        rd[k].values[e_q] = e;
        rd[k].values[p] = 100 + (k * 37) % 900;
        rd[k].present = 1u << e_q | 1u << p;
    }
}

static uint32_t lcg = 99;
static int rnd(int n)
{
    lcg = lcg * 1103515245u + 12345u;
    return (int)((lcg >> 8) % (uint32_t)n);
}

static void put(const struct reading *r, int n)
{
    struct store_put_result res;
    assert_int_equal(
        store_put_batch(st, "gw", "0123456789abcdef", r, n, utc(2026, 4, 1, 0, 0), &res), 0);
}

static int cmp_ts(const void *a, const void *b)
{
    const struct reading *x = a, *y = b;
    return x->ts_ms < y->ts_ms ? -1 : x->ts_ms > y->ts_ms;
}

static void same_row(const char *what, const struct rollup_row *a, const struct rollup_row *b)
{
    assert_i64_eq_ctx(what, a->ts, b->ts);
    assert_i64_eq_ctx(what, a->n, b->n);
    assert_double_eq_ctx(what, a->min, b->min);
    assert_double_eq_ctx(what, a->max, b->max);
    assert_double_near_ctx(what, a->sum, b->sum, 1e-9);
    assert_double_eq_ctx(what, a->first, b->first);
    assert_double_eq_ctx(what, a->last, b->last);
    assert_i64_eq_ctx(what, a->first_ts, b->first_ts);
    assert_i64_eq_ctx(what, a->last_ts, b->last_ts);
    assert_double_near_ctx(what, a->delta, b->delta, 1e-9);
    assert_i64_eq_ctx(what, a->resets, b->resets);
}

/* Compares the store's rows of quantity q with rows built from scratch in zone tzname. */
static void check(int q, const char *tzname, const int64_t *replaced, int nrep)
{
    static struct rollup_point pts[N];
    static struct rollup_row want5[N], want1h[N], want1d[64], got[ROWS];
    static struct usage_gap wgaps[N], ggaps[N];
    struct rollup_params pr = {.kind = qty_at(q)->kind,
                               .gap_ms = 15 * MIN,
                               .max_power_kw = 1000,
                               .replaced = replaced,
                               .nreplaced = nrep};
    struct store_meter_ctx ctx;
    const tz_t *tz;
    int n5, ng, nh = 0, nd = 0, n;
    char what[64];

    assert_int_equal(tz_get(tzname, &tz), 0);
    for (int k = 0; k < N; k++) {
        pts[k].ts = rd[k].ts_ms;
        pts[k].v = rd[k].values[q];
    }
    rollup_build(&pr, NULL, pts, N, ROLLUP_5M_MS, want5, &n5, wgaps, &ng);
    for (int64_t h = want5[0].ts - want5[0].ts % ROLLUP_1H_MS; h <= pts[N - 1].ts;
         h += ROLLUP_1H_MS) {
        struct rollup_row acc;
        memset(&acc, 0, sizeof(acc));
        acc.ts = h;
        for (int i = 0; i < n5; i++)
            if (want5[i].ts >= h && want5[i].ts < h + ROLLUP_1H_MS)
                rollup_merge(&acc, &want5[i]);
        if (acc.n)
            want1h[nh++] = acc;
    }
    for (int64_t d = tz_floor(tz, pts[0].ts, TZ_DAY); d <= pts[N - 1].ts;) {
        int64_t e = tz_next(tz, d, TZ_DAY);
        struct rollup_row acc;
        memset(&acc, 0, sizeof(acc));
        acc.ts = d;
        /* as the store: from hourly rows where the offset is whole hours, else 5-minute */
        bool hours = tz_whole_hours(tz, d, e);
        const struct rollup_row *src = hours ? want1h : want5;
        for (int i = 0; i < (hours ? nh : n5); i++)
            if (src[i].ts >= d && src[i].ts < e)
                rollup_merge(&acc, &src[i]);
        if (acc.n)
            want1d[nd++] = acc;
        d = e;
    }
    assert_int_equal(store_meter_ctx(st, "m1", &ctx), 0);
    assert_int_equal(store_rollups(st, ctx.id, q, STORE_TIER_5M, 0, INT64_MAX, ROWS, got, &n), 0);
    assert_int_equal(n, n5);
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof(what), "5m row %d", i);
        same_row(what, &got[i], &want5[i]);
    }
    assert_int_equal(store_rollups(st, ctx.id, q, STORE_TIER_1H, 0, INT64_MAX, ROWS, got, &n), 0);
    assert_int_equal(n, nh);
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof(what), "1h row %d", i);
        same_row(what, &got[i], &want1h[i]);
    }
    assert_int_equal(store_rollups(st, ctx.id, q, STORE_TIER_1D, 0, INT64_MAX, ROWS, got, &n), 0);
    assert_int_equal(n, nd);
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof(what), "1d row %d (%s)", i, tzname);
        same_row(what, &got[i], &want1d[i]);
    }
    assert_int_equal(store_gaps(st, ctx.id, q, INT64_MIN, INT64_MAX, N, ggaps, &n), 0);
    assert_int_equal(n, ng);
    for (int i = 0; i < n; i++) {
        assert_i64_eq(ggaps[i].from_ts, wgaps[i].from_ts);
        assert_i64_eq(ggaps[i].to_ts, wgaps[i].to_ts);
        assert_double_near_ctx("gap", ggaps[i].delta, wgaps[i].delta, 1e-9);
    }
}

static void test_shuffled_batches(void **state)
{
    static struct reading sh[N];
    int late = 1234, i = 0;

    make_readings();
    memcpy(sh, rd, sizeof(rd));
    for (int k = N - 1; k > 0; k--) {
        int j = rnd(k + 1);
        struct reading t = sh[k];
        sh[k] = sh[j];
        sh[j] = t;
    }
    /* most readings in shuffled batches of 1..300, the one at `late` last of all */
    while (i < N) {
        int n = 1 + rnd(300), m = 0;
        static struct reading b[300];
        for (; i < N && m < n; i++)
            if (sh[i].ts_ms != rd[late].ts_ms)
                b[m++] = sh[i];
        put(b, m);
        if (i > N / 2 && i - m <= N / 2)
            put(b, m); /* a batch delivered twice */
    }
    qsort(sh, N, sizeof(sh[0]), cmp_ts);
    put(&rd[late], 1);
    check(e_q, "Europe/Berlin", NULL, 0);
    check(qty_index("power"), "Europe/Berlin", NULL, 0);
}

static void test_tz_change_and_replacement(void **state)
{
    struct store_site s;
    int64_t repl = rd[3000].ts_ms - 1000;

    assert_int_equal(store_site_get(st, "home", &s), 0);
    snprintf(s.tz, sizeof(s.tz), "Asia/Kathmandu");
    assert_int_equal(store_site_put(st, &s, false, 2), 0);
    /* Kathmandu is not whole hours: its days are folded from 5-minute rows */
    check(e_q, "Asia/Kathmandu", NULL, 0);
    assert_int_equal(store_reg_replaced(st, "m1", repl), 0);
    check(e_q, "Asia/Kathmandu", &repl, 1);
}

static void test_retention(void **state)
{
    struct store_retention_result res;
    struct store_meter_ctx ctx;
    struct store_sum before, after;
    struct rollup_point p[10], prev;
    struct rollup_row rows[10];
    int64_t last = rd[N - 1].ts_ms, day0, cut;
    const tz_t *tz;
    bool has_prev;
    int n;

    assert_int_equal(store_meter_ctx(st, "m1", &ctx), 0);
    assert_int_equal(tz_get("Asia/Kathmandu", &tz), 0);
    day0 = tz_floor(tz, rd[0].ts_ms, TZ_DAY);
    assert_int_equal(
        store_usage_sum(st, ctx.id, e_q, day0, tz_floor(tz, last, TZ_DAY), last + 1, &before), 0);
    /* keep 1 day of raw readings and of 5-minute rows, counted back from the end of the
     * last local day: everything before that day goes */
    cut = tz_floor(tz, last, TZ_DAY);
    assert_int_equal(store_retention(st, cut + 86400000, 1, 1, 0, 0, &res), 0);
    assert_true(res.readings > 0);
    assert_true(res.rows > 0);
    assert_int_equal(store_points(st, ctx.id, e_q, 0, cut, 10, p, &n, &prev, &has_prev), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_rollups(st, ctx.id, e_q, STORE_TIER_5M, 0, cut, 10, rows, &n), 0);
    assert_int_equal(n, 0);
    /* hourly and daily rows stay, so usage over whole days is what it was */
    assert_int_equal(store_rollups(st, ctx.id, e_q, STORE_TIER_1H, 0, cut, 10, rows, &n), 0);
    assert_int_equal(n, 10);
    assert_int_equal(
        store_usage_sum(st, ctx.id, e_q, day0, tz_floor(tz, last, TZ_DAY), last + 1, &after), 0);
    assert_double_near_ctx("usage after retention", after.use, before.use, 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shuffled_batches),
        cmocka_unit_test(test_tz_change_and_replacement),
        cmocka_unit_test(test_retention),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
