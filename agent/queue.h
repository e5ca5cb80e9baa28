/*
 * queue: the gateway's store-and-forward queue of readings, in SQLite (WAL).
 *
 * It is the boundary between the side that talks to meters (poller threads append) and
 * the side that talks to the network (the uplink fetches and acknowledges). Every reading
 * gets the next seq of the queue's stream on append; seq is strictly increasing and never
 * reused. The stream id is made when the queue file is created and changes only when the
 * queue is created anew (a new file, or a corrupt one set aside). Readings are stored
 * already encoded as their wire JSON object, so the uplink builds a batch without decoding.
 *
 * Tiers: readings wait in memory first and in SQLite after. In durable mode every append
 * is committed to SQLite before it returns (memory holds only what a failing disk refused).
 * In memory-first mode readings stay in memory while the uplink keeps up and are written
 * to SQLite ("spilled") once they are older than spill_ms or more than spill_rows wait:
 * a power loss can cost at most that window. Every seq in memory is above every seq in
 * SQLite, so the queue reads in seq order across both.
 *
 * Bounds: rows, bytes in use in the file, and age. When one is hit the oldest readings are
 * dropped and a loss record (first, last, count, reason) is kept until the cloud's ack
 * covers it. A disk that refuses writes (full, read-only, I/O error) never loses a reading
 * silently: readings wait in memory up to mem_max, and beyond that the oldest are dropped
 * as a "disk_error" loss. A corrupt file is moved aside, a new stream starts, and the old
 * stream's undelivered readings are reported as a "queue_corrupt" loss.
 *
 * Thread-safe: one mutex guards everything. Errors: 0 or a negative errno value.
 */
#ifndef MLK_AGENT_QUEUE_H
#define MLK_AGENT_QUEUE_H

#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct queue queue_t;

struct queue_opts {
    bool memory_first;  /* false: durable */
    long max_rows;      /* readings kept at most (both tiers) */
    int64_t max_bytes;  /* bytes in use in the SQLite file at most; 0: no bound */
    int64_t max_age_ms; /* oldest reading kept; 0: no bound */
    long mem_max;       /* readings held in memory at most */
    int64_t spill_ms;   /* memory-first: spill readings older than this */
    long spill_rows;    /* memory-first: spill when more than this wait in memory */
};

/* A fetched batch: payload is a complete wire readings batch (malloc'd, caller frees). */
struct qbatch {
    char *payload;
    size_t len;
    uint64_t first_seq, last_seq;
    int count;
};

#define QUEUE_REASON_MAX 16
struct qloss {
    char stream[WIRE_STREAM_MAX];
    uint64_t first, last, count;
    char reason[QUEUE_REASON_MAX]; /* queue_full, disk_error, queue_corrupt, not_queued */
    int64_t ts_ms;
};

struct queue_stats {
    long depth;             /* readings queued (both tiers) */
    long mem_depth;         /* of which in memory */
    int64_t oldest_ts;      /* ts of the oldest reading, 0 when empty */
    uint64_t oldest_seq;    /* 0 when empty */
    uint64_t next_seq;      /* seq the next reading will get */
    uint64_t dropped;       /* readings dropped (bounds, disk errors), since open */
    uint64_t commits;       /* write transactions committed, since open */
    uint64_t pages_written; /* SQLite pages written, since open (flash wear) */
    int64_t bytes;          /* bytes in use in the file */
    int disk_ok;            /* the last write succeeded */
    int losses_pending;     /* loss records not yet covered by an ack */
};

void queue_default_opts(struct queue_opts *o);

/* Opens (creating if needed) the queue at path. A corrupt file is moved aside to
 * "<path>.corrupt-<ms>" and a new queue is made (see above). */
int queue_open(const char *path, const struct queue_opts *o, queue_t **out);
void queue_close(queue_t *q);
const char *queue_stream(const queue_t *q);

/* Assigns r[i].seq and queues the n readings (durable: one committed transaction).
 * Returns 0 also when the disk refused the write and the readings wait in memory. */
int queue_append(queue_t *q, struct reading *r, int n);

/* Periodic work (call about once a second): spill memory-first readings that are due,
 * retry writes the disk refused, apply the age bound. */
void queue_maintain(queue_t *q);

/* Fetches up to max readings with after < seq (and seq <= until unless until is 0), oldest
 * first, as one batch for gateway gw. Returns 1 with *b filled, 0 when there is none. */
int queue_fetch(queue_t *q, const char *gw, uint64_t after, uint64_t until, int max,
                struct qbatch *b);
/* The same, with a batch of at most max_bytes of payload (but at least one reading). A
 * stored chunk that turns out unreadable is skipped and reported lost ("queue_corrupt"). */
int queue_fetch_sized(queue_t *q, const char *gw, uint64_t after, uint64_t until, int max,
                      size_t max_bytes, struct qbatch *b);

/* The cloud has everything of stream up to upto: forget those readings and the loss
 * records of that stream ending at or below upto. Acks for another stream only clear that
 * stream's loss records. */
int queue_ack(queue_t *q, const char *stream, uint64_t upto);

/* Records a loss (e.g. "not_queued" for a range the cloud asked for). */
int queue_add_loss(queue_t *q, const struct qloss *l);

/* Copies up to max pending loss records, oldest first; returns how many. */
int queue_losses(queue_t *q, struct qloss *out, int max);

void queue_get_stats(queue_t *q, struct queue_stats *st);
/* The seq the next reading will get (cheap). */
uint64_t queue_next_seq(queue_t *q);

#endif
