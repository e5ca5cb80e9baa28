/* uplink: see uplink.h. */
#include "uplink.h"
#include "log.h"
#include "timeutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INFLIGHT_CAP 1000
#define ACK_MAX_PAYLOAD 16384
#define ACK_MISSING_MAX 64 /* missing ranges read from one ack (the cloud sends up to 32) */
#define LOSS_RETRY_MS 10000
#define HEALTH_MAX 65536
#define UPLINK_DRAIN_MS 3000 /* a clean stop waits this long for the last acks */
#define TOPIC_MAX 256
#define SENT_MAX 4096 /* batches published and not yet confirmed, remembered */
#define RESEND_MAX 64 /* seq ranges waiting to be published again */

/* A published batch not yet confirmed: its seq range and its place in publishing order. */
struct sent {
    uint64_t first, last, no;
    int count;
};

struct range {
    uint64_t a, b;
};

struct uplink {
    const struct agent_cfg *cfg;
    queue_t *q;
    uplink_health_fn health_fn;
    uplink_cmd_fn cmd_fn;
    void *health_arg;
    atomic_int maintenance;
    struct mosquitto *mosq;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, connected, woken;
    /* Publishing position. head: everything up to it has been published oldest-first.
     * In live mode (a backlog after an outage) the newest readings after live_start are
     * published from live on, alternating with the backlog up to live_start. */
    uint64_t head, live_start, live;
    int live_mode, turn_live;
    uint64_t acked;      /* the cloud's upto for our stream */
    int64_t progress_ms; /* mono time the cloud last confirmed something new */
    int64_t loss_pub_ms, health_ms, started_ms;
    int ninflight;
    int inflight[INFLIGHT_CAP]; /* mids awaiting PUBACK */
    /* The window: batches published and not yet confirmed by the cloud (oldest first), the
     * readings in them, and the ranges found lost in transit, to publish again first. */
    struct sent *sent;
    int nsent;
    uint64_t send_no;
    long unconfirmed;
    struct range resend[RESEND_MAX];
    int nresend;
    char t_readings[TOPIC_MAX], t_status[TOPIC_MAX], t_ack[TOPIC_MAX], t_loss[TOPIC_MAX],
        t_health[TOPIC_MAX], t_cmd[TOPIC_MAX], t_reply[TOPIC_MAX];
    struct uplink_stats stats;
};

static void status_payload(const uplink_t *u, char *buf, size_t len, const char *state)
{
    snprintf(buf, len, "{\"state\":\"%s\",\"ts\":%lld,\"version\":\"%s\",\"maintenance\":%s}",
             state, (long long)now_ms(), MLK_VERSION,
             atomic_load(&u->maintenance) ? "true" : "false");
}

/* --- Home Assistant discovery ----------------------------------------------------------- */

/* Home Assistant's node and object ids take [A-Za-z0-9_-]: our ids may also have '.'. */
static void ha_id(const char *in, char *out, size_t len)
{
    size_t i;
    for (i = 0; in[i] && i + 1 < len; i++) {
        char ch = in[i];
        out[i] = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                         ch == '-' || ch == '_'
                     ? ch
                     : '_';
    }
    out[i] = '\0';
}

