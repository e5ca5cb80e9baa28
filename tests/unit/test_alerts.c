/*
 * test_alerts: the alert rules (cloud/alerts.h): the state machine (firing, reminders,
 * acknowledged, resolved, firing again), the retry backoff, each condition on hand-made
 * numbers; then the whole subsystem on a real SQLite store: a silent meter fires, its
 * notification fails once and is retried after the backoff with every attempt recorded,
 * reminders stop at the acknowledgement, a good reading resolves it; a delivery that keeps
 * failing gives up after retry_max; a threshold must hold for for_s. The sender is the one
 * seam faked here (the integration test sends real webhooks).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "alerts.h"
#include "quantities.h"
#include "store.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW "gw-01"
#define STREAM "0123456789abcdef"
#define T0 1763800000000LL

/* ---- the pure parts ---- */

static void test_state_machine(void **state)
{
    enum alert_state s = ALERT_NONE;
    int64_t notified = 0;
    (void)state;

    assert_int_equal(alert_step(&s, &notified, ALERT_COND_CLEAR, 1000, 60000), ALERT_ACT_NONE);
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_HOLD, 1000, 60000), ALERT_ACT_NONE);
    assert_int_equal(s, ALERT_NONE);
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_FIRE, 2000, 60000), ALERT_ACT_FIRE);
    assert_int_equal(s, ALERT_FIRING);
    assert_i64_eq(notified, 2000);
    /* no reminder before repeat_ms; one at it, counted from the last notification */
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_FIRE, 61999, 60000), ALERT_ACT_NONE);
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_HOLD, 62000, 60000), ALERT_ACT_REMIND);
    assert_i64_eq(notified, 62000);
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_FIRE, 100000, 60000), ALERT_ACT_NONE);
    /* repeat 0: no reminders at all */
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_FIRE, 10000000, 0), ALERT_ACT_NONE);
    /* acknowledged: no reminders, but it still resolves */
    s = ALERT_ACKED;
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_FIRE, 20000000, 60000), ALERT_ACT_NONE);
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_HOLD, 20000000, 60000), ALERT_ACT_NONE);
    assert_int_equal(s, ALERT_ACKED);
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_CLEAR, 20000001, 60000),
                     ALERT_ACT_RESOLVE);
    assert_int_equal(s, ALERT_RESOLVED);
    /* resolved: a new condition is a new alert */
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_CLEAR, 20000002, 60000), ALERT_ACT_NONE);
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_FIRE, 20000003, 60000), ALERT_ACT_FIRE);
    assert_int_equal(alert_step(&s, &notified, ALERT_COND_CLEAR, 20000004, 60000),
                     ALERT_ACT_RESOLVE);

    assert_string_equal(alert_state_name(ALERT_ACKED), "acknowledged");
    assert_int_equal(alert_state_parse("firing"), ALERT_FIRING);
    assert_int_equal(alert_state_parse("resolved"), ALERT_RESOLVED);
    assert_int_equal(alert_state_parse("open"), -1);
    assert_int_equal(alert_state_parse(""), -1);
}

static void test_backoff(void **state)
{
    (void)state;
    assert_i64_eq(alert_backoff_ms(1, 1000, 30000), 1000);
    assert_i64_eq(alert_backoff_ms(2, 1000, 30000), 2000);
    assert_i64_eq(alert_backoff_ms(3, 1000, 30000), 4000);
    assert_i64_eq(alert_backoff_ms(5, 1000, 30000), 16000);
    assert_i64_eq(alert_backoff_ms(6, 1000, 30000), 30000);
    assert_i64_eq(alert_backoff_ms(20, 1000, 30000), 30000);
    assert_i64_eq(alert_backoff_ms(1000, 100, 3600000), 3600000); /* no overflow */
}

