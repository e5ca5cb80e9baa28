/*
 * test_plan: read planning (agent/plan.h). Golden plans for every built-in profile, worked
 * out by hand from the register lists and limits in the reference; one test per planner
 * rule on small hand-built profiles; and randomised profiles whose plan must be valid and
 * as short as an exhaustive search finds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "plan.h"
#include "profile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- helpers --- */

static struct profile mk(int max_read, int max_gap)
{
    struct profile p;

    memset(&p, 0, sizeof(p));
    snprintf(p.model, sizeof(p.model), "test");
    p.max_read = max_read;
    p.max_gap = max_gap;
    return p;
}

static struct prof_reg *add(struct profile *p, int fc, int addr, enum reg_type t)
{
    struct prof_reg *r = &p->regs[p->nregs];

    r->qty = p->nregs; /* the planner does not look at quantities */
    r->fc = (uint8_t)fc;
    r->addr = (uint16_t)addr;
    r->type = (uint8_t)t;
    r->order = RO_ABCD;
    r->scale = 1;
    p->nregs++;
    return r;
}

static void add_run(struct profile *p, int fc, int start, int end)
{
    p->runs[p->nruns].fc = (uint8_t)fc;
    p->runs[p->nruns].start = (uint16_t)start;
    p->runs[p->nruns].end = (uint16_t)end;
    p->nruns++;
}

static void print_plan(const char *label, const struct read_req *r, int n)
{
    print_error("  %s (%d):", label, n);
    for (int i = 0; i < n; i++)
        print_error(" fc%d@%d+%d", r[i].fc, r[i].addr, r[i].count);
    print_error("\n");
}

static void expect_plan(const char *ctx, const struct profile *p, const struct read_req *want,
                        int nwant)
{
    struct read_req got[PROFILE_MAX_REGS];
    int n = plan_reads(p, got, PROFILE_MAX_REGS);
    int same = n == nwant;

    for (int i = 0; same && i < n; i++)
        same =
            got[i].fc == want[i].fc && got[i].addr == want[i].addr && got[i].count == want[i].count;
    if (!same) {
        print_error("%s: plan differs\n", ctx);
        print_plan("got ", got, n);
        print_plan("want", want, nwant);
        fail();
    }
}

#define EXPECT(ctx, p, ...)                                                                        \
    do {                                                                                           \
        static const struct read_req want_[] = {__VA_ARGS__};                                      \
        expect_plan((ctx), (p), want_, (int)(sizeof(want_) / sizeof(want_[0])));                   \
    } while (0)