static int ha_topic(const struct agent_cfg *cfg, const struct meter_cfg *m, int qty, char *buf,
                    size_t len)
{
    char gw[WIRE_ID_MAX], meter[WIRE_ID_MAX];
    int n;

    ha_id(cfg->gateway_id, gw, sizeof(gw));
    ha_id(m->id, meter, sizeof(meter));
    n = snprintf(buf, len, "%s/sensor/%s/%s_%s/config", cfg->ha_prefix, gw, meter,
                 qty_at(qty)->name);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

struct ha_class {
    const char *device_class; /* NULL: none */
    const char *state_class;
    const char *unit; /* NULL: none */
};

static struct ha_class ha_class_of(int qty)
{
    const struct quantity *q = qty_at(qty);
    struct ha_class c = {NULL, "measurement", q->unit};

    if (q->kind == QTY_COUNTER) {
        c.device_class = "energy";
        c.state_class = "total_increasing";
    } else if (q->kind == QTY_BALANCE) {
        c.state_class = "total";
        c.unit = NULL; /* the meter's currency is not known */
    } else if (strcmp(q->name, "power_factor") == 0) {
        c.device_class = "power_factor";
        c.unit = NULL; /* a ratio; Home Assistant knows "%" or none */
    } else if (strcmp(q->name, "reactive_power") == 0) {
        c.device_class = "reactive_power";
    } else if (strcmp(q->name, "apparent_power") == 0) {
        c.device_class = "apparent_power";
    } else if (strncmp(q->name, "power", 5) == 0) {
        c.device_class = "power";
    } else if (strncmp(q->name, "voltage", 7) == 0) {
        c.device_class = "voltage";
    } else if (strncmp(q->name, "current", 7) == 0) {
        c.device_class = "current";
    } else if (strcmp(q->name, "frequency") == 0) {
        c.device_class = "frequency";
    }
    return c;
}

/* "energy_import" -> "Energy import", "voltage_l1" -> "Voltage L1". */
static void ha_name(const char *qty, char *buf, size_t len)
{
    size_t i;
    for (i = 0; qty[i] && i + 1 < len; i++) {
        char ch = qty[i] == '_' ? ' ' : qty[i];
        if (i == 0 || (qty[i - 1] == '_' && ch == 'l' && qty[i + 1] >= '1' && qty[i + 1] <= '3'))
            ch = (char)(ch - 'a' + 'A');
        buf[i] = ch;
    }
    buf[i] = '\0';
}

/* The discovery config of quantity qty of meter m (a malloc'd string, or NULL). */
static char *ha_payload(const struct agent_cfg *cfg, const struct meter_cfg *m, int qty)
{
    struct ha_class c = ha_class_of(qty);
    char gw[WIRE_ID_MAX], meter[WIRE_ID_MAX], buf[TOPIC_MAX + 64], name[64];
    cJSON *o = cJSON_CreateObject(), *dev, *av, *a;
    char *out = NULL;

    if (!o)
        return NULL;
    ha_id(cfg->gateway_id, gw, sizeof(gw));
    ha_id(m->id, meter, sizeof(meter));
    ha_name(qty_at(qty)->name, name, sizeof(name));
    cJSON_AddStringToObject(o, "name", name);
    snprintf(buf, sizeof(buf), "meterlink_%s_%s_%s", gw, meter, qty_at(qty)->name);
    cJSON_AddStringToObject(o, "unique_id", buf);
    snprintf(buf, sizeof(buf), "%s_%s", meter, qty_at(qty)->name);
    cJSON_AddStringToObject(o, "object_id", buf);
    snprintf(buf, sizeof(buf), "%s/%s/state/%s", cfg->mqtt_prefix, cfg->gateway_id, m->id);
    cJSON_AddStringToObject(o, "state_topic", buf);
    snprintf(buf, sizeof(buf), "{{ value_json.%s }}", qty_at(qty)->name);
    cJSON_AddStringToObject(o, "value_template", buf);
    if (c.unit)
        cJSON_AddStringToObject(o, "unit_of_measurement", c.unit);
    if (c.device_class)
        cJSON_AddStringToObject(o, "device_class", c.device_class);
    cJSON_AddStringToObject(o, "state_class", c.state_class);
    /* Available while the gateway is online and the meter answers. */
    av = cJSON_AddArrayToObject(o, "availability");
    if (av && (a = cJSON_CreateObject())) {
        snprintf(buf, sizeof(buf), "%s/%s/status", cfg->mqtt_prefix, cfg->gateway_id);
        cJSON_AddStringToObject(a, "topic", buf);
        cJSON_AddStringToObject(a, "value_template", "{{ value_json.state }}");
        cJSON_AddItemToArray(av, a);
    }
    if (av && (a = cJSON_CreateObject())) {
        snprintf(buf, sizeof(buf), "%s/%s/state/%s", cfg->mqtt_prefix, cfg->gateway_id, m->id);
        cJSON_AddStringToObject(a, "topic", buf);
        cJSON_AddStringToObject(a, "value_template",
                                "{{ 'online' if value_json.online else 'offline' }}");
        cJSON_AddItemToArray(av, a);
    }
    cJSON_AddStringToObject(o, "availability_mode", "all");
    if ((dev = cJSON_AddObjectToObject(o, "device"))) {
        cJSON *ids = cJSON_AddArrayToObject(dev, "identifiers");
        snprintf(buf, sizeof(buf), "meterlink_%s_%s", gw, meter);
        if (ids)
            cJSON_AddItemToArray(ids, cJSON_CreateString(buf));
        cJSON_AddStringToObject(dev, "name", m->id);
        cJSON_AddStringToObject(dev, "model", m->profile->name);
        cJSON_AddStringToObject(dev, "manufacturer", "Meterlink");
        snprintf(buf, sizeof(buf), "meterlink_%s", gw);
        cJSON_AddStringToObject(dev, "via_device", buf);
    }
    out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

static bool profile_has_qty(const struct profile *p, int qty)
{
    for (int i = 0; i < p->nregs; i++)
        if (p->regs[i].qty == qty)
            return true;
    return false;
}

/* Publishes every discovery config of cfg (retained). Called with u->mu held. */
static void ha_publish_all(uplink_t *u, const struct agent_cfg *cfg)
{
    char topic[TOPIC_MAX];
    int n = 0;

    if (!cfg->ha_enabled)
        return;
    for (int i = 0; i < cfg->nmeters; i++) {
        const struct meter_cfg *m = &cfg->meters[i];
        for (int q = 0; q < qty_count(); q++) {
            char *payload;
            if (!profile_has_qty(m->profile, q) || ha_topic(cfg, m, q, topic, sizeof(topic)) < 0)
                continue;
            if (!(payload = ha_payload(cfg, m, q)))
                continue;
            mosquitto_publish(u->mosq, NULL, topic, (int)strlen(payload), payload, 1, true);
            free(payload);
            n++;
        }
    }
    log_debug("uplink: %d Home Assistant discovery configs published", n);
}

/* Removes (an empty retained message) the discovery configs of old that next does not
 * have. Called with u->mu held. */
static void ha_remove_missing(uplink_t *u, const struct agent_cfg *old,
                              const struct agent_cfg *next)
{
    char topic[TOPIC_MAX], t2[TOPIC_MAX];

    if (!old->ha_enabled)
        return;
    for (int i = 0; i < old->nmeters; i++) {
        const struct meter_cfg *m = &old->meters[i];
        int j = next && next->ha_enabled ? cfg_meter_find(next, m->id) : -1;
        for (int q = 0; q < qty_count(); q++) {
            if (!profile_has_qty(m->profile, q) || ha_topic(old, m, q, topic, sizeof(topic)) < 0)
                continue;
            if (j >= 0 && profile_has_qty(next->meters[j].profile, q) &&
                ha_topic(next, &next->meters[j], q, t2, sizeof(t2)) == 0 && strcmp(topic, t2) == 0)
                continue;
            mosquitto_publish(u->mosq, NULL, topic, 0, NULL, 1, true);
        }
    }
}

/* Forgets the window (everything unconfirmed will be published again). */
static void window_reset(uplink_t *u)
{
    u->nsent = 0;
    u->unconfirmed = 0;
    u->nresend = 0;
}

static void window_count(uplink_t *u)
{
    long n = 0;
    for (int i = 0; i < u->nsent; i++)
        n += u->sent[i].count;
    u->unconfirmed = n;
}

/* Drops the batches for which keep() says no; returns how many were dropped. */
static int window_drop(uplink_t *u, int (*keep)(const struct sent *, const void *), const void *arg)
{
    int k = 0, n = u->nsent;
    for (int i = 0; i < n; i++)
        if (keep(&u->sent[i], arg))
            u->sent[k++] = u->sent[i];
    u->nsent = k;
    window_count(u);
    return n - k;
}

static int keep_above(const struct sent *s, const void *arg)
{
    return s->last > *(const uint64_t *)arg;
}

/* The confirmed part of an ack: seqs in (upto, trust] outside the missing ranges. */
struct confirmed {
    uint64_t upto, trust;
    const struct range *miss;
    int nmiss;
};

static int keep_unconfirmed(const struct sent *s, const void *arg)
{
    const struct confirmed *c = arg;
    if (s->first <= c->upto || s->last > c->trust)
        return 1;
    for (int i = 0; i < c->nmiss; i++)
        if (s->first <= c->miss[i].b && c->miss[i].a <= s->last)
            return 1;
    return 0;
}

/* Queues [a, b] to be published again, merged with what is queued already. Returns 1 when
 * something was added. */
static int resend_add(uplink_t *u, uint64_t a, uint64_t b)
{
    for (int i = 0; i < u->nresend; i++) {
        struct range *r = &u->resend[i];
        if (a >= r->a && b <= r->b)
            return 0;
        if (a <= r->b + 1 && r->a <= b + 1) {
            r->a = a < r->a ? a : r->a;
            r->b = b > r->b ? b : r->b;
            return 1;
        }
    }
    if (u->nresend == RESEND_MAX)
        return 0; /* the timeout sends it again */
    u->resend[u->nresend].a = a;
    u->resend[u->nresend].b = b;
    u->nresend++;
    return 1;
}

/*
 * Which of a missing range [a, b] is lost in transit, not merely on its way. The broker
 * delivers our batches to the cloud in publishing order, and the cloud has seq b + 1 (a
 * missing range ends below a seq it has). The earliest batch that carried b + 1 is the
 * latest one the cloud has surely seen; a seq of [a, b] whose every copy was published
 * before that batch is lost; one published since, or never, is not (yet) missing.
 */
static void find_lost(uplink_t *u, uint64_t a, uint64_t b)
{
    uint64_t ref = 0;

    for (int i = 0; i < u->nsent; i++)
        if (u->sent[i].first <= b + 1 && b + 1 <= u->sent[i].last && (!ref || u->sent[i].no < ref))
            ref = u->sent[i].no;
    if (!ref)
        return; /* b + 1 came from a batch we no longer track: no evidence */
    for (int i = 0; i < u->nsent; i++) {
        const struct sent *s = &u->sent[i];
        uint64_t x, y;
        int later = 0;
        if (s->no >= ref || s->last < a || s->first > b)
            continue;
        x = s->first > a ? s->first : a;
        y = s->last < b ? s->last : b;
        for (int j = 0; j < u->nsent && !later; j++)
            later = u->sent[j].no >= ref && u->sent[j].first <= y && x <= u->sent[j].last;
        if (later)
            continue; /* a newer copy is on its way */
        if (resend_add(u, x, y)) {
            u->stats.resends++;
            log_info("uplink: the cloud misses seq %llu..%llu (lost in transit); sending again",
                     (unsigned long long)x, (unsigned long long)y);
        }
    }
}

static void on_connect(struct mosquitto *mosq, void *arg, int rc)
{
    uplink_t *u = arg;
    char payload[200];

    if (rc != 0) {
        log_warnx("uplink: broker refused the connection: %s", mosquitto_connack_string(rc));
        return;
    }
    pthread_mutex_lock(&u->mu);
    log_info("uplink: connected to %s:%d", u->cfg->mqtt_host, u->cfg->mqtt_port);
    mosquitto_subscribe(mosq, NULL, u->t_ack, 1);
    mosquitto_subscribe(mosq, NULL, u->t_cmd, 1);
    status_payload(u, payload, sizeof(payload), "online");
    mosquitto_publish(mosq, NULL, u->t_status, (int)strlen(payload), payload, 1, true);
    ha_publish_all(u, u->cfg);
    /* Start over from what the cloud confirmed: what was in flight is sent again. */
    u->connected = 1;
    {
        struct queue_stats qs;
        queue_get_stats(u->q, &qs);
        u->head = qs.oldest_seq > u->acked + 1 ? qs.oldest_seq - 1 : u->acked;
    }
    u->live_mode = 0;
    u->ninflight = 0;
    window_reset(u);
    u->progress_ms = mono_ms();
    u->loss_pub_ms = 0;
    u->stats.connected = 1;
    u->stats.reconnects++;
    u->woken = 1;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

static void on_disconnect(struct mosquitto *mosq, void *arg, int rc)
{
    uplink_t *u = arg;
    pthread_mutex_lock(&u->mu);
    if (u->connected && !u->stop)
        log_warnx("uplink: disconnected from broker (%s)",
                  rc == 0 ? "requested" : mosquitto_strerror(rc));
    u->connected = 0;
    u->stats.connected = 0;
    pthread_mutex_unlock(&u->mu);
}

static void on_publish(struct mosquitto *mosq, void *arg, int mid)
{
    uplink_t *u = arg;

    pthread_mutex_lock(&u->mu);
    for (int i = 0; i < u->ninflight; i++) {
        if (u->inflight[i] == mid) {
            u->inflight[i] = u->inflight[--u->ninflight];
            u->woken = 1;
            pthread_cond_signal(&u->cv);
            break;
        }
    }
    pthread_mutex_unlock(&u->mu);
}

/* A JSON number that is an integer in [lo, hi]. */
static int json_u64(const cJSON *it, double lo, double hi, uint64_t *out)
{
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) ||
        it->valuedouble != floor(it->valuedouble) || it->valuedouble < lo || it->valuedouble > hi)
        return -1;
    *out = (uint64_t)it->valuedouble;
    return 0;
}

/* Seqs of [a, b] below the oldest queued one, not already covered by a pending loss
 * record, are reported as not_queued. Called with u->mu held. */
static void report_not_queued(uplink_t *u, uint64_t a, uint64_t b, uint64_t oldest)
{
    struct qloss pend[64], l;
    int n = queue_losses(u->q, pend, 64);
    uint64_t hi = oldest ? (b < oldest ? b : oldest - 1) : b;

    while (a <= hi) {
        uint64_t end = hi;
        int covered = 0;
        for (int i = 0; i < n; i++) {
            if (strcmp(pend[i].stream, queue_stream(u->q)) != 0)
                continue;
            if (pend[i].first <= a && a <= pend[i].last) {
                a = pend[i].last + 1;
                covered = 1;
                break;
            }
            if (pend[i].first > a && pend[i].first - 1 < end)
                end = pend[i].first - 1;
        }
        if (covered)
            continue;
        memset(&l, 0, sizeof(l));
        snprintf(l.stream, sizeof(l.stream), "%s", queue_stream(u->q));
        l.first = a;
        l.last = end;
        l.count = end - a + 1;
        snprintf(l.reason, sizeof(l.reason), "not_queued");
        l.ts_ms = now_ms();
        queue_add_loss(u->q, &l);
        u->loss_pub_ms = 0; /* publish it now */
        a = end + 1;
    }
}

static void on_ack(uplink_t *u, const char *payload, int len)
{
    cJSON *root = NULL;
    const cJSON *stream, *missing, *it;
    uint64_t upto;
    struct queue_stats qs;
    struct range miss[ACK_MISSING_MAX];
    int nmiss;

    if (len <= 0 || len > ACK_MAX_PAYLOAD ||
        !(root = cJSON_ParseWithLength(payload, (size_t)len))) {
        log_warnx("uplink: ignoring an ack that is not JSON (%d bytes)", len);
        goto out;
    }
    stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    missing = cJSON_GetObjectItemCaseSensitive(root, "missing");
    if (!cJSON_IsString(stream) || !wire_stream_valid(stream->valuestring) ||
        json_u64(cJSON_GetObjectItemCaseSensitive(root, "upto"), 0, 9007199254740991.0, &upto) <
            0 ||
        (missing && !cJSON_IsArray(missing))) {
        log_warnx("uplink: ignoring a malformed ack");
        goto out;
    }
    pthread_mutex_lock(&u->mu);
    u->stats.acks++;
    queue_ack(u->q, stream->valuestring, upto);
    if (strcmp(stream->valuestring, queue_stream(u->q)) != 0) {
        pthread_mutex_unlock(&u->mu);
        goto out; /* an old stream's losses, now covered */
    }
    if (upto > u->acked) {
        u->acked = upto;
        u->stats.acked_upto = upto;
        u->progress_ms = mono_ms();
    }
    if (u->head < upto)
        u->head = upto;
    window_drop(u, keep_above, &upto);
    for (int i = 0; i < u->nresend; i++)
        if (u->resend[i].a <= upto)
            u->resend[i].a = upto + 1;
    queue_get_stats(u->q, &qs);
    nmiss = 0;
    cJSON_ArrayForEach(it, missing)
    {
        uint64_t a, b;
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 ||
            json_u64(cJSON_GetArrayItem(it, 0), 1, 9007199254740991.0, &a) < 0 ||
            json_u64(cJSON_GetArrayItem(it, 1), 1, 9007199254740991.0, &b) < 0 || b < a ||
            a <= upto || (nmiss > 0 && a <= miss[nmiss - 1].b) || nmiss == ACK_MISSING_MAX)
            continue;
        miss[nmiss].a = a;
        miss[nmiss].b = b;
        nmiss++;
        if (!qs.oldest_seq || a < qs.oldest_seq)
            report_not_queued(u, a, b, qs.oldest_seq);
    }
    if (nmiss > 0) {
        /* batches wholly received above upto are confirmed: they leave the window */
        struct confirmed c = {upto, miss[nmiss - 1].b + 1, miss, nmiss};
        if (window_drop(u, keep_unconfirmed, &c) > 0)
            u->progress_ms = mono_ms();
        for (int i = 0; i < nmiss; i++) {
            uint64_t a = miss[i].a;
            if (qs.oldest_seq && a < qs.oldest_seq)
                a = qs.oldest_seq;
            if (qs.oldest_seq && miss[i].b >= a)
                find_lost(u, a, miss[i].b);
        }
    }
    u->woken = 1;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
out:
    cJSON_Delete(root);
}

