/*
 * alerts: see alerts.h. The pure rules (alert_step, alert_cond_*) come first; then the
 * tables, the evaluation of each rule kind against the store, the outbox and its
 * deliveries (libcurl), and the thread.
 *
 * Locking: one mutex guards the connection (every statement on it). A delivery attempt
 * runs without it, so the API never waits for a slow webhook; only the evaluator thread
 * (or a test's caller) evaluates and delivers, so an outbox row is never sent twice.
 */
#include "alerts.h"

#include "log.h"
#include "quantities.h"
#include "timeutil.h"
#include "tz.h"
#include "usage.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <mbedtls/md.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef MLK_VERSION
#define MLK_VERSION "unknown"
#endif

#define DAY_MS 86400000LL
#define BUSY_TIMEOUT_MS 10000
#define OUTBOX_BATCH 16          /* attempts made per alerts_deliver() round */
#define WINDOW_READINGS_MAX 5000 /* readings a silent meter's window is searched for a good one */
#define WINDOW_PAGE 200          /* readings a threshold reads at a time */
#define RESPONSE_KEEP 4096       /* bytes of a webhook's answer kept for the error text */

/* ---- pure parts ---------------------------------------------------------------------- */

const char *alert_state_name(enum alert_state s)
{
    switch (s) {
    case ALERT_FIRING:
        return "firing";
    case ALERT_ACKED:
        return "acknowledged";
    case ALERT_RESOLVED:
        return "resolved";
    default:
        return "";
    }
}

int alert_state_parse(const char *name)
{
    for (int s = ALERT_FIRING; s <= ALERT_RESOLVED; s++)
        if (strcmp(name, alert_state_name((enum alert_state)s)) == 0)
            return s;
    return -1;
}

enum alert_action alert_step(enum alert_state *state, int64_t *notified_ms, enum alert_cond c,
                             int64_t now, int64_t repeat_ms)
{
    switch (*state) {
    case ALERT_NONE:
    case ALERT_RESOLVED:
        if (c != ALERT_COND_FIRE)
            return ALERT_ACT_NONE;
        *state = ALERT_FIRING;
        *notified_ms = now;
        return ALERT_ACT_FIRE;
    case ALERT_FIRING:
        if (c == ALERT_COND_CLEAR) {
            *state = ALERT_RESOLVED;
            *notified_ms = now;
            return ALERT_ACT_RESOLVE;
        }
        /* reminders while it is not acknowledged, also while the condition holds still */
        if (repeat_ms > 0 && now - *notified_ms >= repeat_ms) {
            *notified_ms = now;
            return ALERT_ACT_REMIND;
        }
        return ALERT_ACT_NONE;
    case ALERT_ACKED:
        if (c == ALERT_COND_CLEAR) {
            *state = ALERT_RESOLVED;
            *notified_ms = now;
            return ALERT_ACT_RESOLVE;
        }
        return ALERT_ACT_NONE;
    }
    return ALERT_ACT_NONE;
}

int64_t alert_backoff_ms(int attempt, int base_ms, int max_ms)
{
    int64_t d = base_ms;

    for (int i = 1; i < attempt && d < max_ms; i++)
        d *= 2;
    return d < max_ms ? d : max_ms;
}

enum alert_cond alert_cond_silent(bool has_ok, int64_t last_ok_ms, int64_t first_seen_ms,
                                  int64_t now, int64_t after_ms)
{
    int64_t since = has_ok ? last_ok_ms : first_seen_ms;

    if (now - since >= after_ms)
        return ALERT_COND_FIRE;
    return has_ok ? ALERT_COND_CLEAR : ALERT_COND_HOLD;
}

enum alert_cond alert_cond_gateway(const char *status, int64_t status_ms, bool has_heard,
                                   int64_t heard_ms, int64_t now, int64_t after_ms)
{
    if (strcmp(status, "offline") == 0)
        return now - status_ms >= after_ms ? ALERT_COND_FIRE : ALERT_COND_HOLD;
    if (!has_heard)
        return ALERT_COND_HOLD;
    if (now - heard_ms >= after_ms)
        return ALERT_COND_FIRE;
    return ALERT_COND_CLEAR;
}

static bool past(double v, double limit, bool below)
{
    return below ? v < limit : v > limit;
}

enum alert_cond alert_cond_threshold(const double *v, int n, bool has_before, double before_v,
                                     double limit, bool below, int64_t for_ms)
{
    double newest;
    bool all = true;

    if (n == 0 && !has_before)
        return ALERT_COND_HOLD;
    newest = n > 0 ? v[0] : before_v;
    if (!past(newest, limit, below))
        return ALERT_COND_CLEAR;
    for (int i = 0; i < n && all; i++)
        all = past(v[i], limit, below);
    if (for_ms > 0)
        all = all && has_before && past(before_v, limit, below);
    return all ? ALERT_COND_FIRE : ALERT_COND_HOLD;
}

/* ---- the subsystem ------------------------------------------------------------------- */

struct alerts {
    struct cfg_alerts cfg;
    store_t *st;
    sqlite3 *db;
    pthread_mutex_t mu; /* the connection */
    alerts_send_fn send;
    void *send_arg;

