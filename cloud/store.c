/*
 * store: the SQLite backend of store.h. All of meter-cloud's SQL lives in this file.
 *
 * Layout (schema version 2, PRAGMA user_version; version 1 is migrated on open, see
 * migrate_v1):
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
 *   readings(meter_id, ts, gateway_id, stream_id, seq, ok, unsynced, error, received, vals)
 *       PRIMARY KEY (meter_id, ts), WITHOUT ROWID: one row per reading; the key is what
 *       makes at-least-once delivery effectively-once (a second copy is ignored). vals
 *       holds the reading's values in one compact blob (NULL when it has none): 9 bytes
 *       per value, the quantity's id (quantities.id, 1 byte) then the value as an IEEE 754
 *       double in little-endian byte order, ascending by id (vals_encode). One B-tree
 *       insert per reading: schema version 1 kept a row per value in a table samples
 *       (meter_id, qty, ts), about 17 inserts per reading spread over as many leaf pages,
 *       which made ingest 5 times slower. The SQL function qv(vals, qty id) gives one
 *       value (NULL when absent), so that rollups still read one quantity in SQL; the
 *       rollups, not the raw rows, serve every chart and sum longer than a few minutes.
 *   sites, registry, replacements, rollup_5m, rollup_1h, rollup_1d, counter_gaps
 *       the registry of sites and meters and the rollups of the readings: see the block
 *       "registry, rollups and usage" near the end of this file.
 * Users, sessions and API tokens have tables and a connection of their own, outside the
 * schema version: see the block at the end of this file.
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
#include "rollup.h"
#include "tz.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SCHEMA_VERSION 2
#define STR_(x) #x
#define STR(x) STR_(x)
#define VAL_BYTES 9            /* one value in readings.vals: quantity id, IEEE 754 double (LE) */
#define WRITER_CACHE_KIB 65536 /* the writer's page cache: a batch's pages stay in memory */
#define BUSY_TIMEOUT_MS 5000
#define QTY_DB_MAX 256 /* quantities.id values we can map back */

static const char schema_main[] =
    "CREATE TABLE gateways("
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
    " vals BLOB,"
    " PRIMARY KEY(meter_id, ts)) WITHOUT ROWID;";

/* Part of the schema too: the registry and the rollups (the block "registry, rollups and
 * usage" near the end of this file). */
#define ROLLUP_TABLE(name)                                                                         \
    "CREATE TABLE " name "("                                                                       \
    " meter_id INTEGER NOT NULL,"                                                                  \
    " qty INTEGER NOT NULL,"                                                                       \
    " ts INTEGER NOT NULL,"                                                                        \
    " n INTEGER NOT NULL,"                                                                         \
    " min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL,"                                    \
    " first REAL NOT NULL, first_ts INTEGER NOT NULL,"                                             \
    " last REAL NOT NULL, last_ts INTEGER NOT NULL,"                                               \
    " delta REAL NOT NULL, topup REAL NOT NULL, resets INTEGER NOT NULL,"                          \
    " PRIMARY KEY(meter_id, qty, ts)) WITHOUT ROWID;"

static const char schema_usage[] =
    "CREATE TABLE sites("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " title TEXT,"
    " tz TEXT NOT NULL," /* IANA zone */
    " price REAL,"       /* tariff per kWh, NULL: none */
    " currency TEXT,"
    " created INTEGER NOT NULL,"
    " updated INTEGER NOT NULL);"
    "CREATE TABLE registry("
    " meter TEXT PRIMARY KEY," /* meters.name, seen or not */
    " gateway TEXT NOT NULL,"
    " site_id INTEGER NOT NULL REFERENCES sites(id),"
    " region TEXT,"
    " area TEXT,"
    " dwelling TEXT,"
    " prepaid INTEGER NOT NULL,"
    " created INTEGER NOT NULL,"
    " updated INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX registry_site ON registry(site_id);"
    "CREATE TABLE replacements("
    " meter TEXT NOT NULL,"
    " ts INTEGER NOT NULL," /* a new counter from ts on */
    " PRIMARY KEY(meter, ts)) WITHOUT ROWID;" ROLLUP_TABLE("rollup_5m") ROLLUP_TABLE("rollup_1h")
        ROLLUP_TABLE("rollup_1d") "CREATE TABLE counter_gaps("
                                  " meter_id INTEGER NOT NULL,"
                                  " qty INTEGER NOT NULL,"
                                  " to_ts INTEGER NOT NULL,"
                                  " from_ts INTEGER NOT NULL,"
                                  " delta REAL NOT NULL,"
                                  " PRIMARY KEY(meter_id, qty, to_ts)) WITHOUT ROWID;";

/* Writer statements. */
enum {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_SAVEPOINT,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_GATEWAY,
    W_GATEWAY_ID,
    W_STREAM,
    W_METER,
    W_READING,
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
    /* one batch inside a group (store_group_begin) */
    [W_SAVEPOINT] = "SAVEPOINT batch",
    [W_RELEASE] = "RELEASE batch",
    [W_ROLLBACK_TO] = "ROLLBACK TO batch",
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
                  " unsynced, error, received, vals)"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                  " ON CONFLICT(meter_id, ts) DO NOTHING",
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
    [R_READINGS] = "SELECT r.ts, r.seq, r.ok, r.unsynced, r.error, s.name, g.name, r.vals"
                   " FROM readings r JOIN streams s ON s.id = r.stream_id"
                   " JOIN gateways g ON g.id = r.gateway_id"
                   " WHERE r.meter_id = ?1 AND r.ts >= ?2 AND r.ts < ?3"
                   " ORDER BY r.ts DESC LIMIT ?4",
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
    struct conn a; /* users, sessions, API tokens: see the block at the end of this file */
    struct store_usage *usage; /* registry, rollups, usage: see the block at the end */
    struct store_admin *adm;   /* maintenance, pending batches, backups: the block at the end */
    int qty_db[QTY_MAX];       /* quantities.h index -> quantities.id */
    int qty_idx[QTY_DB_MAX];   /* quantities.id -> quantities.h index, or -1 */
    /* writer's scratch, used under w.mu only; kept to reuse the memory */
    struct seqset old, cur; /* a stream's counted set before and after a write */
    struct gaps old_gaps, new_gaps;
    struct seq_range *missing; /* room for cur's missing ranges */
    size_t missing_cap;
    bool group_broken;   /* the group's transaction is gone (w.mu): its commit must fail */
    struct fresh *fresh; /* readings whose rollups are due (w.mu) */
    int nfresh, fresh_cap;
};

/* The store whose group (store_group_begin) this thread holds, with w.mu, or NULL. */
static _Thread_local store_t *tl_group;

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

/* ---- readings.vals: a reading's values in one blob (see the layout above) ---- */

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_value(unsigned char *p, int qid, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    p[0] = (unsigned char)qid;
    put_le64(p + 1, bits);
}

static double get_value(const unsigned char *p)
{
    uint64_t bits = get_le64(p);
    double v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

/* Encodes r's values into buf (room for QTY_MAX values), ascending by quantity id; returns
 * the length (0: no values). qty_db maps quantities.h indexes to ids. */
static size_t vals_encode(const int *qty_db, const struct reading *r, unsigned char *buf)
{
    int ids[QTY_MAX], idx[QTY_MAX], n = 0;

    for (int q = 0; q < qty_count(); q++) {
        int j;
        if (!(r->present & (1u << q)))
            continue;
        /* insertion by id: a handful of values, already nearly in order */
        for (j = n; j > 0 && ids[j - 1] > qty_db[q]; j--) {
            ids[j] = ids[j - 1];
            idx[j] = idx[j - 1];
        }
        ids[j] = qty_db[q];
        idx[j] = q;
        n++;
    }
    for (int i = 0; i < n; i++)
        put_value(buf + (size_t)i * VAL_BYTES, ids[i], r->values[idx[i]]);
    return (size_t)n * VAL_BYTES;
}

/* Decodes a vals blob into r's values and present mask; ids this build does not know
 * (qty_idx -1) are skipped. */
static void vals_decode(const int *qty_idx, const unsigned char *b, size_t len, struct reading *r)
{
    for (size_t o = 0; o + VAL_BYTES <= len; o += VAL_BYTES) {
        int q = qty_idx[b[o]];
        if (q < 0)
            continue;
        r->values[q] = get_value(b + o + 1);
        r->present |= 1u << q;
    }
}

/* SQL qv(vals, qid): the value of quantity id qid in a vals blob, NULL when absent. */
static void sql_qv(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const unsigned char *b;
    int len;
    sqlite3_int64 qid;

    (void)argc;
    if (sqlite3_value_type(argv[0]) != SQLITE_BLOB)
        return; /* NULL */
    b = sqlite3_value_blob(argv[0]);
    len = sqlite3_value_bytes(argv[0]);
    qid = sqlite3_value_int64(argv[1]);
    for (int o = 0; o + VAL_BYTES <= len; o += VAL_BYTES) {
        if (b[o] == qid) {
            sqlite3_result_double(ctx, get_value(b + o + 1));
            return;
        }
        if (b[o] > qid)
            return; /* ascending by id */
    }
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
    if (sqlite3_create_function(c->db, "qv", 2,
                                SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL, sql_qv,
                                NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot register qv(): %s", sqlite3_errmsg(c->db));
        return -EIO;
    }
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

/* Schema version 1 to 2, inside init_schema's transaction: each reading's values move from
 * its rows of samples into readings.vals, and samples is dropped. The pages it held stay in
 * the file as free pages (reused by later writes; VACUUM, with meter-cloud stopped, gives
 * them back). */
static int migrate_v1(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_stmt *sel = NULL, *upd = NULL;
    unsigned char buf[QTY_DB_MAX * VAL_BYTES];
    int64_t meter = 0, ts = 0, readings = 0;
    size_t len = 0;
    int rc;

    log_info("store: migrating schema version 1 to %d (one row per reading)", SCHEMA_VERSION);
    if ((rc = exec(db, "ALTER TABLE readings ADD COLUMN vals BLOB", err, errlen)) < 0)
        return rc;
    if (sqlite3_prepare_v2(db,
                           "SELECT meter_id, ts, qty, value FROM samples"
                           " ORDER BY meter_id, ts, qty",
                           -1, &sel, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "UPDATE readings SET vals = ?3 WHERE meter_id = ?1 AND ts = ?2", -1,
                           &upd, NULL) != SQLITE_OK)
        goto dbfail;
    for (;;) {
        rc = sqlite3_step(sel);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            goto dbfail;
        if (len > 0 && (rc == SQLITE_DONE || sqlite3_column_int64(sel, 0) != meter ||
                        sqlite3_column_int64(sel, 1) != ts)) {
            sqlite3_bind_int64(upd, 1, meter);
            sqlite3_bind_int64(upd, 2, ts);
            sqlite3_bind_blob(upd, 3, buf, (int)len, SQLITE_STATIC);
            if (sqlite3_step(upd) != SQLITE_DONE)
                goto dbfail;
            sqlite3_reset(upd);
            len = 0;
            if (++readings % 1000000 == 0)
                log_info("store: migrated %lld readings", (long long)readings);
        }
        if (rc == SQLITE_DONE)
            break;
        int64_t qid = sqlite3_column_int64(sel, 2);
        if (qid <= 0 || qid >= QTY_DB_MAX) {
            snprintf(err, errlen, "migrating: quantity id %lld out of range", (long long)qid);
            rc = -EINVAL;
            goto fail;
        }
        meter = sqlite3_column_int64(sel, 0);
        ts = sqlite3_column_int64(sel, 1);
        if (len + VAL_BYTES <= sizeof(buf)) {
            put_value(buf + len, (int)qid, sqlite3_column_double(sel, 3));
            len += VAL_BYTES;
        }
    }
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    log_info("store: migrated the values of %lld readings", (long long)readings);
    return exec(db, "DROP TABLE samples", err, errlen);
dbfail:
    snprintf(err, errlen, "migrating schema version 1: %s", sqlite3_errmsg(db));
    rc = -EIO;
fail:
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    return rc;
}

/* Creates the schema if the file is new, checks its version (migrating version 1), maps the
 * quantities. */
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
    if ((rc = exec(db,
                   "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                   " PRAGMA cache_size=-" STR(WRITER_CACHE_KIB) "; BEGIN IMMEDIATE",
                   err, errlen)) < 0)
        return rc;
    if ((rc = pragma(db, "PRAGMA user_version", val, sizeof(val), err, errlen)) < 0)
        goto fail;
    ver = strtol(val, NULL, 10);
    if (ver == 0) {
        char sql[64];
        if ((rc = exec(db, schema_main, err, errlen)) < 0)
            goto fail;
        if ((rc = exec(db, schema_usage, err, errlen)) < 0)
            goto fail;
        snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", SCHEMA_VERSION);
        if ((rc = exec(db, sql, err, errlen)) < 0)
            goto fail;
    } else if (ver == 1) {
        char sql[64];
        if ((rc = migrate_v1(db, err, errlen)) < 0)
            goto fail;
        snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", SCHEMA_VERSION);
        if ((rc = exec(db, sql, err, errlen)) < 0)
            goto fail;
    } else if (ver != SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "schema version %ld, this program knows %d (and migrates 1): use the "
                 "meter-cloud that wrote this store, or restore a backup it can read",
                 ver, SCHEMA_VERSION);
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

static int auth_open_conn(store_t *st, const char *path, char *err, size_t errlen);
/* registry, rollups and usage: the block at the end of this file */
static int usage_open(store_t *st, const char *path, char *err, size_t errlen);
static int admin_open(store_t *st, const char *path, char *err, size_t errlen);
static void admin_close(store_t *st);
static void usage_close(store_t *st);

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
    if ((rc = auth_open_conn(st, path, err, errlen)) < 0)
        goto fail;
    if ((rc = usage_open(st, path, err, errlen)) < 0)
        goto fail;
    if ((rc = admin_open(st, path, err, errlen)) < 0)
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
    admin_close(st);
    usage_close(st);
    close_conn(&st->a);
    close_conn(&st->r);
    close_conn(&st->w);
    seqset_free(&st->old);
    seqset_free(&st->cur);
    free(st->old_gaps.g);
    free(st->new_gaps.g);
    free(st->missing);
    free(st->fresh);
    free(st);
}

/* For sorting a batch's readings by meter, so each meter is upserted once. */
struct by_meter {
    const struct reading *r;
    int64_t meter_id;
    bool fresh; /* stored new (not a copy of a stored reading) */
};

/* registry, rollups and usage: the block at the end of this file */
static void usage_bump(store_t *st);
/* A new reading whose rollups are due: kept per batch, or for a whole group until its
 * commit, so that a group recomputes each 5-minute bucket, hour and day once. */
struct fresh {
    int64_t meter_id, ts;
    uint32_t present;
};
static int usage_after(store_t *st, struct fresh *f, int n);
static int64_t usage_horizon(store_t *st, int64_t recv_ms);

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
    unsigned char vals[QTY_MAX * VAL_BYTES];
    size_t len;
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
    if ((len = vals_encode(st->qty_db, r, vals)) > 0)
        sqlite3_bind_blob(s, 10, vals, (int)len, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 10);
    if ((rc = step_done(db, s, "insert reading")) < 0)
        return rc;
    *dup = sqlite3_changes(db) == 0; /* a copy: the first copy's values stay */
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
                        bool readings, bool grouped, int64_t *gw_id, int64_t *sid, bool *begun)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt;
    int rc;

    if ((rc = step_done(db, w[grouped ? W_SAVEPOINT : W_BEGIN], "begin")) < 0)
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
                         uint64_t duplicates, uint64_t lost, bool grouped, bool *begun)
{
    sqlite3 *db = st->w.db;
    int rc;

    if ((rc = write_set(st, sid)) < 0 || (rc = write_gaps(st, sid, recv_ms)) < 0)
        return rc;
    if ((rc = run_ints(db, st->w.stmt[W_STREAM_COUNT],
                       (int64_t[]){sid, (int64_t)received, (int64_t)duplicates, (int64_t)lost}, 4,
                       "count stream")) < 0)
        return rc;
    if ((rc = step_done(db, st->w.stmt[grouped ? W_RELEASE : W_COMMIT], "commit")) < 0)
        return rc;
    *begun = false;
    if (!grouped)
        usage_bump(st); /* committed: caches may read it now */
    return 0;
}

