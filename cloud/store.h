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
 * Seq bookkeeping (docs/protocol.md, "Gaps, duplicates and losses in the cloud"): per
 * stream (gateway, stream id) the store keeps the set of counted seqs (received or reported
 * lost) and changes it in the same transaction as the readings or the loss report that
 * counted them. Every write that changes it returns the stream's ack state as committed, so
 * the caller can publish an ack after the commit and never before. Because the set is read
 * from the database inside each transaction, several cloud instances sharing one store
 * would agree on it. Seq 0 is outside the numbering (a stream starts at 1): a reading with
 * seq 0 is stored but counts no seq.
 *
 * Errors: every int function returns 0 or a negative errno: -ENOENT (no such meter or
 * gateway), -EINVAL (bad argument), -E2BIG (a stream's counted set would exceed
 * STORE_SEQ_RANGES_MAX ranges: nothing was stored), -ENOMEM, -EIO (the database failed; the
 * details are logged with log_warnx, since only the store knows them).
 */
#ifndef MLK_CLOUD_STORE_H
#define MLK_CLOUD_STORE_H

#include "seqset.h"
#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store store_t;

#define STORE_STATE_MAX 16
#define STORE_ACK_MISSING_MAX 32          /* missing ranges in one ack */
#define STORE_SEQ_RANGES_MAX 10000        /* ranges of one stream's counted set */
#define STORE_STREAMS_MAX 64              /* streams of a gateway listed or acked, newest first */
#define STORE_LOSSES_MAX 100              /* reported losses listed per gateway, newest first */
#define STORE_REASON_MAX 16               /* a loss reason: "queue_full", ... */
#define STORE_SEQ_MAX 9007199254740991ull /* 2^53 - 1, the wire's largest seq */

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

/* Where the cloud stands on one stream: what an ack says. */
struct store_ack {
    char stream[WIRE_STREAM_MAX];
    uint64_t upto; /* every seq 1..upto is counted; 0 when 1 is not */
    int nmissing;  /* the first nmissing missing ranges above upto, ascending */
    struct seq_range missing[STORE_ACK_MISSING_MAX];
};

/* Result of store_put_batch. */
struct store_put_result {
    int inserted;         /* readings stored new (their meter and ts were new) */
    int duplicates;       /* readings that counted no new seq: a copy of a stored reading (same
                           * meter and ts, ignored), or a reading whose seq was already counted
                           * (received or reported lost; stored all the same when its meter and ts
                           * are new, since it is new data) */
    int received;         /* seqs counted new */
    struct store_ack ack; /* the stream after the commit (before it, on -E2BIG) */
};

/* One entry of a loss report, validated by the caller (1 <= first <= last <= 2^53-1). */
struct store_loss {
    uint64_t first, last, count;
    char reason[STORE_REASON_MAX];
    int64_t ts_ms; /* when the gateway dropped them, its clock */
};

struct store_loss_result {
    uint64_t lost;        /* seqs counted new, as lost */
    int recorded;         /* entries new to the store (not a repeat of a stored report) */
    struct store_ack ack; /* the stream after the commit (before it, on -E2BIG) */
};

/* A missing range that has been open longer than the grace time: a data gap. */
struct store_gap {
    char gateway[WIRE_ID_MAX];
    char stream[WIRE_STREAM_MAX];
    uint64_t first, last;
    int64_t first_seen_ms; /* cloud clock when the range was first missing */
};

/* The last health message's gauges; -1 when it did not carry them. */
struct store_health {
    int64_t ts_ms; /* the message's ts, or the cloud's clock when it had none */
    int64_t queue_depth;
    int64_t oldest_age_s;
};

struct store_stream {
    char id[WIRE_STREAM_MAX];
    int64_t first_seen_ms, last_seen_ms; /* cloud clock */
    uint64_t upto, received, duplicates, lost;
    uint64_t nmissing_total; /* all missing ranges; the first nmissing are below */
    int nmissing;
    struct seq_range missing[STORE_ACK_MISSING_MAX];
    int gaps_open; /* missing ranges open longer than the grace time (data gaps) */
};

struct store_gateway {
    char id[WIRE_ID_MAX];
    char status[STORE_STATE_MAX]; /* "online", "offline"; "" when never reported */
    int64_t status_ts_ms;
    bool has_last_seen;
    int64_t last_seen_ms; /* cloud clock of its last readings batch */
    bool has_health;
    struct store_health health;
    uint64_t received, duplicates, lost; /* sums over all its streams */
    uint64_t gaps;                       /* data gap events */
    int nstreams_total;
    int nstreams;                 /* at most STORE_STREAMS_MAX, newest first */
    struct store_stream *streams; /* nstreams entries, malloc'd */
};

