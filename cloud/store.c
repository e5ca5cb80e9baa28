/*
 * store: the SQLite backend of store.h. All of meter-cloud's SQL lives in this file.
 *
 * Layout (schema version 1, PRAGMA user_version):
 *   gateways(id, name, status, status_ts, last_seen)
 *   streams(id, gateway_id, name, first_seen)       one row per (gateway, stream id)
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
                                " last_seen INTEGER);" /* cloud clock of its last readings batch */
                                "CREATE TABLE streams("
                                " id INTEGER PRIMARY KEY,"
                                " gateway_id INTEGER NOT NULL REFERENCES gateways(id),"
                                " name TEXT NOT NULL,"
                                " first_seen INTEGER NOT NULL,"
                                " UNIQUE(gateway_id, name));"
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
    W_STREAM,
    W_METER,
    W_READING,
    W_SAMPLE,
    W_STATUS,
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
    [W_STREAM] = "INSERT INTO streams(gateway_id, name, first_seen) VALUES(?1, ?2, ?3)"
                 " ON CONFLICT(gateway_id, name) DO UPDATE SET name = excluded.name"
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
};

/* Reader statements. */
enum { R_PING, R_METER_ID, R_METERS, R_READINGS, R_SAMPLES, R_COUNT };

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
    if ((rc = exec(db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; BEGIN IMMEDIATE", err,
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

int store_put_batch(store_t *st, const char *gw, const char *stream, const struct reading *r, int n,
                    int64_t recv_ms, struct store_put_result *res)
{
    sqlite3 *db = st->w.db;
    sqlite3_stmt **w = st->w.stmt;
    struct by_meter *idx = NULL;
    int64_t gw_id, stream_id;
    bool begun = false;
    int rc = 0;

    res->inserted = res->duplicates = 0;
    if (n < 0 || (n > 0 && !r))
        return -EINVAL;
    if (n == 0)
        return 0;
    idx = calloc((size_t)n, sizeof(*idx));
    if (!idx)
        return -ENOMEM;
    for (int i = 0; i < n; i++)
        idx[i].r = &r[i];
    qsort(idx, (size_t)n, sizeof(*idx), cmp_meter);

    pthread_mutex_lock(&st->w.mu);
    if ((rc = step_done(db, w[W_BEGIN], "begin")) < 0)
        goto end;
    begun = true;
    sqlite3_bind_text(w[W_GATEWAY], 1, gw, -1, SQLITE_STATIC);
    sqlite3_bind_int64(w[W_GATEWAY], 2, recv_ms);
    if ((rc = step_id(db, w[W_GATEWAY], "upsert gateway", &gw_id)) < 0)
        goto end;
    sqlite3_bind_int64(w[W_STREAM], 1, gw_id);
    sqlite3_bind_text(w[W_STREAM], 2, stream, -1, SQLITE_STATIC);
    sqlite3_bind_int64(w[W_STREAM], 3, recv_ms);
    if ((rc = step_id(db, w[W_STREAM], "upsert stream", &stream_id)) < 0)
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
            bool dup;
            idx[i].meter_id = meter_id;
            if ((rc = put_reading(st, &idx[i], gw_id, stream_id, recv_ms, &dup)) < 0)
                goto end;
            if (dup)
                res->duplicates++;
            else
                res->inserted++;
        }
    }
    if ((rc = step_done(db, w[W_COMMIT], "commit")) < 0)
        goto end;
    begun = false;
end:
    if (begun) {
        step_done(db, w[W_ROLLBACK], "rollback");
        res->inserted = res->duplicates = 0;
    }
    pthread_mutex_unlock(&st->w.mu);
    free(idx);
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

int store_ping(store_t *st)
{
    int rc;
    pthread_mutex_lock(&st->r.mu);
    rc = step_done(st->r.db, st->r.stmt[R_PING], "ping");
    pthread_mutex_unlock(&st->r.mu);
    return rc;
}

static void copy_text(char *dst, size_t len, const unsigned char *src)
{
    snprintf(dst, len, "%s", src ? (const char *)src : "");
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