/* Checks every rule on a plan, independently of how plan_reads works. */
static void check_valid(const char *ctx, const struct profile *p, const struct read_req *q, int n)
{
    int max_read = p->max_read > 125 ? 125 : p->max_read;

    for (int k = 0; k < n; k++) {
        int first = -1, last_end = -1, nvals = 0, has_alone = 0, starts = 0, ends = 0;
        long qs = q[k].addr, qe = (long)q[k].addr + q[k].count; /* [qs, qe) */

        if (q[k].count < 1 || q[k].count > max_read) {
            print_error("%s: request %d reads %d registers (max_read %d)\n", ctx, k, q[k].count,
                        max_read);
            fail();
        }
        for (int j = 0; j < n; j++)
            if (j != k && q[j].fc == q[k].fc && q[j].addr < qe &&
                qs < (long)q[j].addr + q[j].count) {
                print_error("%s: requests %d and %d overlap\n", ctx, k, j);
                fail();
            }
        if (p->nruns > 0) {
            int any = 0, inside = 0;
            for (int r = 0; r < p->nruns; r++)
                if (p->runs[r].fc == 0 || p->runs[r].fc == q[k].fc) {
                    any = 1;
                    inside |= qs >= p->runs[r].start && qe - 1 <= p->runs[r].end;
                }
            if (any && !inside) {
                print_error("%s: request %d (%ld..%ld) leaves every run\n", ctx, k, qs, qe - 1);
                fail();
            }
        }
        /* values in the request, in address order: gaps, alone, boundaries */
        for (long a = qs; a < qe; a++)
            for (int i = 0; i < p->nregs; i++) {
                const struct prof_reg *r = &p->regs[i];
                long rs = r->addr, re = rs + reg_words((enum reg_type)r->type);
                if (r->fc != q[k].fc || rs != a)
                    continue;
                if (re > qe) {
                    print_error("%s: request %d splits the value at %ld\n", ctx, k, rs);
                    fail();
                }
                if (first < 0)
                    first = i;
                else if (rs > last_end && rs - last_end > p->max_gap) {
                    print_error("%s: request %d spans a gap of %ld (max_gap %d)\n", ctx, k,
                                rs - last_end, p->max_gap);
                    fail();
                }
                if (re > last_end)
                    last_end = (int)re;
                nvals++;
                has_alone |= r->alone;
                starts += rs == qs;
                ends += re == qe;
            }
        for (int i = 0; i < p->nregs; i++) {
            const struct prof_reg *r = &p->regs[i];
            long rs = r->addr, re = rs + reg_words((enum reg_type)r->type);
            if (r->fc == q[k].fc && rs < qs && re > qs) {
                print_error("%s: request %d starts inside the value at %ld\n", ctx, k, rs);
                fail();
            }
        }
        if (!starts || !ends) {
            print_error("%s: request %d does not start and end at a value\n", ctx, k);
            fail();
        }
        if (has_alone && nvals > 1) {
            /* only values sharing registers with the alone one may come along */
            long lo = qs, hi = qe;
            for (int i = 0; i < p->nregs; i++) {
                const struct prof_reg *r = &p->regs[i];
                long rs = r->addr, re = rs + reg_words((enum reg_type)r->type);
                if (r->fc == q[k].fc && rs >= lo && re <= hi && !r->alone) {
                    int shares = 0;
                    for (int j = 0; j < p->nregs; j++) {
                        const struct prof_reg *o = &p->regs[j];
                        long os = o->addr, oe = os + reg_words((enum reg_type)o->type);
                        shares |= o->alone && o->fc == r->fc && os < re && rs < oe;
                    }
                    if (!shares) {
                        print_error("%s: request %d reads an alone value with others\n", ctx, k);
                        fail();
                    }
                }
            }
        }
    }
    for (int i = 0; i < p->nregs; i++) {
        const struct prof_reg *r = &p->regs[i];
        long rs = r->addr, re = rs + reg_words((enum reg_type)r->type);
        int covered = 0;
        for (int k = 0; k < n; k++)
            covered |= q[k].fc == r->fc && rs >= q[k].addr && re <= (long)q[k].addr + q[k].count;
        if (!covered) {
            print_error("%s: value %d (fc%d@%ld) is not read\n", ctx, i, r->fc, rs);
            fail();
        }
    }
}

/* --- golden plans of the built-in profiles --- */

static struct profile_set set;

static int load_set(void **state)
{
    char err[512] = "";
    int rc = profile_set_load_dir(&set, profile_default_dir(), err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "loading the built-in profiles: %s\n", err);
    return rc < 0 ? -1 : 0;
}

static int free_set(void **state)
{
    profile_set_free(&set);
    return 0;
}

static const struct profile *get(const char *model)
{
    const struct profile *p = profile_set_find(&set, model);
    if (!p) {
        print_error("no built-in profile \"%s\"\n", model);
        fail();
    }
    return p;
}

/*
 * Worked by hand. Eastron (max_read 40, max_gap 8, run 0..79): the per-phase block 0..17
 * cannot reach the totals at 52 (gap 34), the totals 52..75 bridge gaps of 2, 2 and 6.
 * SDM120: 0..31 with gaps of 4, then 70..75. SDM72D-M: 52..53, then 72..75 (gap 18 > 8).
 */
static void test_golden_eastron(void **state)
{
    EXPECT("sdm120", get("sdm120"), {4, 0, 32}, {4, 70, 6});
    EXPECT("sdm230", get("sdm230"), {4, 0, 32}, {4, 70, 6});
    EXPECT("sdm630", get("sdm630"), {4, 0, 18}, {4, 52, 24});
    EXPECT("sdm72dm-v2", get("sdm72dm-v2"), {4, 0, 18}, {4, 52, 24});
    EXPECT("sdm72d-m", get("sdm72d-m"), {4, 52, 2}, {4, 72, 4});
}

/*
 * DTSU666 (FC03, max_read 24, max_gap 8, runs 0x2000-0x2031, 0x2044-0x2045, 0x101E-0x1031):
 * energy 0x101E + 0x1028 (gap 8) = 12; V, I, P, Qt 0x2006..0x201B = 22 contiguous; PF
 * 0x202A after a gap of 14; frequency 0x2044 alone in its run.
 * DDSU666 (max_read 16, runs 0x2000-0x200F, 0x4000-0x400B): each run in one request.
 */
