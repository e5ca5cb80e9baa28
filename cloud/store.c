/*
 * store: the SQLite backend of store.h. All of meter-cloud's SQL lives in this file.
 *
 * Layout (schema version 1, PRAGMA user_version):
 *   gateways(id, name, status, status_ts, last_seen, gaps,
 *            health, health_ts, health_received, health_queue_depth, health_oldest_age_s)
 *       gaps: data gap events counted; health: the last health message's JSON text
 *   streams(id, gateway_id, name, first_seen, last_seen, received, duplicates, lost)
 *       one row per (gateway, stream id), with its counters (store.h, store_put_result)
 *   stream_seqs(stream_id, lo, hi) PRIMARY KEY (stream_id, lo), WITHOUT ROWID
 *       the stream's counted seqs (received or lost) as merged inclusive ranges
 *   stream_gaps(stream_id, lo, hi, first_seen, reported) PRIMARY KEY (stream_id, lo)
 *       exactly the stream's missing ranges (the complement of stream_seqs in
 *       [1, highest seq]), each with the cloud time it first went missing and whether it
 *       has been reported as a data gap. A range only ever shrinks or splits once it
 *       exists (the set only grows, and a new missing range lies above the old highest
 *       seq), and its pieces keep its first_seen and reported, so a gap is reported once.
 *   losses(id, stream_id, first, last, count, reason, ts, received_at)
 *       reported losses, UNIQUE (stream_id, first, last, reason, ts): a repeat is one row
 *   meters(id, name, gateway_id, first_seen, last_ts)
 *   quantities(id, name)                            stable ids for quantities.h's names
 *   readings(meter_id, ts, gateway_id, stream_id, seq, ok, unsynced, error, received)
 *       PRIMARY KEY (meter_id, ts), WITHOUT ROWID: one row per reading; the key is what
 *       makes at-least-once delivery effectively-once (a second copy is ignored).
 *   samples(meter_id, qty, ts, value) PRIMARY KEY (meter_id, qty, ts), WITHOUT ROWID
 *       one row per value. Keyed by quantity first, so that a rollup or a chart of one
 *       quantity of one meter over a time range is one contiguous range of the primary
 *       key. Reading a page of whole readings back is one query too: "qty IN (...)" with
 *       a ts range becomes one key range per quantity. Values as JSON in the readings row
 *       would have been simpler, but every rollup would then parse JSON row by row.
 * Times are INTEGER UTC milliseconds. Quantities are stored by their id in the
 * quantities table, not by their index in quantities.h, so reordering that table never
 * changes what a stored number means.
 *
 * Threads: two connections, each used under its own mutex: "w" for the ingest thread's
 * writes, "r" for the HTTP threads' reads. In WAL mode a reader sees the last committed
 * state while a batch is being written, so the API never waits for ingest and ingest
 * never waits for a slow query. A single mutex around one connection would be simpler but
 * would serialise the two. The statements of a connection are prepared once at open and
 * only used under that connection's mutex.
 *
 * Seq bookkeeping per batch: the stream's ranges are read inside the write transaction
 * into st->old, copied to st->cur, the batch's seqs added to st->cur, and only the rows
 * that differ written back, then stream_gaps reconciled the same way. A stream normally
 * has one range and no gap, so this costs a few rows; STORE_SEQ_RANGES_MAX bounds the
 * pathological case (a gateway sending sparse seqs).
 *
 * Durability: an ack tells the gateway it may delete what it covers, so a commit must
 * survive a power cut: synchronous=FULL (WAL synced on every commit), not NORMAL.
 */
#include "store.h"

#include "log.h"
#include "quantities.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_VERSION 1
#define BUSY_TIMEOUT_MS 5000
#define QTY_DB_MAX 256 /* quantities.id values we can map back */

static const char schema_v1[] = "CREATE TABLE gateways("
                                " id INTEGER PRIMARY KEY,"
                                " name TEXT NOT NULL UNIQUE,"
                                " status TEXT," /* 'online', 'offline', NULL: never reported */
                                " status_ts INTEGER,"
                                " last_seen INTEGER," /* cloud clock of its last readings batch */
                                " gaps INTEGER NOT NULL DEFAULT 0,"
                                " health TEXT,"
                                " health_ts INTEGER,"
                                " health_received INTEGER,"
                                " health_queue_depth INTEGER,"
                                " health_oldest_age_s INTEGER);"
                                "CREATE TABLE streams("
                                " id INTEGER PRIMARY KEY,"
                                " gateway_id INTEGER NOT NULL REFERENCES gateways(id),"
                                " name TEXT NOT NULL,"
                                " first_seen INTEGER NOT NULL,"
                                " last_seen INTEGER NOT NULL,"
                                " received INTEGER NOT NULL DEFAULT 0,"
                                " duplicates INTEGER NOT NULL DEFAULT 0,"
                                " lost INTEGER NOT NULL DEFAULT 0,"
                                " UNIQUE(gateway_id, name));"
                                "CREATE TABLE stream_seqs("
                                " stream_id INTEGER NOT NULL REFERENCES streams(id),"
                                " lo INTEGER NOT NULL,"
                                " hi INTEGER NOT NULL,"
                                " PRIMARY KEY(stream_id, lo)) WITHOUT ROWID;"
                                "CREATE TABLE stream_gaps("
                                " stream_id INTEGER NOT NULL REFERENCES streams(id),"
                                " lo INTEGER NOT NULL,"
                                " hi INTEGER NOT NULL,"
                                " first_seen INTEGER NOT NULL,"
                                " reported INTEGER NOT NULL,"
                                " PRIMARY KEY(stream_id, lo)) WITHOUT ROWID;"
                                "CREATE INDEX stream_gaps_due ON stream_gaps(reported, first_seen);"
                                "CREATE TABLE losses("
                                " id INTEGER PRIMARY KEY,"
                                " stream_id INTEGER NOT NULL REFERENCES streams(id),"
                                " first INTEGER NOT NULL,"
                                " last INTEGER NOT NULL,"
                                " count INTEGER NOT NULL,"
                                " reason TEXT NOT NULL,"
                                " ts INTEGER NOT NULL,"
                                " received_at INTEGER NOT NULL,"
                                " UNIQUE(stream_id, first, last, reason, ts));"
                                "CREATE TABLE meters("
                                " id INTEGER PRIMARY KEY,"
                                " name TEXT NOT NULL UNIQUE,"
                                " gateway_id INTEGER NOT NULL REFERENCES gateways(id),"
                                " first_seen INTEGER NOT NULL,"
                                " last_ts INTEGER NOT NULL);"
                                "CREATE TABLE quantities("
                                " id INTEGER PRIMARY KEY,"
                                " name TEXT NOT NULL UNIQUE);"
                                "CREATE TABLE readings("
                                " meter_id INTEGER NOT NULL REFERENCES meters(id),"
                                " ts INTEGER NOT NULL,"
                                " gateway_id INTEGER NOT NULL REFERENCES gateways(id),"
                                " stream_id INTEGER NOT NULL REFERENCES streams(id),"
                                " seq INTEGER NOT NULL,"
                                " ok INTEGER NOT NULL,"
                                " unsynced INTEGER NOT NULL,"
                                " error TEXT,"
                                " received INTEGER NOT NULL,"
                                " PRIMARY KEY(meter_id, ts)) WITHOUT ROWID;"
                                "CREATE TABLE samples("
                                " meter_id INTEGER NOT NULL,"
                                " qty INTEGER NOT NULL,"
                                " ts INTEGER NOT NULL,"
                                " value REAL NOT NULL,"
                                " PRIMARY KEY(meter_id, qty, ts)) WITHOUT ROWID;";

