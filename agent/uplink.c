/* uplink: see uplink.h. */
#include "uplink.h"
#include "log.h"
#include "timeutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INFLIGHT_CAP 1000
#define ACK_MAX_PAYLOAD 16384
#define LOSS_RETRY_MS 10000
#define HEALTH_MAX 65536
#define UPLINK_DRAIN_MS 3000 /* a clean stop waits this long for the last acks */

struct uplink {
    const struct agent_cfg *cfg;
    queue_t *q;
    uplink_health_fn health_fn;
    void *health_arg;
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
    uint64_t acked;          /* the cloud's upto for our stream */
    int64_t progress_ms;     /* mono time the cloud last confirmed something new */
    int64_t rewind_ms;       /* mono time of the last resend */
    int64_t loss_pub_ms, health_ms, started_ms;
    int ninflight;
    int inflight[INFLIGHT_CAP]; /* mids awaiting PUBACK */
    char t_readings[160], t_status[160], t_ack[160], t_loss[160], t_health[160];
    struct uplink_stats stats;
};

static void status_payload(char *buf, size_t len, const char *state)
{
    snprintf(buf, len, "{\"state\":\"%s\",\"ts\":%lld,\"version\":\"%s\"}", state,
             (long long)now_ms(), MLK_VERSION);
}

static int holdoff_ms(const uplink_t *u)
{
    int h = u->cfg->ack_timeout_ms / 4;
    return h < 200 ? 200 : h > 5000 ? 5000 : h;
}