    bool threaded;
    pthread_t thread;
    pthread_mutex_t wmu; /* the thread's wait */
    pthread_cond_t wcond;
    atomic_bool stopping;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS alerts("
    " id INTEGER PRIMARY KEY, rule TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,"
    " meter TEXT NOT NULL DEFAULT '', gateway TEXT NOT NULL DEFAULT '', state TEXT NOT NULL,"
    " message TEXT NOT NULL DEFAULT '', value REAL, fired_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL, acked_ms INTEGER NOT NULL DEFAULT 0,"
    " acked_by TEXT NOT NULL DEFAULT '', resolved_ms INTEGER NOT NULL DEFAULT 0,"
    " notified_ms INTEGER NOT NULL DEFAULT 0, reminders INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts(rule, subject)"
    " WHERE state != 'resolved';"
    "CREATE INDEX IF NOT EXISTS alerts_by_meter ON alerts(meter, id);"
    "CREATE INDEX IF NOT EXISTS alerts_by_gateway ON alerts(gateway, id);"
    "CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts(state, id);"
    "CREATE TABLE IF NOT EXISTS alert_outbox("
    " id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL, channel TEXT NOT NULL,"
    " event TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    " next_ms INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS alert_outbox_due ON alert_outbox(done, next_ms);"
    "CREATE TABLE IF NOT EXISTS alert_deliveries("
    " id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL, outbox_id INTEGER NOT NULL,"
    " channel TEXT NOT NULL, event TEXT NOT NULL, attempt INTEGER NOT NULL,"
    " ok INTEGER NOT NULL, http_status INTEGER NOT NULL, error TEXT NOT NULL,"
    " ts_ms INTEGER NOT NULL, next_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS alert_deliveries_by_alert ON alert_deliveries(alert_id, id);";

static int db_fail(alerts_t *a, const char *what)
{
    log_warnx("alerts: %s: %s", what, sqlite3_errmsg(a->db));
    return -EIO;
}

static int exec(alerts_t *a, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(a->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        log_warnx("alerts: %.40s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return -EIO;
    }
    return 0;
}

static int prepare(alerts_t *a, const char *sql, sqlite3_stmt **s)
{
    if (sqlite3_prepare_v2(a->db, sql, -1, s, NULL) != SQLITE_OK)
        return db_fail(a, "prepare");
    return 0;
}

static void col_text(sqlite3_stmt *s, int i, char *out, size_t len)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    snprintf(out, len, "%s", t ? (const char *)t : "");
}

static const char *kind_name(enum cfg_alert_kind k)
{
    return cfg_alert_kind_name(k);
}

static enum cfg_alert_kind kind_parse(const char *s)
{
    for (int k = 0; k < CFG_ALERT_KIND_COUNT; k++)
        if (strcmp(s, cfg_alert_kind_name((enum cfg_alert_kind)k)) == 0)
            return (enum cfg_alert_kind)k;
    return CFG_ALERT_KIND_COUNT;
}

#define ALERT_COLS                                                                                 \
    "id, rule, kind, meter, gateway, state, message, value, fired_ms, updated_ms, acked_ms,"       \
    " acked_by, resolved_ms, notified_ms, reminders"

static void row_alert(sqlite3_stmt *s, struct alert *al)
{
    char buf[32];

    memset(al, 0, sizeof(*al));
    al->id = sqlite3_column_int64(s, 0);
    col_text(s, 1, al->rule, sizeof(al->rule));
    col_text(s, 2, buf, sizeof(buf));
    al->kind = kind_parse(buf);
    col_text(s, 3, al->meter, sizeof(al->meter));
    col_text(s, 4, al->gateway, sizeof(al->gateway));
    col_text(s, 5, buf, sizeof(buf));
    al->state = alert_state_parse(buf) < 0 ? ALERT_NONE : (enum alert_state)alert_state_parse(buf);
    col_text(s, 6, al->message, sizeof(al->message));
    al->has_value = sqlite3_column_type(s, 7) != SQLITE_NULL;
    al->value = al->has_value ? sqlite3_column_double(s, 7) : 0;
    al->fired_ms = sqlite3_column_int64(s, 8);
    al->updated_ms = sqlite3_column_int64(s, 9);
    al->acked_ms = sqlite3_column_int64(s, 10);
    col_text(s, 11, al->acked_by, sizeof(al->acked_by));
    al->resolved_ms = sqlite3_column_int64(s, 12);
    al->notified_ms = sqlite3_column_int64(s, 13);
    al->reminders = sqlite3_column_int(s, 14);
}

/* Reads alert id (mu held). */
static int load_alert(alerts_t *a, int64_t id, struct alert *al)
{
    sqlite3_stmt *s = NULL;
    int rc;

    if ((rc = prepare(a, "SELECT " ALERT_COLS " FROM alerts WHERE id = ?", &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        row_alert(s, al);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : db_fail(a, "read alert");
    }
    sqlite3_finalize(s);
    return rc;
}

static bool add_time(cJSON *o, const char *name, int64_t ms)
{
    char buf[32];

    if (ms <= 0)
        return cJSON_AddNullToObject(o, name) != NULL;
    return cJSON_AddStringToObject(o, name, time_format(ms, buf, sizeof(buf))) != NULL;
}

static bool add_num(cJSON *o, const char *name, double v)
{
    char buf[32];

    if (!isfinite(v))
        return cJSON_AddNullToObject(o, name) != NULL;
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return cJSON_AddRawToObject(o, name, buf) != NULL;
}

static bool add_str_or_null(cJSON *o, const char *name, const char *s)
{
    return (s[0] ? cJSON_AddStringToObject(o, name, s) : cJSON_AddNullToObject(o, name)) != NULL;
}

cJSON *alerts_alert_json(const struct alert *al)
{
    cJSON *o = cJSON_CreateObject();
    char id[24];

    snprintf(id, sizeof(id), "%" PRId64, al->id);
    if (!o || !cJSON_AddRawToObject(o, "id", id) || !cJSON_AddStringToObject(o, "rule", al->rule) ||
        !cJSON_AddStringToObject(o, "kind", kind_name(al->kind)) ||
        !cJSON_AddStringToObject(o, "state", alert_state_name(al->state)) ||
        !add_str_or_null(o, "meter", al->meter) || !add_str_or_null(o, "gateway", al->gateway) ||
        !cJSON_AddStringToObject(o, "message", al->message) ||
        !(al->has_value ? add_num(o, "value", al->value)
                        : cJSON_AddNullToObject(o, "value") != NULL) ||
        !add_time(o, "fired_at", al->fired_ms) || !add_time(o, "updated_at", al->updated_ms) ||
        !add_time(o, "acknowledged_at", al->acked_ms) ||
        !add_str_or_null(o, "acknowledged_by", al->acked_by) ||
        !add_time(o, "resolved_at", al->resolved_ms) ||
        !add_time(o, "notified_at", al->notified_ms) ||
        !cJSON_AddNumberToObject(o, "reminders", al->reminders)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Queues one notification of al (mu held, inside the caller's transaction) to every
 * channel of rule r. */
static int queue_notify(alerts_t *a, const struct cfg_alert_rule *r, const struct alert *al,
                        const char *event, int64_t now)
{
    sqlite3_stmt *s = NULL;
    cJSON *root, *o;
    char *payload;
    int rc = 0;

    if (r->nchannels == 0)
        return 0;
    root = cJSON_CreateObject();
    o = alerts_alert_json(al);
    if (!root || !o || !cJSON_AddStringToObject(root, "event", event) ||
        !cJSON_AddStringToObject(root, "source", "meter-cloud")) {
        cJSON_Delete(root);
        cJSON_Delete(o);
        return -ENOMEM;
    }
    cJSON_AddItemToObject(root, "alert", o);
    payload = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!payload)
        return -ENOMEM;
    if ((rc = prepare(a,
                      "INSERT INTO alert_outbox(alert_id, channel, event, payload, next_ms)"
                      " VALUES(?, ?, ?, ?, ?)",
                      &s)) < 0)
        goto done;
    for (int i = 0; i < r->nchannels; i++) {
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, al->id);
        sqlite3_bind_text(s, 2, a->cfg.channels[r->channels[i]].name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, event, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, payload, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 5, now);
        if (sqlite3_step(s) != SQLITE_DONE) {
            rc = db_fail(a, "queue a notification");
            break;
        }
    }
done:
    sqlite3_finalize(s);
    free(payload);
    return rc;
}

/* What one rule's evaluation found about one subject. */
struct finding {
    enum alert_cond cond;
    const char *meter, *gateway; /* "" when not applicable */
    bool has_value;
    double value;
    char message[ALERT_MESSAGE_MAX];
};

/* Applies a finding of rule r to its subject at now: the state machine, in one
 * transaction with the notifications it queues. */
static int apply(alerts_t *a, const struct cfg_alert_rule *r, const char *subject,
                 const struct finding *f, int64_t now)
{
    sqlite3_stmt *s = NULL;
    struct alert al;
    enum alert_state state = ALERT_NONE;
    enum alert_action act;
    int64_t notified = 0;
    bool found = false;
    int rc;

    memset(&al, 0, sizeof(al));
    pthread_mutex_lock(&a->mu);
    if ((rc = exec(a, "BEGIN IMMEDIATE")) < 0)
        goto out;
    if ((rc = prepare(a,
                      "SELECT " ALERT_COLS
                      " FROM alerts WHERE rule = ? AND subject = ? AND state != 'resolved'",
                      &s)) < 0)
        goto rollback;
    sqlite3_bind_text(s, 1, r->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, subject, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        row_alert(s, &al);
        found = true;
        state = al.state;
        notified = al.notified_ms;
    } else if (rc != SQLITE_DONE) {
        rc = db_fail(a, "find alert");
        goto rollback;
    }
    sqlite3_finalize(s);
    s = NULL;
    act = alert_step(&state, &notified, f->cond, now, (int64_t)a->cfg.repeat_s * 1000);
    if (act == ALERT_ACT_NONE && !(found && f->cond == ALERT_COND_FIRE)) {
        rc = exec(a, "COMMIT");
        goto out;
    }
    if (act == ALERT_ACT_FIRE) {
        if ((rc = prepare(a,
                          "INSERT INTO alerts(rule, kind, subject, meter, gateway, state, message,"
                          " value, fired_ms, updated_ms, notified_ms)"
                          " VALUES(?, ?, ?, ?, ?, 'firing', ?, ?, ?, ?, ?)",
                          &s)) < 0)
            goto rollback;
        sqlite3_bind_text(s, 1, r->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, kind_name(r->kind), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, subject, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, f->meter, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, f->gateway, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, f->message, -1, SQLITE_STATIC);
        if (f->has_value)
            sqlite3_bind_double(s, 7, f->value);
        else
            sqlite3_bind_null(s, 7);
        sqlite3_bind_int64(s, 8, now);
        sqlite3_bind_int64(s, 9, now);
        sqlite3_bind_int64(s, 10, now);
        if (sqlite3_step(s) != SQLITE_DONE) {
            rc = db_fail(a, "add alert");
            goto rollback;
        }
        log_info("alerts: %s %s: firing: %s", r->name, subject, f->message);
        if ((rc = load_alert(a, sqlite3_last_insert_rowid(a->db), &al)) < 0 ||
            (rc = queue_notify(a, r, &al, "firing", now)) < 0)
            goto rollback;
    } else {
        /* an open alert: resolve it, remind of it, or keep its message and value fresh */
        bool resolve = act == ALERT_ACT_RESOLVE;
        if ((rc = prepare(a,
                          resolve ? "UPDATE alerts SET state = 'resolved', resolved_ms = ?1,"
                                    " updated_ms = ?1, notified_ms = ?1 WHERE id = ?2"
                                  : "UPDATE alerts SET updated_ms = ?1, notified_ms = ?3,"
                                    " reminders = reminders + ?4, message = ?5, value = ?6"
                                    " WHERE id = ?2",
                          &s)) < 0)
            goto rollback;
        sqlite3_bind_int64(s, 1, now);
        sqlite3_bind_int64(s, 2, al.id);
        if (!resolve) {
            sqlite3_bind_int64(s, 3, notified);
            sqlite3_bind_int(s, 4, act == ALERT_ACT_REMIND);
            sqlite3_bind_text(s, 5, f->message, -1, SQLITE_STATIC);
            if (f->has_value)
                sqlite3_bind_double(s, 6, f->value);
            else
                sqlite3_bind_null(s, 6);
        }
        if (sqlite3_step(s) != SQLITE_DONE) {
            rc = db_fail(a, "update alert");
            goto rollback;
        }
        if (resolve)
            log_info("alerts: %s %s: resolved (alert %" PRId64 ")", r->name, subject, al.id);
        if (act != ALERT_ACT_NONE &&
            ((rc = load_alert(a, al.id, &al)) < 0 ||
             (rc = queue_notify(a, r, &al, resolve ? "resolved" : "reminder", now)) < 0))
            goto rollback;
    }
    sqlite3_finalize(s);
    s = NULL;
    rc = exec(a, "COMMIT");
    goto out;
rollback:
    sqlite3_finalize(s);
    s = NULL;
    exec(a, "ROLLBACK");
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* "45 s", "12 min", "3.5 h", "2.0 d" */
static const char *dur(int64_t ms, char *buf, size_t len)
{
    double s = (double)ms / 1000;

    if (s < 120)
        snprintf(buf, len, "%.0f s", s);
    else if (s < 7200)
        snprintf(buf, len, "%.0f min", s / 60);
    else if (s < 172800)
        snprintf(buf, len, "%.1f h", s / 3600);
    else
        snprintf(buf, len, "%.1f d", s / 86400);
    return buf;
}

/* Copies s with anything but printable ASCII as '?': a gateway's error text is outside input,
 * and messages end up in logs and e-mail headers. */
static const char *printable(const char *s, char *out, size_t len)
{
    size_t j = 0;

    for (size_t i = 0; s[i] && j + 1 < len; i++)
        out[j++] = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?';
    out[j] = '\0';
    return out;
}

static bool meter_matches(const struct cfg_alert_rule *r, const struct store_meter *m)
{
    return (!r->meter[0] || strcmp(r->meter, m->id) == 0) &&
           (!r->gateway[0] || strcmp(r->gateway, m->gateway) == 0);
}

/* meter_offline: the newest good reading. */
static int eval_silent(alerts_t *a, const struct cfg_alert_rule *r, const struct store_meter *m,
                       int64_t now, struct finding *f)
{
    int64_t after = (int64_t)r->after_s * 1000, last_ok = 0;
    struct store_reading *rd = NULL;
    bool has_ok = false;
    char d1[32], d2[32], e[WIRE_ERROR_MAX];
    int n = 0, rc;

    if (m->has_last && m->last.r.ok) {
        has_ok = true;
        last_ok = m->last.r.ts_ms;
    } else if (m->has_last) {
        /* the newest reading failed: the newest good one within the window, if any */
        rc = store_readings(a->st, m->id, now - after, now + 1, WINDOW_READINGS_MAX, &rd, &n);
        if (rc < 0 && rc != -ENOENT)
            return rc;
        for (int i = 0; i < n && !has_ok; i++)
            if (rd[i].r.ok) {
                has_ok = true;
                last_ok = rd[i].r.ts_ms;
            }
        free(rd);
    }
    f->cond = alert_cond_silent(has_ok, last_ok, m->first_seen_ms, now, after);
    f->has_value = true;
    f->value = (double)(now - (has_ok ? last_ok : m->first_seen_ms)) / 1000;
    if (has_ok)
        snprintf(f->message, sizeof(f->message), "meter %s: no good reading for %s (limit %s)",
                 m->id, dur(now - last_ok, d1, sizeof(d1)), dur(after, d2, sizeof(d2)));
    else
        snprintf(f->message, sizeof(f->message), "meter %s: no good reading within %s%s%s", m->id,
                 dur(after, d2, sizeof(d2)), m->has_last ? "; last poll failed: " : "",
                 m->has_last ? printable(m->last.r.error, e, sizeof(e)) : "");
    return 0;
}

static bool past_q(const struct reading *rd, int q, double *v)
{
    if (!rd->ok || q < 0 || !(rd->present & (1u << q)) || !isfinite(rd->values[q]))
        return false;
    *v = rd->values[q];
    return true;
}

/* threshold: the readings of the window and the one before it. The window is read newest
 * first, a page at a time, and only until a reading is not past the limit: a quiet meter
 * costs one page, and only a firing one is read over its whole window. */
static int eval_threshold(alerts_t *a, const struct cfg_alert_rule *r, const struct store_meter *m,
                          int64_t now, struct finding *f)
{
    int64_t for_ms = (int64_t)r->for_s * 1000, from = now - for_ms, to = now + 1;
    struct store_reading *rd = NULL;
    double v[2], before = 0, x;
    bool has_before = false, broken = false;
    int n = 0, nv = 0, rc;
    const struct quantity *q = qty_at(r->quantity);

    /* v[0]: the newest value in the window; v[1]: the first one not past the limit */
    while (for_ms > 0 && !broken) {
        rc = store_readings(a->st, m->id, from, to, WINDOW_PAGE, &rd, &n);
        if (rc == -ENOENT)
            break;
        if (rc < 0)
            return rc;
        for (int i = 0; i < n && !broken; i++) {
            if (!past_q(&rd[i].r, r->quantity, &x))
                continue;
            if (nv == 0)
                v[nv++] = x;
            if (!past(x, r->limit, r->below)) {
                v[nv++] = x;
                broken = true;
            }
        }
        if (n > 0)
            to = rd[n - 1].r.ts_ms; /* the next page: older than the oldest of this one */
        free(rd);
        rd = NULL;
        if (n < WINDOW_PAGE)
            break;
    }
    /* the newest reading with the quantity before the window (or, for_s 0, at all) */
    if (!broken) {
        rc = store_readings(a->st, m->id, 0, for_ms > 0 ? from : now + 1, 20, &rd, &n);
        if (rc < 0 && rc != -ENOENT)
            return rc;
        for (int i = 0; rc == 0 && i < n && !has_before; i++)
            has_before = past_q(&rd[i].r, r->quantity, &before);
        free(rd);
    }
    if (for_ms == 0 && has_before)
        f->cond = alert_cond_threshold(&before, 1, false, 0, r->limit, r->below, 0);
    else
        f->cond = alert_cond_threshold(v, nv, has_before, before, r->limit, r->below, for_ms);
    f->has_value = nv > 0 || has_before;
    f->value = nv > 0 ? v[0] : before;
    if (f->has_value) {
        char d[32];
        snprintf(f->message, sizeof(f->message), "meter %s: %s %.6g %s, %s %.6g%s%s", m->id,
                 q ? q->name : "?", f->value, q ? q->unit : "", r->below ? "below" : "above",
                 r->limit, for_ms > 0 ? " for " : "", for_ms > 0 ? dur(for_ms, d, sizeof(d)) : "");
    }
    return 0;
}

/* daily_usage and balance_days: the same sums as the KPI endpoint. */
static int eval_usage(alerts_t *a, const struct cfg_alert_rule *r, const struct store_meter *m,
                      int64_t now, struct finding *f)
{
    struct store_meter_ctx ctx;
    const tz_t *tz;
    struct store_sum sum;
    int64_t today;
    int rc;

    f->cond = ALERT_COND_HOLD;
    rc = store_meter_ctx(a->st, m->id, &ctx);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    if (ctx.id == 0 || tz_get(ctx.tz, &tz) < 0)
        return 0;
    today = tz_floor(tz, now, TZ_DAY);
    memset(&sum, 0, sizeof(sum));
    if (r->kind == CFG_ALERT_DAILY_USAGE) {
        if ((rc = store_usage_sum(a->st, ctx.id, qty_index("energy_import"), today, today, now,
                                  &sum)) < 0)
            return rc;
        /* no reading today is no use today: a new day clears yesterday's alert */
        f->cond = sum.use > r->limit ? ALERT_COND_FIRE : ALERT_COND_CLEAR;
        f->has_value = true;
        f->value = round(sum.use * 1000) / 1000;
        snprintf(f->message, sizeof(f->message),
                 "meter %s: %.3f kWh used today (%s), limit %.10g kWh", m->id, sum.use, tz_name(tz),
                 r->limit);
        return 0;
    }
    /* balance_days: average daily use over the last 7 local days (or the meter's age) */
    {
        int bal = qty_index("balance");
        int64_t since = tz_floor(tz, today - 7 * DAY_MS + DAY_MS / 2, TZ_DAY), first, last;
        double days, per_day, left, balance;

        if (!ctx.prepaid || !m->has_last || !past_q(&m->last.r, bal, &balance))
            return 0;
        if ((rc = store_usage_sum(a->st, ctx.id, bal, since, today, now, &sum)) < 0)
            return rc;
        if (store_span(a->st, ctx.id, bal, &first, &last) == 0 && first > since)
            since = first;
        days = (double)(now - since) / DAY_MS;
        if (days <= 0)
            return 0;
        usage_forecast(balance, sum.use, days, &per_day, &left);
        f->cond = left >= 0 && left < r->limit ? ALERT_COND_FIRE : ALERT_COND_CLEAR;
        f->has_value = left >= 0;
        f->value = round(left * 10) / 10;
        if (left >= 0)
            snprintf(f->message, sizeof(f->message),
                     "meter %s: balance %.2f lasts %.1f days at %.2f a day (limit %.10g days)",
                     m->id, balance, left, per_day, r->limit);
        else
            snprintf(f->message, sizeof(f->message), "meter %s: balance %.2f, no use seen", m->id,
                     balance);
        return 0;
    }
}

static void eval_gateway(const struct cfg_alert_rule *r, const struct store_gateway *g, int64_t now,
                         struct finding *f)
{
    char d1[32], d2[32];

    if (r->kind == CFG_ALERT_DATA_GAP) {
        int open = 0;
        for (int i = 0; i < g->nstreams; i++)
            open += g->streams[i].gaps_open;
        f->cond = open > 0 ? ALERT_COND_FIRE : ALERT_COND_CLEAR;
        f->has_value = true;
        f->value = open;
        snprintf(f->message, sizeof(f->message),
                 "gateway %s: %d data gap%s open (%" PRIu64 " gap events in all)", g->id, open,
                 open == 1 ? "" : "s", g->gaps);
        return;
    }
    {
        int64_t after = (int64_t)r->after_s * 1000, heard = 0;
        bool has = false, offline = strcmp(g->status, "offline") == 0;
        if (g->has_last_seen) {
            heard = g->last_seen_ms;
            has = true;
        }
        if (g->has_health && (!has || g->health.ts_ms > heard)) {
            heard = g->health.ts_ms;
            has = true;
        }
        if (g->status[0] && !offline && (!has || g->status_ts_ms > heard)) {
            heard = g->status_ts_ms;
            has = true;
        }
        f->cond = alert_cond_gateway(g->status, g->status_ts_ms, has, heard, now, after);
        f->has_value = offline || has;
        f->value = (double)(now - (offline ? g->status_ts_ms : heard)) / 1000;
        if (offline)
            snprintf(f->message, sizeof(f->message), "gateway %s: offline for %s (limit %s)", g->id,
                     dur(now - g->status_ts_ms, d1, sizeof(d1)), dur(after, d2, sizeof(d2)));
        else
            snprintf(f->message, sizeof(f->message),
                     "gateway %s: nothing received for %s (limit %s)", g->id,
                     dur(now - heard, d1, sizeof(d1)), dur(after, d2, sizeof(d2)));
    }
}

int alerts_evaluate(alerts_t *a, int64_t now)
{
    struct store_meter *m = NULL;
    struct store_gateway *g = NULL;
    int nm = 0, ng = 0, rc = 0;
    bool need_m = false, need_g = false;

    for (int i = 0; i < a->cfg.nrules; i++) {
        if (cfg_alert_kind_meter(a->cfg.rules[i].kind))
            need_m = true;
        else
            need_g = true;
    }
    if (need_m && (rc = store_list_meters(a->st, &m, &nm)) < 0)
        goto done;
    if (need_g && (rc = store_list_gateways(a->st, &g, &ng)) < 0)
        goto done;
    for (int i = 0; i < a->cfg.nrules && !atomic_load(&a->stopping); i++) {
        const struct cfg_alert_rule *r = &a->cfg.rules[i];
        if (cfg_alert_kind_meter(r->kind)) {
            for (int j = 0; j < nm; j++) {
                struct finding f;
                int e;
                if (!meter_matches(r, &m[j]))
                    continue;
                memset(&f, 0, sizeof(f));
                f.meter = m[j].id;
                f.gateway = m[j].gateway;
                if (r->kind == CFG_ALERT_METER_OFFLINE)
                    e = eval_silent(a, r, &m[j], now, &f);
                else if (r->kind == CFG_ALERT_THRESHOLD)
                    e = eval_threshold(a, r, &m[j], now, &f);
                else
                    e = eval_usage(a, r, &m[j], now, &f);
                if (e == 0)
                    e = apply(a, r, m[j].id, &f, now);
                if (e < 0 && rc == 0)
                    rc = e;
            }
        } else {
            for (int j = 0; j < ng; j++) {
                struct finding f;
                int e;
                if (r->gateway[0] && strcmp(r->gateway, g[j].id) != 0)
                    continue;
                memset(&f, 0, sizeof(f));
                f.meter = "";
                f.gateway = g[j].id;
                eval_gateway(r, &g[j], now, &f);
                e = apply(a, r, g[j].id, &f, now);
                if (e < 0 && rc == 0)
                    rc = e;
            }
        }
    }
done:
    free(m);
    store_gateways_free(g, ng);
    return rc;
}

/* ---- deliveries ---------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap, off;
};

static size_t keep_body(char *data, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    size_t k = size * n, room = b->cap - b->len;

    if (k < room)
        room = k;
    memcpy(b->p + b->len, data, room);
    b->len += room;
    return size * n; /* the rest is read and dropped */
}

static size_t read_mail(char *out, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    size_t k = size * n, left = b->len - b->off;

    if (k > left)
        k = left;
    memcpy(out, b->p + b->off, k);
    b->off += k;
    return k;
}

static int xfer_abort(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    const alerts_t *a = arg;
    (void)dt, (void)dn, (void)ut, (void)un;
    return atomic_load(&a->stopping) ? 1 : 0;
}

/* The webhook signature: hex HMAC-SHA256 of "<ts>.<body>" with the channel's secret. */
static int sign(const char *secret, const char *ts, const char *body, size_t len, char hex[65])
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    mbedtls_md_context_t c;
    unsigned char mac[32];
    int rc;

    mbedtls_md_init(&c);
    rc = mbedtls_md_setup(&c, md, 1);
    if (rc == 0)
        rc = mbedtls_md_hmac_starts(&c, (const unsigned char *)secret, strlen(secret));
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&c, (const unsigned char *)ts, strlen(ts));
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&c, (const unsigned char *)".", 1);
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&c, (const unsigned char *)body, len);
    if (rc == 0)
        rc = mbedtls_md_hmac_finish(&c, mac);
    mbedtls_md_free(&c);
    if (rc != 0)
        return -EIO;
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    explicit_bzero(mac, sizeof(mac));
    return 0;
}

static char *dup_printf(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *dup_printf(size_t *len, const char *fmt, ...)
{
    va_list ap;
    char *out;
    int k;

    va_start(ap, fmt);
    k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0 || !(out = malloc((size_t)k + 1)))
        return NULL;
    va_start(ap, fmt);
    vsnprintf(out, (size_t)k + 1, fmt, ap);
    va_end(ap);
    *len = (size_t)k;
    return out;
}

/* The e-mail for one notification: headers and a plain-text body. */
static char *mail_text(const struct cfg_alert_channel *ch, const char *event, const char *json,
                       size_t *outlen)
{
    cJSON *root = cJSON_Parse(json);
    const cJSON *al = root ? cJSON_GetObjectItemCaseSensitive(root, "alert") : NULL;
    const char *rule = "?", *msg = "", *state = "";
    char rule_s[CFG_ALERT_NAME_MAX], msg_s[ALERT_MESSAGE_MAX], state_s[ALERT_STATE_MAX];
    char date[64], to[CFG_ALERT_RCPT_MAX * (CFG_MAIL_MAX + 2)], *out = NULL;
    time_t t = time(NULL);
    struct tm tm;
    size_t n = 0;
    size_t len = 0;

    if (al) {
        const cJSON *v;
        /* printable ASCII only: no CR or LF can start a header of its own */
        if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(al, "rule")))
            rule = printable(v->valuestring, rule_s, sizeof(rule_s));
        if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(al, "message")))
            msg = printable(v->valuestring, msg_s, sizeof(msg_s));
        if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(al, "state")))
            state = printable(v->valuestring, state_s, sizeof(state_s));
    }
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    to[0] = '\0';
    for (int i = 0; i < ch->nto; i++)
        n += (size_t)snprintf(to + n, sizeof(to) - n, "%s<%s>", i ? ", " : "", ch->to[i]);
    /* every text here is ours, validated or made printable: nothing can add a header */
    out = dup_printf(&len,
                     "Date: %s\r\nFrom: <%s>\r\nTo: %s\r\nSubject: [Meterlink] %s: %s\r\n"
                     "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Auto-Submitted: auto-generated\r\n\r\n"
                     "%s (%s): %s\r\n\r\nState: %s\r\n\r\n%s\r\n",
                     date, ch->from, to, event, msg, rule, event, msg, state, json);
    cJSON_Delete(root);
    if (!out)
        return NULL;
    for (char *p = out; *p; p++)
        if (*p == '\n' && (p == out || p[-1] != '\r'))
            *p = ' '; /* a bare LF from the JSON would end a header */
    *outlen = len;
    return out;
}