/* Writer statements. */
enum {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_GATEWAY,
    W_GATEWAY_ID,
    W_STREAM,
    W_METER,
    W_READING,
    W_SAMPLE,
    W_STATUS,
    W_SEQS,
    W_SEQ_INS,
    W_SEQ_UPD,
    W_SEQ_DEL,
    W_GAPS,
    W_GAP_INS,
    W_GAP_UPD,
    W_GAP_DEL,
    W_STREAM_COUNT,
    W_LOSS,
    W_HEALTH,
    W_GW_STREAMS,
    W_GAPS_DUE,
    W_GAP_MARK,
    W_GW_GAP,
    W_COUNT
};

static const char *const w_sql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_GATEWAY] = "INSERT INTO gateways(name, last_seen) VALUES(?1, ?2)"
                  " ON CONFLICT(name) DO UPDATE SET"
                  " last_seen = max(coalesce(last_seen, 0), excluded.last_seen)"
                  " RETURNING id",
    /* the no-op update makes RETURNING give the existing row's id */
    [W_GATEWAY_ID] = "INSERT INTO gateways(name) VALUES(?1)"
                     " ON CONFLICT(name) DO UPDATE SET name = excluded.name RETURNING id",
    [W_STREAM] = "INSERT INTO streams(gateway_id, name, first_seen, last_seen)"
                 " VALUES(?1, ?2, ?3, ?3)"
                 " ON CONFLICT(gateway_id, name) DO UPDATE SET"
                 " last_seen = max(last_seen, excluded.last_seen)"
                 " RETURNING id",
    /* a meter belongs to the gateway that delivered its newest reading */
    [W_METER] = "INSERT INTO meters(name, gateway_id, first_seen, last_ts)"
                " VALUES(?1, ?2, ?3, ?4)"
                " ON CONFLICT(name) DO UPDATE SET"
                " gateway_id = CASE WHEN excluded.last_ts >= meters.last_ts"
                " THEN excluded.gateway_id ELSE meters.gateway_id END,"
                " last_ts = max(meters.last_ts, excluded.last_ts)"
                " RETURNING id",
    /* DO NOTHING on the key only: unlike OR IGNORE it does not hide other constraint
     * failures. sqlite3_changes() tells a duplicate (0) from a new row (1). */
    [W_READING] = "INSERT INTO readings(meter_id, ts, gateway_id, stream_id, seq, ok,"
                  " unsynced, error, received) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                  " ON CONFLICT(meter_id, ts) DO NOTHING",
    [W_SAMPLE] = "INSERT INTO samples(meter_id, qty, ts, value) VALUES(?1, ?2, ?3, ?4)"
                 " ON CONFLICT(meter_id, qty, ts) DO NOTHING",
    /* A retained status is delivered again on every reconnect: only a change of state
     * moves status_ts, so a re-delivery does not pretend the gateway just changed. */
    [W_STATUS] = "INSERT INTO gateways(name, status, status_ts) VALUES(?1, ?2, ?3)"
                 " ON CONFLICT(name) DO UPDATE SET status = excluded.status,"
                 " status_ts = excluded.status_ts"
                 " WHERE gateways.status IS NOT excluded.status",
    [W_SEQS] = "SELECT lo, hi FROM stream_seqs WHERE stream_id = ?1 ORDER BY lo",
    [W_SEQ_INS] = "INSERT INTO stream_seqs(stream_id, lo, hi) VALUES(?1, ?2, ?3)",
    [W_SEQ_UPD] = "UPDATE stream_seqs SET hi = ?3 WHERE stream_id = ?1 AND lo = ?2",
    [W_SEQ_DEL] = "DELETE FROM stream_seqs WHERE stream_id = ?1 AND lo = ?2",
    [W_GAPS] = "SELECT lo, hi, first_seen, reported FROM stream_gaps WHERE stream_id = ?1"
               " ORDER BY lo",
    [W_GAP_INS] = "INSERT INTO stream_gaps(stream_id, lo, hi, first_seen, reported)"
                  " VALUES(?1, ?2, ?3, ?4, ?5)",
    [W_GAP_UPD] = "UPDATE stream_gaps SET hi = ?3, first_seen = ?4, reported = ?5"
                  " WHERE stream_id = ?1 AND lo = ?2",
    [W_GAP_DEL] = "DELETE FROM stream_gaps WHERE stream_id = ?1 AND lo = ?2",
    [W_STREAM_COUNT] = "UPDATE streams SET received = received + ?2,"
                       " duplicates = duplicates + ?3, lost = lost + ?4 WHERE id = ?1",
    [W_LOSS] = "INSERT INTO losses(stream_id, first, last, count, reason, ts, received_at)"
               " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"
               " ON CONFLICT(stream_id, first, last, reason, ts) DO NOTHING",
    [W_HEALTH] = "INSERT INTO gateways(name, health, health_ts, health_received,"
                 " health_queue_depth, health_oldest_age_s) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
                 " ON CONFLICT(name) DO UPDATE SET health = excluded.health,"
                 " health_ts = excluded.health_ts, health_received = excluded.health_received,"
                 " health_queue_depth = excluded.health_queue_depth,"
                 " health_oldest_age_s = excluded.health_oldest_age_s",
    [W_GW_STREAMS] = "SELECT s.id, s.name FROM streams s JOIN gateways g ON g.id = s.gateway_id"
                     " WHERE g.name = ?1 ORDER BY s.last_seen DESC, s.id DESC LIMIT ?2",
    [W_GAPS_DUE] = "SELECT p.stream_id, p.lo, p.hi, p.first_seen, s.name, g.name, g.id"
                   " FROM stream_gaps p JOIN streams s ON s.id = p.stream_id"
                   " JOIN gateways g ON g.id = s.gateway_id"
                   " WHERE p.reported = 0 AND p.first_seen <= ?1"
                   " ORDER BY p.first_seen, p.stream_id, p.lo LIMIT ?2",
    [W_GAP_MARK] = "UPDATE stream_gaps SET reported = 1"
                   " WHERE stream_id = ?1 AND lo = ?2 AND reported = 0",
    [W_GW_GAP] = "UPDATE gateways SET gaps = gaps + 1 WHERE id = ?1",
};

/* Reader statements. */
enum {
    R_PING,
    R_METER_ID,
    R_METERS,
    R_READINGS,
    R_SAMPLES,
    R_BEGIN,
    R_END,
    R_GATEWAYS,
    R_GATEWAY,
    R_STREAMS,
    R_SEQS,
    R_GAPS_OPEN,
    R_HEALTH,
    R_LOSSES,
    R_COUNT
};

#define GATEWAY_COLUMNS                                                                            \
    "SELECT g.id, g.name, g.status, g.status_ts, g.last_seen, g.gaps, g.health_ts,"                \
    " g.health_queue_depth, g.health_oldest_age_s, coalesce(sum(s.received), 0),"                  \
    " coalesce(sum(s.duplicates), 0), coalesce(sum(s.lost), 0), count(s.id)"                       \
    " FROM gateways g LEFT JOIN streams s ON s.gateway_id = g.id"

