/*
 * test_queue: the agent's SQLite queue on real files in a temporary folder: seq
 * assignment, fetch order across the memory and file tiers, ack, the row bound with exact
 * loss records, memory-first spilling, reopen after a crash, and a corrupt file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include "testutil.h"

#include "queue.h"
#include "quantities.h"
#include "log.h"
#include "timeutil.h"

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/mlk-test-queue-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    log_init("test_queue", 0, 1);
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void qpath(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

static void fill(struct reading *r, int n, int64_t ts0)
{
    memset(r, 0, sizeof(*r) * (size_t)n);
    for (int i = 0; i < n; i++) {
        snprintf(r[i].meter, sizeof(r[i].meter), "m%d", i % 3);
        r[i].ts_ms = ts0 + i;
        r[i].ok = true;
        r[i].values[0] = 1000.5 + i;
        r[i].present = 1;
    }
}

/* Parses a fetched batch and returns its seqs in order. */
static int batch_seqs(const struct qbatch *b, uint64_t *seqs, int max)
{
    struct wire_batch wb;
    char err[160];
    int n;

    assert_int_equal(wire_parse_batch(b->payload, b->len, &wb, err, sizeof(err)), 0);
    assert_int_equal(wb.nrejected, 0);
    n = wb.n < max ? wb.n : max;
    for (int i = 0; i < n; i++)
        seqs[i] = wb.readings[i].seq;
    wire_batch_free(&wb);
    return n;
}

static void test_append_fetch_ack(void **state)
{
    char path[300];
    struct queue_opts o;
    struct reading r[10];
    struct qbatch b;
    struct queue_stats st;
    uint64_t seqs[16];
    queue_t *q;

    qpath(path, sizeof(path), "a.db");
    queue_default_opts(&o);
    assert_int_equal(queue_open(path, &o, &q), 0);
    assert_true(wire_stream_valid(queue_stream(q)));
    fill(r, 10, 1763800000000);
    assert_int_equal(queue_append(q, r, 10), 0);
    for (int i = 0; i < 10; i++)
        assert_u64_eq(r[i].seq, (uint64_t)i + 1);

    assert_int_equal(queue_fetch(q, "gw-01", 0, 0, 4, &b), 1);
    assert_u64_eq(b.first_seq, 1);
    assert_u64_eq(b.last_seq, 4);
    assert_int_equal(batch_seqs(&b, seqs, 16), 4);
    assert_u64_eq(seqs[3], 4);
    free(b.payload);

    /* until bounds the range */
    assert_int_equal(queue_fetch(q, "gw-01", 4, 6, 10, &b), 1);
    assert_u64_eq(b.first_seq, 5);
    assert_u64_eq(b.last_seq, 6);
    free(b.payload);

    assert_int_equal(queue_ack(q, queue_stream(q), 7), 0);
    queue_get_stats(q, &st);
    assert_i64_eq(st.depth, 3);
    assert_u64_eq(st.oldest_seq, 8);
    assert_int_equal(queue_fetch(q, "gw-01", 0, 0, 10, &b), 1);
    assert_u64_eq(b.first_seq, 8);
    assert_int_equal(b.count, 3);
    free(b.payload);
    /* an ack for another stream forgets nothing of ours */
    assert_int_equal(queue_ack(q, "0123456789abcdef", 100), 0);
    queue_get_stats(q, &st);
    assert_i64_eq(st.depth, 3);
    queue_close(q);

    /* reopened: same stream, seq goes on, nothing reused */
    assert_int_equal(queue_open(path, &o, &q), 0);
    fill(r, 1, 1763800001000);
    assert_int_equal(queue_append(q, r, 1), 0);
    assert_u64_eq(r[0].seq, 11);
    queue_close(q);
}

