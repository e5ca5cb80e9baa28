/*
 * board: board files (load, validate, free), the system-call table and reboot. See board.h;
 * the file format is in docs/board.md.
 *
 * Validation follows agent/config.c: every getter takes the JSON object, the path of that
 * object ("serial[1].rs485") and a key, so each message names exactly where the problem is;
 * unknown keys are errors, because a typo must not silently leave a default in place; all
 * errors are collected before the load fails.
 */
#include "board_priv.h"
#include "jsonc.h"
#include "log.h"
#include "wire.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <linux/serial.h>
#include <linux/watchdog.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <unistd.h>

#ifndef MLK_BOARDS_DIR
#define MLK_BOARDS_DIR "/usr/share/meterlink/boards"
#endif

#define BOARD_FILE_MAX (256 * 1024)

/* --- the system calls ----------------------------------------------------------------- */

static int sys_rs485_get(int fd, struct serial_rs485 *conf)
{
    return ioctl(fd, TIOCGRS485, conf) < 0 ? -errno : 0;
}

static int sys_rs485_set(int fd, struct serial_rs485 *conf)
{
    return ioctl(fd, TIOCSRS485, conf) < 0 ? -errno : 0;
}

static int sys_wdt_set_timeout(int fd, int *seconds)
{
    return ioctl(fd, WDIOC_SETTIMEOUT, seconds) < 0 ? -errno : 0;
}

static int sys_wdt_get_timeout(int fd, int *seconds)
{
    return ioctl(fd, WDIOC_GETTIMEOUT, seconds) < 0 ? -errno : 0;
}

static int sys_reboot(void)
{
    sync();
    return reboot(RB_AUTOBOOT) < 0 ? -errno : 0;
}

const struct board_ops board_sys_ops = {
    .rs485_get = sys_rs485_get,
    .rs485_set = sys_rs485_set,
    .wdt_set_timeout = sys_wdt_set_timeout,
    .wdt_get_timeout = sys_wdt_get_timeout,
    .reboot = sys_reboot,
};

const struct board_ops *board_cur_ops = &board_sys_ops;

const struct board_ops *board_set_ops(const struct board_ops *ops)
{
    const struct board_ops *prev = board_cur_ops;
    board_cur_ops = ops ? ops : &board_sys_ops;
    return prev;
}

/* --- validation helpers --------------------------------------------------------------- */

struct chk {
    const char *origin;
    char *err;
    size_t errlen;
    size_t used;
    int nerr;
};

static void cerr(struct chk *c, const char *path, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cerr(struct chk *c, const char *path, const char *key, const char *fmt, ...)
{
    char what[512], where[160];
    va_list ap;
    int n;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(where, sizeof(where), "%s%s%s", path, (*path && key) ? "." : "", key ? key : "");
    c->nerr++;
    if (!c->err || c->used + 1 >= c->errlen)
        return;
    n = snprintf(c->err + c->used, c->errlen - c->used, "%s%s: %s%s%s", c->used ? "\n" : "",
                 c->origin, where, *where ? ": " : "", what);
    if (n > 0)
        c->used += (size_t)n < c->errlen - c->used ? (size_t)n : c->errlen - c->used - 1;
}

static const cJSON *member(const cJSON *obj, const char *key)
{
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return it && !cJSON_IsNull(it) ? it : NULL; /* JSON null counts as absent */
}

static void check_keys(struct chk *c, const cJSON *obj, const char *path,
                       const char *const *allowed)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            if (strcmp(it->string, allowed[i]) == 0)
                ok = 1;
        if (!ok)
            cerr(c, path, it->string, "unknown key");
    }
}

/* An object member that must be an object when present. Returns it, or NULL. */
static const cJSON *get_obj(struct chk *c, const cJSON *obj, const char *path, const char *key)
{
    const cJSON *it = member(obj, key);
    if (it && !cJSON_IsObject(it)) {
        cerr(c, path, key, "must be an object");
        return NULL;
    }
    return it;
}