static const char *const r_sql[R_COUNT] = {
    [R_PING] = "SELECT count(*) FROM quantities",
    [R_METER_ID] = "SELECT id FROM meters WHERE name = ?1",
    [R_METERS] = "SELECT m.id, m.name, g.name, m.first_seen, m.last_ts"
                 " FROM meters m JOIN gateways g ON g.id = m.gateway_id ORDER BY m.name",
    [R_READINGS] = "SELECT r.ts, r.seq, r.ok, r.unsynced, r.error, s.name, g.name"
                   " FROM readings r JOIN streams s ON s.id = r.stream_id"
                   " JOIN gateways g ON g.id = r.gateway_id"
                   " WHERE r.meter_id = ?1 AND r.ts >= ?2 AND r.ts < ?3"
                   " ORDER BY r.ts DESC LIMIT ?4",
    [R_SAMPLES] = "SELECT qty, ts, value FROM samples WHERE meter_id = ?1"
                  " AND qty IN (SELECT id FROM quantities) AND ts >= ?2 AND ts <= ?3",
    /* a read transaction: one consistent snapshot across the queries of one answer */
    [R_BEGIN] = "BEGIN",
    [R_END] = "COMMIT",
    [R_GATEWAYS] = GATEWAY_COLUMNS " GROUP BY g.id ORDER BY g.name",
    [R_GATEWAY] = GATEWAY_COLUMNS " WHERE g.name = ?1 GROUP BY g.id",
    [R_STREAMS] = "SELECT id, name, first_seen, last_seen, received, duplicates, lost"
                  " FROM streams WHERE gateway_id = ?1 ORDER BY last_seen DESC, id DESC"
                  " LIMIT ?2",
    [R_SEQS] = "SELECT lo, hi FROM stream_seqs WHERE stream_id = ?1 ORDER BY lo",
    [R_GAPS_OPEN] = "SELECT count(*) FROM stream_gaps WHERE stream_id = ?1 AND reported = 1",
    [R_HEALTH] = "SELECT health FROM gateways WHERE id = ?1",
    [R_LOSSES] = "SELECT s.name, l.first, l.last, l.count, l.reason, l.ts, l.received_at"
                 " FROM losses l JOIN streams s ON s.id = l.stream_id"
                 " WHERE s.gateway_id = ?1 ORDER BY l.received_at DESC, l.id DESC LIMIT ?2",
};

/* One row of stream_gaps. */
struct gap_row {
    uint64_t lo, hi;
    int64_t first_seen;
    bool reported;
};

/* A growable array of gap rows. */
struct gaps {
    struct gap_row *g;
    size_t n, cap;
};

struct conn {
    sqlite3 *db;
    pthread_mutex_t mu;
    bool mu_ok; /* mu was initialised */
    sqlite3_stmt **stmt;
    int nstmt;
};

struct store {
    struct conn w, r;
    int qty_db[QTY_MAX];     /* quantities.h index -> quantities.id */
    int qty_idx[QTY_DB_MAX]; /* quantities.id -> quantities.h index, or -1 */
    /* writer's scratch, used under w.mu only; kept to reuse the memory */
    struct seqset old, cur; /* a stream's counted set before and after a write */
    struct gaps old_gaps, new_gaps;
    struct seq_range *missing; /* room for cur's missing ranges */
    size_t missing_cap;
};

static void dberr(sqlite3 *db, const char *what)
{
    log_warnx("store: %s: %s", what, sqlite3_errmsg(db));
}

/* Resets a statement for its next use; keeps its preparation. */
static void done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static void copy_text(char *dst, size_t len, const unsigned char *src)
{
    snprintf(dst, len, "%s", src ? (const char *)src : "");
}

/* Runs a statement that returns no rows (or whose rows do not matter). */
static int step_done(sqlite3 *db, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    done(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        dberr(db, what);
        return -EIO;
    }
    return 0;
}

/* Runs a statement that returns one integer (an id from RETURNING). */
static int step_id(sqlite3 *db, sqlite3_stmt *s, const char *what, int64_t *id)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(s, 0);
    done(s);
    if (rc != SQLITE_ROW) {
        dberr(db, what);
        return -EIO;
    }
    return 0;
}

static int open_conn(struct conn *c, const char *path, int nsql, char *err, size_t errlen)
{
    int rc;

    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        snprintf(err, errlen, "cannot create a mutex");
        return -ENOMEM;
    }
    c->mu_ok = true;
    rc = sqlite3_open_v2(path, &c->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", c->db ? sqlite3_errmsg(c->db) : "out of memory");
        return -EIO;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    c->stmt = calloc((size_t)nsql, sizeof(*c->stmt));
    if (!c->stmt) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    c->nstmt = nsql;
    return 0;
}

static int prepare_all(struct conn *c, const char *const *sql, char *err, size_t errlen)
{
    for (int i = 0; i < c->nstmt; i++) {
        if (sqlite3_prepare_v3(c->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->stmt[i], NULL) !=
            SQLITE_OK) {
            snprintf(err, errlen, "cannot prepare statement %d: %s", i, sqlite3_errmsg(c->db));
            return -EIO;
        }
    }
    return 0;
}

static void close_conn(struct conn *c)
{
    if (c->stmt)
        for (int i = 0; i < c->nstmt; i++)
            sqlite3_finalize(c->stmt[i]);
    free(c->stmt);
    c->stmt = NULL;
    if (c->db)
        sqlite3_close(c->db);
    c->db = NULL;
    if (c->mu_ok)
        pthread_mutex_destroy(&c->mu);
    c->mu_ok = false;
}

/* Runs one or more SQL statements that return nothing of interest. */
static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -EIO;
    }
    return 0;
}

/* Runs a pragma that returns one value and copies it as text to out. */
static int pragma(sqlite3 *db, const char *sql, char *out, size_t outlen, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = -EIO;

    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        goto fail;
    if (sqlite3_step(s) != SQLITE_ROW)
        goto fail;
    snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(s, 0));
    rc = 0;
fail:
    if (rc < 0)
        snprintf(err, errlen, "%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_finalize(s);
    return rc;
}