static int curl_send(void *arg, const struct cfg_alert_channel *ch, const char *event,
                     const char *json, size_t len, int *status, char *err, size_t errlen)
{
    alerts_t *a = arg;
    CURL *c = curl_easy_init();
    struct curl_slist *hdr = NULL, *rcpt = NULL;
    char ebuf[CURL_ERROR_SIZE], line[160], ts[24], sig[65], body_keep[RESPONSE_KEEP + 1];
    struct buf resp = {.p = body_keep, .cap = RESPONSE_KEEP};
    struct buf mail = {0};
    long code = 0;
    CURLcode cc;
    int rc = 0;

    *status = 0;
    err[0] = '\0';
    if (!c) {
        snprintf(err, errlen, "libcurl: cannot make a handle");
        return -ENOMEM;
    }
    ebuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, ch->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ch->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ch->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, xfer_abort);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, a);
    if (ch->type == CFG_CHANNEL_WEBHOOK) {
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "meter-cloud/" MLK_VERSION);
        snprintf(ts, sizeof(ts), "%" PRId64, now_ms() / 1000);
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        snprintf(line, sizeof(line), "X-Meterlink-Event: %s", event);
        hdr = curl_slist_append(hdr, line);
        snprintf(line, sizeof(line), "X-Meterlink-Timestamp: %s", ts);
        hdr = curl_slist_append(hdr, line);
        if (ch->secret[0]) {
            if (sign(ch->secret, ts, json, len, sig) < 0) {
                snprintf(err, errlen, "cannot compute the signature");
                rc = -EIO;
                goto done;
            }
            snprintf(line, sizeof(line), "X-Meterlink-Signature: sha256=%s", sig);
            hdr = curl_slist_append(hdr, line);
            explicit_bzero(sig, sizeof(sig));
        }
        hdr = curl_slist_append(hdr, "Expect:");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    } else {
        char addr[CFG_MAIL_MAX + 2];
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
        snprintf(addr, sizeof(addr), "<%s>", ch->from);
        curl_easy_setopt(c, CURLOPT_MAIL_FROM, addr);
        for (int i = 0; i < ch->nto; i++) {
            snprintf(addr, sizeof(addr), "<%s>", ch->to[i]);
            rcpt = curl_slist_append(rcpt, addr);
        }
        curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
        if (ch->starttls)
            curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
        if (ch->username[0]) {
            curl_easy_setopt(c, CURLOPT_USERNAME, ch->username);
            curl_easy_setopt(c, CURLOPT_PASSWORD, ch->password);
        }
        if (!(mail.p = mail_text(ch, event, json, &mail.len))) {
            snprintf(err, errlen, "out of memory");
            rc = -ENOMEM;
            goto done;
        }
        curl_easy_setopt(c, CURLOPT_READFUNCTION, read_mail);
        curl_easy_setopt(c, CURLOPT_READDATA, &mail);
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)mail.len);
    }
    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    *status = (int)code;
    if (cc != CURLE_OK) {
        /* libcurl's messages name the host, never the credentials */
        snprintf(err, errlen, "%s", ebuf[0] ? ebuf : curl_easy_strerror(cc));
        rc = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
    } else if (ch->type == CFG_CHANNEL_WEBHOOK && (code < 200 || code > 299)) {
        size_t k;
        body_keep[resp.len] = '\0';
        for (k = 0; k < resp.len; k++)
            if ((unsigned char)body_keep[k] < 0x20 || (unsigned char)body_keep[k] > 0x7e)
                body_keep[k] = ' ';
        snprintf(err, errlen, "HTTP %ld%s%.120s", code, resp.len ? ": " : "", body_keep);
        rc = -EIO;
    }