/* Takes the writer for one seq-changing write: w.mu, or nothing when this thread holds a
 * group of st (*grouped; -EIO when that group's transaction is already gone). */
static int w_enter(store_t *st, bool *grouped)
{
    *grouped = tl_group == st;
    if (*grouped)
        return st->group_broken ? -EIO : 0;
    pthread_mutex_lock(&st->w.mu);
    return 0;
}

/* Undoes a failed seq-changing write (begun) and lets the writer go. */
static void w_leave(store_t *st, bool grouped, bool begun)
{
    sqlite3 *db = st->w.db;

    if (begun && !grouped)
        step_done(db, st->w.stmt[W_ROLLBACK], "rollback");
    if (begun && grouped) {
        step_done(db, st->w.stmt[W_ROLLBACK_TO], "rollback");
        step_done(db, st->w.stmt[W_RELEASE], "release");
        /* an I/O error or a full disk may have rolled back the whole transaction */
        if (sqlite3_get_autocommit(db))
            st->group_broken = true;
    }
    if (!grouped)
        pthread_mutex_unlock(&st->w.mu);
}

int store_group_begin(store_t *st)
{
    if (tl_group)
        return -EBUSY;
    pthread_mutex_lock(&st->w.mu);
    if (step_done(st->w.db, st->w.stmt[W_BEGIN], "begin group") < 0) {
        pthread_mutex_unlock(&st->w.mu);
        return -EIO;
    }
    st->group_broken = false;
    st->nfresh = 0;
    tl_group = st;
    return 0;
}

int store_group_commit(store_t *st)
{
    sqlite3 *db = st->w.db;
    int rc = 0;

    if (tl_group != st)
        return -EINVAL;
    if (st->group_broken)
        rc = -EIO;
    else if ((rc = usage_after(st, st->fresh, st->nfresh)) == 0 &&
             (rc = step_done(db, st->w.stmt[W_COMMIT], "commit group")) == 0)
        usage_bump(st);
    st->nfresh = 0;
    if (!sqlite3_get_autocommit(db))
        step_done(db, st->w.stmt[W_ROLLBACK], "rollback group");
    tl_group = NULL;
    pthread_mutex_unlock(&st->w.mu);
    return rc;
}

void store_group_rollback(store_t *st)
{
    if (tl_group != st)
        return;
    if (!sqlite3_get_autocommit(st->w.db))
        step_done(st->w.db, st->w.stmt[W_ROLLBACK], "rollback group");
    tl_group = NULL;
    pthread_mutex_unlock(&st->w.mu);
}

int store_put_batch(store_t *st, const char *gw, const char *stream, const struct reading *r, int n,
                    int64_t recv_ms, struct store_put_result *res)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt;
    struct by_meter *idx = NULL;
    int64_t gw_id, stream_id;
    bool begun = false, grouped;
    int rc = 0, nfresh0;

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

    if ((rc = w_enter(st, &grouped)) < 0) {
        free(idx);
        return rc;
    }
    nfresh0 = grouped ? st->nfresh : 0;
    if ((rc = begin_stream(st, gw, stream, recv_ms, true, grouped, &gw_id, &stream_id, &begun)) < 0)
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
            idx[i].fresh = !dup;
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
    if (!grouped)
        st->nfresh = 0;
    int64_t horizon = usage_horizon(st, recv_ms);
    for (int i = 0, keep = st->nfresh; i < n; i++) {
        if (!idx[i].fresh || !idx[i].r->present || idx[i].r->ts_ms < horizon)
            continue;
        if (st->nfresh == st->fresh_cap) {
            int cap = st->fresh_cap ? st->fresh_cap * 2 : 1024;
            struct fresh *p = realloc(st->fresh, (size_t)cap * sizeof(*p));
            if (!p) {
                st->nfresh = keep;
                rc = -ENOMEM;
                goto end;
            }
            st->fresh = p;
            st->fresh_cap = cap;
        }
        st->fresh[st->nfresh++] =
            (struct fresh){idx[i].meter_id, idx[i].r->ts_ms, idx[i].r->present};
    }
    /* in a group the rollups are brought up to date once, before its commit */
    if (!grouped && (rc = usage_after(st, st->fresh, st->nfresh)) < 0)
        goto end;
    if ((rc = commit_stream(st, stream_id, recv_ms, (uint64_t)res->received,
                            (uint64_t)res->duplicates, 0, grouped, &begun)) < 0)
        goto end;
    ack_from_set(stream, &st->cur, &res->ack);
end:
    if (begun) {
        res->inserted = res->duplicates = res->received = 0;
        if (rc == -E2BIG)
            ack_from_set(stream, &st->old, &res->ack);
        st->nfresh = nfresh0; /* none of this batch is stored */
    }
    w_leave(st, grouped, begun);
    free(idx);
    return rc;
}

int store_put_loss(store_t *st, const char *gw, const char *stream, const struct store_loss *l,
                   int n, int64_t recv_ms, struct store_loss_result *res)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt;
    int64_t gw_id, sid;
    bool begun = false, grouped;
    int rc;

    memset(res, 0, sizeof(*res));
    if (n < 1 || !l || !wire_id_valid(gw) || !wire_stream_valid(stream))
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (l[i].first < 1 || l[i].first > l[i].last || l[i].last > STORE_SEQ_MAX ||
            l[i].count > l[i].last - l[i].first + 1 || !l[i].reason[0])
            return -EINVAL;
    snprintf(res->ack.stream, sizeof(res->ack.stream), "%s", stream);

    if ((rc = w_enter(st, &grouped)) < 0)
        return rc;
    if ((rc = begin_stream(st, gw, stream, recv_ms, false, grouped, &gw_id, &sid, &begun)) < 0)
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
    if ((rc = commit_stream(st, sid, recv_ms, 0, 0, res->lost, grouped, &begun)) < 0)
        goto end;
    ack_from_set(stream, &st->cur, &res->ack);
end:
    if (begun) {
        res->lost = 0;
        res->recorded = 0;
        if (rc == -E2BIG)
            ack_from_set(stream, &st->old, &res->ack);
    }
    w_leave(st, grouped, begun);
    return rc;
}

int store_put_status(store_t *st, const char *gw, const char *state, int64_t ts_ms, bool *changed)
{
    sqlite3_stmt *s = st->w.stmt[W_STATUS];
    int rc;

    if (tl_group == st)
        return -EDEADLK; /* only store_put_batch and store_put_loss join a group */
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
    if (tl_group == st)
        return -EDEADLK; /* only store_put_batch and store_put_loss join a group */
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
    if (tl_group == st)
        return -EDEADLK; /* only store_put_batch and store_put_loss join a group */
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
    if (tl_group == st)
        return -EDEADLK; /* only store_put_batch and store_put_loss join a group */
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
        if (sqlite3_column_type(s, 7) == SQLITE_BLOB)
            vals_decode(st->qty_idx, sqlite3_column_blob(s, 7), (size_t)sqlite3_column_bytes(s, 7),
                        &e->r);
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(db, "read readings");
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

/* ---- users, sessions and API tokens ---------------------------------------------------
 * Their own connection ("a", under its own mutex), so that a login never waits behind the
 * ingest thread's batch and the reader's queries never wait behind a login. Their tables
 * are created with IF NOT EXISTS on every open, outside the readings' schema version:
 * they neither reference nor change the readings tables, and a store from before they
 * existed simply gains them. Changing them later needs a migration of their own. The file
 * holds password hashes and the token secret, so store_open() makes it (and its -wal and
 * -shm files) readable by the owner only. */

static const char auth_schema[] =
    "CREATE TABLE IF NOT EXISTS auth_meta("
    " key TEXT PRIMARY KEY,"
    " value BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " role TEXT NOT NULL,"
    " password TEXT NOT NULL," /* pbkdf2-sha256$iter$salt$hash */
    " created INTEGER NOT NULL,"
    " updated INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sessions("
    " id TEXT PRIMARY KEY,"
    " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " created INTEGER NOT NULL,"
    " expires INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);"
    "CREATE TABLE IF NOT EXISTS api_tokens("
    " id INTEGER PRIMARY KEY,"
    " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " name TEXT NOT NULL,"
    " role TEXT NOT NULL,"
    " hash TEXT NOT NULL UNIQUE," /* SHA-256 of the token, hex; the token itself is not kept */
    " created INTEGER NOT NULL,"
    " last_used INTEGER,"
    " UNIQUE(user_id, name));";

enum {
    A_BEGIN,
    A_COMMIT,
    A_ROLLBACK,
    A_SECRET_INS,
    A_SECRET_GET,
    A_USER_COUNT,
    A_ADMIN_COUNT,
    A_USER_BY_NAME,
    A_USER_BY_ID,
    A_USERS,
    A_USER_INS,
    A_USER_UPD,
    A_USER_DEL,
    A_SESS_INS,
    A_SESS_PURGE,
    A_SESS_GET,
    A_SESS_DEL,
    A_SESS_DEL_USER,
    A_TOK_INS,
    A_TOK_FIND,
    A_TOK_TOUCH,
    A_TOKS,
    A_TOK_DEL,
    A_TOK_DEL_USER,
    A_GW_EXISTS,
    A_COUNT
};

#define USER_COLUMNS "SELECT id, name, role, password, created, updated FROM users"
#define TOKEN_COLUMNS                                                                              \
    "SELECT t.id, t.user_id, u.name, u.role, t.name, t.role, t.created, t.last_used"               \
    " FROM api_tokens t JOIN users u ON u.id = t.user_id"

static const char *const a_sql[A_COUNT] = {
    [A_BEGIN] = "BEGIN IMMEDIATE",
    [A_COMMIT] = "COMMIT",
    [A_ROLLBACK] = "ROLLBACK",
    [A_SECRET_INS] = "INSERT INTO auth_meta(key, value) VALUES('token_secret', ?1)"
                     " ON CONFLICT(key) DO NOTHING",
    [A_SECRET_GET] = "SELECT value FROM auth_meta WHERE key = 'token_secret'",
    [A_USER_COUNT] = "SELECT count(*) FROM users",
    [A_ADMIN_COUNT] = "SELECT count(*) FROM users WHERE role = 'admin'",
    [A_USER_BY_NAME] = USER_COLUMNS " WHERE name = ?1",
    [A_USER_BY_ID] = USER_COLUMNS " WHERE id = ?1",
    [A_USERS] = USER_COLUMNS " ORDER BY name",
    [A_USER_INS] = "INSERT INTO users(name, role, password, created, updated)"
                   " VALUES(?1, ?2, ?3, ?4, ?4) ON CONFLICT(name) DO NOTHING",
    [A_USER_UPD] = "UPDATE users SET role = coalesce(?2, role), password = coalesce(?3, password),"
                   " updated = ?4 WHERE id = ?1",
    [A_USER_DEL] = "DELETE FROM users WHERE id = ?1",
    [A_SESS_INS] = "INSERT INTO sessions(id, user_id, created, expires) VALUES(?1, ?2, ?3, ?4)",
    [A_SESS_PURGE] = "DELETE FROM sessions WHERE expires <= ?1",
    [A_SESS_GET] = "SELECT user_id, expires FROM sessions WHERE id = ?1",
    [A_SESS_DEL] = "DELETE FROM sessions WHERE id = ?1",
    [A_SESS_DEL_USER] = "DELETE FROM sessions WHERE user_id = ?1",
    [A_TOK_INS] = "INSERT INTO api_tokens(user_id, name, role, hash, created)"
                  " VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING RETURNING id",
    [A_TOK_FIND] = TOKEN_COLUMNS " WHERE t.hash = ?1",
    [A_TOK_TOUCH] = "UPDATE api_tokens SET last_used = ?2"
                    " WHERE id = ?1 AND coalesce(last_used, 0) <= ?2 - 60000",
    [A_TOKS] = TOKEN_COLUMNS " WHERE ?1 < 0 OR t.user_id = ?1 ORDER BY u.name, t.id",
    [A_TOK_DEL] = "DELETE FROM api_tokens WHERE id = ?1 AND (?2 < 0 OR user_id = ?2)",
    [A_TOK_DEL_USER] = "DELETE FROM api_tokens WHERE user_id = ?1",
    [A_GW_EXISTS] = "SELECT 1 FROM gateways WHERE name = ?1",
};

/* Makes the store's files private to their owner (they hold the token secret). */
static void auth_private_files(const char *path)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    char p[4096];

    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++)
        if (snprintf(p, sizeof(p), "%s%s", path, suffix[i]) < (int)sizeof(p))
            chmod(p, S_IRUSR | S_IWUSR);
}

