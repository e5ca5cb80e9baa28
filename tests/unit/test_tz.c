/* tz: zone names, offsets, local buckets across DST switches and :30/:45 offsets. Expected
 * instants are written as UTC civil times (utc() below), worked out by hand from each
 * zone's rules (tzdata 2025b). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "tz.h"

#include <errno.h>
#include <string.h>

#define H 3600000LL
#define M 60000LL

/* UTC ms of a civil UTC time (proleptic Gregorian), independent of tz.c. */
static int64_t utc(int y, int mo, int d, int h, int mi)
{
    int64_t yy = y - (mo <= 2), era = (yy >= 0 ? yy : yy - 399) / 400, yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    return days * 86400000 + h * H + mi * M;
}

static const tz_t *zone(const char *name)
{
    const tz_t *tz = NULL;
    assert_int_equal(tz_get(name, &tz), 0);
    assert_non_null(tz);
    return tz;
}

static void test_names(void **state)
{
    tz_t *t = NULL;

    assert_true(tz_valid("Europe/Berlin"));
    assert_true(tz_valid("UTC"));
    assert_true(tz_valid("America/Argentina/Buenos_Aires"));
    assert_false(tz_valid("Nope/Nowhere"));
    assert_false(tz_valid("+05:30")); /* an offset is not a zone */
    assert_false(tz_valid(""));
    assert_false(tz_valid("../../etc/passwd"));
    assert_false(tz_valid("Europe/Berlin/"));
    assert_int_equal(tz_open("Asia/Kolkata", &t), 0);
    assert_string_equal(tz_name(t), "Asia/Kolkata");
    tz_free(t);
    assert_int_equal(tz_open("Mars/Olympus_Mons", &t), -EINVAL);
    assert_null(t);
}

static void test_offsets(void **state)
{
    /* winter and summer */
    assert_i64_eq(tz_offset_s(zone("Europe/Berlin"), utc(2026, 1, 15, 12, 0)), 3600);
    assert_i64_eq(tz_offset_s(zone("Europe/Berlin"), utc(2026, 7, 15, 12, 0)), 7200);
    assert_i64_eq(tz_offset_s(zone("America/New_York"), utc(2026, 1, 15, 12, 0)), -5 * 3600);
    assert_i64_eq(tz_offset_s(zone("America/New_York"), utc(2026, 7, 15, 12, 0)), -4 * 3600);
    assert_i64_eq(tz_offset_s(zone("Asia/Kolkata"), utc(2026, 7, 15, 12, 0)), 19800);
    assert_i64_eq(tz_offset_s(zone("Asia/Kathmandu"), utc(2026, 7, 15, 12, 0)), 20700);
    /* southern hemisphere: summer time in January */
    assert_i64_eq(tz_offset_s(zone("Australia/Adelaide"), utc(2026, 1, 15, 12, 0)), 37800);
    assert_i64_eq(tz_offset_s(zone("Australia/Adelaide"), utc(2026, 7, 15, 12, 0)), 34200);
    /* the switch itself: Berlin 2026-03-29 01:00Z, clocks 02:00 -> 03:00 */
    assert_i64_eq(tz_offset_s(zone("Europe/Berlin"), utc(2026, 3, 29, 1, 0) - 1), 3600);
    assert_i64_eq(tz_offset_s(zone("Europe/Berlin"), utc(2026, 3, 29, 1, 0)), 7200);
    assert_true(
        tz_whole_hours(zone("Europe/Berlin"), utc(2026, 1, 1, 0, 0), utc(2027, 1, 1, 0, 0)));
    assert_false(
        tz_whole_hours(zone("Asia/Kolkata"), utc(2026, 1, 1, 0, 0), utc(2026, 1, 2, 0, 0)));
    assert_false(
        tz_whole_hours(zone("Australia/Adelaide"), utc(2026, 1, 1, 0, 0), utc(2026, 1, 2, 0, 0)));
}

/* Length in hours of the local day that contains t. */
static int64_t day_hours(const tz_t *tz, int64_t t)
{
    int64_t d = tz_floor(tz, t, TZ_DAY);
    return (tz_next(tz, d, TZ_DAY) - d) / H;
}