static void on_message(struct mosquitto *mosq, void *arg, const struct mosquitto_message *m)
{
    uplink_t *u = arg;
    if (strcmp(m->topic, u->t_ack) == 0)
        on_ack(u, m->payload, m->payloadlen);
    else if (strcmp(m->topic, u->t_cmd) == 0 && u->cmd_fn)
        u->cmd_fn(u->health_arg, u, m->payload ? m->payload : "",
                  m->payloadlen > 0 ? (size_t)m->payloadlen : 0);
}

/* Publishes one batch; returns 1 when published, 0 when there was nothing, -1 on error.
 * Called with u->mu held, so on_publish cannot look for the mid before it is recorded. */
static int publish_batch(uplink_t *u, uint64_t after, uint64_t until, uint64_t *last)
{
    struct qbatch b;
    int mid = 0, rc;

    rc = queue_fetch_sized(u->q, u->cfg->gateway_id, after, until, u->cfg->batch_max,
                           (size_t)u->cfg->batch_bytes, &b);
    if (rc <= 0)
        return rc < 0 ? -1 : 0;
    rc = mosquitto_publish(u->mosq, &mid, u->t_readings, (int)b.len, b.payload, 1, false);
    free(b.payload);
    if (rc != MOSQ_ERR_SUCCESS) {
        log_debug("uplink: publish failed: %s", mosquitto_strerror(rc));
        return -1;
    }
    u->inflight[u->ninflight++] = mid;
    *last = b.last_seq;
    u->sent[u->nsent].first = b.first_seq;
    u->sent[u->nsent].last = b.last_seq;
    u->sent[u->nsent].count = b.count;
    u->sent[u->nsent].no = ++u->send_no;
    u->nsent++;
    u->unconfirmed += b.count;
    u->stats.batches_sent++;
    u->stats.readings_sent += (uint64_t)b.count;
    log_debug("uplink: published seq %llu..%llu (%d readings)", (unsigned long long)b.first_seq,
              (unsigned long long)b.last_seq, b.count);
    return 1;
}

