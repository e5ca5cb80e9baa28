/*
 * ingest_pub: publishes readings batches to a broker as fast as the cloud takes them, for
 * tools/bench/ingest_bench.py (docs/benchmarks.md, "Cloud ingest").
 *
 * It encodes every batch before it connects (wire_encode_batch, exactly what meter-agent
 * sends: one stream, seqs 1..count, meters m00.. in turn, 10 s apart per meter, in the
 * recent past, `values` quantities each), then publishes them with QoS 1 on
 * <prefix>/<gw>/readings, keeping at most `window` batches beyond what the cloud's acks on
 * <prefix>/<gw>/ack confirm (as an agent's flow control would: the broker never queues more
 * than that for the cloud, so it never drops any). It stops when an ack says upto >= count,
 * or after the timeout. It prints "published S", "acked S" (seconds since the first
 * publish) and "rate R" (readings per second until the last ack) on stdout.
 *
 * The broker password comes from the environment (MLK_BENCH_PASSWORD), never argv.
 *
 *   ingest_pub HOST PORT PREFIX GW COUNT BATCH METERS VALUES WINDOW TIMEOUT_S
 */
#include "quantities.h"
#include "timeutil.h"
#include "wire.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <mosquitto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct pub {
    char **msg;
    size_t *len;
    int nmsg, batch;
    long long count;
    unsigned long long upto; /* from the newest ack */
    char stream[WIRE_STREAM_MAX];
    int acks;
};

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    struct pub *p = arg;
    cJSON *root, *s, *u;

    (void)m;
    root = cJSON_ParseWithLength(msg->payload, (size_t)msg->payloadlen);
    if (!root)
        return;
    s = cJSON_GetObjectItemCaseSensitive(root, "stream");
    u = cJSON_GetObjectItemCaseSensitive(root, "upto");
    if (cJSON_IsString(s) && strcmp(s->valuestring, p->stream) == 0 && cJSON_IsNumber(u) &&
        u->valuedouble > (double)p->upto)
        p->upto = (unsigned long long)u->valuedouble;
    p->acks++;
    cJSON_Delete(root);
}

