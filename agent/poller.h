/*
 * poller: one thread per bus. Meters on a bus take turns by due time; each poll runs the
 * meter's read plan, decodes the registers into canonical quantities and appends one
 * reading (ok, or failed with the reason) to the queue. The poller never touches the
 * network side: the queue is the boundary.
 */
#ifndef MLK_AGENT_POLLER_H
#define MLK_AGENT_POLLER_H

#include "board.h"
#include "config.h"
#include "queue.h"

#include <stdint.h>

typedef struct poller poller_t;

/* Called after readings were queued (from the bus thread). */
typedef void (*poller_notify_fn)(void *arg);

/* Starts the thread for cfg->buses[bus]. cfg, board and q must outlive the poller; board
 * sets up RS-485 direction control on serial lines. */
int poller_start(const struct agent_cfg *cfg, const board_t *board, int bus, queue_t *q,
                 poller_notify_fn notify, void *arg, poller_t **out);

/* Milliseconds since the bus thread last went round its loop (for the watchdog). */
int64_t poller_idle_ms(poller_t *p);
/* Longest a healthy bus thread may take for one round (its worst-case poll). */
int64_t poller_round_max_ms(poller_t *p);
void poller_stop(poller_t *p);

/* Writes this bus's meters as comma-separated JSON objects (no brackets) into buf, e.g.
 * {"id":"main","bus":"rs485-1","online":true,"polls":10,...}. Returns the length, or -1
 * when buf is too small. Any thread. */
int poller_health(poller_t *p, char *buf, size_t len);

#endif