static void test_conditions(void **state)
{
    double v[4];
    (void)state;

    /* silent: the newest good reading's age */
    assert_int_equal(alert_cond_silent(true, 1000, 0, 5999, 5000), ALERT_COND_CLEAR);
    assert_int_equal(alert_cond_silent(true, 1000, 0, 6000, 5000), ALERT_COND_FIRE);
    assert_int_equal(alert_cond_silent(false, 0, 3000, 7999, 5000), ALERT_COND_HOLD);
    assert_int_equal(alert_cond_silent(false, 0, 3000, 8000, 5000), ALERT_COND_FIRE);

    /* gateway: retained offline status, or silence */
    assert_int_equal(alert_cond_gateway("offline", 1000, true, 900, 1500, 1000), ALERT_COND_HOLD);
    assert_int_equal(alert_cond_gateway("offline", 1000, true, 900, 2000, 1000), ALERT_COND_FIRE);
    assert_int_equal(alert_cond_gateway("online", 1000, true, 1500, 2000, 1000), ALERT_COND_CLEAR);
    assert_int_equal(alert_cond_gateway("online", 1000, true, 1500, 2500, 1000), ALERT_COND_FIRE);
    assert_int_equal(alert_cond_gateway("", 0, false, 0, 2500, 1000), ALERT_COND_HOLD);

    /* threshold above 100 for a window: every reading of it and the one before */
    v[0] = 150, v[1] = 120, v[2] = 101;
    assert_int_equal(alert_cond_threshold(v, 3, true, 130, 100, false, 10000), ALERT_COND_FIRE);
    assert_int_equal(alert_cond_threshold(v, 3, true, 90, 100, false, 10000), ALERT_COND_HOLD);
    assert_int_equal(alert_cond_threshold(v, 3, false, 0, 100, false, 10000), ALERT_COND_HOLD);
    v[1] = 100; /* not strictly above */
    assert_int_equal(alert_cond_threshold(v, 3, true, 130, 100, false, 10000), ALERT_COND_HOLD);
    v[0] = 99; /* the newest is back: clear */
    assert_int_equal(alert_cond_threshold(v, 3, true, 130, 100, false, 10000), ALERT_COND_CLEAR);
    /* no reading in the window: the value before it still stands */
    assert_int_equal(alert_cond_threshold(v, 0, true, 130, 100, false, 10000), ALERT_COND_FIRE);
    assert_int_equal(alert_cond_threshold(v, 0, false, 0, 100, false, 10000), ALERT_COND_HOLD);
    /* below, and for_ms 0: the newest alone */
    v[0] = 190;
    assert_int_equal(alert_cond_threshold(v, 1, false, 0, 200, true, 0), ALERT_COND_FIRE);
    v[0] = 200;
    assert_int_equal(alert_cond_threshold(v, 1, false, 0, 200, true, 0), ALERT_COND_CLEAR);
}

/* ---- the subsystem on a real store ---- */

#define CALLS_MAX 32
struct sent {
    char channel[CFG_ALERT_NAME_MAX];
    char event[ALERT_EVENT_MAX];
    char json[4096];
};

struct fixture {
    char dir[64];
    char path[128];
    store_t *st;
    alerts_t *a;
    struct cfg_alerts cfg;
    int calls;
    int fail_first; /* the first this many calls fail */
    struct sent sent[CALLS_MAX];
};

static int fake_send(void *arg, const struct cfg_alert_channel *ch, const char *event,
                     const char *json, size_t len, int *status, char *err, size_t errlen)
{
    struct fixture *f = arg;
    struct sent *s = &f->sent[f->calls < CALLS_MAX ? f->calls : CALLS_MAX - 1];

    snprintf(s->channel, sizeof(s->channel), "%s", ch->name);
    snprintf(s->event, sizeof(s->event), "%s", event);
    snprintf(s->json, sizeof(s->json), "%.*s", (int)len, json);
    if (f->calls++ < f->fail_first) {
        *status = 500;
        snprintf(err, errlen, "HTTP 500: try later");
        return -EIO;
    }
    *status = 204;
    return 0;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[200];

    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/mlk-alerts-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/cloud.db", f->dir);
    if (store_open(f->path, &f->st, err, sizeof(err)) < 0) {
        fprintf(stderr, "store_open: %s\n", err);
        return -1;
    }
    f->cfg.interval_s = 1;
    f->cfg.repeat_s = 60;
    f->cfg.retry_max = 2;
    f->cfg.retry_base_ms = 1000;
    f->cfg.retry_max_ms = 4000;
    f->cfg.nchannels = 1;
    snprintf(f->cfg.channels[0].name, CFG_ALERT_NAME_MAX, "hook");
    f->cfg.channels[0].type = CFG_CHANNEL_WEBHOOK;
    snprintf(f->cfg.channels[0].url, CFG_URL_MAX, "http://127.0.0.1:9/");
    f->cfg.channels[0].timeout_ms = 1000;
    *state = f;
    return 0;
}

