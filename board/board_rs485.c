/*
 * board_rs485: RS-485 direction control for a serial line libmodbus has opened. See board.h.
 *
 * Kernel mode goes through the board_ops seam, so a test can see the exact struct
 * serial_rs485 that would reach the driver. RTS mode needs nothing from the line itself:
 * the caller hands the returned RTS polarity and delay to libmodbus.
 */
#include "board_priv.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <linux/serial.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const mode_names[] = {
    [BOARD_RS485_NONE] = "none",
    [BOARD_RS485_KERNEL] = "kernel",
    [BOARD_RS485_RTS] = "rts",
    [BOARD_RS485_AUTO] = "auto",
};

const char *board_rs485_mode_name(enum board_rs485_mode m)
{
    if ((unsigned)m < sizeof(mode_names) / sizeof(mode_names[0]))
        return mode_names[m];
    return "?";
}

int board_rs485_mode_parse(const char *s)
{
    for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
        if (s && strcmp(s, mode_names[i]) == 0)
            return (int)i;
    return -EINVAL;
}

const struct board_rs485 *board_rs485_find(const board_t *b, const char *device)
{
    char want[PATH_MAX], have[PATH_MAX];
    int resolved;

    if (!device)
        return &b->rs485_default;
    for (int i = 0; i < b->nserial; i++)
        if (strcmp(b->serial[i].device, device) == 0)
            return &b->serial[i].rs;
    /* /dev/serial/by-path/... in agent.json, /dev/ttyS1 in the board file (or the reverse) */
    resolved = realpath(device, want) != NULL;
    for (int i = 0; resolved && i < b->nserial; i++)
        if (realpath(b->serial[i].device, have) && strcmp(have, want) == 0)
            return &b->serial[i].rs;
    return &b->rs485_default;
}

/* The errors that mean "this line has no kernel RS-485 support": ENOTTY from serial_core for
 * a UART without rs485_config (and from every non-UART tty: pty, most USB adapters), EINVAL
 * or EOPNOTSUPP from drivers that refuse the settings. */
static int unsupported(int rc)
{
    return rc == -ENOTTY || rc == -EINVAL || rc == -EOPNOTSUPP;
}

static int apply_kernel(const struct board_rs485 *rs, const char *name, int fd)
{
    struct serial_rs485 cur, conf, asked;
    int rc;

    memset(&cur, 0, sizeof(cur));
    if ((rc = board_cur_ops->rs485_get(fd, &cur)) < 0)
        return rc;
    /* Start from zero so that nothing stale (addressing mode, old delays) survives; keep
     * only bus termination, which belongs to the board's wiring, not to us. */
    memset(&conf, 0, sizeof(conf));
    conf.flags = SER_RS485_ENABLED;
#ifdef SER_RS485_TERMINATE_BUS
    conf.flags |= cur.flags & SER_RS485_TERMINATE_BUS;
#endif
    if (rs->rts_on_send)
        conf.flags |= SER_RS485_RTS_ON_SEND;
    else
        conf.flags |= SER_RS485_RTS_AFTER_SEND;
    if (rs->rx_during_tx)
        conf.flags |= SER_RS485_RX_DURING_TX;
    conf.delay_rts_before_send = (__u32)rs->delay_before_send_ms;
    conf.delay_rts_after_send = (__u32)rs->delay_after_send_ms;
    asked = conf;
    if ((rc = board_cur_ops->rs485_set(fd, &conf)) < 0)
        return rc;
    /* The kernel writes back what it applied; a driver may drop what it cannot do. */
    if (conf.flags != asked.flags || conf.delay_rts_before_send != asked.delay_rts_before_send ||
        conf.delay_rts_after_send != asked.delay_rts_after_send)
        log_info("%s: RS-485 driver adjusted the settings: flags 0x%x -> 0x%x, delays %u/%u ms "
                 "-> %u/%u ms",
                 name, (unsigned)asked.flags, (unsigned)conf.flags,
                 (unsigned)asked.delay_rts_before_send, (unsigned)asked.delay_rts_after_send,
                 (unsigned)conf.delay_rts_before_send, (unsigned)conf.delay_rts_after_send);
    return 0;
}

int board_rs485_apply(const struct board_rs485 *rs, const char *device, int fd,
                      struct board_line *line)
{
    char fdname[24];
    const char *name = device;
    int rc;

    line->mode = BOARD_RS485_NONE;
    line->rts = BOARD_RTS_NONE;
    line->rts_delay_us = -1;
    if (!name) {
        snprintf(fdname, sizeof(fdname), "fd %d", fd);
        name = fdname;
    }
    switch (rs->mode) {
    case BOARD_RS485_NONE:
        return 0;
    case BOARD_RS485_RTS:
        line->mode = BOARD_RS485_RTS;
        line->rts = rs->rts_on_send ? BOARD_RTS_UP : BOARD_RTS_DOWN;
        line->rts_delay_us = rs->rts_delay_us;
        return 0;
    case BOARD_RS485_KERNEL:
        if ((rc = apply_kernel(rs, name, fd)) < 0)
            return rc;
        line->mode = BOARD_RS485_KERNEL;
        return 0;
    case BOARD_RS485_AUTO:
        rc = apply_kernel(rs, name, fd);
        if (rc == 0) {
            line->mode = BOARD_RS485_KERNEL;
            return 0;
        }
        if (!unsupported(rc))
            return rc;
        log_info("%s: no kernel RS-485 mode on this line (%s); assuming an auto-direction "
                 "transceiver",
                 name, strerror(-rc));
        return 0;
    }
    return -EINVAL;
}

int board_rs485_setup(const board_t *b, const char *device, int fd, struct board_line *line)
{
    return board_rs485_apply(board_rs485_find(b, device), device, fd, line);
}
