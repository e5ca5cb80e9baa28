/*
 * queue: see queue.h.
 *
 * Schema: meta(key, value) holds the stream id, the next seq and the floor; chunk(seq,
 * last, ts0, ts1, body) the readings, packed (wire_pack_reading) and many to a row: a chunk
 * holds the consecutive seqs seq..last, ts0/ts1 are its oldest and newest ts, and body is a
 * version byte followed by the packed readings in seq order. Everything of the file at or
 * below the floor is gone (acknowledged or dropped); a chunk that the floor cuts is kept
 * until the floor passes its last. The view q(seq) lists the seqs still queued in the file,
 * one row each (for people and tests; the queue does not read it). loss(stream, first, last,
 * count, reason, ts) holds the loss records. next_seq is written in the same transaction as
 * the readings that used it, so a crash can never hand out a seq twice for readings that
 * reached the file.
 *
 * Memory tier: a FIFO of packed readings (mem[mem_head .. mem_head + mem_n)), always newer
 * than anything in the file. flush_locked() moves its oldest rows into the file in one
 * transaction, together with the meta update, the bounds, the floor and the loss records.
 *
 * An ack moves the floor in memory at once; the file learns it with the next write, or at
 * most ACK_SYNC_MS later (a crash in between sends those readings again: the cloud ignores
 * the copies). A file of the first format (q(seq, ts, body) with wire JSON, one row per
 * reading) is converted when opened, in one transaction; a row that does not parse is
 * reported lost ("queue_corrupt").
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

#define LOSS_MAX 256      /* loss records kept; adjacent ones of one cause merge */
#define CHUNK_MAX 256     /* readings in one chunk row at most */
#define CHUNK_BYTES 65536 /* bytes of one chunk's body at most */
#define CHUNK_VERSION 1
#define ACK_SYNC_MS 1000 /* an ack reaches the file this long after at most */

struct mrow {
    uint64_t seq;
    int64_t ts;
    unsigned char *body; /* packed */
    int len;
};

enum {
    S_INS,
    S_META_SEQ,
    S_META_FLOOR,
    S_FETCH,
    S_SPAN,
    S_FIRST,
    S_DEL,
    S_AGE_FIRST,
    S_LAST,
    S_LOSS_CLEAR,
    S_LOSS_INS,
    S_N
};

/* ?1 - CHUNK_MAX bounds the rowid range: a chunk that holds seq x starts above x - 256 */
static const char *const sql_text[S_N] = {
    [S_INS] = "INSERT INTO chunk(seq, last, ts0, ts1, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_META_SEQ] = "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?1)",
    [S_META_FLOOR] = "INSERT OR REPLACE INTO meta(key, value) VALUES ('floor', ?1)",
    [S_FETCH] = "SELECT seq, last, body FROM chunk WHERE seq > ?1 - 256 AND last > ?1"
                " AND (?2 = 0 OR seq <= ?2) ORDER BY seq",
    [S_SPAN] = "SELECT seq, last FROM chunk WHERE seq > ?1 - 256 AND last > ?1 AND seq <= ?2"
               " ORDER BY seq",
    [S_FIRST] = "SELECT seq, ts0, ts1 FROM chunk WHERE seq > ?1 - 256 AND last > ?1"
                " ORDER BY seq LIMIT 1",
    [S_DEL] = "DELETE FROM chunk WHERE seq <= ?1 AND last <= ?1",
    [S_AGE_FIRST] = "SELECT seq FROM chunk WHERE last > ?1 AND ts1 >= ?2 ORDER BY seq LIMIT 1",
    [S_LAST] = "SELECT max(last) FROM chunk",
    [S_LOSS_CLEAR] = "DELETE FROM loss",
    [S_LOSS_INS] = "INSERT INTO loss(stream, first, last, count, reason, ts)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
};

/* What a transaction may change in memory, to restore when it rolls back. */
struct loss_snap {
    struct qloss loss[LOSS_MAX];
    int nloss, dirty;
    uint64_t dropped;
    uint64_t floor;
    long db_depth;
    uint64_t db_first;
    int64_t first_ts0, first_ts1;
};