/* A reported loss as stored. */
struct store_loss_entry {
    char stream[WIRE_STREAM_MAX];
    struct store_loss loss;
    int64_t received_ms; /* cloud clock when it was first received */
};

/* Opens (creating if needed) the store at path: a file name for SQLite. On failure returns
 * a negative errno and writes the reason to err (errlen bytes). */
int store_open(const char *path, store_t **out, char *err, size_t errlen);
/* Closes the store; NULL is allowed. No other call may be running or follow. */
void store_close(store_t *st);

/* Stores the n accepted readings of one batch from gateway gw (stream) and counts their
 * seqs, in one transaction: all or nothing. A reading whose (meter, ts) is already stored
 * is ignored. n may be 0 (the gateway and stream are still recorded, and res->ack is the
 * stream's state). recv_ms is the cloud's clock. res->ack is filled on success and on
 * -E2BIG (then with the state before the batch). */
int store_put_batch(store_t *st, const char *gw, const char *stream, const struct reading *r, int n,
                    int64_t recv_ms, struct store_put_result *res);

/* Records the n (1..) entries of a loss report of gateway gw (stream) and counts every seq
 * of their ranges not yet counted as lost, in one transaction. An entry identical to a
 * stored one (same range, reason and ts: the gateway repeats a report until it is acked)
 * is not recorded again. res->ack as for store_put_batch. */
int store_put_loss(store_t *st, const char *gw, const char *stream, const struct store_loss *l,
                   int n, int64_t recv_ms, struct store_loss_result *res);

/* Keeps json (len bytes, a validated JSON object) as gateway gw's last health message,
 * with its gauges h, received at recv_ms. */
int store_put_health(store_t *st, const char *gw, const char *json, size_t len,
                     const struct store_health *h, int64_t recv_ms);

/* The ack state of gateway gw's streams, the most recently active first, at most max.
 * *n is 0 for a gateway the store does not know. */
int store_stream_acks(store_t *st, const char *gw, struct store_ack *out, int max, int *n);

/* Finds missing ranges that have been open since before now_ms - grace_ms and were not
 * reported yet, marks them reported (a range is reported once, also after it shrinks or
 * splits), counts one data gap event on each one's gateway, and returns them, at most max
 * (call again for more). */
int store_check_gaps(store_t *st, int64_t now_ms, int64_t grace_ms, struct store_gap *out, int max,
                     int *n);

/* Records gateway gw's status ("online", "offline") as of ts_ms. Only a change of state
 * is recorded (with its ts_ms): a retained status delivered again changes nothing.
 * *changed tells which it was. */
int store_put_status(store_t *st, const char *gw, const char *state, int64_t ts_ms, bool *changed);

/* Checks that the database answers. */
int store_ping(store_t *st);

/* Every meter ever seen, sorted by id, with its newest reading. On success *out is a
 * malloc'd array of *n entries (free() it; NULL when *n is 0). */
int store_list_meters(store_t *st, struct store_meter **out, int *n);

/* Every gateway ever seen, sorted by id, with its newest streams. On success *out is a
 * malloc'd array of *n entries (free with store_gateways_free). */
int store_list_gateways(store_t *st, struct store_gateway **out, int *n);

/* One gateway, as store_list_gateways() lists it, with its last health message (*health:
 * malloc'd NUL-terminated JSON, or NULL when none; free() it) and its newest reported
 * losses (*losses: malloc'd, *nlosses entries, at most STORE_LOSSES_MAX; free() it).
 * -ENOENT for a gateway the store does not know. Release *out with store_gateway_clear(). */
int store_get_gateway(store_t *st, const char *id, struct store_gateway *out, char **health,
                      struct store_loss_entry **losses, int *nlosses);

/* Frees an array from store_list_gateways (NULL is allowed), or the streams of one
 * gateway filled by store_get_gateway (then empty). */
void store_gateways_free(struct store_gateway *g, int n);
void store_gateway_clear(struct store_gateway *g);

/* Up to limit readings of meter with from_ms <= ts < to_ms, newest first. Returns -ENOENT
 * when the meter has never been seen. On success *out is a malloc'd array of *n entries
 * (free() it; NULL when *n is 0). */
int store_readings(store_t *st, const char *meter, int64_t from_ms, int64_t to_ms, int limit,
                   struct store_reading **out, int *n);

#endif