static void on_connect(struct mosquitto *mosq, void *arg, int rc)
{
    uplink_t *u = arg;
    char payload[160];

    if (rc != 0) {
        log_warnx("uplink: broker refused the connection: %s", mosquitto_connack_string(rc));
        return;
    }
    log_info("uplink: connected to %s:%d", u->cfg->mqtt_host, u->cfg->mqtt_port);
    mosquitto_subscribe(mosq, NULL, u->t_ack, 1);
    status_payload(payload, sizeof(payload), "online");
    mosquitto_publish(mosq, NULL, u->t_status, (int)strlen(payload), payload, 1, true);
    pthread_mutex_lock(&u->mu);
    /* Start over from what the cloud confirmed: what was in flight is sent again. */
    u->connected = 1;
    {
        struct queue_stats qs;
        queue_get_stats(u->q, &qs);
        u->head = qs.oldest_seq > u->acked + 1 ? qs.oldest_seq - 1 : u->acked;
    }
    u->live_mode = 0;
    u->ninflight = 0;
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
        it->valuedouble != floor(it->valuedouble) || it->valuedouble < lo ||
        it->valuedouble > hi)
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

    if (len <= 0 || len > ACK_MAX_PAYLOAD || !(root = cJSON_ParseWithLength(payload, (size_t)len))) {
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
    queue_get_stats(u->q, &qs);
    cJSON_ArrayForEach(it, missing)
    {
        uint64_t a, b;
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 ||
            json_u64(cJSON_GetArrayItem(it, 0), 1, 9007199254740991.0, &a) < 0 ||
            json_u64(cJSON_GetArrayItem(it, 1), 1, 9007199254740991.0, &b) < 0 || b < a ||
            a <= upto)
            continue;
        if (!qs.oldest_seq || a < qs.oldest_seq)
            report_not_queued(u, a, b, qs.oldest_seq);
        if (qs.oldest_seq && b >= qs.oldest_seq && mono_ms() - u->rewind_ms >= holdoff_ms(u)) {
            uint64_t from = (a > qs.oldest_seq ? a : qs.oldest_seq) - 1;
            /* The cloud lacks readings we published: publish them again (from there on;
             * what follows is sent again too, and the cloud ignores duplicates). */
            if (u->live_mode && from >= u->live_start && from < u->live) {
                u->live = from;
            } else if (from < u->head) {
                u->head = from;
                u->live_mode = 0;
            } else {
                continue;
            }
            u->rewind_ms = mono_ms();
            u->stats.resends++;
            log_info("uplink: the cloud misses seq %llu..%llu; sending again",
                     (unsigned long long)a, (unsigned long long)b);
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
}

/* Publishes one batch; returns 1 when published, 0 when there was nothing, -1 on error.
 * Called with u->mu held, so on_publish cannot look for the mid before it is recorded. */
static int publish_batch(uplink_t *u, uint64_t after, uint64_t until, uint64_t *last)
{
    struct qbatch b;
    int mid = 0, rc;

    rc = queue_fetch(u->q, u->cfg->gateway_id, after, until, u->cfg->batch_max, &b);
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

    if (!u->live_mode && newest > u->head &&
        newest - u->head > 2 * (uint64_t)u->cfg->batch_max) {
        /* A backlog: from now on alternate between the newest and the oldest. */
        u->live_mode = 1;
        u->live_start = newest - (uint64_t)u->cfg->batch_max;
        u->live = u->live_start;
        log_info("uplink: %llu readings to catch up; sending live readings alongside",
                 (unsigned long long)(newest - u->head));
    }
    while (u->connected && !u->stop && u->ninflight < u->cfg->inflight_max &&
           u->ninflight < INFLIGHT_CAP) {
        int rc;
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
    n = snprintf(buf, HEALTH_MAX,
                 "{\"v\":1,\"gw\":\"%s\",\"ts\":%lld,\"uptime_s\":%lld,\"version\":\"%s\","
                 "\"stream\":\"%s\",\"queue\":{\"depth\":%ld,\"in_memory\":%ld,"
                 "\"oldest_age_s\":%lld,\"bytes\":%lld,\"dropped\":%llu,\"disk_ok\":%s,"
                 "\"losses_pending\":%d,\"commits\":%llu,\"pages_written\":%llu,"
                 "\"pages_written_per_hour\":%.0f},"
                 "\"uplink\":{\"connected\":%s,\"reconnects\":%llu,\"batches_sent\":%llu,"
                 "\"readings_sent\":%llu,\"resends\":%llu,\"acked_upto\":%llu},\"meters\":",
                 u->cfg->gateway_id, (long long)now, (long long)up_s, MLK_VERSION,
                 queue_stream(u->q), qs.depth, qs.mem_depth,
                 (long long)(qs.oldest_ts ? (now - qs.oldest_ts) / 1000 : 0),
                 (long long)qs.bytes, (unsigned long long)qs.dropped,
                 qs.disk_ok ? "true" : "false", qs.losses_pending,
                 (unsigned long long)qs.commits, (unsigned long long)qs.pages_written,
                 up_s > 0 ? (double)qs.pages_written * 3600.0 / (double)up_s : 0.0,
                 u->connected ? "true" : "false", (unsigned long long)u->stats.reconnects,
                 (unsigned long long)u->stats.batches_sent,
                 (unsigned long long)u->stats.readings_sent,
                 (unsigned long long)u->stats.resends, (unsigned long long)u->acked);
    if (n < 0 || n >= HEALTH_MAX - 3)
        goto out;
    m = u->health_fn ? u->health_fn(u->health_arg, buf + n, (size_t)(HEALTH_MAX - n - 2)) : -1;
    if (m < 0) {
        memcpy(buf + n, "[]", 2);
        m = 2;
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
            if (u->head > u->acked && now - u->progress_ms > u->cfg->ack_timeout_ms) {
                log_info("uplink: no ack for %d ms; sending seq %llu.. again",
                         u->cfg->ack_timeout_ms, (unsigned long long)(u->acked + 1));
                u->head = u->acked;
                u->live_mode = 0;
                u->progress_ms = now;
                u->stats.resends++;
            }
            publish_some(u);
            if (now - u->loss_pub_ms >= LOSS_RETRY_MS) {
                publish_losses(u);
                u->loss_pub_ms = now;
            }
            if (u->cfg->health_interval_ms > 0 && now - u->health_ms >= u->cfg->health_interval_ms) {
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

int uplink_start(const struct agent_cfg *cfg, queue_t *q, uplink_health_fn health, void *arg,
                 uplink_t **out)
{
    uplink_t *u = calloc(1, sizeof(*u));
    char client_id[96], will[160];
    const char *p = cfg->mqtt_prefix, *g = cfg->gateway_id;
    int rc;

    if (!u)
        return -ENOMEM;
    u->cfg = cfg;
    u->q = q;
    u->health_fn = health;
    u->health_arg = arg;
    u->started_ms = mono_ms();
    u->health_ms = mono_ms() - cfg->health_interval_ms + 2000; /* first one soon after start */
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    snprintf(u->t_readings, sizeof(u->t_readings), "%s/%s/readings", p, g);
    snprintf(u->t_status, sizeof(u->t_status), "%s/%s/status", p, g);
    snprintf(u->t_ack, sizeof(u->t_ack), "%s/%s/ack", p, g);
    snprintf(u->t_loss, sizeof(u->t_loss), "%s/%s/loss", p, g);
    snprintf(u->t_health, sizeof(u->t_health), "%s/%s/health", p, g);
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
    char payload[160];
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
        status_payload(payload, sizeof(payload), "offline");
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
    free(u);
}
