/*
 * queue: see queue.h.
 *
 * Schema: meta(key, value) holds the stream id and the next seq; q(seq, ts, body) holds
 * the readings. next_seq is written in the same transaction as the readings that used it,
 * so a crash can never hand out a seq twice.
 */
#include "queue.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct queue {
    pthread_mutex_t mu;
    sqlite3 *db;
    sqlite3_stmt *ins, *upd_seq, *fetch, *del, *count, *oldest, *drop;
    char stream[WIRE_STREAM_MAX];
    uint64_t next_seq;
    long max_rows;
    long depth;
    uint64_t dropped, commits;
};

static int db_err(queue_t *q, const char *what)
{
    int code = sqlite3_errcode(q->db);
    log_warnx("queue: %s: %s", what, sqlite3_errmsg(q->db));
    if (code == SQLITE_FULL)
        return -ENOSPC;
    if (code == SQLITE_READONLY)
        return -EROFS;
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
        return -EILSEQ;
    return -EIO;
}

static int exec(queue_t *q, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(q->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        log_warnx("queue: %s: %s", sql, msg ? msg : "error");
        sqlite3_free(msg);
        return db_err(q, "exec");
    }
    return 0;
}

static int make_stream_id(char *out)
{
    unsigned char raw[8];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return -errno;
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

static int load_meta(queue_t *q)
{
    sqlite3_stmt *st = NULL;
    int rc, have_stream = 0;

    if (sqlite3_prepare_v2(q->db, "SELECT key, value FROM meta", -1, &st, NULL) != SQLITE_OK)
        return db_err(q, "read meta");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        const char *v = (const char *)sqlite3_column_text(st, 1);
        if (!k || !v)
            continue;
        if (strcmp(k, "stream") == 0 && wire_stream_valid(v)) {
            snprintf(q->stream, sizeof(q->stream), "%s", v);
            have_stream = 1;
        } else if (strcmp(k, "next_seq") == 0) {
            q->next_seq = strtoull(v, NULL, 10);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_err(q, "read meta");
    if (!have_stream) {
        char sql[160];
        if ((rc = make_stream_id(q->stream)) < 0)
            return rc;
        q->next_seq = 1;
        snprintf(sql, sizeof(sql),
                 "INSERT OR REPLACE INTO meta VALUES ('stream','%s'),('next_seq','1')", q->stream);
        if ((rc = exec(q, sql)) < 0)
            return rc;
        log_info("queue: new stream %s", q->stream);
    }
    if (q->next_seq == 0)
        q->next_seq = 1;
    return 0;
}

static int prepare(queue_t *q, sqlite3_stmt **st, const char *sql)
{
    if (sqlite3_prepare_v3(q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
        return db_err(q, sql);
    return 0;
}

int queue_open(const char *path, long max_rows, queue_t **out)
{
    queue_t *q = calloc(1, sizeof(*q));
    sqlite3_stmt *st = NULL;
    int rc;

    if (!q)
        return -ENOMEM;
    pthread_mutex_init(&q->mu, NULL);
    q->max_rows = max_rows;
    if (sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = db_err(q, path);
        goto fail;
    }
    sqlite3_busy_timeout(q->db, 5000);
    if ((rc = exec(q, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                      "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
                      "CREATE TABLE IF NOT EXISTS q(seq INTEGER PRIMARY KEY, ts INTEGER NOT "
                      "NULL, body TEXT NOT NULL);")) < 0)
        goto fail;
    if ((rc = load_meta(q)) < 0)
        goto fail;
    if ((rc = prepare(q, &q->ins, "INSERT INTO q(seq, ts, body) VALUES (?,?,?)")) < 0 ||
        (rc = prepare(q, &q->upd_seq, "UPDATE meta SET value=? WHERE key='next_seq'")) < 0 ||
        (rc = prepare(q, &q->fetch, "SELECT seq, body FROM q WHERE seq > ? ORDER BY seq LIMIT ?")) <
            0 ||
        (rc = prepare(q, &q->del, "DELETE FROM q WHERE seq BETWEEN ? AND ?")) < 0 ||
        (rc = prepare(q, &q->count, "SELECT count(*) FROM q")) < 0 ||
        (rc = prepare(q, &q->oldest, "SELECT ts FROM q ORDER BY seq LIMIT 1")) < 0 ||
        (rc = prepare(q, &q->drop,
                      "DELETE FROM q WHERE seq IN (SELECT seq FROM q ORDER BY seq LIMIT ?)")) < 0)
        goto fail;
    st = q->count;
    if (sqlite3_step(st) == SQLITE_ROW)
        q->depth = (long)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    log_info("queue: %s: stream %s, %ld readings queued, next seq %llu", path, q->stream,
             q->depth, (unsigned long long)q->next_seq);
    *out = q;
    return 0;
fail:
    queue_close(q);
    return rc;
}

void queue_close(queue_t *q)
{
    if (!q)
        return;
    sqlite3_finalize(q->ins);
    sqlite3_finalize(q->upd_seq);
    sqlite3_finalize(q->fetch);
    sqlite3_finalize(q->del);
    sqlite3_finalize(q->count);
    sqlite3_finalize(q->oldest);
    sqlite3_finalize(q->drop);
    sqlite3_close(q->db);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

const char *queue_stream(const queue_t *q)
{
    return q->stream;
}

int queue_append(queue_t *q, struct reading *r, int n)
{
    char body[WIRE_READING_MAX], seqtxt[24];
    uint64_t seq;
    int rc = 0, dropped = 0;

    pthread_mutex_lock(&q->mu);
    seq = q->next_seq;
    if ((rc = exec(q, "BEGIN IMMEDIATE")) < 0)
        goto out;
    for (int i = 0; i < n; i++) {
        int len;
        r[i].seq = seq;
        len = wire_encode_reading(&r[i], body, sizeof(body));
        if (len < 0) {
            rc = len;
            goto rollback;
        }
        sqlite3_bind_int64(q->ins, 1, (sqlite3_int64)seq);
        sqlite3_bind_int64(q->ins, 2, r[i].ts_ms);
        sqlite3_bind_text(q->ins, 3, body, len, SQLITE_STATIC);
        if (sqlite3_step(q->ins) != SQLITE_DONE) {
            rc = db_err(q, "append");
            sqlite3_reset(q->ins);
            goto rollback;
        }
        sqlite3_reset(q->ins);
        seq++;
    }
    snprintf(seqtxt, sizeof(seqtxt), "%llu", (unsigned long long)seq);
    sqlite3_bind_text(q->upd_seq, 1, seqtxt, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q->upd_seq) != SQLITE_DONE) {
        rc = db_err(q, "append");
        sqlite3_reset(q->upd_seq);
        goto rollback;
    }
    sqlite3_reset(q->upd_seq);
    if (q->depth + n > q->max_rows) {
        long excess = q->depth + n - q->max_rows;
        sqlite3_bind_int64(q->drop, 1, excess);
        if (sqlite3_step(q->drop) != SQLITE_DONE) {
            rc = db_err(q, "drop oldest");
            sqlite3_reset(q->drop);
            goto rollback;
        }
        sqlite3_reset(q->drop);
        dropped = sqlite3_changes(q->db);
    }
    if ((rc = exec(q, "COMMIT")) < 0)
        goto rollback;
    if (dropped > 0) {
        q->dropped += (uint64_t)dropped;
        q->depth -= dropped;
        log_warnx("queue: full (%ld readings): dropped the oldest %d", q->max_rows, dropped);
    }
    q->next_seq = seq;
    q->depth += n;
    q->commits++;
    goto out;
rollback:
    exec(q, "ROLLBACK");
out:
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int queue_fetch(queue_t *q, const char *gw, uint64_t after, int max, struct qbatch *b)
{
    size_t cap = 4096, pos = 0;
    char *buf = NULL;
    int rc, n = 0;

    memset(b, 0, sizeof(*b));
    pthread_mutex_lock(&q->mu);
    buf = malloc(cap);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    pos = (size_t)snprintf(buf, cap, "{\"v\":%d,\"gw\":\"%s\",\"stream\":\"%s\",\"readings\":[",
                           WIRE_VERSION, gw, q->stream);
    sqlite3_bind_int64(q->fetch, 1, (sqlite3_int64)after);
    sqlite3_bind_int(q->fetch, 2, max);
    while ((rc = sqlite3_step(q->fetch)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(q->fetch, 0);
        const char *body = (const char *)sqlite3_column_text(q->fetch, 1);
        size_t len = (size_t)sqlite3_column_bytes(q->fetch, 1);
        if (!body)
            continue;
        if (pos + len + 8 > cap) {
            size_t ncap = (pos + len + 8) * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                rc = -ENOMEM;
                sqlite3_reset(q->fetch);
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        if (n > 0)
            buf[pos++] = ',';
        memcpy(buf + pos, body, len);
        pos += len;
        if (n == 0)
            b->first_seq = seq;
        b->last_seq = seq;
        n++;
    }
    sqlite3_reset(q->fetch);
    if (rc != SQLITE_DONE) {
        rc = db_err(q, "fetch");
        goto out;
    }
    if (n == 0) {
        rc = 0;
        goto out;
    }
    memcpy(buf + pos, "]}", 3);
    pos += 2;
    b->payload = buf;
    b->len = pos;
    b->count = n;
    buf = NULL;
    rc = 1;
out:
    pthread_mutex_unlock(&q->mu);
    free(buf);
    return rc;
}

int queue_delete_range(queue_t *q, uint64_t first, uint64_t last)
{
    int rc = 0;

    pthread_mutex_lock(&q->mu);
    sqlite3_bind_int64(q->del, 1, (sqlite3_int64)first);
    sqlite3_bind_int64(q->del, 2, (sqlite3_int64)last);
    if (sqlite3_step(q->del) != SQLITE_DONE)
        rc = db_err(q, "delete");
    else {
        q->depth -= sqlite3_changes(q->db);
        q->commits++;
    }
    sqlite3_reset(q->del);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void queue_get_stats(queue_t *q, struct queue_stats *st)
{
    pthread_mutex_lock(&q->mu);
    st->depth = q->depth;
    st->next_seq = q->next_seq;
    st->dropped = q->dropped;
    st->commits = q->commits;
    st->oldest_ts = 0;
    if (sqlite3_step(q->oldest) == SQLITE_ROW)
        st->oldest_ts = sqlite3_column_int64(q->oldest, 0);
    sqlite3_reset(q->oldest);
    pthread_mutex_unlock(&q->mu);
}