/* Opens the "a" connection, creating the auth tables if needed. */
static int auth_open_conn(store_t *st, const char *path, char *err, size_t errlen)
{
    int rc;

    if ((rc = open_conn(&st->a, path, A_COUNT, err, errlen)) < 0)
        return rc;
    if ((rc = exec(st->a.db, "PRAGMA foreign_keys=ON; BEGIN IMMEDIATE", err, errlen)) < 0)
        return rc;
    if ((rc = exec(st->a.db, auth_schema, err, errlen)) < 0) {
        sqlite3_exec(st->a.db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if ((rc = exec(st->a.db, "COMMIT", err, errlen)) < 0)
        return rc;
    auth_private_files(path);
    return prepare_all(&st->a, a_sql, err, errlen);
}

/* Runs statement s of "a" that returns one integer; -ENOENT when it returns no row. */
static int a_int(store_t *st, sqlite3_stmt *s, const char *what, int64_t *v)
{
    int rc = sqlite3_step(s);

    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(s, 0);
    done(s);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return -ENOENT;
    dberr(st->a.db, what);
    return -EIO;
}

int store_auth_secret(store_t *st, const uint8_t *fresh, uint8_t *out)
{
    sqlite3_stmt **a = st->a.stmt;
    int rc, step;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_blob(a[A_SECRET_INS], 1, fresh, STORE_SECRET_LEN, SQLITE_STATIC);
    if ((rc = step_done(st->a.db, a[A_SECRET_INS], "token secret")) < 0)
        goto end;
    step = sqlite3_step(a[A_SECRET_GET]);
    if (step == SQLITE_ROW && sqlite3_column_bytes(a[A_SECRET_GET], 0) == STORE_SECRET_LEN)
        memcpy(out, sqlite3_column_blob(a[A_SECRET_GET], 0), STORE_SECRET_LEN);
    else if (step == SQLITE_ROW || step == SQLITE_DONE)
        rc = -EINVAL; /* a secret of another size: not ours to replace */
    else
        rc = -EIO;
    if (rc == -EIO)
        dberr(st->a.db, "token secret");
    done(a[A_SECRET_GET]);
end:
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

int store_user_count(store_t *st, int *n)
{
    int64_t v = 0;
    int rc;

    pthread_mutex_lock(&st->a.mu);
    rc = a_int(st, st->a.stmt[A_USER_COUNT], "count users", &v);
    pthread_mutex_unlock(&st->a.mu);
    *n = (int)v;
    return rc;
}

static void user_row(sqlite3_stmt *s, struct store_user *u)
{
    u->id = sqlite3_column_int64(s, 0);
    copy_text(u->name, sizeof(u->name), sqlite3_column_text(s, 1));
    copy_text(u->role, sizeof(u->role), sqlite3_column_text(s, 2));
    copy_text(u->pwhash, sizeof(u->pwhash), sqlite3_column_text(s, 3));
    u->created_ms = sqlite3_column_int64(s, 4);
    u->updated_ms = sqlite3_column_int64(s, 5);
}

/* Runs a user query already bound; fills *u. Caller holds a.mu. */
static int user_one(store_t *st, sqlite3_stmt *s, struct store_user *u)
{
    int rc = sqlite3_step(s);

    if (rc == SQLITE_ROW)
        user_row(s, u);
    done(s);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return -ENOENT;
    dberr(st->a.db, "read user");
    return -EIO;
}

int store_user_get(store_t *st, const char *name, struct store_user *out)
{
    int rc;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_text(st->a.stmt[A_USER_BY_NAME], 1, name, -1, SQLITE_STATIC);
    rc = user_one(st, st->a.stmt[A_USER_BY_NAME], out);
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

int store_user_get_id(store_t *st, int64_t id, struct store_user *out)
{
    int rc;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_int64(st->a.stmt[A_USER_BY_ID], 1, id);
    rc = user_one(st, st->a.stmt[A_USER_BY_ID], out);
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

int store_user_list(store_t *st, struct store_user **out, int *n)
{
    sqlite3_stmt *s = st->a.stmt[A_USERS];
    struct store_user *v = NULL, *nv;
    int cnt = 0, cap = 0, rc;

    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&st->a.mu);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            if (!(nv = realloc(v, (size_t)cap * sizeof(*v)))) {
                rc = -ENOMEM;
                goto end;
            }
            v = nv;
        }
        user_row(s, &v[cnt++]);
    }
    if (rc != SQLITE_DONE) {
        dberr(st->a.db, "list users");
        rc = -EIO;
        goto end;
    }
    rc = 0;
end:
    done(s);
    pthread_mutex_unlock(&st->a.mu);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* BEGIN IMMEDIATE on "a"; caller holds a.mu. */
static int a_begin(store_t *st)
{
    return step_done(st->a.db, st->a.stmt[A_BEGIN], "begin");
}

/* COMMIT when rc is 0, else ROLLBACK; returns rc or the commit's error. */
static int a_end(store_t *st, int rc)
{
    if (rc == 0)
        return step_done(st->a.db, st->a.stmt[A_COMMIT], "commit");
    step_done(st->a.db, st->a.stmt[A_ROLLBACK], "rollback");
    return rc;
}

int store_user_add(store_t *st, const char *name, const char *role, const char *pwhash,
                   int64_t now_ms, bool only_if_none)
{
    sqlite3_stmt **a = st->a.stmt;
    int64_t users = 0;
    int rc;

    pthread_mutex_lock(&st->a.mu);
    if ((rc = a_begin(st)) < 0)
        goto end;
    if (only_if_none && (rc = a_int(st, a[A_USER_COUNT], "count users", &users)) < 0)
        goto out;
    if (users > 0) {
        rc = -EEXIST;
        goto out;
    }
    sqlite3_bind_text(a[A_USER_INS], 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(a[A_USER_INS], 2, role, -1, SQLITE_STATIC);
    sqlite3_bind_text(a[A_USER_INS], 3, pwhash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(a[A_USER_INS], 4, now_ms);
    if ((rc = step_done(st->a.db, a[A_USER_INS], "add user")) == 0 &&
        sqlite3_changes(st->a.db) == 0)
        rc = -EEXIST;
out:
    rc = a_end(st, rc);
end:
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

/* Whether taking the admin role from user u would leave no admin. Caller holds a.mu in a
 * transaction. Returns 0 (it would not), -EBUSY, or -EIO. */
static int keeps_an_admin(store_t *st, const struct store_user *u)
{
    int64_t admins = 0;
    int rc;

    if (strcmp(u->role, "admin") != 0)
        return 0;
    if ((rc = a_int(st, st->a.stmt[A_ADMIN_COUNT], "count admins", &admins)) < 0)
        return rc;
    return admins > 1 ? 0 : -EBUSY;
}

int store_user_update(store_t *st, const char *name, const char *role, const char *pwhash,
                      int64_t now_ms)
{
    sqlite3_stmt **a = st->a.stmt;
    struct store_user u;
    int rc;

    pthread_mutex_lock(&st->a.mu);
    if ((rc = a_begin(st)) < 0)
        goto end;
    sqlite3_bind_text(a[A_USER_BY_NAME], 1, name, -1, SQLITE_STATIC);
    if ((rc = user_one(st, a[A_USER_BY_NAME], &u)) < 0)
        goto out;
    if (role && strcmp(role, "admin") != 0 && (rc = keeps_an_admin(st, &u)) < 0)
        goto out;
    sqlite3_bind_int64(a[A_USER_UPD], 1, u.id);
    if (role)
        sqlite3_bind_text(a[A_USER_UPD], 2, role, -1, SQLITE_STATIC);
    if (pwhash)
        sqlite3_bind_text(a[A_USER_UPD], 3, pwhash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(a[A_USER_UPD], 4, now_ms);
    if ((rc = step_done(st->a.db, a[A_USER_UPD], "update user")) < 0)
        goto out;
    if (pwhash) {
        sqlite3_bind_int64(a[A_SESS_DEL_USER], 1, u.id);
        rc = step_done(st->a.db, a[A_SESS_DEL_USER], "end sessions");
    }
out:
    rc = a_end(st, rc);
end:
    pthread_mutex_unlock(&st->a.mu);
    explicit_bzero(u.pwhash, sizeof(u.pwhash));
    return rc;
}

int store_user_delete(store_t *st, const char *name)
{
    sqlite3_stmt **a = st->a.stmt;
    struct store_user u;
    int rc;

    pthread_mutex_lock(&st->a.mu);
    if ((rc = a_begin(st)) < 0)
        goto end;
    sqlite3_bind_text(a[A_USER_BY_NAME], 1, name, -1, SQLITE_STATIC);
    if ((rc = user_one(st, a[A_USER_BY_NAME], &u)) < 0)
        goto out;
    if ((rc = keeps_an_admin(st, &u)) < 0)
        goto out;
    sqlite3_bind_int64(a[A_SESS_DEL_USER], 1, u.id);
    if ((rc = step_done(st->a.db, a[A_SESS_DEL_USER], "end sessions")) < 0)
        goto out;
    sqlite3_bind_int64(a[A_TOK_DEL_USER], 1, u.id);
    if ((rc = step_done(st->a.db, a[A_TOK_DEL_USER], "delete tokens")) < 0)
        goto out;
    sqlite3_bind_int64(a[A_USER_DEL], 1, u.id);
    rc = step_done(st->a.db, a[A_USER_DEL], "delete user");
out:
    rc = a_end(st, rc);
end:
    pthread_mutex_unlock(&st->a.mu);
    explicit_bzero(u.pwhash, sizeof(u.pwhash));
    return rc;
}

int store_session_add(store_t *st, const char *sid, int64_t user_id, int64_t created_ms,
                      int64_t expires_ms)
{
    sqlite3_stmt **a = st->a.stmt;
    int rc;

    pthread_mutex_lock(&st->a.mu);
    if ((rc = a_begin(st)) < 0)
        goto end;
    sqlite3_bind_int64(a[A_SESS_PURGE], 1, created_ms);
    if ((rc = step_done(st->a.db, a[A_SESS_PURGE], "purge sessions")) < 0)
        goto out;
    sqlite3_bind_text(a[A_SESS_INS], 1, sid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(a[A_SESS_INS], 2, user_id);
    sqlite3_bind_int64(a[A_SESS_INS], 3, created_ms);
    sqlite3_bind_int64(a[A_SESS_INS], 4, expires_ms);
    rc = step_done(st->a.db, a[A_SESS_INS], "add session");
out:
    rc = a_end(st, rc);
end:
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

int store_session_get(store_t *st, const char *sid, int64_t *user_id, int64_t *expires_ms)
{
    sqlite3_stmt *s = st->a.stmt[A_SESS_GET];
    int rc;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_text(s, 1, sid, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *user_id = sqlite3_column_int64(s, 0);
        *expires_ms = sqlite3_column_int64(s, 1);
    }
    done(s);
    if (rc == SQLITE_ROW)
        rc = 0;
    else if (rc == SQLITE_DONE)
        rc = -ENOENT;
    else {
        dberr(st->a.db, "read session");
        rc = -EIO;
    }
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

int store_session_delete(store_t *st, const char *sid)
{
    int rc;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_text(st->a.stmt[A_SESS_DEL], 1, sid, -1, SQLITE_STATIC);
    rc = step_done(st->a.db, st->a.stmt[A_SESS_DEL], "end session");
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

int store_token_add(store_t *st, int64_t user_id, const char *name, const char *role,
                    const char *hash, int64_t now_ms, int64_t *id)
{
    sqlite3_stmt *s = st->a.stmt[A_TOK_INS];
    int rc;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_int64(s, 1, user_id);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, role, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, now_ms);
    rc = a_int(st, s, "add token", id);
    if (rc == -ENOENT)
        rc = -EEXIST; /* DO NOTHING returned no row */
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

static void token_row(sqlite3_stmt *s, struct store_api_token *t)
{
    t->id = sqlite3_column_int64(s, 0);
    t->user_id = sqlite3_column_int64(s, 1);
    copy_text(t->user, sizeof(t->user), sqlite3_column_text(s, 2));
    copy_text(t->user_role, sizeof(t->user_role), sqlite3_column_text(s, 3));
    copy_text(t->name, sizeof(t->name), sqlite3_column_text(s, 4));
    copy_text(t->role, sizeof(t->role), sqlite3_column_text(s, 5));
    t->created_ms = sqlite3_column_int64(s, 6);
    t->has_last_used = sqlite3_column_type(s, 7) != SQLITE_NULL;
    t->last_used_ms = sqlite3_column_int64(s, 7);
}

int store_token_find(store_t *st, const char *hash, struct store_api_token *out)
{
    sqlite3_stmt *s = st->a.stmt[A_TOK_FIND];
    int rc;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_text(s, 1, hash, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        token_row(s, out);
    done(s);
    if (rc == SQLITE_ROW)
        rc = 0;
    else if (rc == SQLITE_DONE)
        rc = -ENOENT;
    else {
        dberr(st->a.db, "find token");
        rc = -EIO;
    }
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

int store_token_touch(store_t *st, int64_t id, int64_t now_ms)
{
    int rc;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_int64(st->a.stmt[A_TOK_TOUCH], 1, id);
    sqlite3_bind_int64(st->a.stmt[A_TOK_TOUCH], 2, now_ms);
    rc = step_done(st->a.db, st->a.stmt[A_TOK_TOUCH], "touch token");
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

int store_token_list(store_t *st, int64_t user_id, struct store_api_token **out, int *n)
{
    sqlite3_stmt *s = st->a.stmt[A_TOKS];
    struct store_api_token *v = NULL, *nv;
    int cnt = 0, cap = 0, rc;

    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_int64(s, 1, user_id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            if (!(nv = realloc(v, (size_t)cap * sizeof(*v)))) {
                rc = -ENOMEM;
                goto end;
            }
            v = nv;
        }
        token_row(s, &v[cnt++]);
    }
    if (rc != SQLITE_DONE) {
        dberr(st->a.db, "list tokens");
        rc = -EIO;
        goto end;
    }
    rc = 0;
end:
    done(s);
    pthread_mutex_unlock(&st->a.mu);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

int store_token_delete(store_t *st, int64_t id, int64_t user_id)
{
    int rc;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_int64(st->a.stmt[A_TOK_DEL], 1, id);
    sqlite3_bind_int64(st->a.stmt[A_TOK_DEL], 2, user_id);
    rc = step_done(st->a.db, st->a.stmt[A_TOK_DEL], "delete token");
    if (rc == 0 && sqlite3_changes(st->a.db) == 0)
        rc = -ENOENT;
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

int store_gateway_exists(store_t *st, const char *gw)
{
    int64_t one;
    int rc;

    pthread_mutex_lock(&st->a.mu);
    sqlite3_bind_text(st->a.stmt[A_GW_EXISTS], 1, gw, -1, SQLITE_STATIC);
    rc = a_int(st, st->a.stmt[A_GW_EXISTS], "find gateway", &one);
    pthread_mutex_unlock(&st->a.mu);
    return rc;
}

/* ---- registry, rollups and usage ------------------------------------------------------
 * Tables (schema_usage above): sites, registry, replacements, rollup_5m, rollup_1h,
 * rollup_1d, counter_gaps. Everything here has its own prepared statements: writes on the
 * writer connection "w" (under w.mu, so that rollups change in the same transaction as the
 * readings they sum up), reads on a connection of its own, "u", so that a long usage query
 * never waits for the gateways page and the other way round.
 *
 * Rollup update (store_put_batch, before its COMMIT): for each meter and quantity of the
 * batch's new readings, their ts are split into clusters (a new cluster after an hour
 * without new readings); each cluster's 5-minute buckets, and the bucket of the first
 * stored reading after it (its step now starts at a new reading), are recomputed from the
 * raw readings (rollup_build), then the hours and local days that hold them are folded
 * again from the 5-minute rows (days from hourly rows where the site's offset is whole
 * hours). Late and out-of-order readings are thus exactly as if they had come in order.
 * Inside the batch's transaction rather than after it: the ack published after the commit
 * then also means "in the rollups", a crash can never leave rollups behind the readings,
 * and no second write transaction per batch is needed. A batch costs a few extra
 * statements per quantity; a late reading costs the same as a new one.
 */

#define USAGE_CLUSTER_MS 3600000
#define USAGE_BATCH_PTS 100000 /* raw readings read per recomputed range, at most */

#define ROLLUP_COLUMNS "ts, n, min, max, sum, first, first_ts, last, last_ts, delta, topup, resets"

enum {
    UW_METER_TZ,
    UW_REPLACED,
    UW_NEXT,
    UW_PREV,
    UW_RAW_ROWS,
    UW_DEL_5M,
    UW_INS_5M,
    UW_INS_1H,
    UW_INS_1D,
    UW_DEL_1H,
    UW_DEL_1D,
    UW_DEL_GAPS,
    UW_INS_GAP,
    UW_ROWS_5M,
    UW_ROWS_1H,
    UW_METER_QTYS,
    UW_SPAN_1H,
    UW_OLDEST_5M,
    UW_SITE_INS,
    UW_SITE_UPD,
    UW_SITE_DEL,
    UW_SITE_ID,
    UW_SITE_USED,
    UW_SITE_METERS,
    UW_REG_INS,
    UW_REG_UPD,
    UW_REG_DEL,
    UW_REG_TZ,
    UW_REPL_INS,
    UW_METER_ID,
    UW_METER_IDS,
    UW_QTY_IDS,
    UW_OLDEST_RAW,
    UW_RET_READINGS,
    UW_RET_5M,
    UW_RET_1H,
    UW_RET_1D,
    UW_RET_GAPS,
    UW_COUNT
};

static const char *const uw_sql[UW_COUNT] = {
    [UW_METER_TZ] = "SELECT s.tz FROM meters m JOIN registry g ON g.meter = m.name"
                    " JOIN sites s ON s.id = g.site_id WHERE m.id = ?1",
    [UW_REPLACED] = "SELECT r.ts FROM replacements r JOIN meters m ON m.name = r.meter"
                    " WHERE m.id = ?1 ORDER BY r.ts",
    /* one quantity's raw points: readings of the meter that hold it (qv, the vals blob) */
    [UW_NEXT] = "SELECT ts FROM readings WHERE meter_id = ?1 AND ts > ?3"
                " AND qv(vals, ?2) IS NOT NULL ORDER BY ts LIMIT 1",
    [UW_PREV] = "SELECT ts, qv(vals, ?2) v FROM readings WHERE meter_id = ?1 AND ts < ?3"
                " AND v IS NOT NULL ORDER BY ts DESC LIMIT 1",
    [UW_RAW_ROWS] = "SELECT ts, vals FROM readings WHERE meter_id = ?1 AND ts >= ?2 AND ts < ?3"
                    " AND vals IS NOT NULL ORDER BY ts LIMIT ?4",
    [UW_DEL_5M] = "DELETE FROM rollup_5m WHERE meter_id = ?1 AND qty = ?2 AND ts >= ?3 AND ts < ?4",
    [UW_INS_5M] = "INSERT OR REPLACE INTO rollup_5m(meter_id, qty, " ROLLUP_COLUMNS ")"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [UW_INS_1H] = "INSERT OR REPLACE INTO rollup_1h(meter_id, qty, " ROLLUP_COLUMNS ")"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [UW_INS_1D] = "INSERT OR REPLACE INTO rollup_1d(meter_id, qty, " ROLLUP_COLUMNS ")"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [UW_DEL_1H] = "DELETE FROM rollup_1h WHERE meter_id = ?1 AND qty = ?2 AND ts >= ?3 AND ts < ?4",
    [UW_DEL_1D] = "DELETE FROM rollup_1d WHERE meter_id = ?1 AND qty = ?2 AND ts >= ?3 AND ts < ?4",
    [UW_DEL_GAPS] = "DELETE FROM counter_gaps WHERE meter_id = ?1 AND qty = ?2"
                    " AND to_ts >= ?3 AND to_ts < ?4",
    [UW_INS_GAP] = "INSERT OR REPLACE INTO counter_gaps(meter_id, qty, to_ts, from_ts, delta)"
                   " VALUES(?1, ?2, ?3, ?4, ?5)",
    [UW_ROWS_5M] = "SELECT " ROLLUP_COLUMNS " FROM rollup_5m WHERE meter_id = ?1 AND qty = ?2"
                   " AND ts >= ?3 AND ts < ?4 ORDER BY ts",
    [UW_ROWS_1H] = "SELECT " ROLLUP_COLUMNS " FROM rollup_1h WHERE meter_id = ?1 AND qty = ?2"
                   " AND ts >= ?3 AND ts < ?4 ORDER BY ts",
    [UW_METER_QTYS] = "SELECT DISTINCT qty FROM rollup_1h WHERE meter_id = ?1",
    [UW_SPAN_1H] = "SELECT min(ts), max(ts) FROM rollup_1h WHERE meter_id = ?1 AND qty = ?2",
    [UW_OLDEST_5M] = "SELECT min(ts) FROM rollup_5m WHERE meter_id = ?1 AND qty = ?2",
    [UW_SITE_INS] = "INSERT INTO sites(name, title, tz, price, currency, created, updated)"
                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT(name) DO NOTHING",
    [UW_SITE_UPD] = "UPDATE sites SET title = ?2, tz = ?3, price = ?4, currency = ?5,"
                    " updated = ?6 WHERE name = ?1",
    [UW_SITE_DEL] = "DELETE FROM sites WHERE name = ?1",
    [UW_SITE_ID] = "SELECT id, tz FROM sites WHERE name = ?1",
    [UW_SITE_USED] = "SELECT count(*) FROM registry WHERE site_id = ?1",
    [UW_SITE_METERS] = "SELECT m.id FROM registry g JOIN meters m ON m.name = g.meter"
                       " WHERE g.site_id = ?1 AND m.id > ?2 ORDER BY m.id LIMIT 256",
    [UW_REG_INS] = "INSERT INTO registry(meter, gateway, site_id, region, area, dwelling, prepaid,"
                   " created, updated) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)"
                   " ON CONFLICT(meter) DO NOTHING",
    [UW_REG_UPD] = "UPDATE registry SET gateway = ?2, site_id = ?3, region = ?4, area = ?5,"
                   " dwelling = ?6, prepaid = ?7, updated = ?8 WHERE meter = ?1",
    [UW_REG_DEL] = "DELETE FROM registry WHERE meter = ?1",
    [UW_REG_TZ] = "SELECT s.tz FROM registry g JOIN sites s ON s.id = g.site_id WHERE g.meter = ?1",
    [UW_REPL_INS] = "INSERT OR IGNORE INTO replacements(meter, ts) VALUES(?1, ?2)",
    [UW_METER_ID] = "SELECT id FROM meters WHERE name = ?1",
    [UW_METER_IDS] = "SELECT id FROM meters ORDER BY id",
    [UW_QTY_IDS] = "SELECT id FROM quantities ORDER BY id",
    [UW_OLDEST_RAW] = "SELECT min(ts) FROM readings WHERE meter_id = ?1",
    [UW_RET_READINGS] = "DELETE FROM readings WHERE meter_id = ?1 AND ts < ?2",
    [UW_RET_5M] = "DELETE FROM rollup_5m WHERE meter_id = ?1 AND qty = ?2 AND ts < ?3",
    [UW_RET_1H] = "DELETE FROM rollup_1h WHERE meter_id = ?1 AND qty = ?2 AND ts < ?3",
    [UW_RET_1D] = "DELETE FROM rollup_1d WHERE meter_id = ?1 AND qty = ?2 AND ts < ?3",
    [UW_RET_GAPS] = "DELETE FROM counter_gaps WHERE meter_id = ?1 AND qty = ?2 AND to_ts < ?3",
};

enum {
    UR_METER_ID,
    UR_REG_CTX,
    UR_ROWS_5M,
    UR_ROWS_1H,
    UR_ROWS_1D,
    UR_SUM_5M,
    UR_SUM_1D,
    UR_GAPS,
    UR_GAP_SUM,
    UR_SERIES_5M,
    UR_SERIES_1H,
    UR_SERIES_1D,
    UR_POINTS,
    UR_PREV,
    UR_SPAN,
    UR_SITES,
    UR_SITE,
    UR_REGS,
    UR_REG,
    UR_REPL,
    UR_READINGS_ASC,
    UR_BEGIN,
    UR_END,
    UR_COUNT
};

#define SITE_COLUMNS                                                                               \
    "SELECT s.name, s.title, s.tz, s.price, s.currency, s.created, s.updated,"                     \
    " (SELECT count(*) FROM registry g WHERE g.site_id = s.id) FROM sites s"
#define REG_COLUMNS                                                                                \
    "SELECT g.meter, g.gateway, s.name, g.region, g.area, g.dwelling, g.prepaid, g.created,"       \
    " g.updated FROM registry g JOIN sites s ON s.id = g.site_id"

static const char *const ur_sql[UR_COUNT] = {
    [UR_METER_ID] = "SELECT id FROM meters WHERE name = ?1",
    [UR_REG_CTX] = "SELECT s.name, s.tz, s.price, s.currency, g.prepaid FROM registry g"
                   " JOIN sites s ON s.id = g.site_id WHERE g.meter = ?1",
    [UR_ROWS_5M] = "SELECT " ROLLUP_COLUMNS " FROM rollup_5m WHERE meter_id = ?1 AND qty = ?2"
                   " AND ts >= ?3 AND ts < ?4 ORDER BY ts LIMIT ?5",
    [UR_ROWS_1H] = "SELECT " ROLLUP_COLUMNS " FROM rollup_1h WHERE meter_id = ?1 AND qty = ?2"
                   " AND ts >= ?3 AND ts < ?4 ORDER BY ts LIMIT ?5",
    [UR_ROWS_1D] = "SELECT " ROLLUP_COLUMNS " FROM rollup_1d WHERE meter_id = ?1 AND qty = ?2"
                   " AND ts >= ?3 AND ts < ?4 ORDER BY ts LIMIT ?5",
    [UR_SUM_5M] = "SELECT total(delta), total(topup), total(n) FROM rollup_5m"
                  " WHERE meter_id = ?1 AND qty = ?2 AND ts >= ?3 AND ts < ?4",
    [UR_SUM_1D] = "SELECT total(delta), total(topup), total(n) FROM rollup_1d"
                  " WHERE meter_id = ?1 AND qty = ?2 AND ts >= ?3 AND ts < ?4",
    [UR_GAPS] = "SELECT from_ts, to_ts, delta FROM counter_gaps WHERE meter_id = ?1 AND qty = ?2"
                " AND to_ts >= ?3 AND from_ts < ?4 ORDER BY to_ts LIMIT ?5",
    /* gaps touching [a, b): the usage of those inside it, and how many cross its edges */
    [UR_GAP_SUM] = "SELECT total(CASE WHEN from_ts >= ?3 AND to_ts < ?4 THEN delta END),"
                   " count(CASE WHEN from_ts < ?3 OR to_ts >= ?4 THEN 1 END) FROM counter_gaps"
                   " WHERE meter_id = ?1 AND qty = ?2 AND to_ts >= ?3 AND from_ts < ?4",
    /* series: rows summed up into buckets of ?5 ms from ?3 */
    [UR_SERIES_5M] = "SELECT ?3 + (ts - ?3) / ?5 * ?5, min(min), sum(sum), sum(n), max(max)"
                     " FROM rollup_5m WHERE meter_id = ?1 AND qty = ?2 AND ts >= ?3 AND ts < ?4"
                     " GROUP BY (ts - ?3) / ?5 ORDER BY 1 LIMIT ?6",
    [UR_SERIES_1H] = "SELECT ?3 + (ts - ?3) / ?5 * ?5, min(min), sum(sum), sum(n), max(max)"
                     " FROM rollup_1h WHERE meter_id = ?1 AND qty = ?2 AND ts >= ?3 AND ts < ?4"
                     " GROUP BY (ts - ?3) / ?5 ORDER BY 1 LIMIT ?6",
    [UR_SERIES_1D] = "SELECT ?3 + (ts - ?3) / ?5 * ?5, min(min), sum(sum), sum(n), max(max)"
                     " FROM rollup_1d WHERE meter_id = ?1 AND qty = ?2 AND ts >= ?3 AND ts < ?4"
                     " GROUP BY (ts - ?3) / ?5 ORDER BY 1 LIMIT ?6",
    [UR_POINTS] = "SELECT ts, qv(vals, ?2) v FROM readings WHERE meter_id = ?1"
                  " AND ts >= ?3 AND ts < ?4 AND v IS NOT NULL ORDER BY ts LIMIT ?5",
    [UR_PREV] = "SELECT ts, qv(vals, ?2) v FROM readings WHERE meter_id = ?1 AND ts < ?3"
                " AND v IS NOT NULL ORDER BY ts DESC LIMIT 1",
    /* the oldest hourly row by its key (not min(first_ts): that would read every row) */
    [UR_SPAN] = "SELECT (SELECT first_ts FROM rollup_1h WHERE meter_id = ?1 AND qty = ?2"
                " ORDER BY ts LIMIT 1), (SELECT ts FROM readings WHERE meter_id = ?1"
                " AND qv(vals, ?2) IS NOT NULL ORDER BY ts DESC LIMIT 1)",
    [UR_SITES] = SITE_COLUMNS " ORDER BY s.name",
    [UR_SITE] = SITE_COLUMNS " WHERE s.name = ?1",
    [UR_REGS] = REG_COLUMNS " ORDER BY g.meter",
    [UR_REG] = REG_COLUMNS " WHERE g.meter = ?1",
    [UR_REPL] = "SELECT ts FROM (SELECT ts FROM replacements WHERE meter = ?1"
                " ORDER BY ts DESC LIMIT ?2) ORDER BY ts",
    [UR_READINGS_ASC] = "SELECT ts, seq, ok, unsynced, error, vals FROM readings"
                        " WHERE meter_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts LIMIT ?4",
    [UR_BEGIN] = "BEGIN",
    [UR_END] = "COMMIT",
};

#define USAGE_READERS 4 /* read connections for the usage API: parallel queries */

struct store_usage {
    struct conn u[USAGE_READERS];
    atomic_uint next_u;
    sqlite3_stmt *w[UW_COUNT]; /* on w.db, used under w.mu */
    /* rules (store_usage_config): atomics, so that readers never take w.mu for them */
    _Atomic int64_t gap_ms;
    _Atomic double max_power_kw;
    _Atomic int64_t keep_ms; /* readings older than this update no rollups */
    atomic_uint_fast64_t gen;
    /* writer scratch (w.mu) */
    struct rollup_point *pts;
    struct rollup_row *rows;
    struct usage_gap *gaps;
    int cap;
    int64_t *ts;
    int ts_cap;
    int64_t replaced[STORE_REPLACED_MAX * 4];
    int nreplaced;
    struct raw_rows {
        bool valid;
        int64_t meter_id, lo, hi;
        int n, cap;
        int64_t *ts;
        uint32_t *present;
        double *v; /* n x QTY_MAX */
    } raw;
};

/* The usage read connection this thread holds (u_lock), for the helpers it calls. */
static _Thread_local struct conn *tl_u;

/* Takes a free usage read connection (a busy one, when all are, in turn) and locks it;
 * unlock its mu when done. Requests of the usage API run on as many threads as there are
 * HTTP connections: with one read connection they queued behind each other's queries. */
static struct conn *u_lock(store_t *st)
{
    struct store_usage *x = st->usage;
    unsigned k = atomic_fetch_add(&x->next_u, 1) % USAGE_READERS;

    for (unsigned i = 0; i < USAGE_READERS; i++) {
        struct conn *c = &x->u[(k + i) % USAGE_READERS];
        if (pthread_mutex_trylock(&c->mu) == 0)
            return tl_u = c;
    }
    pthread_mutex_lock(&x->u[k].mu);
    return tl_u = &x->u[k];
}

static int usage_open(store_t *st, const char *path, char *err, size_t errlen)
{
    struct store_usage *x = calloc(1, sizeof(*x));
    int rc;

    if (!x) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    st->usage = x;
    atomic_init(&x->gap_ms, 900000);
    atomic_init(&x->max_power_kw, 1000);
    atomic_init(&x->keep_ms, 180LL * 86400000);
    atomic_init(&x->gen, 1);
    for (int i = 0; i < UW_COUNT; i++)
        if (sqlite3_prepare_v3(st->w.db, uw_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &x->w[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "cannot prepare usage statement %d: %s", i,
                     sqlite3_errmsg(st->w.db));
            return -EIO;
        }
    for (int i = 0; i < USAGE_READERS; i++) {
        if ((rc = open_conn(&x->u[i], path, UR_COUNT, err, errlen)) < 0 ||
            (rc = exec(x->u[i].db, "PRAGMA query_only=ON", err, errlen)) < 0 ||
            (rc = prepare_all(&x->u[i], ur_sql, err, errlen)) < 0)
            return rc;
    }
    return 0;
}

static void usage_close(store_t *st)
{
    struct store_usage *x = st->usage;

    if (!x)
        return;
    for (int i = 0; i < UW_COUNT; i++)
        sqlite3_finalize(x->w[i]);
    for (int i = 0; i < USAGE_READERS; i++)
        close_conn(&x->u[i]);
    free(x->pts);
    free(x->rows);
    free(x->gaps);
    free(x->ts);
    free(x->raw.ts);
    free(x->raw.present);
    free(x->raw.v);
    free(x);
    st->usage = NULL;
}

void store_usage_config(store_t *st, int64_t gap_ms, double max_power_kw, int m5_days)
{
    atomic_store(&st->usage->gap_ms, gap_ms);
    atomic_store(&st->usage->max_power_kw, max_power_kw);
    atomic_store(&st->usage->keep_ms, m5_days > 0 ? (int64_t)m5_days * 86400000 : INT64_MAX / 2);
}

static void usage_bump(store_t *st)
{
    atomic_fetch_add(&st->usage->gen, 1);
}

uint64_t store_generation(store_t *st)
{
    return atomic_load(&st->usage->gen);
}

static int64_t fmod64(int64_t a, int64_t b)
{
    int64_t m = a % b;
    return m < 0 ? m + b : m;
}

static int64_t floor5(int64_t t)
{
    return t - fmod64(t, ROLLUP_5M_MS);
}

static int usage_reserve(struct store_usage *x, int n)
{
    void *p;
    int cap = x->cap ? x->cap : 1024;

    if (n <= x->cap)
        return 0;
    while (cap < n)
        cap *= 2;
    if (!(p = realloc(x->pts, (size_t)cap * sizeof(*x->pts))))
        return -ENOMEM;
    x->pts = p;
    if (!(p = realloc(x->rows, (size_t)cap * sizeof(*x->rows))))
        return -ENOMEM;
    x->rows = p;
    if (!(p = realloc(x->gaps, (size_t)cap * sizeof(*x->gaps))))
        return -ENOMEM;
    x->gaps = p;
    x->cap = cap;
    return 0;
}

static void bind_row(sqlite3_stmt *s, int64_t meter_id, int qid, const struct rollup_row *r)
{
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid);
    sqlite3_bind_int64(s, 3, r->ts);
    sqlite3_bind_int64(s, 4, r->n);
    sqlite3_bind_double(s, 5, r->min);
    sqlite3_bind_double(s, 6, r->max);
    sqlite3_bind_double(s, 7, r->sum);
    sqlite3_bind_double(s, 8, r->first);
    sqlite3_bind_int64(s, 9, r->first_ts);
    sqlite3_bind_double(s, 10, r->last);
    sqlite3_bind_int64(s, 11, r->last_ts);
    sqlite3_bind_double(s, 12, r->delta);
    sqlite3_bind_double(s, 13, r->topup);
    sqlite3_bind_int64(s, 14, r->resets);
}

static void column_row(sqlite3_stmt *s, struct rollup_row *r)
{
    r->ts = sqlite3_column_int64(s, 0);
    r->n = sqlite3_column_int64(s, 1);
    r->min = sqlite3_column_double(s, 2);
    r->max = sqlite3_column_double(s, 3);
    r->sum = sqlite3_column_double(s, 4);
    r->first = sqlite3_column_double(s, 5);
    r->first_ts = sqlite3_column_int64(s, 6);
    r->last = sqlite3_column_double(s, 7);
    r->last_ts = sqlite3_column_int64(s, 8);
    r->delta = sqlite3_column_double(s, 9);
    r->topup = sqlite3_column_double(s, 10);
    r->resets = sqlite3_column_int64(s, 11);
}

/* Folds the rows of s (UW_ROWS_5M or UW_ROWS_1H) in [from, to) into acc (ts = from). */
static int fold_rows(store_t *st, sqlite3_stmt *s, int64_t meter_id, int qid, int64_t from,
                     int64_t to, struct rollup_row *acc)
{
    struct rollup_row r;
    int rc;

    memset(acc, 0, sizeof(*acc));
    acc->ts = from;
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid);
    sqlite3_bind_int64(s, 3, from);
    sqlite3_bind_int64(s, 4, to);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        column_row(s, &r);
        rollup_merge(acc, &r);
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(st->w.db, "fold rollups");
        return -EIO;
    }
    return 0;
}

/* Writes acc as the row at acc->ts of ins, or deletes that bucket ([ts, end)) with del when
 * it holds nothing. */
static int put_folded(store_t *st, sqlite3_stmt *ins, sqlite3_stmt *del, int64_t meter_id, int qid,
                      const struct rollup_row *acc, int64_t end)
{
    if (acc->n > 0) {
        bind_row(ins, meter_id, qid, acc);
        return step_done(st->w.db, ins, "write rollup");
    }
    return run_ints(st->w.db, del, (int64_t[]){meter_id, qid, acc->ts, end}, 4, "drop rollup");
}

/* Folds the hours and local days that hold [lo, hi) again. */
static int refold(store_t *st, int64_t meter_id, int qid, const tz_t *tz, int64_t lo, int64_t hi)
{
    struct store_usage *x = st->usage;
    struct rollup_row acc;
    int rc;

    for (int64_t h = lo - fmod64(lo, ROLLUP_1H_MS); h < hi; h += ROLLUP_1H_MS) {
        if ((rc = fold_rows(st, x->w[UW_ROWS_5M], meter_id, qid, h, h + ROLLUP_1H_MS, &acc)) < 0 ||
            (rc = put_folded(st, x->w[UW_INS_1H], x->w[UW_DEL_1H], meter_id, qid, &acc,
                             h + ROLLUP_1H_MS)) < 0)
            return rc;
    }
    for (int64_t d = tz_floor(tz, lo, TZ_DAY); d < hi;) {
        int64_t e = tz_next(tz, d, TZ_DAY);
        sqlite3_stmt *src = tz_whole_hours(tz, d, e) ? x->w[UW_ROWS_1H] : x->w[UW_ROWS_5M];
        if ((rc = fold_rows(st, src, meter_id, qid, d, e, &acc)) < 0 ||
            (rc = put_folded(st, x->w[UW_INS_1D], x->w[UW_DEL_1D], meter_id, qid, &acc, e)) < 0)
            return rc;
        d = e;
    }
    return 0;
}

/* Loads the readings of meter_id in [lo, hi) (at most USAGE_BATCH_PTS) with their values
 * into x->raw, unless it holds them already: every quantity of a reading is recomputed
 * over the same range, so the rows are read and decoded once, not once per quantity. Valid
 * within one usage_after() (x->raw.valid is cleared at its start). */
static int raw_load(store_t *st, int64_t meter_id, int64_t lo, int64_t hi)
{
    struct store_usage *x = st->usage;
    struct raw_rows *c = &x->raw;
    sqlite3_stmt *s = x->w[UW_RAW_ROWS];
    int rc;

    if (c->valid && c->meter_id == meter_id && c->lo == lo && c->hi == hi)
        return 0;
    c->valid = false;
    c->n = 0;
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int64(s, 2, lo);
    sqlite3_bind_int64(s, 3, hi);
    sqlite3_bind_int(s, 4, USAGE_BATCH_PTS);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct reading r;
        if (c->n == c->cap) {
            int cap = c->cap ? c->cap * 2 : 1024;
            int64_t *ts = realloc(c->ts, (size_t)cap * sizeof(*ts));
            uint32_t *pr = ts ? realloc(c->present, (size_t)cap * sizeof(*pr)) : NULL;
            double *v = pr ? realloc(c->v, (size_t)cap * QTY_MAX * sizeof(*v)) : NULL;
            if (ts)
                c->ts = ts;
            if (pr)
                c->present = pr;
            if (!v) {
                done(s);
                return -ENOMEM;
            }
            c->v = v;
            c->cap = cap;
        }
        r.present = 0;
        vals_decode(st->qty_idx, sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1), &r);
        c->ts[c->n] = sqlite3_column_int64(s, 0);
        c->present[c->n] = r.present;
        for (int q = 0; q < qty_count(); q++)
            if (r.present & (1u << q))
                c->v[(size_t)c->n * QTY_MAX + (size_t)q] = r.values[q];
        c->n++;
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(st->w.db, "read readings");
        return -EIO;
    }
    c->valid = true;
    c->meter_id = meter_id;
    c->lo = lo;
    c->hi = hi;
    return 0;
}

/* Recomputes the 5-minute rows and gaps of [lo, hi) (5-minute aligned) of one quantity from
 * the raw readings, then its hours and days. Caller holds w.mu inside a transaction. */
static int recompute(store_t *st, int64_t meter_id, int q, const tz_t *tz, int64_t lo, int64_t hi)
{
    struct store_usage *x = st->usage;
    sqlite3 *db = st->w.db;
    sqlite3_stmt *s;
    struct rollup_point prev;
    struct rollup_params pr = {.kind = qty_at(q)->kind,
                               .gap_ms = atomic_load(&x->gap_ms),
                               .max_power_kw = atomic_load(&x->max_power_kw),
                               .replaced = x->replaced,
                               .nreplaced = x->nreplaced};
    int qid = st->qty_db[q], n = 0, nr, ng, rc;
    bool has_prev = false;

    s = x->w[UW_PREV];
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid);
    sqlite3_bind_int64(s, 3, lo);
    if ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        prev.ts = sqlite3_column_int64(s, 0);
        prev.v = sqlite3_column_double(s, 1);
        has_prev = true;
    }
    done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        dberr(db, "read previous sample");
        return -EIO;
    }
    if ((rc = raw_load(st, meter_id, lo, hi)) < 0)
        return rc;
    if (usage_reserve(x, x->raw.n) < 0)
        return -ENOMEM;
    for (int i = 0; i < x->raw.n; i++)
        if (x->raw.present[i] & (1u << q)) {
            x->pts[n].ts = x->raw.ts[i];
            x->pts[n].v = x->raw.v[(size_t)i * QTY_MAX + (size_t)q];
            n++;
        }
    if (x->raw.n == USAGE_BATCH_PTS) /* more readings in the range: stop before the last */
        hi = floor5(x->raw.ts[x->raw.n - 1]);
    rollup_build(&pr, has_prev ? &prev : NULL, x->pts, n, ROLLUP_5M_MS, x->rows, &nr, x->gaps, &ng);
    if ((rc = run_ints(db, x->w[UW_DEL_5M], (int64_t[]){meter_id, qid, lo, hi}, 4,
                       "drop 5-minute rollups")) < 0 ||
        (rc = run_ints(db, x->w[UW_DEL_GAPS], (int64_t[]){meter_id, qid, lo, hi}, 4, "drop gaps")) <
            0)
        return rc;
    for (int i = 0; i < nr; i++) {
        if (x->rows[i].ts >= hi)
            break;
        bind_row(x->w[UW_INS_5M], meter_id, qid, &x->rows[i]);
        if ((rc = step_done(db, x->w[UW_INS_5M], "write 5-minute rollup")) < 0)
            return rc;
    }
    for (int i = 0; i < ng; i++) {
        sqlite3_stmt *g = x->w[UW_INS_GAP];
        if (x->gaps[i].to_ts >= hi)
            break;
        sqlite3_bind_int64(g, 1, meter_id);
        sqlite3_bind_int(g, 2, qid);
        sqlite3_bind_int64(g, 3, x->gaps[i].to_ts);
        sqlite3_bind_int64(g, 4, x->gaps[i].from_ts);
        sqlite3_bind_double(g, 5, x->gaps[i].delta);
        if ((rc = step_done(db, g, "write gap")) < 0)
            return rc;
    }
    return refold(st, meter_id, qid, tz, lo, hi);
}

/* Loads meter_id's replacement times into x->replaced; *tz gets its site's zone. */
static int meter_rules(store_t *st, int64_t meter_id, const tz_t **tz)
{
    struct store_usage *x = st->usage;
    sqlite3_stmt *s = x->w[UW_METER_TZ];
    char name[TZ_NAME_MAX] = "UTC";
    int rc;

    sqlite3_bind_int64(s, 1, meter_id);
    if ((rc = sqlite3_step(s)) == SQLITE_ROW)
        copy_text(name, sizeof(name), sqlite3_column_text(s, 0));
    done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        dberr(st->w.db, "read meter time zone");
        return -EIO;
    }
    if (tz_get(name, tz) < 0 && tz_get("UTC", tz) < 0)
        return -ENOMEM;
    x->nreplaced = 0;
    s = x->w[UW_REPLACED];
    sqlite3_bind_int64(s, 1, meter_id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (x->nreplaced < (int)(sizeof(x->replaced) / sizeof(x->replaced[0])))
            x->replaced[x->nreplaced++] = sqlite3_column_int64(s, 0);
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(st->w.db, "read replacements");
        return -EIO;
    }
    return 0;
}

/* Recomputes the rollups that the new readings ts[0..n) (sorted) of quantity q touch. */
static int update_qty(store_t *st, int64_t meter_id, int q, const tz_t *tz, const int64_t *ts,
                      int n)
{
    struct store_usage *x = st->usage;
    int rc;

    for (int i = 0; i < n;) {
        int j = i + 1;
        int64_t lo, hi, next = 0;
        bool has_next;

        while (j < n && ts[j] - ts[j - 1] <= USAGE_CLUSTER_MS)
            j++;
        lo = floor5(ts[i]);
        hi = floor5(ts[j - 1]) + ROLLUP_5M_MS;
        /* the first reading after the cluster: its step now starts at a new reading */
        sqlite3_bind_int64(x->w[UW_NEXT], 1, meter_id);
        sqlite3_bind_int(x->w[UW_NEXT], 2, st->qty_db[q]);
        sqlite3_bind_int64(x->w[UW_NEXT], 3, ts[j - 1]);
        rc = sqlite3_step(x->w[UW_NEXT]);
        has_next = rc == SQLITE_ROW;
        if (has_next)
            next = sqlite3_column_int64(x->w[UW_NEXT], 0);
        done(x->w[UW_NEXT]);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            dberr(st->w.db, "read next sample");
            return -EIO;
        }
        if (has_next && floor5(next) <= hi) {
            hi = floor5(next) + ROLLUP_5M_MS;
            has_next = false;
        }
        if ((rc = recompute(st, meter_id, q, tz, lo, hi)) < 0)
            return rc;
        if (has_next &&
            (rc = recompute(st, meter_id, q, tz, floor5(next), floor5(next) + ROLLUP_5M_MS)) < 0)
            return rc;
        i = j;
    }
    return 0;
}

static int64_t usage_horizon(store_t *st, int64_t recv_ms)
{
    return recv_ms - atomic_load(&st->usage->keep_ms);
}

static int cmp_fresh(const void *a, const void *b)
{
    const struct fresh *x = a, *y = b;
    if (x->meter_id != y->meter_id)
        return x->meter_id < y->meter_id ? -1 : 1;
    return x->ts < y->ts ? -1 : x->ts > y->ts;
}

/* The rollup part of store_put_batch (or of a group's commit): brings the rollups up to
 * date with the new readings f[0..n) (sorted here). Caller holds w.mu inside the
 * transaction that stored them. */
static int usage_after(store_t *st, struct fresh *f, int n)
{
    struct store_usage *x = st->usage;
    int rc;

    if (n > 0)
        qsort(f, (size_t)n, sizeof(*f), cmp_fresh);
    x->raw.valid = false; /* the readings changed since the last call */
    for (int i = 0; i < n;) {
        int j = i, cnt;
        const tz_t *tz = NULL;

        while (j < n && f[j].meter_id == f[i].meter_id)
            j++;
        cnt = j - i;
        if (cnt > x->ts_cap) {
            int64_t *p = realloc(x->ts, (size_t)cnt * sizeof(*p));
            if (!p)
                return -ENOMEM;
            x->ts = p;
            x->ts_cap = cnt;
        }
        if ((rc = meter_rules(st, f[i].meter_id, &tz)) < 0)
            return rc;
        for (int q = 0; q < qty_count(); q++) {
            int m = 0;
            for (int k = i; k < j; k++) /* ascending by ts */
                if (f[k].present & (1u << q))
                    x->ts[m++] = f[k].ts;
            if (m == 0)
                continue;
            if ((rc = update_qty(st, f[i].meter_id, q, tz, x->ts, m)) < 0)
                return rc;
        }
        i = j;
    }
    x->raw.valid = false;
    atomic_fetch_add(&x->gen, 1);
    return 0;
}

/* Rebuilds the daily rows of meter_id in zone tz from its hourly rows (whole-hour offsets)
 * or 5-minute rows (others, where they are still kept; older days from the hourly rows,
 * to the hour). Caller holds w.mu in a transaction. */
static int rebuild_days(store_t *st, int64_t meter_id, const tz_t *tz)
{
    struct store_usage *x = st->usage;
    sqlite3_stmt *s = x->w[UW_METER_QTYS];
    int qids[QTY_DB_MAX], nq = 0, rc;

    sqlite3_bind_int64(s, 1, meter_id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW && nq < QTY_DB_MAX)
        qids[nq++] = sqlite3_column_int(s, 0);
    done(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        dberr(st->w.db, "list rollup quantities");
        return -EIO;
    }
    for (int i = 0; i < nq; i++) {
        int64_t first = 0, last = 0, oldest5 = INT64_MAX;
        bool any;
        struct rollup_row acc;

        s = x->w[UW_SPAN_1H];
        sqlite3_bind_int64(s, 1, meter_id);
        sqlite3_bind_int(s, 2, qids[i]);
        rc = sqlite3_step(s);
        any = rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL;
        if (any) {
            first = sqlite3_column_int64(s, 0);
            last = sqlite3_column_int64(s, 1);
        }
        done(s);
        if (!any)
            continue;
        s = x->w[UW_OLDEST_5M];
        sqlite3_bind_int64(s, 1, meter_id);
        sqlite3_bind_int(s, 2, qids[i]);
        if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
            oldest5 = sqlite3_column_int64(s, 0);
        done(s);
        if ((rc = run_ints(st->w.db, x->w[UW_DEL_1D],
                           (int64_t[]){meter_id, qids[i], INT64_MIN, INT64_MAX}, 4,
                           "drop daily rollups")) < 0)
            return rc;
        for (int64_t d = tz_floor(tz, first, TZ_DAY); d <= last;) {
            int64_t e = tz_next(tz, d, TZ_DAY);
            /* 5-minute rows cover the day unless retention took some: the oldest one is
             * then later than the day's first hour */
            int64_t from = d > first ? d : first;
            bool hours = tz_whole_hours(tz, d, e) || oldest5 > from + ROLLUP_1H_MS;
            sqlite3_stmt *src = hours ? x->w[UW_ROWS_1H] : x->w[UW_ROWS_5M];
            if ((rc = fold_rows(st, src, meter_id, qids[i], d, e, &acc)) < 0)
                return rc;
            acc.ts = d;
            if (acc.n > 0) {
                bind_row(x->w[UW_INS_1D], meter_id, qids[i], &acc);
                if ((rc = step_done(st->w.db, x->w[UW_INS_1D], "write daily rollup")) < 0)
                    return rc;
            }
            d = e;
        }
    }
    return 0;
}

/* Runs sql-less steps of a registry write: BEGIN under w.mu. */
static int u_begin(store_t *st)
{
    if (tl_group == st)
        return -EDEADLK; /* only store_put_batch and store_put_loss join a group */
    pthread_mutex_lock(&st->w.mu);
    if (step_done(st->w.db, st->w.stmt[W_BEGIN], "begin") < 0) {
        pthread_mutex_unlock(&st->w.mu);
        return -EIO;
    }
    return 0;
}

static int u_end(store_t *st, int rc)
{
    if (rc == 0)
        rc = step_done(st->w.db, st->w.stmt[W_COMMIT], "commit");
    if (rc < 0)
        step_done(st->w.db, st->w.stmt[W_ROLLBACK], "rollback");
    else
        atomic_fetch_add(&st->usage->gen, 1);
    pthread_mutex_unlock(&st->w.mu);
    return rc;
}

static void bind_text_or_null(sqlite3_stmt *s, int i, const char *v)
{
    if (v && *v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

/* Finds site name: its id and tz; -ENOENT. Caller holds w.mu. */
static int site_id(store_t *st, const char *name, int64_t *id, char *tz)
{
    sqlite3_stmt *s = st->usage->w[UW_SITE_ID];
    int rc;

    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(s, 0);
        if (tz)
            copy_text(tz, TZ_NAME_MAX, sqlite3_column_text(s, 1));
    }
    done(s);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return -ENOENT;
    dberr(st->w.db, "find site");
    return -EIO;
}

static int rebuild_site(store_t *st, int64_t sid, const char *tzname)
{
    sqlite3_stmt *s = st->usage->w[UW_SITE_METERS];
    int64_t ids[256], after = 0;
    const tz_t *tz;
    int n, rc;

    if (tz_get(tzname, &tz) < 0)
        return -EINVAL;
    /* in pages: the statement must be done before rebuild_days writes the tables it reads */
    do {
        n = 0;
        sqlite3_bind_int64(s, 1, sid);
        sqlite3_bind_int64(s, 2, after);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < 256)
            ids[n++] = sqlite3_column_int64(s, 0);
        done(s);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
            dberr(st->w.db, "list site meters");
            return -EIO;
        }
        for (int i = 0; i < n; i++)
            if ((rc = rebuild_days(st, ids[i], tz)) < 0)
                return rc;
        if (n)
            after = ids[n - 1];
    } while (n == 256);
    return 0;
}

int store_site_put(store_t *st, const struct store_site *site, bool create, int64_t now_ms)
{
    struct store_usage *x = st->usage;
    char old_tz[TZ_NAME_MAX] = "";
    int64_t sid = 0;
    sqlite3_stmt *s;
    int rc;

    if (!wire_id_valid(site->id) || !tz_valid(site->tz))
        return -EINVAL;
    if ((rc = u_begin(st)) < 0)
        return rc;
    rc = site_id(st, site->id, &sid, old_tz);
    if (create && rc == 0)
        rc = -EEXIST;
    else if (create && rc == -ENOENT)
        rc = 0;
    if (rc < 0)
        goto end;
    s = x->w[create ? UW_SITE_INS : UW_SITE_UPD];
    sqlite3_bind_text(s, 1, site->id, -1, SQLITE_STATIC);
    bind_text_or_null(s, 2, site->title);
    sqlite3_bind_text(s, 3, site->tz, -1, SQLITE_STATIC);
    if (site->has_tariff) {
        sqlite3_bind_double(s, 4, site->price);
        sqlite3_bind_text(s, 5, site->currency, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(s, 4);
        sqlite3_bind_null(s, 5);
    }
    sqlite3_bind_int64(s, 6, now_ms);
    if ((rc = step_done(st->w.db, s, "write site")) < 0)
        goto end;
    if (!create && strcmp(old_tz, site->tz) != 0)
        rc = rebuild_site(st, sid, site->tz);
end:
    return u_end(st, rc);
}

int store_site_delete(store_t *st, const char *id)
{
    int64_t sid = 0, used = 0;
    int rc;

    if ((rc = u_begin(st)) < 0)
        return rc;
    if ((rc = site_id(st, id, &sid, NULL)) < 0)
        goto end;
    sqlite3_bind_int64(st->usage->w[UW_SITE_USED], 1, sid);
    if ((rc = step_id(st->w.db, st->usage->w[UW_SITE_USED], "count site meters", &used)) < 0)
        goto end;
    if (used > 0) {
        rc = -EBUSY;
        goto end;
    }
    sqlite3_bind_text(st->usage->w[UW_SITE_DEL], 1, id, -1, SQLITE_STATIC);
    rc = step_done(st->w.db, st->usage->w[UW_SITE_DEL], "delete site");
end:
    return u_end(st, rc);
}

/* Zone of meter name's registration ("UTC" when it has none). Caller holds w.mu. */
static int reg_tz(store_t *st, const char *name, char *tz)
{
    sqlite3_stmt *s = st->usage->w[UW_REG_TZ];
    int rc;

    snprintf(tz, TZ_NAME_MAX, "UTC");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        copy_text(tz, TZ_NAME_MAX, sqlite3_column_text(s, 0));
    done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        dberr(st->w.db, "read registration");
        return -EIO;
    }
    return rc == SQLITE_ROW ? 0 : -ENOENT;
}

/* The store's id of meter name; -ENOENT when it has no readings. Caller holds w.mu. */
static int w_meter_id(store_t *st, const char *name, int64_t *id)
{
    sqlite3_stmt *s = st->usage->w[UW_METER_ID];
    int rc;

    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(s, 0);
    done(s);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return -ENOENT;
    dberr(st->w.db, "find meter");
    return -EIO;
}

/* After a registry change of meter name: its daily rollups follow the zone now in force. */
static int follow_tz(store_t *st, const char *name, const char *old_tz)
{
    char tzname[TZ_NAME_MAX];
    const tz_t *tz;
    int64_t mid;
    int rc;

    if ((rc = reg_tz(st, name, tzname)) < 0 && rc != -ENOENT)
        return rc;
    if (strcmp(tzname, old_tz) == 0)
        return 0;
    if ((rc = w_meter_id(st, name, &mid)) == -ENOENT)
        return 0; /* no readings yet: nothing rolled up */
    if (rc < 0)
        return rc;
    if (tz_get(tzname, &tz) < 0)
        return -EINVAL;
    return rebuild_days(st, mid, tz);
}

int store_reg_put(store_t *st, const struct store_reg *r, bool create, int64_t now_ms)
{
    struct store_usage *x = st->usage;
    char old_tz[TZ_NAME_MAX];
    int64_t sid = 0;
    sqlite3_stmt *s;
    int rc;

    if (!wire_id_valid(r->id) || !wire_id_valid(r->gateway) || !wire_id_valid(r->site))
        return -EINVAL;
    if ((rc = u_begin(st)) < 0)
        return rc;
    rc = reg_tz(st, r->id, old_tz);
    if (create && rc == 0)
        rc = -EEXIST;
    else if (create && rc == -ENOENT)
        rc = 0;
    if (rc < 0)
        goto end;
    if ((rc = site_id(st, r->site, &sid, NULL)) < 0) {
        if (rc == -ENOENT)
            rc = -ENXIO;
        goto end;
    }
    s = x->w[create ? UW_REG_INS : UW_REG_UPD];
    sqlite3_bind_text(s, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, r->gateway, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, sid);
    bind_text_or_null(s, 4, r->region);
    bind_text_or_null(s, 5, r->area);
    bind_text_or_null(s, 6, r->dwelling);
    sqlite3_bind_int(s, 7, r->prepaid);
    sqlite3_bind_int64(s, 8, now_ms);
    if ((rc = step_done(st->w.db, s, "write registration")) < 0)
        goto end;
    rc = follow_tz(st, r->id, old_tz);
end:
    return u_end(st, rc);
}

int store_reg_delete(store_t *st, const char *id)
{
    char old_tz[TZ_NAME_MAX];
    int rc;

    if ((rc = u_begin(st)) < 0)
        return rc;
    if ((rc = reg_tz(st, id, old_tz)) < 0)
        goto end;
    sqlite3_bind_text(st->usage->w[UW_REG_DEL], 1, id, -1, SQLITE_STATIC);
    if ((rc = step_done(st->w.db, st->usage->w[UW_REG_DEL], "delete registration")) < 0)
        goto end;
    rc = follow_tz(st, id, old_tz);
end:
    return u_end(st, rc);
}

int store_reg_replaced(store_t *st, const char *id, int64_t ts)
{
    struct store_usage *x = st->usage;
    char tzname[TZ_NAME_MAX];
    const tz_t *tz;
    int64_t mid;
    int rc;

    if ((rc = u_begin(st)) < 0)
        return rc;
    if ((rc = reg_tz(st, id, tzname)) < 0)
        goto end;
    sqlite3_bind_text(x->w[UW_REPL_INS], 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(x->w[UW_REPL_INS], 2, ts);
    if ((rc = step_done(st->w.db, x->w[UW_REPL_INS], "record replacement")) < 0)
        goto end;
    if ((rc = w_meter_id(st, id, &mid)) == -ENOENT) {
        rc = 0;
        goto end;
    }
    if (rc < 0 || (rc = meter_rules(st, mid, &tz)) < 0)
        goto end;
    x->raw.valid = false;
    /* the step across ts is the first reading at or after ts: recompute its bucket */
    for (int q = 0; q < qty_count() && rc == 0; q++) {
        sqlite3_stmt *s = x->w[UW_NEXT];
        int64_t next = 0;
        int step;
        if (qty_at(q)->kind == QTY_GAUGE)
            continue;
        sqlite3_bind_int64(s, 1, mid);
        sqlite3_bind_int(s, 2, st->qty_db[q]);
        sqlite3_bind_int64(s, 3, ts - 1);
        step = sqlite3_step(s);
        if (step == SQLITE_ROW)
            next = sqlite3_column_int64(s, 0);
        done(s);
        if (step == SQLITE_ROW)
            rc = recompute(st, mid, q, tz, floor5(next), floor5(next) + ROLLUP_5M_MS);
        else if (step != SQLITE_DONE)
            rc = -EIO;
    }
end:
    x->raw.valid = false;
    return u_end(st, rc);
}

static void site_row(sqlite3_stmt *s, struct store_site *o)
{
    memset(o, 0, sizeof(*o));
    copy_text(o->id, sizeof(o->id), sqlite3_column_text(s, 0));
    copy_text(o->title, sizeof(o->title), sqlite3_column_text(s, 1));
    copy_text(o->tz, sizeof(o->tz), sqlite3_column_text(s, 2));
    o->has_tariff = sqlite3_column_type(s, 3) != SQLITE_NULL;
    o->price = sqlite3_column_double(s, 3);
    copy_text(o->currency, sizeof(o->currency), sqlite3_column_text(s, 4));
    o->created_ms = sqlite3_column_int64(s, 5);
    o->updated_ms = sqlite3_column_int64(s, 6);
    o->meters = sqlite3_column_int(s, 7);
}

static void reg_row(sqlite3_stmt *s, struct store_reg *o)
{
    memset(o, 0, sizeof(*o));
    copy_text(o->id, sizeof(o->id), sqlite3_column_text(s, 0));
    copy_text(o->gateway, sizeof(o->gateway), sqlite3_column_text(s, 1));
    copy_text(o->site, sizeof(o->site), sqlite3_column_text(s, 2));
    copy_text(o->region, sizeof(o->region), sqlite3_column_text(s, 3));
    copy_text(o->area, sizeof(o->area), sqlite3_column_text(s, 4));
    copy_text(o->dwelling, sizeof(o->dwelling), sqlite3_column_text(s, 5));
    o->prepaid = sqlite3_column_int(s, 6) != 0;
    o->created_ms = sqlite3_column_int64(s, 7);
    o->updated_ms = sqlite3_column_int64(s, 8);
}

/* Reads every row of s with fill() into a malloc'd array of elements of size sz. Caller
 * holds u.mu. */
static int list_rows(store_t *st, sqlite3_stmt *s, size_t sz, void (*fill)(sqlite3_stmt *, void *),
                     void **out, int *n)
{
    char *v = NULL, *nv;
    int cnt = 0, cap = 0, rc;

    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            if (!(nv = realloc(v, (size_t)cap * sz))) {
                done(s);
                free(v);
                return -ENOMEM;
            }
            v = nv;
        }
        fill(s, v + (size_t)cnt * sz);
        cnt++;
    }
    done(s);
    if (rc != SQLITE_DONE) {
        dberr(tl_u->db, "list");
        free(v);
        return -EIO;
    }
    *out = v;
    *n = cnt;
    return 0;
}

static void fill_site(sqlite3_stmt *s, void *o)
{
    site_row(s, o);
}

static void fill_reg(sqlite3_stmt *s, void *o)
{
    reg_row(s, o);
}

int store_site_list(store_t *st, struct store_site **out, int *n)
{
    struct conn *u = NULL;
    void *v;
    int rc;

    u = u_lock(st);
    rc = list_rows(st, u->stmt[UR_SITES], sizeof(**out), fill_site, &v, n);
    pthread_mutex_unlock(&u->mu);
    *out = rc == 0 ? v : NULL;
    return rc;
}

int store_site_get(store_t *st, const char *id, struct store_site *out)
{
    struct conn *u = NULL;
    sqlite3_stmt *s;
    int rc;

    u = u_lock(st);
    s = u->stmt[UR_SITE];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        site_row(s, out);
    done(s);
    pthread_mutex_unlock(&u->mu);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return -ENOENT;
    dberr(u->db, "read site");
    return -EIO;
}

/* Fills r->replaced from the replacements table. Caller holds u.mu. */
static int load_replaced(store_t *st, struct store_reg *r)
{
    sqlite3_stmt *s = tl_u->stmt[UR_REPL];
    int rc;

    r->nreplaced = 0;
    sqlite3_bind_text(s, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, STORE_REPLACED_MAX);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW && r->nreplaced < STORE_REPLACED_MAX)
        r->replaced[r->nreplaced++] = sqlite3_column_int64(s, 0);
    done(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        dberr(tl_u->db, "read replacements");
        return -EIO;
    }
    return 0;
}

int store_reg_list(store_t *st, struct store_reg **out, int *n)
{
    struct conn *u = NULL;
    void *v = NULL;
    int rc;

    u = u_lock(st);
    rc = list_rows(st, u->stmt[UR_REGS], sizeof(**out), fill_reg, &v, n);
    for (int i = 0; rc == 0 && i < *n; i++)
        rc = load_replaced(st, &((struct store_reg *)v)[i]);
    pthread_mutex_unlock(&u->mu);
    if (rc < 0) {
        free(v);
        *n = 0;
        v = NULL;
    }
    *out = v;
    return rc;
}

int store_reg_get(store_t *st, const char *id, struct store_reg *out)
{
    struct conn *u = NULL;
    sqlite3_stmt *s;
    int rc;

    u = u_lock(st);
    s = u->stmt[UR_REG];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        reg_row(s, out);
    done(s);
    if (rc == SQLITE_ROW)
        rc = load_replaced(st, out);
    else if (rc == SQLITE_DONE)
        rc = -ENOENT;
    else {
        dberr(u->db, "read registration");
        rc = -EIO;
    }
    pthread_mutex_unlock(&u->mu);
    return rc;
}

int store_meter_ctx(store_t *st, const char *meter, struct store_meter_ctx *out)
{
    struct conn *u = NULL;
    sqlite3_stmt *s;
    int rc, rc2;

    memset(out, 0, sizeof(*out));
    snprintf(out->tz, sizeof(out->tz), "UTC");
    u = u_lock(st);
    s = u->stmt[UR_METER_ID];
    sqlite3_bind_text(s, 1, meter, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        out->id = sqlite3_column_int64(s, 0);
    done(s);
    s = u->stmt[UR_REG_CTX];
    sqlite3_bind_text(s, 1, meter, -1, SQLITE_STATIC);
    rc2 = sqlite3_step(s);
    if (rc2 == SQLITE_ROW) {
        out->registered = true;
        copy_text(out->site, sizeof(out->site), sqlite3_column_text(s, 0));
        copy_text(out->tz, sizeof(out->tz), sqlite3_column_text(s, 1));
        out->has_tariff = sqlite3_column_type(s, 2) != SQLITE_NULL;
        out->price = sqlite3_column_double(s, 2);
        copy_text(out->currency, sizeof(out->currency), sqlite3_column_text(s, 3));
        out->prepaid = sqlite3_column_int(s, 4) != 0;
    }
    done(s);
    pthread_mutex_unlock(&u->mu);
    if ((rc != SQLITE_ROW && rc != SQLITE_DONE) || (rc2 != SQLITE_ROW && rc2 != SQLITE_DONE)) {
        dberr(u->db, "read meter");
        return -EIO;
    }
    return rc == SQLITE_ROW || rc2 == SQLITE_ROW ? 0 : -ENOENT;
}

static int qid_of(store_t *st, int qty)
{
    return qty >= 0 && qty < qty_count() ? st->qty_db[qty] : -1;
}

int store_rollups(store_t *st, int64_t meter_id, int qty, enum store_tier t, int64_t from,
                  int64_t to, int max, struct rollup_row *out, int *n)
{
    struct conn *u = NULL;
    sqlite3_stmt *s;
    int cnt = 0, rc;

    *n = 0;
    if (qid_of(st, qty) < 0 || max <= 0)
        return -EINVAL;
    u = u_lock(st);
    s = u->stmt[t == STORE_TIER_5M ? UR_ROWS_5M : t == STORE_TIER_1H ? UR_ROWS_1H : UR_ROWS_1D];
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid_of(st, qty));
    sqlite3_bind_int64(s, 3, from);
    sqlite3_bind_int64(s, 4, to);
    sqlite3_bind_int(s, 5, max);
    while (cnt < max && (rc = sqlite3_step(s)) == SQLITE_ROW)
        column_row(s, &out[cnt++]);
    done(s);
    pthread_mutex_unlock(&u->mu);
    if (cnt < max && rc != SQLITE_DONE) {
        dberr(u->db, "read rollups");
        return -EIO;
    }
    *n = cnt;
    return 0;
}

int store_series(store_t *st, int64_t meter_id, int qty, enum store_tier t, int64_t from,
                 int64_t to, int64_t width, int max, struct store_point4 *out, int *n)
{
    struct conn *u = NULL;
    sqlite3_stmt *s;
    int cnt = 0, rc;

    *n = 0;
    if (qid_of(st, qty) < 0 || max <= 0 || width <= 0 || from >= to)
        return -EINVAL;
    u = u_lock(st);
    s = u->stmt[t == STORE_TIER_5M   ? UR_SERIES_5M
                : t == STORE_TIER_1H ? UR_SERIES_1H
                                     : UR_SERIES_1D];
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid_of(st, qty));
    sqlite3_bind_int64(s, 3, from);
    sqlite3_bind_int64(s, 4, to);
    sqlite3_bind_int64(s, 5, width);
    sqlite3_bind_int(s, 6, max);
    while (cnt < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        double sum = sqlite3_column_double(s, 2);
        int64_t cnt_n = sqlite3_column_int64(s, 3);
        out[cnt].ts = sqlite3_column_int64(s, 0);
        out[cnt].min = sqlite3_column_double(s, 1);
        out[cnt].avg = cnt_n > 0 ? sum / (double)cnt_n : 0;
        out[cnt].max = sqlite3_column_double(s, 4);
        out[cnt].n = cnt_n;
        cnt++;
    }
    done(s);
    pthread_mutex_unlock(&u->mu);
    if (cnt < max && rc != SQLITE_DONE) {
        dberr(u->db, "read series");
        return -EIO;
    }
    *n = cnt;
    return 0;
}

int store_gaps(store_t *st, int64_t meter_id, int qty, int64_t from, int64_t to, int max,
               struct usage_gap *out, int *n)
{
    struct conn *u = NULL;
    sqlite3_stmt *s;
    int cnt = 0, rc;

    *n = 0;
    if (qid_of(st, qty) < 0 || max <= 0)
        return -EINVAL;
    u = u_lock(st);
    s = u->stmt[UR_GAPS];
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid_of(st, qty));
    sqlite3_bind_int64(s, 3, from);
    sqlite3_bind_int64(s, 4, to);
    sqlite3_bind_int(s, 5, max);
    while (cnt < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        out[cnt].from_ts = sqlite3_column_int64(s, 0);
        out[cnt].to_ts = sqlite3_column_int64(s, 1);
        out[cnt].delta = sqlite3_column_double(s, 2);
        cnt++;
    }
    done(s);
    pthread_mutex_unlock(&u->mu);
    if (cnt < max && rc != SQLITE_DONE) {
        dberr(u->db, "read gaps");
        return -EIO;
    }
    *n = cnt;
    return 0;
}

/* Reads raw points [from, to) and the one before; caller holds u.mu. */
static int u_points(store_t *st, int qid, int64_t meter_id, int64_t from, int64_t to, int max,
                    struct rollup_point *out, int *n, struct rollup_point *prev, bool *has_prev)
{
    struct conn *u = tl_u;
    sqlite3_stmt *s = u->stmt[UR_PREV];
    int cnt = 0, rc;

    *has_prev = false;
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid);
    sqlite3_bind_int64(s, 3, from);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        prev->ts = sqlite3_column_int64(s, 0);
        prev->v = sqlite3_column_double(s, 1);
        *has_prev = true;
    }
    done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto dbfail;
    s = u->stmt[UR_POINTS];
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid);
    sqlite3_bind_int64(s, 3, from);
    sqlite3_bind_int64(s, 4, to);
    sqlite3_bind_int(s, 5, max);
    while (cnt < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        out[cnt].ts = sqlite3_column_int64(s, 0);
        out[cnt].v = sqlite3_column_double(s, 1);
        cnt++;
    }
    done(s);
    if (cnt < max && rc != SQLITE_DONE)
        goto dbfail;
    *n = cnt;
    return 0;
