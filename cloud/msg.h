/*
 * msg: the cloud's side of the protocol v1 messages that common/wire.h does not cover
 * (docs/protocol.md): loss reports and health messages parsed and validated, acks encoded.
 *
 * Pure: no I/O, no logging. Parsing never trusts its input: sizes are bounded, every field
 * the cloud uses is type- and range-checked, unknown fields are ignored (newer gateways may
 * send more), and anything else rejects the whole message with a reason in err.
 *
 * Errors: int functions return 0 or a negative errno (-EINVAL with err set, -ENOSPC).
 */
#ifndef MLK_CLOUD_MSG_H
#define MLK_CLOUD_MSG_H

#include "store.h"
#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSG_LOSS_MAX_PAYLOAD 65536   /* a loss report larger than this is rejected */
#define MSG_HEALTH_MAX_PAYLOAD 65536 /* a health message larger than this is rejected */
#define MSG_LOSSES_MAX 64            /* entries in one loss report */
#define MSG_ACK_MAX (96 + STORE_ACK_MISSING_MAX * 44) /* an encoded ack, NUL included */

struct msg_loss {
    char gw[WIRE_ID_MAX];
    char stream[WIRE_STREAM_MAX];
    int n; /* 1..MSG_LOSSES_MAX */
    struct store_loss losses[MSG_LOSSES_MAX];
};

struct msg_health {
    char gw[WIRE_ID_MAX];
    bool has_ts;           /* ts was given (an integer ms time); else ts_ms is 0 */
    struct store_health h; /* queue.depth and queue.oldest_age_s, -1 when absent */
};

/* Whether reason is one the protocol defines: queue_full, disk_error, queue_corrupt,
 * not_queued. */
bool msg_loss_reason_valid(const char *reason);

/* Parses a loss report of len bytes: {"v":1,"gw":...,"stream":...,"losses":[...]} with
 * 1..64 entries, each {"first","last","count","reason","ts"}: integers with
 * 1 <= first <= last <= 2^53-1 and 0 <= count <= last-first+1, a known reason, ts in ms
 * (0 .. year 9999). The payload must be that one JSON object, white space around it
 * allowed. Returns 0 with *out filled, or -EINVAL with err set. */
int msg_parse_loss(const char *buf, size_t len, struct msg_loss *out, char *err, size_t errlen);

/* Checks a health message of len bytes: valid UTF-8 without NUL, one JSON object (white
 * space around it allowed) with "v":1 and a valid "gw". ts, queue.depth and
 * queue.oldest_age_s are taken when they are non-negative integers; any other field is
 * not looked at. Returns 0 with *out filled, or -EINVAL with err set. On success buf is
 * fit to be stored and served again as JSON text. */
int msg_parse_health(const char *buf, size_t len, struct msg_health *out, char *err, size_t errlen);

/* Whether buf (len bytes) is valid UTF-8 without NUL bytes, overlong forms or surrogates. */
bool msg_utf8_valid(const char *buf, size_t len);

/* Encodes a as {"v":1,"stream":"...","upto":N,"missing":[[a,b],...]} into buf. Returns the
 * length (NUL excluded) or -ENOSPC; MSG_ACK_MAX bytes always suffice. */
int msg_format_ack(const struct store_ack *a, char *buf, size_t len);

#endif