struct queue {
    pthread_mutex_t mu;
    char path[512];
    struct queue_opts o;
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    char stream[WIRE_STREAM_MAX];
    uint64_t next_seq;
    uint64_t floor;               /* the file's readings at or below are gone */
    uint64_t floor_file;          /* the floor the file has */
    int64_t floor_ms;             /* mono time the floor moved past floor_file */
    long db_depth;                /* readings in the file above the floor */
    uint64_t db_first;            /* the oldest of them (0: none) */
    int64_t first_ts0, first_ts1; /* ts range of its chunk */
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
    s->floor = q->floor;
    s->db_depth = q->db_depth;
    s->db_first = q->db_first;
    s->first_ts0 = q->first_ts0;
    s->first_ts1 = q->first_ts1;
}

static void snap_restore(queue_t *q, const struct loss_snap *s)
{
    memcpy(q->loss, s->loss, sizeof(s->loss[0]) * (size_t)s->nloss);
    q->nloss = s->nloss;
    q->loss_dirty = s->dirty;
    q->dropped = s->dropped;
    q->floor = s->floor;
    q->db_depth = s->db_depth;
    q->db_first = s->db_first;
    q->first_ts0 = s->first_ts0;
    q->first_ts1 = s->first_ts1;
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
        log_warnx("queue: lost what was undelivered of stream %s, seq %llu..%llu (%s)", l->stream,
                  (unsigned long long)l->first, (unsigned long long)l->last, l->reason);
}

static void note_loss(queue_t *q, uint64_t first, uint64_t last, uint64_t count, const char *reason)
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
    q->floor = 0;
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
        } else if (strcmp(k, "floor") == 0) {
            q->floor = strtoull(v, NULL, 10);
        }
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE)
        return db_err(q, "read meta");
    if (!have_stream) {
        char sql[200];
        if ((rc = make_stream_id(q->stream)) < 0)
            return rc;
        q->next_seq = 1;
        q->floor = 0;
        snprintf(sql, sizeof(sql),
                 "INSERT OR REPLACE INTO meta VALUES ('stream','%s'),('next_seq','1'),"
                 "('floor','0')",
                 q->stream);
        if ((rc = exec(q, sql)) < 0)
            return rc;
        log_info("queue: new stream %s", q->stream);
    }
    if (q->next_seq == 0)
        q->next_seq = 1;
    if (q->floor >= q->next_seq)
        q->floor = q->next_seq - 1;
    q->floor_file = q->floor;
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

/* ---- the floor ----------------------------------------------------------------------- */

/* The oldest reading of the file above the floor (db_first and its chunk's ts). */
static void find_first(queue_t *q)
{
    sqlite3_stmt *s = q->st[S_FIRST];

    q->db_first = 0;
    q->first_ts0 = q->first_ts1 = 0;
    sqlite3_bind_int64(s, 1, (sqlite3_int64)q->floor);
    if (sqlite3_step(s) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(s, 0);
        q->db_first = seq > q->floor ? seq : q->floor + 1;
        q->first_ts0 = sqlite3_column_int64(s, 1);
        q->first_ts1 = sqlite3_column_int64(s, 2);
    }
    sqlite3_reset(s);
}

/* Readings of the file in (floor, upto]: how many, the first and the last. */
static uint64_t count_span(queue_t *q, uint64_t upto, uint64_t *first, uint64_t *last)
{
    sqlite3_stmt *s = q->st[S_SPAN];
    uint64_t n = 0;

    *first = *last = 0;
    sqlite3_bind_int64(s, 1, (sqlite3_int64)q->floor);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)upto);
    while (sqlite3_step(s) == SQLITE_ROW) {
        uint64_t a = (uint64_t)sqlite3_column_int64(s, 0), b = (uint64_t)sqlite3_column_int64(s, 1);
        if (a <= q->floor)
            a = q->floor + 1;
        if (b > upto)
            b = upto;
        if (b < a)
            continue;
        if (!*first)
            *first = a;
        *last = b;
        n += b - a + 1;
    }
    sqlite3_reset(s);
    return n;
}

