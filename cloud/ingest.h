/*
 * ingest: meter-cloud's MQTT subscriber. Receives readings batches and gateway status
 * from the broker, validates them (wire.h) and writes them to the store.
 *
 * It runs its own thread (libmosquitto's network loop plus the store writes, so a batch is
 * committed before the next message is read) and reconnects by itself, with a delay
 * doubling from 1 s to 30 s, whenever the broker is unreachable or goes away. Outside
 * input never stops it: every bad message is counted by cause and dropped, and its reason
 * logged at most once a minute per cause.
 *
 * Not yet here: ack to the gateways, seq/gap tracking, shared subscriptions, TLS.
 *
 * Errors: int functions return 0 or a negative errno.
 */
#ifndef MLK_CLOUD_INGEST_H
#define MLK_CLOUD_INGEST_H

#include "config.h"
#include "store.h"
#include "wire.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ingest ingest_t;

/* Why a message or reading was dropped. Batch-level causes count messages; the
 * reading-level ones (IC_READING + enum wire_reject) count readings. */
enum ingest_cause {
    IC_ENVELOPE,    /* readings payload unusable: too large, not JSON, bad v/gw/stream */
    IC_GW_MISMATCH, /* payload gw differs from the topic's gateway */
    IC_READING,     /* first of WR_COUNT reading causes (wire_reject_name) */
    IC_BAD_TOPIC = IC_READING + WR_COUNT, /* a topic we did not expect */
    IC_BAD_STATUS,                        /* a status payload that is not {"state":...} */
    IC_STORE,                             /* the store failed: the batch was not stored */
    IC_COUNT
};

struct ingest_stats {
    uint64_t messages;   /* messages received */
    uint64_t batches;    /* batches committed */
    uint64_t stored;     /* readings stored new */
    uint64_t duplicates; /* readings already stored, ignored */
    uint64_t statuses;   /* status messages recorded */
    uint64_t rejects[IC_COUNT];
};

/* "envelope", "gw_mismatch", "bad_seq", ...; "?" for an unknown cause. */
const char *ingest_cause_name(enum ingest_cause c);

/* Starts the subscriber thread for broker cfg, storing into st (which must outlive it).
 * It need not reach the broker to succeed: it keeps trying. cfg is copied. */
int ingest_start(const struct cfg_mqtt *cfg, store_t *st, ingest_t **out);

/* Disconnects, stops the thread and frees in; NULL is allowed. */
void ingest_stop(ingest_t *in);

/* Whether the broker connection is up (CONNACK received, not lost since). Any thread. */
bool ingest_connected(ingest_t *in);

/* A snapshot of the counters. Any thread. */
void ingest_get_stats(ingest_t *in, struct ingest_stats *s);

#endif