/* Publishes batches while there is room in flight. Called with u->mu held. */
static void publish_some(uplink_t *u)
{
    uint64_t newest = queue_next_seq(u->q) - 1;

    if (atomic_load(&u->maintenance))
        return; /* readings wait in the queue */
    if (!u->live_mode && newest > u->head && newest - u->head > 2 * (uint64_t)u->cfg->batch_max) {
        /* A backlog: from now on alternate between the newest and the oldest. */
        u->live_mode = 1;
        u->live_start = newest - (uint64_t)u->cfg->batch_max;
        u->live = u->live_start;
        log_info("uplink: %llu readings to catch up; sending live readings alongside",
                 (unsigned long long)(newest - u->head));
    }
    while (u->connected && !u->stop && u->ninflight < u->cfg->inflight_max &&
           u->ninflight < INFLIGHT_CAP && u->nsent < SENT_MAX &&
           (u->unconfirmed < u->cfg->window || u->nsent == 0)) {
        int rc;
        if (u->nresend > 0) {
            /* what was lost in transit goes first */
            struct range *r = &u->resend[0];
            uint64_t last = 0;
            rc = r->a <= r->b ? publish_batch(u, r->a - 1, r->b, &last) : 0;
            if (rc < 0)
                return;
            if (rc == 0 || last >= r->b) {
                memmove(&u->resend[0], &u->resend[1], sizeof(u->resend[0]) * (size_t)--u->nresend);
            } else {
                r->a = last + 1;
            }
            continue;
        }
        if (!u->live_mode) {
            if (publish_batch(u, u->head, 0, &u->head) <= 0)
                return;
            continue;
        }
        if (u->turn_live) {
            rc = publish_batch(u, u->live, 0, &u->live);
            u->turn_live = 0;
            if (rc < 0)
                return;
            if (rc > 0)
                continue;
        }
        u->turn_live = 1;
        rc = publish_batch(u, u->head, u->live_start, &u->head);
        if (rc < 0)
            return;
        if (rc == 0 || u->head >= u->live_start) {
            /* caught up with the live part: one cursor again */
            u->head = u->live > u->head ? u->live : u->head;
            u->live_mode = 0;
        }
    }
}