/* String member: absent -> def (NULL def = required). Returns 1 when dst was set. */
static int get_str(struct chk *c, const cJSON *obj, const char *path, const char *key, char *dst,
                   size_t len, const char *def)
{
    const cJSON *it = member(obj, key);

    if (!it) {
        if (!def) {
            cerr(c, path, key, "required");
            return 0;
        }
        snprintf(dst, len, "%s", def);
        return 1;
    }
    if (!cJSON_IsString(it)) {
        cerr(c, path, key, "must be a string");
        return 0;
    }
    if (strlen(it->valuestring) >= len) {
        cerr(c, path, key, "longer than %zu characters", len - 1);
        return 0;
    }
    snprintf(dst, len, "%s", it->valuestring);
    return 1;
}

static void get_abs_path(struct chk *c, const cJSON *obj, const char *path, const char *key,
                         char *dst, size_t len, const char *def)
{
    if (get_str(c, obj, path, key, dst, len, def) && dst[0] != '/')
        cerr(c, path, key, "\"%s\" must be an absolute path", dst);
}

static bool get_bool(struct chk *c, const cJSON *obj, const char *path, const char *key, bool def)
{
    const cJSON *it = member(obj, key);

    if (!it)
        return def;
    if (!cJSON_IsBool(it)) {
        cerr(c, path, key, "must be true or false");
        return def;
    }
    return cJSON_IsTrue(it);
}

static int get_int(struct chk *c, const cJSON *obj, const char *path, const char *key, int lo,
                   int hi, int def)
{
    const cJSON *it = member(obj, key);

    if (!it)
        return def;
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble)) {
        cerr(c, path, key, "must be an integer");
        return def;
    }
    if (it->valuedouble < lo || it->valuedouble > hi) {
        cerr(c, path, key, "%.0f is out of range (%d..%d)", it->valuedouble, lo, hi);
        return def;
    }
    return (int)it->valuedouble;
}

/* Keys in `keys` that are present in obj are an error: they do not apply here. */
static void refuse_keys(struct chk *c, const cJSON *obj, const char *path, const char *const *keys,
                        const char *why)
{
    for (int i = 0; keys[i]; i++)
        if (member(obj, keys[i]))
            cerr(c, path, keys[i], "%s", why);
}

/* --- sections ------------------------------------------------------------------------- */

static void parse_rs485(struct chk *c, const cJSON *o, const char *path, struct board_rs485 *rs)
{
    static const char *const keys[] = {"mode",
                                       "rts_on_send",
                                       "rts_after_send",
                                       "rx_during_tx",
                                       "delay_before_send_ms",
                                       "delay_after_send_ms",
                                       "rts_delay_us",
                                       NULL};
    static const char *const kernel_only[] = {"rx_during_tx", "delay_before_send_ms",
                                              "delay_after_send_ms", NULL};
    static const char *const rts_only[] = {"rts_delay_us", NULL};
    static const char *const levels[] = {"rts_on_send", "rts_after_send", NULL};
    char mode[16] = "";
    int m = -1;

    check_keys(c, o, path, keys);
    if (get_str(c, o, path, "mode", mode, sizeof(mode), NULL)) {
        m = board_rs485_mode_parse(mode);
        if (m < 0)
            cerr(c, path, "mode", "\"%s\" must be \"kernel\", \"rts\", \"none\" or \"auto\"", mode);
    }
    rs->mode = m < 0 ? BOARD_RS485_AUTO : (enum board_rs485_mode)m;
    rs->rts_on_send = get_bool(c, o, path, "rts_on_send", true);
    rs->rts_after_send = get_bool(c, o, path, "rts_after_send", !rs->rts_on_send);
    if (member(o, "rts_on_send") && member(o, "rts_after_send") &&
        rs->rts_after_send == rs->rts_on_send)
        cerr(c, path, "rts_after_send",
             "must differ from rts_on_send (RTS has to change level when sending ends)");
    rs->rts_after_send = !rs->rts_on_send;
    rs->rx_during_tx = get_bool(c, o, path, "rx_during_tx", false);
    /* Linux clamps the delays to 100 ms (serial_core); refuse what would be changed. */
    rs->delay_before_send_ms = get_int(c, o, path, "delay_before_send_ms", 0, 100, 0);
    rs->delay_after_send_ms = get_int(c, o, path, "delay_after_send_ms", 0, 100, 0);
    rs->rts_delay_us = get_int(c, o, path, "rts_delay_us", 0, 1000000, -1);
    if (m < 0)
        return;
    switch (rs->mode) {
    case BOARD_RS485_NONE:
        refuse_keys(c, o, path, kernel_only, "does not apply to mode \"none\"");
        refuse_keys(c, o, path, rts_only, "does not apply to mode \"none\"");
        refuse_keys(c, o, path, levels, "does not apply to mode \"none\"");
        break;
    case BOARD_RS485_KERNEL:
    case BOARD_RS485_AUTO:
        refuse_keys(c, o, path, rts_only, "only applies to mode \"rts\"");
        break;
    case BOARD_RS485_RTS:
        refuse_keys(c, o, path, kernel_only,
                    "only applies to modes \"kernel\" and \"auto\" (use rts_delay_us)");
        break;
    }
}

