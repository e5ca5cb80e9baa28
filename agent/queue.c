/*
 * queue: see queue.h.
 *
 * Schema: meta(key, value) holds the stream id and the next seq; q(seq, ts, body) the
 * readings; loss(stream, first, last, count, reason, ts) the loss records. next_seq is
 * written in the same transaction as the readings that used it, so a crash can never hand
 * out a seq twice for readings that reached the file.
 *
 * Memory tier: a FIFO of encoded readings (mem[mem_head .. mem_head + mem_n)), always
 * newer than anything in the file. flush_locked() moves its oldest rows into the file in
 * one transaction, together with the meta update, the bounds and the loss records.
 */
#include "queue.h"
#include "log.h"
#include "timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define LOSS_MAX 256 /* loss records kept; adjacent ones of one cause merge */

struct mrow {
    uint64_t seq;
    int64_t ts;
    char *body;
    int len;
};

enum {
    S_INS,
    S_META_SEQ,
    S_FETCH,
    S_FETCH_UNTIL,
    S_ACK,
    S_COUNT,
    S_OLDEST,
    S_DROP_INFO,
    S_DROP,
    S_AGE_INFO,
    S_AGE_DROP,
    S_LOSS_CLEAR,
    S_LOSS_INS,
    S_N
};

static const char *const sql_text[S_N] = {
    [S_INS] = "INSERT INTO q(seq, ts, body) VALUES (?1, ?2, ?3)",
    [S_META_SEQ] = "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?1)",
    [S_FETCH] = "SELECT seq, body FROM q WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    [S_FETCH_UNTIL] = "SELECT seq, body FROM q WHERE seq > ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2",
    [S_ACK] = "DELETE FROM q WHERE seq <= ?1",
    [S_COUNT] = "SELECT count(*) FROM q",
    [S_OLDEST] = "SELECT seq, ts FROM q ORDER BY seq LIMIT 1",
    [S_DROP_INFO] = "SELECT min(seq), max(seq), count(*) FROM"
                    " (SELECT seq FROM q ORDER BY seq LIMIT ?1)",
    [S_DROP] = "DELETE FROM q WHERE seq IN (SELECT seq FROM q ORDER BY seq LIMIT ?1)",
    [S_AGE_INFO] = "SELECT min(seq), max(seq), count(*) FROM q WHERE ts < ?1",
    [S_AGE_DROP] = "DELETE FROM q WHERE ts < ?1",
    [S_LOSS_CLEAR] = "DELETE FROM loss",
    [S_LOSS_INS] = "INSERT INTO loss(stream, first, last, count, reason, ts)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
};

/* Loss records as they were before a transaction, to restore when it rolls back. */
struct loss_snap {
    struct qloss loss[LOSS_MAX];
    int nloss, dirty;
    uint64_t dropped;
};

struct queue {
    pthread_mutex_t mu;
    char path[512];
    struct queue_opts o;
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    char stream[WIRE_STREAM_MAX];
    uint64_t next_seq;
    long db_depth;
    struct mrow *mem;
    long mem_head, mem_n, mem_cap;
    struct qloss loss[LOSS_MAX];
    int nloss;
    int loss_dirty; /* loss[] differs from the file */
    int disk_ok;
    int64_t last_disk_warn;
    uint64_t dropped, commits;
    struct loss_snap snap; /* scratch for rollbacks, used under mu */
};

static int flush_locked(queue_t *q, long n);

static void snap_take(const queue_t *q, struct loss_snap *s)
{
    memcpy(s->loss, q->loss, sizeof(s->loss[0]) * (size_t)q->nloss);
    s->nloss = q->nloss;
    s->dirty = q->loss_dirty;
    s->dropped = q->dropped;
}

static void snap_restore(queue_t *q, const struct loss_snap *s)
{
    memcpy(q->loss, s->loss, sizeof(s->loss[0]) * (size_t)s->nloss);
    q->nloss = s->nloss;
    q->loss_dirty = s->dirty;
    q->dropped = s->dropped;
}