static void start(struct fixture *f)
{
    char err[200];

    assert_int_equal(alerts_start(&f->cfg, f->path, f->st, false, &f->a, err, sizeof(err)), 0);
    alerts_set_sender(f->a, fake_send, f);
}

static int teardown(void **state)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    struct fixture *f = *state;
    char p[160];

    alerts_stop(f->a);
    store_close(f->st);
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static struct cfg_alert_rule *add_rule(struct fixture *f, const char *name,
                                       enum cfg_alert_kind kind, const char *meter)
{
    struct cfg_alert_rule *r = &f->cfg.rules[f->cfg.nrules++];

    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->kind = kind;
    snprintf(r->meter, sizeof(r->meter), "%s", meter);
    r->nchannels = 1;
    r->channels[0] = 0;
    r->quantity = -1;
    return r;
}

static uint64_t next_seq = 1;

static void put(struct fixture *f, const char *meter, int64_t ts, bool ok, const char *qty,
                double v)
{
    struct reading r;
    struct store_put_result res;

    memset(&r, 0, sizeof(r));
    r.seq = next_seq++;
    snprintf(r.meter, sizeof(r.meter), "%s", meter);
    r.ts_ms = ts;
    r.ok = ok;
    if (ok && qty) {
        int q = qty_index(qty);
        r.present = 1u << q;
        r.values[q] = v;
    } else if (!ok) {
        snprintf(r.error, sizeof(r.error), "timeout");
    }
    assert_int_equal(store_put_batch(f->st, GW, STREAM, &r, 1, ts, &res), 0);
}

static int count(struct fixture *f, int st, const char *meter, const char *gw)
{
    struct alerts_filter flt = {.state = st, .meter = meter, .gateway = gw, .limit = 100};
    struct alert *v = NULL;
    int n = 0, total = -1;

    assert_int_equal(alerts_list(f->a, &flt, &v, &n, &total), 0);
    free(v);
    assert_int_equal(n, total);
    return n;
}

static struct alert newest(struct fixture *f)
{
    struct alerts_filter flt = {.state = -1, .limit = 1};
    struct alert *v = NULL, out;
    int n = 0;

    assert_int_equal(alerts_list(f->a, &flt, &v, &n, NULL), 0);
    assert_int_equal(n, 1);
    out = v[0];
    free(v);
    return out;
}