static void test_day_lengths(void **state)
{
    const tz_t *be = zone("Europe/Berlin"), *ny = zone("America/New_York");
    const tz_t *ad = zone("Australia/Adelaide"), *ka = zone("Asia/Kathmandu");

    /* Berlin: midnight 2026-03-29 is 03-28 23:00Z (CET); the day ends at 22:00Z (CEST) */
    assert_i64_eq(tz_floor(be, utc(2026, 3, 29, 12, 0), TZ_DAY), utc(2026, 3, 28, 23, 0));
    assert_i64_eq(tz_next(be, utc(2026, 3, 28, 23, 0), TZ_DAY), utc(2026, 3, 29, 22, 0));
    assert_i64_eq(day_hours(be, utc(2026, 3, 29, 12, 0)), 23);
    assert_i64_eq(day_hours(be, utc(2026, 10, 25, 12, 0)), 25);
    assert_i64_eq(day_hours(be, utc(2026, 10, 26, 12, 0)), 24);
    /* New York: 2026-03-08 and 2026-11-01 */
    assert_i64_eq(day_hours(ny, utc(2026, 3, 8, 17, 0)), 23);
    assert_i64_eq(day_hours(ny, utc(2026, 11, 1, 17, 0)), 25);
    /* Adelaide: summer time ends 2026-04-05 03:00 local, starts 2026-10-04 02:00 local */
    assert_i64_eq(day_hours(ad, utc(2026, 4, 5, 2, 0)), 25);
    assert_i64_eq(day_hours(ad, utc(2026, 10, 4, 2, 0)), 23);
    /* Adelaide midnight 2026-04-05 (+10:30) is 04-04 13:30Z; the next (+09:30) 04-05 14:30Z */
    assert_i64_eq(tz_floor(ad, utc(2026, 4, 5, 2, 0), TZ_DAY), utc(2026, 4, 4, 13, 30));
    assert_i64_eq(tz_next(ad, utc(2026, 4, 4, 13, 30), TZ_DAY), utc(2026, 4, 5, 14, 30));
    /* Kathmandu +05:45: local midnight 2026-07-15 is 07-14 18:15Z */
    assert_i64_eq(tz_floor(ka, utc(2026, 7, 15, 0, 0), TZ_DAY), utc(2026, 7, 14, 18, 15));
    assert_i64_eq(day_hours(ka, utc(2026, 7, 15, 0, 0)), 24);
}

static void test_hours(void **state)
{
    const tz_t *be = zone("Europe/Berlin"), *ka = zone("Asia/Kathmandu"),
               *in = zone("Asia/Kolkata");
    int64_t d, t;
    int n = 0, twice = 0;
    char buf[TZ_ISO_MAX];

    /* Kathmandu: 2026-01-01T00:00Z is 05:45 local; its hour started at 05:00 = 23:15Z */
    assert_i64_eq(tz_floor(ka, utc(2026, 1, 1, 0, 0), TZ_HOUR), utc(2025, 12, 31, 23, 15));
    assert_i64_eq(tz_next(ka, utc(2025, 12, 31, 23, 15), TZ_HOUR), utc(2026, 1, 1, 0, 15));
    /* Kolkata +05:30: hours start at hh:30Z, half hours at hh:00Z and hh:30Z */
    assert_i64_eq(tz_floor(in, utc(2026, 1, 1, 0, 10), TZ_HOUR), utc(2025, 12, 31, 23, 30));
    assert_i64_eq(tz_floor(in, utc(2026, 1, 1, 0, 10), TZ_30MIN), utc(2026, 1, 1, 0, 0));
    /* Berlin 2026-10-25: 25 hour buckets, 02:00 twice (+02:00, then +01:00) */
    d = tz_floor(be, utc(2026, 10, 25, 12, 0), TZ_DAY);
    for (t = d; t < tz_next(be, d, TZ_DAY); t = tz_next(be, t, TZ_HOUR)) {
        tz_format(be, t, buf, sizeof(buf));
        if (strncmp(buf + 11, "02:00", 5) == 0)
            twice++;
        n++;
    }
    assert_int_equal(n, 25);
    assert_int_equal(twice, 2);
    assert_string_equal(tz_format(be, utc(2026, 10, 25, 0, 0), buf, sizeof(buf)),
                        "2026-10-25T02:00:00+02:00");
    assert_string_equal(tz_format(be, utc(2026, 10, 25, 1, 0), buf, sizeof(buf)),
                        "2026-10-25T02:00:00+01:00");
    /* Berlin 2026-03-29: 23 buckets, 02:00 missing: 01:00 CET is followed by 03:00 CEST */
    d = tz_floor(be, utc(2026, 3, 29, 12, 0), TZ_DAY);
    n = 0;
    for (t = d; t < tz_next(be, d, TZ_DAY); t = tz_next(be, t, TZ_HOUR))
        n++;
    assert_int_equal(n, 23);
    assert_i64_eq(tz_next(be, utc(2026, 3, 29, 0, 0), TZ_HOUR), utc(2026, 3, 29, 1, 0));
    assert_string_equal(tz_format(be, utc(2026, 3, 29, 1, 0), buf, sizeof(buf)),
                        "2026-03-29T03:00:00+02:00");
    assert_string_equal(tz_format(ka, utc(2026, 1, 1, 0, 0) + 1500, buf, sizeof(buf)),
                        "2026-01-01T05:45:01.500+05:45");
    assert_string_equal(
        tz_format(zone("America/New_York"), utc(2026, 1, 1, 0, 0), buf, sizeof(buf)),
        "2025-12-31T19:00:00-05:00");
}

