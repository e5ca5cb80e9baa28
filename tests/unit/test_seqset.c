/*
 * test_seqset: the cloud's set of counted seqs (cloud/seqset.h): merging of overlapping,
 * adjacent and out-of-order ranges, the count of new seqs each add reports, upto and the
 * missing ranges (capped), values at 2^53 and at the ends of uint64, the text form, and a
 * randomised comparison against a plain bitmap.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "seqset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P53 ((uint64_t)1 << 53) /* 2^53; the wire's largest seq is P53 - 1 */

/* Adds [lo, hi], which must succeed, and returns how many seqs were new. */
static uint64_t add(struct seqset *s, uint64_t lo, uint64_t hi)
{
    uint64_t added = 12345;
    int rc = seqset_add(s, lo, hi, &added);
    assert_i64_eq(rc, 0);
    return added;
}

/* Checks the set's ranges against want, written as seqset_format() writes them. */
static void check_ranges(const struct seqset *s, const char *want)
{
    char buf[4096];
    int n = seqset_format(s, buf, sizeof(buf));
    assert_true(n > 0);
    assert_string_equal(buf, want);
}

static void test_empty(void **state)
{
    struct seqset s;
    struct seq_range m[4];

    seqset_init(&s);
    assert_u64_eq(seqset_upto(&s), 0);
    assert_u64_eq(seqset_max(&s), 0);
    assert_u64_eq(seqset_missing(&s, m, 4), 0);
    assert_false(seqset_contains(&s, 0));
    assert_false(seqset_contains(&s, 1));
    assert_u64_eq(seqset_count_in(&s, 0, UINT64_MAX), 0);
    check_ranges(&s, "[]");
    seqset_free(&s);
    seqset_free(&s); /* freeing twice is harmless: free leaves an empty set */
}

static void test_adjacent_merge(void **state)
{
    struct seqset s;

    seqset_init(&s);
    assert_u64_eq(add(&s, 1, 10), 10);
    assert_u64_eq(add(&s, 11, 20), 10);
    check_ranges(&s, "[[1,20]]");
    assert_u64_eq(add(&s, 22, 22), 1);
    check_ranges(&s, "[[1,20],[22,22]]");
    assert_u64_eq(add(&s, 21, 21), 1); /* joins both neighbours */
    check_ranges(&s, "[[1,22]]");
    assert_u64_eq(seqset_upto(&s), 22);
    /* adjacent below */
    assert_u64_eq(add(&s, 30, 40), 11);
    assert_u64_eq(add(&s, 25, 29), 5);
    check_ranges(&s, "[[1,22],[25,40]]");
    seqset_free(&s);
}

static void test_overlaps(void **state)
{
    struct seqset s;

    seqset_init(&s);
    assert_u64_eq(add(&s, 1, 10), 10);
    assert_u64_eq(add(&s, 5, 15), 5); /* 11..15 new */
    assert_u64_eq(add(&s, 1, 15), 0); /* all known */
    assert_u64_eq(add(&s, 3, 3), 0);  /* inside */
    assert_u64_eq(add(&s, 0, 20), 6); /* 0 and 16..20 */
    check_ranges(&s, "[[0,20]]");
    /* one add spanning several ranges counts only the holes between them */
    seqset_clear(&s);
    add(&s, 1, 2);
    add(&s, 4, 5);
    add(&s, 7, 8);
    add(&s, 20, 30);
    check_ranges(&s, "[[1,2],[4,5],[7,8],[20,30]]");
    assert_u64_eq(add(&s, 2, 7), 2); /* 3 and 6 */
    check_ranges(&s, "[[1,8],[20,30]]");
    assert_u64_eq(add(&s, 10, 40), 10 + 10); /* 10..19 and 31..40 */
    check_ranges(&s, "[[1,8],[10,40]]");
    assert_u64_eq(add(&s, 0, 100), 1 + 1 + 60);
    check_ranges(&s, "[[0,100]]");
    seqset_free(&s);
}

static void test_out_of_order(void **state)
{
    struct seqset s;
    struct seq_range m[4];

    seqset_init(&s);
    assert_u64_eq(add(&s, 21, 30), 10);
    assert_u64_eq(seqset_upto(&s), 0);
    assert_u64_eq(seqset_missing(&s, m, 4), 1);
    assert_u64_eq(m[0].lo, 1);
    assert_u64_eq(m[0].hi, 20);
    assert_u64_eq(add(&s, 1, 10), 10);
    assert_u64_eq(seqset_upto(&s), 10);
    assert_u64_eq(seqset_missing(&s, m, 4), 1);
    assert_u64_eq(m[0].lo, 11);
    assert_u64_eq(m[0].hi, 20);
    assert_u64_eq(add(&s, 11, 20), 10);
    assert_u64_eq(seqset_upto(&s), 30);
    assert_u64_eq(seqset_missing(&s, m, 4), 0);
    check_ranges(&s, "[[1,30]]");
    /* singles in reverse */
    seqset_clear(&s);
    for (uint64_t v = 100; v >= 1; v--)
        assert_u64_eq(add(&s, v, v), 1);
    check_ranges(&s, "[[1,100]]");
    seqset_free(&s);
}