static void test_silent_meter_lifecycle(void **state)
{
    struct fixture *f = *state;
    struct alert al;
    struct alert_delivery *d = NULL;
    int nd = 0;
    int64_t next = 0, t;
    cJSON *j;

    add_rule(f, "silent", CFG_ALERT_METER_OFFLINE, "m1")->after_s = 5;
    start(f);
    f->fail_first = 1;
    put(f, "m1", T0, true, "power", 100);
    put(f, "m2", T0, true, "power", 100); /* not this rule's meter */

    assert_int_equal(alerts_evaluate(f->a, T0 + 1000), 0);
    assert_int_equal(count(f, -1, NULL, NULL), 0);
    /* a failed poll is no good reading */
    put(f, "m1", T0 + 3000, false, NULL, 0);
    assert_int_equal(alerts_evaluate(f->a, T0 + 6000), 0);
    assert_int_equal(count(f, -1, NULL, NULL), 1);
    al = newest(f);
    assert_int_equal(al.state, ALERT_FIRING);
    assert_string_equal(al.meter, "m1");
    assert_string_equal(al.gateway, GW);
    assert_contains(al.message, "m1");
    assert_double_eq(al.value, 6);
    /* the same condition again: still one alert */
    assert_int_equal(alerts_evaluate(f->a, T0 + 7000), 0);
    assert_int_equal(count(f, -1, NULL, NULL), 1);

    /* first attempt fails (500): a retry after retry_base_ms, not before */
    assert_int_equal(alerts_deliver(f->a, T0 + 7000, &next), 0);
    assert_int_equal(f->calls, 1);
    assert_i64_eq(next, T0 + 8000);
    assert_int_equal(alerts_deliver(f->a, T0 + 7999, &next), 0);
    assert_int_equal(f->calls, 1);
    assert_int_equal(alerts_deliver(f->a, T0 + 8000, &next), 0);
    assert_int_equal(f->calls, 2);
    assert_i64_eq(next, INT64_MAX);
    assert_string_equal(f->sent[1].event, "firing");
    j = cJSON_Parse(f->sent[1].json);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "event")->valuestring, "firing");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "alert"), "state")->valuestring,
                        "firing");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "alert"), "meter")->valuestring,
                        "m1");
    cJSON_Delete(j);
    assert_int_equal(alerts_get(f->a, al.id, &al, &d, &nd), 0);
    assert_int_equal(nd, 2);
    assert_false(d[0].ok);
    assert_int_equal(d[0].attempt, 1);
    assert_int_equal(d[0].http_status, 500);
    assert_contains(d[0].error, "500");
    assert_i64_eq(d[0].next_ms, T0 + 8000);
    assert_true(d[1].ok);
    assert_int_equal(d[1].attempt, 2);
    assert_i64_eq(d[1].next_ms, 0);
    free(d);

    /* a reminder repeat_s after the notification */
    t = T0 + 6000 + 60000;
    assert_int_equal(alerts_evaluate(f->a, t - 1), 0);
    assert_int_equal(alerts_deliver(f->a, t - 1, NULL), 0);
    assert_int_equal(f->calls, 2);
    assert_int_equal(alerts_evaluate(f->a, t), 0);
    assert_int_equal(alerts_deliver(f->a, t, NULL), 0);
    assert_int_equal(f->calls, 3);
    assert_string_equal(f->sent[2].event, "reminder");
    al = newest(f);
    assert_int_equal(al.reminders, 1);

    /* acknowledged: no more reminders; a second ack changes nothing */
    assert_int_equal(alerts_ack(f->a, al.id, "op", t + 10, &al), 0);
    assert_int_equal(al.state, ALERT_ACKED);
    assert_string_equal(al.acked_by, "op");
    assert_i64_eq(al.acked_ms, t + 10);
    assert_int_equal(alerts_ack(f->a, al.id, "someone", t + 20, &al), 0);
    assert_string_equal(al.acked_by, "op");
    assert_int_equal(alerts_ack(f->a, 9999, "op", t, &al), -ENOENT);
    assert_int_equal(alerts_evaluate(f->a, t + 200000), 0);
    assert_int_equal(alerts_deliver(f->a, t + 200000, NULL), 0);
    assert_int_equal(f->calls, 3);
    assert_int_equal(count(f, ALERT_ACKED, NULL, NULL), 1);

    /* a good reading: resolved, and notified */
    put(f, "m1", t + 300000, true, "power", 50);
    assert_int_equal(alerts_evaluate(f->a, t + 300500), 0);
    al = newest(f);
    assert_int_equal(al.state, ALERT_RESOLVED);
    assert_i64_eq(al.resolved_ms, t + 300500);
    assert_int_equal(alerts_deliver(f->a, t + 300500, NULL), 0);
    assert_int_equal(f->calls, 4);
    assert_string_equal(f->sent[3].event, "resolved");
    assert_int_equal(alerts_ack(f->a, al.id, "op", t + 300600, &al), -EALREADY);

    /* silent again: a new alert */
    assert_int_equal(alerts_evaluate(f->a, t + 400000), 0);
    assert_int_equal(count(f, -1, NULL, NULL), 2);
    assert_int_equal(count(f, ALERT_NONE, NULL, NULL), 1); /* open */
    assert_int_equal(count(f, ALERT_RESOLVED, NULL, NULL), 1);
    assert_int_equal(count(f, ALERT_FIRING, "m1", NULL), 1);
    assert_int_equal(count(f, -1, "m2", NULL), 0);
    assert_int_equal(count(f, -1, NULL, GW), 2);
    assert_int_equal(count(f, -1, NULL, "gw-x"), 0);
}

