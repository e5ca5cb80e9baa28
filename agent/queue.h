/*
 * queue: the gateway's store-and-forward queue of readings, in SQLite (WAL).
 *
 * It is the boundary between the side that talks to meters (poller threads append) and
 * the side that talks to the network (the uplink fetches and deletes). Every reading gets
 * the next seq of the queue's stream on append; seq is strictly increasing and never
 * reused. The stream id is made when the queue file is created and changes only when the
 * queue is created anew. Readings are stored already encoded as their wire JSON object, so
 * the uplink builds a batch without decoding anything.
 *
 * Thread-safe: one mutex guards the connection. Errors: 0 or a negative errno value.
 */
#ifndef MLK_AGENT_QUEUE_H
#define MLK_AGENT_QUEUE_H

#include "wire.h"

#include <stddef.h>
#include <stdint.h>

typedef struct queue queue_t;

/* A fetched batch: payload is a complete wire readings batch (malloc'd, caller frees). */
struct qbatch {
    char *payload;
    size_t len;
    uint64_t first_seq, last_seq;
    int count;
};

struct queue_stats {
    long depth;          /* readings in the queue */
    int64_t oldest_ts;   /* ts of the oldest reading, 0 when empty */
    uint64_t next_seq;   /* seq the next reading will get */
    uint64_t dropped;    /* readings dropped because the bound was hit, since open */
    uint64_t commits;    /* write transactions committed, since open */
};

/* Opens (creating if needed) the queue at path. max_rows bounds the queue: when an append
 * would exceed it, the oldest readings are dropped (and counted). */
int queue_open(const char *path, long max_rows, queue_t **out);
void queue_close(queue_t *q);
const char *queue_stream(const queue_t *q);

/* Assigns r[i].seq and stores the n readings in one transaction. */
int queue_append(queue_t *q, struct reading *r, int n);

/* Fetches up to max readings with seq > after, oldest first, as one batch for gateway gw.
 * Returns 1 with *b filled, 0 when there is nothing after that seq. */
int queue_fetch(queue_t *q, const char *gw, uint64_t after, int max, struct qbatch *b);

/* Deletes readings with first <= seq <= last. */
int queue_delete_range(queue_t *q, uint64_t first, uint64_t last);

void queue_get_stats(queue_t *q, struct queue_stats *st);

#endif
