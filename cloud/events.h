/*
 * events: a small, bounded, in-process event bus from ingest to the HTTP API's live
 * stream (GET /api/v1/stream). Ingest publishes an event after a readings batch is
 * committed (one per meter of the batch, with its latest values) and when a gateway's
 * status changes; each SSE client subscribes and reads them in order.
 *
 * One bus per process (ingest and the API share it without knowing each other). The
 * events sit in one ring of EVENTS_RING entries; each subscriber has its own cursor into
 * it, so each sees a bounded window of EVENTS_RING events. Publishing never waits for a
 * subscriber: a subscriber that falls more than EVENTS_RING behind loses the oldest
 * events and is told how many (events_next's *dropped).
 *
 * Not for: persistence or replay after a reconnect (no Last-Event-ID).
 *
 * Errors: int functions return 0 or a negative errno. All functions: any thread.
 */
#ifndef MLK_CLOUD_EVENTS_H
#define MLK_CLOUD_EVENTS_H

#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EVENTS_RING 256           /* events kept for subscribers */
#define EVENTS_DATA_MAX 1536      /* an event's data (JSON), NUL included */
#define EVENTS_SUBSCRIBERS_MAX 16 /* subscribers at once; more get -EBUSY */
#define EVENTS_NAME_MAX 8         /* "reading", "status", NUL included */

struct event {
    uint64_t id;                /* 1, 2, ... in publishing order */
    char name[EVENTS_NAME_MAX]; /* the SSE event name */
    char meter[WIRE_ID_MAX];    /* "reading": its meter (for filters); else "" */
    char data[EVENTS_DATA_MAX]; /* one line of JSON */
};

struct events_stats {
    uint64_t published; /* events published */
    uint64_t dropped;   /* events subscribers lost by falling behind, summed */
    int subscribers;    /* subscribers now */
};

typedef struct events_sub events_sub_t;

/* Opens the bus for subscribers (again, after events_close). */
void events_open(void);

/* Wakes every subscriber waiting in events_next and makes it, and every later call,
 * return -ESHUTDOWN; new subscriptions get -ESHUTDOWN until events_open. */
void events_close(void);

/* Publishes one "reading" event per meter among the n readings of a committed batch of
 * gateway gw: that meter's newest reading (highest seq) that has values. */
void events_publish_batch(const char *gw, const struct reading *rd, int n);

/* Publishes a "status" event: gateway gw is state as of ts_ms. */
void events_publish_status(const char *gw, const char *state, int64_t ts_ms);

/* A new subscriber that sees events published from now on. 0 with *out; -EBUSY (already
 * EVENTS_SUBSCRIBERS_MAX), -ESHUTDOWN (closed), -ENOMEM. */
int events_subscribe(events_sub_t **out);

/* Ends a subscription; NULL is allowed. */
void events_unsubscribe(events_sub_t *s);

/* Waits up to timeout_ms for the subscriber's next event and copies it to *ev. Returns 0
 * with *dropped the events lost just before this one (0 usually), -ETIMEDOUT (none in
 * time), -ESHUTDOWN (the bus is closing). */
int events_next(events_sub_t *s, int timeout_ms, struct event *ev, uint64_t *dropped);

void events_get_stats(struct events_stats *st);

#endif