/* Moves the floor up to upto in memory (the file learns it in sync_floor). reason: the
 * readings passed are lost for that reason (NULL: acknowledged). */
static void floor_raise(queue_t *q, uint64_t upto, const char *reason)
{
    uint64_t first, last, n;

    if (!q->db || upto <= q->floor || q->db_depth == 0 || upto < q->db_first)
        return;
    n = count_span(q, upto, &first, &last);
    if (q->floor == q->floor_file)
        q->floor_ms = mono_ms();
    q->floor = upto;
    q->db_depth -= (long)n;
    if (q->db_depth < 0)
        q->db_depth = 0;
    find_first(q);
    if (reason && n > 0)
        note_loss(q, first, last, n, reason);
}

/* The seq below which the n oldest readings of the file lie (the floor that drops them). */
static uint64_t floor_for_drop(queue_t *q, long n)
{
    sqlite3_stmt *s = q->st[S_SPAN];
    uint64_t left = (uint64_t)n, to = q->floor;

    sqlite3_bind_int64(s, 1, (sqlite3_int64)q->floor);
    sqlite3_bind_int64(s, 2, INT64_MAX);
    while (left > 0 && sqlite3_step(s) == SQLITE_ROW) {
        uint64_t a = (uint64_t)sqlite3_column_int64(s, 0), b = (uint64_t)sqlite3_column_int64(s, 1);
        if (a <= q->floor)
            a = q->floor + 1;
        if (b < a)
            continue;
        if (b - a + 1 >= left) {
            to = a + left - 1;
            left = 0;
        } else {
            left -= b - a + 1;
            to = b;
        }
    }
    sqlite3_reset(s);
    return to;
}

/* Writes the floor to the file and deletes the chunks wholly below it. Inside a
 * transaction. */
static int sync_floor(queue_t *q)
{
    char txt[24];
    int rc;

    if (q->floor_file == q->floor)
        return 0;
    sqlite3_bind_int64(q->st[S_DEL], 1, (sqlite3_int64)q->floor);
    if ((rc = step(q, q->st[S_DEL], "forget acknowledged readings")) < 0)
        return rc;
    snprintf(txt, sizeof(txt), "%llu", (unsigned long long)q->floor);
    sqlite3_bind_text(q->st[S_META_FLOOR], 1, txt, -1, SQLITE_TRANSIENT);
    return step(q, q->st[S_META_FLOOR], "write the floor");
}

/* ---- chunks -------------------------------------------------------------------------- */

struct chunkb {
    unsigned char *p;
    size_t len, cap;
    uint64_t first, last;
    int64_t ts0, ts1;
    int n;
};

static void cb_free(struct chunkb *c)
{
    free(c->p);
    memset(c, 0, sizeof(*c));
}

/* Whether a reading of len bytes with seq goes into c as it is (else write c first). */
static int cb_fits(const struct chunkb *c, uint64_t seq, int len)
{
    return c->n == 0 ||
           (seq == c->last + 1 && c->n < CHUNK_MAX && c->len + (size_t)len <= CHUNK_BYTES);
}

static int cb_add(struct chunkb *c, uint64_t seq, int64_t ts, const unsigned char *body, int len)
{
    if (c->len + (size_t)len + 1 > c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 4096;
        while (ncap < c->len + (size_t)len + 1)
            ncap *= 2;
        unsigned char *np = realloc(c->p, ncap);
        if (!np)
            return -ENOMEM;
        c->p = np;
        c->cap = ncap;
    }
    if (c->n == 0) {
        c->p[0] = CHUNK_VERSION;
        c->len = 1;
        c->first = seq;
        c->ts0 = c->ts1 = ts;
    }
    memcpy(c->p + c->len, body, (size_t)len);
    c->len += (size_t)len;
    c->last = seq;
    if (ts < c->ts0)
        c->ts0 = ts;
    if (ts > c->ts1)
        c->ts1 = ts;
    c->n++;
    return 0;
}