static void publish_losses(uplink_t *u)
{
    struct qloss l[64];
    int n = queue_losses(u->q, l, 64);
    char *buf = NULL;
    size_t cap = 256 + (size_t)n * 200;

    if (n == 0 || !(buf = malloc(cap)))
        goto out;
    /* one message per stream */
    for (int i = 0; i < n; i++) {
        size_t pos = 0;
        int first = 1;
        if (i > 0 && strcmp(l[i].stream, l[i - 1].stream) == 0)
            continue;
        pos += (size_t)snprintf(buf + pos, cap - pos,
                                "{\"v\":1,\"gw\":\"%s\",\"stream\":\"%s\",\"losses\":[",
                                u->cfg->gateway_id, l[i].stream);
        for (int j = i; j < n; j++) {
            if (strcmp(l[j].stream, l[i].stream) != 0)
                continue;
            pos += (size_t)snprintf(
                buf + pos, cap - pos,
                "%s{\"first\":%llu,\"last\":%llu,\"count\":%llu,\"reason\":\"%s\",\"ts\":%lld}",
                first ? "" : ",", (unsigned long long)l[j].first, (unsigned long long)l[j].last,
                (unsigned long long)l[j].count, l[j].reason, (long long)l[j].ts_ms);
            first = 0;
        }
        pos += (size_t)snprintf(buf + pos, cap - pos, "]}");
        if (pos < cap)
            mosquitto_publish(u->mosq, NULL, u->t_loss, (int)pos, buf, 1, false);
    }
out:
    free(buf);
}

