/*
 * uplink: publishes the queue to the MQTT broker (libmosquitto) and takes the cloud's acks.
 *
 * Batches of readings are published with QoS 1 on <prefix>/<gw>/readings, with at most
 * inflight_max unacknowledged by the broker. A reading is forgotten only when the cloud's
 * <prefix>/<gw>/ack says it is committed (docs/protocol.md): a PUBACK only says the broker
 * has it. What the cloud reports missing is published again; so is everything that stays
 * unconfirmed for ack_timeout_ms. After an outage the backlog drains interleaved with live
 * readings. Loss records are published on <prefix>/<gw>/loss until an ack covers them, and
 * a health message every health interval. The retained <prefix>/<gw>/status is online
 * while connected; the Last Will sets it offline.
 */
#ifndef MLK_AGENT_UPLINK_H
#define MLK_AGENT_UPLINK_H

#include "config.h"
#include "queue.h"

#include <stddef.h>
#include <stdint.h>

typedef struct uplink uplink_t;

struct uplink_stats {
    int connected;
    uint64_t batches_sent, readings_sent, resends, reconnects, acks;
    uint64_t acked_upto;
};

/* Writes the "meters" part of the health message (a JSON array) into buf; returns its
 * length or -1 when it does not fit. Called on the uplink thread. */
typedef int (*uplink_health_fn)(void *arg, char *buf, size_t len);

/* Starts the MQTT client and the publishing thread. cfg and q must outlive the uplink. */
int uplink_start(const struct agent_cfg *cfg, queue_t *q, uplink_health_fn health, void *arg,
                 uplink_t **out);
/* Wakes the publisher: new readings were queued. Cheap; callable from any thread. */
void uplink_notify(uplink_t *u);
void uplink_get_stats(uplink_t *u, struct uplink_stats *st);
/* Publishes status offline, disconnects, stops the threads and frees u. */
void uplink_stop(uplink_t *u);

#endif