static void parse_serial(struct chk *c, const cJSON *arr, board_t *b)
{
    static const char *const keys[] = {"device", "label", "rs485", NULL};
    const cJSON *o;
    int i = 0;

    if (!cJSON_IsArray(arr)) {
        cerr(c, "", "serial", "must be an array of serial ports");
        return;
    }
    if (cJSON_GetArraySize(arr) > BOARD_MAX_SERIAL) {
        cerr(c, "", "serial", "more than %d serial ports", BOARD_MAX_SERIAL);
        return;
    }
    cJSON_ArrayForEach(o, arr)
    {
        int idx = i++;
        struct board_port *p = &b->serial[idx];
        char path[32], sub[48], label[BOARD_ID_MAX];
        const cJSON *rs;

        b->nserial = i;
        snprintf(path, sizeof(path), "serial[%d]", idx);
        if (!cJSON_IsObject(o)) {
            cerr(c, path, NULL, "must be an object");
            continue;
        }
        check_keys(c, o, path, keys);
        get_abs_path(c, o, path, "device", p->device, sizeof(p->device), NULL);
        get_str(c, o, path, "label", label, sizeof(label), "");
        for (int j = 0; p->device[0] && j < idx; j++)
            if (strcmp(b->serial[j].device, p->device) == 0)
                cerr(c, path, "device", "\"%s\" is already serial[%d]", p->device, j);
        p->rs = b->rs485_default;
        snprintf(sub, sizeof(sub), "%s.rs485", path);
        if ((rs = get_obj(c, o, path, "rs485")))
            parse_rs485(c, rs, sub, &p->rs);
    }
}

static void parse_watchdog(struct chk *c, const cJSON *o, board_t *b)
{
    static const char *const keys[] = {"type", "device", "timeout_s", NULL};
    static const char *const hw_only[] = {"device", "timeout_s", NULL};
    char type[16] = "";

    b->wdt_type = BOARD_WDT_NONE;
    snprintf(b->wdt_device, sizeof(b->wdt_device), "/dev/watchdog");
    b->wdt_timeout_s = 15;
    if (!o)
        return;
    check_keys(c, o, "watchdog", keys);
    if (!get_str(c, o, "watchdog", "type", type, sizeof(type), NULL))
        return;
    if (strcmp(type, "hardware") == 0) {
        b->wdt_type = BOARD_WDT_HARDWARE;
        get_abs_path(c, o, "watchdog", "device", b->wdt_device, sizeof(b->wdt_device),
                     "/dev/watchdog");
        b->wdt_timeout_s = get_int(c, o, "watchdog", "timeout_s", 1, 3600, 15);
    } else if (strcmp(type, "systemd") == 0 || strcmp(type, "none") == 0) {
        b->wdt_type = type[0] == 's' ? BOARD_WDT_SYSTEMD : BOARD_WDT_NONE;
        refuse_keys(c, o, "watchdog", hw_only, "only applies to type \"hardware\"");
    } else {
        cerr(c, "watchdog", "type", "\"%s\" must be \"hardware\", \"systemd\" or \"none\"", type);
    }
}