dbfail:
    dberr(u->db, "read samples");
    return -EIO;
}

int store_points(store_t *st, int64_t meter_id, int qty, int64_t from, int64_t to, int max,
                 struct rollup_point *out, int *n, struct rollup_point *prev, bool *has_prev)
{
    struct conn *u = NULL;
    int rc;

    *n = 0;
    *has_prev = false;
    if (qid_of(st, qty) < 0 || max <= 0)
        return -EINVAL;
    u = u_lock(st);
    rc = u_points(st, qid_of(st, qty), meter_id, from, to, max, out, n, prev, has_prev);
    pthread_mutex_unlock(&u->mu);
    return rc;
}

int store_span(store_t *st, int64_t meter_id, int qty, int64_t *first, int64_t *last)
{
    struct conn *u = NULL;
    sqlite3_stmt *s;
    int rc;

    if (qid_of(st, qty) < 0)
        return -EINVAL;
    u = u_lock(st);
    s = u->stmt[UR_SPAN];
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid_of(st, qty));
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(s, 0) == SQLITE_NULL || sqlite3_column_type(s, 1) == SQLITE_NULL) {
            rc = -ENOENT;
        } else {
            *first = sqlite3_column_int64(s, 0);
            *last = sqlite3_column_int64(s, 1);
            rc = 0;
        }
    } else {
        dberr(u->db, "read span");
        rc = -EIO;
    }
    done(s);
    pthread_mutex_unlock(&u->mu);
    return rc;
}