void queue_default_opts(struct queue_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_rows = 1000000;
    o->mem_max = 20000;
    o->spill_ms = 10000;
    o->spill_rows = 2000;
}

static int code_to_errno(int code)
{
    switch (code & 0xff) {
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
        return -EROFS;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return -EILSEQ;
    case SQLITE_NOMEM:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static int db_err(queue_t *q, const char *what)
{
    int code = sqlite3_extended_errcode(q->db);
    int64_t now = mono_ms();
    /* a failing disk fails every write: say so once a minute, not every second */
    if (now - q->last_disk_warn > 60000 || q->disk_ok) {
        log_warnx("queue: %s: %s", what, sqlite3_errmsg(q->db));
        q->last_disk_warn = now;
    }
    return code_to_errno(code);
}

static int exec(queue_t *q, const char *sql)
{
    if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_err(q, sql);
    return 0;
}

static int step(queue_t *q, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return db_err(q, what);
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

/* ---- loss records -------------------------------------------------------------------- */

static void add_loss_locked(queue_t *q, const struct qloss *l)
{
    struct qloss *last = q->nloss ? &q->loss[q->nloss - 1] : NULL;

    if (last && strcmp(last->stream, l->stream) == 0 && strcmp(last->reason, l->reason) == 0 &&
        l->first == last->last + 1) {
        last->last = l->last;
        last->count += l->count;
        last->ts_ms = l->ts_ms;
        q->loss_dirty = 1;
        q->dropped += l->count;
        /* one warning per loss record, not one per reading dropped */
        log_debug("queue: lost seq %llu..%llu too (%s)", (unsigned long long)l->first,
                  (unsigned long long)l->last, l->reason);
        return;
    } else {
        if (q->nloss == LOSS_MAX) {
            /* keep the newest: merge the two oldest of one stream, else drop the oldest */
            memmove(&q->loss[0], &q->loss[1], sizeof(q->loss[0]) * (LOSS_MAX - 1));
            q->nloss--;
            log_warnx("queue: more than %d loss records; the oldest was forgotten", LOSS_MAX);
        }
        q->loss[q->nloss++] = *l;
    }
    q->loss_dirty = 1;
    q->dropped += l->count;
    if (l->count)
        log_warnx("queue: lost %llu readings of stream %s, seq %llu..%llu (%s)",
                  (unsigned long long)l->count, l->stream, (unsigned long long)l->first,
                  (unsigned long long)l->last, l->reason);
    else
        log_warnx("queue: lost what was undelivered of stream %s, seq %llu..%llu (%s)",
                  l->stream, (unsigned long long)l->first, (unsigned long long)l->last,
                  l->reason);
}

static void note_loss(queue_t *q, uint64_t first, uint64_t last, uint64_t count,
                      const char *reason)
{
    struct qloss l;
    memset(&l, 0, sizeof(l));
    snprintf(l.stream, sizeof(l.stream), "%s", q->stream);
    l.first = first;
    l.last = last;
    l.count = count;
    snprintf(l.reason, sizeof(l.reason), "%s", reason);
    l.ts_ms = now_ms();
    add_loss_locked(q, &l);
}

static int save_losses(queue_t *q)
{
    int rc;
    if (!q->loss_dirty)
        return 0;
    if ((rc = step(q, q->st[S_LOSS_CLEAR], "save losses")) < 0)
        return rc;
    for (int i = 0; i < q->nloss; i++) {
        sqlite3_stmt *s = q->st[S_LOSS_INS];
        sqlite3_bind_text(s, 1, q->loss[i].stream, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)q->loss[i].first);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)q->loss[i].last);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)q->loss[i].count);
        sqlite3_bind_text(s, 5, q->loss[i].reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 6, q->loss[i].ts_ms);
        if ((rc = step(q, s, "save losses")) < 0)
            return rc;
    }
    return 0;
}

/* ---- opening ------------------------------------------------------------------------- */