/* Creates the schema if the file is new, checks its version, maps the quantities. */
static int init_schema(store_t *st, char *err, size_t errlen)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt *s = NULL;
    char val[32];
    long ver;
    int rc;

    rc = pragma(db, "PRAGMA journal_mode=WAL", val, sizeof(val), err, errlen);
    if (rc < 0)
        return rc;
    if (strcmp(val, "wal") != 0) {
        snprintf(err, errlen, "cannot use WAL mode (journal_mode is %s)", val);
        return -EIO;
    }
    if ((rc = exec(db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; BEGIN IMMEDIATE", err,
                   errlen)) < 0)
        return rc;
    if ((rc = pragma(db, "PRAGMA user_version", val, sizeof(val), err, errlen)) < 0)
        goto fail;
    ver = strtol(val, NULL, 10);
    if (ver == 0) {
        char sql[64];
        if ((rc = exec(db, schema_v1, err, errlen)) < 0)
            goto fail;
        snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", SCHEMA_VERSION);
        if ((rc = exec(db, sql, err, errlen)) < 0)
            goto fail;
    } else if (ver != SCHEMA_VERSION) {
        snprintf(err, errlen, "schema version %ld, this program knows %d", ver, SCHEMA_VERSION);
        rc = -EINVAL;
        goto fail;
    }
    /* Quantities new to this build get the next free id; old ids never change. */
    if (sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO quantities(name) VALUES(?1)", -1, &s, NULL) !=
        SQLITE_OK)
        goto dbfail;
    for (int i = 0; i < qty_count(); i++) {
        sqlite3_bind_text(s, 1, qty_at(i)->name, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
            goto dbfail;
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    s = NULL;
    for (int i = 0; i < QTY_DB_MAX; i++)
        st->qty_idx[i] = -1;
    if (sqlite3_prepare_v2(db, "SELECT id, name FROM quantities", -1, &s, NULL) != SQLITE_OK)
        goto dbfail;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        int q = qty_index((const char *)sqlite3_column_text(s, 1));
        if (q < 0)
            continue; /* a quantity this build does not know: its samples stay unread */
        if (id <= 0 || id >= QTY_DB_MAX) {
            snprintf(err, errlen, "quantity id %lld out of range", (long long)id);
            rc = -EINVAL;
            goto fail;
        }
        st->qty_idx[id] = q;
        st->qty_db[q] = (int)id;
    }
    if (rc != SQLITE_DONE)
        goto dbfail;
    sqlite3_finalize(s);
    s = NULL;
    return exec(db, "COMMIT", err, errlen);
dbfail:
    snprintf(err, errlen, "creating the schema: %s", sqlite3_errmsg(db));
    rc = -EIO;
fail:
    sqlite3_finalize(s);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int store_open(const char *path, store_t **out, char *err, size_t errlen)
{
    store_t *st;
    int rc;

    *out = NULL;
    if (!path || !*path || strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0) {
        /* the two connections must see the same database */
        snprintf(err, errlen, "store.path must name a file");
        return -EINVAL;
    }
    st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if ((rc = open_conn(&st->w, path, W_COUNT, err, errlen)) < 0)
        goto fail;
    if ((rc = init_schema(st, err, errlen)) < 0)
        goto fail;
    if ((rc = prepare_all(&st->w, w_sql, err, errlen)) < 0)
        goto fail;
    if ((rc = open_conn(&st->r, path, R_COUNT, err, errlen)) < 0)
        goto fail;
    /* the reader never writes: query_only makes that a rule, not a hope */
    if ((rc = exec(st->r.db, "PRAGMA query_only=ON", err, errlen)) < 0)
        goto fail;
    if ((rc = prepare_all(&st->r, r_sql, err, errlen)) < 0)
        goto fail;
    *out = st;
    return 0;
fail:
    store_close(st);
    return rc;
}

void store_close(store_t *st)
{
    if (!st)
        return;
    close_conn(&st->r);
    close_conn(&st->w);
    seqset_free(&st->old);
    seqset_free(&st->cur);
    free(st->old_gaps.g);
    free(st->new_gaps.g);
    free(st->missing);
    free(st);
}

/* For sorting a batch's readings by meter, so each meter is upserted once. */
struct by_meter {
    const struct reading *r;
    int64_t meter_id;
};

static int cmp_meter(const void *a, const void *b)
{
    const struct by_meter *x = a, *y = b;
    int c = strcmp(x->r->meter, y->r->meter);
    if (c)
        return c;
    return x->r < y->r ? -1 : x->r > y->r; /* keeps the batch's order within a meter */
}

static int put_reading(store_t *st, const struct by_meter *m, int64_t gw_id, int64_t stream_id,
                       int64_t recv_ms, bool *dup)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt *s = st->w.stmt[W_READING];
    const struct reading *r = m->r;
    int rc;

    sqlite3_bind_int64(s, 1, m->meter_id);
    sqlite3_bind_int64(s, 2, r->ts_ms);
    sqlite3_bind_int64(s, 3, gw_id);
    sqlite3_bind_int64(s, 4, stream_id);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)r->seq);
    sqlite3_bind_int(s, 6, r->ok);
    sqlite3_bind_int(s, 7, r->unsynced);
    if (r->ok)
        sqlite3_bind_null(s, 8);
    else
        sqlite3_bind_text(s, 8, r->error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 9, recv_ms);
    if ((rc = step_done(db, s, "insert reading")) < 0)
        return rc;
    *dup = sqlite3_changes(db) == 0;
    if (*dup)
        return 0; /* the first copy's values stay */
    s = st->w.stmt[W_SAMPLE];
    for (int q = 0; q < qty_count(); q++) {
        if (!(r->present & (1u << q)))
            continue;
        sqlite3_bind_int64(s, 1, m->meter_id);
        sqlite3_bind_int(s, 2, st->qty_db[q]);
        sqlite3_bind_int64(s, 3, r->ts_ms);
        sqlite3_bind_double(s, 4, r->values[q]);
        if ((rc = step_done(db, s, "insert sample")) < 0)
            return rc;
    }
    return 0;
}

/* Room for n entries in g. */
static int gaps_reserve(struct gaps *g, size_t n)
{
    struct gap_row *p;
    size_t cap;

    if (n <= g->cap)
        return 0;
    cap = g->cap ? g->cap : 8;
    while (cap < n)
        cap *= 2;
    if (cap > SIZE_MAX / sizeof(*g->g))
        return -ENOMEM;
    p = realloc(g->g, cap * sizeof(*g->g));
    if (!p)
        return -ENOMEM;
    g->g = p;
    g->cap = cap;
    return 0;
}

/* Reads stream_id's counted set into *set with s (W_SEQS or R_SEQS, same columns). The
 * caller holds the connection's mutex. Rows that are not a valid set are -EIO: they were
 * not written by this file. */
static int load_set(sqlite3 *db, sqlite3_stmt *s, int64_t stream_id, struct seqset *set)
{
    int rc;

    seqset_clear(set);
    sqlite3_bind_int64(s, 1, stream_id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t lo = sqlite3_column_int64(s, 0), hi = sqlite3_column_int64(s, 1);
        if (lo < 1 || hi < lo || (set->n && (uint64_t)lo <= seqset_max(set) + 1)) {
            done(s);
            log_warnx("store: stream_seqs of stream %lld: [%lld, %lld] is not a valid range "
                      "here",
                      (long long)stream_id, (long long)lo, (long long)hi);
            return -EIO;
        }
        if (seqset_add(set, (uint64_t)lo, (uint64_t)hi, NULL) < 0) {
            done(s);
            return -ENOMEM;
        }
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(db, "read stream seqs");
        return -EIO;
    }
    return 0;
}

static void ack_from_set(const char *stream, const struct seqset *set, struct store_ack *ack)
{
    size_t n;

    snprintf(ack->stream, sizeof(ack->stream), "%s", stream);
    ack->upto = seqset_upto(set);
    n = seqset_missing(set, ack->missing, STORE_ACK_MISSING_MAX);
    ack->nmissing = n > STORE_ACK_MISSING_MAX ? STORE_ACK_MISSING_MAX : (int)n;
}

/* Runs a statement with the integer parameters v[0..n). */
static int run_ints(sqlite3 *db, sqlite3_stmt *s, const int64_t *v, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        sqlite3_bind_int64(s, i + 1, v[i]);
    return step_done(db, s, what);
}

/* Writes the rows of stream_seqs that differ between st->old (what the table holds) and
 * st->cur. Both are sorted by lo, so one pass pairs them up. */
static int write_set(store_t *st, int64_t sid)
{
    const struct seqset *o = &st->old, *c = &st->cur;
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt;
    size_t i = 0, j = 0;
    int rc = 0;

    while (rc == 0 && (i < o->n || j < c->n)) {
        if (i < o->n && j < c->n && o->r[i].lo == c->r[j].lo) {
            if (o->r[i].hi != c->r[j].hi)
                rc = run_ints(db, w[W_SEQ_UPD],
                              (int64_t[]){sid, (int64_t)c->r[j].lo, (int64_t)c->r[j].hi}, 3,
                              "update stream seqs");
            i++;
            j++;
        } else if (j == c->n || (i < o->n && o->r[i].lo < c->r[j].lo)) {
            rc = run_ints(db, w[W_SEQ_DEL], (int64_t[]){sid, (int64_t)o->r[i].lo}, 2,
                          "delete stream seqs");
            i++;
        } else {
            /* every old row with this lo is gone or later: no key clash */
            rc = run_ints(db, w[W_SEQ_INS],
                          (int64_t[]){sid, (int64_t)c->r[j].lo, (int64_t)c->r[j].hi}, 3,
                          "insert stream seqs");
            j++;
        }
    }
    return rc;
}

/* Makes stream_gaps hold exactly st->cur's missing ranges. A range that lies in an old gap
 * is a piece of it (see the layout above) and keeps its first_seen and reported; any other
 * is new, first seen at now. Writes only the rows that change. */