/* Sums s (UR_SUM_*) over [a, b) into o. Caller holds u.mu. */
static int u_sum(store_t *st, sqlite3_stmt *s, int64_t meter_id, int qid, int64_t a, int64_t b,
                 struct store_sum *o)
{
    int rc;

    if (a >= b)
        return 0;
    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid);
    sqlite3_bind_int64(s, 3, a);
    sqlite3_bind_int64(s, 4, b);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        o->use += sqlite3_column_double(s, 0);
        o->topup += sqlite3_column_double(s, 1);
        o->n += (int64_t)sqlite3_column_double(s, 2);
    }
    done(s);
    if (rc != SQLITE_ROW) {
        dberr(tl_u->db, "sum rollups");
        return -EIO;
    }
    return 0;
}

/* Adds the usage of the gaps inside [a, b) to o and counts those crossing its edges.
 * Caller holds u.mu. */
static int u_gap_totals(store_t *st, int64_t meter_id, int qid, int64_t a, int64_t b,
                        struct store_sum *o)
{
    struct conn *u = tl_u;
    sqlite3_stmt *s = u->stmt[UR_GAP_SUM];
    int rc;

    sqlite3_bind_int64(s, 1, meter_id);
    sqlite3_bind_int(s, 2, qid);
    sqlite3_bind_int64(s, 3, a);
    sqlite3_bind_int64(s, 4, b);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        o->use += sqlite3_column_double(s, 0);
        o->gaps_crossing = sqlite3_column_int(s, 1);
    }
    done(s);
    if (rc != SQLITE_ROW) {
        dberr(u->db, "sum gaps");
        return -EIO;
    }
    return 0;
}