/* Inserts c as a chunk row and empties it. Inside a transaction. */
static int cb_write(queue_t *q, struct chunkb *c)
{
    sqlite3_stmt *s = q->st[S_INS];
    int rc;

    if (c->n == 0)
        return 0;
    sqlite3_bind_int64(s, 1, (sqlite3_int64)c->first);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)c->last);
    sqlite3_bind_int64(s, 3, c->ts0);
    sqlite3_bind_int64(s, 4, c->ts1);
    sqlite3_bind_blob(s, 5, c->p, (int)c->len, SQLITE_STATIC);
    if ((rc = step(q, s, "append")) < 0)
        return rc;
    if (q->db_depth == 0 || !q->db_first) {
        q->db_first = c->first;
        q->first_ts0 = c->ts0;
        q->first_ts1 = c->ts1;
    }
    q->db_depth += c->n;
    c->n = 0;
    c->len = 0;
    return 0;
}

/* Walks a chunk's body: calls fn for each reading (seq from first on). Returns 0, or
 * -EILSEQ when the body is not count packed readings of chunk version 1. */
static int chunk_walk(const unsigned char *p, size_t len, uint64_t first, uint64_t last,
                      int (*fn)(void *, uint64_t, struct reading *), void *arg)
{
    size_t pos = 1;
    struct reading r;

    if (!p || len < 1 || p[0] != CHUNK_VERSION || last < first || last - first >= CHUNK_MAX)
        return -EILSEQ;
    for (uint64_t seq = first; seq <= last; seq++) {
        int n = wire_unpack_reading(p + pos, len - pos, &r);
        if (n < 0)
            return -EILSEQ;
        pos += (size_t)n;
        r.seq = seq;
        if (fn) {
            int rc = fn(arg, seq, &r);
            if (rc)
                return rc;
        }
    }
    return pos == len ? 0 : -EILSEQ;
}

/* ---- converting a file of the first format ------------------------------------------- */

static int migrate_v1(queue_t *q)
{
    sqlite3_stmt *s = NULL;
    struct chunkb c = {0};
    unsigned char packed[WIRE_PACKED_MAX];
    char *env = NULL;
    size_t envcap = 0;
    long converted = 0, bad = 0;
    int rc;

    if ((rc = exec(q, "BEGIN IMMEDIATE")) < 0)
        return rc;
    if (sqlite3_prepare_v2(q->db, "SELECT seq, ts, body FROM q ORDER BY seq", -1, &s, NULL) !=
        SQLITE_OK) {
        rc = db_err(q, "read the old queue");
        goto fail;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(s, 0);
        const char *body = (const char *)sqlite3_column_text(s, 2);
        size_t bl = (size_t)sqlite3_column_bytes(s, 2), need = bl + 128;
        struct wire_batch wb;
        char err[160];
        int n = -1;

        if (need > envcap) {
            char *ne = realloc(env, need);
            if (!ne) {
                rc = -ENOMEM;
                goto fail;
            }
            env = ne;
            envcap = need;
        }
        if (body) {
            int el =
                snprintf(env, envcap, "{\"v\":1,\"gw\":\"x\",\"stream\":\"%s\",\"readings\":[%s]}",
                         q->stream, body);
            if (wire_parse_batch(env, (size_t)el, &wb, err, sizeof(err)) == 0) {
                if (wb.n == 1 && wb.readings[0].seq == seq)
                    n = wire_pack_reading(&wb.readings[0], packed, sizeof(packed));
                wire_batch_free(&wb);
            }
        }
        if (n < 0) {
            note_loss(q, seq, seq, 1, "queue_corrupt");
            bad++;
            continue;
        }
        if (!cb_fits(&c, seq, n) && (rc = cb_write(q, &c)) < 0)
            goto fail;
        if ((rc = cb_add(&c, seq, sqlite3_column_int64(s, 1), packed, n)) < 0 ||
            (c.n >= CHUNK_MAX && (rc = cb_write(q, &c)) < 0))
            goto fail;
        converted++;
    }
    if (rc != SQLITE_DONE) {
        rc = db_err(q, "read the old queue");
        goto fail;
    }
    sqlite3_finalize(s);
    s = NULL;
    if ((rc = cb_write(q, &c)) < 0 || (rc = exec(q, "DROP TABLE q")) < 0 ||
        (rc = save_losses(q)) < 0 || (rc = exec(q, "COMMIT")) < 0)
        goto fail;
    q->loss_dirty = 0;
    log_info("queue: %s: %ld readings converted to the packed format (%ld unreadable, reported "
             "lost)",
             q->path, converted, bad);
    cb_free(&c);
    free(env);
    return 0;
fail:
    sqlite3_finalize(s);
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    cb_free(&c);
    free(env);
    return rc;
}