static int write_gaps(store_t *st, int64_t sid, int64_t now)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt, *s = w[W_GAPS];
    struct gaps *og = &st->old_gaps, *ng = &st->new_gaps;
    size_t total, i, j, k;
    int rc;

    og->n = ng->n = 0;
    sqlite3_bind_int64(s, 1, sid);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (gaps_reserve(og, og->n + 1) < 0) {
            done(s);
            return -ENOMEM;
        }
        og->g[og->n].lo = (uint64_t)sqlite3_column_int64(s, 0);
        og->g[og->n].hi = (uint64_t)sqlite3_column_int64(s, 1);
        og->g[og->n].first_seen = sqlite3_column_int64(s, 2);
        og->g[og->n].reported = sqlite3_column_int(s, 3) != 0;
        og->n++;
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(db, "read stream gaps");
        return -EIO;
    }

    total = seqset_missing(&st->cur, NULL, 0);
    if (total > st->missing_cap) {
        struct seq_range *m = realloc(st->missing, total * sizeof(*m));
        if (!m)
            return -ENOMEM;
        st->missing = m;
        st->missing_cap = total;
    }
    seqset_missing(&st->cur, st->missing, total);
    if (gaps_reserve(ng, total) < 0)
        return -ENOMEM;
    for (i = 0, k = 0; i < total; i++) {
        struct gap_row *g = &ng->g[ng->n++];
        g->lo = st->missing[i].lo;
        g->hi = st->missing[i].hi;
        while (k < og->n && og->g[k].hi < g->lo)
            k++;
        if (k < og->n && og->g[k].lo <= g->lo) {
            g->first_seen = og->g[k].first_seen;
            g->reported = og->g[k].reported;
        } else {
            g->first_seen = now;
            g->reported = false;
        }
    }

    rc = 0;
    for (i = 0, j = 0; rc == 0 && (i < og->n || j < ng->n);) {
        const struct gap_row *a = i < og->n ? &og->g[i] : NULL, *b = j < ng->n ? &ng->g[j] : NULL;
        if (a && b && a->lo == b->lo) {
            if (a->hi != b->hi || a->first_seen != b->first_seen || a->reported != b->reported)
                rc = run_ints(
                    db, w[W_GAP_UPD],
                    (int64_t[]){sid, (int64_t)b->lo, (int64_t)b->hi, b->first_seen, b->reported}, 5,
                    "update stream gaps");
            i++;
            j++;
        } else if (!b || (a && a->lo < b->lo)) {
            rc = run_ints(db, w[W_GAP_DEL], (int64_t[]){sid, (int64_t)a->lo}, 2,
                          "delete stream gaps");
            i++;
        } else {
            rc = run_ints(
                db, w[W_GAP_INS],
                (int64_t[]){sid, (int64_t)b->lo, (int64_t)b->hi, b->first_seen, b->reported}, 5,
                "insert stream gaps");
            j++;
        }
    }
    return rc;
}

/* Starts a seq-changing write: BEGIN, the gateway (with last_seen when last_seen >= 0) and
 * the stream rows, and the stream's set loaded into st->old and st->cur. Caller holds
 * w.mu; on failure the caller rolls back when *begun. */
static int begin_stream(store_t *st, const char *gw, const char *stream, int64_t recv_ms,
                        bool readings, int64_t *gw_id, int64_t *sid, bool *begun)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt;
    int rc;

    if ((rc = step_done(db, w[W_BEGIN], "begin")) < 0)
        return rc;
    *begun = true;
    if (readings) {
        sqlite3_bind_text(w[W_GATEWAY], 1, gw, -1, SQLITE_STATIC);
        sqlite3_bind_int64(w[W_GATEWAY], 2, recv_ms);
        rc = step_id(db, w[W_GATEWAY], "upsert gateway", gw_id);
    } else {
        sqlite3_bind_text(w[W_GATEWAY_ID], 1, gw, -1, SQLITE_STATIC);
        rc = step_id(db, w[W_GATEWAY_ID], "upsert gateway", gw_id);
    }
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(w[W_STREAM], 1, *gw_id);
    sqlite3_bind_text(w[W_STREAM], 2, stream, -1, SQLITE_STATIC);
    sqlite3_bind_int64(w[W_STREAM], 3, recv_ms);
    if ((rc = step_id(db, w[W_STREAM], "upsert stream", sid)) < 0)
        return rc;
    if ((rc = load_set(db, w[W_SEQS], *sid, &st->old)) < 0)
        return rc;
    return seqset_copy(&st->cur, &st->old);
}

/* Finishes a seq-changing write: the set and gaps written back, the counters added, COMMIT.
 * *begun is cleared once committed. */
static int commit_stream(store_t *st, int64_t sid, int64_t recv_ms, uint64_t received,
                         uint64_t duplicates, uint64_t lost, bool *begun)
{
    sqlite3 *db = st->w.db;
    int rc;

    if ((rc = write_set(st, sid)) < 0 || (rc = write_gaps(st, sid, recv_ms)) < 0)
        return rc;
    if ((rc = run_ints(db, st->w.stmt[W_STREAM_COUNT],
                       (int64_t[]){sid, (int64_t)received, (int64_t)duplicates, (int64_t)lost}, 4,
                       "count stream")) < 0)
        return rc;
    if ((rc = step_done(db, st->w.stmt[W_COMMIT], "commit")) < 0)
        return rc;
    *begun = false;
    return 0;
}

int store_put_batch(store_t *st, const char *gw, const char *stream, const struct reading *r, int n,
                    int64_t recv_ms, struct store_put_result *res)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt;
    struct by_meter *idx = NULL;
    int64_t gw_id, stream_id;
    bool begun = false;
    int rc = 0;

    memset(res, 0, sizeof(*res));
    if (n < 0 || (n > 0 && !r) || !wire_id_valid(gw) || !wire_stream_valid(stream))
        return -EINVAL;
    snprintf(res->ack.stream, sizeof(res->ack.stream), "%s", stream);
    if (n > 0) {
        idx = calloc((size_t)n, sizeof(*idx));
        if (!idx)
            return -ENOMEM;
        for (int i = 0; i < n; i++)
            idx[i].r = &r[i];
        qsort(idx, (size_t)n, sizeof(*idx), cmp_meter);
    }

    pthread_mutex_lock(&st->w.mu);
    if ((rc = begin_stream(st, gw, stream, recv_ms, true, &gw_id, &stream_id, &begun)) < 0)
        goto end;
    for (int i = 0; i < n;) {
        int j = i;
        int64_t last_ts = idx[i].r->ts_ms, meter_id;

        while (j < n && strcmp(idx[j].r->meter, idx[i].r->meter) == 0) {
            if (idx[j].r->ts_ms > last_ts)
                last_ts = idx[j].r->ts_ms;
            j++;
        }
        sqlite3_bind_text(w[W_METER], 1, idx[i].r->meter, -1, SQLITE_STATIC);
        sqlite3_bind_int64(w[W_METER], 2, gw_id);
        sqlite3_bind_int64(w[W_METER], 3, recv_ms);
        sqlite3_bind_int64(w[W_METER], 4, last_ts);
        if ((rc = step_id(db, w[W_METER], "upsert meter", &meter_id)) < 0)
            goto end;
        for (; i < j; i++) {
            uint64_t seq = idx[i].r->seq, added = 0;
            bool dup;
            idx[i].meter_id = meter_id;
            if ((rc = put_reading(st, &idx[i], gw_id, stream_id, recv_ms, &dup)) < 0)
                goto end;
            if (seq >= 1 && (rc = seqset_add(&st->cur, seq, seq, &added)) < 0)
                goto end;
            if (!dup)
                res->inserted++;
            if (added)
                res->received++;
            if (dup || (seq >= 1 && !added))
                res->duplicates++;
        }
    }
    if (st->cur.n > STORE_SEQ_RANGES_MAX) {
        rc = -E2BIG;
        goto end;
    }
    if ((rc = commit_stream(st, stream_id, recv_ms, (uint64_t)res->received,
                            (uint64_t)res->duplicates, 0, &begun)) < 0)
        goto end;
    ack_from_set(stream, &st->cur, &res->ack);
end:
    if (begun) {
        step_done(db, w[W_ROLLBACK], "rollback");
        res->inserted = res->duplicates = res->received = 0;
        if (rc == -E2BIG)
            ack_from_set(stream, &st->old, &res->ack);
    }
    pthread_mutex_unlock(&st->w.mu);
    free(idx);
    return rc;
}

