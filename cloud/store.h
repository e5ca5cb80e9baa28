/*
 * store: meter-cloud's storage of gateways, meters and readings.
 *
 * The interface is backend-neutral: no SQL and no SQLite types cross it, so a PostgreSQL
 * backend can implement the same functions later (store.c is the SQLite one). It is not
 * a query language: each function is one thing the daemon needs.
 *
 * Thread-safe: the ingest thread and the HTTP threads may call any function concurrently
 * (see store.c for how).
 *
 * Errors: every int function returns 0 or a negative errno: -ENOENT (no such meter),
 * -EINVAL (bad argument), -ENOMEM, -EIO (the database failed; the details are logged with
 * log_warnx, since only the store knows them).
 */
#ifndef MLK_CLOUD_STORE_H
#define MLK_CLOUD_STORE_H

#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store store_t;

#define STORE_STATE_MAX 16

/* One stored reading, as read back. r.values/r.present use the quantity indexes of
 * quantities.h; r.error is set when !r.ok. */
struct store_reading {
    struct reading r;
    char gateway[WIRE_ID_MAX]; /* the gateway that delivered it */
    char stream[WIRE_STREAM_MAX];
};

struct store_meter {
    char id[WIRE_ID_MAX];
    char gateway[WIRE_ID_MAX]; /* the gateway that delivered its newest reading */
    int64_t first_seen_ms;     /* cloud clock when its first reading was stored */
    int64_t last_ts_ms;        /* ts of its newest reading */
    bool has_last;             /* last is filled */
    struct store_reading last; /* its newest reading */
};

/* Result of store_put_batch. */
struct store_put_result {
    int inserted;   /* new readings */
    int duplicates; /* readings already stored (same meter and ts): ignored */
};

/* Opens (creating if needed) the store at path: a file name for SQLite. On failure returns
 * a negative errno and writes the reason to err (errlen bytes). */
int store_open(const char *path, store_t **out, char *err, size_t errlen);
/* Closes the store; NULL is allowed. No other call may be running or follow. */
void store_close(store_t *st);

/* Stores the n accepted readings of one batch from gateway gw (stream) in one transaction:
 * all or nothing. A reading whose (meter, ts) is already stored is ignored and counted in
 * res->duplicates. recv_ms is the cloud's clock. */
int store_put_batch(store_t *st, const char *gw, const char *stream, const struct reading *r, int n,
                    int64_t recv_ms, struct store_put_result *res);

/* Records gateway gw's status ("online", "offline") as of ts_ms. Only a change of state
 * is recorded (with its ts_ms): a retained status delivered again changes nothing.
 * *changed tells which it was. */
int store_put_status(store_t *st, const char *gw, const char *state, int64_t ts_ms, bool *changed);

/* Checks that the database answers. */
int store_ping(store_t *st);

/* Every meter ever seen, sorted by id, with its newest reading. On success *out is a
 * malloc'd array of *n entries (free() it; NULL when *n is 0). */
int store_list_meters(store_t *st, struct store_meter **out, int *n);

/* Up to limit readings of meter with from_ms <= ts < to_ms, newest first. Returns -ENOENT
 * when the meter has never been seen. On success *out is a malloc'd array of *n entries
 * (free() it; NULL when *n is 0). */
int store_readings(store_t *st, const char *meter, int64_t from_ms, int64_t to_ms, int limit,
                   struct store_reading **out, int *n);

#endif
