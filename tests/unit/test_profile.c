/*
 * test_profile: profile_parse and the profile directory loader (common/profile.h) against
 * the built-in profiles in agent/profiles (found through MLK_PROFILES, set by CTest) and
 * against broken profile text, each of which must be refused with a message naming the
 * field.
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
#include <unistd.h>

static const struct prof_reg *find_reg(const struct profile *p, const char *qty)
{
    int q = qty_index(qty);
    for (int i = 0; i < p->nregs; i++)
        if (p->regs[i].qty == q)
            return &p->regs[i];
    return NULL;
}

static int parse(const char *json, struct profile *p, char *err, size_t errlen)
{
    err[0] = '\0';
    return profile_parse(json, strlen(json), "t.json", p, err, errlen);
}

static void test_default_dir_follows_env(void **state)
{
    const char *env = getenv("MLK_PROFILES");
    char *saved;

    /* CTest sets MLK_PROFILES to the source tree's agent/profiles */
    assert_non_null(env);
    saved = strdup(env);
    assert_non_null(saved);
    assert_string_equal(profile_default_dir(), saved);
    assert_int_equal(setenv("MLK_PROFILES", "/elsewhere/profiles", 1), 0);
    assert_string_equal(profile_default_dir(), "/elsewhere/profiles");
    /* empty means unset: the compiled-in directory */
    assert_int_equal(setenv("MLK_PROFILES", "", 1), 0);
    assert_string_not_equal(profile_default_dir(), "");
    assert_int_equal(setenv("MLK_PROFILES", saved, 1), 0);
    free(saved);
}

static void check_reg(const struct profile *p, const char *qty, int addr, int fc,
                      enum reg_type type, enum reg_order order, double scale)
{
    const struct prof_reg *r = find_reg(p, qty);
    char ctx[96];

    snprintf(ctx, sizeof(ctx), "%s %s", p->model, qty);
    if (!r) {
        print_error("%s: not in the profile\n", ctx);
        fail();
    }
    assert_i64_eq_ctx(ctx, r->addr, addr);
    assert_i64_eq_ctx(ctx, r->fc, fc);
    assert_i64_eq_ctx(ctx, r->type, type);
    assert_i64_eq_ctx(ctx, r->order, order);
    assert_double_eq_ctx(ctx, r->scale, scale);
}

static void test_builtin_profiles(void **state)
{
    struct profile_set set;
    char err[512] = "";
    const struct profile *p;
    int rc = profile_set_load_dir(&set, profile_default_dir(), err, sizeof(err));

    assert_i64_eq_ctx(err, rc, 0);
    /* test_profiles_builtin.c checks the whole list; here: loaded in (file) name order */
    assert_in_range(set.n, 2, 1000);
    for (int i = 1; i < set.n; i++)
        if (strcmp(set.items[i - 1].model, set.items[i].model) >= 0) {
            print_error("%s loaded before %s\n", set.items[i - 1].model, set.items[i].model);
            fail();
        }

    p = profile_set_find(&set, "sdm630");
    assert_non_null(p);
    assert_string_equal(p->name, "Eastron SDM630 v2");
    assert_int_equal(p->nregs, 16);
    assert_int_equal(p->max_read, 40);
    assert_int_equal(p->max_gap, 8);
    check_reg(p, "voltage_l1", 0, 4, RT_F32, RO_ABCD, 1);
    check_reg(p, "voltage_l3", 4, 4, RT_F32, RO_ABCD, 1);
    check_reg(p, "power", 52, 4, RT_F32, RO_ABCD, 1);
    check_reg(p, "frequency", 70, 4, RT_F32, RO_ABCD, 1);
    check_reg(p, "energy_import", 72, 4, RT_F32, RO_ABCD, 1);
    check_reg(p, "energy_export", 74, 4, RT_F32, RO_ABCD, 1);
    assert_null(find_reg(p, "balance"));

    p = profile_set_find(&set, "sdm120");
    assert_non_null(p);
    assert_string_equal(p->name, "Eastron SDM120");
    assert_int_equal(p->nregs, 9);
    check_reg(p, "voltage_l1", 0, 4, RT_F32, RO_ABCD, 1);
    check_reg(p, "power", 12, 4, RT_F32, RO_ABCD, 1);
    check_reg(p, "energy_import", 72, 4, RT_F32, RO_ABCD, 1);
    assert_null(find_reg(p, "voltage_l2"));

    assert_null(profile_set_find(&set, "sdm72"));
    assert_null(profile_set_find(&set, "SDM630"));
    profile_set_free(&set);
    assert_int_equal(set.n, 0);
    assert_null(set.items);
}