static void test_row_bound_reports_exact_loss(void **state)
{
    char path[300];
    struct queue_opts o;
    struct reading r[50];
    struct qloss l[8];
    struct qbatch b;
    queue_t *q;
    int n;

    qpath(path, sizeof(path), "bound.db");
    queue_default_opts(&o);
    o.max_rows = 100;
    assert_int_equal(queue_open(path, &o, &q), 0);
    for (int k = 0; k < 5; k++) { /* 250 readings into a queue of 100 */
        fill(r, 50, 1763800000000 + k * 100);
        assert_int_equal(queue_append(q, r, 50), 0);
    }
    n = queue_losses(q, l, 8);
    assert_int_equal(n, 1); /* adjacent drops of one cause merge */
    assert_u64_eq(l[0].first, 1);
    assert_u64_eq(l[0].last, 150);
    assert_u64_eq(l[0].count, 150);
    assert_string_equal(l[0].reason, "queue_full");
    assert_string_equal(l[0].stream, queue_stream(q));
    assert_int_equal(queue_fetch(q, "gw-01", 0, 0, 1000, &b), 1);
    assert_u64_eq(b.first_seq, 151);
    assert_u64_eq(b.last_seq, 250);
    assert_int_equal(b.count, 100);
    free(b.payload);
    queue_close(q);

    /* loss records survive a restart, and an ack that covers them clears them */
    assert_int_equal(queue_open(path, &o, &q), 0);
    assert_int_equal(queue_losses(q, l, 8), 1);
    assert_u64_eq(l[0].last, 150);
    {
        char stream[WIRE_STREAM_MAX];
        snprintf(stream, sizeof(stream), "%s", queue_stream(q));
        assert_int_equal(queue_ack(q, stream, 149), 0);
        assert_int_equal(queue_losses(q, l, 8), 1);
        assert_int_equal(queue_ack(q, stream, 160), 0);
        assert_int_equal(queue_losses(q, l, 8), 0);
    }
    queue_close(q);
}

static void test_memory_first_spills(void **state)
{
    char path[300];
    struct queue_opts o;
    struct reading r[30];
    struct queue_stats st;
    struct qbatch b;
    queue_t *q;

    qpath(path, sizeof(path), "mem.db");
    queue_default_opts(&o);
    o.memory_first = true;
    o.spill_rows = 10;
    o.spill_ms = 3600000;
    assert_int_equal(queue_open(path, &o, &q), 0);
    fill(r, 8, now_ms());
    assert_int_equal(queue_append(q, r, 8), 0);
    queue_get_stats(q, &st);
    assert_i64_eq(st.depth, 8);
    assert_i64_eq(st.mem_depth, 8); /* nothing written yet */
    assert_u64_eq(st.commits, 0);
    fill(r, 12, now_ms());
    assert_int_equal(queue_append(q, r, 12), 0);
    queue_get_stats(q, &st);
    assert_i64_eq(st.depth, 20);
    /* past spill_rows all of memory is spilled in one transaction */
    assert_i64_eq(st.mem_depth, 0);
    assert_u64_eq(st.commits, 1);
    fill(r, 5, now_ms());
    assert_int_equal(queue_append(q, r, 5), 0);
    queue_get_stats(q, &st);
    assert_i64_eq(st.mem_depth, 5);
    /* fetch reads across both tiers in seq order */
    assert_int_equal(queue_fetch(q, "gw-01", 15, 0, 10, &b), 1);
    assert_u64_eq(b.first_seq, 16);
    assert_u64_eq(b.last_seq, 25);
    free(b.payload);
    /* acked in memory: never written at all */
    assert_int_equal(queue_ack(q, queue_stream(q), 25), 0);
    queue_get_stats(q, &st);
    assert_i64_eq(st.depth, 0);
    queue_close(q);
}

static void test_corrupt_file_is_set_aside(void **state)
{
    char path[300], old_stream[WIRE_STREAM_MAX];
    struct queue_opts o;
    struct reading r[200];
    struct qloss l[4];
    queue_t *q;
    FILE *f;
    long size;

    qpath(path, sizeof(path), "corrupt.db");
    queue_default_opts(&o);
    assert_int_equal(queue_open(path, &o, &q), 0);
    snprintf(old_stream, sizeof(old_stream), "%s", queue_stream(q));
    for (int k = 0; k < 10; k++) { /* 2000 readings */
        fill(r, 200, 1763800000000 + k * 200);
        assert_int_equal(queue_append(q, r, 200), 0);
    }
    queue_close(q); /* a clean close checkpoints the WAL into the file */

    f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    assert_true(size > 8 * 4096);
    fseek(f, size / 2, SEEK_SET);
    for (long i = size / 2; i < size; i++)
        fputc((int)(i * 7919 % 251), f);
    fclose(f);

    assert_int_equal(queue_open(path, &o, &q), 0);
    assert_string_not_equal(queue_stream(q), old_stream);
    assert_int_equal(queue_losses(q, l, 4), 1);
    assert_string_equal(l[0].stream, old_stream);
    assert_string_equal(l[0].reason, "queue_corrupt");
    assert_u64_eq(l[0].first, 1);
    assert_u64_eq(l[0].last, 2000);
    fill(r, 1, 1763800009000);
    assert_int_equal(queue_append(q, r, 1), 0);
    assert_u64_eq(r[0].seq, 1); /* a new stream starts at 1 */
    queue_close(q);
}