static void test_delivery_gives_up(void **state)
{
    struct fixture *f = *state;
    struct alert al;
    struct alert_delivery *d = NULL;
    int nd = 0;
    int64_t next = 0, t = T0 + 10000;

    add_rule(f, "silent", CFG_ALERT_METER_OFFLINE, "")->after_s = 5;
    start(f);
    f->fail_first = 1000;
    put(f, "m1", T0, true, "power", 1);
    assert_int_equal(alerts_evaluate(f->a, t), 0);
    /* 1 + retry_max attempts: after 1 s, then 2 s; then no more */
    assert_int_equal(alerts_deliver(f->a, t, &next), 0);
    assert_i64_eq(next, t + 1000);
    assert_int_equal(alerts_deliver(f->a, next, &next), 0);
    assert_i64_eq(next, t + 1000 + 2000);
    assert_int_equal(alerts_deliver(f->a, next, &next), 0);
    assert_i64_eq(next, INT64_MAX);
    assert_int_equal(alerts_deliver(f->a, t + 3600000, &next), 0);
    assert_int_equal(f->calls, 3);
    al = newest(f);
    assert_int_equal(alerts_get(f->a, al.id, &al, &d, &nd), 0);
    assert_int_equal(nd, 3);
    for (int i = 0; i < nd; i++) {
        assert_false(d[i].ok);
        assert_int_equal(d[i].attempt, i + 1);
    }
    assert_i64_eq(d[2].next_ms, 0);
    free(d);
}

static void test_threshold_for_duration(void **state)
{
    struct fixture *f = *state;
    struct cfg_alert_rule *r = add_rule(f, "high", CFG_ALERT_THRESHOLD, "m1");
    struct alert al;

    r->quantity = qty_index("power");
    r->limit = 1000;
    r->for_s = 10;
    start(f);
    put(f, "m1", T0, true, "power", 500);
    put(f, "m1", T0 + 2000, true, "power", 500);
    for (int64_t ts = T0 + 4000; ts <= T0 + 20000; ts += 2000)
        put(f, "m1", ts, true, "power", 1500);
    /* past the limit since 4 s; a 10 s window from 2 s still has 500 in it */
    assert_int_equal(alerts_evaluate(f->a, T0 + 12000), 0);
    assert_int_equal(count(f, -1, NULL, NULL), 0);
    assert_int_equal(alerts_evaluate(f->a, T0 + 15000), 0);
    assert_int_equal(count(f, ALERT_FIRING, NULL, NULL), 1);
    al = newest(f);
    assert_double_eq(al.value, 1500);
    assert_contains(al.message, "power 1500 W, above 1000");
    put(f, "m1", T0 + 22000, true, "power", 800);
    assert_int_equal(alerts_evaluate(f->a, T0 + 22500), 0);
    assert_int_equal(count(f, ALERT_RESOLVED, NULL, NULL), 1);
    assert_int_equal(count(f, ALERT_NONE, NULL, NULL), 0);
}

/* A gateway's error text is outside input: the message keeps only printable ASCII (it goes
 * into logs and e-mail subjects). */
static void test_error_text_is_made_printable(void **state)
{
    struct fixture *f = *state;
    struct reading r;
    struct store_put_result res;
    struct alert al;

    add_rule(f, "silent", CFG_ALERT_METER_OFFLINE, "")->after_s = 5;
    start(f);
    memset(&r, 0, sizeof(r));
    r.seq = next_seq++;
    snprintf(r.meter, sizeof(r.meter), "m1");
    r.ts_ms = T0;
    snprintf(r.error, sizeof(r.error), "no\r\nBcc: x@y\x01");
    assert_int_equal(store_put_batch(f->st, GW, STREAM, &r, 1, T0, &res), 0);
    assert_int_equal(alerts_evaluate(f->a, T0 + 6000), 0);
    al = newest(f);
    assert_contains(al.message, "last poll failed: no??Bcc: x@y?");
    assert_null(strpbrk(al.message, "\r\n\x01"));
}

/* A window longer than one page of readings: read to its start, and a dip anywhere in it
 * keeps the alert from firing. */
static void test_threshold_long_window(void **state)
{
    struct fixture *f = *state;
    struct cfg_alert_rule *r = add_rule(f, "long", CFG_ALERT_THRESHOLD, "");

    r->quantity = qty_index("voltage_l1");
    r->limit = 207;
    r->below = 1;
    r->for_s = 600;
    start(f);
    for (int i = 0; i <= 700; i++) {
        put(f, "a", T0 + i * 1000LL, true, "voltage_l1", 200);
        put(f, "b", T0 + i * 1000LL, true, "voltage_l1", i == 150 ? 230 : 200); /* 550 s ago */
    }
    assert_int_equal(alerts_evaluate(f->a, T0 + 700000), 0);
    assert_int_equal(count(f, ALERT_FIRING, "a", NULL), 1);
    assert_int_equal(count(f, -1, "b", NULL), 0);
    assert_contains(newest(f).message, "voltage_l1 200 V, below 207 for 10 min");
}

