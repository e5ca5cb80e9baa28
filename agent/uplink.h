/*
 * uplink: publishes the queue to the MQTT broker (libmosquitto) and takes the cloud's acks.
 *
 * Batches of readings (at most uplink.batch_max readings and uplink.batch_bytes bytes) are
 * published with QoS 1 on <prefix>/<gw>/readings, with at most inflight_max unacknowledged
 * by the broker and at most uplink.window readings not yet confirmed by the cloud. A reading
 * is forgotten only when the cloud's <prefix>/<gw>/ack says it is committed
 * (docs/protocol.md): a PUBACK only says the broker has it. A seq the cloud reports missing
 * is published again only when it was lost in transit: every copy of it was published
 * before the batch that brought the cloud a higher seq (the broker keeps our order); one
 * still on its way is not resent. Everything unconfirmed is published again when the cloud
 * confirms nothing new for ack_timeout_ms. After an outage the backlog drains interleaved
 * with live readings. Loss records are published on <prefix>/<gw>/loss until an ack covers
 * them, and a health message every health interval. The retained <prefix>/<gw>/status is
 * online while connected; the Last Will sets it offline.
 *
 * Commands: it subscribes to <prefix>/<gw>/cmd (QoS 1) and hands every message to the
 * command callback; replies go out on <prefix>/<gw>/reply (uplink_reply). In maintenance
 * mode no readings, losses or meter states are published (readings keep queueing); status
 * and health say so, and turning it off drains the queue.
 *
 * Home Assistant (homeassistant.enabled): retained discovery configs, one per meter and
 * quantity, on <ha prefix>/sensor/<gw>/<meter>_<quantity>/config, published on connect;
 * the values come from the retained <prefix>/<gw>/state/<meter> (uplink_publish_state).
 */
#ifndef MLK_AGENT_UPLINK_H
#define MLK_AGENT_UPLINK_H

#include "config.h"
#include "queue.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct uplink uplink_t;

struct uplink_stats {
    int connected;
    uint64_t batches_sent, readings_sent, resends, reconnects, acks;
    uint64_t acked_upto;
};

/* Writes the members of the health message that the uplink does not know, as
 * "buses":[...],"meters":[...] (no leading comma, no braces) into buf; returns the length or
 * -1 when it does not fit. Called on the uplink thread. */
typedef int (*uplink_health_fn)(void *arg, char *buf, size_t len);

/* A message arrived on the cmd topic (len bytes, not NUL-terminated). Called on the MQTT
 * client's thread: it must not block, and must not stop or reconfigure u. */
typedef void (*uplink_cmd_fn)(void *arg, uplink_t *u, const char *payload, size_t len);

struct uplink_hooks {
    uplink_health_fn health;
    uplink_cmd_fn command;
    void *arg;
};

/* Starts the MQTT client and the publishing thread. cfg and q must outlive the uplink (or
 * until uplink_reconfigure() replaced cfg). maintenance: start in maintenance mode. */
int uplink_start(const struct agent_cfg *cfg, queue_t *q, const struct uplink_hooks *hooks,
                 bool maintenance, uplink_t **out);
/* Wakes the publisher: new readings were queued. Cheap; callable from any thread. */
void uplink_notify(uplink_t *u);
void uplink_get_stats(uplink_t *u, struct uplink_stats *st);
/* Publishes status offline, disconnects, stops the threads and frees u. */
void uplink_stop(uplink_t *u);

/* Switches u to cfg, which must connect the same way (cfg_mqtt_same()); the old
 * configuration is not used once this returns. Home Assistant discovery configs of meters
 * or quantities that cfg no longer has are removed, the others published again. */
void uplink_reconfigure(uplink_t *u, const struct agent_cfg *cfg);
/* Removes the Home Assistant discovery configs that next will not publish (before
 * uplink_stop() when a new uplink with next takes over). next NULL: remove all. */
void uplink_forget(uplink_t *u, const struct agent_cfg *next);

/* Publishes a command reply (QoS 1) on <prefix>/<gw>/reply. Any thread. Returns 0 or -EIO. */
int uplink_reply(uplink_t *u, const char *payload, size_t len);
/* Publishes a meter's state (retained, QoS 0) on <prefix>/<gw>/state/<meter>, unless in
 * maintenance mode. Any thread. */
void uplink_publish_state(uplink_t *u, const char *meter, const char *payload, size_t len);

/* Maintenance mode on or off (see above). Any thread. */
void uplink_set_maintenance(uplink_t *u, bool on);
bool uplink_maintenance(uplink_t *u);

#endif