static void test_golden_chint(void **state)
{
    EXPECT("chint-dtsu666", get("chint-dtsu666"), {3, 0x101E, 12}, {3, 0x2006, 22}, {3, 0x202A, 2},
           {3, 0x2044, 2});
    EXPECT("chint-ddsu666", get("chint-ddsu666"), {3, 0x2000, 16}, {3, 0x4000, 12});
}

/* ABB (max_read 125, max_gap 20): energies 0x5000..0x5007; the measurement block
 * 0x5B00..0x5B3A (59 registers; largest gap 16, 0x5B1C..0x5B2B). */
static void test_golden_abb(void **state)
{
    EXPECT("abb-b2x", get("abb-b2x"), {3, 0x5000, 8}, {3, 0x5B00, 59});
}

/*
 * CG EM340 (max_read 50, max_gap 8): V + I + P 0..23 (gap 6); Pt, PF, Hz, kWh+ 40..53 (gaps
 * 7, 1); kWh- 78 after a gap of 24. EM24 E1 (max_gap 24): 0..23, then 40..79 (bridging 24).
 * EM24-DIN (max_read 11, runs 0..10 and 12..93): V; I1..P2 (10); P3; Pt; PF + Hz 53..55
 * (gap 1); kWh+; kWh-.
 */
static void test_golden_carlo_gavazzi(void **state)
{
    EXPECT("cg-em340", get("cg-em340"), {4, 0, 24}, {4, 40, 14}, {4, 78, 2});
    EXPECT("cg-em24-e1", get("cg-em24-e1"), {4, 0, 24}, {4, 40, 40});
    EXPECT("cg-em24-din", get("cg-em24-din"), {4, 0, 6}, {4, 12, 10}, {4, 22, 2}, {4, 40, 2},
           {4, 53, 3}, {4, 66, 2}, {4, 92, 2});
}

/* iEM3000 (max_gap 0): only touching values merge. ORNO (max_read 40, max_gap 8):
 * 0x000E..0x0035 is exactly 40; energies 0x0108 + 0x0110 (gap 6) = 10. */
static void test_golden_schneider_orno(void **state)
{
    EXPECT("iem3000", get("iem3000"), {3, 2999, 6}, {3, 3027, 6}, {3, 3053, 8}, {3, 3067, 2},
           {3, 3075, 2}, {3, 3109, 2}, {3, 3203, 4});
    EXPECT("iem3x55", get("iem3x55"), {3, 2999, 6}, {3, 3027, 6}, {3, 3053, 8}, {3, 3067, 2},
           {3, 3075, 2}, {3, 3109, 2}, {3, 3203, 8});
    EXPECT("or-we-517", get("or-we-517"), {3, 14, 40}, {3, 264, 10});
}

/* Every built-in plan obeys every rule (checked independently of the planner). */
static void test_builtin_plans_valid(void **state)
{
    for (int k = 0; k < set.n; k++) {
        struct read_req q[PROFILE_MAX_REGS];
        int n = plan_reads(&set.items[k], q, PROFILE_MAX_REGS);

        assert_in_range(n, 1, set.items[k].nregs);
        check_valid(set.items[k].model, &set.items[k], q, n);
    }
}

static void test_stats(void **state)
{
    struct plan_stats st;
    struct profile p = mk(10, 8);

    assert_i64_eq(plan_stats(get("sdm630"), &st), 0);
    assert_i64_eq(st.values, 16);
    assert_i64_eq(st.requests, 2);
    assert_i64_eq(st.registers, 42);
    assert_i64_eq(st.used, 32);
    assert_i64_eq(st.wasted, 10);
    /* overlapping values count their registers once */
    add(&p, 3, 0, RT_U32);
    add(&p, 3, 1, RT_U16);
    add(&p, 3, 4, RT_U16);
    assert_i64_eq(plan_stats(&p, &st), 0);
    assert_i64_eq(st.values, 3);
    assert_i64_eq(st.requests, 1);
    assert_i64_eq(st.registers, 5);
    assert_i64_eq(st.used, 3);
    assert_i64_eq(st.wasted, 2);
    p.max_read = 0;
    assert_i64_eq(plan_stats(&p, &st), -EINVAL);
}

/* --- one rule at a time --- */

static void test_merge_neighbours(void **state)
{
    struct profile p = mk(125, 0);

    add(&p, 4, 4, RT_F32);
    add(&p, 4, 0, RT_F32); /* out of order in the profile */
    add(&p, 4, 2, RT_F32);
    EXPECT("adjacent", &p, {4, 0, 6});
}