/* Alerts survive a restart; open alerts of a rule that is gone are resolved. */
static void test_restart_and_removed_rule(void **state)
{
    struct fixture *f = *state;
    char err[200];

    add_rule(f, "silent", CFG_ALERT_METER_OFFLINE, "")->after_s = 5;
    start(f);
    put(f, "m1", T0, true, "power", 1);
    assert_int_equal(alerts_evaluate(f->a, T0 + 10000), 0);
    assert_int_equal(count(f, ALERT_FIRING, NULL, NULL), 1);
    alerts_stop(f->a);
    assert_int_equal(alerts_start(&f->cfg, f->path, f->st, false, &f->a, err, sizeof(err)), 0);
    assert_int_equal(count(f, ALERT_FIRING, NULL, NULL), 1);
    alerts_stop(f->a);
    snprintf(f->cfg.rules[0].name, CFG_ALERT_NAME_MAX, "renamed");
    assert_int_equal(alerts_start(&f->cfg, f->path, f->st, false, &f->a, err, sizeof(err)), 0);
    assert_int_equal(count(f, ALERT_NONE, NULL, NULL), 0);
    assert_int_equal(count(f, ALERT_RESOLVED, NULL, NULL), 1);
    assert_contains(newest(f).message, "rule removed");
}

/* data_gap: a reported missing range fires; its seqs arriving resolve it. */
static void test_data_gap(void **state)
{
    struct fixture *f = *state;
    struct store_gap gaps[4];
    int ng = 0;

    f->cfg.rules[f->cfg.nrules] = (struct cfg_alert_rule){.kind = CFG_ALERT_DATA_GAP};
    snprintf(f->cfg.rules[f->cfg.nrules++].name, CFG_ALERT_NAME_MAX, "gaps");
    start(f);
    next_seq = 1;
    put(f, "m1", T0, true, "power", 1);
    put(f, "m1", T0 + 1000, true, "power", 1);
    next_seq = 5; /* 3 and 4 missing */
    put(f, "m1", T0 + 4000, true, "power", 1);
    assert_int_equal(alerts_evaluate(f->a, T0 + 5000), 0);
    assert_int_equal(count(f, -1, NULL, NULL), 0); /* missing, not yet a data gap */
    assert_int_equal(store_check_gaps(f->st, T0 + 400000, 300000, gaps, 4, &ng), 0);
    assert_int_equal(ng, 1);
    assert_int_equal(alerts_evaluate(f->a, T0 + 400000), 0);
    assert_int_equal(count(f, ALERT_FIRING, NULL, GW), 1);
    assert_string_equal(newest(f).meter, "");
    assert_double_eq(newest(f).value, 1);
    next_seq = 3;
    put(f, "m1", T0 + 2000, true, "power", 1);
    put(f, "m1", T0 + 3000, true, "power", 1);
    assert_int_equal(alerts_evaluate(f->a, T0 + 401000), 0);
    assert_int_equal(count(f, ALERT_RESOLVED, NULL, GW), 1);
    next_seq = 100;
}

/* gateway_offline: its retained status says offline; back online resolves. */
static void test_gateway_offline(void **state)
{
    struct fixture *f = *state;
    struct cfg_alert_rule *r = add_rule(f, "gw-off", CFG_ALERT_GATEWAY_OFFLINE, "");
    bool changed;

    r->after_s = 10;
    snprintf(r->gateway, sizeof(r->gateway), "%s", GW);
    start(f);
    put(f, "m1", T0, true, "power", 1);
    assert_int_equal(store_put_status(f->st, GW, "online", T0, &changed), 0);
    assert_int_equal(alerts_evaluate(f->a, T0 + 5000), 0);
    assert_int_equal(count(f, -1, NULL, NULL), 0);
    assert_int_equal(store_put_status(f->st, GW, "offline", T0 + 6000, &changed), 0);
    assert_int_equal(alerts_evaluate(f->a, T0 + 15000), 0); /* offline 9 s of 10 */
    assert_int_equal(count(f, -1, NULL, NULL), 0);
    assert_int_equal(alerts_evaluate(f->a, T0 + 16000), 0);
    assert_int_equal(count(f, ALERT_FIRING, NULL, GW), 1);
    assert_contains(newest(f).message, "offline for 10 s");
    assert_int_equal(store_put_status(f->st, GW, "online", T0 + 20000, &changed), 0);
    assert_int_equal(alerts_evaluate(f->a, T0 + 21000), 0);
    assert_int_equal(count(f, ALERT_RESOLVED, NULL, GW), 1);
    /* silent while "online": nothing heard for after_s */
    assert_int_equal(alerts_evaluate(f->a, T0 + 31000), 0);
    assert_int_equal(count(f, ALERT_FIRING, NULL, GW), 1);
    assert_contains(newest(f).message, "nothing received for");
}

