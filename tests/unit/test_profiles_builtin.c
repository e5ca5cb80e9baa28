/*
 * test_profiles_builtin: the built-in profiles (agent/profiles, through MLK_PROFILES)
 * against the verified register reference (/work/shared/reference/meter-registers.md), and
 * the profile format features they rely on: "alone", "invalid", "multiply", "runs",
 * "probe", "notes" and the refusal of unknown keys.
 *
 * Expected addresses, function codes, types, orders and scales are written by hand from the
 * reference's tables (hex where the reference gives hex), never copied from the JSON. Word
 * vectors are hand-made bit patterns (checked with Python's struct module).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "profile.h"
#include "quantities.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static const struct prof_reg *reg_of(const struct profile *p, const char *qty)
{
    int q = qty_index(qty);
    for (int i = 0; i < p->nregs; i++)
        if (p->regs[i].qty == q)
            return &p->regs[i];
    print_error("%s: %s is not in the profile\n", p->model, qty);
    fail();
    return NULL;
}

static int has_qty(const struct profile *p, const char *qty)
{
    int q = qty_index(qty);
    for (int i = 0; i < p->nregs; i++)
        if (p->regs[i].qty == q)
            return 1;
    return 0;
}

/* Every model the reference covers, in file name order. */
static const char *const models[] = {
    "abb-b2x",       "cg-em24-din", "cg-em24-e1", "cg-em340",   "chint-ddsu666",
    "chint-dtsu666", "iem3000",     "iem3x55",    "or-we-517",  "sdm120",
    "sdm230",        "sdm630",      "sdm72d-m",   "sdm72dm-v2",
};
#define NMODELS ((int)(sizeof(models) / sizeof(models[0])))

static void test_every_model_loads(void **state)
{
    assert_i64_eq(set.n, NMODELS);
    for (int i = 0; i < NMODELS && i < set.n; i++)
        assert_string_equal(set.items[i].model, models[i]);
}

/* One row of a reference table. */
struct spot {
    const char *model, *qty;
    int addr, fc;
    enum reg_type type;
    enum reg_order order;
    double scale;
    enum reg_mult mult;
};

#define F32 RT_F32
#define ABCD RO_ABCD
#define CDAB RO_CDAB

