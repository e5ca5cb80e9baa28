/*
 * board: board support for meter-agent: RS-485 line setup, watchdog (hardware or systemd),
 * status LEDs through sysfs, gateway identity and reboot. What a board has is data: a JSON
 * board file (board/boards/NAME.json, format in docs/board.md). The `sim` board makes all of it
 * run on a PC: no RS-485 ioctls, no watchdog, LEDs as files under /tmp, no reboot.
 *
 * Not for: opening or configuring serial lines (libmodbus does that; this module only sets
 * the RS-485 direction control on a line libmodbus has opened), or deciding what to log on
 * failure (the agent does; the module logs only the RS-485 "auto" fallback, which is a
 * decision it makes, and what board_reboot() does).
 *
 * Errors: every function returning int returns 0 (or the documented non-negative value) on
 * success and a negative errno on failure. Nothing else.
 *
 * Threads: after board_load() a board is read-only except for its LED and watchdog state.
 * board_rs485_*(), board_identity() and board_led_set() may be called from any thread;
 * board_watchdog_*() from one thread (the agent's main loop).
 */
#ifndef MLK_BOARD_H
#define MLK_BOARD_H

#include <stdbool.h>
#include <stddef.h>

typedef struct board board_t;

#define BOARD_ID_MAX 64    /* identity buffer: 1..63 of [A-Za-z0-9_.-] and a NUL */
#define BOARD_ERR_MAX 1024 /* board_load(): enough for several messages */

/* --- board files ---------------------------------------------------------------------- */

/* Loads and validates the board file at path. Every problem found is reported, one per
 * line, in err as "path: key.path: reason" (truncated to errlen; err may be NULL). Returns 0
 * with *out set (free with board_free), -EINVAL when the file is invalid, or the negative
 * errno of opening or reading it. Comments (// and block) are allowed, as in agent.json. */
int board_load(const char *path, board_t **out, char *err, size_t errlen);
/* Same for text already in memory; origin names it in messages. */
int board_parse(const char *json, size_t len, const char *origin, board_t **out, char *err,
                size_t errlen);
void board_free(board_t *b);

/* The board's name ("generic-arm", "sim"). */
const char *board_name(const board_t *b);

/* Resolves a board name to a file: a name containing '/' is taken as a path; otherwise it
 * is "<dir>/<name>.json" where dir is $MLK_BOARDS or the compiled-in board directory.
 * Returns 0, -EINVAL for an empty name, -ENAMETOOLONG when buf (len bytes) is too small. */
int board_file_for(const char *name, char *buf, size_t len);

/* --- RS-485 line setup ---------------------------------------------------------------- */

enum board_rs485_mode {
    BOARD_RS485_NONE,   /* auto-direction transceiver: the line is not touched */
    BOARD_RS485_KERNEL, /* the UART driver switches direction (TIOCSRS485) */
    BOARD_RS485_RTS,    /* libmodbus toggles RTS around each frame (modbus_rtu_set_rts) */
    BOARD_RS485_AUTO,   /* kernel if the line supports it, else none (with a log line) */
};

/* Same values as libmodbus's MODBUS_RTU_RTS_NONE/UP/DOWN, so they can be passed through. */
#define BOARD_RTS_NONE 0
#define BOARD_RTS_UP 1   /* RTS high while sending, low otherwise */
#define BOARD_RTS_DOWN 2 /* RTS low while sending, high otherwise */

/* RS-485 settings of one serial port, from the board file. */
struct board_rs485 {
    enum board_rs485_mode mode;
    bool rts_on_send;         /* RTS level while sending (kernel, rts); default true */
    bool rts_after_send;      /* RTS level after sending; always !rts_on_send */
    bool rx_during_tx;        /* kernel: keep the receiver on while sending; default false */
    int delay_before_send_ms; /* kernel: RTS to first bit, 0..100; default 0 */
    int delay_after_send_ms;  /* kernel: last bit to RTS, 0..100; default 0 */
    int rts_delay_us;         /* rts: libmodbus's delay around RTS switching; -1 = its default
                                 (one character time) */
};

