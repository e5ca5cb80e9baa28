/*
 * test_cloud_store: the cloud store's seq bookkeeping (cloud/store.h) on a real SQLite
 * file: acks after out-of-order batches, received/duplicate/lost counters, loss reports
 * (repeats recorded once), seq 0 outside the numbering, data gaps reported once even after
 * a gap splits, the bound on a stream's ranges, the state surviving a reopen, values
 * read back from the per-reading blob, the migration of a schema version 1 file, and
 * group commit (several batches in one transaction, each still all or nothing).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "quantities.h"
#include "store.h"

#include <sqlite3.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW "gw-01"
#define STREAM "0123456789abcdef"
#define T0 1763800000000LL

struct fixture {
    char dir[64];
    char path[128];
    store_t *st;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[200];

    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/mlk-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/cloud.db", f->dir);
    if (store_open(f->path, &f->st, err, sizeof(err)) < 0) {
        fprintf(stderr, "store_open: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    struct fixture *f = *state;
    char p[160];

    store_close(f->st);
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Readings lo..hi (step) of meter m, ts derived from the seq. */
static int make(struct reading *r, uint64_t lo, uint64_t hi, uint64_t step, const char *m)
{
    int n = 0;

    for (uint64_t s = lo; s <= hi; s += step, n++) {
        memset(&r[n], 0, sizeof(r[n]));
        r[n].seq = s;
        snprintf(r[n].meter, sizeof(r[n].meter), "%s", m);
        r[n].ts_ms = T0 + (int64_t)s * 1000;
        r[n].ok = false;
        snprintf(r[n].error, sizeof(r[n].error), "timeout");
    }
    return n;
}

static void put(store_t *st, uint64_t lo, uint64_t hi, int64_t now, struct store_put_result *res)
{
    static struct reading r[6000];
    int n = make(r, lo, hi, 1, "m1");
    assert_i64_eq(store_put_batch(st, GW, STREAM, r, n, now, res), 0);
}

static void check_ack(const struct store_ack *a, uint64_t upto, const char *missing)
{
    char buf[2048];

    assert_string_equal(a->stream, STREAM);
    assert_u64_eq(a->upto, upto);
    assert_true(seq_ranges_format(a->missing, (size_t)a->nmissing, buf, sizeof(buf)) > 0);
    assert_string_equal(buf, missing);
}

static void get_stream(store_t *st, struct store_gateway *g, struct store_stream *s)
{
    struct store_loss_entry *l = NULL;
    char *health = NULL;
    int nl;

    assert_i64_eq(store_get_gateway(st, GW, g, &health, &l, &nl), 0);
    assert_true(g->nstreams >= 1);
    *s = g->streams[0];
    store_gateway_clear(g);
    free(health);
    free(l);
}

static void test_acks_and_counters(void **state)
{
    struct fixture *f = *state;
    struct store_put_result res;
    struct store_gateway g;
    struct store_stream s;

    put(f->st, 1, 10, T0, &res);
    assert_i64_eq(res.inserted, 10);
    assert_i64_eq(res.received, 10);
    check_ack(&res.ack, 10, "[]");
    put(f->st, 21, 30, T0, &res);
    check_ack(&res.ack, 10, "[[11,20]]");
    put(f->st, 11, 20, T0, &res);
    check_ack(&res.ack, 30, "[]");
    put(f->st, 5, 8, T0, &res);
    assert_i64_eq(res.inserted, 0);
    assert_i64_eq(res.duplicates, 4);
    assert_i64_eq(res.received, 0);
    check_ack(&res.ack, 30, "[]");
    get_stream(f->st, &g, &s);
    assert_u64_eq(s.received, 30);
    assert_u64_eq(s.duplicates, 4);
    assert_u64_eq(s.lost, 0);
    assert_u64_eq(s.upto, 30);
    assert_i64_eq(s.nmissing, 0);
    assert_u64_eq(g.received, 30);
    assert_true(g.has_last_seen);
    assert_string_equal(g.status, "");

    /* an empty batch still answers with the stream's state */
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, NULL, 0, T0, &res), 0);
    check_ack(&res.ack, 30, "[]");
    /* bad arguments */
    assert_i64_eq(store_put_batch(f->st, "bad id", STREAM, NULL, 0, T0, &res), -EINVAL);
    assert_i64_eq(store_put_batch(f->st, GW, "XYZ", NULL, 0, T0, &res), -EINVAL);
}