static void publish_health(uplink_t *u)
{
    struct queue_stats qs;
    char *buf = malloc(HEALTH_MAX);
    int64_t now = now_ms(), up_s = (mono_ms() - u->started_ms) / 1000;
    int n, m;

    if (!buf)
        return;
    queue_get_stats(u->q, &qs);
    n = snprintf(
        buf, HEALTH_MAX,
        "{\"v\":1,\"gw\":\"%s\",\"ts\":%lld,\"uptime_s\":%lld,\"version\":\"%s\","
        "\"stream\":\"%s\",\"maintenance\":%s,\"queue\":{\"depth\":%ld,\"in_memory\":%ld,"
        "\"oldest_age_s\":%lld,\"bytes\":%lld,\"dropped\":%llu,\"disk_ok\":%s,"
        "\"losses_pending\":%d,\"commits\":%llu,\"pages_written\":%llu,"
        "\"pages_written_per_hour\":%.0f},"
        "\"uplink\":{\"connected\":%s,\"reconnects\":%llu,\"batches_sent\":%llu,"
        "\"readings_sent\":%llu,\"resends\":%llu,\"acked_upto\":%llu},",
        u->cfg->gateway_id, (long long)now, (long long)up_s, MLK_VERSION, queue_stream(u->q),
        atomic_load(&u->maintenance) ? "true" : "false", qs.depth, qs.mem_depth,
        (long long)(qs.oldest_ts ? (now - qs.oldest_ts) / 1000 : 0), (long long)qs.bytes,
        (unsigned long long)qs.dropped, qs.disk_ok ? "true" : "false", qs.losses_pending,
        (unsigned long long)qs.commits, (unsigned long long)qs.pages_written,
        up_s > 0 ? (double)qs.pages_written * 3600.0 / (double)up_s : 0.0,
        u->connected ? "true" : "false", (unsigned long long)u->stats.reconnects,
        (unsigned long long)u->stats.batches_sent, (unsigned long long)u->stats.readings_sent,
        (unsigned long long)u->stats.resends, (unsigned long long)u->acked);
    if (n < 0 || n >= HEALTH_MAX - 3)
        goto out;
    m = u->health_fn ? u->health_fn(u->health_arg, buf + n, (size_t)(HEALTH_MAX - n - 2)) : -1;
    if (m < 0) {
        static const char none[] = "\"buses\":[],\"meters\":[]";
        memcpy(buf + n, none, sizeof(none) - 1);
        m = (int)sizeof(none) - 1;
    }
    n += m;
    buf[n++] = '}';
    mosquitto_publish(u->mosq, NULL, u->t_health, n, buf, 0, false);
out:
    free(buf);
}

