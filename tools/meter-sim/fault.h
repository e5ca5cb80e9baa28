/*
 * fault: what meter-sim can do wrong on purpose, and how long an RTU reply takes on a line.
 *
 * A fault belongs to one meter and applies to every request that meter gets until it is
 * changed: no reply at all, a reply whose check (RTU CRC, Modbus TCP MBAP header) is broken,
 * a Modbus exception, a late reply, or random bytes. This file only names and parses faults
 * and does the line-time arithmetic; meter_sim.c applies them. No I/O, no clock.
 *
 * Functions return 0 or a negative errno value.
 */
#ifndef MLK_FAULT_H
#define MLK_FAULT_H

#include <stddef.h>
#include <stdint.h>

enum fault_kind {
    FAULT_NONE = 0,
    FAULT_NOREPLY,   /* stay silent: the master times out */
    FAULT_CRC,       /* RTU: CRC of the reply wrong; TCP: transaction and protocol id wrong */
    FAULT_EXCEPTION, /* answer Modbus exception arg (1..255) */
    FAULT_SLOW,      /* answer arg ms late (0..600000) */
    FAULT_GARBAGE,   /* answer random bytes that never form a valid reply */
};

struct fault {
    enum fault_kind kind;
    int arg; /* exception code or delay in ms; 0 for the other kinds */
};

#define FAULT_SLOW_MAX_MS 600000
#define FAULT_TEXT_MAX 32 /* longest fault_format() text, NUL included */

/* Parses kind ("noreply", "crc", "exception", "slow", "garbage", "none") with its argument
 * arg (decimal; NULL when there is none) into *f. exception and slow need an argument, the
 * others take none. On error returns -EINVAL with the reason in err (errlen bytes). */
int fault_parse(const char *kind, const char *arg, struct fault *f, char *err, size_t errlen);

/* The kind's name as fault_parse() takes it ("noreply", ...). */
const char *fault_kind_name(enum fault_kind k);

/* "none", "crc", "exception 4", "slow 800" into buf (FAULT_TEXT_MAX bytes). Returns buf. */
char *fault_format(const struct fault *f, char *buf, size_t len);

/* Bits one character takes on an RTU line with 8 data bits: start + 8 + parity (parity 'E'
 * or 'O'; none for 'N') + stop_bits. 10 for 8N1, 11 for 8E1 or 8N2. */
int line_bits_per_char(char parity, int stop_bits);

/* Time in microseconds (rounded up) between the start of a request of req_chars characters
 * and the end of the reply of rep_chars characters on a line of baud bits per second with
 * bits_per_char bits per character, with one 3.5-character silence between them:
 *     (req_chars + rep_chars + 3.5) * bits_per_char / baud seconds.
 * The slave's turnaround time is not included. */
int64_t line_reply_us(int baud, int bits_per_char, size_t req_chars, size_t rep_chars);

/* The 3.5-character silence that must follow a frame before the next one may start, in
 * microseconds (rounded up): 3.5 * bits_per_char / baud seconds. 0 when baud <= 0. */
int64_t line_silence_us(int baud, int bits_per_char);

#endif