static long sql_count(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long n = -1;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* An ack that cuts a chunk: the file keeps the chunk but not those readings, also after a
 * reopen; the view q lists one row per reading still queued. */
static void test_ack_floor_survives_reopen(void **state)
{
    char path[300];
    struct queue_opts o;
    struct reading r[300];
    struct queue_stats st;
    struct qbatch b;
    queue_t *q;

    qpath(path, sizeof(path), "floor.db");
    queue_default_opts(&o);
    assert_int_equal(queue_open(path, &o, &q), 0);
    fill(r, 300, 1763800000000);
    assert_int_equal(queue_append(q, r, 300), 0); /* two chunks: 1..256, 257..300 */
    assert_int_equal(queue_ack(q, queue_stream(q), 100), 0);
    queue_get_stats(q, &st);
    assert_i64_eq(st.depth, 200);
    assert_u64_eq(st.oldest_seq, 101);
    queue_close(q);
    assert_int_equal(sql_count(path, "SELECT count(*) FROM q"), 200);
    assert_int_equal(sql_count(path, "SELECT min(seq) FROM q"), 101);
    assert_int_equal(sql_count(path, "SELECT count(*) FROM chunk"), 2);

    assert_int_equal(queue_open(path, &o, &q), 0);
    queue_get_stats(q, &st);
    assert_i64_eq(st.depth, 200);
    assert_u64_eq(st.oldest_seq, 101);
    assert_int_equal(queue_fetch(q, "gw-01", 0, 0, 1000, &b), 1);
    assert_u64_eq(b.first_seq, 101);
    assert_u64_eq(b.last_seq, 300);
    assert_int_equal(b.count, 200);
    free(b.payload);
    /* batches by bytes: at least one reading, never more than the bytes asked */
    assert_int_equal(queue_fetch_sized(q, "gw-01", 0, 0, 1000, 1000, &b), 1);
    assert_true(b.len <= 1000);
    assert_true(b.count >= 1 && b.count < 200);
    free(b.payload);
    assert_int_equal(queue_fetch_sized(q, "gw-01", 0, 0, 1000, 10, &b), 1);
    assert_int_equal(b.count, 1);
    free(b.payload);
    assert_int_equal(queue_ack(q, queue_stream(q), 300), 0);
    queue_close(q);
    assert_int_equal(sql_count(path, "SELECT count(*) FROM q"), 0);
    assert_int_equal(sql_count(path, "SELECT count(*) FROM chunk"), 0);
}

/* A chunk whose body is garbage (the file itself passes its check) is reported lost, its
 * neighbours are still sent, and nothing crashes. */
static void test_corrupt_chunk_is_reported(void **state)
{
    char path[300];
    struct queue_opts o;
    struct reading r[300];
    struct qloss l[4];
    struct qbatch b;
    uint64_t seqs[400];
    queue_t *q;
    int n;

    qpath(path, sizeof(path), "badchunk.db");
    queue_default_opts(&o);
    assert_int_equal(queue_open(path, &o, &q), 0);
    for (int k = 0; k < 3; k++) {
        fill(r, 100, 1763800000000 + k * 100);
        assert_int_equal(queue_append(q, r, 100), 0); /* chunks 1..100, 101..200, 201..300 */
    }
    queue_close(q);
    sql_exec(path, "UPDATE chunk SET body = x'01ff00ff00' WHERE seq = 101");

    assert_int_equal(queue_open(path, &o, &q), 0);
    assert_int_equal(queue_fetch(q, "gw-01", 0, 0, 1000, &b), 1);
    assert_int_equal(b.count, 200);
    n = batch_seqs(&b, seqs, 400);
    assert_int_equal(n, 200);
    assert_u64_eq(seqs[99], 100);
    assert_u64_eq(seqs[100], 201);
    free(b.payload);
    assert_int_equal(queue_losses(q, l, 4), 1);
    assert_u64_eq(l[0].first, 101);
    assert_u64_eq(l[0].last, 200);
    assert_string_equal(l[0].reason, "queue_corrupt");
    /* fetched again: reported once */
    assert_int_equal(queue_fetch(q, "gw-01", 0, 0, 1000, &b), 1);
    free(b.payload);
    assert_int_equal(queue_losses(q, l, 4), 1);
    queue_close(q);
}

/* A queue file of the first format (one row of wire JSON per reading) is converted when
 * opened: same stream, same seqs, nothing lost; a row that does not parse is reported. */
static void test_old_format_is_converted(void **state)
{
    char path[300], sql[1024];
    struct queue_opts o;
    struct reading r[1];
    struct qloss l[4];
    struct qbatch b;
    struct wire_batch wb;
    char err[160];
    queue_t *q;

    qpath(path, sizeof(path), "v1.db");
    sql_exec(path, "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
                   "CREATE TABLE q(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, body TEXT NOT "
                   "NULL);"
                   "CREATE TABLE loss(stream TEXT NOT NULL, first INTEGER NOT NULL, last "
                   "INTEGER NOT NULL, count INTEGER NOT NULL, reason TEXT NOT NULL, ts INTEGER "
                   "NOT NULL);"
                   "INSERT INTO meta VALUES ('stream', '00112233aabbccdd'), ('next_seq', '10');");
    for (int seq = 5; seq <= 7; seq++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO q VALUES (%d, %d, '{\"seq\":%d,\"meter\":\"m%d\",\"ts\":%d,"
                 "\"ok\":true,\"values\":{\"power\":%d.25,\"voltage_l1\":229.8000030517578}}')",
                 seq, 1763800000 + seq, seq, seq, 1763800000 + seq, seq);
        sql_exec(path, sql);
    }
    sql_exec(path, "INSERT INTO q VALUES (9, 1, 'not json')");

    queue_default_opts(&o);
    assert_int_equal(queue_open(path, &o, &q), 0);
    assert_string_equal(queue_stream(q), "00112233aabbccdd");
    assert_int_equal(queue_fetch(q, "gw-01", 0, 0, 100, &b), 1);
    assert_int_equal(b.count, 3);
    assert_int_equal(wire_parse_batch(b.payload, b.len, &wb, err, sizeof(err)), 0);
    assert_int_equal(wb.n, 3);
    assert_u64_eq(wb.readings[0].seq, 5);
    assert_string_equal(wb.readings[2].meter, "m7");
    assert_i64_eq(wb.readings[1].ts_ms, 1763800006);
    assert_true(wb.readings[2].values[qty_index("power")] == 7.25);
    assert_true(wb.readings[2].values[qty_index("voltage_l1")] == 229.8000030517578);
    wire_batch_free(&wb);
    free(b.payload);
    assert_int_equal(queue_losses(q, l, 4), 1);
    assert_u64_eq(l[0].first, 9);
    assert_string_equal(l[0].reason, "queue_corrupt");
    fill(r, 1, 1763800009000);
    assert_int_equal(queue_append(q, r, 1), 0);
    assert_u64_eq(r[0].seq, 10);
    queue_close(q);
    assert_int_equal(sql_count(path, "SELECT count(*) FROM q"), 4);
    assert_int_equal(sql_count(path, "SELECT count(*) FROM sqlite_master WHERE name = 'q' AND "
                                     "type = 'view'"),
                     1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_fetch_ack),
        cmocka_unit_test(test_row_bound_reports_exact_loss),
        cmocka_unit_test(test_memory_first_spills),
        cmocka_unit_test(test_corrupt_file_is_set_aside),
        cmocka_unit_test(test_ack_floor_survives_reopen),
        cmocka_unit_test(test_corrupt_chunk_is_reported),
        cmocka_unit_test(test_old_format_is_converted),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