done:
    curl_slist_free_all(hdr);
    curl_slist_free_all(rcpt);
    free(mail.p);
    curl_easy_cleanup(c);
    return rc;
}

struct outbox_row {
    int64_t id, alert_id;
    int attempts;
    char channel[CFG_ALERT_NAME_MAX];
    char event[ALERT_EVENT_MAX];
    char *payload;
    size_t len;
};

static const struct cfg_alert_channel *channel_named(const alerts_t *a, const char *name)
{
    for (int i = 0; i < a->cfg.nchannels; i++)
        if (strcmp(a->cfg.channels[i].name, name) == 0)
            return &a->cfg.channels[i];
    return NULL;
}

/* Records attempt o at now (mu held): the delivery row and the outbox's new state. */
static int record(alerts_t *a, const struct outbox_row *o, bool ok, int status, const char *err,
                  int64_t now)
{
    sqlite3_stmt *s = NULL;
    int attempt = o->attempts + 1, rc = 0;
    bool last = ok || attempt > a->cfg.retry_max || !channel_named(a, o->channel);
    int64_t next =
        last ? 0 : now + alert_backoff_ms(attempt, a->cfg.retry_base_ms, a->cfg.retry_max_ms);

    if ((rc = exec(a, "BEGIN IMMEDIATE")) < 0)
        return rc;
    if ((rc = prepare(a,
                      "INSERT INTO alert_deliveries(alert_id, outbox_id, channel, event, attempt,"
                      " ok, http_status, error, ts_ms, next_ms) VALUES(?,?,?,?,?,?,?,?,?,?)",
                      &s)) < 0)
        goto fail;
    sqlite3_bind_int64(s, 1, o->alert_id);
    sqlite3_bind_int64(s, 2, o->id);
    sqlite3_bind_text(s, 3, o->channel, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, o->event, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 5, attempt);
    sqlite3_bind_int(s, 6, ok);
    sqlite3_bind_int(s, 7, status);
    sqlite3_bind_text(s, 8, err, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 9, now);
    sqlite3_bind_int64(s, 10, next);
    if (sqlite3_step(s) != SQLITE_DONE) {
        rc = db_fail(a, "record a delivery");
        goto fail;
    }
    sqlite3_finalize(s);
    s = NULL;
    /* done (delivered or given up): the payload is no longer needed */
    if ((rc = prepare(a,
                      last ? "DELETE FROM alert_outbox WHERE id = ?4"
                           : "UPDATE alert_outbox SET attempts = ?1, next_ms = ?2 WHERE id = ?4",
                      &s)) < 0)
        goto fail;
    if (!last) {
        sqlite3_bind_int(s, 1, attempt);
        sqlite3_bind_int64(s, 2, next);
    }
    sqlite3_bind_int64(s, 4, o->id);
    if (sqlite3_step(s) != SQLITE_DONE) {
        rc = db_fail(a, "update the outbox");
        goto fail;
    }
    sqlite3_finalize(s);
    return exec(a, "COMMIT");
fail:
    sqlite3_finalize(s);
    exec(a, "ROLLBACK");
    return rc;
}

