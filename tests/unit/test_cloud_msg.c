/*
 * test_cloud_msg: the cloud's loss, health and ack payloads (cloud/msg.h): loss reports
 * accepted and refused field by field, health messages checked for UTF-8, NUL bytes and
 * their envelope with the gauges taken out, and acks encoded exactly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "msg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENV "\"v\":1,\"gw\":\"gw-01\",\"stream\":\"0123456789abcdef\""
#define ENTRY "{\"first\":1,\"last\":10,\"count\":10,\"reason\":\"queue_full\",\"ts\":5}"

static int parse_loss(const char *s, struct msg_loss *l, char *err, size_t errlen)
{
    err[0] = '\0';
    return msg_parse_loss(s, strlen(s), l, err, errlen);
}

static void test_loss_good(void **state)
{
    struct msg_loss l;
    char err[200];

    assert_i64_eq(parse_loss("{" ENV ",\"losses\":[" ENTRY
                             ",{\"first\":20,\"last\":20,\"count\":0,\"reason\":\"not_queued\","
                             "\"ts\":1763800000123,\"extra\":[1,2]}],\"future\":{}}",
                             &l, err, sizeof(err)),
                  0);
    assert_string_equal(l.gw, "gw-01");
    assert_string_equal(l.stream, "0123456789abcdef");
    assert_i64_eq(l.n, 2);
    assert_u64_eq(l.losses[0].first, 1);
    assert_u64_eq(l.losses[0].last, 10);
    assert_u64_eq(l.losses[0].count, 10);
    assert_string_equal(l.losses[0].reason, "queue_full");
    assert_i64_eq(l.losses[0].ts_ms, 5);
    assert_u64_eq(l.losses[1].first, 20);
    assert_u64_eq(l.losses[1].count, 0);
    assert_string_equal(l.losses[1].reason, "not_queued");
    assert_i64_eq(l.losses[1].ts_ms, 1763800000123);
    /* JSON white space around the object, the largest seq, every reason */
    assert_i64_eq(parse_loss(" \r\n\t{" ENV ",\"losses\":[{\"first\":9007199254740991,"
                             "\"last\":9007199254740991,\"count\":1,\"reason\":\"disk_error\","
                             "\"ts\":0},{\"first\":1,\"last\":9007199254740991,"
                             "\"count\":9007199254740991,\"reason\":\"queue_corrupt\","
                             "\"ts\":253402300799999}]}\n",
                             &l, err, sizeof(err)),
                  0);
    assert_u64_eq(l.losses[0].first, 9007199254740991ull);
    assert_u64_eq(l.losses[1].count, 9007199254740991ull);
}

static void test_loss_bad(void **state)
{
    static const struct {
        const char *json, *why;
    } bad[] = {
        {"", "not valid JSON"},
        {"x", "not valid JSON"},
        {"[]", "not a JSON object"},
        {"{" ENV ",\"losses\":[" ENTRY "]} x", "not valid JSON"},
        {"\x01{" ENV ",\"losses\":[" ENTRY "]}", "not valid JSON"},
        {"{\"gw\":\"gw-01\",\"stream\":\"0123456789abcdef\",\"losses\":[" ENTRY "]}", "v:"},
        {"{\"v\":2,\"gw\":\"gw-01\",\"stream\":\"0123456789abcdef\",\"losses\":[" ENTRY "]}", "v:"},
        {"{\"v\":\"1\",\"gw\":\"gw-01\",\"stream\":\"0123456789abcdef\",\"losses\":[" ENTRY "]}",
         "v:"},
        {"{\"v\":1,\"gw\":\"bad id\",\"stream\":\"0123456789abcdef\",\"losses\":[" ENTRY "]}",
         "gw:"},
        {"{\"v\":1,\"gw\":\"gw-01\",\"stream\":\"0123456789ABCDEF\",\"losses\":[" ENTRY "]}",
         "stream:"},
        {"{" ENV "}", "losses:"},
        {"{" ENV ",\"losses\":[]}", "losses:"},
        {"{" ENV ",\"losses\":{}}", "losses:"},
        {"{" ENV ",\"losses\":[1]}", "losses[0]: not an object"},
        {"{" ENV ",\"losses\":[" ENTRY ",\"x\"]}", "losses[1]: not an object"},
        {"{" ENV ",\"losses\":[{\"last\":10,\"count\":1,\"reason\":\"queue_full\",\"ts\":1}]}",
         "losses[0].first"},
        {"{" ENV ",\"losses\":[{\"first\":0,\"last\":10,\"count\":1,\"reason\":\"queue_full\","
         "\"ts\":1}]}",
         "losses[0].first"},
        {"{" ENV ",\"losses\":[{\"first\":1.5,\"last\":10,\"count\":1,\"reason\":\"queue_full\","
         "\"ts\":1}]}",
         "losses[0].first"},
        {"{" ENV ",\"losses\":[{\"first\":9007199254740992,\"last\":9007199254740992,"
         "\"count\":1,\"reason\":\"queue_full\",\"ts\":1}]}",
         "losses[0].first"},
        {"{" ENV ",\"losses\":[{\"first\":5,\"last\":4,\"count\":0,\"reason\":\"queue_full\","
         "\"ts\":1}]}",
         "losses[0].last"},
        {"{" ENV ",\"losses\":[{\"first\":1,\"last\":10,\"count\":11,\"reason\":\"queue_full\","
         "\"ts\":1}]}",
         "losses[0].count"},
        {"{" ENV ",\"losses\":[{\"first\":1,\"last\":10,\"count\":-1,\"reason\":\"queue_full\","
         "\"ts\":1}]}",
         "losses[0].count"},
        {"{" ENV ",\"losses\":[{\"first\":1,\"last\":10,\"count\":1,\"reason\":\"other\","
         "\"ts\":1}]}",
         "losses[0].reason"},
        {"{" ENV ",\"losses\":[{\"first\":1,\"last\":10,\"count\":1,\"reason\":\"queue_full\"}]}",
         "losses[0].ts"},
        {"{" ENV ",\"losses\":[{\"first\":1,\"last\":10,\"count\":1,\"reason\":\"queue_full\","
         "\"ts\":-1}]}",
         "losses[0].ts"},
    };
    struct msg_loss l;
    char err[200], ctx[300];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(ctx, sizeof(ctx), "bad[%zu] %s", i, bad[i].json);
        assert_i64_eq_ctx(ctx, parse_loss(bad[i].json, &l, err, sizeof(err)), -EINVAL);
        assert_contains_ctx(ctx, err, bad[i].why);
    }
}

