/*
 * board_led: status LEDs through the Linux LED class (<root>/<name>/brightness, trigger,
 * delay_on, delay_off, shot). See board.h.
 *
 * Blinking is left to the kernel's triggers (heartbeat, timer, oneshot), so an LED keeps
 * its pattern without a thread of ours. The last state set is remembered so that the agent
 * may set states from its loops without rewriting sysfs (or flash) every time.
 */
#include "board_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LED_PATH_MAX (BOARD_PATH_MAX + BOARD_LED_NAME_MAX + 32)

static const char *const led_names[BOARD_LED_COUNT] = {
    [BOARD_LED_RUN] = "run",
    [BOARD_LED_UPLINK] = "uplink",
    [BOARD_LED_BUS] = "bus",
    [BOARD_LED_FAULT] = "fault",
};

const char *board_led_name(enum board_led led)
{
    if ((unsigned)led < BOARD_LED_COUNT)
        return led_names[led];
    return "?";
}

/* mkdir -p dir (only for simulated trees: "create": true). */
static int make_dirs(const char *dir)
{
    char p[LED_PATH_MAX];
    size_t n = strlen(dir);

    if (n >= sizeof(p))
        return -ENAMETOOLONG;
    memcpy(p, dir, n + 1);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int led_path(const board_t *b, int led, const char *attr, char *buf, size_t len)
{
    int n = attr ? snprintf(buf, len, "%s/%s/%s", b->led_root, b->led_names[led], attr)
                 : snprintf(buf, len, "%s/%s", b->led_root, b->led_names[led]);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Writes value and a newline to the attribute, as `echo value > attr` does. */
static int led_write(const board_t *b, int led, const char *attr, const char *value)
{
    char path[LED_PATH_MAX], line[32];
    int fd, rc, n;
    ssize_t w;

    if (b->led_create) {
        if ((rc = led_path(b, led, NULL, path, sizeof(path))) < 0 || (rc = make_dirs(path)) < 0)
            return rc;
    }
    if ((rc = led_path(b, led, attr, path, sizeof(path))) < 0)
        return rc;
    n = snprintf(line, sizeof(line), "%s\n", value);
    /* A simulated tree usually sits in /tmp: never follow a planted symlink there. */
    fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | (b->led_create ? O_CREAT | O_NOFOLLOW : 0),
              0644);
    if (fd < 0)
        return -errno;
    do
        w = write(fd, line, (size_t)n);
    while (w < 0 && errno == EINTR);
    rc = w < 0 ? -errno : w == n ? 0 : -EIO;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

/* max_brightness, or 1 when it cannot be read (a simulated tree). */
static long led_max(const board_t *b, int led)
{
    char path[LED_PATH_MAX], buf[32], *end;
    long v = 1;
    ssize_t n;
    int fd;

    if (led_path(b, led, "max_brightness", path, sizeof(path)) < 0)
        return 1;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 1;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 1;
    buf[n] = '\0';
    errno = 0;
    v = strtol(buf, &end, 10);
    if (errno || end == buf || (*end && *end != '\n') || v < 1)
        return 1;
    return v;
}

static int set_steady(const board_t *b, int led, long brightness)
{
    char v[24];
    int rc;

    /* Setting trigger none first: a brightness write under a trigger may be overridden. */
    if ((rc = led_write(b, led, "trigger", "none")) < 0)
        return rc;
    snprintf(v, sizeof(v), "%ld", brightness);
    return led_write(b, led, "brightness", v);
}

static int set_timer(const board_t *b, int led, const char *on_ms, const char *off_ms)
{
    int rc;

    /* delay_on and delay_off appear only once the timer trigger is set. */
    if ((rc = led_write(b, led, "trigger", "timer")) < 0 ||
        (rc = led_write(b, led, "delay_on", on_ms)) < 0)
        return rc;
    return led_write(b, led, "delay_off", off_ms);
}

static int set_state(board_t *b, int led, enum board_led_state state)
{
    int rc;

    switch (state) {
    case BOARD_LED_OFF:
        return set_steady(b, led, 0);
    case BOARD_LED_ON:
        return set_steady(b, led, led_max(b, led));
    case BOARD_LED_HEARTBEAT:
        rc = led_write(b, led, "trigger", "heartbeat");
        if (rc == -EINVAL) /* ledtrig-heartbeat not in this kernel */
            rc = set_timer(b, led, "100", "900");
        return rc;
    case BOARD_LED_BLINK:
        return set_timer(b, led, "250", "250");
    case BOARD_LED_FLASH:
        if (b->led_state[led] != BOARD_LED_FLASH) {
            if (b->led_no_flash[led])
                return b->led_no_flash[led];
            rc = led_write(b, led, "trigger", "oneshot");
            if (rc == -EINVAL) /* ledtrig-oneshot not in this kernel: do not retry */
                b->led_no_flash[led] = rc;
            if (rc < 0)
                return rc;
        }
        return led_write(b, led, "shot", "1");
    }
    return -EINVAL;
}

int board_led_set(board_t *b, enum board_led led, enum board_led_state state)
{
    int rc;

    if ((unsigned)led >= BOARD_LED_COUNT || (unsigned)state > BOARD_LED_FLASH)
        return -EINVAL;
    if (!b->led_names[led][0])
        return 0;
    pthread_mutex_lock(&b->led_lock);
    if (b->led_state[led] == (int)state && state != BOARD_LED_FLASH) {
        rc = 0;
    } else {
        rc = set_state(b, led, state);
        b->led_state[led] = rc < 0 ? -1 : (int)state;
    }
    pthread_mutex_unlock(&b->led_lock);
    return rc;
}
