/*
 * uplink: publishes the queue to the MQTT broker (libmosquitto).
 *
 * Batches of the oldest readings are published with QoS 1 on <prefix>/<gw>/readings, with a
 * bounded number in flight. A batch is deleted from the queue when the broker's PUBACK
 * arrives (the cloud's own acknowledgement replaces this in protocol v1's ack flow; see
 * docs/protocol.md). On every (re)connect the retained <prefix>/<gw>/status is set to
 * online; the Last Will sets it to offline. Everything not yet acknowledged is sent again
 * after a reconnect: delivery is at-least-once and the cloud drops duplicates.
 */
#ifndef MLK_AGENT_UPLINK_H
#define MLK_AGENT_UPLINK_H

#include "config.h"
#include "queue.h"

#include <stdint.h>

typedef struct uplink uplink_t;

struct uplink_stats {
    int connected;
    uint64_t batches_sent, readings_sent, batches_acked, reconnects;
};

/* Starts the MQTT client and the publishing thread. cfg and q must outlive the uplink. */
int uplink_start(const struct agent_cfg *cfg, queue_t *q, uplink_t **out);
/* Wakes the publisher: new readings were queued. Cheap; callable from any thread. */
void uplink_notify(uplink_t *u);
void uplink_get_stats(uplink_t *u, struct uplink_stats *st);
/* Publishes status offline, disconnects, stops the threads and frees u. */
void uplink_stop(uplink_t *u);

#endif