static void test_max_read(void **state)
{
    struct profile p = mk(4, 10);

    add(&p, 4, 0, RT_F32);
    add(&p, 4, 2, RT_F32);
    add(&p, 4, 4, RT_F32);
    EXPECT("max_read 4", &p, {4, 0, 4}, {4, 4, 2});
    p.max_read = 6;
    EXPECT("max_read 6", &p, {4, 0, 6});
    p.max_read = 2;
    EXPECT("max_read 2", &p, {4, 0, 2}, {4, 2, 2}, {4, 4, 2});
}

static void test_max_gap(void **state)
{
    struct profile p = mk(125, 8);

    add(&p, 3, 0, RT_F32);
    add(&p, 3, 10, RT_F32); /* gap 2..9: 8 registers */
    EXPECT("gap 8, max_gap 8", &p, {3, 0, 12});
    p.max_gap = 7;
    EXPECT("gap 8, max_gap 7", &p, {3, 0, 2}, {3, 10, 2});
    p.max_gap = 0;
    EXPECT("max_gap 0", &p, {3, 0, 2}, {3, 10, 2});
    p.max_gap = -3; /* hand-built nonsense: treated as 0 */
    EXPECT("max_gap -3", &p, {3, 0, 2}, {3, 10, 2});
}

static void test_alone(void **state)
{
    struct profile p = mk(125, 8);

    add(&p, 4, 0, RT_U16);
    add(&p, 4, 1, RT_U16)->alone = true;
    add(&p, 4, 2, RT_U16);
    add(&p, 4, 3, RT_U16);
    EXPECT("middle alone", &p, {4, 0, 1}, {4, 1, 1}, {4, 2, 2});
    p.regs[1].alone = false;
    p.regs[0].alone = true;
    EXPECT("first alone", &p, {4, 0, 1}, {4, 1, 3});
    p.regs[0].alone = false;
    p.regs[3].alone = true;
    EXPECT("last alone", &p, {4, 0, 3}, {4, 3, 1});
    /* an alone value that shares registers with another is read with it, and nothing else */
    p = mk(125, 8);
    add(&p, 3, 0, RT_U16);
    add(&p, 3, 2, RT_U32)->alone = true;
    add(&p, 3, 3, RT_U16);
    add(&p, 3, 5, RT_U16);
    EXPECT("alone overlapping", &p, {3, 0, 1}, {3, 2, 2}, {3, 5, 1});
}

static void test_runs(void **state)
{
    struct profile p = mk(125, 20);

    add(&p, 3, 0, RT_F32);
    add(&p, 3, 4, RT_F32);
    add(&p, 3, 8, RT_F32);
    EXPECT("no runs", &p, {3, 0, 10});
    add_run(&p, 3, 0, 5);
    add_run(&p, 3, 6, 9);
    EXPECT("runs 0-5, 6-9", &p, {3, 0, 6}, {3, 8, 2});
    /* runs of the other function code do not bind FC03 */
    p.runs[0].fc = 4;
    p.runs[1].fc = 4;
    EXPECT("runs of FC04 only", &p, {3, 0, 10});
    /* global runs bind every function code */
    p.runs[0].fc = 0;
    p.runs[1].fc = 0;
    EXPECT("global runs", &p, {3, 0, 6}, {3, 8, 2});
    /* a value outside every run cannot be planned */
    add(&p, 3, 20, RT_F32);
    {
        struct read_req q[PROFILE_MAX_REGS];
        assert_i64_eq(plan_reads(&p, q, PROFILE_MAX_REGS), -EINVAL);
    }
}

static void test_mixed_function_codes(void **state)
{
    struct profile p = mk(125, 4);

    add(&p, 4, 2, RT_F32);
    add(&p, 3, 0, RT_F32);
    add(&p, 3, 4, RT_F32);
    add(&p, 4, 6, RT_U16);
    /* FC03 0..5 spans a gap of 2 (the FC04 value's addresses); FC03 requests come first */
    EXPECT("mixed", &p, {3, 0, 6}, {4, 2, 5});
    p.max_gap = 1;
    EXPECT("mixed, max_gap 1", &p, {3, 0, 2}, {3, 4, 2}, {4, 2, 2}, {4, 6, 1});
}

