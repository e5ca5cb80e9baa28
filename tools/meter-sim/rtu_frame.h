/*
 * rtu_frame: Modbus RTU request framing for meter-sim, with no I/O and no clock of its own.
 *
 * libmodbus 3.1.6 receives RTU requests only for the one unit id set on its context, so a
 * simulator that answers for several unit ids on one line must find the frames itself. The
 * framer gets the bytes read from the line with the time they arrived and hands back whole
 * requests whose CRC is right. A frame ends when its length, known from the function code,
 * has arrived (FC 1..6: 8 bytes; FC 15/16: 9 + byte count), or, for other function codes,
 * after a silence (3.5 character times). After a bad frame it discards everything until
 * the line has been silent, as a slave on a real multi-drop bus resynchronises.
 *
 * It does not look at unit ids or at the meaning of a request: that is the caller's job.
 */
#ifndef MLK_RTU_FRAME_H
#define MLK_RTU_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define RTU_FRAME_MAX 256 /* largest RTU ADU: unit + PDU (253) + CRC */

/* CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF) of p[0 .. n-1]. On the wire the low
 * byte goes first. */
uint16_t rtu_crc16(const uint8_t *p, size_t n);

/* Length of the request frame that starts with buf[0 .. len-1]: > 0 when known, 0 when more
 * bytes are needed to know it, -1 when the function code has no fixed length (the frame
 * then ends at a silence). */
int rtu_request_length(const uint8_t *buf, size_t len);

struct rtu_framer {
    uint8_t buf[RTU_FRAME_MAX];
    size_t len;        /* bytes of the frame being received */
    size_t boundary;   /* > 0: buf[0 .. boundary-1] ended at a silence, not yet taken */
    int64_t last_ms;   /* when the last byte arrived */
    int discarding;    /* drop bytes until the line is silent */
    int silence_ms;    /* gap that ends a frame */
    unsigned long bad; /* frames dropped (CRC, length, overflow) */
};

/* Silence that ends a frame at this baud rate: 3.5 characters of 11 bits, at least 5 ms
 * (a pseudo-terminal delivers a frame in one burst; scheduling jitter must not split it). */
int rtu_silence_ms(int baud);

void rtu_framer_init(struct rtu_framer *f, int silence_ms);

/* Adds n bytes that arrived at now_ms (any clock, milliseconds, never going back). */
void rtu_framer_feed(struct rtu_framer *f, const uint8_t *p, size_t n, int64_t now_ms);

enum { RTU_NONE = 0, RTU_DROPPED = -1 };

/* Takes the next complete frame, as of now_ms. Returns its length (> 0) with the frame,
 * CRC included, copied to out (RTU_FRAME_MAX bytes); RTU_DROPPED when a frame was thrown
 * away (bad CRC, wrong length, too long); RTU_NONE when no frame is complete. Call it
 * until it returns RTU_NONE after each feed and whenever rtu_framer_deadline() passes. */
int rtu_framer_next(struct rtu_framer *f, int64_t now_ms, uint8_t *out);

/* When rtu_framer_next() must be called again even if no byte arrives (a silence would
 * end the frame then), or -1 when nothing is pending. */
int64_t rtu_framer_deadline(const struct rtu_framer *f);

#endif