/* What a line ended up with, and what the caller must still do with libmodbus. */
struct board_line {
    enum board_rs485_mode mode; /* what was applied: NONE, KERNEL or RTS, never AUTO */
    int rts;          /* mode RTS: BOARD_RTS_UP/DOWN for modbus_rtu_set_rts(); else NONE */
    int rts_delay_us; /* mode RTS and >= 0: for modbus_rtu_set_rts_delay(); else -1 */
};

const char *board_rs485_mode_name(enum board_rs485_mode m);
/* "none", "kernel", "rts", "auto" -> the mode; anything else -> -EINVAL. */
int board_rs485_mode_parse(const char *s);

/* The settings for a serial device: the board's "serial" entry whose device equals device
 * (directly or after resolving symlinks on both sides), else the board's "rs485_default"
 * (also for device NULL). Never NULL; points into b. */
const struct board_rs485 *board_rs485_find(const board_t *b, const char *device);

/* Applies rs to the open serial line fd and fills *line. device only names the line in the
 * log line. kernel: reads the line's current struct serial_rs485 (TIOCGRS485), keeps only
 * its bus-termination flag, sets SER_RS485_ENABLED, the RTS levels, RX during TX and the
 * delays, and writes it (TIOCSRS485); a line without kernel RS-485 support fails with its
 * errno (-ENOTTY on a pseudo-terminal or a USB adapter). auto: the same, but -ENOTTY,
 * -EINVAL or -EOPNOTSUPP fall back to none with one log_info line and return 0; other
 * errors (-EBADF, -EIO) are returned. rts and none: no ioctl at all. */
int board_rs485_apply(const struct board_rs485 *rs, const char *device, int fd,
                      struct board_line *line);
/* board_rs485_apply(board_rs485_find(b, device), device, fd, line). */
int board_rs485_setup(const board_t *b, const char *device, int fd, struct board_line *line);

/* --- watchdog ------------------------------------------------------------------------- */

/* hardware: opens the board's watchdog device (the kernel starts counting at open), sets
 * its timeout (WDIOC_SETTIMEOUT; if the driver refuses, its own timeout stays and a line is
 * logged). systemd: checks NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID. none: nothing.
 * Returns 0 or the negative errno of opening the device (-EBUSY: someone else, e.g. systemd's
 * RuntimeWatchdogSec, holds it). Calling it twice is -EALREADY. */
int board_watchdog_start(board_t *b);
/* One keepalive: a write of one byte (not 'V') to the device, or "WATCHDOG=1" to systemd.
 * Call it at least every board_watchdog_interval_ms(), and only while the agent is healthy.
 * Returns 0, or a negative errno (the watchdog will fire if kicks keep failing). */
int board_watchdog_kick(board_t *b);
/* Clean stop: writes the magic 'V' before closing, so a driver with magic close disarms
 * (a driver built with nowayout never does; then the board reboots after the timeout).
 * Exiting without this (a crash, kill -9) leaves the watchdog armed: that is the point. */
void board_watchdog_stop(board_t *b);
/* How often to kick, in ms: a third of the hardware timeout, half of systemd's
 * WATCHDOG_USEC; 0 when nothing needs kicking (type none, not started, no systemd
 * watchdog for this process). */
long board_watchdog_interval_ms(const board_t *b);

/* Sends state ("READY=1", "STOPPING=1", "STATUS=...", "WATCHDOG=1") to the service manager
 * over $NOTIFY_SOCKET (libsystemd's sd_notify when built with it, else the same datagram
 * protocol done here). Returns 1 when sent, 0 when not run by systemd (no NOTIFY_SOCKET),
 * or a negative errno. Works on every board. */
int board_sd_notify(const char *state);

/* --- status LEDs ---------------------------------------------------------------------- */