static void parse_leds(struct chk *c, const cJSON *o, board_t *b)
{
    static const char *const keys[] = {"root", "create", "run", "uplink", "bus", "fault", NULL};

    snprintf(b->led_root, sizeof(b->led_root), "/sys/class/leds");
    if (!o)
        return;
    check_keys(c, o, "leds", keys);
    get_abs_path(c, o, "leds", "root", b->led_root, sizeof(b->led_root), "/sys/class/leds");
    b->led_create = get_bool(c, o, "leds", "create", false);
    for (int i = 0; i < BOARD_LED_COUNT; i++) {
        const char *key = board_led_name((enum board_led)i);
        char *name = b->led_names[i];

        if (!get_str(c, o, "leds", key, name, BOARD_LED_NAME_MAX, ""))
            continue;
        if (name[0] && (strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))) {
            cerr(c, "leds", key, "\"%s\" is not an LED name (a directory under root)", name);
            name[0] = '\0';
        }
    }
}

static int id_charset(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-'))
            return 0;
    return 1;
}

static void parse_identity(struct chk *c, const cJSON *o, board_t *b)
{
    static const char *const keys[] = {"source", "id", "path", "prefix", NULL};
    static const char *const file_keys[] = {"path", "prefix", NULL};
    static const char *const id_key[] = {"id", NULL};
    char src[16] = "";

    b->id_source = BOARD_ID_CONFIG;
    if (!o)
        return;
    check_keys(c, o, "identity", keys);
    if (!get_str(c, o, "identity", "source", src, sizeof(src), NULL))
        return;
    if (strcmp(src, "config") == 0) {
        refuse_keys(c, o, "identity", id_key, "only applies to source \"fixed\"");
        refuse_keys(c, o, "identity", file_keys,
                    "only applies to sources \"machine-id\" and \"file\"");
    } else if (strcmp(src, "fixed") == 0) {
        b->id_source = BOARD_ID_FIXED;
        if (get_str(c, o, "identity", "id", b->id_fixed, sizeof(b->id_fixed), NULL) &&
            !wire_id_valid(b->id_fixed))
            cerr(c, "identity", "id", "\"%s\" is not a valid id (1..63 of A-Z a-z 0-9 _ . -)",
                 b->id_fixed);
        refuse_keys(c, o, "identity", file_keys,
                    "only applies to sources \"machine-id\" and \"file\"");
    } else if (strcmp(src, "machine-id") == 0 || strcmp(src, "file") == 0) {
        int mid = src[0] == 'm';
        b->id_source = mid ? BOARD_ID_MACHINE_ID : BOARD_ID_FILE;
        get_abs_path(c, o, "identity", "path", b->id_path, sizeof(b->id_path),
                     mid ? "/etc/machine-id" : NULL);
        if (get_str(c, o, "identity", "prefix", b->id_prefix, sizeof(b->id_prefix), "") &&
            !id_charset(b->id_prefix)) {
            cerr(c, "identity", "prefix", "\"%s\" may only hold A-Z a-z 0-9 _ . -", b->id_prefix);
            b->id_prefix[0] = '\0';
        }
        refuse_keys(c, o, "identity", id_key, "only applies to source \"fixed\"");
    } else {
        cerr(c, "identity", "source",
             "\"%s\" must be \"config\", \"fixed\", \"machine-id\" or \"file\"", src);
    }
}