/* Profile data sanity: no two registers of a built-in profile overlap. */
static void test_builtin_profiles_do_not_overlap(void **state)
{
    struct profile_set set;
    char err[512] = "";
    int rc = profile_set_load_dir(&set, profile_default_dir(), err, sizeof(err));

    assert_i64_eq_ctx(err, rc, 0);
    for (int k = 0; k < set.n; k++) {
        const struct profile *p = &set.items[k];
        for (int i = 0; i < p->nregs; i++)
            for (int j = i + 1; j < p->nregs; j++) {
                const struct prof_reg *a = &p->regs[i], *b = &p->regs[j];
                int a_end = a->addr + reg_words((enum reg_type)a->type);
                int b_end = b->addr + reg_words((enum reg_type)b->type);
                if (a->fc == b->fc && a->addr < b_end && b->addr < a_end) {
                    print_error("%s: %s at %d overlaps %s at %d\n", p->model, qty_at(a->qty)->name,
                                a->addr, qty_at(b->qty)->name, b->addr);
                    fail();
                }
            }
    }
    profile_set_free(&set);
}

static void test_parse_defaults_and_overrides(void **state)
{
    static const char json[] = "{\"model\": \"cg-em24\", \"registers\": ["
                               "{\"quantity\": \"voltage_l1\", \"address\": 0},"
                               "{\"quantity\": \"power\", \"address\": 65534, \"function\": 4,"
                               " \"type\": \"i32\", \"order\": \"CDAB\", \"scale\": 0.1},"
                               "{\"quantity\": \"frequency\", \"address\": 65535, \"type\": "
                               "\"u16\", \"scale\": -0.5}]}";
    struct profile p;
    char err[256];
    int rc = parse(json, &p, err, sizeof(err));

    assert_i64_eq_ctx(err, rc, 0);
    assert_string_equal(p.model, "cg-em24");
    assert_string_equal(p.name, "cg-em24"); /* name defaults to model */
    assert_int_equal(p.max_read, 125);
    assert_int_equal(p.max_gap, 0);
    assert_int_equal(p.nregs, 3);
    /* registers keep file order */
    assert_int_equal(p.regs[0].qty, qty_index("voltage_l1"));
    assert_int_equal(p.regs[1].qty, qty_index("power"));
    assert_int_equal(p.regs[2].qty, qty_index("frequency"));
    /* file defaults: function 3, f32, ABCD, scale 1 */
    assert_int_equal(p.regs[0].addr, 0);
    assert_int_equal(p.regs[0].fc, 3);
    assert_int_equal(p.regs[0].type, RT_F32);
    assert_int_equal(p.regs[0].order, RO_ABCD);
    assert_double_eq(p.regs[0].scale, 1.0);
    /* per-register overrides; an i32 at 65534 ends exactly at 65535 */
    assert_int_equal(p.regs[1].addr, 65534);
    assert_int_equal(p.regs[1].fc, 4);
    assert_int_equal(p.regs[1].type, RT_I32);
    assert_int_equal(p.regs[1].order, RO_CDAB);
    assert_double_eq(p.regs[1].scale, 0.1);
    assert_int_equal(p.regs[2].addr, 65535);
    assert_int_equal(p.regs[2].type, RT_U16);
    assert_double_eq(p.regs[2].scale, -0.5);
}

static void test_parse_file_level_settings(void **state)
{
    static const char json[] = "{\"model\": \"m\", \"name\": \"Some Meter\", \"function\": 4,"
                               " \"type\": \"u32\", \"order\": \"DCBA\", \"max_read\": 2,"
                               " \"max_gap\": 124, \"registers\": ["
                               "{\"quantity\": \"energy_import\", \"address\": 10},"
                               "{\"quantity\": \"power\", \"address\": 20, \"function\": 3,"
                               " \"type\": \"f32\", \"order\": \"BADC\"}]}";
    struct profile p;
    char err[256];
    int rc = parse(json, &p, err, sizeof(err));

    assert_i64_eq_ctx(err, rc, 0);
    assert_string_equal(p.name, "Some Meter");
    assert_int_equal(p.max_read, 2);
    assert_int_equal(p.max_gap, 124);
    assert_int_equal(p.regs[0].fc, 4);
    assert_int_equal(p.regs[0].type, RT_U32);
    assert_int_equal(p.regs[0].order, RO_DCBA);
    assert_int_equal(p.regs[1].fc, 3);
    assert_int_equal(p.regs[1].type, RT_F32);
    assert_int_equal(p.regs[1].order, RO_BADC);
}

