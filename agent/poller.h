/*
 * poller: one thread per bus. Meters on a bus take turns by due time; each poll runs the
 * meter's read plan, decodes the registers into canonical quantities and appends one
 * reading (ok, or failed with the reason) to the queue. The poller never touches the
 * network side: the queue is the boundary.
 */
#ifndef MLK_AGENT_POLLER_H
#define MLK_AGENT_POLLER_H

#include "config.h"
#include "queue.h"

#include <stdint.h>

typedef struct poller poller_t;

/* Called after readings were queued (from the bus thread). */
typedef void (*poller_notify_fn)(void *arg);

/* Starts the thread for cfg->buses[bus]. cfg and q must outlive the poller. */
int poller_start(const struct agent_cfg *cfg, int bus, queue_t *q, poller_notify_fn notify,
                 void *arg, poller_t **out);
void poller_stop(poller_t *p);

#endif
