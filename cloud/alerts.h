/*
 * alerts: meter-cloud's alert rules, their states and their notifications.
 *
 * An evaluator thread checks the configured rules (config.h, struct cfg_alerts) every
 * alerts.interval_s against the store's read functions (store.h): a meter with no good
 * reading for after_s, a gateway offline (its retained status, or nothing from it for
 * after_s), data gaps open on a gateway, a quantity past a threshold for for_s, today's
 * usage above a limit, a prepaid balance that lasts fewer than N days (the same forecast
 * as GET /api/v1/meters/{id}/kpi: usage_forecast() over the last 7 local days).
 *
 * One alert is one rule about one subject (a meter or a gateway). Its states:
 *     (none) --condition--> firing --ack--> acknowledged
 *     firing | acknowledged --condition clears--> resolved
 * A firing alert is notified when it fires, again every alerts.repeat_s until it is
 * acknowledged (a reminder), and when it resolves. A subject whose condition comes back
 * after a resolve gets a new alert.
 *
 * Each notification goes to each channel of its rule (a webhook: JSON POST, signed with
 * HMAC-SHA256 when the channel has a secret; e-mail over SMTP) through an outbox: every
 * attempt is recorded with its status, and a failed one is retried after retry_base_ms,
 * doubling up to retry_max_ms, at most retry_max more times. An outbox row is deleted once
 * it is delivered or given up; its attempts stay with the alert.
 *
 * State lives in the cloud's database file (tables alerts, alert_outbox,
 * alert_deliveries) through a connection of this module's own, so it survives restarts.
 *
 * Not here: MQTT notifications (ingest's connection offers no way to publish).
 *
 * Errors: int functions return 0 or a negative errno: -ENOENT (no such alert), -EINVAL,
 * -ENOMEM, -EIO (the database failed; logged).
 */
#ifndef MLK_CLOUD_ALERTS_H
#define MLK_CLOUD_ALERTS_H

#include "config.h"
#include "store.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct alerts alerts_t;

#define ALERT_STATE_MAX 16
#define ALERT_MESSAGE_MAX 256
#define ALERT_ERROR_MAX 256
#define ALERT_EVENT_MAX 16
#define ALERT_USER_MAX 65
#define ALERT_LIST_MAX 1000 /* alerts listed at most at once */

/* ---- the pure parts (unit-tested on their own) ---- */

/* What one evaluation says of a rule's subject. */
enum alert_cond {
    ALERT_COND_HOLD,  /* neither: keep the state (not enough data, or within hysteresis) */
    ALERT_COND_FIRE,  /* the condition holds */
    ALERT_COND_CLEAR, /* it does not */
};

enum alert_state { ALERT_NONE, ALERT_FIRING, ALERT_ACKED, ALERT_RESOLVED };

enum alert_action {
    ALERT_ACT_NONE,
    ALERT_ACT_FIRE,    /* a new alert: notify "firing" */
    ALERT_ACT_REMIND,  /* still firing, not acknowledged: notify "reminder" */
    ALERT_ACT_RESOLVE, /* cleared: notify "resolved" */
};

/* "firing", "acknowledged", "resolved" ("" for ALERT_NONE); alert_state_parse: -1 when
 * name is none of them. */
const char *alert_state_name(enum alert_state s);
int alert_state_parse(const char *name);

/* The state machine: given the current state of a subject's alert (ALERT_NONE or
 * ALERT_RESOLVED when it has no open one) and when it was last notified, what c does at
 * now. Updates *state and, on a notification, *notified_ms. repeat_ms 0: no reminders. */
enum alert_action alert_step(enum alert_state *state, int64_t *notified_ms, enum alert_cond c,
                             int64_t now, int64_t repeat_ms);

/* The delay before retry number attempt (1, 2, ...): base_ms doubled attempt-1 times, at
 * most max_ms. */
int64_t alert_backoff_ms(int attempt, int base_ms, int max_ms);

/* A meter's silence: fires when its newest good reading (has_ok, last_ok_ms) is older than
 * after_ms, or there is none and it was first seen that long ago; clears when its newest
 * reading is good and recent. */
enum alert_cond alert_cond_silent(bool has_ok, int64_t last_ok_ms, int64_t first_seen_ms,
                                  int64_t now, int64_t after_ms);

/* A gateway: fires when its status is "offline" since status_ms, at least after_ms; or,
 * when it is not offline, when it was last heard from (has_heard, heard_ms: its newest
 * readings batch, health message or online status) at least after_ms ago; clears when it is
 * not offline and was heard from recently. Never heard from: holds. */
enum alert_cond alert_cond_gateway(const char *status, int64_t status_ms, bool has_heard,
                                   int64_t heard_ms, int64_t now, int64_t after_ms);