static void parse_board(struct chk *c, const cJSON *root, board_t *b)
{
    static const char *const keys[] = {"name",          "description", "serial",
                                       "rs485_default", "watchdog",    "leds",
                                       "identity",      "reboot",      NULL};
    char desc[512], reboot_s[16];
    const cJSON *it;

    check_keys(c, root, "", keys);
    if (get_str(c, root, "", "name", b->name, sizeof(b->name), NULL) && !wire_id_valid(b->name))
        cerr(c, "", "name", "\"%s\" is not a valid name (1..63 of A-Z a-z 0-9 _ . -)", b->name);
    get_str(c, root, "", "description", desc, sizeof(desc), "");

    /* defaults for ports that are not listed, and for listed ones without "rs485" */
    b->rs485_default = (struct board_rs485){
        .mode = BOARD_RS485_AUTO, .rts_on_send = true, .rts_after_send = false, .rts_delay_us = -1};
    if ((it = get_obj(c, root, "", "rs485_default")))
        parse_rs485(c, it, "rs485_default", &b->rs485_default);
    if ((it = member(root, "serial")))
        parse_serial(c, it, b);

    parse_watchdog(c, get_obj(c, root, "", "watchdog"), b);
    parse_leds(c, get_obj(c, root, "", "leds"), b);
    parse_identity(c, get_obj(c, root, "", "identity"), b);

    b->reboot_system = true;
    if (get_str(c, root, "", "reboot", reboot_s, sizeof(reboot_s), "system")) {
        if (strcmp(reboot_s, "none") == 0)
            b->reboot_system = false;
        else if (strcmp(reboot_s, "system") != 0)
            cerr(c, "", "reboot", "\"%s\" must be \"system\" or \"none\"", reboot_s);
    }
}

/* --- load, free ----------------------------------------------------------------------- */

int board_parse(const char *json, size_t len, const char *origin, board_t **out, char *err,
                size_t errlen)
{
    struct chk c = {origin, err, errlen, 0, 0};
    cJSON *root = NULL;
    const char *end = NULL;
    char *text;
    board_t *b;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    text = malloc(len + 1);
    b = calloc(1, sizeof(*b));
    if (!text || !b) {
        free(text);
        free(b);
        cerr(&c, "", NULL, "out of memory");
        return -ENOMEM;
    }
    memcpy(text, json, len);
    text[len] = '\0';
    json_strip_comments(text, len);
    root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        char where[32];
        snprintf(where, sizeof(where), "line %d", json_line_of(text, end ? end : text));
        cerr(&c, where, NULL, "not valid JSON");
    } else if (!cJSON_IsObject(root)) {
        cerr(&c, "", NULL, "must be a JSON object");
    } else {
        parse_board(&c, root, b);
    }
    cJSON_Delete(root);
    free(text);
    if (c.nerr) {
        free(b);
        return -EINVAL;
    }
    b->wdt_fd = -1;
    for (int i = 0; i < BOARD_LED_COUNT; i++)
        b->led_state[i] = -1;
    pthread_mutex_init(&b->led_lock, NULL);
    *out = b;
    return 0;
}

int board_load(const char *path, board_t **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n;
    int rc;

    *out = NULL;
    if (!f) {
        rc = -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
        return rc;
    }
    buf = malloc(BOARD_FILE_MAX);
    n = buf ? fread(buf, 1, BOARD_FILE_MAX, f) : 0;
    if (!buf || ferror(f) || !feof(f)) {
        rc = !buf ? -ENOMEM : ferror(f) ? -EIO : -EFBIG;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path,
                     rc == -EFBIG ? "larger than 256 KiB" : strerror(-rc));
        fclose(f);
        free(buf);
        return rc;
    }
    fclose(f);
    rc = board_parse(buf, n, path, out, err, errlen);
    free(buf);
    return rc;
}

void board_free(board_t *b)
{
    if (!b)
        return;
    if (b->wdt_fd >= 0)
        close(b->wdt_fd); /* no magic close: only board_watchdog_stop() disarms */
    pthread_mutex_destroy(&b->led_lock);
    free(b);
}

const char *board_name(const board_t *b)
{
    return b->name;
}

int board_file_for(const char *name, char *buf, size_t len)
{
    const char *dir = getenv("MLK_BOARDS");
    int n;

    if (!name || !*name)
        return -EINVAL;
    if (!dir || !*dir)
        dir = MLK_BOARDS_DIR;
    if (strchr(name, '/'))
        n = snprintf(buf, len, "%s", name);
    else
        n = snprintf(buf, len, "%s/%s.json", dir, name);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* --- reboot --------------------------------------------------------------------------- */

int board_reboot(const board_t *b)
{
    int rc;

    if (!b->reboot_system) {
        log_info("reboot requested: board %s does not reboot (\"reboot\": \"none\")", b->name);
        return 0;
    }
    log_info("board %s: rebooting", b->name);
    rc = board_cur_ops->reboot(); /* the real one returns only on failure */
    return rc;
}
