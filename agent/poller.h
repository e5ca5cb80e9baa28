/*
 * poller: one thread per bus. Meters on a bus take turns by due time; each poll runs the
 * meter's read plan, decodes the registers into canonical quantities (times the meter's
 * CT/PT ratios where the profile says so) and appends one reading (ok, or failed with the
 * reason) to the queue. The poller never touches the network side: the queue is the
 * boundary, and the hooks below hand results to whoever wants them.
 *
 * Failing meters: a meter is offline after POLLER_OFFLINE_AFTER failed polls in a row (or
 * before its first answer, once it has failed that often). While offline it is polled
 * without retries and ever less often: its interval doubles after each failed poll up to
 * poller_backoff_cap_ms(interval). One answer brings it back online at its interval. A
 * retry of an online meter is not made at once: it waits until every meter of the bus that
 * is due has had its turn, so a meter that stops answering delays the others by at most one
 * response timeout per request of its plan at a time.
 *
 * Jobs: other threads can ask a bus thread to poll meters now or to read raw registers
 * (poller_submit / poller_wait); the bus thread runs them between polls, so they never
 * collide with polling on the line.
 *
 * Errors: 0 or a negative errno value.
 */
#ifndef MLK_AGENT_POLLER_H
#define MLK_AGENT_POLLER_H

#include "board.h"
#include "config.h"
#include "queue.h"

#include <stdbool.h>
#include <stdint.h>

#define POLLER_OFFLINE_AFTER 3
#define POLLER_BACKOFF_MAX_MS 300000 /* 5 min */
#define POLLER_BATCH_MAX 64          /* readings of one bus cycle queued together, at most */
#define POLLER_BATCH_MS 250          /* a reading waits this long at most before it is queued */

typedef struct poller poller_t;

struct poller_hooks {
    /* Readings were queued (called from the bus thread). */
    void (*queued)(void *arg);
    /* A poll of m finished with reading r. A scheduled poll's reading waits for the bus to
     * go idle (the readings taken meanwhile are queued in one queue_append when the next
     * poll is POLLER_BATCH_MS away, when the oldest has waited that long, or every
     * POLLER_BATCH_MAX), so r->seq is 0 then; a job's reading is queued at once, with its
     * seq. last_ok is the meter's
     * newest successful reading (r itself when r->ok; NULL when it never answered). online
     * is the meter's state after this poll. Called from the bus thread. */
    void (*polled)(void *arg, const struct meter_cfg *m, const struct reading *r,
                   const struct reading *last_ok, bool online);
    void *arg;
};

/* Starts the thread for cfg->buses[bus] (also when no meter uses the bus: it then only
 * runs jobs). cfg, board and q must outlive the poller; board sets up RS-485 direction
 * control on serial lines. */
int poller_start(const struct agent_cfg *cfg, const board_t *board, int bus, queue_t *q,
                 const struct poller_hooks *hooks, poller_t **out);

/* Milliseconds since the bus thread last went round its loop (for the watchdog). */
int64_t poller_idle_ms(poller_t *p);
/* Longest a healthy bus thread may take for one round (its worst-case poll or job step). */
int64_t poller_round_max_ms(poller_t *p);
/* Stops the thread (jobs still queued end with -ECANCELED) and frees p. NULL is fine. */
void poller_stop(poller_t *p);

/* The backed-off interval of an offline meter grows up to this: 8 x interval, at most
 * POLLER_BACKOFF_MAX_MS, never below interval. */
int64_t poller_backoff_cap_ms(int64_t interval_ms);

/* Writes this bus's meters as comma-separated JSON objects (no brackets) into buf, e.g.
 * {"id":"main","bus":"rs485-1","online":true,"polls":10,...}, as many whole ones as fit
 * (*nwritten of poller_meters(p)). Returns the length written (0 when none). Any thread. */
int poller_health(poller_t *p, char *buf, size_t len, int *nwritten);
int poller_meters(poller_t *p);
/* Writes the bus's own counters as one JSON object into buf (same return). Any thread. */
int poller_bus_health(poller_t *p, char *buf, size_t len);

/* --- jobs ------------------------------------------------------------------------------ */

enum poller_job_kind {
    POLLER_JOB_POLL, /* poll meter (an index into cfg->meters), or every meter of the bus */
    POLLER_JOB_READ, /* one raw read, no retries */
};

#define POLLER_READ_MAX 125

struct poller_job {
    /* set by the caller */
    enum poller_job_kind kind;
    int meter;           /* POLL: index into cfg->meters, or -1 for every meter of the bus */
    struct reading *out; /* POLL: room for max readings (the bus's meters at most) */
    int max;
    int unit, fc, addr, count; /* READ: unit 1..247, fc 3 or 4, count 1..POLLER_READ_MAX */
    /* set by the bus thread */
    int n;   /* POLL: readings written to out */
    int err; /* 0, -ECANCELED (the poller stopped), -ENOENT (no such meter on this bus);
              * READ: the Modbus errno (ETIMEDOUT, EMBBADCRC, EMBXILADD ...) as positive */
    uint16_t words[POLLER_READ_MAX];
    int64_t rtt_ms; /* READ: request to reply */
    /* private */
    int done;
    struct poller_job *next;
};

/* Queues job on p's bus thread. The job must stay valid until poller_wait() returned.
 * Returns 0, or -ESHUTDOWN when the poller is stopping. */
int poller_submit(poller_t *p, struct poller_job *job);
/* Waits until the bus thread has run job (or cancelled it). */
void poller_wait(poller_t *p, struct poller_job *job);

/* Short text for a Modbus errno: "timeout", "crc", "exception 2", "bad reply", ... into buf
 * (at least WIRE_ERROR_MAX bytes); returns the text. */
const char *poller_error_name(int e, char *buf, size_t len);

#endif