/* A register line that is valid on its own, for the rows below. */
#define REG_OK "{\"quantity\": \"voltage_l1\", \"address\": 0}"

static const struct bad {
    const char *name;
    const char *json;
    const char *msg; /* must appear in the error message */
} bads[] = {
    {"not JSON", "this is not json", "t.json: not a JSON object"},
    {"truncated JSON", "{\"model\": \"m\", \"registers\": [", "t.json: not a JSON object"},
    {"empty text", "", "t.json: not a JSON object"},
    {"array root", "[" REG_OK "]", "t.json: not a JSON object"},
    {"missing model", "{\"registers\": [" REG_OK "]}", "t.json: model: required"},
    {"empty model", "{\"model\": \"\", \"registers\": [" REG_OK "]}", "t.json: model: required"},
    {"model not a string", "{\"model\": 630, \"registers\": [" REG_OK "]}",
     "t.json: model: required"},
    {"model 64 characters",
     "{\"model\": \"m123456789012345678901234567890123456789012345678901234567890123\","
     " \"registers\": [" REG_OK "]}",
     "t.json: model: required, a string of 1..63 characters"},
    {"name not a string", "{\"model\": \"m\", \"name\": [], \"registers\": [" REG_OK "]}",
     "t.json: name: must be a string"},
    {"unknown quantity",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"voltage_l4\", \"address\": 0}]}",
     "t.json: registers[0].quantity: not a known quantity"},
    {"quantity missing", "{\"model\": \"m\", \"registers\": [{\"address\": 0}]}",
     "t.json: registers[0].quantity: required, a string"},
    {"bad type f33",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 0, "
     "\"type\": \"f33\"}]}",
     "t.json: registers[0].type: must be one of"},
    {"bad file type f33", "{\"model\": \"m\", \"type\": \"f33\", \"registers\": [" REG_OK "]}",
     "t.json: type: must be one of"},
    {"bad order",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 0, "
     "\"order\": \"ABDC\"}]}",
     "t.json: registers[0].order: must be one of"},
    {"bad file order", "{\"model\": \"m\", \"order\": 1, \"registers\": [" REG_OK "]}",
     "t.json: order: must be one of"},
    {"address 65536",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 65536}]}",
     "t.json: registers[0].address: required, an integer 0..65535"},
    {"address -1",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": -1}]}",
     "t.json: registers[0].address: required, an integer 0..65535"},
    {"address fractional",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 1.5}]}",
     "t.json: registers[0].address: required, an integer 0..65535"},
    {"address a string",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": \"0\"}]}",
     "t.json: registers[0].address: required, an integer 0..65535"},
    {"address missing", "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\"}]}",
     "t.json: registers[0].address: required"},
    {"f32 at 65535 runs past the end",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 65535}]}",
     "t.json: registers[0].address: value runs past register 65535"},
    {"f64 at 65533 runs past the end",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 65533, "
     "\"type\": \"f64\"}]}",
     "t.json: registers[0].address: value runs past register 65535"},
    {"duplicate quantity",
     "{\"model\": \"m\", \"registers\": [" REG_OK ", {\"quantity\": \"power\", \"address\": 2},"
     " {\"quantity\": \"voltage_l1\", \"address\": 4}]}",
     "t.json: registers[2].quantity: \"voltage_l1\" is already mapped"},
    {"scale 0",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 0, "
     "\"scale\": 0}]}",
     "t.json: registers[0].scale: must be a non-zero number"},
    {"scale a string",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 0, "
     "\"scale\": \"0.1\"}]}",
     "t.json: registers[0].scale: must be a non-zero number"},
    {"function 5", "{\"model\": \"m\", \"function\": 5, \"registers\": [" REG_OK "]}",
     "t.json: function: must be 3 or 4"},
    {"register function 5",
     "{\"model\": \"m\", \"registers\": [{\"quantity\": \"power\", \"address\": 0, "
     "\"function\": 5}]}",
     "t.json: registers[0].function: must be 3 or 4"},
    {"register function 6 in a later entry",
     "{\"model\": \"m\", \"registers\": [" REG_OK ", {\"quantity\": \"power\", \"address\": 2,"
     " \"function\": 6}]}",
     "t.json: registers[1].function: must be 3 or 4"},
    {"max_read 0", "{\"model\": \"m\", \"max_read\": 0, \"registers\": [" REG_OK "]}",
     "t.json: max_read: must be an integer 1..125"},
    {"max_read 126", "{\"model\": \"m\", \"max_read\": 126, \"registers\": [" REG_OK "]}",
     "t.json: max_read: must be an integer 1..125"},
    {"max_gap 125", "{\"model\": \"m\", \"max_gap\": 125, \"registers\": [" REG_OK "]}",
     "t.json: max_gap: must be an integer 0..124"},
    {"f32 wider than max_read 1",
     "{\"model\": \"m\", \"max_read\": 1, \"registers\": [" REG_OK "]}",
     "t.json: registers[0]: a f32 needs more registers than max_read 1"},
    {"f64 wider than max_read 3",
     "{\"model\": \"m\", \"max_read\": 3, \"registers\": [{\"quantity\": \"power\", "
     "\"address\": 0, \"type\": \"f64\"}]}",
     "t.json: registers[0]: a f64 needs more registers than max_read 3"},
    {"registers not an array", "{\"model\": \"m\", \"registers\": {\"voltage_l1\": 0}}",
     "t.json: registers: required, a non-empty array"},
    {"registers empty", "{\"model\": \"m\", \"registers\": []}",
     "t.json: registers: required, a non-empty array"},
    {"registers missing", "{\"model\": \"m\"}", "t.json: registers: required, a non-empty array"},
    {"register not an object", "{\"model\": \"m\", \"registers\": [" REG_OK ", 7]}",
     "t.json: registers[1]: must be an object"},
};