static void test_loss_limits(void **state)
{
    struct msg_loss l;
    char err[200];
    size_t cap = 128 + 70 * sizeof(ENTRY), pos;
    char *buf = malloc(cap);
    int rc;

    assert_non_null(buf);
    /* 64 entries are allowed, 65 are not */
    for (int n = 64; n <= 65; n++) {
        pos = (size_t)snprintf(buf, cap, "{" ENV ",\"losses\":[");
        for (int i = 0; i < n; i++)
            pos += (size_t)snprintf(buf + pos, cap - pos, "%s" ENTRY, i ? "," : "");
        snprintf(buf + pos, cap - pos, "]}");
        rc = parse_loss(buf, &l, err, sizeof(err));
        assert_i64_eq(rc, n == 64 ? 0 : -EINVAL);
    }
    assert_i64_eq(l.n, 0); /* cleared on failure */
    free(buf);
    /* the size bound comes before parsing */
    buf = malloc(MSG_LOSS_MAX_PAYLOAD + 2);
    assert_non_null(buf);
    memset(buf, ' ', MSG_LOSS_MAX_PAYLOAD + 1);
    assert_i64_eq(msg_parse_loss(buf, MSG_LOSS_MAX_PAYLOAD + 1, &l, err, sizeof(err)), -EINVAL);
    assert_contains(err, "exceeds");
    free(buf);
}

static int parse_health(const char *s, struct msg_health *h, char *err, size_t errlen)
{
    err[0] = '\0';
    return msg_parse_health(s, strlen(s), h, err, errlen);
}

static void test_health(void **state)
{
    struct msg_health h;
    char err[200];

    assert_i64_eq(parse_health("{\"v\":1,\"gw\":\"gw-01\",\"ts\":1763800000123,"
                               "\"queue\":{\"depth\":12,\"oldest_age_s\":3},\"name\":\"K\xc3\xbc"
                               "che \xe2\x82\xac \xf0\x9f\x94\x8c\"}",
                               &h, err, sizeof(err)),
                  0);
    assert_string_equal(h.gw, "gw-01");
    assert_true(h.has_ts);
    assert_i64_eq(h.h.ts_ms, 1763800000123);
    assert_i64_eq(h.h.queue_depth, 12);
    assert_i64_eq(h.h.oldest_age_s, 3);
    /* the gauges are optional; a wrong type is just not taken */
    assert_i64_eq(parse_health("{\"v\":1,\"gw\":\"gw-01\",\"queue\":{\"depth\":-1,"
                               "\"oldest_age_s\":\"3\"}}",
                               &h, err, sizeof(err)),
                  0);
    assert_false(h.has_ts);
    assert_i64_eq(h.h.queue_depth, -1);
    assert_i64_eq(h.h.oldest_age_s, -1);
    assert_i64_eq(
        parse_health("{\"v\":1,\"gw\":\"gw-01\",\"ts\":\"x\",\"queue\":[]}", &h, err, sizeof(err)),
        0);
    assert_false(h.has_ts);
    assert_i64_eq(h.h.queue_depth, -1);

    static const char *const bad[] = {
        "",
        "x",
        "[]",
        "{\"gw\":\"gw-01\"}",
        "{\"v\":2,\"gw\":\"gw-01\"}",
        "{\"v\":1}",
        "{\"v\":1,\"gw\":\"\"}",
        "{\"v\":1,\"gw\":\"gw-01\"} x",
        "{\"v\":1,\"gw\":\"gw-01\"",
        "\x01{\"v\":1,\"gw\":\"gw-01\"}",
        "{\"v\":1,\"gw\":\"gw-01\",\"x\":\"\xff\"}",
        "{\"v\":1,\"gw\":\"gw-01\",\"x\":\"\xc0\xaf\"}",         /* overlong '/' */
        "{\"v\":1,\"gw\":\"gw-01\",\"x\":\"\xed\xa0\x80\"}",     /* a surrogate */
        "{\"v\":1,\"gw\":\"gw-01\",\"x\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"v\":1,\"gw\":\"gw-01\",\"x\":\"\xe2\x82\"}",         /* truncated */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char ctx[200];
        snprintf(ctx, sizeof(ctx), "bad health[%zu]", i);
        assert_i64_eq_ctx(ctx, parse_health(bad[i], &h, err, sizeof(err)), -EINVAL);
        assert_true(err[0] != '\0');
    }
    /* a NUL byte inside */
    assert_i64_eq(
        msg_parse_health("{\"v\":1,\"gw\":\"gw-01\",\"x\":\"a\0b\"}", 30, &h, err, sizeof(err)),
        -EINVAL);
    assert_contains(err, "UTF-8");
}