int alerts_deliver(alerts_t *a, int64_t now, int64_t *next_ms)
{
    struct outbox_row rows[OUTBOX_BATCH];
    sqlite3_stmt *s = NULL;
    int n = 0, rc;

    memset(rows, 0, sizeof(rows));
    pthread_mutex_lock(&a->mu);
    rc = prepare(a,
                 "SELECT id, alert_id, attempts, channel, event, payload FROM alert_outbox"
                 " WHERE done = 0 AND next_ms <= ? ORDER BY next_ms, id LIMIT ?",
                 &s);
    if (rc == 0) {
        sqlite3_bind_int64(s, 1, now);
        sqlite3_bind_int(s, 2, OUTBOX_BATCH);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < OUTBOX_BATCH) {
            struct outbox_row *o = &rows[n];
            const void *p = sqlite3_column_text(s, 5);
            o->id = sqlite3_column_int64(s, 0);
            o->alert_id = sqlite3_column_int64(s, 1);
            o->attempts = sqlite3_column_int(s, 2);
            col_text(s, 3, o->channel, sizeof(o->channel));
            col_text(s, 4, o->event, sizeof(o->event));
            o->len = (size_t)sqlite3_column_bytes(s, 5);
            if (!(o->payload = malloc(o->len + 1)))
                break;
            memcpy(o->payload, p ? p : "", o->len);
            o->payload[o->len] = '\0';
            n++;
        }
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_fail(a, "read the outbox");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&a->mu);

    for (int i = 0; i < n && !atomic_load(&a->stopping); i++) {
        struct outbox_row *o = &rows[i];
        const struct cfg_alert_channel *ch = channel_named(a, o->channel);
        char err[ALERT_ERROR_MAX];
        int status = 0, e;

        if (!ch) {
            snprintf(err, sizeof(err), "channel %s is no longer configured", o->channel);
            e = -ENOENT;
        } else {
            e = a->send(a->send_arg, ch, o->event, o->payload, o->len, &status, err, sizeof(err));
        }
        if (atomic_load(&a->stopping) && e < 0)
            break; /* aborted by the stop: tried again after a restart, not counted */
        if (e < 0)
            log_warnx("alerts: alert %" PRId64 " %s to %s: attempt %d failed: %s", o->alert_id,
                      o->event, o->channel, o->attempts + 1, err);
        else
            log_debug("alerts: alert %" PRId64 " %s to %s: delivered", o->alert_id, o->event,
                      o->channel);
        pthread_mutex_lock(&a->mu);
        e = record(a, o, e == 0, status, e == 0 ? "" : err, now);
        pthread_mutex_unlock(&a->mu);
        if (e < 0 && rc == 0)
            rc = e;
    }
    for (int i = 0; i < n; i++)
        free(rows[i].payload);

    if (next_ms) {
        *next_ms = INT64_MAX;
        pthread_mutex_lock(&a->mu);
        if (prepare(a, "SELECT MIN(next_ms) FROM alert_outbox WHERE done = 0", &s) == 0) {
            if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
                *next_ms = sqlite3_column_int64(s, 0);
            sqlite3_finalize(s);
        }
        pthread_mutex_unlock(&a->mu);
    }
    return rc;
}