static void test_upto_and_zero(void **state)
{
    struct seqset s;
    struct seq_range m[4];

    seqset_init(&s);
    add(&s, 0, 0);
    assert_u64_eq(seqset_upto(&s), 0); /* 0 is not 1 */
    assert_u64_eq(seqset_max(&s), 0);
    assert_u64_eq(seqset_missing(&s, m, 4), 0);
    add(&s, 2, 3);
    assert_u64_eq(seqset_upto(&s), 0);
    assert_u64_eq(seqset_missing(&s, m, 4), 1);
    assert_u64_eq(m[0].lo, 1);
    assert_u64_eq(m[0].hi, 1);
    add(&s, 1, 1);
    check_ranges(&s, "[[0,3]]");
    assert_u64_eq(seqset_upto(&s), 3);
    seqset_free(&s);
}

static void test_missing_capped(void **state)
{
    struct seqset s;
    struct seq_range m[32];
    char buf[64];
    size_t n;

    seqset_init(&s);
    /* 1, 3, 5, ..., 201: holes 2, 4, ..., 200 */
    for (uint64_t v = 1; v <= 201; v += 2)
        add(&s, v, v);
    memset(m, 0, sizeof(m));
    n = seqset_missing(&s, m, 32);
    assert_u64_eq(n, 100);
    for (int i = 0; i < 32; i++) {
        snprintf(buf, sizeof(buf), "missing[%d]", i);
        assert_u64_eq_ctx(buf, m[i].lo, (uint64_t)(2 * i + 2));
        assert_u64_eq_ctx(buf, m[i].hi, (uint64_t)(2 * i + 2));
    }
    /* max 0 only counts, and must not touch out */
    assert_u64_eq(seqset_missing(&s, NULL, 0), 100);
    assert_u64_eq(seqset_upto(&s), 1);
    seqset_free(&s);
}

static void test_huge_values(void **state)
{
    struct seqset s;
    struct seq_range m[4];
    char buf[256];

    seqset_init(&s);
    assert_u64_eq(add(&s, P53 - 10, P53 - 1), 10);
    assert_u64_eq(add(&s, 1, P53 - 12), P53 - 12);
    assert_u64_eq(seqset_upto(&s), P53 - 12);
    assert_u64_eq(seqset_missing(&s, m, 4), 1);
    assert_u64_eq(m[0].lo, P53 - 11);
    assert_u64_eq(m[0].hi, P53 - 11);
    assert_u64_eq(add(&s, P53 - 11, P53 - 11), 1);
    assert_u64_eq(seqset_upto(&s), P53 - 1);
    snprintf(buf, sizeof(buf), "[[1,%llu]]", (unsigned long long)(P53 - 1));
    check_ranges(&s, buf);
    assert_u64_eq(seqset_count_in(&s, 0, UINT64_MAX), P53 - 1);

    /* the ends of uint64: no wrap-around anywhere */
    seqset_clear(&s);
    assert_u64_eq(add(&s, UINT64_MAX, UINT64_MAX), 1);
    assert_true(seqset_contains(&s, UINT64_MAX));
    assert_false(seqset_contains(&s, UINT64_MAX - 1));
    assert_u64_eq(add(&s, UINT64_MAX - 1, UINT64_MAX - 1), 1);
    assert_u64_eq(s.n, 1);
    assert_u64_eq(seqset_missing(&s, m, 4), 1);
    assert_u64_eq(m[0].lo, 1);
    assert_u64_eq(m[0].hi, UINT64_MAX - 2);
    assert_u64_eq(add(&s, 0, UINT64_MAX), UINT64_MAX - 1);         /* 2^64 - 2 new */
    assert_u64_eq(seqset_count_in(&s, 0, UINT64_MAX), UINT64_MAX); /* saturated */
    assert_u64_eq(seqset_missing(&s, m, 4), 0);
    assert_u64_eq(seqset_upto(&s), UINT64_MAX);
    seqset_clear(&s);
    assert_u64_eq(add(&s, 0, UINT64_MAX), UINT64_MAX); /* 2^64, saturated */
    assert_u64_eq(add(&s, 0, UINT64_MAX), 0);
    seqset_free(&s);
}