int store_put_loss(store_t *st, const char *gw, const char *stream, const struct store_loss *l,
                   int n, int64_t recv_ms, struct store_loss_result *res)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt;
    int64_t gw_id, sid;
    bool begun = false;
    int rc;

    memset(res, 0, sizeof(*res));
    if (n < 1 || !l || !wire_id_valid(gw) || !wire_stream_valid(stream))
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (l[i].first < 1 || l[i].first > l[i].last || l[i].last > STORE_SEQ_MAX ||
            l[i].count > l[i].last - l[i].first + 1 || !l[i].reason[0])
            return -EINVAL;
    snprintf(res->ack.stream, sizeof(res->ack.stream), "%s", stream);

    pthread_mutex_lock(&st->w.mu);
    if ((rc = begin_stream(st, gw, stream, recv_ms, false, &gw_id, &sid, &begun)) < 0)
        goto end;
    for (int i = 0; i < n; i++) {
        sqlite3_stmt *s = w[W_LOSS];
        uint64_t added;
        sqlite3_bind_int64(s, 1, sid);
        sqlite3_bind_int64(s, 2, (int64_t)l[i].first);
        sqlite3_bind_int64(s, 3, (int64_t)l[i].last);
        sqlite3_bind_int64(s, 4, (int64_t)l[i].count);
        sqlite3_bind_text(s, 5, l[i].reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 6, l[i].ts_ms);
        sqlite3_bind_int64(s, 7, recv_ms);
        if ((rc = step_done(db, s, "insert loss")) < 0)
            goto end;
        if (sqlite3_changes(db) > 0)
            res->recorded++;
        if ((rc = seqset_add(&st->cur, l[i].first, l[i].last, &added)) < 0)
            goto end;
        res->lost += added;
    }
    if (st->cur.n > STORE_SEQ_RANGES_MAX) {
        rc = -E2BIG;
        goto end;
    }
    if ((rc = commit_stream(st, sid, recv_ms, 0, 0, res->lost, &begun)) < 0)
        goto end;
    ack_from_set(stream, &st->cur, &res->ack);
end:
    if (begun) {
        step_done(db, w[W_ROLLBACK], "rollback");
        res->lost = 0;
        res->recorded = 0;
        if (rc == -E2BIG)
            ack_from_set(stream, &st->old, &res->ack);
    }
    pthread_mutex_unlock(&st->w.mu);
    return rc;
}

int store_put_status(store_t *st, const char *gw, const char *state, int64_t ts_ms, bool *changed)
{
    sqlite3_stmt *s = st->w.stmt[W_STATUS];
    int rc;

    pthread_mutex_lock(&st->w.mu);
    sqlite3_bind_text(s, 1, gw, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, ts_ms);
    rc = step_done(st->w.db, s, "store status");
    *changed = rc == 0 && sqlite3_changes(st->w.db) > 0;
    pthread_mutex_unlock(&st->w.mu);
    return rc;
}

int store_put_health(store_t *st, const char *gw, const char *json, size_t len,
                     const struct store_health *h, int64_t recv_ms)
{
    sqlite3_stmt *s = st->w.stmt[W_HEALTH];
    int rc;

    if (!wire_id_valid(gw) || !json || len == 0 || len > INT32_MAX)
        return -EINVAL;
    pthread_mutex_lock(&st->w.mu);
    sqlite3_bind_text(s, 1, gw, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, json, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, h->ts_ms);
    sqlite3_bind_int64(s, 4, recv_ms);
    if (h->queue_depth >= 0)
        sqlite3_bind_int64(s, 5, h->queue_depth);
    else
        sqlite3_bind_null(s, 5);
    if (h->oldest_age_s >= 0)
        sqlite3_bind_int64(s, 6, h->oldest_age_s);
    else
        sqlite3_bind_null(s, 6);
    rc = step_done(st->w.db, s, "store health");
    pthread_mutex_unlock(&st->w.mu);
    return rc;
}

int store_stream_acks(store_t *st, const char *gw, struct store_ack *out, int max, int *n)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt *s = st->w.stmt[W_GW_STREAMS];
    int64_t ids[STORE_STREAMS_MAX];
    int cnt = 0, rc;

    *n = 0;
    if (max > STORE_STREAMS_MAX)
        max = STORE_STREAMS_MAX;
    if (max <= 0)
        return 0;
    pthread_mutex_lock(&st->w.mu);
    sqlite3_bind_text(s, 1, gw, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, max);
    while (cnt < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        ids[cnt] = sqlite3_column_int64(s, 0);
        copy_text(out[cnt].stream, sizeof(out[cnt].stream), sqlite3_column_text(s, 1));
        cnt++;
    }
    done(s);
    if (cnt < max && rc != SQLITE_DONE) {
        dberr(db, "list streams");
        rc = -EIO;
        goto end;
    }
    rc = 0;
    for (int i = 0; i < cnt && rc == 0; i++) {
        char name[WIRE_STREAM_MAX];
        memcpy(name, out[i].stream, sizeof(name));
        if ((rc = load_set(db, st->w.stmt[W_SEQS], ids[i], &st->cur)) == 0)
            ack_from_set(name, &st->cur, &out[i]);
    }
    if (rc == 0)
        *n = cnt;
end:
    pthread_mutex_unlock(&st->w.mu);
    return rc;
}

/* Reads up to max due gaps into out; caller holds w.mu. gw_ids and sids get the row ids. */
static int due_gaps(store_t *st, int64_t before, struct store_gap *out, int64_t *sids,
                    int64_t *gw_ids, int max, int *n)
{
    sqlite3_stmt *s = st->w.stmt[W_GAPS_DUE];
    int cnt = 0, rc;

    sqlite3_bind_int64(s, 1, before);
    sqlite3_bind_int(s, 2, max);
    while (cnt < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_gap *g = &out[cnt];
        sids[cnt] = sqlite3_column_int64(s, 0);
        g->first = (uint64_t)sqlite3_column_int64(s, 1);
        g->last = (uint64_t)sqlite3_column_int64(s, 2);
        g->first_seen_ms = sqlite3_column_int64(s, 3);
        copy_text(g->stream, sizeof(g->stream), sqlite3_column_text(s, 4));
        copy_text(g->gateway, sizeof(g->gateway), sqlite3_column_text(s, 5));
        gw_ids[cnt] = sqlite3_column_int64(s, 6);
        cnt++;
    }
    done(s);
    if (cnt < max && rc != SQLITE_DONE) {
        dberr(st->w.db, "find due gaps");
        return -EIO;
    }
    *n = cnt;
    return 0;
}

#define GAPS_PER_CHECK 64

int store_check_gaps(store_t *st, int64_t now_ms, int64_t grace_ms, struct store_gap *out, int max,
                     int *n)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt;
    int64_t sids[GAPS_PER_CHECK], gw_ids[GAPS_PER_CHECK];
    bool begun = false;
    int cnt = 0, rc;

    *n = 0;
    if (max > GAPS_PER_CHECK)
        max = GAPS_PER_CHECK;
    if (max <= 0 || grace_ms < 0)
        return -EINVAL;
    pthread_mutex_lock(&st->w.mu);
    /* the usual answer, nothing due, without taking the write lock */
    if ((rc = due_gaps(st, now_ms - grace_ms, out, sids, gw_ids, 1, &cnt)) < 0 || cnt == 0)
        goto end;
    if ((rc = step_done(db, w[W_BEGIN], "begin")) < 0)
        goto end;
    begun = true;
    /* again inside the transaction: another writer may have reported them meanwhile */
    if ((rc = due_gaps(st, now_ms - grace_ms, out, sids, gw_ids, max, &cnt)) < 0)
        goto end;
    for (int i = 0; i < cnt; i++) {
        if ((rc = run_ints(db, w[W_GAP_MARK], (int64_t[]){sids[i], (int64_t)out[i].first}, 2,
                           "mark gap")) < 0 ||
            (rc = run_ints(db, w[W_GW_GAP], (int64_t[]){gw_ids[i]}, 1, "count gap")) < 0)
            goto end;
    }
    if ((rc = step_done(db, w[W_COMMIT], "commit")) < 0)
        goto end;
    begun = false;
    *n = cnt;