#define TAIL_MAX 4096 /* raw readings of the last 5 minutes of a sum, at most */

/* One sum of store_usage_sums(); caller holds u.mu; pts has room for TAIL_MAX. */
static int usage_sum(store_t *st, int qid, int kind, int64_t meter_id,
                     const struct store_sum_range *r, struct rollup_point *pts,
                     struct store_sum *out)
{
    struct store_usage *x = st->usage;
    struct conn *u = tl_u;
    int64_t f = floor5(r->b), gap_ms = atomic_load(&x->gap_ms);
    double max_kw = atomic_load(&x->max_power_kw);
    struct rollup_point prev;
    bool has_prev;
    int n = 0, rc;

    memset(out, 0, sizeof(*out));
    if (r->a > r->day_end || r->day_end > r->b)
        return -EINVAL;
    if (f < r->day_end)
        f = r->day_end;
    if ((rc = u_sum(st, u->stmt[UR_SUM_1D], meter_id, qid, r->a, r->day_end, out)) < 0 ||
        (rc = u_sum(st, u->stmt[UR_SUM_5M], meter_id, qid, r->day_end, f, out)) < 0)
        return rc;
    if (f < r->b) {
        if ((rc = u_points(st, qid, meter_id, f, r->b, TAIL_MAX, pts, &n, &prev, &has_prev)) < 0)
            return rc;
        for (int i = 0; i < n; i++) {
            const struct rollup_point *p0 = i ? &pts[i - 1] : has_prev ? &prev : NULL;
            double use = 0, topup = 0;
            out->n++;
            if (!p0 || pts[i].ts - p0->ts > gap_ms)
                continue; /* a gap's usage is counted with the gaps below */
            if (kind == QTY_COUNTER)
                use = usage_counter_step(p0->v, pts[i].v, pts[i].ts - p0->ts, max_kw, NULL);
            else if (kind == QTY_BALANCE)
                usage_balance_step(p0->v, pts[i].v, &use, &topup);
            out->use += use;
            out->topup += topup;
        }
    }
    return u_gap_totals(st, meter_id, qid, r->a, r->b, out);
}