/* A threshold over a quantity's readings: v[0..n) at ts[0..n), newest first, all of
 * [now - for_ms, now], plus the one reading before that window (has_before, before_v).
 * Fires when every one of them is past limit (above it, or below it with below) and so
 * is the one before the window (so the value has been past limit for the whole window;
 * with for_ms 0 only the newest counts); clears when the newest is not past limit; else
 * holds. No readings: holds. */
enum alert_cond alert_cond_threshold(const double *v, int n, bool has_before, double before_v,
                                     double limit, bool below, int64_t for_ms);

/* ---- the subsystem ---- */

/* Sends one notification (json: the payload, len bytes) to channel ch. The default sends
 * with libcurl; tests may swap in another (alerts_set_sender). Returns 0 when the channel
 * took it; else a negative errno with err (errlen bytes) saying why. *http_status: the
 * HTTP status or SMTP reply code seen, 0 when none. */
typedef int (*alerts_send_fn)(void *arg, const struct cfg_alert_channel *ch, const char *event,
                              const char *json, size_t len, int *http_status, char *err,
                              size_t errlen);

/* Opens the alert tables in the SQLite database db_path (creating them), next to the store
 * st, for the rules of cfg (copied). With thread, starts the evaluator thread; without,
 * alerts_evaluate() and alerts_deliver() are called by the caller (tests). On failure
 * writes why to err. */
int alerts_start(const struct cfg_alerts *cfg, const char *db_path, store_t *st, bool thread,
                 alerts_t **out, char *err, size_t errlen);

/* Stops the thread (an attempt in progress is aborted) and frees a; NULL is allowed. */
void alerts_stop(alerts_t *a);

/* Replaces the sender (NULL: the default). Call before anything is delivered. */
void alerts_set_sender(alerts_t *a, alerts_send_fn fn, void *arg);

/* One evaluation of every rule at now (wall clock ms): changes states and queues their
 * notifications. */
int alerts_evaluate(alerts_t *a, int64_t now);

/* Makes every delivery attempt that is due at now; *next_ms (may be NULL): when the next
 * one is due, or INT64_MAX. */
int alerts_deliver(alerts_t *a, int64_t now, int64_t *next_ms);

/* The configuration the rules came from. */
const struct cfg_alerts *alerts_config(const alerts_t *a);

struct alert {
    int64_t id;
    char rule[CFG_ALERT_NAME_MAX];
    enum cfg_alert_kind kind;
    char meter[CFG_ID_MAX];   /* "" for gateway rules */
    char gateway[CFG_ID_MAX]; /* the meter's gateway for meter rules; "" when not known */
    enum alert_state state;
    char message[ALERT_MESSAGE_MAX];
    bool has_value;
    double value; /* the value that made it fire (or its latest) */
    int64_t fired_ms, updated_ms;
    int64_t acked_ms; /* 0: not acknowledged */
    char acked_by[ALERT_USER_MAX];
    int64_t resolved_ms; /* 0: not resolved */
    int64_t notified_ms; /* last notification queued */
    int reminders;
};

struct alert_delivery {
    int64_t id;
    char channel[CFG_ALERT_NAME_MAX];
    char event[ALERT_EVENT_MAX]; /* "firing", "reminder", "resolved" */
    int attempt;                 /* 1, 2, ... */
    bool ok;
    int http_status;
    char error[ALERT_ERROR_MAX];
    int64_t ts_ms;
    int64_t next_ms; /* when it is retried; 0: not (delivered, or given up) */
};

struct alerts_filter {
    int state;           /* an enum alert_state; -1: any; ALERT_NONE: open (not resolved) */
    const char *meter;   /* NULL: any */
    const char *gateway; /* NULL: any */
    int limit;           /* 1..ALERT_LIST_MAX */
};

/* Alerts matching f, newest first: *out malloc'd (free() it), *n entries. *total: how many
 * match in all (may be NULL). */
int alerts_list(alerts_t *a, const struct alerts_filter *f, struct alert **out, int *n, int *total);

/* One alert and its delivery attempts (*d malloc'd, oldest first, *nd; free() it). */
int alerts_get(alerts_t *a, int64_t id, struct alert *out, struct alert_delivery **d, int *nd);

/* Acknowledges alert id as user at now: firing -> acknowledged (no more reminders).
 * *out: the alert afterwards. -ENOENT; -EALREADY when it is resolved (then *out is
 * filled); acknowledging an acknowledged alert changes nothing and returns 0. */
int alerts_ack(alerts_t *a, int64_t id, const char *user, int64_t now, struct alert *out);

/* An alert as the API and the notifications show it (a new object; NULL: out of memory). */
cJSON *alerts_alert_json(const struct alert *al);

#endif