end:
    if (begun)
        step_done(db, w[W_ROLLBACK], "rollback");
    pthread_mutex_unlock(&st->w.mu);
    return rc;
}

int store_ping(store_t *st)
{
    int rc;
    pthread_mutex_lock(&st->r.mu);
    rc = step_done(st->r.db, st->r.stmt[R_PING], "ping");
    pthread_mutex_unlock(&st->r.mu);
    return rc;
}

static int cmp_ts_desc(const void *key, const void *elem)
{
    int64_t ts = *(const int64_t *)key;
    const struct store_reading *e = elem;
    return ts > e->r.ts_ms ? -1 : ts < e->r.ts_ms;
}

/* Reads up to limit readings of meter_id in [from, to), newest first, with their values,
 * into *out (malloc'd). Caller holds st->r.mu. */
static int load_readings(store_t *st, const char *meter, int64_t meter_id, int64_t from, int64_t to,
                         int limit, struct store_reading **out, int *n)
{
    sqlite3 *db = st->r.db;
    sqlite3_stmt *s = st->r.stmt[R_READINGS];
    struct store_reading *v = NULL, *grown;
    int cap = 0, cnt = 0, rc;

    *out = NULL;
    *n = 0;
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int64(s, 2, from);
    sqlite3_bind_int64(s, 3, to);
    sqlite3_bind_int(s, 4, limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_reading *e;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            if (cap > limit)
                cap = limit;
            if (cap <= cnt)
                cap = cnt + 1;
            grown = realloc(v, (size_t)cap * sizeof(*v));
            if (!grown) {
                done(s);
                free(v);
                return -ENOMEM;
            }
            v = grown;
        }
        e = &v[cnt++];
        memset(e, 0, sizeof(*e));
        snprintf(e->r.meter, sizeof(e->r.meter), "%s", meter);
        e->r.ts_ms = sqlite3_column_int64(s, 0);
        e->r.seq = (uint64_t)sqlite3_column_int64(s, 1);
        e->r.ok = sqlite3_column_int(s, 2) != 0;
        e->r.unsynced = sqlite3_column_int(s, 3) != 0;
        copy_text(e->r.error, sizeof(e->r.error), sqlite3_column_text(s, 4));
        copy_text(e->stream, sizeof(e->stream), sqlite3_column_text(s, 5));
        copy_text(e->gateway, sizeof(e->gateway), sqlite3_column_text(s, 6));
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(db, "read readings");
        free(v);
        return -EIO;
    }
    if (cnt == 0)
        return 0;

    /* the page is a contiguous ts range: its samples are those in [oldest, newest] */
    s = st->r.stmt[R_SAMPLES];
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int64(s, 2, v[cnt - 1].r.ts_ms);
    sqlite3_bind_int64(s, 3, v[0].r.ts_ms);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t qid = sqlite3_column_int64(s, 0), ts = sqlite3_column_int64(s, 1);
        struct store_reading *e;
        int q;

        if (qid <= 0 || qid >= QTY_DB_MAX || (q = st->qty_idx[qid]) < 0)
            continue;
        e = bsearch(&ts, v, (size_t)cnt, sizeof(*v), cmp_ts_desc);
        if (!e)
            continue;
        e->r.values[q] = sqlite3_column_double(s, 2);
        e->r.present |= 1u << q;
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(db, "read samples");
        free(v);
        return -EIO;
    }
    *out = v;
    *n = cnt;
    return 0;
}

int store_list_meters(store_t *st, struct store_meter **out, int *n)
{
    sqlite3_stmt *s = st->r.stmt[R_METERS];
    struct store_meter *v = NULL, *grown;
    int64_t *ids = NULL, *gids;
    int cap = 0, cnt = 0, rc;

    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&st->r.mu);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_meter *m;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            grown = realloc(v, (size_t)cap * sizeof(*v));
            gids = realloc(ids, (size_t)cap * sizeof(*ids));
            if (grown)
                v = grown;
            if (gids)
                ids = gids;
            if (!grown || !gids) {
                done(s);
                rc = -ENOMEM;
                goto fail;
            }
        }
        m = &v[cnt];
        memset(m, 0, sizeof(*m));
        ids[cnt] = sqlite3_column_int64(s, 0);
        copy_text(m->id, sizeof(m->id), sqlite3_column_text(s, 1));
        copy_text(m->gateway, sizeof(m->gateway), sqlite3_column_text(s, 2));
        m->first_seen_ms = sqlite3_column_int64(s, 3);
        m->last_ts_ms = sqlite3_column_int64(s, 4);
        cnt++;
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(st->r.db, "list meters");
        rc = -EIO;
        goto fail;
    }
    for (int i = 0; i < cnt; i++) {
        struct store_reading *last;
        int nl;
        rc =
            load_readings(st, v[i].id, ids[i], v[i].last_ts_ms, v[i].last_ts_ms + 1, 1, &last, &nl);
        if (rc < 0)
            goto fail;
        if (nl == 1) {
            v[i].last = *last;
            v[i].has_last = true;
        }
        free(last);
    }
    pthread_mutex_unlock(&st->r.mu);
    free(ids);
    *out = v;
    *n = cnt;
    return 0;
fail:
    pthread_mutex_unlock(&st->r.mu);
    free(ids);
    free(v);
    return rc;
}

int store_readings(store_t *st, const char *meter, int64_t from_ms, int64_t to_ms, int limit,
                   struct store_reading **out, int *n)
{
    sqlite3_stmt *s = st->r.stmt[R_METER_ID];
    int64_t meter_id = 0;
    int rc;

    *out = NULL;
    *n = 0;
    if (limit <= 0 || from_ms >= to_ms)
        return -EINVAL;
    pthread_mutex_lock(&st->r.mu);
    sqlite3_bind_text(s, 1, meter, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        meter_id = sqlite3_column_int64(s, 0);
    done(s);
    if (rc == SQLITE_DONE) {
        rc = -ENOENT;
    } else if (rc != SQLITE_ROW) {
        dberr(st->r.db, "find meter");
        rc = -EIO;
    } else {
        rc = load_readings(st, meter, meter_id, from_ms, to_ms, limit, out, n);
    }
    pthread_mutex_unlock(&st->r.mu);
    return rc;
}

/* Fills g from a row of R_GATEWAYS / R_GATEWAY; *id gets its row id. */
static void gateway_row(sqlite3_stmt *s, struct store_gateway *g, int64_t *id)
{
    memset(g, 0, sizeof(*g));
    *id = sqlite3_column_int64(s, 0);
    copy_text(g->id, sizeof(g->id), sqlite3_column_text(s, 1));
    copy_text(g->status, sizeof(g->status), sqlite3_column_text(s, 2));
    g->status_ts_ms = sqlite3_column_int64(s, 3);
    g->has_last_seen = sqlite3_column_type(s, 4) != SQLITE_NULL;
    g->last_seen_ms = sqlite3_column_int64(s, 4);
    g->gaps = (uint64_t)sqlite3_column_int64(s, 5);
    g->has_health = sqlite3_column_type(s, 6) != SQLITE_NULL;
    g->health.ts_ms = sqlite3_column_int64(s, 6);
    g->health.queue_depth =
        sqlite3_column_type(s, 7) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 7);
    g->health.oldest_age_s =
        sqlite3_column_type(s, 8) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 8);
    g->received = (uint64_t)sqlite3_column_int64(s, 9);
    g->duplicates = (uint64_t)sqlite3_column_int64(s, 10);
    g->lost = (uint64_t)sqlite3_column_int64(s, 11);
    g->nstreams_total = sqlite3_column_int(s, 12);
}

/* Loads gateway gw_id's newest streams into g->streams with their seq state. Caller holds
 * r.mu inside a read transaction. */