static void test_seq_zero_and_reused_seq(void **state)
{
    struct fixture *f = *state;
    struct store_put_result res;
    struct reading r[2];

    make(r, 0, 0, 1, "m1");
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, 1, T0, &res), 0);
    assert_i64_eq(res.inserted, 1); /* stored */
    assert_i64_eq(res.received, 0); /* but outside the numbering */
    assert_i64_eq(res.duplicates, 0);
    check_ack(&res.ack, 0, "[]");
    /* the same seq twice in a batch, with different readings: the second counts no seq */
    make(r, 1, 1, 1, "m1");
    make(&r[1], 1, 1, 1, "m2");
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, 2, T0, &res), 0);
    assert_i64_eq(res.inserted, 2);
    assert_i64_eq(res.received, 1);
    assert_i64_eq(res.duplicates, 1);
    check_ack(&res.ack, 1, "[]");
}

static void test_losses(void **state)
{
    struct fixture *f = *state;
    struct store_put_result res;
    struct store_loss_result lr;
    struct store_loss l[2];
    struct store_gateway g;
    struct store_loss_entry *le = NULL;
    char *health = NULL;
    int nl;

    put(f->st, 1, 30, T0, &res);
    memset(l, 0, sizeof(l));
    l[0] = (struct store_loss){31, 40, 10, "queue_full", T0 + 5};
    assert_i64_eq(store_put_loss(f->st, GW, STREAM, l, 1, T0 + 10, &lr), 0);
    assert_u64_eq(lr.lost, 10);
    assert_i64_eq(lr.recorded, 1);
    check_ack(&lr.ack, 40, "[]");
    /* repeated: recorded once, counted once */
    assert_i64_eq(store_put_loss(f->st, GW, STREAM, l, 1, T0 + 20, &lr), 0);
    assert_u64_eq(lr.lost, 0);
    assert_i64_eq(lr.recorded, 0);
    /* overlapping received seqs and leaving a hole */
    l[0] = (struct store_loss){25, 45, 5, "disk_error", T0 + 30};
    l[1] = (struct store_loss){61, 70, 10, "not_queued", T0 + 30};
    assert_i64_eq(store_put_loss(f->st, GW, STREAM, l, 2, T0 + 30, &lr), 0);
    assert_u64_eq(lr.lost, 5 + 10);
    check_ack(&lr.ack, 45, "[[46,60]]");
    /* a reading of a lost seq: stored, counted as no new seq, the loss stays */
    put(f->st, 35, 35, T0 + 40, &res);
    assert_i64_eq(res.inserted, 1);
    assert_i64_eq(res.received, 0);
    assert_i64_eq(res.duplicates, 1);

    assert_i64_eq(store_get_gateway(f->st, GW, &g, &health, &le, &nl), 0);
    assert_u64_eq(g.lost, 25);
    assert_u64_eq(g.received, 30);
    assert_i64_eq(nl, 3);
    /* newest first */
    assert_string_equal(le[0].loss.reason, "not_queued");
    assert_string_equal(le[2].loss.reason, "queue_full");
    assert_i64_eq(le[2].received_ms, T0 + 10);
    assert_null(health);
    store_gateway_clear(&g);
    free(le);

    /* invalid entries are refused before anything is written */
    l[0] = (struct store_loss){0, 5, 1, "queue_full", 0};
    assert_i64_eq(store_put_loss(f->st, GW, STREAM, l, 1, T0, &lr), -EINVAL);
    l[0] = (struct store_loss){6, 5, 0, "queue_full", 0};
    assert_i64_eq(store_put_loss(f->st, GW, STREAM, l, 1, T0, &lr), -EINVAL);
    l[0] = (struct store_loss){1, 5, 6, "queue_full", 0};
    assert_i64_eq(store_put_loss(f->st, GW, STREAM, l, 1, T0, &lr), -EINVAL);
    l[0] = (struct store_loss){1, STORE_SEQ_MAX + 1, 1, "queue_full", 0};
    assert_i64_eq(store_put_loss(f->st, GW, STREAM, l, 1, T0, &lr), -EINVAL);
    assert_i64_eq(store_put_loss(f->st, GW, STREAM, l, 0, T0, &lr), -EINVAL);
}