static void test_parse_rejects(void **state)
{
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        struct profile p;
        char err[256];
        int rc = parse(bads[i].json, &p, err, sizeof(err));

        assert_i64_eq_ctx(bads[i].name, rc, -EINVAL);
        assert_contains_ctx(bads[i].name, err, bads[i].msg);
    }
}

static void test_parse_too_many_registers(void **state)
{
    char json[8192];
    size_t pos = 0;
    struct profile p;
    char err[256];

    pos += (size_t)snprintf(json + pos, sizeof(json) - pos, "{\"model\": \"m\", \"registers\": [");
    for (int i = 0; i <= PROFILE_MAX_REGS; i++)
        pos +=
            (size_t)snprintf(json + pos, sizeof(json) - pos,
                             "%s{\"quantity\": \"power\", \"address\": %d}", i ? "," : "", i * 2);
    pos += (size_t)snprintf(json + pos, sizeof(json) - pos, "]}");
    assert_true(pos < sizeof(json));
    assert_i64_eq(parse(json, &p, err, sizeof(err)), -EINVAL);
    assert_contains(err, "t.json: registers: more than 64 entries");
}

/* len bounds the text: the same profile cut short is not JSON any more. */
static void test_parse_honours_len(void **state)
{
    static const char json[] = "{\"model\": \"m\", \"registers\": [" REG_OK "]}";
    struct profile p;
    char err[256] = "";

    assert_i64_eq_ctx(err, profile_parse(json, strlen(json), "t.json", &p, err, sizeof(err)), 0);
    assert_i64_eq(profile_parse(json, strlen(json) - 1, "t.json", &p, err, sizeof(err)), -EINVAL);
    assert_contains(err, "not a JSON object");
}

/* A small error buffer truncates the message rather than overflowing; NULL is allowed. */
static void test_parse_error_buffer(void **state)
{
    struct profile p;
    char err[8];

    memset(err, 'x', sizeof(err));
    assert_i64_eq(profile_parse("nope", 4, "t.json", &p, err, 6), -EINVAL);
    assert_string_equal(err, "t.jso");
    assert_int_equal(err[6], 'x');
    assert_i64_eq(profile_parse("nope", 4, "t.json", &p, NULL, 0), -EINVAL);
}

/* Temporary profile directories for the loader tests. */
static char tmpdir[64];

