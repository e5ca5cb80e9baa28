/*
 * board_watchdog: the hardware watchdog (/dev/watchdog, Linux watchdog API) or systemd's
 * (sd_notify WATCHDOG=1). See board.h.
 *
 * Without libsystemd at build time (MLK_HAVE_LIBSYSTEMD unset) the notify protocol is done
 * here: one datagram with the state text to the AF_UNIX socket named by $NOTIFY_SOCKET,
 * "@" standing for the abstract namespace. That is the whole protocol as sd_notify(3)
 * describes it, minus fd passing and vsock, which the agent does not need.
 */
#include "board_priv.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef MLK_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

/* The keepalive byte: anything but 'V', which would arm the magic close. */
static const char keepalive_byte = '\0';

#ifdef MLK_HAVE_LIBSYSTEMD

int board_sd_notify(const char *state)
{
    return sd_notify(0, state);
}

/* Microseconds systemd expects between keepalives for this process, 0 for none. */
static unsigned long long systemd_watchdog_usec(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? (unsigned long long)usec : 0;
}

#else

int board_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    size_t n;
    ssize_t sent;
    int fd, rc = 1;

    if (!path || !*path)
        return 0;
    n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n < 2)
        return -EAFNOSUPPORT; /* vsock: and friends */
    if (n >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    do
        sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&sa,
                      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    while (sent < 0 && errno == EINTR);
    if (sent < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Strict unsigned parse of an environment variable; 0 when absent or malformed. */
static unsigned long long env_ull(const char *name)
{
    const char *s = getenv(name);
    char *end;
    unsigned long long v;

    if (!s || *s < '0' || *s > '9')
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    return errno || *end ? 0 : v;
}

/* As sd_watchdog_enabled(): WATCHDOG_USEC, if WATCHDOG_PID is unset or names us. */
static unsigned long long systemd_watchdog_usec(void)
{
    unsigned long long pid = env_ull("WATCHDOG_PID");

    if (getenv("WATCHDOG_PID") && pid != (unsigned long long)getpid())
        return 0;
    return env_ull("WATCHDOG_USEC");
}

#endif

static int start_hardware(board_t *b)
{
    int fd, secs = b->wdt_timeout_s, rc;

    /* O_APPEND changes nothing for the device; a plain file standing in for it (sim
     * board, tests) keeps every keepalive instead of overwriting the first byte. */
    fd = open(b->wdt_device, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    /* The kernel arms the watchdog at open: from here on it must be kicked. */
    rc = board_cur_ops->wdt_set_timeout(fd, &secs);
    if (rc == -ENOTTY) {
        /* Not a watchdog device (a plain file or FIFO on the sim board, in tests). */
        secs = b->wdt_timeout_s;
    } else if (rc < 0) {
        log_warnx("watchdog %s: cannot set the timeout to %d s (%s); keeping the driver's",
                  b->wdt_device, b->wdt_timeout_s, strerror(-rc));
        if (board_cur_ops->wdt_get_timeout(fd, &secs) < 0 || secs <= 0)
            secs = b->wdt_timeout_s;
    } else if (secs != b->wdt_timeout_s) {
        log_info("watchdog %s: the driver chose a timeout of %d s (asked %d s)", b->wdt_device,
                 secs, b->wdt_timeout_s);
    }
    if (secs <= 0)
        secs = b->wdt_timeout_s;
    b->wdt_fd = fd;
    b->wdt_interval_ms = secs * 1000L / 3;
    return 0;
}

int board_watchdog_start(board_t *b)
{
    unsigned long long usec;
    int rc = 0;

    if (b->wdt_started)
        return -EALREADY;
    b->wdt_interval_ms = 0;
    switch (b->wdt_type) {
    case BOARD_WDT_NONE:
        break;
    case BOARD_WDT_HARDWARE:
        rc = start_hardware(b);
        break;
    case BOARD_WDT_SYSTEMD:
        /* half the interval, as sd_watchdog_enabled(3) recommends; never 0 when enabled */
        usec = systemd_watchdog_usec();
        if (usec > 2000ULL * 86400000) /* long is 32 bits on armhf */
            usec = 2000ULL * 86400000;
        b->wdt_interval_ms = usec ? (long)(usec / 2000) + (usec < 2000) : 0;
        break;
    }
    if (rc == 0)
        b->wdt_started = 1;
    return rc;
}

static int write_byte(int fd, char c)
{
    ssize_t n;

    do
        n = write(fd, &c, 1);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return n == 1 ? 0 : -EIO;
}

int board_watchdog_kick(board_t *b)
{
    int rc;

    if (!b->wdt_started)
        return -EINVAL;
    switch (b->wdt_type) {
    case BOARD_WDT_NONE:
        return 0;
    case BOARD_WDT_HARDWARE:
        return write_byte(b->wdt_fd, keepalive_byte);
    case BOARD_WDT_SYSTEMD:
        rc = board_sd_notify("WATCHDOG=1");
        return rc < 0 ? rc : 0;
    }
    return -EINVAL;
}

void board_watchdog_stop(board_t *b)
{
    if (!b->wdt_started)
        return;
    if (b->wdt_fd >= 0) {
        /* 'V' as the last byte before close(): the magic close. */
        if (write_byte(b->wdt_fd, 'V') < 0)
            log_warn("watchdog %s: magic close", b->wdt_device);
        close(b->wdt_fd);
        b->wdt_fd = -1;
    }
    b->wdt_started = 0;
    b->wdt_interval_ms = 0;
}

long board_watchdog_interval_ms(const board_t *b)
{
    return b->wdt_started ? b->wdt_interval_ms : 0;
}