/* ---- reads and the ack --------------------------------------------------------------- */

int alerts_list(alerts_t *a, const struct alerts_filter *f, struct alert **out, int *n, int *total)
{
    static const char where[] =
        " FROM alerts WHERE (?1 = '' OR (?1 = 'open' AND state != 'resolved') OR state = ?1)"
        " AND (?2 IS NULL OR meter = ?2) AND (?3 IS NULL OR gateway = ?3)";
    sqlite3_stmt *s = NULL;
    struct alert *v = NULL;
    const char *state = f->state < 0             ? ""
                        : f->state == ALERT_NONE ? "open"
                                                 : alert_state_name(f->state);
    int limit = f->limit < 1 ? 1 : f->limit > ALERT_LIST_MAX ? ALERT_LIST_MAX : f->limit;
    int k = 0, rc;

    *out = NULL;
    *n = 0;
    if (!(v = calloc((size_t)limit, sizeof(*v))))
        return -ENOMEM;
    pthread_mutex_lock(&a->mu);
    /* one read transaction: the total and the rows are of one snapshot */
    if ((rc = exec(a, "BEGIN")) < 0)
        goto unlock;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !total)
            break;
        {
            char sql[1024];
            if (pass == 0)
                snprintf(sql, sizeof(sql), "SELECT " ALERT_COLS "%s ORDER BY id DESC LIMIT ?4",
                         where);
            else
                snprintf(sql, sizeof(sql), "SELECT COUNT(*)%s", where);
            if ((rc = prepare(a, sql, &s)) < 0)
                goto done;
        }
        sqlite3_bind_text(s, 1, state, -1, SQLITE_STATIC);
        if (f->meter)
            sqlite3_bind_text(s, 2, f->meter, -1, SQLITE_STATIC);
        if (f->gateway)
            sqlite3_bind_text(s, 3, f->gateway, -1, SQLITE_STATIC);
        if (pass == 0)
            sqlite3_bind_int(s, 4, limit);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            if (pass == 1)
                *total = sqlite3_column_int(s, 0);
            else if (k < limit)
                row_alert(s, &v[k++]);
        }
        if (rc != SQLITE_DONE) {
            rc = db_fail(a, "list alerts");
            goto done;
        }
        sqlite3_finalize(s);
        s = NULL;
    }
    rc = 0;