static void test_bad_range(void **state)
{
    struct seqset s;
    uint64_t added = 99;

    seqset_init(&s);
    add(&s, 5, 6);
    assert_i64_eq(seqset_add(&s, 10, 9, &added), -EINVAL);
    assert_u64_eq(added, 0);
    check_ranges(&s, "[[5,6]]");
    assert_i64_eq(seqset_add(&s, 7, 7, NULL), 0); /* added may be NULL */
    check_ranges(&s, "[[5,7]]");
    seqset_free(&s);
}

static void test_copy(void **state)
{
    struct seqset a, b;

    seqset_init(&a);
    seqset_init(&b);
    assert_i64_eq(seqset_copy(&b, &a), 0);
    assert_u64_eq(b.n, 0);
    for (uint64_t v = 1; v < 100; v += 3)
        add(&a, v, v);
    add(&b, 500, 600);
    assert_i64_eq(seqset_copy(&b, &a), 0);
    check_ranges(&b, "[[1,1],[4,4],[7,7],[10,10],[13,13],[16,16],[19,19],[22,22],[25,25],"
                     "[28,28],[31,31],[34,34],[37,37],[40,40],[43,43],[46,46],[49,49],[52,52],"
                     "[55,55],[58,58],[61,61],[64,64],[67,67],[70,70],[73,73],[76,76],[79,79],"
                     "[82,82],[85,85],[88,88],[91,91],[94,94],[97,97]]");
    /* independent afterwards */
    add(&b, 2, 3);
    assert_false(seqset_contains(&a, 2));
    assert_true(seqset_contains(&b, 2));
    seqset_free(&a);
    seqset_free(&b);
}

static void test_count_in(void **state)
{
    struct seqset s;

    seqset_init(&s);
    add(&s, 1, 10);
    add(&s, 21, 30);
    assert_u64_eq(seqset_count_in(&s, 1, 30), 20);
    assert_u64_eq(seqset_count_in(&s, 5, 25), 11);
    assert_u64_eq(seqset_count_in(&s, 11, 20), 0);
    assert_u64_eq(seqset_count_in(&s, 30, 30), 1);
    assert_u64_eq(seqset_count_in(&s, 31, 1000), 0);
    assert_u64_eq(seqset_count_in(&s, 9, 2), 0);
    seqset_free(&s);
}

static void test_format_parse(void **state)
{
    static const char *const good[] = {
        "[]",
        "[[0,0]]",
        "[[1,10],[12,12],[14,20]]",
        "[[18446744073709551615,18446744073709551615]]",
        "[[0,18446744073709551615]]",
        "[[1,9007199254740991]]",
    };
    static const char *const bad[] = {
        "",
        "[",
        "]",
        "[[1,2]",
        "[[1,2]],",
        "[[1,2]] ",
        " []",
        "[[1, 2]]",
        "[[2,1]]",
        "[[1,2],[3,4]]",
        "[[1,3],[2,4]]",
        "[[5,6],[1,2]]",
        "[[01,2]]",
        "[[-1,2]]",
        "[[+1,2]]",
        "[[1.0,2]]",
        "[[1,2],]",
        "[[1,2,3]]",
        "[[1]]",
        "[1,2]",
        "[[],[]]",
        "[[18446744073709551616,1]]",
        "[[1,2]]x",
        "{}",
        "[[1,2]][]",
        "[[1,2],[4,5]",
    };
    struct seqset s;
    char buf[256], ctx[80];
    char small[8];

    seqset_init(&s);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(ctx, sizeof(ctx), "good \"%s\"", good[i]);
        assert_i64_eq_ctx(ctx, seqset_parse(&s, good[i], strlen(good[i])), 0);
        assert_true(seqset_format(&s, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, good[i]);
    }
    add(&s, 100, 200);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(ctx, sizeof(ctx), "bad \"%s\"", bad[i]);
        assert_i64_eq_ctx(ctx, seqset_parse(&s, bad[i], strlen(bad[i])), -EINVAL);
        assert_u64_eq_ctx(ctx, s.n, 0); /* left empty */
    }
    /* a NUL inside the text is not part of the grammar */
    assert_i64_eq(seqset_parse(&s, "[[1,2]]\0", 8), -EINVAL);
    /* the buffer too small */
    seqset_clear(&s);
    add(&s, 1000, 2000);
    assert_i64_eq(seqset_format(&s, small, sizeof(small)), -ENOSPC);
    assert_i64_eq(seqset_format(&s, small, 2), -ENOSPC);
    /* exactly big enough: "[[1000,2000]]" is 13 characters, and the NUL */
    assert_i64_eq(seqset_format(&s, buf, 14), 13);
    assert_i64_eq(seqset_format(&s, buf, 13), -ENOSPC);
    seqset_free(&s);
}