static void test_overlaps_and_duplicates(void **state)
{
    struct profile p = mk(125, 0);
    struct read_req q[PROFILE_MAX_REGS];

    add(&p, 3, 10, RT_U32);
    add(&p, 3, 10, RT_U16); /* same address */
    add(&p, 3, 11, RT_U16); /* inside the u32 */
    EXPECT("duplicates", &p, {3, 10, 2});
    add(&p, 3, 11, RT_U32); /* 11..12: overlaps, extends the cluster to 10..12 */
    EXPECT("overlap", &p, {3, 10, 3});
    /* a cluster wider than max_read cannot be read without splitting a value */
    p.max_read = 2;
    assert_i64_eq(plan_reads(&p, q, PROFILE_MAX_REGS), -EINVAL);
    p.max_read = 3;
    EXPECT("overlap at max_read", &p, {3, 10, 3});
}

/* A 4-register value right at the max_read boundary: in when it ends on the limit, out
 * when it would end one past it, and never split. */
static void test_four_register_boundary(void **state)
{
    struct profile p = mk(10, 8);

    add(&p, 3, 0, RT_U16);
    add(&p, 3, 6, RT_F64); /* 6..9 */
    EXPECT("f64 ends at 10", &p, {3, 0, 10});
    p.regs[1].addr = 7; /* 7..10 */
    EXPECT("f64 would end at 11", &p, {3, 0, 1}, {3, 7, 4});
    /* the same at the Modbus limit */
    p = mk(125, 124);
    add(&p, 4, 0, RT_U16);
    add(&p, 4, 121, RT_I64); /* 121..124 */
    EXPECT("i64 ends at 125", &p, {4, 0, 125});
    p.regs[1].addr = 122;
    EXPECT("i64 would end at 126", &p, {4, 0, 1}, {4, 122, 4});
}

/* No request reads more than 125 registers, whatever a hand-built profile says. */
static void test_modbus_limit(void **state)
{
    struct profile p = mk(200, 124);

    add(&p, 4, 0, RT_F32);
    add(&p, 4, 123, RT_F32); /* 123..124 */
    EXPECT("0..124", &p, {4, 0, 125});
    p.regs[1].addr = 124; /* 124..125 */
    EXPECT("0..125", &p, {4, 0, 2}, {4, 124, 2});
    p = mk(125, 0);
    for (int i = 0; i < 63; i++) /* 126 contiguous registers */
        add(&p, 3, 2 * i, RT_F32);
    EXPECT("126 contiguous", &p, {3, 0, 124}, {3, 124, 2});
}

/* Fewest requests first, then fewest registers: the greedy merge would read 0..9 and
 * 10..11 (12 registers) where 0..1 and 8..11 (6) do in the same two requests. */
static void test_fewest_registers(void **state)
{
    struct profile p = mk(10, 8);

    add(&p, 4, 0, RT_F32);
    add(&p, 4, 8, RT_F32);
    add(&p, 4, 10, RT_F32);
    EXPECT("not greedy", &p, {4, 0, 2}, {4, 8, 4});
}

static void test_edges(void **state)
{
    struct profile p = mk(125, 8);
    struct read_req q[PROFILE_MAX_REGS];

    assert_i64_eq(plan_reads(&p, q, PROFILE_MAX_REGS), 0); /* nothing to read */
    add(&p, 3, 0, RT_F32);
    add(&p, 4, 0, RT_F32);
    add(&p, 3, 100, RT_F32);
    assert_i64_eq(plan_reads(&p, q, 3), 3);
    assert_i64_eq(plan_reads(&p, q, 2), -ENOSPC);
    assert_i64_eq(plan_reads(&p, q, 0), -ENOSPC);
    p.max_read = 0;
    assert_i64_eq(plan_reads(&p, q, PROFILE_MAX_REGS), -EINVAL);
    p.max_read = 1; /* an f32 does not fit */
    assert_i64_eq(plan_reads(&p, q, PROFILE_MAX_REGS), -EINVAL);
    p.max_read = 125;
    p.regs[0].type = 99; /* not a type */
    assert_i64_eq(plan_reads(&p, q, PROFILE_MAX_REGS), -EINVAL);
    /* the top of the address space */
    p = mk(125, 8);
    add(&p, 3, 65532, RT_F64);
    EXPECT("top", &p, {3, 65532, 4});
}

/* --- randomised: valid, and as short as an exhaustive search --- */

static uint32_t rng = 12345;

static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* Fewest (requests, registers) over every split of the sorted, non-overlapping values of
 * one function code into consecutive groups, each group checked rule by rule. */