done:
    sqlite3_finalize(s);
    exec(a, "COMMIT");
unlock:
    pthread_mutex_unlock(&a->mu);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

int alerts_get(alerts_t *a, int64_t id, struct alert *out, struct alert_delivery **d, int *nd)
{
    sqlite3_stmt *s = NULL;
    struct alert_delivery *v = NULL;
    int n = 0, cap = 0, rc;

    *d = NULL;
    *nd = 0;
    pthread_mutex_lock(&a->mu);
    if ((rc = load_alert(a, id, out)) < 0)
        goto done;
    if ((rc = prepare(a,
                      "SELECT id, channel, event, attempt, ok, http_status, error, ts_ms, next_ms"
                      " FROM alert_deliveries WHERE alert_id = ? ORDER BY id LIMIT 1000",
                      &s)) < 0)
        goto done;
    sqlite3_bind_int64(s, 1, id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct alert_delivery *x;
        if (n == cap) {
            struct alert_delivery *nv;
            cap = cap ? cap * 2 : 16;
            if (!(nv = realloc(v, (size_t)cap * sizeof(*v)))) {
                rc = -ENOMEM;
                goto done;
            }
            v = nv;
        }
        x = &v[n++];
        memset(x, 0, sizeof(*x));
        x->id = sqlite3_column_int64(s, 0);
        col_text(s, 1, x->channel, sizeof(x->channel));
        col_text(s, 2, x->event, sizeof(x->event));
        x->attempt = sqlite3_column_int(s, 3);
        x->ok = sqlite3_column_int(s, 4) != 0;
        x->http_status = sqlite3_column_int(s, 5);
        col_text(s, 6, x->error, sizeof(x->error));
        x->ts_ms = sqlite3_column_int64(s, 7);
        x->next_ms = sqlite3_column_int64(s, 8);
    }
    rc = rc == SQLITE_DONE ? 0 : db_fail(a, "list deliveries");
done:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&a->mu);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *d = v;
    *nd = n;
    return 0;
}