/* The worst case the header promises room for: 44 bytes per range plus 3. */
static void test_format_bound(void **state)
{
    struct seq_range r[3] = {{UINT64_MAX - 4, UINT64_MAX - 4},
                             {UINT64_MAX - 2, UINT64_MAX - 2},
                             {UINT64_MAX, UINT64_MAX}};
    char buf[3 * 44 + 3];

    assert_true(seq_ranges_format(r, 3, buf, sizeof(buf)) > 0);
    assert_i64_eq((long long)strlen(buf), 3 * 43 + 2 + 2);
}

/* A tiny deterministic PRNG (xorshift64*), so that a failure replays. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

#define UNIVERSE 300

/* Random adds against a bitmap: every answer must match the obvious model. */
static void test_random_vs_bitmap(void **state)
{
    for (int round = 0; round < 200; round++) {
        bool bit[UNIVERSE] = {false};
        struct seqset s;
        struct seqset back;
        struct seq_range m[8];
        char ctx[96], text[UNIVERSE * 12 + 8];
        uint64_t base = (round % 3 == 0) ? P53 - UNIVERSE : 0; /* also near 2^53 */

        seqset_init(&s);
        seqset_init(&back);
        for (int op = 0; op < 60; op++) {
            uint64_t lo = rnd() % UNIVERSE, len = rnd() % 12, hi, want = 0, got;
            hi = lo + len >= UNIVERSE ? UNIVERSE - 1 : lo + len;
            for (uint64_t v = lo; v <= hi; v++)
                if (!bit[v]) {
                    bit[v] = true;
                    want++;
                }
            got = add(&s, base + lo, base + hi);
            snprintf(ctx, sizeof(ctx), "round %d op %d add [%llu,%llu]", round, op,
                     (unsigned long long)lo, (unsigned long long)hi);
            assert_u64_eq_ctx(ctx, got, want);
            /* the invariant: sorted, neither overlapping nor touching */
            for (size_t k = 0; k < s.n; k++) {
                assert_true(s.r[k].lo <= s.r[k].hi);
                if (k)
                    assert_true(s.r[k - 1].hi + 1 < s.r[k].lo);
            }
        }
        for (uint64_t v = 0; v < UNIVERSE; v++) {
            snprintf(ctx, sizeof(ctx), "round %d contains %llu", round, (unsigned long long)v);
            assert_i64_eq_ctx(ctx, seqset_contains(&s, base + v), bit[v]);
        }
        if (base == 0) {
            /* upto and missing relative to seq 1 */
            uint64_t upto = 0, max = 0;
            size_t nmiss = 0, n;
            struct seq_range want[UNIVERSE];
            for (uint64_t v = 1; v < UNIVERSE && bit[v]; v++)
                upto = v;
            for (uint64_t v = 0; v < UNIVERSE; v++)
                if (bit[v])
                    max = v;
            for (uint64_t v = 1; v <= max; v++) {
                if (bit[v])
                    continue;
                if (nmiss && want[nmiss - 1].hi + 1 == v)
                    want[nmiss - 1].hi = v;
                else
                    want[nmiss++] = (struct seq_range){v, v};
            }
            snprintf(ctx, sizeof(ctx), "round %d", round);
            assert_u64_eq_ctx(ctx, seqset_upto(&s), upto);
            assert_u64_eq_ctx(ctx, seqset_max(&s), max);
            n = seqset_missing(&s, m, 8);
            assert_u64_eq_ctx(ctx, n, nmiss);
            for (size_t k = 0; k < n && k < 8; k++) {
                assert_u64_eq_ctx(ctx, m[k].lo, want[k].lo);
                assert_u64_eq_ctx(ctx, m[k].hi, want[k].hi);
                assert_true(m[k].lo > upto);
            }
        }
        /* the text form round-trips */
        assert_true(seqset_format(&s, text, sizeof(text)) > 0);
        assert_i64_eq(seqset_parse(&back, text, strlen(text)), 0);
        assert_u64_eq(back.n, s.n);
        if (s.n)
            assert_memory_equal(back.r, s.r, s.n * sizeof(*s.r));
        seqset_free(&back);
        seqset_free(&s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_adjacent_merge),
        cmocka_unit_test(test_overlaps),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_upto_and_zero),
        cmocka_unit_test(test_missing_capped),
        cmocka_unit_test(test_huge_values),
        cmocka_unit_test(test_bad_range),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_count_in),
        cmocka_unit_test(test_format_parse),
        cmocka_unit_test(test_format_bound),
        cmocka_unit_test(test_random_vs_bitmap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