static void exhaustive(const struct profile *p, int *best_req, long *best_regs)
{
    const struct prof_reg *v[PROFILE_MAX_REGS];
    int n = p->nregs;
    int max_read = p->max_read > 125 ? 125 : p->max_read;

    for (int i = 0; i < n; i++)
        v[i] = &p->regs[i];
    for (int i = 1; i < n; i++) /* insertion sort by address */
        for (int j = i; j > 0 && v[j - 1]->addr > v[j]->addr; j--) {
            const struct prof_reg *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    *best_req = -1;
    for (unsigned long cut = 0; cut < (1ul << (n - 1)); cut++) {
        int reqs = 0, ok = 1;
        long regs = 0;

        for (int s = 0; s < n && ok;) {
            int e = s; /* group s..e: cut bit i set = split after value i */
            while (e + 1 < n && !(cut & (1ul << e)))
                e++;
            {
                long lo = v[s]->addr, hi = v[e]->addr + reg_words((enum reg_type)v[e]->type);
                if (hi - lo > max_read)
                    ok = 0;
                for (int i = s; i < e && ok; i++) {
                    long gap = v[i + 1]->addr - (v[i]->addr + reg_words((enum reg_type)v[i]->type));
                    if (gap > p->max_gap || v[i]->alone || v[i + 1]->alone)
                        ok = 0;
                }
                if (p->nruns > 0 && ok) {
                    int inside = 0;
                    for (int r = 0; r < p->nruns; r++)
                        inside |= lo >= p->runs[r].start && hi - 1 <= p->runs[r].end;
                    ok = inside;
                }
                reqs++;
                regs += hi - lo;
            }
            s = e + 1;
        }
        if (ok && (*best_req < 0 || reqs < *best_req || (reqs == *best_req && regs < *best_regs))) {
            *best_req = reqs;
            *best_regs = regs;
        }
    }
}

static void test_random_against_exhaustive(void **state)
{
    static const enum reg_type types[] = {RT_U16, RT_F32, RT_F32, RT_U64};

    for (int round = 0; round < 3000; round++) {
        struct profile p = mk(4 + (int)(next_rand() % 20), (int)(next_rand() % 9));
        struct read_req q[PROFILE_MAX_REGS];
        struct plan_stats st;
        int n = 1 + (int)(next_rand() % 10), addr = (int)(next_rand() % 5), want_req, got;
        long want_regs = 0;
        char ctx[64];

        for (int i = 0; i < n; i++) {
            enum reg_type t = types[next_rand() % 4];
            add(&p, 4, addr, t)->alone = next_rand() % 10 == 0;
            addr += reg_words(t) + (int)(next_rand() % 13);
        }
        if (next_rand() % 3 == 0) { /* runs that hold every value: split between two values */
            int k = (int)(next_rand() % (unsigned)n), split = p.regs[k].addr;
            if (k == 0) {
                add_run(&p, 4, 0, 65535);
            } else {
                add_run(&p, 4, 0, split - 1);
                add_run(&p, 4, split, 65535);
            }
        }
        snprintf(ctx, sizeof(ctx), "random profile %d", round);
        got = plan_reads(&p, q, PROFILE_MAX_REGS);
        assert_in_range(got, 1, n);
        check_valid(ctx, &p, q, got);
        exhaustive(&p, &want_req, &want_regs);
        assert_i64_eq(plan_stats(&p, &st), 0);
        assert_i64_eq_ctx(ctx, st.requests, want_req);
        assert_i64_eq_ctx(ctx, st.registers, want_regs);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_eastron),
        cmocka_unit_test(test_golden_chint),
        cmocka_unit_test(test_golden_abb),
        cmocka_unit_test(test_golden_carlo_gavazzi),
        cmocka_unit_test(test_golden_schneider_orno),
        cmocka_unit_test(test_builtin_plans_valid),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_merge_neighbours),
        cmocka_unit_test(test_max_read),
        cmocka_unit_test(test_max_gap),
        cmocka_unit_test(test_alone),
        cmocka_unit_test(test_runs),
        cmocka_unit_test(test_mixed_function_codes),
        cmocka_unit_test(test_overlaps_and_duplicates),
        cmocka_unit_test(test_four_register_boundary),
        cmocka_unit_test(test_modbus_limit),
        cmocka_unit_test(test_fewest_registers),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_random_against_exhaustive),
    };
    return cmocka_run_group_tests(tests, load_set, free_set);
}