static const struct spot spots[] = {
    /* 2.3 SDM120 / SDM230: FC04 float32 ABCD scale 1 */
    {"sdm120", "voltage_l1", 0x0000, 4, F32, ABCD, 1, RM_NONE},
    {"sdm120", "current_l1", 0x0006, 4, F32, ABCD, 1, RM_NONE},
    {"sdm120", "power", 0x000C, 4, F32, ABCD, 1, RM_NONE},
    {"sdm120", "power_factor", 0x001E, 4, F32, ABCD, 1, RM_NONE},
    {"sdm120", "frequency", 0x0046, 4, F32, ABCD, 1, RM_NONE},
    {"sdm120", "energy_import", 0x0048, 4, F32, ABCD, 1, RM_NONE},
    {"sdm120", "energy_export", 0x004A, 4, F32, ABCD, 1, RM_NONE},
    {"sdm230", "voltage_l1", 0x0000, 4, F32, ABCD, 1, RM_NONE},
    {"sdm230", "apparent_power", 0x0012, 4, F32, ABCD, 1, RM_NONE},
    {"sdm230", "reactive_power", 0x0018, 4, F32, ABCD, 1, RM_NONE},
    {"sdm230", "energy_export", 0x004A, 4, F32, ABCD, 1, RM_NONE},
    /* 2.4 SDM630 */
    {"sdm630", "voltage_l2", 0x0002, 4, F32, ABCD, 1, RM_NONE},
    {"sdm630", "current_l3", 0x000A, 4, F32, ABCD, 1, RM_NONE},
    {"sdm630", "power_l2", 0x000E, 4, F32, ABCD, 1, RM_NONE},
    {"sdm630", "power", 0x0034, 4, F32, ABCD, 1, RM_NONE},
    {"sdm630", "apparent_power", 0x0038, 4, F32, ABCD, 1, RM_NONE},
    {"sdm630", "reactive_power", 0x003C, 4, F32, ABCD, 1, RM_NONE},
    {"sdm630", "power_factor", 0x003E, 4, F32, ABCD, 1, RM_NONE},
    {"sdm630", "frequency", 0x0046, 4, F32, ABCD, 1, RM_NONE},
    /* 2.5 SDM72D-M v1 and SDM72DM-V2 */
    {"sdm72d-m", "power", 0x0034, 4, F32, ABCD, 1, RM_NONE},
    {"sdm72d-m", "energy_import", 0x0048, 4, F32, ABCD, 1, RM_NONE},
    {"sdm72d-m", "energy_export", 0x004A, 4, F32, ABCD, 1, RM_NONE},
    {"sdm72dm-v2", "voltage_l1", 0x0000, 4, F32, ABCD, 1, RM_NONE},
    {"sdm72dm-v2", "current_l1", 0x0006, 4, F32, ABCD, 1, RM_NONE},
    {"sdm72dm-v2", "power", 0x0034, 4, F32, ABCD, 1, RM_NONE},
    {"sdm72dm-v2", "frequency", 0x0046, 4, F32, ABCD, 1, RM_NONE},
    {"sdm72dm-v2", "energy_export", 0x004A, 4, F32, ABCD, 1, RM_NONE},
    /* 3.3 DTSU666: FC03 float32 ABCD, raw sub-units, secondary side */
    {"chint-dtsu666", "voltage_l1", 0x2006, 3, F32, ABCD, 0.1, RM_PT},
    {"chint-dtsu666", "voltage_l3", 0x200A, 3, F32, ABCD, 0.1, RM_PT},
    {"chint-dtsu666", "current_l1", 0x200C, 3, F32, ABCD, 0.001, RM_CT},
    {"chint-dtsu666", "power", 0x2012, 3, F32, ABCD, 0.1, RM_CTPT},
    {"chint-dtsu666", "power_l3", 0x2018, 3, F32, ABCD, 0.1, RM_CTPT},
    {"chint-dtsu666", "reactive_power", 0x201A, 3, F32, ABCD, 0.1, RM_CTPT},
    {"chint-dtsu666", "power_factor", 0x202A, 3, F32, ABCD, 0.001, RM_NONE},
    {"chint-dtsu666", "frequency", 0x2044, 3, F32, ABCD, 0.01, RM_NONE},
    {"chint-dtsu666", "energy_import", 0x101E, 3, F32, ABCD, 1, RM_CTPT},
    {"chint-dtsu666", "energy_export", 0x1028, 3, F32, ABCD, 1, RM_CTPT},
    /* 4 DDSU666: FC03 float32 ABCD, engineering units, power in kW */
    {"chint-ddsu666", "voltage_l1", 0x2000, 3, F32, ABCD, 1, RM_NONE},
    {"chint-ddsu666", "current_l1", 0x2002, 3, F32, ABCD, 1, RM_NONE},
    {"chint-ddsu666", "power", 0x2004, 3, F32, ABCD, 1000, RM_NONE},
    {"chint-ddsu666", "reactive_power", 0x2006, 3, F32, ABCD, 1000, RM_NONE},
    {"chint-ddsu666", "power_factor", 0x200A, 3, F32, ABCD, 1, RM_NONE},
    {"chint-ddsu666", "frequency", 0x200E, 3, F32, ABCD, 1, RM_NONE},
    {"chint-ddsu666", "energy_import", 0x4000, 3, F32, ABCD, 1, RM_NONE},
    {"chint-ddsu666", "energy_export", 0x400A, 3, F32, ABCD, 1, RM_NONE},
    /* 5 ABB B23/B24: FC03 integers ABCD */
    {"abb-b2x", "voltage_l1", 0x5B00, 3, RT_U32, ABCD, 0.1, RM_NONE},
    {"abb-b2x", "current_l2", 0x5B0E, 3, RT_U32, ABCD, 0.01, RM_NONE},
    {"abb-b2x", "power", 0x5B14, 3, RT_I32, ABCD, 0.01, RM_NONE},
    {"abb-b2x", "power_l3", 0x5B1A, 3, RT_I32, ABCD, 0.01, RM_NONE},
    {"abb-b2x", "frequency", 0x5B2C, 3, RT_U16, ABCD, 0.01, RM_NONE},
    {"abb-b2x", "power_factor", 0x5B3A, 3, RT_I16, ABCD, 0.001, RM_NONE},
    {"abb-b2x", "energy_import", 0x5000, 3, RT_U64, ABCD, 0.01, RM_NONE},
    {"abb-b2x", "energy_export", 0x5004, 3, RT_U64, ABCD, 0.01, RM_NONE},
    /* 6 CG EM300 series and EM24 Ethernet: FC04 (= FC03) INT32 CDAB, INT16 PF/Hz */
    {"cg-em340", "voltage_l1", 0x0000, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em340", "current_l1", 0x000C, 4, RT_I32, CDAB, 0.001, RM_NONE},
    {"cg-em340", "power_l1", 0x0012, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em340", "power", 0x0028, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em340", "power_factor", 0x0031, 4, RT_I16, CDAB, 0.001, RM_NONE},
    {"cg-em340", "frequency", 0x0033, 4, RT_U16, CDAB, 0.1, RM_NONE},
    {"cg-em340", "energy_import", 0x0034, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em340", "energy_export", 0x004E, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em24-e1", "voltage_l3", 0x0004, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em24-e1", "current_l3", 0x0010, 4, RT_I32, CDAB, 0.001, RM_NONE},
    {"cg-em24-e1", "power", 0x0028, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em24-e1", "frequency", 0x0033, 4, RT_U16, CDAB, 0.1, RM_NONE},
    {"cg-em24-e1", "energy_export", 0x004E, 4, RT_I32, CDAB, 0.1, RM_NONE},
    /* 6.1 CG EM24-DIN RS-485: its own map */
    {"cg-em24-din", "voltage_l1", 0x0000, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em24-din", "current_l2", 0x000E, 4, RT_I32, CDAB, 0.001, RM_NONE},
    {"cg-em24-din", "power_l3", 0x0016, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em24-din", "power", 0x0028, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em24-din", "power_factor", 0x0035, 4, RT_I16, CDAB, 0.001, RM_NONE},
    {"cg-em24-din", "frequency", 0x0037, 4, RT_I16, CDAB, 0.1, RM_NONE},
    {"cg-em24-din", "energy_import", 0x0042, 4, RT_I32, CDAB, 0.1, RM_NONE},
    {"cg-em24-din", "energy_export", 0x005C, 4, RT_I32, CDAB, 0.1, RM_NONE},
    /* 7 iEM3000: FC03, register - 1, float32 kW, int64 Wh */
    {"iem3000", "current_l1", 0x0BB7, 3, F32, ABCD, 1, RM_NONE},
    {"iem3000", "voltage_l1", 0x0BD3, 3, F32, ABCD, 1, RM_NONE},
    {"iem3000", "power_l1", 0x0BED, 3, F32, ABCD, 1000, RM_NONE},
    {"iem3000", "power", 0x0BF3, 3, F32, ABCD, 1000, RM_NONE},
    {"iem3000", "reactive_power", 0x0BFB, 3, F32, ABCD, 1000, RM_NONE},
    {"iem3000", "apparent_power", 0x0C03, 3, F32, ABCD, 1000, RM_NONE},
    {"iem3000", "frequency", 0x0C25, 3, F32, ABCD, 1, RM_NONE},
    {"iem3000", "energy_import", 0x0C83, 3, RT_I64, ABCD, 0.001, RM_NONE},
    {"iem3x55", "energy_import", 0x0C83, 3, RT_I64, ABCD, 0.001, RM_NONE},
    {"iem3x55", "energy_export", 0x0C87, 3, RT_I64, ABCD, 0.001, RM_NONE},
    /* 10 ORNO WE-516/517: FC03 float32 ABCD, power in kW */
    {"or-we-517", "voltage_l1", 0x000E, 3, F32, ABCD, 1, RM_NONE},
    {"or-we-517", "frequency", 0x0014, 3, F32, ABCD, 1, RM_NONE},
    {"or-we-517", "current_l1", 0x0016, 3, F32, ABCD, 1, RM_NONE},
    {"or-we-517", "power", 0x001C, 3, F32, ABCD, 1000, RM_NONE},
    {"or-we-517", "power_l1", 0x001E, 3, F32, ABCD, 1000, RM_NONE},
    {"or-we-517", "reactive_power", 0x0024, 3, F32, ABCD, 1000, RM_NONE},
    {"or-we-517", "apparent_power", 0x002C, 3, F32, ABCD, 1000, RM_NONE},
    {"or-we-517", "power_factor", 0x0034, 3, F32, ABCD, 1, RM_NONE},
    {"or-we-517", "energy_import", 0x0108, 3, F32, ABCD, 1, RM_NONE},
    {"or-we-517", "energy_export", 0x0110, 3, F32, ABCD, 1, RM_NONE},
};

static void test_spot_checks(void **state)
{
    for (size_t i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
        const struct spot *s = &spots[i];
        const struct prof_reg *r = reg_of(get(s->model), s->qty);
        char ctx[96];

        snprintf(ctx, sizeof(ctx), "%s %s", s->model, s->qty);
        assert_i64_eq_ctx(ctx, r->addr, s->addr);
        assert_i64_eq_ctx(ctx, r->fc, s->fc);
        assert_i64_eq_ctx(ctx, r->type, s->type);
        /* word order only matters for values of more than one register */
        if (reg_words(s->type) > 1)
            assert_i64_eq_ctx(ctx, r->order, s->order);
        assert_double_eq_ctx(ctx, r->scale, s->scale);
        assert_i64_eq_ctx(ctx, r->multiply, s->mult);
    }
}

/* What a model does not have is not in its profile. */
static void test_absent_quantities(void **state)
{
    static const struct {
        const char *model, *qty;
    } absent[] = {
        {"sdm72d-m", "voltage_l1"}, /* v1 has totals only */
        {"sdm72d-m", "current_l1"},          {"sdm72d-m", "frequency"},
        {"iem3000", "energy_export"}, /* iEM3150/3250/3350 lack it */
        {"iem3000", "power_factor"},  /* Schneider sign encoding, unverified */
        {"chint-ddsu666", "apparent_power"}, {"sdm120", "voltage_l2"},
        {"chint-ddsu666", "voltage_l2"},     {"abb-b2x", "reactive_power"}, /* scale unverified */
        {"cg-em340", "apparent_power"},                                     /* rows unverified */
    };

    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        if (has_qty(get(absent[i].model), absent[i].qty)) {
            print_error("%s: %s should not be mapped\n", absent[i].model, absent[i].qty);
            fail();
        }
}

/* Per-model read limits from the reference (section 12). */
static void test_read_limits(void **state)
{
    static const struct {
        const char *model;
        int limit;
    } lim[] = {
        {"sdm120", 50},     {"sdm230", 50},        {"sdm630", 50},        {"sdm72d-m", 60},
        {"sdm72dm-v2", 60}, {"chint-dtsu666", 24}, {"chint-ddsu666", 16}, {"abb-b2x", 125},
        {"cg-em340", 50},   {"cg-em24-e1", 50},    {"cg-em24-din", 11},   {"iem3000", 125},
        {"iem3x55", 125},   {"or-we-517", 125},
    };

    for (size_t i = 0; i < sizeof(lim) / sizeof(lim[0]); i++) {
        const struct profile *p = get(lim[i].model);
        if (p->max_read < 1 || p->max_read > lim[i].limit) {
            print_error("%s: max_read %d, the reference allows at most %d\n", p->model, p->max_read,
                        lim[i].limit);
            fail();
        }
    }
    assert_i64_eq(get("cg-em24-din")->max_read, 11);
}

static void check_run(const struct profile *p, int fc, int start, int end)
{
    char ctx[96];
    int k = profile_run_find(p, fc, start, end - start + 1);

    snprintf(ctx, sizeof(ctx), "%s run 0x%04X-0x%04X", p->model, start, end);
    if (k < 0) {
        print_error("%s: not a run (profile_run_find %d)\n", ctx, k);
        fail();
    }
    assert_i64_eq_ctx(ctx, p->runs[k].start, start);
    assert_i64_eq_ctx(ctx, p->runs[k].end, end);
}

static void test_runs(void **state)
{
    const struct profile *p = get("chint-dtsu666");

    /* "keep reads inside the documented runs (0x2000-0x2031, 0x2044-0x2045, 0x101E-0x1031)" */
    assert_i64_eq(p->nruns, 3);
    check_run(p, 3, 0x2000, 0x2031);
    check_run(p, 3, 0x2044, 0x2045);
    check_run(p, 3, 0x101E, 0x1031);
    assert_i64_eq(profile_run_find(p, 3, 0x2032, 1), -2);
    assert_i64_eq(profile_run_find(p, 3, 0x2030, 4), -2); /* runs past 0x2031 */

    /* ABB: any block inside 0x1000-0x8EFF */
    check_run(get("abb-b2x"), 3, 0x1000, 0x8EFF);

    /* EM24-DIN: 0x000B (identity, one word per read) is in no block */
    p = get("cg-em24-din");
    assert_i64_eq(profile_run_find(p, 4, 0x000B, 1), -2);
    assert_in_range(profile_run_find(p, 4, 0x0000, 6), 0, PROFILE_MAX_RUNS);
    assert_in_range(profile_run_find(p, 4, 0x000C, 12), 0, PROFILE_MAX_RUNS);

    /* Eastron: gap-spanning reads are documented inside 0x0000-0x004F */
    check_run(get("sdm630"), 4, 0x0000, 0x004F);
}

/* Decode hand-made words through the profile's own register description. */
static void test_decode_through_profiles(void **state)
{
    static const struct {
        const char *model, *qty;
        uint16_t w[4];
        double want, eps;
    } v[] = {
        /* reference 1.3: CG INT32 230.0 V = raw 2300 = 0x000008FC, wire order 08 FC 00 00 */
        {"cg-em340", "voltage_l1", {0x08FC, 0x0000}, 230.0, 1e-9},
        {"cg-em24-e1", "voltage_l1", {0x08FC, 0x0000}, 230.0, 1e-9},
        {"cg-em24-din", "voltage_l1", {0x08FC, 0x0000}, 230.0, 1e-9},
        /* -1523.4 W = raw -15234 = 0xFFFFC47E, low word first */
        {"cg-em340", "power", {0xC47E, 0xFFFF}, -1523.4, 1e-9},
        /* 50.0 Hz at 0.1 Hz per count = raw 500 = 0x01F4 */
        {"cg-em340", "frequency", {0x01F4}, 50.0, 1e-9},
        /* PF 0.985 = raw 985 = 0x03D9 */
        {"cg-em24-din", "power_factor", {0x03D9}, 0.985, 1e-9},
        /* reference 1.3: SDM/DDSU bytes 43 66 33 34 = 230.2 V as float32 ABCD */
        {"sdm630", "voltage_l1", {0x4366, 0x3334}, 230.2, 1e-4},
        {"sdm120", "voltage_l1", {0x4366, 0x3334}, 230.2, 1e-4},
        {"chint-ddsu666", "voltage_l1", {0x4366, 0x3334}, 230.2, 1e-4},
        /* DDSU666 power in kW: 1.5 = 0x3FC00000 -> 1500 W */
        {"chint-ddsu666", "power", {0x3FC0, 0x0000}, 1500.0, 0},
        /* DTSU666 raw sub-units: 2302.0 = 0x450FE000 -> 230.2 V; 5000.0 = 0x459C4000 -> 5 A;
         * 15000.0 = 0x466A6000 -> 1500 W; 5000.0 at 0.01 -> 50 Hz */
        {"chint-dtsu666", "voltage_l1", {0x450F, 0xE000}, 230.2, 1e-9},
        {"chint-dtsu666", "current_l1", {0x459C, 0x4000}, 5.0, 1e-12},
        {"chint-dtsu666", "power", {0x466A, 0x6000}, 1500.0, 1e-9},
        {"chint-dtsu666", "frequency", {0x459C, 0x4000}, 50.0, 1e-9},
        /* ABB u32 2302 = 0x000008FE -> 230.2 V; i32 -152340 = 0xFFFDACEC -> -1523.4 W;
         * u64 12345678 = 0xBC614E -> 123456.78 kWh */
        {"abb-b2x", "voltage_l1", {0x0000, 0x08FE}, 230.2, 1e-9},
        {"abb-b2x", "power", {0xFFFD, 0xACEC}, -1523.4, 1e-9},
        {"abb-b2x", "energy_import", {0x0000, 0x0000, 0x00BC, 0x614E}, 123456.78, 1e-6},
        {"abb-b2x", "power_factor", {0x03E8}, 1.0, 0},
        /* iEM3000 int64 Wh: 123456 = 0x1E240 -> 123.456 kWh; power 1.5 kW -> 1500 W */
        {"iem3000", "energy_import", {0x0000, 0x0000, 0x0001, 0xE240}, 123.456, 1e-9},
        {"iem3000", "power", {0x3FC0, 0x0000}, 1500.0, 0},
        /* ORNO kW: -2.25 = 0xC0100000 -> -2250 W */
        {"or-we-517", "power", {0xC010, 0x0000}, -2250.0, 0},
    };

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char ctx[96];
        double out = -12345;
        int rc = reg_decode(reg_of(get(v[i].model), v[i].qty), v[i].w, &out);

        snprintf(ctx, sizeof(ctx), "%s %s", v[i].model, v[i].qty);
        assert_i64_eq_ctx(ctx, rc, 0);
        assert_double_near_ctx(ctx, out, v[i].want, v[i].eps);
    }
}

/* Sentinels mean "not available": -ENODATA and the output untouched. */
static void test_invalid_sentinels(void **state)
{
    static const struct {
        const char *model, *qty;
        uint16_t w[4];
    } bad[] = {
        /* ABB: all-FF for unsigned, largest positive for signed */
        {"abb-b2x", "voltage_l2", {0xFFFF, 0xFFFF}},
        {"abb-b2x", "current_l3", {0xFFFF, 0xFFFF}},
        {"abb-b2x", "power_l1", {0x7FFF, 0xFFFF}},
        {"abb-b2x", "frequency", {0xFFFF}},
        {"abb-b2x", "power_factor", {0x7FFF}},
        {"abb-b2x", "energy_export", {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF}},
        /* CG EM300: overflow (EEE) reads 0x7FFFFFFF, low word first */
        {"cg-em340", "voltage_l1", {0xFFFF, 0x7FFF}},
        /* EM24-DIN: 0x7FFF in the high word (the second register), any low word */
        {"cg-em24-din", "current_l1", {0x0000, 0x7FFF}},
        {"cg-em24-din", "current_l1", {0x1234, 0x7FFF}},
        {"cg-em24-din", "frequency", {0x7FFF}},
    };
    static const struct {
        const char *model, *qty;
        uint16_t w[4];
        double want;
    } near[] = {
        /* one bit away from a sentinel is a value */
        {"abb-b2x", "voltage_l2", {0xFFFF, 0xFFFE}, 429496729.4},
        {"abb-b2x", "power_l1", {0x7FFF, 0xFFFE}, 21474836.46},
        {"abb-b2x", "power_factor", {0x7FFE}, 32.766},
        {"abb-b2x", "energy_export", {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE}, 1.8446744073709552e17},
        /* EM24-DIN: 0x7FFF in the low word is an ordinary 3276.7 V */
        {"cg-em24-din", "voltage_l1", {0x7FFF, 0x0000}, 3276.7},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char ctx[96];
        double out = -12345;

        snprintf(ctx, sizeof(ctx), "%s %s sentinel %zu", bad[i].model, bad[i].qty, i);
        assert_i64_eq_ctx(ctx, reg_decode(reg_of(get(bad[i].model), bad[i].qty), bad[i].w, &out),
                          -ENODATA);
        assert_double_eq_ctx(ctx, out, -12345);
    }
    for (size_t i = 0; i < sizeof(near) / sizeof(near[0]); i++) {
        char ctx[96];
        double out = -12345;

        snprintf(ctx, sizeof(ctx), "%s %s near %zu", near[i].model, near[i].qty, i);
        assert_i64_eq_ctx(ctx, reg_decode(reg_of(get(near[i].model), near[i].qty), near[i].w, &out),
                          0);
        assert_double_near_ctx(ctx, out, near[i].want, fabs(near[i].want) * 1e-12);
    }
}

/* The reference's sentinel rules, applied to every register of the model: ABB all-FF for
 * unsigned types and the largest positive value for signed ones; CG EM300/EM24 E1 INT32
 * 0x7FFFFFFF; EM24-DIN 0x7FFF in the high word (the second register, CDAB). */
static void test_sentinel_rules(void **state)
{
    static const char *const cg[] = {"cg-em340", "cg-em24-e1"};
    const struct profile *p = get("abb-b2x");

    for (int i = 0; i < p->nregs; i++) {
        const struct prof_reg *r = &p->regs[i];
        int is_signed = r->type == RT_I16 || r->type == RT_I32 || r->type == RT_I64;
        uint16_t w[4] = {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF};
        double out;

        if (is_signed)
            w[0] = 0x7FFF; /* ABCD: the first register is the high word */
        assert_i64_eq_ctx(qty_at(r->qty)->name, reg_decode(r, w, &out), -ENODATA);
    }
    for (size_t k = 0; k < sizeof(cg) / sizeof(cg[0]); k++) {
        p = get(cg[k]);
        for (int i = 0; i < p->nregs; i++) {
            const struct prof_reg *r = &p->regs[i];
            uint16_t w[2] = {0xFFFF, 0x7FFF};
            double out;
            char ctx[96];

            snprintf(ctx, sizeof(ctx), "%s %s", p->model, qty_at(r->qty)->name);
            if (r->type == RT_I32)
                assert_i64_eq_ctx(ctx, reg_decode(r, w, &out), -ENODATA);
        }
    }
    p = get("cg-em24-din");
    for (int i = 0; i < p->nregs; i++) {
        const struct prof_reg *r = &p->regs[i];
        uint16_t w32[2] = {0x5A5A, 0x7FFF}, w16[1] = {0x7FFF};
        double out;

        assert_i64_eq_ctx(qty_at(r->qty)->name, reg_decode(r, r->type == RT_I32 ? w32 : w16, &out),
                          -ENODATA);
    }
}

/* DTSU666: primary = secondary x IrAt (current), x UrAt (voltage), x both (power, energy). */
static void test_dtsu666_ct_pt(void **state)
{
    const struct profile *p = get("chint-dtsu666");
    const double ct = 40, pt = 100; /* 200/5 A CTs; 10 kV / 100 V PTs (UrAt raw 1000) */
    static const struct {
        const char *qty;
        double factor;
    } f[] = {
        {"voltage_l1", 100},      {"voltage_l2", 100},     {"current_l1", 40},
        {"current_l3", 40},       {"power", 4000},         {"power_l2", 4000},
        {"reactive_power", 4000}, {"energy_import", 4000}, {"energy_export", 4000},
        {"power_factor", 1},      {"frequency", 1},
    };
    uint16_t amps[2] = {0x459C, 0x4000}; /* 5000.0 raw -> 5 A secondary */
    double v = 0;

    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        assert_double_eq_ctx(f[i].qty, reg_multiplier(reg_of(p, f[i].qty), ct, pt), f[i].factor);
    /* direct connection: every factor 1 */
    for (int i = 0; i < p->nregs; i++)
        assert_double_eq_ctx(qty_at(p->regs[i].qty)->name, reg_multiplier(&p->regs[i], 1, 1), 1);
    /* a worked value: 5 A on the secondary of 200/5 A CTs is 200 A */
    assert_i64_eq(reg_decode(reg_of(p, "current_l1"), amps, &v), 0);
    assert_double_near_ctx("primary current", v * reg_multiplier(reg_of(p, "current_l1"), ct, pt),
                           200.0, 1e-9);
    /* profiles of directly connected meters use no multiplier */
    for (int k = 0; k < set.n; k++)
        for (int i = 0; i < set.items[k].nregs; i++)
            if (strcmp(set.items[k].model, "chint-dtsu666") != 0 &&
                set.items[k].regs[i].multiply != RM_NONE) {
                print_error("%s: %s has multiply %s\n", set.items[k].model,
                            qty_at(set.items[k].regs[i].qty)->name,
                            reg_mult_name((enum reg_mult)set.items[k].regs[i].multiply));
                fail();
            }
}

/* Probes (reference section 11): address and decoding per model, and a typical reading
 * matches while an implausible one does not. */
static void test_probes(void **state)
{
    static const struct {
        const char *model;
        int fc, addr;
        enum reg_type type;
        enum reg_order order;
        double scale;
    } first[] = {
        {"sdm630", 4, 0x0000, F32, ABCD, 1},        {"sdm120", 4, 0x0000, F32, ABCD, 1},
        {"sdm72dm-v2", 4, 0x0000, F32, ABCD, 1},    {"chint-dtsu666", 3, 0x2006, F32, ABCD, 0.1},
        {"chint-ddsu666", 3, 0x2000, F32, ABCD, 1}, {"abb-b2x", 3, 0x5B00, RT_U32, ABCD, 0.1},
        {"cg-em340", 4, 0x0000, RT_I32, CDAB, 0.1}, {"cg-em24-din", 4, 0x0000, RT_I32, CDAB, 0.1},
        {"iem3000", 3, 0x0BD3, F32, ABCD, 1},       {"or-we-517", 3, 0x000E, F32, ABCD, 1},
    };
    uint16_t sdm230v[2] = {0x4366, 0x3334}, ten[2] = {0x4120, 0x0000}; /* 230.2, 10.0 */
    uint16_t cg230v[2] = {0x08FC, 0x0000}, nan[2] = {0x7FC0, 0x0000};
    double v = 0;

    for (size_t i = 0; i < sizeof(first) / sizeof(first[0]); i++) {
        const struct profile *p = get(first[i].model);
        const struct prof_reg *r;

        assert_in_range(p->nprobes, 2, PROFILE_MAX_PROBES);
        r = &p->probes[0].reg;
        assert_i64_eq_ctx(p->model, r->fc, first[i].fc);
        assert_i64_eq_ctx(p->model, r->addr, first[i].addr);
        assert_i64_eq_ctx(p->model, r->type, first[i].type);
        assert_i64_eq_ctx(p->model, r->order, first[i].order);
        assert_double_eq_ctx(p->model, r->scale, first[i].scale);
        assert_i64_eq_ctx(p->model, r->qty, -1);
        /* the voltage window holds 110 V and 230 V +-10 % */
        assert_double_eq_ctx(p->model, p->probes[0].min, 99);
        assert_double_eq_ctx(p->model, p->probes[0].max, 253);
    }
    /* SDM72D-M v1 has no voltage register: it cannot be identified */
    assert_i64_eq(get("sdm72d-m")->nprobes, 0);
    /* every probing profile confirms with frequency 45..65 Hz as the second probe */
    for (int k = 0; k < set.n; k++) {
        const struct profile *p = &set.items[k];
        if (p->nprobes == 0)
            continue;
        assert_double_eq_ctx(p->model, p->probes[1].min, 45);
        assert_double_eq_ctx(p->model, p->probes[1].max, 65);
        assert_i64_eq_ctx(p->model, p->probes[1].reg.addr, reg_of(p, "frequency")->addr);
    }
    assert_i64_eq(profile_probe_match(&get("sdm630")->probes[0], sdm230v, &v), 1);
    assert_double_near_ctx("probe value", v, 230.2, 1e-4);
    assert_i64_eq(profile_probe_match(&get("sdm630")->probes[0], ten, &v), 0);
    assert_i64_eq(profile_probe_match(&get("sdm630")->probes[0], nan, NULL), -EDOM);
    /* the same words in the other word order: Eastron and CG do not match each other */
    assert_i64_eq(profile_probe_match(&get("cg-em340")->probes[0], cg230v, NULL), 1);
    assert_i64_eq(profile_probe_match(&get("sdm630")->probes[0], cg230v, NULL), 0);
    assert_i64_eq(profile_probe_match(&get("cg-em340")->probes[0], sdm230v, NULL), 0);
    /* EM24 Ethernet: model code 1648..1653 at 0x000B tells it from an EM340 */
    {
        const struct profile *p = get("cg-em24-e1");
        uint16_t code = 1650, other = 1700;
        assert_i64_eq(p->nprobes, 3);
        assert_i64_eq(p->probes[2].reg.addr, 0x000B);
        assert_i64_eq(profile_probe_match(&p->probes[2], &code, NULL), 1);
        assert_i64_eq(profile_probe_match(&p->probes[2], &other, NULL), 0);
    }
}

/* Generic: each probe accepts the middle of its window and refuses far outside it. */
static void test_probe_windows(void **state)
{
    for (int k = 0; k < set.n; k++)
        for (int i = 0; i < set.items[k].nprobes; i++) {
            const struct prof_probe *pr = &set.items[k].probes[i];
            uint16_t w[4] = {0};
            char ctx[96];

            snprintf(ctx, sizeof(ctx), "%s probe %d", set.items[k].model, i);
            assert_i64_eq_ctx(ctx, reg_encode(&pr->reg, (pr->min + pr->max) / 2, w), 0);
            assert_i64_eq_ctx(ctx, profile_probe_match(pr, w, NULL), 1);
            assert_i64_eq_ctx(ctx, reg_encode(&pr->reg, pr->max * 1.5 + 1, w), 0);
            assert_i64_eq_ctx(ctx, profile_probe_match(pr, w, NULL), 0);
        }
}

/* --- the format additions, on small hand-written profiles --- */

static int parse(const char *json, struct profile *p, char *err, size_t errlen)
{
    err[0] = '\0';
    return profile_parse(json, strlen(json), "t.json", p, err, errlen);
}

/* A profile without any of the new keys parses as before: nothing alone, no multiplier,
 * no sentinels, no runs, no probes. */
static void test_format_backward_compatible(void **state)
{
    static const char json[] = "{\"model\": \"old\", \"function\": 4, \"max_read\": 40,"
                               " \"max_gap\": 8, \"registers\": ["
                               "{\"quantity\": \"voltage_l1\", \"address\": 0},"
                               "{\"quantity\": \"power\", \"address\": 12, \"scale\": 1}]}";
    struct profile p;
    char err[256];

    assert_i64_eq_ctx(err, parse(json, &p, err, sizeof(err)), 0);
    assert_i64_eq(p.nregs, 2);
    assert_i64_eq(p.nruns, 0);
    assert_i64_eq(p.nprobes, 0);
    for (int i = 0; i < p.nregs; i++) {
        assert_false(p.regs[i].alone);
        assert_i64_eq(p.regs[i].multiply, RM_NONE);
        assert_i64_eq(p.regs[i].ninvalid, 0);
    }
}

static void test_format_new_keys(void **state)
{
    static const char json[] =
        "{\"model\": \"m\", \"notes\": \"free text\", \"function\": 3,"
        " \"runs\": {\"3\": [[0, 99], [200, 299]], \"4\": [[0, 9]]},"
        " \"probe\": [{\"address\": 0, \"min\": 99, \"max\": 253, \"notes\": [\"a\", \"b\"]},"
        "  {\"address\": 9, \"function\": 4, \"type\": \"u16\", \"order\": \"DCBA\","
        "   \"scale\": 0.1, \"min\": 45, \"max\": 65}],"
        " \"registers\": ["
        "  {\"quantity\": \"voltage_l1\", \"address\": 0, \"multiply\": \"pt\", \"notes\": \"x\"},"
        "  {\"quantity\": \"current_l1\", \"address\": 2, \"multiply\": \"ct\", \"alone\": true},"
        "  {\"quantity\": \"power\", \"address\": 200, \"multiply\": \"ct*pt\", \"alone\": false},"
        "  {\"quantity\": \"frequency\", \"address\": 4, \"function\": 4, \"type\": \"u16\","
        "   \"invalid\": [65535, \"0x8000\"]},"
        "  {\"quantity\": \"power_factor\", \"address\": 6, \"type\": \"i16\", \"invalid\": [-1]},"
        "  {\"quantity\": \"energy_import\", \"address\": 210, \"type\": \"u64\","
        "   \"invalid\": [\"0xFFFFFFFFFFFFFFFF\", 9007199254740992]},"
        "  {\"quantity\": \"energy_export\", \"address\": 220, \"type\": \"i32\", \"order\": "
        "\"CDAB\", \"invalid\": [{\"value\": \"0x7FFF0000\", \"mask\": \"0xFFFF0000\"}]},"
        "  {\"quantity\": \"reactive_power\", \"address\": 230, \"invalid\": [-1.5]}"
        "]}";
    struct profile p;
    char err[256];

    assert_i64_eq_ctx(err, parse(json, &p, err, sizeof(err)), 0);
    assert_i64_eq(p.nruns, 3);
    assert_i64_eq(p.runs[0].fc, 3);
    assert_i64_eq(p.runs[0].start, 0);
    assert_i64_eq(p.runs[0].end, 99);
    assert_i64_eq(p.runs[1].start, 200);
    assert_i64_eq(p.runs[2].fc, 4);
    assert_i64_eq(p.runs[2].end, 9);
    assert_i64_eq(p.nprobes, 2);
    assert_i64_eq(p.probes[0].reg.fc, 3); /* file defaults */
    assert_i64_eq(p.probes[0].reg.type, RT_F32);
    assert_double_eq(p.probes[0].reg.scale, 1);
    assert_double_eq(p.probes[0].min, 99);
    assert_double_eq(p.probes[0].max, 253);
    assert_i64_eq(p.probes[1].reg.fc, 4);
    assert_i64_eq(p.probes[1].reg.addr, 9);
    assert_i64_eq(p.probes[1].reg.type, RT_U16);
    assert_i64_eq(p.probes[1].reg.order, RO_DCBA);
    assert_double_eq(p.probes[1].reg.scale, 0.1);
    assert_i64_eq(p.regs[0].multiply, RM_PT);
    assert_i64_eq(p.regs[1].multiply, RM_CT);
    assert_true(p.regs[1].alone);
    assert_i64_eq(p.regs[2].multiply, RM_CTPT);
    assert_false(p.regs[2].alone);
    assert_i64_eq(p.regs[3].ninvalid, 2);
    assert_u64_eq(p.regs[3].invalid[0].value, 0xFFFF);
    assert_u64_eq(p.regs[3].invalid[0].mask, 0xFFFF);
    assert_u64_eq(p.regs[3].invalid[1].value, 0x8000);
    assert_u64_eq(p.regs[4].invalid[0].value, 0xFFFF); /* -1 as an i16 */
    assert_u64_eq(p.regs[4].invalid[0].mask, 0xFFFF);
    assert_u64_eq(p.regs[5].invalid[0].value, 0xFFFFFFFFFFFFFFFFull);
    assert_u64_eq(p.regs[5].invalid[0].mask, 0xFFFFFFFFFFFFFFFFull);
    assert_u64_eq(p.regs[5].invalid[1].value, 0x20000000000000ull);
    assert_u64_eq(p.regs[6].invalid[0].value, 0x7FFF0000);
    assert_u64_eq(p.regs[6].invalid[0].mask, 0xFFFF0000);
    assert_u64_eq(p.regs[7].invalid[0].value, 0xBFC00000); /* -1.5 as f32 bits */
    assert_u64_eq(p.regs[7].invalid[0].mask, 0xFFFFFFFF);
}

static void test_format_invalid_decodes(void **state)
{
    static const char json[] =
        "{\"model\": \"m\", \"registers\": ["
        "  {\"quantity\": \"frequency\", \"address\": 0, \"type\": \"u16\", \"invalid\": [65535]},"
        "  {\"quantity\": \"power_factor\", \"address\": 1, \"type\": \"i16\","
        "   \"invalid\": [-32768]},"
        "  {\"quantity\": \"energy_export\", \"address\": 2, \"type\": \"i32\", \"order\": "
        "\"CDAB\", \"invalid\": [{\"value\": \"0x7FFF0000\", \"mask\": \"0xFFFF0000\"}]},"
        "  {\"quantity\": \"reactive_power\", \"address\": 4, \"invalid\": [-1.5]},"
        "  {\"quantity\": \"energy_import\", \"address\": 6, \"type\": \"f64\", \"invalid\": [0]}"
        "]}";
    struct profile p;
    char err[256];
    double out = 7;
    uint16_t w_ffff[1] = {0xFFFF}, w_fffe[1] = {0xFFFE}, w_8000[1] = {0x8000};
    uint16_t w_ovf[2] = {0xABCD, 0x7FFF}, w_ok[2] = {0x7FFF, 0x0001};
    uint16_t w_m15[2] = {0xBFC0, 0x0000}, w_15[2] = {0x3FC0, 0x0000};
    uint16_t w_zero[4] = {0, 0, 0, 0}, w_negzero[4] = {0x8000, 0, 0, 0};

    assert_i64_eq_ctx(err, parse(json, &p, err, sizeof(err)), 0);
    assert_i64_eq(reg_decode(&p.regs[0], w_ffff, &out), -ENODATA);
    assert_double_eq(out, 7); /* untouched */
    assert_i64_eq(reg_decode(&p.regs[0], w_fffe, &out), 0);
    assert_double_eq(out, 65534);
    assert_i64_eq(reg_decode(&p.regs[1], w_8000, &out), -ENODATA);
    assert_i64_eq(reg_decode(&p.regs[1], w_ffff, &out), 0);
    assert_double_eq(out, -1);
    assert_i64_eq(reg_decode(&p.regs[2], w_ovf, &out), -ENODATA);
    assert_i64_eq(reg_decode(&p.regs[2], w_ok, &out), 0);
    assert_double_eq(out, 0x00017FFF);
    assert_i64_eq(reg_decode(&p.regs[3], w_m15, &out), -ENODATA);
    assert_i64_eq(reg_decode(&p.regs[3], w_15, &out), 0);
    assert_double_eq(out, 1.5);
    /* sentinels compare bits: +0.0 is the sentinel, -0.0 is not */
    assert_i64_eq(reg_decode(&p.regs[4], w_zero, &out), -ENODATA);
    assert_i64_eq(reg_decode(&p.regs[4], w_negzero, &out), 0);
}

static void test_format_multiplier(void **state)
{
    struct prof_reg r;

    memset(&r, 0, sizeof(r));
    r.multiply = RM_NONE;
    assert_double_eq(reg_multiplier(&r, 40, 100), 1);
    r.multiply = RM_CT;
    assert_double_eq(reg_multiplier(&r, 40, 100), 40);
    r.multiply = RM_PT;
    assert_double_eq(reg_multiplier(&r, 40, 100), 100);
    r.multiply = RM_CTPT;
    assert_double_eq(reg_multiplier(&r, 40, 100), 4000);
    assert_double_eq(reg_multiplier(&r, 1, 1), 1);
    r.multiply = 99;
    assert_double_eq(reg_multiplier(&r, 40, 100), 1);
    assert_string_equal(reg_mult_name(RM_CTPT), "ct*pt");
    assert_string_equal(reg_mult_name((enum reg_mult)99), "?");
}

#define REG "{\"quantity\": \"voltage_l1\", \"address\": 0}"
#define U16(extra)                                                                                 \
    "{\"model\": \"m\", \"registers\": [{\"quantity\": \"frequency\", "                            \
    "\"address\": 0, \"type\": \"u16\", " extra "}]}"

static const struct bad {
    const char *name, *json, *msg;
} bads[] = {
    {"unknown top-level key", "{\"model\": \"m\", \"max_reads\": 4, \"registers\": [" REG "]}",
     "t.json: max_reads: unknown key"},
    {"unknown register key",
     "{\"model\": \"m\", \"registers\": [" REG ", {\"quantity\": \"power\", \"address\": 2, "
     "\"scael\": 1}]}",
     "t.json: registers[1].scael: unknown key"},
    {"top-level key twice",
     "{\"model\": \"m\", \"max_gap\": 4, \"max_gap\": 8, \"registers\": [" REG "]}",
     "t.json: max_gap: given twice"},
    {"register key twice", U16("\"invalid\": [1], \"invalid\": [2]"),
     "t.json: registers[0].invalid: given twice"},
    {"probe key twice",
     "{\"model\": \"m\", \"probe\": [{\"address\": 0, \"min\": 0, \"max\": 1, \"min\": 2}],"
     " \"registers\": [" REG "]}",
     "t.json: probe[0].min: given twice"},
    {"notes a number", "{\"model\": \"m\", \"notes\": 1, \"registers\": [" REG "]}",
     "t.json: notes: must be a string or an array of strings"},
    {"register notes array of numbers",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 0, \"notes\": "
     "[1]}]}",
     "t.json: registers[0].notes: must be a string or an array of strings"},
    {"alone not a boolean", U16("\"alone\": 1"),
     "t.json: registers[0].alone: must be true or false"},
    {"multiply unknown", U16("\"multiply\": \"CT\""),
     "t.json: registers[0].multiply: must be one of \"ct\" \"pt\" \"ct*pt\""},
    {"multiply a number", U16("\"multiply\": 40"), "t.json: registers[0].multiply: must be one of"},
    {"invalid not an array", U16("\"invalid\": 65535"),
     "t.json: registers[0].invalid: must be an array of 1..4 raw values"},
    {"invalid empty", U16("\"invalid\": []"), "t.json: registers[0].invalid: must be an array"},
    {"invalid 5 entries", U16("\"invalid\": [1, 2, 3, 4, 5]"),
     "t.json: registers[0].invalid: must be an array of 1..4"},
    {"invalid out of u16 range", U16("\"invalid\": [1, 65536]"),
     "t.json: registers[0].invalid[1]: must be a raw u16 value"},
    {"invalid negative for u16", U16("\"invalid\": [-1]"), "t.json: registers[0].invalid[0]: "},
    {"invalid fractional", U16("\"invalid\": [1.5]"), "t.json: registers[0].invalid[0]: "},
    {"invalid hex too wide", U16("\"invalid\": [\"0x1FFFF\"]"),
     "t.json: registers[0].invalid[0]: must be a raw u16 value"},
    {"invalid hex without 0x", U16("\"invalid\": [\"FFFF\"]"), "t.json: registers[0].invalid[0]"},
    {"invalid hex empty", U16("\"invalid\": [\"0x\"]"), "t.json: registers[0].invalid[0]"},
    {"invalid hex junk", U16("\"invalid\": [\"0xFFzz\"]"), "t.json: registers[0].invalid[0]"},
    {"invalid a boolean", U16("\"invalid\": [true]"), "t.json: registers[0].invalid[0]"},
    {"invalid value outside its mask",
     U16("\"invalid\": [{\"value\": \"0x00FF\", \"mask\": \"0xFF00\"}]"),
     "t.json: registers[0].invalid[0]"},
    {"invalid mask missing", U16("\"invalid\": [{\"value\": \"0x00FF\"}]"),
     "t.json: registers[0].invalid[0]"},
    {"invalid mask zero", U16("\"invalid\": [{\"value\": 0, \"mask\": \"0x0\"}]"),
     "t.json: registers[0].invalid[0]"},
    {"invalid object extra key",
     U16("\"invalid\": [{\"value\": 0, \"mask\": \"0xFF\", \"bits\": 1}]"),
     "t.json: registers[0].invalid[0]"},
    {"invalid u64 number beyond 2^53",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"energy_import\", \"address\": 0, "
     "\"type\": \"u64\", \"invalid\": [18446744073709551615]}]}",
     "t.json: registers[0].invalid[0]: must be a raw u64 value: a number (integers up to 2^53)"},
    {"invalid f32 not exact",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 0, "
     "\"invalid\": [0.1]}]}",
     "t.json: registers[0].invalid[0]: must be a raw f32 value"},
    {"runs not an array", "{\"model\": \"m\", \"runs\": 5, \"registers\": [" REG "]}",
     "t.json: runs: must be an array of [start, end] address pairs"},
    {"run start after end", "{\"model\": \"m\", \"runs\": [[10, 0]], \"registers\": [" REG "]}",
     "t.json: runs[0]: must be [start, end], integers with 0 <= start <= end <= 65535"},
    {"run end 65536", "{\"model\": \"m\", \"runs\": [[0, 65536]], \"registers\": [" REG "]}",
     "t.json: runs[0]: must be [start, end]"},
    {"run of three numbers", "{\"model\": \"m\", \"runs\": [[0, 5, 9]], \"registers\": [" REG "]}",
     "t.json: runs[0]: must be [start, end]"},
    {"run fractional", "{\"model\": \"m\", \"runs\": [[0, 5.5]], \"registers\": [" REG "]}",
     "t.json: runs[0]: must be [start, end]"},
    {"runs overlap",
     "{\"model\": \"m\", \"runs\": [[0, 9], [20, 29], [9, 12]], \"registers\": [" REG "]}",
     "t.json: runs[2]: overlaps [0, 9]"},
    {"runs by bad function code",
     "{\"model\": \"m\", \"runs\": {\"6\": [[0, 9]]}, \"registers\": [" REG "]}",
     "t.json: runs.6: the keys are function codes \"3\", \"4\""},
    {"runs of one function code twice",
     "{\"model\": \"m\", \"runs\": {\"3\": [[0, 9]], \"4\": [[0, 9]], \"3\": [[20, 29]]}, "
     "\"registers\": [" REG "]}",
     "t.json: runs.3: given twice"},
    {"runs by function code not an array",
     "{\"model\": \"m\", \"runs\": {\"4\": [0, 9]}, \"registers\": [" REG "]}",
     "t.json: runs.4[0]: must be [start, end]"},
    {"register outside the runs",
     "{\"model\": \"m\", \"runs\": [[0, 9]], \"registers\": [" REG ", {\"quantity\": "
     "\"power\", \"address\": 9}]}",
     "t.json: registers[1].address: registers 9..10 are outside every run of function 3"},
    {"register outside its function code's runs",
     "{\"model\": \"m\", \"runs\": {\"4\": [[0, 9]]}, \"registers\": [" REG ", {\"quantity\": "
     "\"power\", \"address\": 100, \"function\": 4}]}",
     "t.json: registers[1].address: registers 100..101 are outside every run of function 4"},
    {"probe not an array", "{\"model\": \"m\", \"probe\": {}, \"registers\": [" REG "]}",
     "t.json: probe: must be an array of at most 4 probes"},
    {"probe not an object", "{\"model\": \"m\", \"probe\": [1], \"registers\": [" REG "]}",
     "t.json: probe[0]: must be an object"},
    {"probe min missing",
     "{\"model\": \"m\", \"probe\": [{\"address\": 0, \"max\": 1}], \"registers\": [" REG "]}",
     "t.json: probe[0].min: required, a number"},
    {"probe max below min",
     "{\"model\": \"m\", \"probe\": [{\"address\": 0, \"min\": 2, \"max\": 1}], "
     "\"registers\": [" REG "]}",
     "t.json: probe[0].max: 1 is below min 2"},
    {"probe address missing",
     "{\"model\": \"m\", \"probe\": [{\"min\": 0, \"max\": 1}], \"registers\": [" REG "]}",
     "t.json: probe[0].address: required, an integer 0..65535"},
    {"probe bad type",
     "{\"model\": \"m\", \"probe\": [{\"address\": 0, \"type\": \"f16\", \"min\": 0, \"max\": "
     "1}], \"registers\": [" REG "]}",
     "t.json: probe[0].type: must be one of"},
    {"probe unknown key",
     "{\"model\": \"m\", \"probe\": [{\"address\": 0, \"min\": 0, \"max\": 1, \"quantity\": "
     "\"voltage_l1\"}], \"registers\": [" REG "]}",
     "t.json: probe[0].quantity: unknown key"},
    {"probe wider than max_read",
     "{\"model\": \"m\", \"max_read\": 2, \"probe\": [{\"address\": 0, \"type\": \"f64\", "
     "\"min\": 0, \"max\": 1}], \"registers\": [{\"quantity\": \"frequency\", \"address\": 0, "
     "\"type\": \"u16\"}]}",
     "t.json: probe[0]: a f64 needs more registers than max_read 2"},
    {"five probes",
     "{\"model\": \"m\", \"probe\": [{\"address\": 0, \"min\": 0, \"max\": 1}, {\"address\": "
     "0, \"min\": 0, \"max\": 1}, {\"address\": 0, \"min\": 0, \"max\": 1}, {\"address\": 0, "
     "\"min\": 0, \"max\": 1}, {\"address\": 0, \"min\": 0, \"max\": 1}], \"registers\": [" REG
     "]}",
     "t.json: probe: must be an array of at most 4 probes"},
};

static void test_format_rejects(void **state)
{
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        struct profile p;
        char err[256];

        assert_i64_eq_ctx(bads[i].name, parse(bads[i].json, &p, err, sizeof(err)), -EINVAL);
        assert_contains_ctx(bads[i].name, err, bads[i].msg);
    }
}

/* A register exactly at the edges of a run is inside it; global runs cover both function
 * codes; runs for one function code leave the other free. */
static void test_format_run_edges(void **state)
{
    static const char edges[] = "{\"model\": \"m\", \"runs\": [[10, 13]], \"registers\": ["
                                "{\"quantity\": \"power\", \"address\": 10},"
                                "{\"quantity\": \"frequency\", \"address\": 12, \"function\": 4}]}";
    static const char per_fc[] =
        "{\"model\": \"m\", \"runs\": {\"4\": [[10, 13]]}, \"registers\": ["
        "{\"quantity\": \"power\", \"address\": 500},"
        "{\"quantity\": \"frequency\", \"address\": 12, \"function\": 4}]}";
    struct profile p;
    char err[256];

    assert_i64_eq_ctx(err, parse(edges, &p, err, sizeof(err)), 0);
    assert_i64_eq(p.runs[0].fc, 0);
    assert_i64_eq(profile_run_find(&p, 3, 10, 2), 0);
    assert_i64_eq(profile_run_find(&p, 4, 12, 2), 0);
    assert_i64_eq(profile_run_find(&p, 4, 12, 3), -2);
    assert_i64_eq(profile_run_find(&p, 3, 9, 1), -2);
    assert_i64_eq_ctx(err, parse(per_fc, &p, err, sizeof(err)), 0);
    assert_i64_eq(profile_run_find(&p, 3, 500, 2), -1); /* no runs for FC03 */
    assert_i64_eq(profile_run_find(&p, 4, 12, 2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_model_loads),
        cmocka_unit_test(test_spot_checks),
        cmocka_unit_test(test_absent_quantities),
        cmocka_unit_test(test_read_limits),
        cmocka_unit_test(test_runs),
        cmocka_unit_test(test_decode_through_profiles),
        cmocka_unit_test(test_invalid_sentinels),
        cmocka_unit_test(test_sentinel_rules),
        cmocka_unit_test(test_dtsu666_ct_pt),
        cmocka_unit_test(test_probes),
        cmocka_unit_test(test_probe_windows),
        cmocka_unit_test(test_format_backward_compatible),
        cmocka_unit_test(test_format_new_keys),
        cmocka_unit_test(test_format_invalid_decodes),
        cmocka_unit_test(test_format_multiplier),
        cmocka_unit_test(test_format_rejects),
        cmocka_unit_test(test_format_run_edges),
    };
    return cmocka_run_group_tests(tests, load_set, free_set);
}
