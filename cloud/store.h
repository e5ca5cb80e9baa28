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

#include "rollup.h"
#include "seqset.h"
#include "tz.h"
#include "usage.h"
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

/* Group commit: several batches (and loss reports) in one transaction, so that one commit,
 * one fsync and one pass over the pages they touch serve them all.
 * store_group_begin() takes the writer for the calling thread and begins a transaction;
 * until store_group_commit() or store_group_rollback(), that thread's store_put_batch()
 * and store_put_loss() calls each run in a savepoint of it (each still all or nothing:
 * a failed one leaves the others), and their results (res->ack included) say what the
 * commit will make durable: publish nothing of them before store_group_commit() returns
 * 0. On an error of the commit (or of the transaction, which then makes every later call
 * of the group fail with -EIO) nothing of the group is stored. Other writes from that
 * thread return -EDEADLK meanwhile; other threads' writes wait for the commit, so keep a
 * group short (meter-cloud's ingest commits within 250 ms). -EBUSY: this thread already
 * holds a group. */
int store_group_begin(store_t *st);
int store_group_commit(store_t *st);
void store_group_rollback(store_t *st);

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

/* ---- users, sessions and API tokens (auth.c) ------------------------------------------
 * Kept apart from the readings: their own tables, their own connection. A role is stored
 * as its name ("admin", "operator", "viewer"); the store does not judge roles, except that
 * it never lets the last admin go. Times are cloud clock ms. Extra errors here: -EEXIST
 * (the name is taken), -EBUSY (the change would leave no admin). */

#define STORE_USER_NAME_MAX 65  /* a user name, NUL included */
#define STORE_ROLE_MAX 16       /* a role name, NUL included */
#define STORE_PWHASH_MAX 192    /* an encoded password hash, NUL included */
#define STORE_TOKEN_NAME_MAX 65 /* an API token's name, NUL included */
#define STORE_TOKEN_HASH_MAX 65 /* an API token's SHA-256 in hex, NUL included */
#define STORE_SESSION_ID_MAX 33 /* a session id (32 hex digits), NUL included */
#define STORE_SECRET_LEN 32     /* the token signing secret */

struct store_user {
    int64_t id;
    char name[STORE_USER_NAME_MAX];
    char role[STORE_ROLE_MAX];
    char pwhash[STORE_PWHASH_MAX]; /* secret: never log or serve it */
    int64_t created_ms, updated_ms;
};

struct store_api_token {
    int64_t id;
    int64_t user_id;
    char user[STORE_USER_NAME_MAX];
    char user_role[STORE_ROLE_MAX]; /* the owner's role now */
    char name[STORE_TOKEN_NAME_MAX];
    char role[STORE_ROLE_MAX]; /* the role it was created with */
    int64_t created_ms;
    bool has_last_used;
    int64_t last_used_ms; /* updated at most once a minute */
};

/* The secret that signs session tokens: the stored one, or, when there is none yet, fresh
 * (STORE_SECRET_LEN bytes, random) stored and returned. Several instances sharing a store
 * agree on it. */
int store_auth_secret(store_t *st, const uint8_t *fresh, uint8_t *out);

int store_user_count(store_t *st, int *n);
/* -ENOENT when there is no such user. */
int store_user_get(store_t *st, const char *name, struct store_user *out);
int store_user_get_id(store_t *st, int64_t id, struct store_user *out);
/* Every user, sorted by name: *out malloc'd (free() it), *n entries. */
int store_user_list(store_t *st, struct store_user **out, int *n);
/* Adds a user; -EEXIST when the name is taken. With only_if_none, adds it only when there is
 * no user at all (else -EEXIST), in the same transaction as the check. */
int store_user_add(store_t *st, const char *name, const char *role, const char *pwhash,
                   int64_t now_ms, bool only_if_none);
/* Changes a user's role and/or password hash (NULL: unchanged). A new password ends every
 * session of the user. -ENOENT, -EBUSY (the last admin would lose the role). */
int store_user_update(store_t *st, const char *name, const char *role, const char *pwhash,
                      int64_t now_ms);
/* Deletes a user with their sessions and API tokens. -ENOENT, -EBUSY (the last admin). */
int store_user_delete(store_t *st, const char *name);

/* Records a session (id: 32 hex digits) and drops the expired ones. */
int store_session_add(store_t *st, const char *sid, int64_t user_id, int64_t created_ms,
                      int64_t expires_ms);
/* -ENOENT when there is no such session (never made, logged out, or the user changed). */
int store_session_get(store_t *st, const char *sid, int64_t *user_id, int64_t *expires_ms);
/* Ends a session; ending one that does not exist is not an error. */
int store_session_delete(store_t *st, const char *sid);

/* Adds an API token (hash: its SHA-256 in hex) and returns its id. -EEXIST when the user
 * already has a token of that name. */