/* Opens the file and checks it. Returns 0, -EILSEQ for a corrupt file, or another error. */
static int open_db(queue_t *q)
{
    sqlite3_stmt *s = NULL;
    int rc, old = 0;

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
                                        : "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")) < 0)
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
                      "CREATE TABLE IF NOT EXISTS chunk(seq INTEGER PRIMARY KEY, last INTEGER "
                      "NOT NULL, ts0 INTEGER NOT NULL, ts1 INTEGER NOT NULL, body BLOB NOT "
                      "NULL);"
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
    if (sqlite3_prepare_v2(q->db, "SELECT 1 FROM sqlite_master WHERE name = 'q' AND type = 'table'",
                           -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        old = 1;
    sqlite3_finalize(s);
    s = NULL;
    if (old && (rc = migrate_v1(q)) < 0)
        goto fail;
    if ((rc = exec(q, "CREATE VIEW IF NOT EXISTS q(seq) AS WITH RECURSIVE"
                      " f(v) AS (SELECT coalesce((SELECT CAST(value AS INTEGER) FROM meta"
                      " WHERE key = 'floor'), 0)),"
                      " r(seq, last) AS (SELECT max(c.seq, f.v + 1), c.last FROM chunk c, f"
                      " WHERE c.last > f.v UNION ALL SELECT seq + 1, last FROM r WHERE seq < last)"
                      " SELECT seq FROM r")) < 0)
        goto fail;
    {
        uint64_t first, last;
        q->db_depth = (long)count_span(q, INT64_MAX, &first, &last);
        find_first(q);
    }
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
    q->db_first = 0;
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
    /* renumber what is still in memory into the new stream (packed rows carry no seq) */
    for (long i = 0; i < q->mem_n; i++)
        q->mem[q->mem_head + i].seq = q->next_seq++;
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
                  "stay an open gap in the cloud",
                  q->path);
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
    if (q->db && (q->mem_n > 0 || q->loss_dirty || q->floor_file != q->floor)) {
        /* a clean stop writes what waits in memory, and the last acks */
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

static int mem_push(queue_t *q, uint64_t seq, int64_t ts, const unsigned char *body, int len)
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
    m->body = malloc((size_t)len);
    if (!m->body)
        return -ENOMEM;
    memcpy(m->body, body, (size_t)len);
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
    note_loss(q, q->mem[q->mem_head].seq, q->mem[q->mem_head + excess - 1].seq, (uint64_t)excess,
              "disk_error");
    mem_pop(q, excess);
}

/* ---- writing ------------------------------------------------------------------------- */

static int64_t bytes_in_use(queue_t *q)
{
    sqlite3_stmt *s = NULL;
    int64_t pages = 0, freel = 0, psize = 0;

    if (sqlite3_prepare_v2(q->db,
                           "SELECT * FROM pragma_page_count, pragma_freelist_count,"
                           " pragma_page_size",
                           -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        pages = sqlite3_column_int64(s, 0);
        freel = sqlite3_column_int64(s, 1);
        psize = sqlite3_column_int64(s, 2);
    }
    sqlite3_finalize(s);
    return (pages - freel) * psize;
}

/* Drops the n oldest readings of the file, recording the loss. Inside a transaction. */
static int drop_oldest(queue_t *q, long n)
{
    long before = q->db_depth;

    if (n <= 0 || q->db_depth == 0)
        return 0;
    floor_raise(q, floor_for_drop(q, n), "queue_full");
    if (q->db_depth == before)
        return 0;
    return sync_floor(q);
}

/* Writes the n oldest memory rows to the file in one transaction with the meta update,
 * the bounds, the floor and the loss records. On success they leave memory. */
static int flush_locked(queue_t *q, long n)
{
    struct chunkb c = {0};
    char seqtxt[24];
    int rc;

    if (!q->db)
        return -EIO;
    snap_take(q, &q->snap);
    if ((rc = exec(q, "BEGIN IMMEDIATE")) < 0)
        goto fail;
    for (long i = 0; i < n; i++) {
        const struct mrow *m = &q->mem[q->mem_head + i];
        if (!cb_fits(&c, m->seq, m->len) && (rc = cb_write(q, &c)) < 0)
            goto rollback;
        if ((rc = cb_add(&c, m->seq, m->ts, m->body, m->len)) < 0)
            goto rollback;
    }
    if ((rc = cb_write(q, &c)) < 0)
        goto rollback;
    if (n > 0) {
        snprintf(seqtxt, sizeof(seqtxt), "%llu", (unsigned long long)q->next_seq);
        sqlite3_bind_text(q->st[S_META_SEQ], 1, seqtxt, -1, SQLITE_TRANSIENT);
        if ((rc = step(q, q->st[S_META_SEQ], "append")) < 0)
            goto rollback;
    }
    /* bounds: rows over both tiers, then bytes in use */
    if (q->db_depth + (q->mem_n - n) > q->o.max_rows &&
        (rc = drop_oldest(q, q->db_depth + (q->mem_n - n) - q->o.max_rows)) < 0)
        goto rollback;
    if ((rc = sync_floor(q)) < 0)
        goto rollback;
    if (q->o.max_bytes > 0) {
        for (int round = 0; round < 64 && q->db_depth > 0 && bytes_in_use(q) > q->o.max_bytes;
             round++)
            if ((rc = drop_oldest(q, q->db_depth / 20 > 100 ? q->db_depth / 20 : 100)) < 0)
                goto rollback;
    }
    if ((rc = save_losses(q)) < 0)
        goto rollback;
    if ((rc = exec(q, "COMMIT")) < 0)
        goto rollback;
    cb_free(&c);
    q->floor_file = q->floor;
    q->loss_dirty = 0;
    q->commits++;
    mem_pop(q, n);
    if (!q->disk_ok)
        log_info("queue: writing to %s again", q->path);
    q->disk_ok = 1;
    return 0;
rollback:
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    /* the losses noted and the floor moved inside the failed transaction did not happen */
    snap_restore(q, &q->snap);
fail:
    cb_free(&c);
    q->disk_ok = 0;
    if (rc == -EILSEQ && recover_corrupt(q) == 0)
        return flush_locked(q, q->mem_n);
    mem_bound(q);
    return rc;
}

int queue_append(queue_t *q, struct reading *r, int n)
{
    unsigned char body[WIRE_PACKED_MAX];
    int rc = 0;

    pthread_mutex_lock(&q->mu);
    for (int i = 0; i < n; i++) {
        int len;
        r[i].seq = q->next_seq;
        len = wire_pack_reading(&r[i], body, sizeof(body));
        if (len < 0) {
            rc = len;
            goto out;
        }
        if ((rc = mem_push(q, r[i].seq, r[i].ts_ms, body, len)) < 0)
            goto out;
        q->next_seq++;
    }
    /* memory-first: past spill_rows, everything in memory goes to the file in one
     * transaction (not the excess alone: that would be a transaction per append) */
    if (!q->o.memory_first || q->mem_n > q->o.spill_rows)
        flush_locked(q, q->mem_n); /* a refused write leaves them in memory, retried later */
    mem_bound(q);
out:
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void queue_maintain(queue_t *q)
{
    int64_t now = now_ms();
    int floor_due;

    pthread_mutex_lock(&q->mu);
    floor_due = q->floor_file != q->floor && mono_ms() - q->floor_ms >= ACK_SYNC_MS;
    if (!q->o.memory_first) {
        if (q->mem_n > 0 || q->loss_dirty || floor_due)
            flush_locked(q, q->mem_n);
    } else if (q->mem_n > 0 && q->mem[q->mem_head].ts < now - q->o.spill_ms) {
        /* the oldest is due: spill all of memory at once, so the next spill is spill_ms
         * away (one transaction per window, not one per reading as each comes due) */
        flush_locked(q, q->mem_n);
    } else if (q->loss_dirty || floor_due) {
        flush_locked(q, 0);
    }
    if (q->o.max_age_ms > 0 && q->db && q->db_depth > 0 && q->first_ts1 < now - q->o.max_age_ms) {
        /* whole chunks whose newest reading is too old */
        sqlite3_stmt *s = q->st[S_AGE_FIRST];
        uint64_t to = 0;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)q->floor);
        sqlite3_bind_int64(s, 2, now - q->o.max_age_ms);
        if (sqlite3_step(s) == SQLITE_ROW)
            to = (uint64_t)sqlite3_column_int64(s, 0) - 1;
        sqlite3_reset(s);
        if (!to) {
            s = q->st[S_LAST];
            if (sqlite3_step(s) == SQLITE_ROW)
                to = (uint64_t)sqlite3_column_int64(s, 0);
            sqlite3_reset(s);
        }
        if (to > q->floor) {
            snap_take(q, &q->snap);
            floor_raise(q, to, "queue_full");
            if (exec(q, "BEGIN IMMEDIATE") == 0) {
                if (sync_floor(q) == 0 && save_losses(q) == 0 && exec(q, "COMMIT") == 0) {
                    q->floor_file = q->floor;
                    q->loss_dirty = 0;
                    q->commits++;
                } else {
                    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
                    snap_restore(q, &q->snap);
                }
            } else {
                snap_restore(q, &q->snap);
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

static int buf_reserve(struct buf *b, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 4096;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np)
            return -ENOMEM;
        b->p = np;
        b->cap = ncap;
    }
    return 0;
}

static int buf_put(struct buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -ENOMEM;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

struct fetch {
    struct buf out;
    struct qbatch *b;
    uint64_t after, until;
    int max;
    size_t max_bytes;
    int full;
};

/* Adds one reading to the batch; 1 when the batch is full (it was not added). */
static int fetch_add(void *arg, uint64_t seq, struct reading *r)
{
    struct fetch *f = arg;
    size_t mark = f->out.len;
    int n;

    if (seq <= f->after || (f->b->count > 0 && seq <= f->b->last_seq))
        return 0;
    if ((f->until && seq > f->until) || f->b->count >= f->max) {
        f->full = 1;
        return 1;
    }
    if (buf_reserve(&f->out, WIRE_READING_MAX + 4) < 0)
        return -ENOMEM;
    if (f->b->count > 0)
        f->out.p[f->out.len++] = ',';
    n = wire_encode_reading(r, f->out.p + f->out.len, f->out.cap - f->out.len);
    if (n < 0)
        return n;
    if (f->b->count > 0 && f->out.len + (size_t)n + 2 > f->max_bytes) {
        f->out.len = mark; /* a batch of at most max_bytes, but at least one reading */
        f->out.p[mark] = '\0';
        f->full = 1;
        return 1;
    }
    f->out.len += (size_t)n;
    if (f->b->count == 0)
        f->b->first_seq = seq;
    f->b->last_seq = seq;
    f->b->count++;
    return 0;
}

/* Whether [first, last] of our stream is covered by a pending loss record. */
static int loss_covers(const queue_t *q, uint64_t first, uint64_t last)
{
    for (int i = 0; i < q->nloss; i++)
        if (strcmp(q->loss[i].stream, q->stream) == 0 && q->loss[i].first <= first &&
            last <= q->loss[i].last)
            return 1;
    return 0;
}

int queue_fetch_sized(queue_t *q, const char *gw, uint64_t after, uint64_t until, int max,
                      size_t max_bytes, struct qbatch *b)
{
    struct fetch f;
    char head[160];
    int rc = 0, hl;

    memset(b, 0, sizeof(*b));
    memset(&f, 0, sizeof(f));
    f.b = b;
    f.until = until;
    f.max = max;
    f.max_bytes = max_bytes;
    pthread_mutex_lock(&q->mu);
    f.after = after > q->floor ? after : q->floor;
    hl = snprintf(head, sizeof(head), "{\"v\":%d,\"gw\":\"%s\",\"stream\":\"%s\",\"readings\":[",
                  WIRE_VERSION, gw, q->stream);
    if ((rc = buf_put(&f.out, head, (size_t)hl)) < 0)
        goto out;
    if (q->db && q->db_depth > 0) {
        sqlite3_stmt *s = q->st[S_FETCH];
        sqlite3_bind_int64(s, 1, (sqlite3_int64)f.after);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)until);
        while (!f.full && (rc = sqlite3_step(s)) == SQLITE_ROW) {
            uint64_t first = (uint64_t)sqlite3_column_int64(s, 0);
            uint64_t last = (uint64_t)sqlite3_column_int64(s, 1);
            const unsigned char *body = sqlite3_column_blob(s, 2);
            size_t len = (size_t)sqlite3_column_bytes(s, 2);
            int w;
            /* check the whole chunk first: a corrupt one is reported lost, never half sent */
            if (chunk_walk(body, len, first, last, NULL, NULL) < 0) {
                uint64_t a = first > q->floor ? first : q->floor + 1;
                if (!loss_covers(q, a, last)) {
                    log_warnx("queue: %s: the chunk of seq %llu..%llu is unreadable", q->path,
                              (unsigned long long)first, (unsigned long long)last);
                    note_loss(q, a, last, last - a + 1, "queue_corrupt");
                }
                continue;
            }
            w = chunk_walk(body, len, first, last, fetch_add, &f);
            if (w < 0) {
                rc = w;
                sqlite3_reset(s);
                goto out;
            }
        }
        sqlite3_reset(s);
        if (!f.full && rc != SQLITE_DONE) {
            rc = db_err(q, "fetch");
            goto out;
        }
    }
    for (long i = 0; i < q->mem_n && !f.full; i++) {
        const struct mrow *m = &q->mem[q->mem_head + i];
        struct reading r;
        if (m->seq <= f.after)
            continue;
        if (wire_unpack_reading(m->body, (size_t)m->len, &r) != m->len)
            continue; /* made by wire_pack_reading in this process: does not happen */
        r.seq = m->seq;
        if ((rc = fetch_add(&f, m->seq, &r)) < 0)
            goto out;
    }
    rc = 0;
    if (b->count == 0)
        goto out;
    if ((rc = buf_put(&f.out, "]}", 2)) < 0)
        goto out;
    b->payload = f.out.p;
    b->len = f.out.len;
    f.out.p = NULL;
    rc = 1;
out:
    if (rc != 1)
        b->count = 0;
    pthread_mutex_unlock(&q->mu);
    free(f.out.p);
    return rc;
}

int queue_fetch(queue_t *q, const char *gw, uint64_t after, uint64_t until, int max,
                struct qbatch *b)
{
    return queue_fetch_sized(q, gw, after, until, max, WIRE_MAX_PAYLOAD, b);
}

int queue_ack(queue_t *q, const char *stream, uint64_t upto)
{
    int k = 0;

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
        /* the file learns it with its next write, or from queue_maintain */
        floor_raise(q, upto < q->next_seq ? upto : q->next_seq - 1, NULL);
    }
    pthread_mutex_unlock(&q->mu);
    return 0;
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
        if (q->db_depth > 0) {
            st->oldest_seq = q->db_first;
            st->oldest_ts = q->first_ts0;
        }
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