static void test_utf8(void **state)
{
    assert_true(msg_utf8_valid("", 0));
    assert_true(msg_utf8_valid("plain", 5));
    assert_true(msg_utf8_valid("\xc2\x80\xdf\xbf", 4));
    assert_true(msg_utf8_valid("\xe0\xa0\x80\xef\xbf\xbf", 6));
    assert_true(msg_utf8_valid("\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8));
    assert_false(msg_utf8_valid("\x80", 1));
    assert_false(msg_utf8_valid("\xc1\xbf", 2));
    assert_false(msg_utf8_valid("\xe0\x9f\xbf", 3));     /* overlong */
    assert_false(msg_utf8_valid("\xf0\x8f\xbf\xbf", 4)); /* overlong */
    assert_false(msg_utf8_valid("\xf5\x80\x80\x80", 4));
    assert_false(msg_utf8_valid("\xc2", 1));
    assert_false(msg_utf8_valid("\xc2\x20", 2));
    assert_false(msg_utf8_valid("a\0b", 3));
}

static void test_ack(void **state)
{
    struct store_ack a;
    char buf[MSG_ACK_MAX];
    int n;

    memset(&a, 0, sizeof(a));
    snprintf(a.stream, sizeof(a.stream), "5f3a9c0e12ab44d1");
    a.upto = 1042;
    n = msg_format_ack(&a, buf, sizeof(buf));
    assert_string_equal(buf,
                        "{\"v\":1,\"stream\":\"5f3a9c0e12ab44d1\",\"upto\":1042,\"missing\":[]}");
    assert_i64_eq(n, (long long)strlen(buf));
    a.nmissing = 2;
    a.missing[0] = (struct seq_range){1050, 1061};
    a.missing[1] = (struct seq_range){1100, 1100};
    msg_format_ack(&a, buf, sizeof(buf));
    assert_string_equal(buf, "{\"v\":1,\"stream\":\"5f3a9c0e12ab44d1\",\"upto\":1042,"
                             "\"missing\":[[1050,1061],[1100,1100]]}");
    /* the largest ack fits MSG_ACK_MAX: a 32-digit stream, 32 ranges of 20-digit numbers */
    snprintf(a.stream, sizeof(a.stream), "%s", "0123456789abcdef0123456789abcdef");
    a.upto = UINT64_MAX;
    a.nmissing = STORE_ACK_MISSING_MAX;
    for (int i = 0; i < STORE_ACK_MISSING_MAX; i++)
        a.missing[i] = (struct seq_range){UINT64_MAX - 1, UINT64_MAX - 1};
    n = msg_format_ack(&a, buf, sizeof(buf));
    assert_true(n > 0);
    assert_true((size_t)n < sizeof(buf));
    assert_i64_eq(msg_format_ack(&a, buf, (size_t)n), -ENOSPC);
    assert_i64_eq(msg_format_ack(&a, buf, (size_t)n + 1), n);
    /* refuses what it cannot encode */
    a.nmissing = STORE_ACK_MISSING_MAX + 1;
    assert_i64_eq(msg_format_ack(&a, buf, sizeof(buf)), -EINVAL);
    a.nmissing = 0;
    a.stream[0] = '\0';
    assert_i64_eq(msg_format_ack(&a, buf, sizeof(buf)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_good),   cmocka_unit_test(test_loss_bad),
        cmocka_unit_test(test_loss_limits), cmocka_unit_test(test_health),
        cmocka_unit_test(test_utf8),        cmocka_unit_test(test_ack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
