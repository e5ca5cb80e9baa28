/* uplink: see uplink.h. */
#include "uplink.h"
#include "log.h"
#include "timeutil.h"

#include <errno.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UPLINK_INFLIGHT_CAP 1000

struct inflight {
    int mid;
    uint64_t first, last;
    int count;
};

struct uplink {
    const struct agent_cfg *cfg;
    queue_t *q;
    struct mosquitto *mosq;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int connected;
    int woken;
    uint64_t cursor; /* highest seq published on this connection */
    int ninflight;
    struct inflight inflight[UPLINK_INFLIGHT_CAP];
    char topic_readings[160], topic_status[160];
    struct uplink_stats stats;
};

static void status_payload(char *buf, size_t len, const char *state)
{
    snprintf(buf, len, "{\"state\":\"%s\",\"ts\":%lld,\"version\":\"%s\"}", state,
             (long long)now_ms(), MLK_VERSION);
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
    status_payload(payload, sizeof(payload), "online");
    mosquitto_publish(mosq, NULL, u->topic_status, (int)strlen(payload), payload, 1, true);
    pthread_mutex_lock(&u->mu);
    /* Start over: anything in flight on the old connection is sent again. */
    u->connected = 1;
    u->cursor = 0;
    u->ninflight = 0;
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
    struct inflight done = {0};
    int found = 0;

    pthread_mutex_lock(&u->mu);
    for (int i = 0; i < u->ninflight; i++) {
        if (u->inflight[i].mid == mid) {
            done = u->inflight[i];
            u->inflight[i] = u->inflight[--u->ninflight];
            found = 1;
            break;
        }
    }
    if (found) {
        u->stats.batches_acked++;
        u->woken = 1;
        pthread_cond_signal(&u->cv);
    }
    pthread_mutex_unlock(&u->mu);
    /* Delete only after PUBACK: until then the broker may not have the batch. */
    if (found && queue_delete_range(u->q, done.first, done.last) < 0)
        log_warnx("uplink: could not delete acknowledged seq %llu..%llu",
                  (unsigned long long)done.first, (unsigned long long)done.last);
}

/* Publishes batches while there is room in flight. Called with u->mu held. */
static void publish_some(uplink_t *u)
{
    while (u->connected && !u->stop && u->ninflight < u->cfg->inflight_max) {
        struct qbatch b;
        int mid = 0, rc;

        rc = queue_fetch(u->q, u->cfg->gateway_id, u->cursor, u->cfg->batch_max, &b);
        if (rc <= 0)
            return;
        /* u->mu is held across the publish, so on_publish cannot look for this mid before
         * it is recorded below. */
        rc = mosquitto_publish(u->mosq, &mid, u->topic_readings, (int)b.len, b.payload, 1,
                               false);
        free(b.payload);
        if (rc != MOSQ_ERR_SUCCESS) {
            log_debug("uplink: publish failed: %s", mosquitto_strerror(rc));
            return;
        }
        u->inflight[u->ninflight++] = (struct inflight){mid, b.first_seq, b.last_seq, b.count};
        u->cursor = b.last_seq;
        u->stats.batches_sent++;
        u->stats.readings_sent += (uint64_t)b.count;
        log_debug("uplink: published seq %llu..%llu (%d readings)",
                  (unsigned long long)b.first_seq, (unsigned long long)b.last_seq, b.count);
    }
}

static void *uplink_main(void *arg)
{
    uplink_t *u = arg;

    pthread_mutex_lock(&u->mu);
    while (!u->stop) {
        struct timespec ts;

        publish_some(u);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        while (!u->woken && !u->stop)
            if (pthread_cond_timedwait(&u->cv, &u->mu, &ts) == ETIMEDOUT)
                break;
        u->woken = 0;
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

int uplink_start(const struct agent_cfg *cfg, queue_t *q, uplink_t **out)
{
    uplink_t *u = calloc(1, sizeof(*u));
    char client_id[96], will[160];
    int rc;

    if (!u)
        return -ENOMEM;
    u->cfg = cfg;
    u->q = q;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    snprintf(u->topic_readings, sizeof(u->topic_readings), "%s/%s/readings", cfg->mqtt_prefix,
             cfg->gateway_id);
    snprintf(u->topic_status, sizeof(u->topic_status), "%s/%s/status", cfg->mqtt_prefix,
             cfg->gateway_id);
    snprintf(client_id, sizeof(client_id), "meter-agent-%s", cfg->gateway_id);

    mosquitto_lib_init();
    u->mosq = mosquitto_new(client_id, true, u);
    if (!u->mosq) {
        rc = -ENOMEM;
        goto fail;
    }
    mosquitto_connect_callback_set(u->mosq, on_connect);
    mosquitto_disconnect_callback_set(u->mosq, on_disconnect);
    mosquitto_publish_callback_set(u->mosq, on_publish);
    mosquitto_reconnect_delay_set(u->mosq, 1, 30, true);
    mosquitto_int_option(u->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    snprintf(will, sizeof(will), "{\"state\":\"offline\",\"reason\":\"lost\"}");
    mosquitto_will_set(u->mosq, u->topic_status, (int)strlen(will), will, 1, true);
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

    pthread_mutex_lock(&u->mu);
    u->stop = 1;
    connected = u->connected;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
    pthread_join(u->thread, NULL);
    if (connected) {
        int mid = 0;
        int64_t deadline = mono_ms() + 2000;
        status_payload(payload, sizeof(payload), "offline");
        mosquitto_publish(u->mosq, &mid, u->topic_status, (int)strlen(payload), payload, 1,
                          true);
        /* Give the loop thread a moment to deliver PUBACKs still due and the status. */
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