int main(int argc, char **argv)
{
    struct pub p = {0};
    struct mosquitto *m;
    const char *pw = getenv("MLK_BENCH_PASSWORD");
    char topic[256], acks[256];
    int meters, values, window, timeout_s, port, next = 0;
    int64_t t0, t_pub = 0, t_ack = 0, ts0;
    unsigned char rnd[8];
    struct reading *r;
    size_t bytes = 0;

    if (argc != 11) {
        fprintf(stderr, "usage: ingest_pub HOST PORT PREFIX GW COUNT BATCH METERS VALUES WINDOW "
                        "TIMEOUT_S (password in MLK_BENCH_PASSWORD)\n");
        return 2;
    }
    port = atoi(argv[2]);
    p.count = atoll(argv[5]);
    p.batch = atoi(argv[6]);
    meters = atoi(argv[7]);
    values = atoi(argv[8]);
    window = atoi(argv[9]);
    timeout_s = atoi(argv[10]);
    if (p.count < 1 || p.batch < 1 || meters < 1 || meters > 100 || values < 1 ||
        values > qty_count() || window < 1 || timeout_s < 1) {
        fprintf(stderr, "ingest_pub: bad arguments\n");
        return 2;
    }
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return 1;
    for (int i = 0; i < 8; i++)
        snprintf(p.stream + 2 * i, 3, "%02x", rnd[i]);

    /* every batch encoded up front */
    p.nmsg = (int)((p.count + p.batch - 1) / p.batch);
    p.msg = calloc((size_t)p.nmsg, sizeof(*p.msg));
    p.len = calloc((size_t)p.nmsg, sizeof(*p.len));
    r = calloc((size_t)p.batch, sizeof(*r));
    if (!p.msg || !p.len || !r)
        return 1;
    /* the newest reading a minute ago: inside every retention and rollup horizon */
    ts0 = now_ms() - 60000 - (p.count / meters + 1) * 10000;
    for (int b = 0; b < p.nmsg; b++) {
        int n = 0;
        for (long long seq = (long long)b * p.batch + 1; seq <= p.count && n < p.batch;
             seq++, n++) {
            long long i = seq - 1, k = i / meters;
            struct reading *e = &r[n];
            memset(e, 0, sizeof(*e));
            e->seq = (uint64_t)seq;
            snprintf(e->meter, sizeof(e->meter), "m%02lld", i % meters);
            e->ts_ms = ts0 + k * 10000;
            e->ok = true;
            for (int q = 0; q < values; q++) {
                /* counters rise, the rest moves a little: plausible for every quantity */
                double v = qty_at(q)->kind == QTY_COUNTER ? 1000.0 + 0.001 * (double)k
                                                          : 230.0 + 5.0 * sin((double)k / 50.0);
                e->values[q] = round(v * 1000.0) / 1000.0;
                e->present |= 1u << q;
            }
        }
        if (!(p.msg[b] = wire_encode_batch(argv[4], p.stream, r, n)))
            return 1;
        p.len[b] = strlen(p.msg[b]);
        bytes += p.len[b];
    }
    free(r);
    fprintf(stderr, "ingest_pub: %d batches, %zu bytes encoded (%.0f per reading), stream %s\n",
            p.nmsg, bytes, (double)bytes / (double)p.count, p.stream);

    mosquitto_lib_init();
    if (!(m = mosquitto_new(NULL, true, &p)))
        return 1;
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_max_inflight_messages_set(m, (unsigned)window);
    if (pw)
        mosquitto_username_pw_set(m, argv[4], pw);
    mosquitto_message_callback_set(m, on_message);
    if (mosquitto_connect(m, argv[1], port, 30) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "ingest_pub: cannot connect to %s:%d\n", argv[1], port);
        return 1;
    }
    snprintf(topic, sizeof(topic), "%s/%s/readings", argv[3], argv[4]);
    snprintf(acks, sizeof(acks), "%s/%s/ack", argv[3], argv[4]);
    mosquitto_subscribe(m, NULL, acks, 1);
    for (int i = 0; i < 20; i++) /* the SUBACK before the first batch */
        mosquitto_loop(m, 10, 1);

    t0 = mono_ms();
    while (p.upto < (unsigned long long)p.count && mono_ms() - t0 < timeout_s * 1000LL) {
        /* batches the cloud has not confirmed yet, at most window */
        long long confirmed = (long long)(p.upto / (unsigned long long)p.batch);
        while (next < p.nmsg && next - confirmed < window) {
            int rc = mosquitto_publish(m, NULL, topic, (int)p.len[next], p.msg[next], 1, false);
            if (rc != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "ingest_pub: publish: %s\n", mosquitto_strerror(rc));
                return 1;
            }
            if (++next == p.nmsg)
                t_pub = mono_ms();
        }
        if (mosquitto_loop(m, 5, 1) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "ingest_pub: lost the broker\n");
            return 1;
        }
    }
    t_ack = mono_ms();
    mosquitto_disconnect(m);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    printf("stream %s\n", p.stream);
    printf("published %.3f\n", (double)(t_pub - t0) / 1000.0);
    printf("acked %.3f\n", (double)(t_ack - t0) / 1000.0);
    printf("upto %llu\n", p.upto);
    printf("acks %d\n", p.acks);
    printf("rate %.0f\n", (double)p.upto * 1000.0 / (double)(t_ack - t0 > 0 ? t_ack - t0 : 1));
    for (int b = 0; b < p.nmsg; b++)
        free(p.msg[b]);
    free(p.msg);
    free(p.len);
    return p.upto >= (unsigned long long)p.count ? 0 : 3;
}