static int make_tmpdir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mlk-test-profile-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    static const char *const names[] = {"a.json", "b.json", "c.json", "notes.txt", ".hidden.json"};
    char path[128];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    return rmdir(tmpdir);
}

static void write_file(const char *name, const char *text)
{
    char path[128];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void test_load_dir_skips_other_files(void **state)
{
    struct profile_set set;
    char err[512] = "";

    write_file("b.json", "{\"model\": \"bee\", \"registers\": [" REG_OK "]}");
    write_file("a.json", "{\"model\": \"ay\", \"registers\": [" REG_OK "]}");
    write_file("notes.txt", "not a profile");
    write_file(".hidden.json", "not a profile either");
    assert_i64_eq_ctx(err, profile_set_load_dir(&set, tmpdir, err, sizeof(err)), 0);
    assert_int_equal(set.n, 2);
    assert_string_equal(set.items[0].model, "ay");
    assert_string_equal(set.items[1].model, "bee");
    profile_set_free(&set);
}

static void test_load_dir_broken_file(void **state)
{
    struct profile_set set;
    char err[512] = "";

    write_file("a.json", "{\"model\": \"ay\", \"registers\": [" REG_OK "]}");
    write_file("b.json", "{\"model\": \"bee\", \"registers\": [{\"quantity\": \"x\"}]}");
    assert_i64_eq(profile_set_load_dir(&set, tmpdir, err, sizeof(err)), -EINVAL);
    assert_contains(err, "/b.json: registers[0].quantity: not a known quantity");
    assert_int_equal(set.n, 0);
    assert_null(set.items);
}

static void test_load_dir_duplicate_model(void **state)
{
    struct profile_set set;
    char err[512] = "";

    write_file("a.json", "{\"model\": \"same\", \"registers\": [" REG_OK "]}");
    write_file("c.json", "{\"model\": \"same\", \"registers\": [" REG_OK "]}");
    assert_i64_eq(profile_set_load_dir(&set, tmpdir, err, sizeof(err)), -EINVAL);
    assert_contains(err, "/c.json: model: \"same\" is defined twice");
    assert_int_equal(set.n, 0);
}

/*
 * FIXED (was a bug) (common/profile.c:466, profile_set_load_dir): with no *.json file in the directory,
 * names is still NULL and qsort(NULL, 0, ...) is called; qsort's base is declared nonnull,
 * so this is undefined behaviour. In a normal build the test passes; under -DSANITIZE=ON
 * UBSan reports "profile.c:466:5: runtime error: null pointer passed as argument 1" and
 * aborts (-fno-sanitize-recover). Expected: -EINVAL with "no profiles (*.json) found" in
 * both builds. Fix: only sort when nnames > 1.
 */
static void test_load_dir_empty(void **state)
{
    struct profile_set set;
    char err[512] = "";

    assert_i64_eq(profile_set_load_dir(&set, tmpdir, err, sizeof(err)), -EINVAL);
    assert_contains(err, "no profiles (*.json) found");
    assert_int_equal(set.n, 0);
}

static void test_load_missing(void **state)
{
    struct profile_set set;
    struct profile p;
    char err[512] = "";

    assert_i64_eq(profile_set_load_dir(&set, "/nonexistent/mlk-profiles", err, sizeof(err)),
                  -ENOENT);
    assert_contains(err, "/nonexistent/mlk-profiles: ");
    assert_contains(err, strerror(ENOENT));
    assert_i64_eq(profile_load_file("/nonexistent/x.json", &p, err, sizeof(err)), -ENOENT);
    assert_contains(err, "/nonexistent/x.json: ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_dir_follows_env),
        cmocka_unit_test(test_builtin_profiles),
        cmocka_unit_test(test_builtin_profiles_do_not_overlap),
        cmocka_unit_test(test_parse_defaults_and_overrides),
        cmocka_unit_test(test_parse_file_level_settings),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_too_many_registers),
        cmocka_unit_test(test_parse_honours_len),
        cmocka_unit_test(test_parse_error_buffer),
        cmocka_unit_test_setup_teardown(test_load_dir_skips_other_files, make_tmpdir,
                                        remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_load_dir_broken_file, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_load_dir_duplicate_model, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_load_dir_empty, make_tmpdir, remove_tmpdir),
        cmocka_unit_test(test_load_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