static void test_calendar(void **state)
{
    const tz_t *be = zone("Europe/Berlin"), *ny = zone("America/New_York");
    struct tz_civil c;

    /* 2026-03-29 is a Sunday: its week started Monday 03-23 00:00 CET = 03-22 23:00Z, and
     * the next week starts 03-30 00:00 CEST = 03-29 22:00Z (a week of 167 hours) */
    assert_i64_eq(tz_floor(be, utc(2026, 3, 29, 12, 0), TZ_WEEK), utc(2026, 3, 22, 23, 0));
    assert_i64_eq(tz_next(be, utc(2026, 3, 22, 23, 0), TZ_WEEK), utc(2026, 3, 29, 22, 0));
    /* months: March 2026 in Berlin starts 02-28 23:00Z, April at 03-31 22:00Z */
    assert_i64_eq(tz_floor(be, utc(2026, 3, 15, 0, 0), TZ_MONTH), utc(2026, 2, 28, 23, 0));
    assert_i64_eq(tz_next(be, utc(2026, 2, 28, 23, 0), TZ_MONTH), utc(2026, 3, 31, 22, 0));
    assert_i64_eq(tz_next(be, utc(2026, 11, 30, 23, 0), TZ_MONTH), utc(2026, 12, 31, 23, 0));
    /* years: 2026 in New York starts 2026-01-01 05:00Z */
    assert_i64_eq(tz_floor(ny, utc(2026, 6, 1, 0, 0), TZ_YEAR), utc(2026, 1, 1, 5, 0));
    assert_i64_eq(tz_next(ny, utc(2026, 1, 1, 5, 0), TZ_YEAR), utc(2027, 1, 1, 5, 0));
    /* a local time in the spring gap moves past it; an ambiguous one is the first */
    assert_i64_eq(tz_local(be, 2026, 3, 29, 2, 30), utc(2026, 3, 29, 1, 0));
    assert_i64_eq(tz_local(be, 2026, 10, 25, 2, 30), utc(2026, 10, 25, 0, 30));
    tz_civil(be, utc(2026, 3, 29, 1, 0), &c);
    assert_int_equal(c.h, 3);
    assert_int_equal(c.wday, 6); /* Sunday */
    /* before 1970 too */
    assert_i64_eq(tz_floor(zone("UTC"), utc(1969, 12, 31, 12, 0), TZ_DAY), utc(1969, 12, 31, 0, 0));
    /* UTC 5-minute buckets */
    assert_i64_eq(tz_floor(zone("UTC"), utc(2026, 1, 1, 0, 7), TZ_5MIN), utc(2026, 1, 1, 0, 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),       cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_day_lengths), cmocka_unit_test(test_hours),
        cmocka_unit_test(test_calendar),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tz_cache_clear();
    return rc;
}
