/*
 * test_events: the live stream's event bus (cloud/events.h): one event per meter of a
 * batch with its newest values, a subscriber falling behind the ring told how many it
 * lost, the subscriber cap, the wait bounded, and close waking a waiter.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "events.h"
#include "quantities.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static struct reading rd(const char *meter, uint64_t seq, double power, bool ok)
{
    struct reading r;

    memset(&r, 0, sizeof(r));
    snprintf(r.meter, sizeof(r.meter), "%s", meter);
    r.seq = seq;
    r.ts_ms = 1763800000000 + (int64_t)seq * 1000;
    r.ok = ok;
    for (int q = 0; ok && q < qty_count(); q++)
        if (strcmp(qty_at(q)->name, "power") == 0) {
            r.present |= 1u << q;
            r.values[q] = power;
        }
    return r;
}

static void test_batch_events(void **state)
{
    struct reading b[4] = {rd("m1", 1, 1.5, true), rd("m2", 2, 7, true), rd("m1", 3, 2.25, true),
                           rd("m1", 4, 0, false)};
    events_sub_t *s;
    struct event ev;
    uint64_t dropped;

    (void)state;
    events_open();
    assert_i64_eq(events_subscribe(&s), 0);
    events_publish_batch("gw-01", b, 4);
    assert_i64_eq(events_next(s, 100, &ev, &dropped), 0);
    assert_string_equal(ev.name, "reading");
    assert_string_equal(ev.meter, "m1");
    assert_string_equal(ev.data,
                        "{\"meter\":\"m1\",\"gw\":\"gw-01\",\"ts\":"
                        "\"2025-11-22T08:26:43.000Z\",\"seq\":3,\"values\":{\"power\":2.25}}");
    assert_i64_eq(events_next(s, 100, &ev, &dropped), 0);
    assert_string_equal(ev.meter, "m2");
    assert_i64_eq(events_next(s, 50, &ev, &dropped), -ETIMEDOUT);
    events_publish_status("gw-01", "offline", 1763800000000);
    assert_i64_eq(events_next(s, 100, &ev, &dropped), 0);
    assert_string_equal(ev.name, "status");
    assert_string_equal(
        ev.data, "{\"gw\":\"gw-01\",\"state\":\"offline\",\"ts\":\"2025-11-22T08:26:40.000Z\"}");
    events_unsubscribe(s);
}

static void test_slow_subscriber_drops(void **state)
{
    events_sub_t *s;
    struct event ev;
    uint64_t dropped, first;
    struct events_stats st;

    (void)state;
    events_open();
    assert_i64_eq(events_subscribe(&s), 0);
    for (int i = 0; i < EVENTS_RING + 10; i++)
        events_publish_status("gw-01", i % 2 ? "online" : "offline", 1);
    assert_i64_eq(events_next(s, 100, &ev, &dropped), 0);
    assert_u64_eq(dropped, 10);
    first = ev.id;
    for (int i = 1; i < EVENTS_RING; i++) {
        assert_i64_eq(events_next(s, 100, &ev, &dropped), 0);
        assert_u64_eq(dropped, 0);
        assert_u64_eq(ev.id, first + (uint64_t)i);
    }
    assert_i64_eq(events_next(s, 10, &ev, &dropped), -ETIMEDOUT);
    events_get_stats(&st);
    assert_u64_eq(st.dropped, 10);
    assert_i64_eq(st.subscribers, 1);
    events_unsubscribe(s);
}

static void test_cap(void **state)
{
    events_sub_t *s[EVENTS_SUBSCRIBERS_MAX + 1];

    (void)state;
    events_open();
    for (int i = 0; i < EVENTS_SUBSCRIBERS_MAX; i++)
        assert_i64_eq(events_subscribe(&s[i]), 0);
    assert_i64_eq(events_subscribe(&s[EVENTS_SUBSCRIBERS_MAX]), -EBUSY);
    for (int i = 0; i < EVENTS_SUBSCRIBERS_MAX; i++)
        events_unsubscribe(s[i]);
    assert_i64_eq(events_subscribe(&s[0]), 0);
    events_unsubscribe(s[0]);
}

static void *closer(void *arg)
{
    (void)arg;
    events_close();
    return NULL;
}

static void test_close_wakes(void **state)
{
    events_sub_t *s, *t;
    struct event ev;
    uint64_t dropped;
    pthread_t th;

    (void)state;
    events_open();
    assert_i64_eq(events_subscribe(&s), 0);
    assert_i64_eq(pthread_create(&th, NULL, closer, NULL), 0);
    assert_i64_eq(events_next(s, 5000, &ev, &dropped), -ESHUTDOWN);
    pthread_join(th, NULL);
    assert_i64_eq(events_subscribe(&t), -ESHUTDOWN);
    events_unsubscribe(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_events),
        cmocka_unit_test(test_slow_subscriber_drops),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_close_wakes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