static int load_streams(store_t *st, int64_t gw_id, struct store_gateway *g)
{
    sqlite3 *db = st->r.db;
    sqlite3_stmt *s = st->r.stmt[R_STREAMS];
    int64_t ids[STORE_STREAMS_MAX];
    struct seqset set;
    int cnt = 0, rc = 0;

    g->streams = calloc(STORE_STREAMS_MAX, sizeof(*g->streams));
    if (!g->streams)
        return -ENOMEM;
    sqlite3_bind_int64(s, 1, gw_id);
    sqlite3_bind_int(s, 2, STORE_STREAMS_MAX);
    while (cnt < STORE_STREAMS_MAX && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_stream *x = &g->streams[cnt];
        ids[cnt] = sqlite3_column_int64(s, 0);
        copy_text(x->id, sizeof(x->id), sqlite3_column_text(s, 1));
        x->first_seen_ms = sqlite3_column_int64(s, 2);
        x->last_seen_ms = sqlite3_column_int64(s, 3);
        x->received = (uint64_t)sqlite3_column_int64(s, 4);
        x->duplicates = (uint64_t)sqlite3_column_int64(s, 5);
        x->lost = (uint64_t)sqlite3_column_int64(s, 6);
        cnt++;
    }
    done(s);
    if (cnt < STORE_STREAMS_MAX && rc != SQLITE_DONE) {
        dberr(db, "list streams");
        return -EIO;
    }
    g->nstreams = cnt;
    seqset_init(&set);
    rc = 0;
    for (int i = 0; i < cnt && rc == 0; i++) {
        struct store_stream *x = &g->streams[i];
        size_t m;
        if ((rc = load_set(db, st->r.stmt[R_SEQS], ids[i], &set)) < 0)
            break;
        x->upto = seqset_upto(&set);
        m = seqset_missing(&set, x->missing, STORE_ACK_MISSING_MAX);
        x->nmissing_total = m;
        x->nmissing = m > STORE_ACK_MISSING_MAX ? STORE_ACK_MISSING_MAX : (int)m;
        sqlite3_bind_int64(st->r.stmt[R_GAPS_OPEN], 1, ids[i]);
        if (sqlite3_step(st->r.stmt[R_GAPS_OPEN]) == SQLITE_ROW)
            x->gaps_open = sqlite3_column_int(st->r.stmt[R_GAPS_OPEN], 0);
        else
            rc = -EIO;
        done(st->r.stmt[R_GAPS_OPEN]);
        if (rc < 0)
            dberr(db, "count open gaps");
    }
    seqset_free(&set);
    return rc;
}

int store_list_gateways(store_t *st, struct store_gateway **out, int *n)
{
    sqlite3 *db = st->r.db;
    sqlite3_stmt *s = st->r.stmt[R_GATEWAYS];
    struct store_gateway *v = NULL, *grown;
    int64_t *ids = NULL, *gids;
    int cap = 0, cnt = 0, rc;

    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&st->r.mu);
    if ((rc = step_done(db, st->r.stmt[R_BEGIN], "begin read")) < 0) {
        pthread_mutex_unlock(&st->r.mu);
        return rc;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            grown = realloc(v, (size_t)cap * sizeof(*v));
            if (grown)
                v = grown;
            gids = realloc(ids, (size_t)cap * sizeof(*ids));
            if (gids)
                ids = gids;
            if (!grown || !gids) {
                done(s);
                rc = -ENOMEM;
                goto fail;
            }
        }
        gateway_row(s, &v[cnt], &ids[cnt]);
        cnt++;
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(db, "list gateways");
        rc = -EIO;
        goto fail;
    }
    for (int i = 0; i < cnt; i++)
        if ((rc = load_streams(st, ids[i], &v[i])) < 0)
            goto fail;
    step_done(db, st->r.stmt[R_END], "end read");
    pthread_mutex_unlock(&st->r.mu);
    free(ids);
    *out = v;
    *n = cnt;
    return 0;
fail:
    step_done(db, st->r.stmt[R_END], "end read");
    pthread_mutex_unlock(&st->r.mu);
    store_gateways_free(v, cnt);
    free(ids);
    return rc;
}

/* Reads gateway gw_id's newest losses into *out (malloc'd). Caller holds r.mu. */
static int load_losses(store_t *st, int64_t gw_id, struct store_loss_entry **out, int *n)
{
    sqlite3_stmt *s = st->r.stmt[R_LOSSES];
    struct store_loss_entry *v;
    int cnt = 0, rc = 0;

    *out = NULL;
    *n = 0;
    v = calloc(STORE_LOSSES_MAX, sizeof(*v));
    if (!v)
        return -ENOMEM;
    sqlite3_bind_int64(s, 1, gw_id);
    sqlite3_bind_int(s, 2, STORE_LOSSES_MAX);
    while (cnt < STORE_LOSSES_MAX && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_loss_entry *e = &v[cnt++];
        copy_text(e->stream, sizeof(e->stream), sqlite3_column_text(s, 0));
        e->loss.first = (uint64_t)sqlite3_column_int64(s, 1);
        e->loss.last = (uint64_t)sqlite3_column_int64(s, 2);
        e->loss.count = (uint64_t)sqlite3_column_int64(s, 3);
        copy_text(e->loss.reason, sizeof(e->loss.reason), sqlite3_column_text(s, 4));
        e->loss.ts_ms = sqlite3_column_int64(s, 5);
        e->received_ms = sqlite3_column_int64(s, 6);
    }
    done(s);
    if (cnt < STORE_LOSSES_MAX && rc != SQLITE_DONE) {
        dberr(st->r.db, "list losses");
        free(v);
        return -EIO;
    }
    *out = v;
    *n = cnt;
    return 0;
}

int store_get_gateway(store_t *st, const char *id, struct store_gateway *out, char **health,
                      struct store_loss_entry **losses, int *nlosses)
{
    sqlite3 *db = st->r.db;
    sqlite3_stmt *s = st->r.stmt[R_GATEWAY];
    int64_t gw_id = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    *health = NULL;
    *losses = NULL;
    *nlosses = 0;
    pthread_mutex_lock(&st->r.mu);
    if ((rc = step_done(db, st->r.stmt[R_BEGIN], "begin read")) < 0) {
        pthread_mutex_unlock(&st->r.mu);
        return rc;
    }
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        gateway_row(s, out, &gw_id);
    done(s);
    if (rc == SQLITE_DONE) {
        rc = -ENOENT;
        goto fail;
    }
    if (rc != SQLITE_ROW) {
        dberr(db, "find gateway");
        rc = -EIO;
        goto fail;
    }
    if ((rc = load_streams(st, gw_id, out)) < 0)
        goto fail;
    s = st->r.stmt[R_HEALTH];
    sqlite3_bind_int64(s, 1, gw_id);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        int len = sqlite3_column_bytes(s, 0);
        *health = t ? malloc((size_t)len + 1) : NULL;
        if (*health) {
            memcpy(*health, t, (size_t)len);
            (*health)[len] = '\0';
        }
        if (!*health)
            rc = -ENOMEM;
    }
    done(s);
    if (rc == -ENOMEM)
        goto fail;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        dberr(db, "read health");
        rc = -EIO;
        goto fail;
    }
    if ((rc = load_losses(st, gw_id, losses, nlosses)) < 0)
        goto fail;
    step_done(db, st->r.stmt[R_END], "end read");
    pthread_mutex_unlock(&st->r.mu);
    return 0;
fail:
    step_done(db, st->r.stmt[R_END], "end read");
    pthread_mutex_unlock(&st->r.mu);
    store_gateway_clear(out);
    free(*health);
    *health = NULL;
    return rc;
}

void store_gateway_clear(struct store_gateway *g)
{
    free(g->streams);
    g->streams = NULL;
    g->nstreams = 0;
}

void store_gateways_free(struct store_gateway *g, int n)
{
    if (!g)
        return;
    for (int i = 0; i < n; i++)
        store_gateway_clear(&g[i]);
    free(g);
}
