/*
 * ingest: meter-cloud's MQTT side. Receives readings batches, loss reports, health
 * messages and gateway status from the broker, validates them (wire.h, msg.h), writes them
 * to the store, and answers each committed batch or loss report with an ack on
 * <prefix>/<gw>/ack (QoS 1, not retained), published only after the store's commit. When a
 * gateway's status says online (also the retained one delivered on every connect), it
 * publishes the ack of each of that gateway's newest streams, so the gateway learns where
 * the cloud stands. About once a second it asks the store for missing ranges open longer
 * than ingest.gap_grace_ms and logs each such data gap once.
 *
 * It runs its own thread (libmosquitto's network loop plus the store writes, so a batch is
 * committed before the next message is read) and reconnects by itself, with a delay
 * doubling from 1 s to 30 s, whenever the broker is unreachable or goes away. Outside
 * input never stops it: every bad message is counted by cause and dropped, and its reason
 * logged at most once a minute per cause.
 *
 * Commands (ingest_command): the cloud publishes {"id","cmd","args"} on <prefix>/<gw>/cmd
 * (QoS 1, not retained) and the gateway answers on <prefix>/<gw>/reply with the same id.
 * The caller's thread waits, bounded, for that reply; the loop thread matches replies to
 * the waiting commands (a table of at most INGEST_CMD_PENDING_MAX) by id and gateway.
 *
 * Not yet here: shared subscriptions, TLS.
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

/* Why a message or reading was dropped. Message-level causes count messages; the
 * reading-level ones (IC_READING + enum wire_reject) count readings. IC_GW_MISMATCH counts
 * readings batches, loss reports and health messages whose gw is not the topic's. */
enum ingest_cause {
    IC_ENVELOPE,    /* readings payload unusable: too large, not JSON, bad v/gw/stream */
    IC_GW_MISMATCH, /* payload gw differs from the topic's gateway */
    IC_READING,     /* first of WR_COUNT reading causes (wire_reject_name) */
    IC_BAD_TOPIC = IC_READING + WR_COUNT, /* a topic we did not expect */
    IC_BAD_STATUS,                        /* a status payload that is not {"state":...} */
    IC_BAD_LOSS,                          /* a loss report that is not valid (msg.h) */
    IC_BAD_HEALTH,                        /* a health message that is not valid (msg.h) */
    IC_BAD_REPLY, /* a command reply that is not {"id":"<36 chars>","ok":bool,...} */
    IC_SEQ_LIMIT, /* the stream's counted set would exceed STORE_SEQ_RANGES_MAX ranges */
    IC_STORE,     /* the store failed: the batch was not stored */
    IC_COUNT
};

struct ingest_stats {
    uint64_t messages;   /* messages received */
    uint64_t batches;    /* batches committed */
    uint64_t stored;     /* readings stored new */
    uint64_t duplicates; /* readings already stored, ignored */
    uint64_t statuses;   /* status messages recorded */
    uint64_t losses;     /* loss reports committed */
    uint64_t healths;    /* health messages stored */
    uint64_t acks;       /* acks handed to the MQTT library */
    uint64_t data_gaps;  /* data gap events found */
    uint64_t commands;   /* commands published */
    uint64_t replies;    /* replies matched to a waiting command */
    uint64_t rejects[IC_COUNT];
};

/* "envelope", "gw_mismatch", "bad_seq", ...; "?" for an unknown cause. */
const char *ingest_cause_name(enum ingest_cause c);

/* Starts the subscriber thread for broker cfg, storing into st (which must outlive it).
 * It need not reach the broker to succeed: it keeps trying. cfg and icfg are copied. */
int ingest_start(const struct cfg_mqtt *cfg, const struct cfg_ingest *icfg, store_t *st,
                 ingest_t **out);

/* Disconnects, stops the thread and frees in; NULL is allowed. */
void ingest_stop(ingest_t *in);

/* Whether the broker connection is up (CONNACK received, not lost since). Any thread. */
bool ingest_connected(ingest_t *in);

/* A snapshot of the counters. Any thread. */
void ingest_get_stats(ingest_t *in, struct ingest_stats *s);

#define INGEST_CMD_ID_LEN 36      /* a command id: 8-4-4-4-12 hex digits, like a UUID v4 */
#define INGEST_CMD_NAME_MAX 32    /* a command name, NUL included: [a-z_] */
#define INGEST_CMD_ARGS_MAX 8192  /* a command's args, as JSON text */
#define INGEST_CMD_PENDING_MAX 32 /* commands waiting for their reply at once */
#define INGEST_REPLY_MAX 65536    /* a reply larger than this is dropped */

/* Sends command cmd with args (JSON text of an object, at most INGEST_CMD_ARGS_MAX bytes,
 * trusted to be valid JSON) to gateway gw and waits up to timeout_ms for its reply. Any
 * thread but ingest's own; blocks the caller. Fills id with the command's id, also on a
 * timeout. Returns 0 with *reply the reply's JSON text (malloc'd, NUL-terminated; free()
 * it), checked to be an object with this "id" and a boolean "ok"; -ETIMEDOUT (no reply in
 * time), -ENOTCONN (not connected to the broker, or the publish failed), -EBUSY (too many
 * commands waiting), -ESHUTDOWN (stopping), -EINVAL (a bad name or args), -ENOMEM. */
int ingest_command(ingest_t *in, const char *gw, const char *cmd, const char *args_json,
                   int timeout_ms, char id[INGEST_CMD_ID_LEN + 1], char **reply);

/* Makes every waiting ingest_command() return -ESHUTDOWN now, and every later one at once.
 * Call before stopping the threads that wait in it (the HTTP server). */
void ingest_commands_close(ingest_t *in);

/* Maintenance mode: while on, readings batches are kept pending in the store, not acked
 * (store.h). ingest_set_maintenance(in, true) turns it on (kept in the store: a restart keeps
 * it); (in, false) applies every pending batch in order through the normal path, acks as
 * usual, deletes them, then turns it off; *applied counts them. On an error (0 or negative
 * errno) maintenance stays on and the batches not applied stay pending. */
bool ingest_maintenance(ingest_t *in);
int ingest_set_maintenance(ingest_t *in, bool on, int *applied);

#endif