static void test_gaps(void **state)
{
    struct fixture *f = *state;
    struct store_put_result res;
    struct store_gap gap[8];
    struct store_gateway g;
    struct store_stream s;
    int n;

    put(f->st, 1, 10, T0, &res);
    put(f->st, 21, 30, T0, &res); /* [11,20] missing since T0 */
    assert_i64_eq(store_check_gaps(f->st, T0 + 999, 1000, gap, 8, &n), 0);
    assert_i64_eq(n, 0); /* not yet past the grace time */
    assert_i64_eq(store_check_gaps(f->st, T0 + 1000, 1000, gap, 8, &n), 0);
    assert_i64_eq(n, 1);
    assert_string_equal(gap[0].gateway, GW);
    assert_string_equal(gap[0].stream, STREAM);
    assert_u64_eq(gap[0].first, 11);
    assert_u64_eq(gap[0].last, 20);
    assert_i64_eq(gap[0].first_seen_ms, T0);
    assert_i64_eq(store_check_gaps(f->st, T0 + 5000, 1000, gap, 8, &n), 0);
    assert_i64_eq(n, 0); /* once */

    /* it splits: both pieces stay reported, and are not reported again */
    put(f->st, 15, 15, T0 + 6000, &res);
    check_ack(&res.ack, 10, "[[11,14],[16,20]]");
    assert_i64_eq(store_check_gaps(f->st, T0 + 60000, 1000, gap, 8, &n), 0);
    assert_i64_eq(n, 0);
    get_stream(f->st, &g, &s);
    assert_i64_eq(s.gaps_open, 2);
    assert_u64_eq(g.gaps, 1);

    /* a new gap above, seen later: its own time */
    put(f->st, 40, 40, T0 + 70000, &res);
    check_ack(&res.ack, 10, "[[11,14],[16,20],[31,39]]");
    assert_i64_eq(store_check_gaps(f->st, T0 + 70500, 1000, gap, 8, &n), 0);
    assert_i64_eq(n, 0);
    assert_i64_eq(store_check_gaps(f->st, T0 + 71000, 1000, gap, 8, &n), 0);
    assert_i64_eq(n, 1);
    assert_u64_eq(gap[0].first, 31);
    assert_i64_eq(gap[0].first_seen_ms, T0 + 70000);

    /* filled: closed, the event count stays */
    put(f->st, 11, 39, T0 + 80000, &res);
    check_ack(&res.ack, 40, "[]");
    get_stream(f->st, &g, &s);
    assert_i64_eq(s.gaps_open, 0);
    assert_u64_eq(g.gaps, 2);

    /* a gap closed within the grace time is no event */
    put(f->st, 50, 50, T0 + 90000, &res);
    put(f->st, 41, 49, T0 + 90100, &res);
    assert_i64_eq(store_check_gaps(f->st, T0 + 999999, 1000, gap, 8, &n), 0);
    assert_i64_eq(n, 0);
}

static void test_range_limit(void **state)
{
    struct fixture *f = *state;
    static struct reading r[5001];
    struct store_put_result res;
    struct store_gateway g;
    struct store_stream s;
    int n;

    /* every other seq: each batch of 5000 adds 5000 ranges */
    n = make(r, 2, 10000, 2, "m1");
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, n, T0, &res), 0);
    n = make(r, 10002, 20000, 2, "m1");
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, n, T0, &res), 0);
    assert_u64_eq(res.ack.upto, 0);
    assert_i64_eq(res.ack.nmissing, STORE_ACK_MISSING_MAX);
    /* one more range is too many: nothing stored, the ack is the state before */
    n = make(r, 20002, 20002, 2, "m1");
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, n, T0, &res), -E2BIG);
    assert_i64_eq(res.inserted, 0);
    assert_u64_eq(res.ack.upto, 0);
    assert_i64_eq(res.ack.nmissing, STORE_ACK_MISSING_MAX);
    assert_u64_eq(res.ack.missing[0].lo, 1);
    get_stream(f->st, &g, &s);
    assert_u64_eq(s.received, 10000);
    assert_u64_eq(s.nmissing_total, 10000);
    /* filling a hole between two ranges makes room again (1 only extends [2,2]) */
    n = make(r, 1, 3, 2, "m1");
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, n, T0, &res), 0);
    assert_u64_eq(res.ack.upto, 4);
    n = make(r, 20002, 20002, 2, "m1");
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, n, T0, &res), 0);
}