enum board_led {
    BOARD_LED_RUN,    /* the agent runs */
    BOARD_LED_UPLINK, /* connected to the broker */
    BOARD_LED_BUS,    /* Modbus traffic */
    BOARD_LED_FAULT,  /* something needs attention */
    BOARD_LED_COUNT
};

enum board_led_state {
    BOARD_LED_OFF,       /* trigger none, brightness 0 */
    BOARD_LED_ON,        /* trigger none, brightness max_brightness (1 if unknown) */
    BOARD_LED_HEARTBEAT, /* trigger heartbeat (timer 100/900 ms if the kernel lacks it) */
    BOARD_LED_BLINK,     /* trigger timer, 250 ms on, 250 ms off */
    BOARD_LED_FLASH,     /* one short flash (trigger oneshot, then "1" to shot): activity */
};

const char *board_led_name(enum board_led led);

/* Sets an LED through <root>/<name>/{trigger,brightness,...} (root from the board file,
 * /sys/class/leds on real boards). Setting the state an LED already has writes nothing,
 * except FLASH, which flashes again. An LED the board does not have is a successful no-op.
 * Returns 0 or the negative errno of the failed sysfs write (-ENOENT: no such LED). */
int board_led_set(board_t *b, enum board_led led, enum board_led_state state);

/* --- identity ------------------------------------------------------------------------- */

/* Writes the gateway id into buf (len >= BOARD_ID_MAX), from the board's identity source:
 * "fixed" (the id in the board file), "machine-id" (a 32-hex-digit /etc/machine-id, else
 * -EINVAL: an empty or "uninitialized" file must not become an id shared by many gateways),
 * or "file" (a serial number file). The prefix from the board file is prepended and the
 * result sanitized with board_id_sanitize(). Returns 0; -ENODATA when the source is
 * "config" (use agent.json's gateway.id); -ENOSPC when len < BOARD_ID_MAX; -EINVAL when the
 * file holds nothing usable; or the negative errno of reading it. */
int board_identity(const board_t *b, char *buf, size_t len);

/* Makes an id from raw (rawlen bytes, not necessarily NUL-terminated): takes its first line
 * (up to NUL, CR or LF) without surrounding blanks, replaces each run of characters outside
 * [A-Za-z0-9_.-] by one '_' (none at either end), prepends prefix (which must already be
 * of that charset; NULL for none) and cuts the result at 63 characters. Returns the length,
 * -EINVAL when raw contributes no character, -ENOSPC when len < BOARD_ID_MAX. */
int board_id_sanitize(const char *prefix, const char *raw, size_t rawlen, char *buf, size_t len);

/* --- reboot --------------------------------------------------------------------------- */

/* The agent's reboot command. Board "reboot": "none" (sim) only logs and returns 0.
 * "system": logs, sync(), reboot(RB_AUTOBOOT); returns only on failure (-EPERM without
 * CAP_SYS_BOOT). Close the queue first; the watchdog stays armed on purpose. */
int board_reboot(const board_t *b);

/* --- test seam ------------------------------------------------------------------------ */

struct serial_rs485;

/* The system calls the module makes where hardware is needed. Each returns 0 or -errno. */
struct board_ops {
    int (*rs485_get)(int fd, struct serial_rs485 *conf); /* ioctl TIOCGRS485 */
    int (*rs485_set)(int fd, struct serial_rs485 *conf); /* ioctl TIOCSRS485 (the kernel
                                                             writes back what it applied) */
    int (*wdt_set_timeout)(int fd, int *seconds);        /* ioctl WDIOC_SETTIMEOUT */
    int (*wdt_get_timeout)(int fd, int *seconds);        /* ioctl WDIOC_GETTIMEOUT */
    int (*reboot)(void);                                 /* sync(); reboot(RB_AUTOBOOT) */
};

/* The real calls. */
extern const struct board_ops board_sys_ops;

/* Replaces the calls for every board (tests only; NULL restores board_sys_ops). Not
 * thread-safe: call it before any other board function runs. Returns the previous table. */
const struct board_ops *board_set_ops(const struct board_ops *ops);

#endif