int store_usage_sums(store_t *st, int64_t meter_id, int qty, const struct store_sum_range *r, int n,
                     struct store_sum *out)
{
    struct conn *u = NULL;
    struct rollup_point *pts;
    int qid = qid_of(st, qty), rc = 0;

    if (qid < 0 || n < 0)
        return -EINVAL;
    if (!(pts = malloc(TAIL_MAX * sizeof(*pts))))
        return -ENOMEM;
    u = u_lock(st);
    /* one read transaction: one snapshot, and one WAL read lock instead of one per query */
    if ((rc = step_done(u->db, u->stmt[UR_BEGIN], "begin read")) == 0) {
        for (int i = 0; i < n && rc == 0; i++)
            rc = usage_sum(st, qid, qty_at(qty)->kind, meter_id, &r[i], pts, &out[i]);
        step_done(u->db, u->stmt[UR_END], "end read");
    }
    pthread_mutex_unlock(&u->mu);
    free(pts);
    return rc;
}

int store_usage_sum(store_t *st, int64_t meter_id, int qty, int64_t a, int64_t day_end, int64_t b,
                    struct store_sum *out)
{
    struct store_sum_range r = {a, day_end, b};
    return store_usage_sums(st, meter_id, qty, &r, 1, out);
}

int store_readings_asc(store_t *st, const char *meter, int64_t from, int64_t to, int limit,
                       struct store_reading **out, int *n)
{
    struct conn *u = NULL;
    struct store_reading *v = NULL;
    sqlite3_stmt *s;
    int64_t mid = 0;
    int cnt = 0, rc;

