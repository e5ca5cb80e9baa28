/* rtu_frame: see rtu_frame.h. */
#include "rtu_frame.h"

#include <string.h>

uint16_t rtu_crc16(const uint8_t *p, size_t n)
{
    uint16_t crc = 0xFFFF;

    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0xA001) : (uint16_t)(crc >> 1);
    }
    return crc;
}

int rtu_request_length(const uint8_t *buf, size_t len)
{
    if (len < 2)
        return 0;
    switch (buf[1]) {
    case 1: /* read coils */
    case 2: /* read discrete inputs */
    case 3: /* read holding registers */
    case 4: /* read input registers */
    case 5: /* write single coil */
    case 6: /* write single register */
        return 8;
    case 15: /* write multiple coils: unit fc addr(2) count(2) bytes(1) data crc(2) */
    case 16: /* write multiple registers */
        return len < 7 ? 0 : 9 + buf[6];
    default:
        return -1;
    }
}

int rtu_silence_ms(int baud)
{
    int ms;

    if (baud <= 0)
        return 5;
    /* 3.5 characters of 11 bits (start, 8 data, parity or second stop, stop), rounded up. */
    ms = (int)((3.5 * 11.0 * 1000.0 + baud - 1) / baud);
    return ms < 5 ? 5 : ms;
}

void rtu_framer_init(struct rtu_framer *f, int silence_ms)
{
    memset(f, 0, sizeof(*f));
    f->silence_ms = silence_ms > 0 ? silence_ms : 5;
}

void rtu_framer_feed(struct rtu_framer *f, const uint8_t *p, size_t n, int64_t now_ms)
{
    if (n == 0)
        return;
    if (f->discarding) {
        if (now_ms - f->last_ms < f->silence_ms) {
            f->last_ms = now_ms;
            return;
        }
        f->discarding = 0;
        f->len = 0;
        f->boundary = 0;
    } else if (f->len > 0 && f->boundary == 0 && now_ms - f->last_ms >= f->silence_ms) {
        /* The bytes held so far ended at a silence; the new ones start another frame. */
        f->boundary = f->len;
    }
    if (f->len + n > sizeof(f->buf)) {
        /* Longer than any RTU frame: noise, or frames without the silence between them. */
        f->bad++;
        f->len = 0;
        f->boundary = 0;
        f->discarding = 1;
        f->last_ms = now_ms;
        return;
    }
    memcpy(f->buf + f->len, p, n);
    f->len += n;
    f->last_ms = now_ms;
}

/* A complete request: long enough, the length its function code implies, right CRC. */
static int frame_valid(const uint8_t *buf, size_t len)
{
    int need;
    uint16_t crc;

    if (len < 4)
        return 0;
    need = rtu_request_length(buf, len);
    if (need == 0 || (need > 0 && (size_t)need != len))
        return 0;
    crc = rtu_crc16(buf, len - 2);
    return buf[len - 2] == (crc & 0xFF) && buf[len - 1] == (crc >> 8);
}

int rtu_framer_next(struct rtu_framer *f, int64_t now_ms, uint8_t *out)
{
    size_t take;
    int at_silence;
    int ok;

    if (f->boundary > 0) {
        take = f->boundary;
        at_silence = 1;
    } else {
        int need;

        if (f->discarding || f->len == 0)
            return RTU_NONE;
        need = rtu_request_length(f->buf, f->len);
        if (need > RTU_FRAME_MAX) {
            f->bad++;
            f->len = 0;
            f->discarding = 1;
            return RTU_DROPPED;
        }
        if (need > 0 && f->len >= (size_t)need) {
            take = (size_t)need;
            at_silence = 0;
        } else if (now_ms - f->last_ms >= f->silence_ms) {
            take = f->len;
            at_silence = 1;
        } else {
            return RTU_NONE;
        }
    }

    ok = frame_valid(f->buf, take);
    if (ok)
        memcpy(out, f->buf, take);
    memmove(f->buf, f->buf + take, f->len - take);
    f->len -= take;
    f->boundary = 0;
    if (!ok) {
        f->bad++;
        if (!at_silence) {
            /* Whatever follows a broken frame in the same burst cannot be trusted. */
            f->len = 0;
            f->discarding = 1;
        }
        return RTU_DROPPED;
    }
    return (int)take;
}

int64_t rtu_framer_deadline(const struct rtu_framer *f)
{
    if (f->boundary > 0)
        return f->last_ms;
    if (f->len == 0 || f->discarding)
        return -1;
    return f->last_ms + f->silence_ms;
}
