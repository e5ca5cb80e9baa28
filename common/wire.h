/*
 * wire: protocol v1 payloads (docs/protocol.md). Encodes and parses readings batches;
 * validates identifiers. Parsing never trusts its input: every field is type- and
 * range-checked, a bad reading is rejected alone (counted by cause), and only a batch
 * whose envelope is unusable is rejected whole.
 */
#ifndef MLK_WIRE_H
#define MLK_WIRE_H

#include "quantities.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_VERSION 1
#define WIRE_ID_MAX 64         /* gateway and meter ids: 1..63 of [A-Za-z0-9_.-] */
#define WIRE_STREAM_MAX 33     /* stream ids: 8..32 lowercase hex digits */
#define WIRE_MAX_READINGS 5000 /* readings in one batch */
#define WIRE_MAX_PAYLOAD (4 * 1024 * 1024)
#define WIRE_ERROR_MAX 48

struct reading {
    uint64_t seq;
    char meter[WIRE_ID_MAX];
    int64_t ts_ms;    /* UTC ms when the response arrived */
    bool ok;          /* false: the poll failed; error says why, no values */
    bool unsynced;    /* the gateway's clock was not set */
    uint32_t present; /* bit i set: values[i] holds quantity i */
    double values[QTY_MAX];
    char error[WIRE_ERROR_MAX];
};

/* Why a reading was rejected. */
enum wire_reject { WR_NOT_OBJECT, WR_SEQ, WR_METER, WR_TS, WR_OK, WR_VALUES, WR_COUNT };
const char *wire_reject_name(enum wire_reject r);

struct wire_batch {
    char gw[WIRE_ID_MAX];
    char stream[WIRE_STREAM_MAX];
    int n;                    /* accepted readings */
    struct reading *readings; /* n entries; owned by the batch */
    int rejected[WR_COUNT];   /* rejected readings by cause */
    int nrejected;            /* sum of rejected[] */
    char first_reject[160];   /* the first reject's reason, for a log line */
};

bool wire_id_valid(const char *s);
bool wire_stream_valid(const char *s);

/* Encodes one reading as a JSON object into buf. Returns the length written (excluding the
 * NUL), or -ENOSPC when buf is too small (WIRE_READING_MAX always suffices). */
#define WIRE_READING_MAX 2048
int wire_encode_reading(const struct reading *r, char *buf, size_t len);

/* Writes the shortest decimal form of v that reads back as exactly v (printf %g style,
 * integers below 1e15 without exponent, "null" for NaN and infinities). buf >= 32 bytes.
 * Grisu3 with 64-bit integers; where it cannot prove its result, the slow path below. */
int wire_format_double(double v, char *buf, size_t len);
/* The same text from glibc's printf and strtod (the reference; 10-50x slower). */
int wire_format_double_slow(double v, char *buf, size_t len);

/*
 * Packed readings: the compact binary form the gateway's queue stores (not a wire format).
 * seq is not part of it (the queue knows it from the reading's place). Little-endian:
 *   u8 flags (bit 0 ok, bit 1 unsynced; others 0), u8 meter length 1..63, the meter id,
 *   i64 ts (0..year 9999);
 *   ok: u32 present, u32 narrow (a subset of present), then for each bit of present from
 *       the lowest: a float32 when the bit is in narrow, else a float64 that float32 cannot
 *       hold exactly; every value finite;
 *   failed: u8 error length 0..47, the error bytes.
 * Exactly one byte string packs each reading (values that are not finite are left out).
 */
#define WIRE_PACKED_MAX (2 + WIRE_ID_MAX + 8 + 8 + 8 * QTY_MAX + WIRE_ERROR_MAX)
/* Returns the bytes written (at most WIRE_PACKED_MAX), or -ENOSPC. */
int wire_pack_reading(const struct reading *r, unsigned char *buf, size_t len);
/* Reads one packed reading from the start of buf (seq left 0). Returns the bytes it took, or
 * -EILSEQ when they are not a packed reading as above (truncated, bad field, not canonical). */
int wire_unpack_reading(const unsigned char *buf, size_t len, struct reading *r);

/* Encodes a readings batch. Returns a malloc'd NUL-terminated string, or NULL when out of
 * memory. */
char *wire_encode_batch(const char *gw, const char *stream, const struct reading *r, int n);

/* Parses a readings batch of len bytes. Returns 0 with *b filled (free with
 * wire_batch_free), or -EINVAL with err set when the envelope is unusable (not JSON, wrong
 * version, missing or invalid gw/stream/readings, too many readings). */
int wire_parse_batch(const char *buf, size_t len, struct wire_batch *b, char *err, size_t errlen);
void wire_batch_free(struct wire_batch *b);

#endif