    *out = NULL;
    *n = 0;
    if (limit <= 0 || from >= to)
        return -EINVAL;
    u = u_lock(st);
    s = u->stmt[UR_METER_ID];
    sqlite3_bind_text(s, 1, meter, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        mid = sqlite3_column_int64(s, 0);
    done(s);
    if (rc != SQLITE_ROW) {
        rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
        goto end;
    }
    if (!(v = calloc((size_t)limit, sizeof(*v)))) {
        rc = -ENOMEM;
        goto end;
    }
    s = u->stmt[UR_READINGS_ASC];
    sqlite3_bind_int64(s, 1, mid);
    sqlite3_bind_int64(s, 2, from);
    sqlite3_bind_int64(s, 3, to);
    sqlite3_bind_int(s, 4, limit);
    while (cnt < limit && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_reading *e = &v[cnt++];
        snprintf(e->r.meter, sizeof(e->r.meter), "%s", meter);
        e->r.ts_ms = sqlite3_column_int64(s, 0);
        e->r.seq = (uint64_t)sqlite3_column_int64(s, 1);
        e->r.ok = sqlite3_column_int(s, 2) != 0;
        e->r.unsynced = sqlite3_column_int(s, 3) != 0;
        copy_text(e->r.error, sizeof(e->r.error), sqlite3_column_text(s, 4));
        if (sqlite3_column_type(s, 5) == SQLITE_BLOB)
            vals_decode(st->qty_idx, sqlite3_column_blob(s, 5), (size_t)sqlite3_column_bytes(s, 5),
                        &e->r);
    }
    done(s);
    rc = cnt == limit || rc == SQLITE_DONE ? 0 : -EIO;
end:
    if (rc == -EIO)
        dberr(u->db, "read readings");
    pthread_mutex_unlock(&u->mu);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* Deletes with s the rows of (meter_id, each quantity) older than cut; adds the count. */
static int retire(store_t *st, sqlite3_stmt *s, int64_t meter_id, const int *qids, int nq,
                  int64_t cut, int64_t *count)
{
    int rc;

    for (int i = 0; i < nq; i++) {
        if ((rc = run_ints(st->w.db, s, (int64_t[]){meter_id, qids[i], cut}, 3, "retention")) < 0)
            return rc;
        *count += sqlite3_changes(st->w.db);
    }
    return 0;
}

int store_retention(store_t *st, int64_t now_ms, int raw_days, int m5_days, int hour_days,
                    int day_days, struct store_retention_result *res)
{
    struct store_usage *x = st->usage;
    int64_t *ids = NULL, *grown;
    int qids[QTY_DB_MAX], nq = 0, nids = 0, cap = 0, rc = 0;
    const int64_t day = 86400000;
    sqlite3_stmt *s;

    memset(res, 0, sizeof(*res));
    if (tl_group == st)
        return -EDEADLK; /* only store_put_batch and store_put_loss join a group */
    pthread_mutex_lock(&st->w.mu);
    s = x->w[UW_QTY_IDS];
    while ((rc = sqlite3_step(s)) == SQLITE_ROW && nq < QTY_DB_MAX)
        qids[nq++] = sqlite3_column_int(s, 0);
    done(s);
    s = x->w[UW_METER_IDS];
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (nids == cap) {
            cap = cap ? cap * 2 : 64;
            if (!(grown = realloc(ids, (size_t)cap * sizeof(*ids)))) {
                done(s);
                pthread_mutex_unlock(&st->w.mu);
                free(ids);
                return -ENOMEM;
            }
            ids = grown;
        }
        ids[nids++] = sqlite3_column_int64(s, 0);
    }
    done(s);
    pthread_mutex_unlock(&st->w.mu);
    rc = 0;
    /* Raw readings: a transaction per meter and day of readings, oldest first, so that a
     * first run over a long backlog never holds the write lock for long (ingest waits for
     * one meter-day's deletes at most). The other tiers: one transaction per meter. */
    for (int i = 0; i < nids && rc == 0 && raw_days > 0; i++) {
        int64_t cut = now_ms - raw_days * day, oldest = 0;
        pthread_mutex_lock(&st->w.mu);
        sqlite3_bind_int64(x->w[UW_OLDEST_RAW], 1, ids[i]);
        if (sqlite3_step(x->w[UW_OLDEST_RAW]) == SQLITE_ROW &&
            sqlite3_column_type(x->w[UW_OLDEST_RAW], 0) != SQLITE_NULL)
            oldest = sqlite3_column_int64(x->w[UW_OLDEST_RAW], 0);
        else
            oldest = cut;
        done(x->w[UW_OLDEST_RAW]);
        pthread_mutex_unlock(&st->w.mu);
        for (int64_t upto = oldest + day; rc == 0 && oldest < cut; upto += day) {
            int64_t to = upto < cut ? upto : cut;
            if ((rc = u_begin(st)) < 0)
                break;
            rc = run_ints(st->w.db, x->w[UW_RET_READINGS], (int64_t[]){ids[i], to}, 2, "retention");
            if (rc == 0)
                res->readings += sqlite3_changes(st->w.db);
            rc = u_end(st, rc);
            if (to == cut)
                break;
        }
    }
    for (int i = 0; i < nids && rc == 0; i++) {
        if ((rc = u_begin(st)) < 0)
            break;
        if (m5_days > 0)
            rc = retire(st, x->w[UW_RET_5M], ids[i], qids, nq, now_ms - m5_days * day, &res->rows);
        if (rc == 0 && hour_days > 0) {
            rc =
                retire(st, x->w[UW_RET_1H], ids[i], qids, nq, now_ms - hour_days * day, &res->rows);
            /* gaps go with the hourly tier: usage of older days comes from daily rows */
            if (rc == 0)
                rc = retire(st, x->w[UW_RET_GAPS], ids[i], qids, nq, now_ms - hour_days * day,
                            &res->rows);
        }
        if (rc == 0 && day_days > 0)
            rc = retire(st, x->w[UW_RET_1D], ids[i], qids, nq, now_ms - day_days * day, &res->rows);
        rc = u_end(st, rc);
    }
    free(ids);
    return rc;
}

/* ---- Maintenance mode, pending batches and backups ---------------------------------------
 *
 * Its own connection (adm->db, under adm->mu): the pending table is written while the
 * writer may be busy elsewhere, and SQLite's busy timeout orders the two. The maintenance
 * flag is a row of admin_state, so a restart keeps it. A backup reads through a connection
 * of its own, opened read-only for that backup, so no reader or writer waits for it longer
 * than one step. */

#define BACKUP_STEP_PAGES 256 /* pages copied per step; the writer may run in between */
#define BACKUP_BUSY_MAX 200   /* steps that may find the database busy before giving up */

struct store_admin {
    sqlite3 *db;
    pthread_mutex_t mu;
    char path[PATH_MAX];
};

static const char admin_schema[] =
    "CREATE TABLE IF NOT EXISTS admin_state(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS pending("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " gateway TEXT NOT NULL,"
    " payload BLOB NOT NULL,"
    " received_ms INTEGER NOT NULL);";

static int admin_open(store_t *st, const char *path, char *err, size_t errlen)
{
    struct store_admin *x;
    int rc;

    if (strlen(path) >= sizeof(x->path)) {
        snprintf(err, errlen, "store path too long");
        return -ENAMETOOLONG;
    }
    x = calloc(1, sizeof(*x));
    if (!x) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (pthread_mutex_init(&x->mu, NULL) != 0) {
        free(x);
        snprintf(err, errlen, "cannot create a mutex");
        return -ENOMEM;
    }
    snprintf(x->path, sizeof(x->path), "%s", path);
    st->adm = x;
    rc = sqlite3_open_v2(path, &x->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", x->db ? sqlite3_errmsg(x->db) : "out of memory");
        return -EIO;
    }
    sqlite3_extended_result_codes(x->db, 1);
    sqlite3_busy_timeout(x->db, BUSY_TIMEOUT_MS);
    return exec(x->db, admin_schema, err, errlen);
}

static void admin_close(store_t *st)
{
    struct store_admin *x = st->adm;

    if (!x)
        return;
    if (x->db)
        sqlite3_close(x->db);
    pthread_mutex_destroy(&x->mu);
    free(x);
    st->adm = NULL;
}

/* Prepares sql on the admin connection; caller holds adm->mu. */
static sqlite3_stmt *admin_prepare(store_t *st, const char *sql)
{
    sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(st->adm->db, sql, -1, &s, NULL) != SQLITE_OK) {
        dberr(st->adm->db, "prepare admin statement");
        return NULL;
    }
    return s;
}

int store_maint_get(store_t *st, bool *on)
{
    sqlite3_stmt *s;
    int rc = -EIO, step;

    *on = false;
    pthread_mutex_lock(&st->adm->mu);
    s = admin_prepare(st, "SELECT value FROM admin_state WHERE key='maintenance'");
    if (s) {
        step = sqlite3_step(s);
        if (step == SQLITE_ROW)
            *on = sqlite3_column_int64(s, 0) != 0;
        if (step == SQLITE_ROW || step == SQLITE_DONE)
            rc = 0;
        else
            dberr(st->adm->db, "read maintenance flag");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->adm->mu);
    return rc;
}

int store_maint_set(store_t *st, bool on)
{
    sqlite3_stmt *s;
    int rc = -EIO;

    pthread_mutex_lock(&st->adm->mu);
    s = admin_prepare(st, "INSERT INTO admin_state(key, value) VALUES('maintenance', ?1)"
                          " ON CONFLICT(key) DO UPDATE SET value=excluded.value");
    if (s) {
        sqlite3_bind_int(s, 1, on);
        rc = step_done(st->adm->db, s, "write maintenance flag");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->adm->mu);
    return rc;
}

int store_pending_add(store_t *st, const char *gw, const char *payload, size_t len, int64_t recv_ms)
{
    sqlite3_stmt *s;
    int rc = -EIO;

    if (len > STORE_PENDING_PAYLOAD_MAX)
        return -EINVAL;
    pthread_mutex_lock(&st->adm->mu);
    s = admin_prepare(st, "INSERT INTO pending(gateway, payload, received_ms) VALUES(?1, ?2, ?3)");
    if (s) {
        sqlite3_bind_text(s, 1, gw, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 2, len ? payload : "", (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, recv_ms);
        rc = step_done(st->adm->db, s, "insert pending batch");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->adm->mu);
    return rc;
}

int store_pending_first(store_t *st, struct store_pending *out)
{
    sqlite3_stmt *s;
    int rc = -EIO, step;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&st->adm->mu);
    s = admin_prepare(st, "SELECT id, gateway, payload, received_ms FROM pending"
                          " ORDER BY id LIMIT 1");
    if (!s)
        goto done;
    step = sqlite3_step(s);
    if (step == SQLITE_DONE) {
        rc = -ENOENT;
        goto done;
    }
    if (step != SQLITE_ROW) {
        dberr(st->adm->db, "read pending batch");
        goto done;
    }
    out->id = sqlite3_column_int64(s, 0);
    copy_text(out->gateway, sizeof(out->gateway), sqlite3_column_text(s, 1));
    out->len = (size_t)sqlite3_column_bytes(s, 2);
    out->payload = malloc(out->len + 1);
    if (!out->payload) {
        rc = -ENOMEM;
        goto done;
    }
    if (out->len)
        memcpy(out->payload, sqlite3_column_blob(s, 2), out->len);
    out->payload[out->len] = '\0';
    out->received_ms = sqlite3_column_int64(s, 3);
    rc = 0;
done:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->adm->mu);
    return rc;
}

int store_pending_delete(store_t *st, int64_t id)
{
    sqlite3_stmt *s;
    int rc = -EIO;

    pthread_mutex_lock(&st->adm->mu);
    s = admin_prepare(st, "DELETE FROM pending WHERE id=?1");
    if (s) {
        sqlite3_bind_int64(s, 1, id);
        rc = step_done(st->adm->db, s, "delete pending batch");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->adm->mu);
    return rc;
}

int store_pending_count(store_t *st, int64_t *n)
{
    sqlite3_stmt *s;
    int rc = -EIO;

    *n = 0;
    pthread_mutex_lock(&st->adm->mu);
    s = admin_prepare(st, "SELECT count(*) FROM pending");
    if (s && sqlite3_step(s) == SQLITE_ROW) {
        *n = sqlite3_column_int64(s, 0);
        rc = 0;
    } else if (s) {
        dberr(st->adm->db, "count pending batches");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->adm->mu);
    return rc;
}

int store_backup(store_t *st, const char *dst_path)
{
    sqlite3 *src = NULL, *dst = NULL;
    sqlite3_backup *b = NULL;
    int rc = -EIO, step, busy = 0;

    if (sqlite3_open_v2(st->adm->path, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        log_warnx("store: backup: cannot open %s", st->adm->path);
        goto done;
    }
    sqlite3_busy_timeout(src, BUSY_TIMEOUT_MS);
    if (sqlite3_open_v2(dst_path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        log_warnx("store: backup: cannot open %s", dst_path);
        goto done;
    }
    b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b) {
        dberr(dst, "backup init");
        goto done;
    }
    for (;;) {
        step = sqlite3_backup_step(b, BACKUP_STEP_PAGES);
        if (step == SQLITE_DONE)
            break;
        if (step == SQLITE_OK)
            continue;
        if ((step == SQLITE_BUSY || step == SQLITE_LOCKED) && ++busy < BACKUP_BUSY_MAX) {
            sqlite3_sleep(25);
            continue;
        }
        log_warnx("store: backup step: %s", sqlite3_errstr(step));
        goto done;
    }
    if (sqlite3_backup_finish(b) != SQLITE_OK) {
        b = NULL;
        dberr(dst, "backup finish");
        goto done;
    }
    b = NULL;
    /* a single file, without -wal and -shm, is what a download and a restore want */
    {
        char e[200];
        if (exec(dst, "PRAGMA journal_mode=DELETE", e, sizeof(e)) < 0) {
            log_warnx("store: backup: %s", e);
            goto done;
        }
    }
    rc = 0;
done:
    if (b)
        sqlite3_backup_finish(b);
    if (dst && sqlite3_close(dst) != SQLITE_OK)
        rc = -EIO;
    if (src)
        sqlite3_close(src);
    return rc;
}