static int load_meta(queue_t *q)
{
    sqlite3_stmt *s = NULL;
    int rc, have_stream = 0;

    if (sqlite3_prepare_v2(q->db, "SELECT key, value FROM meta", -1, &s, NULL) != SQLITE_OK)
        return db_err(q, "read meta");
    q->next_seq = 1;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(s, 0);
        const char *v = (const char *)sqlite3_column_text(s, 1);
        if (!k || !v)
            continue;
        if (strcmp(k, "stream") == 0 && wire_stream_valid(v)) {
            snprintf(q->stream, sizeof(q->stream), "%s", v);
            have_stream = 1;
        } else if (strcmp(k, "next_seq") == 0) {
            q->next_seq = strtoull(v, NULL, 10);
        }
    }
    sqlite3_finalize(s);
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

static int load_losses(queue_t *q)
{
    sqlite3_stmt *s = NULL;
    int rc;

    if (sqlite3_prepare_v2(q->db,
                           "SELECT stream, first, last, count, reason, ts FROM loss ORDER BY rowid",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(q, "read losses");
    while ((rc = sqlite3_step(s)) == SQLITE_ROW && q->nloss < LOSS_MAX) {
        struct qloss *l = &q->loss[q->nloss];
        const char *stream = (const char *)sqlite3_column_text(s, 0);
        const char *reason = (const char *)sqlite3_column_text(s, 4);
        if (!stream || !reason || !wire_stream_valid(stream))
            continue;
        memset(l, 0, sizeof(*l));
        snprintf(l->stream, sizeof(l->stream), "%s", stream);
        l->first = (uint64_t)sqlite3_column_int64(s, 1);
        l->last = (uint64_t)sqlite3_column_int64(s, 2);
        l->count = (uint64_t)sqlite3_column_int64(s, 3);
        snprintf(l->reason, sizeof(l->reason), "%s", reason);
        l->ts_ms = sqlite3_column_int64(s, 5);
        q->nloss++;
    }
    sqlite3_finalize(s);
    return 0;
}

static void close_db(queue_t *q)
{
    for (int i = 0; i < S_N; i++) {
        sqlite3_finalize(q->st[i]);
        q->st[i] = NULL;
    }
    sqlite3_close(q->db);
    q->db = NULL;
}

/* Opens the file and checks it. Returns 0, -EILSEQ for a corrupt file, or another error. */
static int open_db(queue_t *q)
{
    sqlite3_stmt *s = NULL;
    int rc;

    if (sqlite3_open_v2(q->path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = q->db ? db_err(q, q->path) : -ENOMEM;
        goto fail;
    }
    sqlite3_extended_result_codes(q->db, 1);
    sqlite3_busy_timeout(q->db, 5000);
    /* durable: FULL syncs the WAL on every commit, so a power loss keeps every commit;
     * memory-first accepts a bounded window anyway, NORMAL syncs only at checkpoints. */
    if ((rc = exec(q, q->o.memory_first ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"
                                        : "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")) <
        0)
        goto fail;
    if (sqlite3_prepare_v2(q->db, "PRAGMA quick_check(1)", -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW) {
        rc = db_err(q, "integrity check");
        goto fail;
    }
    if (strcmp((const char *)sqlite3_column_text(s, 0), "ok") != 0) {
        log_warnx("queue: %s: integrity check: %s", q->path,
                  (const char *)sqlite3_column_text(s, 0));
        rc = -EILSEQ;
        goto fail;
    }
    sqlite3_finalize(s);
    s = NULL;
    if ((rc = exec(q, "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
                      "CREATE TABLE IF NOT EXISTS q(seq INTEGER PRIMARY KEY, ts INTEGER NOT "
                      "NULL, body TEXT NOT NULL);"
                      "CREATE TABLE IF NOT EXISTS loss(stream TEXT NOT NULL, first INTEGER NOT "
                      "NULL, last INTEGER NOT NULL, count INTEGER NOT NULL, reason TEXT NOT "
                      "NULL, ts INTEGER NOT NULL);")) < 0)
        goto fail;
    if ((rc = load_meta(q)) < 0 || (rc = load_losses(q)) < 0)
        goto fail;
    for (int i = 0; i < S_N; i++)
        if (sqlite3_prepare_v3(q->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &q->st[i],
                               NULL) != SQLITE_OK) {
            rc = db_err(q, sql_text[i]);
            goto fail;
        }
    s = q->st[S_COUNT];
    if (sqlite3_step(s) == SQLITE_ROW)
        q->db_depth = (long)sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return 0;
fail:
    sqlite3_finalize(s);
    close_db(q);
    return rc;
}

/* Moves a corrupt file (and its WAL) aside and starts a new stream in a new file. The old
 * stream's readings not yet delivered are reported as lost; readings still in memory are
 * renumbered into the new stream, so they are not lost. */
static int recover_corrupt(queue_t *q)
{
    char aside[600], from[600], to[620];
    char old_stream[WIRE_STREAM_MAX];
    uint64_t old_next = q->next_seq, first_mem = q->mem_n ? q->mem[q->mem_head].seq : 0;
    int rc;

    snprintf(old_stream, sizeof(old_stream), "%s", q->stream);
    close_db(q);
    snprintf(aside, sizeof(aside), "%s.corrupt-%lld", q->path, (long long)now_ms());
    if (rename(q->path, aside) < 0 && errno != ENOENT)
        log_warn("queue: cannot move %s aside", q->path);
    for (int i = 0; i < 2; i++) {
        const char *suffix = i == 0 ? "-wal" : "-shm";
        snprintf(from, sizeof(from), "%s%s", q->path, suffix);
        snprintf(to, sizeof(to), "%s%s", aside, suffix);
        if (rename(from, to) < 0 && errno != ENOENT)
            unlink(from);
    }
    log_warnx("queue: %s was corrupt; moved aside to %s, starting a new stream", q->path, aside);
    q->stream[0] = '\0';
    q->db_depth = 0;
    if ((rc = open_db(q)) < 0)
        return rc;
    if (old_stream[0]) {
        uint64_t last = (first_mem ? first_mem : old_next) - 1;
        if (last >= 1) {
            struct qloss l;
            memset(&l, 0, sizeof(l));
            snprintf(l.stream, sizeof(l.stream), "%s", old_stream);
            l.first = 1;
            l.last = last;
            l.count = 0; /* unknown: everything of 1..last the cloud does not have */
            snprintf(l.reason, sizeof(l.reason), "queue_corrupt");
            l.ts_ms = now_ms();
            add_loss_locked(q, &l);
        }
    }
    /* renumber what is still in memory into the new stream */
    for (long i = 0; i < q->mem_n; i++) {
        struct mrow *m = &q->mem[q->mem_head + i];
        const char *rest = strchr(m->body, ',');
        char *nb;
        int n;
        if (!rest)
            continue;
        m->seq = q->next_seq++;
        n = snprintf(NULL, 0, "{\"seq\":%llu%s", (unsigned long long)m->seq, rest);
        nb = malloc((size_t)n + 1);
        if (!nb)
            continue;
        snprintf(nb, (size_t)n + 1, "{\"seq\":%llu%s", (unsigned long long)m->seq, rest);
        free(m->body);
        m->body = nb;
        m->len = n;
    }
    return 0;
}

/* Best effort: the stream id and next seq of a file that failed its check, so its loss can
 * be reported. Leaves q->stream empty when even that cannot be read. */
static void read_old_meta(queue_t *q)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;

    q->stream[0] = '\0';
    q->next_seq = 1;
    if (sqlite3_open_v2(q->path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT key, value FROM meta", -1, &s, NULL) == SQLITE_OK) {
        while (sqlite3_step(s) == SQLITE_ROW) {
            const char *k = (const char *)sqlite3_column_text(s, 0);
            const char *v = (const char *)sqlite3_column_text(s, 1);
            if (!k || !v)
                continue;
            if (strcmp(k, "stream") == 0 && wire_stream_valid(v))
                snprintf(q->stream, sizeof(q->stream), "%s", v);
            else if (strcmp(k, "next_seq") == 0)
                q->next_seq = strtoull(v, NULL, 10);
        }
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    if (!q->stream[0])
        log_warnx("queue: %s: not even the stream id is readable; its undelivered readings "
                  "stay an open gap in the cloud", q->path);
}

int queue_open(const char *path, const struct queue_opts *o, queue_t **out)
{
    queue_t *q = calloc(1, sizeof(*q));
    int rc;

    if (!q)
        return -ENOMEM;
    pthread_mutex_init(&q->mu, NULL);
    snprintf(q->path, sizeof(q->path), "%s", path);
    q->o = *o;
    if (q->o.mem_max < 1)
        q->o.mem_max = 1;
    q->disk_ok = 1;
    rc = open_db(q);
    if (rc == -EILSEQ) {
        read_old_meta(q);
        rc = recover_corrupt(q);
    }
    if (rc < 0) {
        log_warnx("queue: cannot open %s", path);
        queue_close(q);
        return rc;
    }
    log_info("queue: %s: stream %s, %ld readings queued, next seq %llu, %s", path, q->stream,
             q->db_depth, (unsigned long long)q->next_seq,
             q->o.memory_first ? "memory-first" : "durable");
    *out = q;
    return 0;
}

void queue_close(queue_t *q)
{
    if (!q)
        return;
    if (q->db && (q->mem_n > 0 || q->loss_dirty)) {
        /* a clean stop writes what waits in memory */
        pthread_mutex_lock(&q->mu);
        flush_locked(q, q->mem_n);
        pthread_mutex_unlock(&q->mu);
    }
    close_db(q);
    for (long i = 0; i < q->mem_n; i++)
        free(q->mem[q->mem_head + i].body);
    free(q->mem);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

const char *queue_stream(const queue_t *q)
{
    return q->stream;
}

/* ---- memory tier --------------------------------------------------------------------- */

static void mem_pop(queue_t *q, long n)
{
    for (long i = 0; i < n; i++)
        free(q->mem[q->mem_head + i].body);
    q->mem_head += n;
    q->mem_n -= n;
    if (q->mem_n == 0)
        q->mem_head = 0;
}

static int mem_push(queue_t *q, uint64_t seq, int64_t ts, const char *body, int len)
{
    struct mrow *m;

    if (q->mem_head + q->mem_n == q->mem_cap) {
        if (q->mem_head > 0) {
            memmove(q->mem, q->mem + q->mem_head, sizeof(*q->mem) * (size_t)q->mem_n);
            q->mem_head = 0;
        } else {
            long ncap = q->mem_cap ? q->mem_cap * 2 : 256;
            struct mrow *nm = realloc(q->mem, sizeof(*nm) * (size_t)ncap);
            if (!nm)
                return -ENOMEM;
            q->mem = nm;
            q->mem_cap = ncap;
        }
    }
    m = &q->mem[q->mem_head + q->mem_n];
    m->body = malloc((size_t)len + 1);
    if (!m->body)
        return -ENOMEM;
    memcpy(m->body, body, (size_t)len + 1);
    m->len = len;
    m->seq = seq;
    m->ts = ts;
    q->mem_n++;
    return 0;
}

/* Beyond mem_max, the oldest in memory are dropped as a disk_error loss. */
static void mem_bound(queue_t *q)
{
    long excess = q->mem_n - q->o.mem_max;
    if (excess <= 0)
        return;
    note_loss(q, q->mem[q->mem_head].seq, q->mem[q->mem_head + excess - 1].seq,
              (uint64_t)excess, "disk_error");
    mem_pop(q, excess);
}

/* ---- writing ------------------------------------------------------------------------- */

static int64_t bytes_in_use(queue_t *q)
{
    sqlite3_stmt *s = NULL;
    int64_t pages = 0, freel = 0, psize = 0;

    if (sqlite3_prepare_v2(q->db, "SELECT * FROM pragma_page_count, pragma_freelist_count,"
                                  " pragma_page_size", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        pages = sqlite3_column_int64(s, 0);
        freel = sqlite3_column_int64(s, 1);
        psize = sqlite3_column_int64(s, 2);
    }
    sqlite3_finalize(s);
    return (pages - freel) * psize;
}

/* Drops the n oldest rows of the file, recording the loss. Inside a transaction. */
static int drop_oldest(queue_t *q, long n, long *dropped)
{
    sqlite3_stmt *s = q->st[S_DROP_INFO];
    uint64_t first = 0, last = 0, count = 0;
    int rc;

    sqlite3_bind_int64(s, 1, n);
    if (sqlite3_step(s) == SQLITE_ROW) {
        first = (uint64_t)sqlite3_column_int64(s, 0);
        last = (uint64_t)sqlite3_column_int64(s, 1);
        count = (uint64_t)sqlite3_column_int64(s, 2);
    }
    sqlite3_reset(s);
    if (count == 0)
        return 0;
    sqlite3_bind_int64(q->st[S_DROP], 1, n);
    if ((rc = step(q, q->st[S_DROP], "drop oldest")) < 0)
        return rc;
    note_loss(q, first, last, count, "queue_full");
    *dropped += (long)count;
    return 0;
}

/* Writes the n oldest memory rows to the file in one transaction with the meta update,
 * the bounds and the loss records. On success they leave memory. */
static int flush_locked(queue_t *q, long n)
{
    long dropped = 0;
    char seqtxt[24];
    int rc;

    if (!q->db)
        return -EIO;
    snap_take(q, &q->snap);
    if ((rc = exec(q, "BEGIN IMMEDIATE")) < 0)
        goto fail;
    for (long i = 0; i < n; i++) {
        const struct mrow *m = &q->mem[q->mem_head + i];
        sqlite3_stmt *s = q->st[S_INS];
        sqlite3_bind_int64(s, 1, (sqlite3_int64)m->seq);
        sqlite3_bind_int64(s, 2, m->ts);
        sqlite3_bind_text(s, 3, m->body, m->len, SQLITE_STATIC);
        if ((rc = step(q, s, "append")) < 0)
            goto rollback;
    }
    snprintf(seqtxt, sizeof(seqtxt), "%llu", (unsigned long long)q->next_seq);
    sqlite3_bind_text(q->st[S_META_SEQ], 1, seqtxt, -1, SQLITE_TRANSIENT);
    if ((rc = step(q, q->st[S_META_SEQ], "append")) < 0)
        goto rollback;
    /* bounds: rows over both tiers, then bytes in use */
    if (q->db_depth + n + (q->mem_n - n) > q->o.max_rows) {
        long excess = q->db_depth + q->mem_n - q->o.max_rows;
        if ((rc = drop_oldest(q, excess, &dropped)) < 0)
            goto rollback;
    }
    if (q->o.max_bytes > 0) {
        for (int round = 0; round < 64 && bytes_in_use(q) > q->o.max_bytes; round++) {
            long left = q->db_depth + n - dropped;
            if (left <= 0)
                break;
            if ((rc = drop_oldest(q, left / 20 > 100 ? left / 20 : 100, &dropped)) < 0)
                goto rollback;
        }
    }
    if ((rc = save_losses(q)) < 0)
        goto rollback;
    if ((rc = exec(q, "COMMIT")) < 0)
        goto rollback;
    q->db_depth += n - dropped;
    q->loss_dirty = 0;
    q->commits++;
    mem_pop(q, n);
    if (!q->disk_ok)
        log_info("queue: writing to %s again", q->path);
    q->disk_ok = 1;
    return 0;
rollback:
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    /* the losses noted inside the failed transaction did not happen */
    snap_restore(q, &q->snap);
fail:
    q->disk_ok = 0;
    if (rc == -EILSEQ && recover_corrupt(q) == 0)
        return flush_locked(q, q->mem_n);
    mem_bound(q);
    return rc;
}

int queue_append(queue_t *q, struct reading *r, int n)
{
    char body[WIRE_READING_MAX];
    int rc = 0;

    pthread_mutex_lock(&q->mu);
    for (int i = 0; i < n; i++) {
        int len;
        r[i].seq = q->next_seq;
        len = wire_encode_reading(&r[i], body, sizeof(body));
        if (len < 0) {
            rc = len;
            goto out;
        }
        if ((rc = mem_push(q, r[i].seq, r[i].ts_ms, body, len)) < 0)
            goto out;
        q->next_seq++;
    }
    if (!q->o.memory_first)
        flush_locked(q, q->mem_n); /* a refused write leaves them in memory, retried later */
    else if (q->mem_n > q->o.spill_rows)
        flush_locked(q, q->mem_n - q->o.spill_rows);
    mem_bound(q);
out:
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void queue_maintain(queue_t *q)
{
    int64_t now = now_ms();

    pthread_mutex_lock(&q->mu);
    if (!q->o.memory_first) {
        if (q->mem_n > 0 || q->loss_dirty)
            flush_locked(q, q->mem_n);
    } else {
        long due = 0;
        while (due < q->mem_n && q->mem[q->mem_head + due].ts < now - q->o.spill_ms)
            due++;
        if (due > 0 || q->loss_dirty)
            flush_locked(q, due);
    }
    if (q->o.max_age_ms > 0 && q->db && q->db_depth > 0) {
        sqlite3_stmt *s = q->st[S_AGE_INFO];
        uint64_t first = 0, last = 0, count = 0;
        sqlite3_bind_int64(s, 1, now - q->o.max_age_ms);
        if (sqlite3_step(s) == SQLITE_ROW) {
            first = (uint64_t)sqlite3_column_int64(s, 0);
            last = (uint64_t)sqlite3_column_int64(s, 1);
            count = (uint64_t)sqlite3_column_int64(s, 2);
        }
        sqlite3_reset(s);
        if (count > 0 && exec(q, "BEGIN IMMEDIATE") == 0) {
            snap_take(q, &q->snap);
            sqlite3_bind_int64(q->st[S_AGE_DROP], 1, now - q->o.max_age_ms);
            if (step(q, q->st[S_AGE_DROP], "drop old") == 0) {
                note_loss(q, first, last, count, "queue_full");
                if (save_losses(q) == 0 && exec(q, "COMMIT") == 0) {
                    q->db_depth -= (long)count;
                    q->loss_dirty = 0;
                    q->commits++;
                } else {
                    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
                    snap_restore(q, &q->snap);
                }
            } else {
                sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
            }
        }
    }
    pthread_mutex_unlock(&q->mu);
}

/* ---- reading ------------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t ncap = (b->len + n + 1) * 2;
        char *np = realloc(b->p, ncap);
        if (!np)
            return -ENOMEM;
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int queue_fetch(queue_t *q, const char *gw, uint64_t after, uint64_t until, int max,
                struct qbatch *b)
{
    struct buf out = {0};
    char head[160];
    sqlite3_stmt *s;
    int rc = 0, n = 0, hl;

    memset(b, 0, sizeof(*b));
    pthread_mutex_lock(&q->mu);
    hl = snprintf(head, sizeof(head), "{\"v\":%d,\"gw\":\"%s\",\"stream\":\"%s\",\"readings\":[",
                  WIRE_VERSION, gw, q->stream);
    if ((rc = buf_put(&out, head, (size_t)hl)) < 0)
        goto out;
    if (q->db) {
        s = q->st[until ? S_FETCH_UNTIL : S_FETCH];
        sqlite3_bind_int64(s, 1, (sqlite3_int64)after);
        sqlite3_bind_int(s, 2, max);
        if (until)
            sqlite3_bind_int64(s, 3, (sqlite3_int64)until);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            uint64_t seq = (uint64_t)sqlite3_column_int64(s, 0);
            const char *body = (const char *)sqlite3_column_text(s, 1);
            size_t len = (size_t)sqlite3_column_bytes(s, 1);
            if (!body)
                continue;
            if ((n > 0 && buf_put(&out, ",", 1) < 0) || buf_put(&out, body, len) < 0) {
                rc = -ENOMEM;
                sqlite3_reset(s);
                goto out;
            }
            if (n == 0)
                b->first_seq = seq;
            b->last_seq = seq;
            n++;
        }
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) {
            rc = db_err(q, "fetch");
            goto out;
        }
    }
    for (long i = 0; i < q->mem_n && n < max; i++) {
        const struct mrow *m = &q->mem[q->mem_head + i];
        if (m->seq <= after || (n > 0 && m->seq <= b->last_seq))
            continue;
        if (until && m->seq > until)
            break;
        if ((n > 0 && buf_put(&out, ",", 1) < 0) || buf_put(&out, m->body, (size_t)m->len) < 0) {
            rc = -ENOMEM;
            goto out;
        }
        if (n == 0)
            b->first_seq = m->seq;
        b->last_seq = m->seq;
        n++;
    }
    rc = 0;
    if (n == 0)
        goto out;
    if ((rc = buf_put(&out, "]}", 2)) < 0)
        goto out;
    b->payload = out.p;
    b->len = out.len;
    b->count = n;
    out.p = NULL;
    rc = 1;
out:
    pthread_mutex_unlock(&q->mu);
    free(out.p);
    return rc;
}

int queue_ack(queue_t *q, const char *stream, uint64_t upto)
{
    int rc = 0, k = 0;

    pthread_mutex_lock(&q->mu);
    for (int i = 0; i < q->nloss; i++) {
        if (strcmp(q->loss[i].stream, stream) == 0 && q->loss[i].last <= upto)
            continue;
        q->loss[k++] = q->loss[i];
    }
    if (k != q->nloss) {
        q->nloss = k;
        q->loss_dirty = 1;
    }
    if (strcmp(stream, q->stream) == 0) {
        long m = 0;
        while (m < q->mem_n && q->mem[q->mem_head + m].seq <= upto)
            m++;
        mem_pop(q, m);
        if (q->db) {
            sqlite3_bind_int64(q->st[S_ACK], 1, (sqlite3_int64)upto);
            if (exec(q, "BEGIN IMMEDIATE") == 0) {
                if ((rc = step(q, q->st[S_ACK], "ack")) == 0) {
                    int changes = sqlite3_changes(q->db);
                    if ((rc = save_losses(q)) == 0 && (rc = exec(q, "COMMIT")) == 0) {
                        q->db_depth -= changes;
                        q->loss_dirty = 0;
                        q->commits++;
                    }
                }
                if (rc < 0)
                    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
            }
        }
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int queue_add_loss(queue_t *q, const struct qloss *l)
{
    pthread_mutex_lock(&q->mu);
    add_loss_locked(q, l);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int queue_losses(queue_t *q, struct qloss *out, int max)
{
    int n;
    pthread_mutex_lock(&q->mu);
    n = q->nloss < max ? q->nloss : max;
    memcpy(out, q->loss, sizeof(*out) * (size_t)n);
    pthread_mutex_unlock(&q->mu);
    return n;
}

void queue_get_stats(queue_t *q, struct queue_stats *st)
{
    int cur = 0, hi = 0;

    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&q->mu);
    st->depth = q->db_depth + q->mem_n;
    st->mem_depth = q->mem_n;
    st->next_seq = q->next_seq;
    st->dropped = q->dropped;
    st->commits = q->commits;
    st->disk_ok = q->disk_ok;
    st->losses_pending = q->nloss;
    if (q->db) {
        sqlite3_stmt *s = q->st[S_OLDEST];
        if (sqlite3_step(s) == SQLITE_ROW) {
            st->oldest_seq = (uint64_t)sqlite3_column_int64(s, 0);
            st->oldest_ts = sqlite3_column_int64(s, 1);
        }
        sqlite3_reset(s);
        sqlite3_db_status(q->db, SQLITE_DBSTATUS_CACHE_WRITE, &cur, &hi, 0);
        st->pages_written = (uint64_t)cur;
        st->bytes = bytes_in_use(q);
    }
    if (!st->oldest_seq && q->mem_n) {
        st->oldest_seq = q->mem[q->mem_head].seq;
        st->oldest_ts = q->mem[q->mem_head].ts;
    }
    pthread_mutex_unlock(&q->mu);
}

uint64_t queue_next_seq(queue_t *q)
{
    uint64_t n;
    pthread_mutex_lock(&q->mu);
    n = q->next_seq;
    pthread_mutex_unlock(&q->mu);
    return n;
}