int store_token_add(store_t *st, int64_t user_id, const char *name, const char *role,
                    const char *hash, int64_t now_ms, int64_t *id);
/* The token with that hash; -ENOENT. */
int store_token_find(store_t *st, const char *hash, struct store_api_token *out);
/* Notes that a token was used at now_ms (written only when the last note is a minute old). */
int store_token_touch(store_t *st, int64_t id, int64_t now_ms);
/* The tokens of user_id (every user's when user_id < 0), by user name and id: *out malloc'd
 * (free() it), *n entries. */
int store_token_list(store_t *st, int64_t user_id, struct store_api_token **out, int *n);
/* Deletes token id if it belongs to user_id (any user when user_id < 0); -ENOENT. */
int store_token_delete(store_t *st, int64_t id, int64_t user_id);

/* 0 when gateway gw is known (has sent anything), -ENOENT when not. */
int store_gateway_exists(store_t *st, const char *gw);

/* ---- registry, rollups and usage (registry.h, rollup.h, usage.h) -----------------------
 * Sites (a time zone, an optional tariff) and the meter registry; the 5-minute, hourly and
 * daily rollups that store_put_batch() keeps up to date inside its transaction; the
 * retention tiers; the reads the usage API needs. Daily rollups are in the time zone of
 * the meter's site (UTC without one) and are rebuilt when that changes. qty arguments are
 * quantities.h indexes. Extra errors here: -EEXIST (taken), -EBUSY (a site still has
 * meters), -ENXIO (the site named does not exist). */

#define STORE_REG_NAME_MAX 32 /* a region, area or dwelling type, NUL included */
#define STORE_TITLE_MAX 128   /* a site's display name, NUL included */
#define STORE_CURRENCY_MAX 4  /* ISO 4217: "EUR" */
#define STORE_REPLACED_MAX 16 /* replacement events listed per meter (the newest) */

struct store_site {
    char id[WIRE_ID_MAX];
    char title[STORE_TITLE_MAX]; /* "" when not set */
    char tz[TZ_NAME_MAX];
    bool has_tariff;
    double price; /* per kWh */
    char currency[STORE_CURRENCY_MAX];
    int64_t created_ms, updated_ms;
    int meters; /* registered meters at the site (when listed) */
};

struct store_reg {
    char id[WIRE_ID_MAX];
    char gateway[WIRE_ID_MAX];
    char site[WIRE_ID_MAX];
    char region[STORE_REG_NAME_MAX], area[STORE_REG_NAME_MAX], dwelling[STORE_REG_NAME_MAX];
    bool prepaid;
    int64_t created_ms, updated_ms;
    int nreplaced;
    int64_t replaced[STORE_REPLACED_MAX]; /* ascending */
};

/* What the usage API needs to know of a meter. */
struct store_meter_ctx {
    int64_t id; /* the store's id; 0 when the meter has no readings yet */
    bool registered, prepaid, has_tariff;
    char site[WIRE_ID_MAX];
    char tz[TZ_NAME_MAX]; /* the site's, or "UTC" */
    double price;
    char currency[STORE_CURRENCY_MAX];
};

/* Rules for rollups: steps longer than gap_ms are gaps; max_power_kw bounds a counter's
 * plausible rise; readings older than m5_days (the 5-minute tier's retention; 0: no
 * limit) are stored but do not update rollups, since the hours and days they fall in can
 * no longer be folded again from 5-minute rows. Call before ingest starts; the defaults
 * are 900 s, 1000 kW, 180 days. */
void store_usage_config(store_t *st, int64_t gap_ms, double max_power_kw, int m5_days);

/* Changes with every commit that may change rollups or the registry (for caches). */
uint64_t store_generation(store_t *st);

int store_site_list(store_t *st, struct store_site **out, int *n); /* free() *out */
int store_site_get(store_t *st, const char *id, struct store_site *out);
/* Creates (create: -EEXIST when it exists) or replaces (-ENOENT when it does not) site s.
 * A new time zone rebuilds the daily rollups of the site's meters in the same transaction. */
int store_site_put(store_t *st, const struct store_site *s, bool create, int64_t now_ms);
int store_site_delete(store_t *st, const char *id);

int store_reg_list(store_t *st, struct store_reg **out, int *n); /* free() *out */
int store_reg_get(store_t *st, const char *id, struct store_reg *out);
/* Registers (create) or changes a meter; r->replaced is ignored (store_reg_replaced). A
 * change of site time zone rebuilds its daily rollups. -ENXIO: r->site does not exist. */
int store_reg_put(store_t *st, const struct store_reg *r, bool create, int64_t now_ms);
int store_reg_delete(store_t *st, const char *id);
/* Records that meter id was replaced at ts (a new counter from then on) and recomputes the
 * rollups around ts. The meter must be registered. */