/* daily_usage: today's energy_import use in the meter's day (UTC here). */
static void test_daily_usage(void **state)
{
    struct fixture *f = *state;
    int64_t day = T0 - T0 % 86400000LL + 3600000; /* 01:00 UTC of T0's day */
    struct alert al;

    add_rule(f, "daily", CFG_ALERT_DAILY_USAGE, "m1")->limit = 40;
    start(f);
    for (int i = 0; i <= 6; i++) /* 5 kWh every 5 minutes: 30 kWh */
        put(f, "m1", day + i * 300000LL, true, "energy_import", 100 + 5 * i);
    assert_int_equal(alerts_evaluate(f->a, day + 1800001), 0);
    assert_int_equal(count(f, -1, NULL, NULL), 0);
    for (int i = 7; i <= 11; i++) /* 55 kWh by now */
        put(f, "m1", day + i * 300000LL, true, "energy_import", 100 + 5 * i);
    assert_int_equal(alerts_evaluate(f->a, day + 3300001), 0);
    assert_int_equal(count(f, ALERT_FIRING, NULL, NULL), 1);
    al = newest(f);
    assert_double_eq(al.value, 55);
    assert_contains(al.message, "55.000 kWh used today");
    /* the next day starts from 0 */
    assert_int_equal(alerts_evaluate(f->a, day + 86400000LL), 0);
    assert_int_equal(count(f, ALERT_RESOLVED, NULL, NULL), 1);
}

/* balance_days: the KPI forecast of a registered prepaid meter. */
static void test_balance_days(void **state)
{
    struct fixture *f = *state;
    struct store_site site = {.id = "home", .tz = "UTC"};
    struct store_reg reg = {.id = "p1", .gateway = GW, .site = "home", .prepaid = true};
    int64_t t = T0 - T0 % 86400000LL; /* midnight UTC */
    struct alert al;

    add_rule(f, "low-balance", CFG_ALERT_BALANCE_DAYS, "")->limit = 3;
    start(f);
    assert_int_equal(store_site_put(f->st, &site, true, T0), 0);
    assert_int_equal(store_reg_put(f->st, &reg, true, T0), 0);
    /* 2 a day for 4 days, every 2 hours: 40 -> 32 */
    for (int i = 0; i <= 48; i++)
        put(f, "p1", t + i * 7200000LL, true, "balance", 40 - i * (2.0 / 12));
    /* 32 left at 2 a day: 16 days */
    assert_int_equal(alerts_evaluate(f->a, t + 48 * 7200000LL + 1000), 0);
    assert_int_equal(count(f, -1, NULL, NULL), 0);
    /* a fast drop to 4: the average of the window rises, the days left fall below 3 */
    put(f, "p1", t + 48 * 7200000LL + 3600000, true, "balance", 4);
    assert_int_equal(alerts_evaluate(f->a, t + 48 * 7200000LL + 3601000), 0);
    assert_int_equal(count(f, ALERT_FIRING, NULL, NULL), 1);
    al = newest(f);
    assert_string_equal(al.meter, "p1");
    assert_true(al.value < 3);
    assert_contains(al.message, "balance 4.00 lasts");
    /* a top-up: resolved */
    put(f, "p1", t + 48 * 7200000LL + 7200000, true, "balance", 100);
    assert_int_equal(alerts_evaluate(f->a, t + 48 * 7200000LL + 7201000), 0);
    assert_int_equal(count(f, ALERT_RESOLVED, NULL, NULL), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_machine),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_conditions),
        cmocka_unit_test_setup_teardown(test_silent_meter_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_gives_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threshold_for_duration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threshold_long_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_text_is_made_printable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_and_removed_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_gap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gateway_offline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_daily_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_balance_days, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
