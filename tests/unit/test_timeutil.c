/*
 * test_timeutil: time_parse and time_format (common/timeutil.h).
 *
 * Expected epoch values were computed independently with GNU date, e.g.
 *   date -u -d "2026-12-02T13:00:00-05:30" +%s   ->  1796236200
 * and are hard-coded in milliseconds (seconds * 1000 plus the fraction).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "timeutil.h"

#include <errno.h>
#include <string.h>

static const struct {
    const char *s;
    int64_t ms;
} goods[] = {
    /* date -u -d 2026-12-02 +%s = 1796169600 */
    {"2026-12-02", 1796169600000},
    /* date -u -d 2026-12-02T13:00:00Z +%s = 1796216400 */
    {"2026-12-02T13:00:00Z", 1796216400000},
    {"2026-12-02t13:00:00z", 1796216400000},
    {"2026-12-02 13:00:00Z", 1796216400000},
    {"2026-12-02T13:00Z", 1796216400000}, /* seconds may be left out */
    {"2026-12-02T13:00:00.250Z", 1796216400250},
    {"2026-12-02T13:00:00.5Z", 1796216400500},
    {"2026-12-02T13:00:00.05Z", 1796216400050},
    {"2026-12-02T13:00:00,250Z", 1796216400250},
    {"2026-12-02T13:00:00.123456Z", 1796216400123}, /* below a ms is cut off */
    /* date -u -d 2026-12-02T14:00:00+01:00 +%s = 1796216400 */
    {"2026-12-02T14:00:00+01:00", 1796216400000},
    {"2026-12-02T14:00:00.250+01:00", 1796216400250},
    {"2026-12-02T14:00:00+0100", 1796216400000},
    /* date -u -d 2026-12-02T13:00:00+01:00 +%s = 1796212800 */
    {"2026-12-02T13:00:00+01:00", 1796212800000},
    /* date -u -d 2026-12-02T13:00:00-05:30 +%s = 1796236200 */
    {"2026-12-02T13:00:00-05:30", 1796236200000},
    /* date -u -d 2026-01-01T00:00:00+14:00 +%s = 1767175200 (the day before in UTC) */
    {"2026-01-01T00:00:00+14:00", 1767175200000},
    /* date -u -d 2026-12-02T23:59:00-12:00 +%s = 1796299140 (the day after in UTC) */
    {"2026-12-02T23:59:00-12:00", 1796299140000},
    /* leap days: date -u -d 2024-02-29 +%s = 1709164800, 2000-02-29 = 951782400 */
    {"2024-02-29", 1709164800000},
    {"2000-02-29", 951782400000},
    {"1970-01-01", 0},
    /* date -u -d 9999-12-31T23:59:59Z +%s = 253402300799 */
    {"9999-12-31T23:59:59.999Z", 253402300799999},
    /* epoch seconds; date -u -d @1763800000 = 2025-11-22T08:26:40Z */
    {"1763800000", 1763800000000},
    {"1763800000.5", 1763800000500},
    {"1763800000.123", 1763800000123},
    {"1763800000.1239", 1763800000123},
    {"0", 0},
    /* 13 or more digits are milliseconds */
    {"1763800000123", 1763800000123},
    {"0001763800000", 1763800000},
};

static void test_parse_good(void **state)
{
    for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
        int64_t ms = -42;
        assert_i64_eq_ctx(goods[i].s, time_parse(goods[i].s, &ms), 0);
        assert_i64_eq_ctx(goods[i].s, ms, goods[i].ms);
    }
}

static const char *const bads[] = {
    "",
    "abc",
    " 2026-12-02",
    "2026-13-01",
    "2026-00-10",
    "2026-12-00",
    "2026-12-32",
    "2026-02-30",
    "2025-02-29", /* not a leap year */
    "2100-02-29", /* divisible by 100, not by 400 */
    "1969-12-31", /* before the epoch */
    "2026-12-02T25:00:00Z",
    "2026-12-02T24:00:00Z",
    "2026-12-02T13:60:00Z",
    "2026-12-02T13:00:61Z",
    "2026-12-02T13:00:00",      /* a time of day without an offset */
    "2026-12-02T13:00",         /* likewise */
    "2026-12-02T13:00:00.250",  /* likewise */
    "2026-12-02T13:00:00Zjunk", /* trailing junk */
    "2026-12-02T13:00:00Z ",
    "2026-12-02junk",
    "2026-12-02Z",
    "2026-12-02T",
    "2026-12-02T1:00:00Z",
    "2026-12-02T13:00:00.Z", /* a decimal point without digits */
    "2026-12-02T13:00:00+1:00",
    "2026-12-02T13:00:00+01",
    "2026-12-02T13:00:00+24:00",
    "2026-12-02T13:00:00+01:60",
    "2026-12-02T13:00:00+01:00x",
    "2026/12/02",
    "2026-1-2",
    "1763800000x",
    "1763800000.",
    "1763800000.5.5",
    "-1763800000",
    "+1763800000",
    "1763800000123.5",   /* milliseconds take no fraction */
    "12345678901234567", /* 17 digits */
    "99999999999999999999999999999",
    /* overlong: 41 and more characters */
    "2026-12-02T13:00:00.000000000000000000000Z",
    "2026-12-02T13:00:00.2500000000000000000000000000000000000000000000000000000000000Z",
};

static void test_parse_bad(void **state)
{
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        int64_t ms = 0;
        assert_i64_eq_ctx(bads[i], time_parse(bads[i], &ms), -EINVAL);
    }
}

static void test_parse_null(void **state)
{
    int64_t ms = 0;
    assert_i64_eq(time_parse(NULL, &ms), -EINVAL);
}

static void test_format(void **state)
{
    char buf[32];

    assert_string_equal(time_format(1796216400250, buf, sizeof(buf)), "2026-12-02T13:00:00.250Z");
    assert_string_equal(time_format(0, buf, sizeof(buf)), "1970-01-01T00:00:00.000Z");
    assert_string_equal(time_format(1763800000001, buf, sizeof(buf)), "2025-11-22T08:26:40.001Z");
    assert_string_equal(time_format(253402300799999, buf, sizeof(buf)), "9999-12-31T23:59:59.999Z");
    /* before the epoch the milliseconds still count forward from the second */
    assert_string_equal(time_format(-1, buf, sizeof(buf)), "1969-12-31T23:59:59.999Z");
    assert_string_equal(time_format(-1000, buf, sizeof(buf)), "1969-12-31T23:59:59.000Z");
    assert_string_equal(time_format(-1001, buf, sizeof(buf)), "1969-12-31T23:59:58.999Z");
}

/* The documented minimum of 25 bytes holds the whole string. */
static void test_format_min_buffer(void **state)
{
    char buf[25];

    memset(buf, 'x', sizeof(buf));
    time_format(1796216400250, buf, sizeof(buf));
    assert_string_equal(buf, "2026-12-02T13:00:00.250Z");
}

static void test_format_parse_round_trip(void **state)
{
    static const int64_t vals[] = {
        0,
        1,
        999,
        1000,
        1763800000123,
        951868799999 /* 2000-02-29T23:59:59.999Z */,
        1796216400250,
        253402300799999,
    };
    char buf[32];

    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        int64_t ms = -42;
        time_format(vals[i], buf, sizeof(buf));
        assert_i64_eq_ctx(buf, time_parse(buf, &ms), 0);
        assert_i64_eq_ctx(buf, ms, vals[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_null),        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_min_buffer), cmocka_unit_test(test_format_parse_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