static void test_reopen_and_online_acks(void **state)
{
    struct fixture *f = *state;
    struct store_put_result res;
    struct store_ack acks[4];
    struct store_health h = {T0, 7, 2};
    struct store_gateway *list = NULL;
    struct store_loss_entry *le = NULL;
    struct store_gateway g;
    char err[200], *health = NULL;
    bool changed;
    int n, nl;

    put(f->st, 1, 10, T0, &res);
    put(f->st, 12, 12, T0, &res);
    assert_i64_eq(store_put_status(f->st, GW, "online", T0, &changed), 0);
    assert_i64_eq(store_put_health(f->st, GW, "{\"v\":1}", 7, &h, T0 + 1), 0);
    store_close(f->st);
    f->st = NULL;
    assert_i64_eq(store_open(f->path, &f->st, err, sizeof(err)), 0);

    assert_i64_eq(store_stream_acks(f->st, GW, acks, 4, &n), 0);
    assert_i64_eq(n, 1);
    check_ack(&acks[0], 10, "[[11,11]]");
    assert_i64_eq(store_stream_acks(f->st, "nosuch", acks, 4, &n), 0);
    assert_i64_eq(n, 0);

    assert_i64_eq(store_get_gateway(f->st, GW, &g, &health, &le, &nl), 0);
    assert_string_equal(g.status, "online");
    assert_true(g.has_health);
    assert_i64_eq(g.health.queue_depth, 7);
    assert_i64_eq(g.health.oldest_age_s, 2);
    assert_string_equal(health, "{\"v\":1}");
    assert_i64_eq(g.nstreams_total, 1);
    assert_u64_eq(g.streams[0].upto, 10);
    assert_u64_eq(g.streams[0].received, 11);
    store_gateway_clear(&g);
    free(health);
    free(le);
    assert_i64_eq(store_get_gateway(f->st, "nosuch", &g, &health, &le, &nl), -ENOENT);

    assert_i64_eq(store_list_gateways(f->st, &list, &n), 0);
    assert_i64_eq(n, 1);
    assert_string_equal(list[0].id, GW);
    assert_i64_eq(list[0].nstreams, 1);
    store_gateways_free(list, n);
}

/* Readings of meter m at T0 + i minutes, i in [0, n), with energy_import and power. */
static void make_values(struct reading *r, int n, const char *m, uint64_t seq0)
{
    int e = qty_index("energy_import"), p = qty_index("power");

    for (int i = 0; i < n; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].seq = seq0 + (uint64_t)i;
        snprintf(r[i].meter, sizeof(r[i].meter), "%s", m);
        r[i].ts_ms = T0 + (int64_t)i * 60000;
        r[i].ok = true;
        r[i].values[e] = 1000.25 + i;
        r[i].values[p] = -0.5 * i;
        r[i].present = (1u << e) | (1u << p);
    }
}

static void check_values(store_t *st, const char *m, int n)
{
    int e = qty_index("energy_import"), p = qty_index("power"), got;
    struct store_reading *v = NULL;

    assert_i64_eq(store_readings(st, m, T0, T0 + 86400000, 100, &v, &got), 0);
    assert_i64_eq(got, n);
    for (int i = 0; i < got; i++) { /* newest first */
        int k = n - 1 - i;
        assert_i64_eq(v[i].r.ts_ms, T0 + (int64_t)k * 60000);
        assert_int_equal(v[i].r.present, (1u << e) | (1u << p));
        assert_true(v[i].r.values[e] == 1000.25 + k);
        assert_true(v[i].r.values[p] == -0.5 * k);
    }
    free(v);
    assert_i64_eq(store_readings_asc(st, m, T0, T0 + 86400000, 100, &v, &got), 0);
    assert_i64_eq(got, n);
    assert_true(v[0].r.values[e] == 1000.25 && v[got - 1].r.values[p] == -0.5 * (n - 1));
    free(v);
}

static void sql(sqlite3 *db, const char *q)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, q, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", q, msg ? msg : "?");
    sqlite3_free(msg);
    assert_int_equal(rc, SQLITE_OK);
}