static void *uplink_main(void *arg)
{
    uplink_t *u = arg;

    pthread_mutex_lock(&u->mu);
    while (!u->stop) {
        struct timespec ts;
        int64_t now = mono_ms();

        queue_maintain(u->q);
        if (u->connected) {
            /* Nothing confirmed for too long while readings are out: send them again. */
            if ((u->head > u->acked || u->nsent > 0) &&
                now - u->progress_ms > u->cfg->ack_timeout_ms && !atomic_load(&u->maintenance)) {
                log_info("uplink: no ack for %d ms; sending seq %llu.. again",
                         u->cfg->ack_timeout_ms, (unsigned long long)(u->acked + 1));
                u->head = u->acked;
                u->live_mode = 0;
                window_reset(u);
                u->progress_ms = now;
                u->stats.resends++;
            }
            publish_some(u);
            if (now - u->loss_pub_ms >= LOSS_RETRY_MS && !atomic_load(&u->maintenance)) {
                publish_losses(u);
                u->loss_pub_ms = now;
            }
            if (u->cfg->health_interval_ms > 0 &&
                now - u->health_ms >= u->cfg->health_interval_ms) {
                publish_health(u);
                u->health_ms = now;
            }
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (!u->woken && !u->stop)
            if (pthread_cond_timedwait(&u->cv, &u->mu, &ts) == ETIMEDOUT)
                break;
        u->woken = 0;
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

int uplink_start(const struct agent_cfg *cfg, queue_t *q, const struct uplink_hooks *hooks,
                 bool maintenance, uplink_t **out)
{
    uplink_t *u = calloc(1, sizeof(*u));
    char client_id[96], will[160];
    const char *p = cfg->mqtt_prefix, *g = cfg->gateway_id;
    int rc;

    if (!u)
        return -ENOMEM;
    u->cfg = cfg;
    u->q = q;
    u->sent = calloc(SENT_MAX, sizeof(*u->sent));
    if (!u->sent) {
        free(u);
        return -ENOMEM;
    }
    u->health_fn = hooks ? hooks->health : NULL;
    u->cmd_fn = hooks ? hooks->command : NULL;
    u->health_arg = hooks ? hooks->arg : NULL;
    atomic_init(&u->maintenance, maintenance);
    u->started_ms = mono_ms();
    u->health_ms = mono_ms() - cfg->health_interval_ms + 2000; /* first one soon after start */
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    snprintf(u->t_readings, sizeof(u->t_readings), "%s/%s/readings", p, g);
    snprintf(u->t_status, sizeof(u->t_status), "%s/%s/status", p, g);
    snprintf(u->t_ack, sizeof(u->t_ack), "%s/%s/ack", p, g);
    snprintf(u->t_loss, sizeof(u->t_loss), "%s/%s/loss", p, g);
    snprintf(u->t_health, sizeof(u->t_health), "%s/%s/health", p, g);
    snprintf(u->t_cmd, sizeof(u->t_cmd), "%s/%s/cmd", p, g);
    snprintf(u->t_reply, sizeof(u->t_reply), "%s/%s/reply", p, g);
    snprintf(client_id, sizeof(client_id), "meter-agent-%s", g);

    mosquitto_lib_init();
    u->mosq = mosquitto_new(client_id, true, u);
    if (!u->mosq) {
        rc = -ENOMEM;
        goto fail;
    }
    mosquitto_connect_callback_set(u->mosq, on_connect);
    mosquitto_disconnect_callback_set(u->mosq, on_disconnect);
    mosquitto_publish_callback_set(u->mosq, on_publish);
    mosquitto_message_callback_set(u->mosq, on_message);
    /* exponential backoff from 1 s to reconnect_max_s between reconnect attempts */
    mosquitto_reconnect_delay_set(u->mosq, 1, (unsigned)cfg->mqtt_reconnect_max_s, true);
    mosquitto_int_option(u->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    snprintf(will, sizeof(will), "{\"state\":\"offline\",\"reason\":\"lost\"}");
    mosquitto_will_set(u->mosq, u->t_status, (int)strlen(will), will, 1, true);
    if (cfg->mqtt_username[0])
        mosquitto_username_pw_set(u->mosq, cfg->mqtt_username,
                                  cfg->mqtt_password[0] ? cfg->mqtt_password : NULL);
    /* connect_async + loop_start: a broker that is down at start is retried by the loop. */
    rc = mosquitto_connect_async(u->mosq, cfg->mqtt_host, cfg->mqtt_port, cfg->mqtt_keepalive);
    if (rc != MOSQ_ERR_SUCCESS)
        log_warnx("uplink: connect to %s:%d: %s (retrying)", cfg->mqtt_host, cfg->mqtt_port,
                  mosquitto_strerror(rc));
    if ((rc = mosquitto_loop_start(u->mosq)) != MOSQ_ERR_SUCCESS) {
        log_warnx("uplink: cannot start the MQTT loop: %s", mosquitto_strerror(rc));
        rc = -EIO;
        goto fail;
    }
    if ((rc = pthread_create(&u->thread, NULL, uplink_main, u)) != 0) {
        mosquitto_loop_stop(u->mosq, true);
        rc = -rc;
        goto fail;
    }
    *out = u;
    return 0;
fail:
    if (u->mosq)
        mosquitto_destroy(u->mosq);
    mosquitto_lib_cleanup();
    pthread_cond_destroy(&u->cv);
    pthread_mutex_destroy(&u->mu);
    free(u->sent);
    free(u);
    return rc;
}

void uplink_notify(uplink_t *u)
{
    pthread_mutex_lock(&u->mu);
    u->woken = 1;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

void uplink_get_stats(uplink_t *u, struct uplink_stats *st)
{
    pthread_mutex_lock(&u->mu);
    *st = u->stats;
    pthread_mutex_unlock(&u->mu);
}

void uplink_stop(uplink_t *u)
{
    char payload[200];
    int connected;
    int64_t drain_until = mono_ms() + UPLINK_DRAIN_MS;

    /* The pollers have stopped: give the cloud a moment to confirm what is queued, so a
     * clean stop leaves an empty queue when the network is fine. */
    pthread_mutex_lock(&u->mu);
    while (u->connected && u->acked + 1 < queue_next_seq(u->q) && mono_ms() < drain_until) {
        pthread_mutex_unlock(&u->mu);
        sleep_ms(20);
        pthread_mutex_lock(&u->mu);
    }
    u->stop = 1;
    connected = u->connected;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
    pthread_join(u->thread, NULL);
    if (connected) {
        int64_t deadline = mono_ms() + 2000;
        status_payload(u, payload, sizeof(payload), "offline");
        mosquitto_publish(u->mosq, NULL, u->t_status, (int)strlen(payload), payload, 1, true);
        /* let the loop thread send what is queued before the disconnect */
        while (mono_ms() < deadline && mosquitto_want_write(u->mosq))
            sleep_ms(10);
        sleep_ms(50);
    }
    mosquitto_disconnect(u->mosq);
    mosquitto_loop_stop(u->mosq, false);
    mosquitto_destroy(u->mosq);
    mosquitto_lib_cleanup();
    pthread_cond_destroy(&u->cv);
    pthread_mutex_destroy(&u->mu);
    free(u->sent);
    free(u);
}

void uplink_reconfigure(uplink_t *u, const struct agent_cfg *cfg)
{
    pthread_mutex_lock(&u->mu);
    if (u->connected)
        ha_remove_missing(u, u->cfg, cfg);
    u->cfg = cfg;
    if (u->connected)
        ha_publish_all(u, cfg);
    u->woken = 1;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

void uplink_forget(uplink_t *u, const struct agent_cfg *next)
{
    pthread_mutex_lock(&u->mu);
    if (u->connected)
        ha_remove_missing(u, u->cfg, next);
    pthread_mutex_unlock(&u->mu);
}

int uplink_reply(uplink_t *u, const char *payload, size_t len)
{
    int rc = mosquitto_publish(u->mosq, NULL, u->t_reply, (int)len, payload, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        log_warnx("uplink: cannot publish a command reply: %s", mosquitto_strerror(rc));
        return -EIO;
    }
    return 0;
}

void uplink_publish_state(uplink_t *u, const char *meter, const char *payload, size_t len)
{
    char topic[TOPIC_MAX];
    int n;

    if (atomic_load(&u->maintenance))
        return;
    /* prefix and gateway id are the same in every configuration this uplink runs */
    n = snprintf(topic, sizeof(topic), "%.*s/state/%s",
                 (int)(strlen(u->t_status) - strlen("/status")), u->t_status, meter);
    if (n < 0 || (size_t)n >= sizeof(topic))
        return;
    mosquitto_publish(u->mosq, NULL, topic, (int)len, payload, 0, true);
}

void uplink_set_maintenance(uplink_t *u, bool on)
{
    char payload[200];

    if (atomic_exchange(&u->maintenance, on) == (int)on)
        return;
    log_info("maintenance mode %s",
             on ? "on: readings are queued, not published" : "off: publishing the queue");
    pthread_mutex_lock(&u->mu);
    if (u->connected) {
        status_payload(u, payload, sizeof(payload), "online");
        mosquitto_publish(u->mosq, NULL, u->t_status, (int)strlen(payload), payload, 1, true);
    }
    if (!on)
        u->progress_ms = mono_ms(); /* the cloud had nothing to confirm meanwhile */
    u->woken = 1;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

bool uplink_maintenance(uplink_t *u)
{
    return atomic_load(&u->maintenance);
}