int store_reg_replaced(store_t *st, const char *id, int64_t ts);

/* -ENOENT when the meter is neither registered nor seen. */
int store_meter_ctx(store_t *st, const char *meter, struct store_meter_ctx *out);

enum store_tier { STORE_TIER_5M, STORE_TIER_1H, STORE_TIER_1D };

/* Rollup rows of tier t with from <= ts < to, ascending, at most max, into out. */
int store_rollups(store_t *st, int64_t meter_id, int qty, enum store_tier t, int64_t from,
                  int64_t to, int max, struct rollup_row *out, int *n);
/* A chart point: rows of [ts, ts + width) summed up. */
struct store_point4 {
    int64_t ts;
    double min, avg, max;
    int64_t n;
};
/* Rollup rows of tier t with from <= ts < to summed up in SQL into buckets of width ms
 * starting at from (which should be a row boundary of the tier), ascending, at most max. */
int store_series(store_t *st, int64_t meter_id, int qty, enum store_tier t, int64_t from,
                 int64_t to, int64_t width, int max, struct store_point4 *out, int *n);
/* Gaps with to_ts >= from and from_ts < to, ascending by to_ts, at most max. */
int store_gaps(store_t *st, int64_t meter_id, int qty, int64_t from, int64_t to, int max,
               struct usage_gap *out, int *n);
/* Readings of one quantity with from <= ts < to, ascending, at most max; *has_prev and
 * *prev: the reading before from. */
int store_points(store_t *st, int64_t meter_id, int qty, int64_t from, int64_t to, int max,
                 struct rollup_point *out, int *n, struct rollup_point *prev, bool *has_prev);
/* The first (from the hourly tier, which is never thinned) and newest ts of a quantity;
 * -ENOENT when it has none. */
int store_span(store_t *st, int64_t meter_id, int qty, int64_t *first, int64_t *last);

/* Usage of a counter or balance over [a, b): whole local days [a, day_end) from daily
 * rollups, [day_end, b) from 5-minute rollups and the raw readings of b's last 5 minutes;
 * gaps that lie inside [a, b) count, those crossing its edges are counted in gaps_crossing. */
struct store_sum {
    double use, topup;
    int64_t n;
    int gaps_crossing;
};
int store_usage_sum(store_t *st, int64_t meter_id, int qty, int64_t a, int64_t day_end, int64_t b,
                    struct store_sum *out);
/* n such sums (out[i] for r[i]) in one read transaction: one snapshot, one lock. */
struct store_sum_range {
    int64_t a, day_end, b;
};
int store_usage_sums(store_t *st, int64_t meter_id, int qty, const struct store_sum_range *r, int n,
                     struct store_sum *out);

/* Up to limit whole readings of meter with from <= ts < to, oldest first (for export). */
int store_readings_asc(store_t *st, const char *meter, int64_t from, int64_t to, int limit,
                       struct store_reading **out, int *n);

/* Applies the retention tiers at now_ms (days 0: keep for ever). */
struct store_retention_result {
    int64_t readings, rows;
};
int store_retention(store_t *st, int64_t now_ms, int raw_days, int m5_days, int hour_days,
                    int day_days, struct store_retention_result *res);

/* ---- Maintenance mode, pending batches and backups (backup.h, ingest.h) ----
 *
 * While maintenance is on, ingest keeps each readings batch as it came (a pending row:
 * gateway, raw payload, receive time) and acks nothing; when it ends, the rows are applied
 * in id order through the normal path and deleted one by one after their batch is stored.
 * Applying one twice stores nothing twice (the readings' meter and ts, and their seqs, are
 * already counted). */
#define STORE_PENDING_PAYLOAD_MAX WIRE_MAX_PAYLOAD

struct store_pending {
    int64_t id;
    char gateway[WIRE_ID_MAX];
    int64_t received_ms;
    char *payload; /* NUL-terminated copy, len bytes before the NUL; free() it */
    size_t len;
};

/* The maintenance flag, kept in the store. */
int store_maint_get(store_t *st, bool *on);
int store_maint_set(store_t *st, bool on);
/* Keeps one batch as pending (one row, one transaction). -EINVAL: payload too long. */
int store_pending_add(store_t *st, const char *gw, const char *payload, size_t len,
                      int64_t recv_ms);
/* The oldest pending batch; -ENOENT when there is none. */
int store_pending_first(store_t *st, struct store_pending *out);
int store_pending_delete(store_t *st, int64_t id);
int store_pending_count(store_t *st, int64_t *n);
/* Copies the whole database, online, into the existing (empty) file dst_path with SQLite's
 * backup API, through a read-only connection of its own. The copy is in rollback-journal
 * mode: one file. Does not fsync, rename or chmod: backup.c does. */
int store_backup(store_t *st, const char *dst_path);

#endif