/* A store written by schema version 1 (a row per value in samples) opens as version 2 with
 * the same values; a version this build does not know is refused, naming it. */
static void test_values_and_migration(void **state)
{
    struct fixture *f = *state;
    struct store_put_result res;
    struct reading r[5];
    sqlite3 *db;
    char err[300];

    make_values(r, 5, "m1", 1);
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, 5, T0, &res), 0);
    check_values(f->st, "m1", 5);
    store_close(f->st);
    f->st = NULL;

    /* turn the file back into version 1 */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sql(db, "CREATE TABLE samples(meter_id INTEGER NOT NULL, qty INTEGER NOT NULL,"
            " ts INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY(meter_id, qty, ts))"
            " WITHOUT ROWID;"
            "INSERT INTO samples SELECT r.meter_id, q.id, r.ts,"
            " CASE q.name WHEN 'energy_import' THEN 1000.25 + (r.ts - 1763800000000) / 60000"
            " ELSE -0.5 * ((r.ts - 1763800000000) / 60000) END"
            " FROM readings r, quantities q WHERE q.name IN ('energy_import', 'power');"
            "ALTER TABLE readings DROP COLUMN vals; PRAGMA user_version=1;");
    sqlite3_close(db);
    assert_i64_eq(store_open(f->path, &f->st, err, sizeof(err)), 0);
    check_values(f->st, "m1", 5);
    store_close(f->st);
    f->st = NULL;

    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sql(db, "SELECT 1 FROM readings WHERE vals IS NOT NULL LIMIT 1");
    assert_int_not_equal(sqlite3_exec(db, "SELECT 1 FROM samples", NULL, NULL, NULL), SQLITE_OK);
    sql(db, "PRAGMA user_version=7");
    sqlite3_close(db);
    assert_i64_eq(store_open(f->path, &f->st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "schema version 7"));
    assert_i64_eq(store_open(f->path, &f->st, err, sizeof(err)), -EINVAL);
    f->st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sql(db, "PRAGMA user_version=2");
    sqlite3_close(db);
    assert_i64_eq(store_open(f->path, &f->st, err, sizeof(err)), 0);
}

/* A group: batches in one transaction, invisible to readers until the commit; a failed
 * batch leaves the others; a rolled back group stores nothing. */
static void test_group_commit(void **state)
{
    struct fixture *f = *state;
    struct store_put_result res;
    struct reading r[5];
    struct store_reading *v = NULL;
    struct store_ack acks[2];
    bool changed;
    int n;

    make_values(r, 5, "m1", 1);
    assert_i64_eq(store_group_begin(f->st), 0);
    assert_i64_eq(store_group_begin(f->st), -EBUSY);
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, 3, T0, &res), 0);
    assert_i64_eq(res.inserted, 3);
    check_ack(&res.ack, 3, "[]");
    /* invalid: all or nothing, the group goes on */
    assert_i64_eq(store_put_batch(f->st, "bad gw!", STREAM, r, 1, T0, &res), -EINVAL);
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r + 3, 2, T0, &res), 0);
    check_ack(&res.ack, 5, "[]");
    assert_i64_eq(store_put_status(f->st, GW, "online", T0, &changed), -EDEADLK);
    assert_i64_eq(store_readings(f->st, "m1", T0, T0 + 86400000, 10, &v, &n), -ENOENT);
    assert_i64_eq(store_group_commit(f->st), 0);
    assert_i64_eq(store_group_commit(f->st), -EINVAL);
    check_values(f->st, "m1", 5);

    make_values(r, 5, "m2", 6);
    assert_i64_eq(store_group_begin(f->st), 0);
    assert_i64_eq(store_put_batch(f->st, GW, STREAM, r, 5, T0, &res), 0);
    store_group_rollback(f->st);
    assert_i64_eq(store_readings(f->st, "m2", T0, T0 + 86400000, 10, &v, &n), -ENOENT);
    assert_i64_eq(store_stream_acks(f->st, GW, acks, 2, &n), 0);
    assert_i64_eq(n, 1);
    check_ack(&acks[0], 5, "[]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_acks_and_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_zero_and_reused_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_losses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gaps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_and_online_acks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_and_migration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