int alerts_ack(alerts_t *a, int64_t id, const char *user, int64_t now, struct alert *out)
{
    sqlite3_stmt *s = NULL;
    int rc;

    pthread_mutex_lock(&a->mu);
    if ((rc = exec(a, "BEGIN IMMEDIATE")) < 0)
        goto out;
    if ((rc = load_alert(a, id, out)) < 0)
        goto rollback;
    if (out->state == ALERT_RESOLVED) {
        rc = -EALREADY;
        goto rollback;
    }
    if (out->state == ALERT_FIRING) {
        if ((rc = prepare(a,
                          "UPDATE alerts SET state = 'acknowledged', acked_ms = ?, acked_by = ?,"
                          " updated_ms = ? WHERE id = ?",
                          &s)) < 0)
            goto rollback;
        sqlite3_bind_int64(s, 1, now);
        sqlite3_bind_text(s, 2, user, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, now);
        sqlite3_bind_int64(s, 4, id);
        if (sqlite3_step(s) != SQLITE_DONE) {
            rc = db_fail(a, "acknowledge");
            goto rollback;
        }
        sqlite3_finalize(s);
        s = NULL;
        if ((rc = load_alert(a, id, out)) < 0)
            goto rollback;
        log_info("alerts: alert %" PRId64 " (%s) acknowledged by %s", id, out->rule, user);
    }
    rc = exec(a, "COMMIT");
    goto out;
rollback:
    sqlite3_finalize(s);
    s = NULL;
    exec(a, "ROLLBACK");
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

const struct cfg_alerts *alerts_config(const alerts_t *a)
{
    return &a->cfg;
}

void alerts_set_sender(alerts_t *a, alerts_send_fn fn, void *arg)
{
    a->send = fn ? fn : curl_send;
    a->send_arg = fn ? arg : a;
}

/* ---- the thread ---------------------------------------------------------------------- */

static void *run(void *arg)
{
    alerts_t *a = arg;
    int64_t next_eval = mono_ms();

    pthread_mutex_lock(&a->wmu);
    while (!atomic_load(&a->stopping)) {
        int64_t mono = mono_ms(), next_due = INT64_MAX, wait, wall;
        struct timespec until;

        pthread_mutex_unlock(&a->wmu);
        if (mono >= next_eval) {
            if (alerts_evaluate(a, now_ms()) < 0)
                log_warnx("alerts: an evaluation failed (see above); trying again later");
            else
                log_debug("alerts: %d rules evaluated in %lld ms", a->cfg.nrules,
                          (long long)(mono_ms() - mono));
            next_eval = mono + (int64_t)a->cfg.interval_s * 1000;
        }
        alerts_deliver(a, now_ms(), &next_due);
        pthread_mutex_lock(&a->wmu);
        mono = mono_ms();
        wall = now_ms();
        wait = next_eval - mono;
        if (next_due != INT64_MAX && next_due - wall < wait)
            wait = next_due - wall;
        if (wait < 10)
            wait = 10;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += wait / 1000;
        until.tv_nsec += (wait % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (!atomic_load(&a->stopping))
            pthread_cond_timedwait(&a->wcond, &a->wmu, &until);
    }
    pthread_mutex_unlock(&a->wmu);
    return NULL;
}

/* Open alerts of rules that are no longer configured resolve (without a notification). */
static int resolve_orphans(alerts_t *a, int64_t now)
{
    sqlite3_stmt *s = NULL;
    char sql[256 + CFG_ALERT_RULES_MAX * 4];
    size_t n;
    int rc;

    n = (size_t)snprintf(sql, sizeof(sql),
                         "UPDATE alerts SET state = 'resolved', resolved_ms = ?1, updated_ms = ?1,"
                         " message = message || ' (rule removed)' WHERE state != 'resolved'"
                         " AND rule NOT IN (''");
    for (int i = 0; i < a->cfg.nrules && n < sizeof(sql) - 8; i++)
        n += (size_t)snprintf(sql + n, sizeof(sql) - n, ",?%d", i + 2);
    snprintf(sql + n, sizeof(sql) - n, ")");
    if ((rc = prepare(a, sql, &s)) < 0)
        return rc;
    sqlite3_bind_int64(s, 1, now);
    for (int i = 0; i < a->cfg.nrules; i++)
        sqlite3_bind_text(s, i + 2, a->cfg.rules[i].name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_fail(a, "resolve alerts of removed rules");
    if (rc == 0 && sqlite3_changes(a->db) > 0)
        log_info("alerts: %d open alert%s of removed rules resolved", sqlite3_changes(a->db),
                 sqlite3_changes(a->db) == 1 ? "" : "s");
    sqlite3_finalize(s);
    return rc;
}

static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int alerts_start(const struct cfg_alerts *cfg, const char *db_path, store_t *st, bool thread,
                 alerts_t **out, char *err, size_t errlen)
{
    static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
    pthread_condattr_t ca;
    alerts_t *a;
    int rc;

    *out = NULL;
    if (!(a = calloc(1, sizeof(*a)))) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    a->cfg = *cfg;
    a->st = st;
    a->send = curl_send;
    a->send_arg = a;
    atomic_init(&a->stopping, false);
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->wmu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->wcond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_once(&curl_once, curl_init);
    if (sqlite3_open_v2(db_path, &a->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", db_path, a->db ? sqlite3_errmsg(a->db) : "out of memory");
        rc = -EIO;
        goto fail;
    }
    sqlite3_busy_timeout(a->db, BUSY_TIMEOUT_MS);
    if ((rc = exec(a, "PRAGMA journal_mode=WAL")) < 0 || (rc = exec(a, schema)) < 0 ||
        (rc = resolve_orphans(a, now_ms())) < 0) {
        snprintf(err, errlen, "%s: cannot set up the alert tables: %s", db_path,
                 sqlite3_errmsg(a->db));
        goto fail;
    }
    if (thread) {
        if ((rc = -pthread_create(&a->thread, NULL, run, a)) < 0) {
            snprintf(err, errlen, "cannot start the thread: %s", strerror(-rc));
            goto fail;
        }
        a->threaded = true;
    }
    *out = a;
    return 0;
fail:
    alerts_stop(a);
    return rc;
}

void alerts_stop(alerts_t *a)
{
    if (!a)
        return;
    if (a->threaded) {
        pthread_mutex_lock(&a->wmu);
        atomic_store(&a->stopping, true);
        pthread_cond_broadcast(&a->wcond);
        pthread_mutex_unlock(&a->wmu);
        pthread_join(a->thread, NULL);
    }
    sqlite3_close(a->db);
    pthread_cond_destroy(&a->wcond);
    pthread_mutex_destroy(&a->wmu);
    pthread_mutex_destroy(&a->mu);
    explicit_bzero(&a->cfg, sizeof(a->cfg)); /* secrets */
    free(a);
}
