/*
 * test_board: the board support layer (board/board.h) without hardware. Board files: the
 * shipped ones, a complete one, and a table of broken ones that must each be refused with
 * a message naming the key. RS-485: the exact struct serial_rs485 each mode would send,
 * through the board_ops seam, and the real ioctls on a pseudo-terminal (ENOTTY). Watchdog:
 * keepalive bytes and the magic close against a regular file and a FIFO, and the systemd
 * notify datagram on a socket of our own. LEDs: the files written into a temporary sysfs
 * tree. Identity: sanitizing and every source. Reboot: only through a fake; nothing here
 * may ever reboot the machine.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "board.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <linux/serial.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mlk-test-board-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

/* rm -r path (no symlinks followed). */
static int remove_tree(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    int rc = 0;

    if (lstat(path, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode))
        return unlink(path);
    if (!(d = opendir(path)))
        return -1;
    while ((e = readdir(d))) {
        char sub[512];
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        rc |= remove_tree(sub);
    }
    closedir(d);
    return rmdir(path) | rc;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    return remove_tree(tmpdir);
}

/* tmpdir/rel into buf */
static const char *tpath(char *buf, size_t len, const char *rel)
{
    int n = snprintf(buf, len, "%s/%s", tmpdir, rel);
    assert_true(n > 0 && (size_t)n < len);
    return buf;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_i64_eq((long long)fwrite(data, 1, len, f), (long long)len);
    assert_i64_eq(fclose(f), 0);
}

/* The whole file; *len gets its size. Caller frees. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 4096);
    assert_non_null(f);
    assert_non_null(buf);
    *len = fread(buf, 1, 4095, f);
    fclose(f);
    return buf;
}

static void check_file_bytes(const char *path, const char *want, size_t wantlen)
{
    size_t len;
    char *got = read_file(path, &len);

    if (len != wantlen || memcmp(got, want, len) != 0) {
        print_error("%s: got %zu bytes:", path, len);
        for (size_t i = 0; i < len; i++)
            print_error(" %02x", (unsigned char)got[i]);
        print_error("; want %zu bytes:", wantlen);
        for (size_t i = 0; i < wantlen; i++)
            print_error(" %02x", (unsigned char)want[i]);
        print_error("\n");
        free(got);
        fail();
    }
    free(got);
}

static void check_file_text(const char *path, const char *want)
{
    size_t len;
    char *got = read_file(path, &len);
    assert_string_equal(got, want);
    free(got);
}

static board_t *parse_ok(const char *json)
{
    char err[BOARD_ERR_MAX];
    board_t *b = NULL;
    int rc = board_parse(json, strlen(json), "t.json", &b, err, sizeof(err));

    if (rc != 0)
        print_error("board_parse: %d: %s\n", rc, err);
    assert_i64_eq(rc, 0);
    assert_non_null(b);
    return b;
}

/* --- board files ---------------------------------------------------------------------- */

static void test_shipped_boards(void **state)
{
    char path[512], err[BOARD_ERR_MAX], id[BOARD_ID_MAX];
    const struct board_rs485 *rs;
    board_t *b = NULL;

    (void)state;
    snprintf(path, sizeof(path), "%s/board/boards/generic-arm.json", MLK_SOURCE_DIR);
    assert_i64_eq(board_load(path, &b, err, sizeof(err)), 0);
    assert_string_equal(board_name(b), "generic-arm");
    rs = board_rs485_find(b, "/dev/ttyS1");
    assert_string_equal(board_rs485_mode_name(rs->mode), "kernel");
    assert_true(rs->rts_on_send);
    assert_false(rs->rts_after_send);
    assert_i64_eq(rs->delay_before_send_ms, 0);
    rs = board_rs485_find(b, "/dev/ttyAMA0");
    assert_string_equal(board_rs485_mode_name(rs->mode), "kernel");
    rs = board_rs485_find(b, "/dev/ttyUSB7"); /* not listed: rs485_default */
    assert_string_equal(board_rs485_mode_name(rs->mode), "auto");
    board_free(b);

    snprintf(path, sizeof(path), "%s/board/boards/sim.json", MLK_SOURCE_DIR);
    assert_i64_eq(board_load(path, &b, err, sizeof(err)), 0);
    assert_string_equal(board_name(b), "sim");
    rs = board_rs485_find(b, "/dev/pts/3");
    assert_string_equal(board_rs485_mode_name(rs->mode), "none");
    assert_i64_eq(board_identity(b, id, sizeof(id)), -ENODATA);
    assert_i64_eq(board_watchdog_start(b), 0);
    assert_i64_eq(board_watchdog_interval_ms(b), 0);
    assert_i64_eq(board_watchdog_kick(b), 0);
    board_watchdog_stop(b);
    board_free(b);
}

static void test_file_for(void **state)
{
    char buf[256], small[8];
    const char *env = getenv("MLK_BOARDS");
    char *saved = env ? strdup(env) : NULL;

    (void)state;
    assert_i64_eq(setenv("MLK_BOARDS", "/opt/boards", 1), 0);
    assert_i64_eq(board_file_for("sim", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "/opt/boards/sim.json");
    assert_i64_eq(board_file_for("./my/board.json", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "./my/board.json");
    assert_i64_eq(board_file_for("generic-arm", small, sizeof(small)), -ENAMETOOLONG);
    assert_i64_eq(board_file_for("", buf, sizeof(buf)), -EINVAL);
    /* unset: the compiled-in folder, which holds the shipped files */
    assert_i64_eq(unsetenv("MLK_BOARDS"), 0);
    assert_i64_eq(board_file_for("sim", buf, sizeof(buf)), 0);
    assert_i64_eq(access(buf, R_OK), 0);
    if (saved)
        setenv("MLK_BOARDS", saved, 1);
    free(saved);
}

static void test_parse_complete(void **state)
{
    static const char json[] =
        "// a board with every key\n"
        "{\n"
        "  \"name\": \"full-1\", \"description\": \"test\", /* block */\n"
        "  \"rs485_default\": {\"mode\": \"rts\", \"rts_on_send\": false, \"rts_delay_us\": 250},\n"
        "  \"serial\": [\n"
        "    {\"device\": \"/dev/ttyS1\", \"label\": \"A\", \"rs485\": {\"mode\": \"kernel\",\n"
        "     \"rts_on_send\": false, \"rts_after_send\": true, \"rx_during_tx\": true,\n"
        "     \"delay_before_send_ms\": 3, \"delay_after_send_ms\": 100}},\n"
        "    {\"device\": \"/dev/ttyS2\"},\n"
        "    {\"device\": \"/dev/ttyS3\", \"rs485\": {\"mode\": \"none\"}}\n"
        "  ],\n"
        "  \"watchdog\": {\"type\": \"systemd\"},\n"
        "  \"leds\": {\"root\": \"/tmp/x\", \"create\": true, \"run\": \"r\", \"fault\": \"f\"},\n"
        "  \"identity\": {\"source\": \"fixed\", \"id\": \"gw.lab-7\"},\n"
        "  \"reboot\": \"none\"\n"
        "}\n";
    char id[BOARD_ID_MAX];
    board_t *b = parse_ok(json);
    const struct board_rs485 *rs;

    (void)state;
    assert_string_equal(board_name(b), "full-1");
    rs = board_rs485_find(b, "/dev/ttyS1");
    assert_i64_eq(rs->mode, BOARD_RS485_KERNEL);
    assert_false(rs->rts_on_send);
    assert_true(rs->rts_after_send);
    assert_true(rs->rx_during_tx);
    assert_i64_eq(rs->delay_before_send_ms, 3);
    assert_i64_eq(rs->delay_after_send_ms, 100);
    assert_i64_eq(rs->rts_delay_us, -1);
    /* listed without rs485: the default */
    rs = board_rs485_find(b, "/dev/ttyS2");
    assert_i64_eq(rs->mode, BOARD_RS485_RTS);
    assert_false(rs->rts_on_send);
    assert_i64_eq(rs->rts_delay_us, 250);
    rs = board_rs485_find(b, "/dev/ttyS3");
    assert_i64_eq(rs->mode, BOARD_RS485_NONE);
    rs = board_rs485_find(b, "/dev/ttyS9");
    assert_i64_eq(rs->mode, BOARD_RS485_RTS);
    assert_i64_eq(board_identity(b, id, sizeof(id)), 0);
    assert_string_equal(id, "gw.lab-7");
    assert_i64_eq(board_reboot(b), 0); /* "none": logs only */
    board_free(b);

    /* the smallest valid board: only a name; everything else defaults */
    b = parse_ok("{\"name\": \"n\"}");
    assert_i64_eq(board_rs485_find(b, "/dev/ttyS0")->mode, BOARD_RS485_AUTO);
    assert_i64_eq(board_identity(b, id, sizeof(id)), -ENODATA);
    assert_i64_eq(board_led_set(b, BOARD_LED_RUN, BOARD_LED_ON), 0); /* no LEDs: no-op */
    board_free(b);
}

struct bad_case {
    const char *name;
    const char *json;
    const char *want; /* substring of the message */
};

static const struct bad_case bad_cases[] = {
    {"not json", "{", "t.json: line 1: not valid JSON"},
    {"not json, line 3", "{\n\"name\": \"x\",\n}", "t.json: line 3: not valid JSON"},
    {"array", "[1, 2]", "t.json: must be a JSON object"},
    {"empty", "", "not valid JSON"},
    {"no name", "{}", "t.json: name: required"},
    {"name not string", "{\"name\": 5}", "name: must be a string"},
    {"bad name", "{\"name\": \"a b\"}", "name: \"a b\" is not a valid name"},
    {"unknown key", "{\"name\": \"x\", \"serail\": []}", "t.json: serail: unknown key"},
    {"serial not array", "{\"name\": \"x\", \"serial\": {}}", "serial: must be an array"},
    {"serial entry not object", "{\"name\": \"x\", \"serial\": [1]}",
     "serial[0]: must be an object"},
    {"no device", "{\"name\": \"x\", \"serial\": [{}]}", "serial[0].device: required"},
    {"relative device", "{\"name\": \"x\", \"serial\": [{\"device\": \"ttyS1\"}]}",
     "serial[0].device: \"ttyS1\" must be an absolute path"},
    {"duplicate device",
     "{\"name\": \"x\", \"serial\": [{\"device\": \"/dev/ttyS1\"}, {\"device\": \"/dev/ttyS1\"}]}",
     "serial[1].device: \"/dev/ttyS1\" is already serial[0]"},
    {"unknown port key", "{\"name\": \"x\", \"serial\": [{\"device\": \"/d\", \"baud\": 9600}]}",
     "serial[0].baud: unknown key"},
    {"rs485 not object",
     "{\"name\": \"x\", \"serial\": [{\"device\": \"/d\", \"rs485\": \"kernel\"}]}",
     "serial[0].rs485: must be an object"},
    {"no mode", "{\"name\": \"x\", \"serial\": [{\"device\": \"/d\", \"rs485\": {}}]}",
     "serial[0].rs485.mode: required"},
    {"bad mode",
     "{\"name\": \"x\", \"serial\": [{\"device\": \"/d\", \"rs485\": {\"mode\": \"kernal\"}}]}",
     "serial[0].rs485.mode: \"kernal\" must be \"kernel\", \"rts\", \"none\" or \"auto\""},
    {"delay range",
     "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"kernel\", \"delay_before_send_ms\": 101}}",
     "rs485_default.delay_before_send_ms: 101 is out of range (0..100)"},
    {"delay negative",
     "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"auto\", \"delay_after_send_ms\": -1}}",
     "rs485_default.delay_after_send_ms: -1 is out of range (0..100)"},
    {"delay fraction",
     "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"kernel\", \"delay_after_send_ms\": 1.5}}",
     "rs485_default.delay_after_send_ms: must be an integer"},
    {"level not bool",
     "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"kernel\", \"rts_on_send\": 1}}",
     "rs485_default.rts_on_send: must be true or false"},
    {"equal levels",
     "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"kernel\", \"rts_on_send\": true, "
     "\"rts_after_send\": true}}",
     "rs485_default.rts_after_send: must differ from rts_on_send"},
    {"rts delay in kernel mode",
     "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"kernel\", \"rts_delay_us\": 10}}",
     "rs485_default.rts_delay_us: only applies to mode \"rts\""},
    {"kernel delay in rts mode",
     "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"rts\", \"delay_after_send_ms\": 1}}",
     "rs485_default.delay_after_send_ms: only applies to modes \"kernel\" and \"auto\""},
    {"level in none mode",
     "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"none\", \"rts_on_send\": false}}",
     "rs485_default.rts_on_send: does not apply to mode \"none\""},
    {"rs485 unknown key", "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"none\", \"foo\": 1}}",
     "rs485_default.foo: unknown key"},
    {"rts delay range",
     "{\"name\": \"x\", \"rs485_default\": {\"mode\": \"rts\", \"rts_delay_us\": 2000000}}",
     "rs485_default.rts_delay_us: 2000000 is out of range (0..1000000)"},
    {"too many ports",
     "{\"name\": \"x\", \"serial\": [{\"device\": \"/1\"}, {\"device\": \"/2\"}, {\"device\": "
     "\"/3\"}, {\"device\": \"/4\"}, {\"device\": \"/5\"}, {\"device\": \"/6\"}, {\"device\": "
     "\"/7\"}, {\"device\": \"/8\"}, {\"device\": \"/9\"}, {\"device\": \"/10\"}, {\"device\": "
     "\"/11\"}, {\"device\": \"/12\"}, {\"device\": \"/13\"}, {\"device\": \"/14\"}, "
     "{\"device\": \"/15\"}, {\"device\": \"/16\"}, {\"device\": \"/17\"}]}",
     "serial: more than 16 serial ports"},
    {"long label",
     "{\"name\": \"x\", \"serial\": [{\"device\": \"/d\", \"label\": "
     "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}]}",
     "serial[0].label: longer than 63 characters"},
    {"watchdog not object", "{\"name\": \"x\", \"watchdog\": \"hardware\"}",
     "watchdog: must be an object"},
    {"watchdog no type", "{\"name\": \"x\", \"watchdog\": {}}", "watchdog.type: required"},
    {"watchdog bad type", "{\"name\": \"x\", \"watchdog\": {\"type\": \"hw\"}}",
     "watchdog.type: \"hw\" must be \"hardware\", \"systemd\" or \"none\""},
    {"watchdog timeout",
     "{\"name\": \"x\", \"watchdog\": {\"type\": \"hardware\", \"timeout_s\": 0}}",
     "watchdog.timeout_s: 0 is out of range (1..3600)"},
    {"watchdog device relative",
     "{\"name\": \"x\", \"watchdog\": {\"type\": \"hardware\", \"device\": \"watchdog0\"}}",
     "watchdog.device: \"watchdog0\" must be an absolute path"},
    {"watchdog device for systemd",
     "{\"name\": \"x\", \"watchdog\": {\"type\": \"systemd\", \"device\": \"/dev/watchdog\"}}",
     "watchdog.device: only applies to type \"hardware\""},
    {"watchdog unknown key", "{\"name\": \"x\", \"watchdog\": {\"type\": \"none\", \"x\": 1}}",
     "watchdog.x: unknown key"},
    {"led name with slash", "{\"name\": \"x\", \"leds\": {\"run\": \"a/b\"}}",
     "leds.run: \"a/b\" is not an LED name"},
    {"led name dotdot", "{\"name\": \"x\", \"leds\": {\"bus\": \"..\"}}",
     "leds.bus: \"..\" is not an LED name"},
    {"led root relative", "{\"name\": \"x\", \"leds\": {\"root\": \"leds\"}}",
     "leds.root: \"leds\" must be an absolute path"},
    {"led unknown", "{\"name\": \"x\", \"leds\": {\"status\": \"s\"}}", "leds.status: unknown key"},
    {"led create not bool", "{\"name\": \"x\", \"leds\": {\"create\": \"yes\"}}",
     "leds.create: must be true or false"},
    {"identity no source", "{\"name\": \"x\", \"identity\": {}}", "identity.source: required"},
    {"identity bad source", "{\"name\": \"x\", \"identity\": {\"source\": \"mac\"}}",
     "identity.source: \"mac\" must be \"config\", \"fixed\", \"machine-id\" or \"file\""},
    {"fixed without id", "{\"name\": \"x\", \"identity\": {\"source\": \"fixed\"}}",
     "identity.id: required"},
    {"fixed bad id", "{\"name\": \"x\", \"identity\": {\"source\": \"fixed\", \"id\": \"g w\"}}",
     "identity.id: \"g w\" is not a valid id"},
    {"file without path", "{\"name\": \"x\", \"identity\": {\"source\": \"file\"}}",
     "identity.path: required"},
    {"bad prefix",
     "{\"name\": \"x\", \"identity\": {\"source\": \"machine-id\", \"prefix\": \"g w\"}}",
     "identity.prefix: \"g w\" may only hold A-Z a-z 0-9 _ . -"},
    {"long prefix",
     "{\"name\": \"x\", \"identity\": {\"source\": \"machine-id\", \"prefix\": "
     "\"0123456789012345678901234567890123\"}}",
     "identity.prefix: longer than 31 characters"},
    {"id with machine-id",
     "{\"name\": \"x\", \"identity\": {\"source\": \"machine-id\", \"id\": \"a\"}}",
     "identity.id: only applies to source \"fixed\""},
    {"path with config",
     "{\"name\": \"x\", \"identity\": {\"source\": \"config\", \"path\": \"/etc/machine-id\"}}",
     "identity.path: only applies to sources \"machine-id\" and \"file\""},
    {"bad reboot", "{\"name\": \"x\", \"reboot\": \"halt\"}",
     "reboot: \"halt\" must be \"system\" or \"none\""},
};

static void test_parse_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *bc = &bad_cases[i];
        char err[BOARD_ERR_MAX];
        board_t *b = (board_t *)1;
        int rc = board_parse(bc->json, strlen(bc->json), "t.json", &b, err, sizeof(err));

        assert_i64_eq_ctx(bc->name, rc, -EINVAL);
        assert_true(b == NULL);
        assert_contains_ctx(bc->name, err, bc->want);
    }
}

static void test_parse_reports_every_error(void **state)
{
    static const char json[] = "{\"name\": \"a b\", \"serial\": [{\"device\": \"x\"}],\n"
                               " \"watchdog\": {\"type\": \"hw\"}, \"reboot\": 1}";
    char err[BOARD_ERR_MAX], small[40];
    board_t *b = NULL;
    int lines = 1;

    (void)state;
    assert_i64_eq(board_parse(json, strlen(json), "t.json", &b, err, sizeof(err)), -EINVAL);
    assert_contains(err, "t.json: name: \"a b\"");
    assert_contains(err, "t.json: serial[0].device: \"x\" must be an absolute path");
    assert_contains(err, "t.json: watchdog.type: \"hw\"");
    assert_contains(err, "t.json: reboot: must be a string");
    for (const char *p = err; *p; p++)
        lines += *p == '\n';
    assert_i64_eq(lines, 4);
    /* a short buffer is cut, never overrun; NULL is allowed */
    memset(small, 'x', sizeof(small));
    assert_i64_eq(board_parse(json, strlen(json), "t.json", &b, small, sizeof(small)), -EINVAL);
    assert_i64_eq((long long)strlen(small), (long long)sizeof(small) - 1);
    assert_i64_eq(board_parse(json, strlen(json), "t.json", &b, NULL, 0), -EINVAL);
}

static void test_load_errors(void **state)
{
    char path[128], err[BOARD_ERR_MAX], text[64];
    board_t *b = (board_t *)1;

    (void)state;
    tpath(path, sizeof(path), "missing.json");
    assert_i64_eq(board_load(path, &b, err, sizeof(err)), -ENOENT);
    assert_true(b == NULL);
    assert_contains(err, "missing.json: cannot open");
    tpath(path, sizeof(path), "broken.json");
    snprintf(text, sizeof(text), "{\n  \"name\": \"x\"\n  \"leds\": {}\n}\n");
    write_file(path, text, strlen(text));
    assert_i64_eq(board_load(path, &b, err, sizeof(err)), -EINVAL);
    assert_contains(err, "broken.json: line 3: not valid JSON");
}

/* --- RS-485 through the seam ---------------------------------------------------------- */

static struct fake_line {
    struct serial_rs485 current; /* what TIOCGRS485 returns */
    struct serial_rs485 sent;    /* what TIOCSRS485 got */
    int get_rc, set_rc;
    int gets, sets;
    int fd;
} fl;

static int fake_get(int fd, struct serial_rs485 *conf)
{
    fl.gets++;
    fl.fd = fd;
    if (fl.get_rc)
        return fl.get_rc;
    *conf = fl.current;
    return 0;
}

static int fake_set(int fd, struct serial_rs485 *conf)
{
    fl.sets++;
    fl.fd = fd;
    fl.sent = *conf;
    return fl.set_rc;
}

static int fake_reboots;
static int fake_reboot(void)
{
    fake_reboots++;
    return -EPERM;
}

static const struct board_ops fake_ops = {
    .rs485_get = fake_get,
    .rs485_set = fake_set,
    .wdt_set_timeout = NULL, /* set per test below */
    .wdt_get_timeout = NULL,
    .reboot = fake_reboot,
};

struct rs485_case {
    const char *name;
    struct board_rs485 rs;
    int get_rc, set_rc;
    int want_rc;
    enum board_rs485_mode want_mode;
    int want_rts, want_rts_delay;
    int want_sets; /* 0: no TIOCSRS485 at all */
    uint32_t want_flags, want_before, want_after;
};

#ifdef SER_RS485_TERMINATE_BUS
#define TERM SER_RS485_TERMINATE_BUS
#else
#define TERM 0
#endif

/* clang-format off: one row per case reads better than one field per line */
static const struct rs485_case rs485_cases[] = {
    /* name, {mode, rts_on_send, rts_after_send, rx_during_tx, before, after, rts_delay_us},
     * get_rc, set_rc, want_rc, want_mode, want_rts, want_rts_delay, want_sets,
     * want_flags, want_before, want_after */
    {"kernel, RTS high while sending",
     {BOARD_RS485_KERNEL, true, false, false, 2, 5, -1},
     0,
     0,
     0,
     BOARD_RS485_KERNEL,
     BOARD_RTS_NONE,
     -1,
     1,
     SER_RS485_ENABLED | SER_RS485_RTS_ON_SEND | TERM,
     2,
     5},
    {"kernel, RTS low while sending, RX during TX",
     {BOARD_RS485_KERNEL, false, true, true, 0, 100, -1},
     0,
     0,
     0,
     BOARD_RS485_KERNEL,
     BOARD_RTS_NONE,
     -1,
     1,
     SER_RS485_ENABLED | SER_RS485_RTS_AFTER_SEND | SER_RS485_RX_DURING_TX | TERM,
     0,
     100},
    {"kernel, line without support",
     {BOARD_RS485_KERNEL, true, false, false, 0, 0, -1},
     0,
     -ENOTTY,
     -ENOTTY,
     BOARD_RS485_NONE,
     BOARD_RTS_NONE,
     -1,
     1,
     SER_RS485_ENABLED | SER_RS485_RTS_ON_SEND | TERM,
     0,
     0},
    {"kernel, get fails",
     {BOARD_RS485_KERNEL, true, false, false, 0, 0, -1},
     -ENOTTY,
     0,
     -ENOTTY,
     BOARD_RS485_NONE,
     BOARD_RTS_NONE,
     -1,
     0,
     0,
     0,
     0},
    {"auto, supported",
     {BOARD_RS485_AUTO, true, false, false, 1, 1, -1},
     0,
     0,
     0,
     BOARD_RS485_KERNEL,
     BOARD_RTS_NONE,
     -1,
     1,
     SER_RS485_ENABLED | SER_RS485_RTS_ON_SEND | TERM,
     1,
     1},
    {"auto, ENOTTY falls back",
     {BOARD_RS485_AUTO, true, false, false, 0, 0, -1},
     0,
     -ENOTTY,
     0,
     BOARD_RS485_NONE,
     BOARD_RTS_NONE,
     -1,
     1,
     SER_RS485_ENABLED | SER_RS485_RTS_ON_SEND | TERM,
     0,
     0},
    {"auto, EINVAL falls back",
     {BOARD_RS485_AUTO, true, false, false, 0, 0, -1},
     0,
     -EINVAL,
     0,
     BOARD_RS485_NONE,
     BOARD_RTS_NONE,
     -1,
     1,
     SER_RS485_ENABLED | SER_RS485_RTS_ON_SEND | TERM,
     0,
     0},
    {"auto, EIO is an error",
     {BOARD_RS485_AUTO, true, false, false, 0, 0, -1},
     -EIO,
     0,
     -EIO,
     BOARD_RS485_NONE,
     BOARD_RTS_NONE,
     -1,
     0,
     0,
     0,
     0},
    {"rts, high while sending",
     {BOARD_RS485_RTS, true, false, false, 0, 0, 300},
     0,
     0,
     0,
     BOARD_RS485_RTS,
     BOARD_RTS_UP,
     300,
     0,
     0,
     0,
     0},
    {"rts, low while sending, libmodbus delay",
     {BOARD_RS485_RTS, false, true, false, 0, 0, -1},
     0,
     0,
     0,
     BOARD_RS485_RTS,
     BOARD_RTS_DOWN,
     -1,
     0,
     0,
     0,
     0},
    {"none",
     {BOARD_RS485_NONE, true, false, false, 0, 0, -1},
     0,
     0,
     0,
     BOARD_RS485_NONE,
     BOARD_RTS_NONE,
     -1,
     0,
     0,
     0,
     0},
};
/* clang-format on */

static void test_rs485_seam(void **state)
{
    struct board_ops ops = fake_ops;
    const struct board_ops *prev;

    (void)state;
    prev = board_set_ops(&ops);
    assert_true(prev == &board_sys_ops);
    for (size_t i = 0; i < sizeof(rs485_cases) / sizeof(rs485_cases[0]); i++) {
        const struct rs485_case *c = &rs485_cases[i];
        struct board_line line = {BOARD_RS485_AUTO, 99, 99};
        int rc;

        memset(&fl, 0, sizeof(fl));
        /* What the driver holds now: termination (kept), addressing and old delays
         * (dropped), noise in the padding (dropped). */
        fl.current.flags = SER_RS485_RTS_AFTER_SEND | TERM | (1u << 6);
        fl.current.delay_rts_before_send = 77;
        fl.current.delay_rts_after_send = 88;
        fl.current.padding[4] = 0xdeadbeef;
        fl.get_rc = c->get_rc;
        fl.set_rc = c->set_rc;
        rc = board_rs485_apply(&c->rs, "/dev/ttyS1", 42, &line);
        assert_i64_eq_ctx(c->name, rc, c->want_rc);
        assert_i64_eq_ctx(c->name, line.mode, c->want_mode);
        assert_i64_eq_ctx(c->name, line.rts, c->want_rts);
        assert_i64_eq_ctx(c->name, line.rts_delay_us, c->want_rts_delay);
        assert_i64_eq_ctx(c->name, fl.sets, c->want_sets);
        if (c->rs.mode == BOARD_RS485_RTS || c->rs.mode == BOARD_RS485_NONE)
            assert_i64_eq_ctx(c->name, fl.gets, 0); /* no ioctl at all */
        if (!c->want_sets)
            continue;
        assert_i64_eq_ctx(c->name, fl.fd, 42);
        assert_u64_eq_ctx(c->name, fl.sent.flags, c->want_flags);
        assert_u64_eq_ctx(c->name, fl.sent.delay_rts_before_send, c->want_before);
        assert_u64_eq_ctx(c->name, fl.sent.delay_rts_after_send, c->want_after);
        for (size_t k = 0; k < sizeof(fl.sent.padding) / sizeof(fl.sent.padding[0]); k++)
            assert_u64_eq_ctx(c->name, fl.sent.padding[k], 0);
    }
    board_set_ops(NULL);
}

static void test_rs485_values_match_libmodbus(void **state)
{
    (void)state;
    /* MODBUS_RTU_RTS_NONE/UP/DOWN in libmodbus 3.1: the agent passes line.rts through */
    assert_i64_eq(BOARD_RTS_NONE, 0);
    assert_i64_eq(BOARD_RTS_UP, 1);
    assert_i64_eq(BOARD_RTS_DOWN, 2);
    for (int m = BOARD_RS485_NONE; m <= BOARD_RS485_AUTO; m++)
        assert_i64_eq(board_rs485_mode_parse(board_rs485_mode_name((enum board_rs485_mode)m)), m);
    assert_i64_eq(board_rs485_mode_parse("Kernel"), -EINVAL);
    assert_i64_eq(board_rs485_mode_parse(NULL), -EINVAL);
}

static void test_rs485_pty(void **state)
{
    struct board_rs485 rs = {BOARD_RS485_AUTO, true, false, false, 0, 0, -1};
    struct board_line line;
    int master, slave;
    char name[64];

    (void)state;
    assert_i64_eq(openpty(&master, &slave, name, NULL, NULL), 0);
    /* the real ioctls: a pseudo-terminal has no RS-485 mode */
    board_set_ops(NULL);
    assert_i64_eq(board_rs485_apply(&rs, name, slave, &line), 0);
    assert_i64_eq(line.mode, BOARD_RS485_NONE);
    rs.mode = BOARD_RS485_KERNEL;
    assert_i64_eq(board_rs485_apply(&rs, name, slave, &line), -ENOTTY);
    assert_i64_eq(line.mode, BOARD_RS485_NONE);
    rs.mode = BOARD_RS485_NONE;
    assert_i64_eq(board_rs485_apply(&rs, NULL, slave, &line), 0);
    /* a closed descriptor is not "unsupported": auto reports it */
    close(slave);
    close(master);
    rs.mode = BOARD_RS485_AUTO;
    assert_i64_eq(board_rs485_apply(&rs, name, slave, &line), -EBADF);
}

static void test_rs485_find_symlink(void **state)
{
    char dev[128], link[128], json[512];
    board_t *b;

    (void)state;
    tpath(dev, sizeof(dev), "ttyX1");
    tpath(link, sizeof(link), "by-path-port1");
    write_file(dev, "", 0);
    assert_i64_eq(symlink(dev, link), 0);
    snprintf(json, sizeof(json),
             "{\"name\": \"s\", \"rs485_default\": {\"mode\": \"none\"}, \"serial\": "
             "[{\"device\": \"%s\", \"rs485\": {\"mode\": \"kernel\"}}]}",
             dev);
    b = parse_ok(json);
    assert_i64_eq(board_rs485_find(b, dev)->mode, BOARD_RS485_KERNEL);
    assert_i64_eq(board_rs485_find(b, link)->mode, BOARD_RS485_KERNEL);
    assert_i64_eq(board_rs485_find(b, "/nonexistent/tty")->mode, BOARD_RS485_NONE);
    board_free(b);
}

/* --- watchdog ------------------------------------------------------------------------- */

static int wdt_asked, wdt_set_rc, wdt_driver_secs;

static int fake_wdt_set(int fd, int *secs)
{
    (void)fd;
    wdt_asked = *secs;
    if (wdt_set_rc)
        return wdt_set_rc;
    *secs = wdt_driver_secs ? wdt_driver_secs : *secs;
    return 0;
}

static int fake_wdt_get(int fd, int *secs)
{
    (void)fd;
    *secs = 30;
    return 0;
}

static board_t *watchdog_board(const char *device, int timeout)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"name\": \"w\", \"watchdog\": {\"type\": \"hardware\", \"device\": \"%s\", "
             "\"timeout_s\": %d}}",
             device, timeout);
    return parse_ok(json);
}

static void test_watchdog_file(void **state)
{
    struct board_ops ops = fake_ops;
    char dev[128];
    board_t *b;

    (void)state;
    tpath(dev, sizeof(dev), "watchdog");
    write_file(dev, "", 0);
    ops.wdt_set_timeout = fake_wdt_set;
    ops.wdt_get_timeout = fake_wdt_get;
    board_set_ops(&ops);

    /* the driver rounds 9 s up to 12 s: kick every 4 s */
    wdt_asked = 0;
    wdt_set_rc = 0;
    wdt_driver_secs = 12;
    b = watchdog_board(dev, 9);
    assert_i64_eq(board_watchdog_kick(b), -EINVAL); /* not started */
    assert_i64_eq(board_watchdog_interval_ms(b), 0);
    assert_i64_eq(board_watchdog_start(b), 0);
    assert_i64_eq(wdt_asked, 9);
    assert_i64_eq(board_watchdog_interval_ms(b), 4000);
    assert_i64_eq(board_watchdog_start(b), -EALREADY);
    for (int i = 0; i < 3; i++)
        assert_i64_eq(board_watchdog_kick(b), 0);
    check_file_bytes(dev, "\0\0\0", 3);
    board_watchdog_stop(b);
    check_file_bytes(dev, "\0\0\0V", 4); /* magic close last */
    assert_i64_eq(board_watchdog_kick(b), -EINVAL);
    assert_i64_eq(board_watchdog_interval_ms(b), 0);
    board_watchdog_stop(b); /* twice is harmless: no second 'V' */
    check_file_bytes(dev, "\0\0\0V", 4);

    /* the driver refuses the timeout: its own (30 s, from GETTIMEOUT) applies */
    wdt_set_rc = -EINVAL;
    assert_i64_eq(board_watchdog_start(b), 0);
    assert_i64_eq(board_watchdog_interval_ms(b), 10000);
    /* freed without stop (a crash): no magic close */
    board_free(b);
    check_file_bytes(dev, "\0\0\0V", 4);

    /* the real ioctl on a plain file: ENOTTY, the board's timeout is used */
    board_set_ops(NULL);
    b = watchdog_board(dev, 6);
    assert_i64_eq(board_watchdog_start(b), 0);
    assert_i64_eq(board_watchdog_interval_ms(b), 2000);
    assert_i64_eq(board_watchdog_kick(b), 0);
    board_watchdog_stop(b);
    check_file_bytes(dev, "\0\0\0V\0V", 6);
    board_free(b);

    /* no device */
    tpath(dev, sizeof(dev), "nowatchdog");
    b = watchdog_board(dev, 6);
    assert_i64_eq(board_watchdog_start(b), -ENOENT);
    assert_i64_eq(board_watchdog_kick(b), -EINVAL);
    board_free(b);
}

static void test_watchdog_fifo(void **state)
{
    char dev[128], buf[16];
    board_t *b;
    ssize_t n;
    int rfd;

    (void)state;
    board_set_ops(NULL);
    tpath(dev, sizeof(dev), "watchdog.fifo");
    assert_i64_eq(mkfifo(dev, 0600), 0);
    rfd = open(dev, O_RDONLY | O_NONBLOCK); /* a reader first, or the open would block */
    assert_true(rfd >= 0);
    b = watchdog_board(dev, 3);
    assert_i64_eq(board_watchdog_start(b), 0);
    assert_i64_eq(board_watchdog_interval_ms(b), 1000);
    assert_i64_eq(board_watchdog_kick(b), 0);
    assert_i64_eq(board_watchdog_kick(b), 0);
    n = read(rfd, buf, sizeof(buf));
    assert_i64_eq(n, 2);
    assert_i64_eq(buf[0], 0);
    assert_i64_eq(buf[1], 0);
    board_watchdog_stop(b);
    n = read(rfd, buf, sizeof(buf));
    assert_i64_eq(n, 1);
    assert_i64_eq(buf[0], 'V');
    assert_i64_eq(read(rfd, buf, sizeof(buf)), 0); /* closed after the 'V' */
    close(rfd);
    board_free(b);
}

struct env_save {
    char *notify, *usec, *pid;
};

static char *dup_env(const char *name)
{
    const char *v = getenv(name);
    return v ? strdup(v) : NULL;
}

static void restore_env(const char *name, char *v)
{
    if (v)
        setenv(name, v, 1);
    else
        unsetenv(name);
    free(v);
}

static int bind_dgram(const char *path, int abstract)
{
    struct sockaddr_un sa;
    size_t n = strlen(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    assert_true(n < sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, n);
    if (abstract)
        sa.sun_path[0] = '\0';
    assert_i64_eq(
        bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)),
        0);
    return fd;
}

static void recv_text(int fd, const char *want)
{
    char buf[64];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void test_watchdog_systemd(void **state)
{
    struct env_save saved = {dup_env("NOTIFY_SOCKET"), dup_env("WATCHDOG_USEC"),
                             dup_env("WATCHDOG_PID")};
    char sock[128], abs_name[64], pid[32];
    board_t *b;
    int fd;

    (void)state;
    b = parse_ok("{\"name\": \"s\", \"watchdog\": {\"type\": \"systemd\"}}");

    /* not run by systemd: nothing to send, nothing to kick */
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_i64_eq(board_sd_notify("READY=1"), 0);
    assert_i64_eq(board_watchdog_start(b), 0);
    assert_i64_eq(board_watchdog_interval_ms(b), 0);
    assert_i64_eq(board_watchdog_kick(b), 0);
    board_watchdog_stop(b);

    /* a path socket, WatchdogSec=4: kick every 2 s */
    fd = bind_dgram(tpath(sock, sizeof(sock), "notify"), 0);
    setenv("NOTIFY_SOCKET", sock, 1);
    setenv("WATCHDOG_USEC", "4000000", 1);
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_i64_eq(board_watchdog_start(b), 0);
    assert_i64_eq(board_watchdog_interval_ms(b), 2000);
    assert_i64_eq(board_watchdog_kick(b), 0);
    recv_text(fd, "WATCHDOG=1");
    assert_i64_eq(board_sd_notify("READY=1"), 1);
    recv_text(fd, "READY=1");
    board_watchdog_stop(b);

    /* the watchdog is meant for another process (WATCHDOG_PID): not ours to kick */
    setenv("WATCHDOG_PID", "1", 1);
    assert_i64_eq(board_watchdog_start(b), 0);
    assert_i64_eq(board_watchdog_interval_ms(b), 0);
    board_watchdog_stop(b);
    setenv("WATCHDOG_USEC", "12x", 1); /* malformed: no watchdog */
    unsetenv("WATCHDOG_PID");
    assert_i64_eq(board_watchdog_start(b), 0);
    assert_i64_eq(board_watchdog_interval_ms(b), 0);
    board_watchdog_stop(b);
    close(fd);

    /* the abstract namespace ("@name") */
    snprintf(abs_name, sizeof(abs_name), "@mlk-test-board-%ld", (long)getpid());
    fd = bind_dgram(abs_name, 1);
    setenv("NOTIFY_SOCKET", abs_name, 1);
    assert_i64_eq(board_sd_notify("STOPPING=1"), 1);
    recv_text(fd, "STOPPING=1");
    close(fd);

    /* nobody listening: an error, not a hang */
    setenv("NOTIFY_SOCKET", tpath(sock, sizeof(sock), "nobody"), 1);
    assert_true(board_sd_notify("WATCHDOG=1") < 0);

    board_free(b);
    restore_env("NOTIFY_SOCKET", saved.notify);
    restore_env("WATCHDOG_USEC", saved.usec);
    restore_env("WATCHDOG_PID", saved.pid);
}

/* --- LEDs ----------------------------------------------------------------------------- */

static void make_led(const char *name, const char *max)
{
    static const char *const attrs[] = {"brightness", "trigger", "delay_on", "delay_off", "shot"};
    char dir[128], path[192];

    snprintf(dir, sizeof(dir), "%s/leds", tmpdir);
    mkdir(dir, 0755);
    snprintf(dir, sizeof(dir), "%s/leds/%s", tmpdir, name);
    assert_i64_eq(mkdir(dir, 0755), 0);
    for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, attrs[i]);
        write_file(path, "", 0);
    }
    if (max) {
        snprintf(path, sizeof(path), "%s/max_brightness", dir);
        write_file(path, max, strlen(max));
    }
}

static void check_led(const char *name, const char *attr, const char *want)
{
    char path[192];
    snprintf(path, sizeof(path), "%s/leds/%s/%s", tmpdir, name, attr);
    check_file_text(path, want);
}

static void test_leds_sysfs(void **state)
{
    char json[512], path[192];
    board_t *b;

    (void)state;
    make_led("gw:green:run", "255\n");
    make_led("gw:yellow:bus", NULL);
    snprintf(json, sizeof(json),
             "{\"name\": \"l\", \"leds\": {\"root\": \"%s/leds\", \"run\": \"gw:green:run\", "
             "\"bus\": \"gw:yellow:bus\", \"fault\": \"gw:red:missing\"}}",
             tmpdir);
    b = parse_ok(json);

    assert_i64_eq(board_led_set(b, BOARD_LED_RUN, BOARD_LED_ON), 0);
    check_led("gw:green:run", "trigger", "none\n");
    check_led("gw:green:run", "brightness", "255\n"); /* max_brightness */
    assert_i64_eq(board_led_set(b, BOARD_LED_RUN, BOARD_LED_OFF), 0);
    check_led("gw:green:run", "brightness", "0\n");
    assert_i64_eq(board_led_set(b, BOARD_LED_RUN, BOARD_LED_HEARTBEAT), 0);
    check_led("gw:green:run", "trigger", "heartbeat\n");
    assert_i64_eq(board_led_set(b, BOARD_LED_RUN, BOARD_LED_BLINK), 0);
    check_led("gw:green:run", "trigger", "timer\n");
    check_led("gw:green:run", "delay_on", "250\n");
    check_led("gw:green:run", "delay_off", "250\n");

    /* the same state again writes nothing */
    assert_i64_eq(board_led_set(b, BOARD_LED_RUN, BOARD_LED_ON), 0);
    snprintf(path, sizeof(path), "%s/leds/gw:green:run/brightness", tmpdir);
    write_file(path, "untouched", 9);
    assert_i64_eq(board_led_set(b, BOARD_LED_RUN, BOARD_LED_ON), 0);
    check_led("gw:green:run", "brightness", "untouched");

    /* activity: oneshot once, then one shot per call */
    assert_i64_eq(board_led_set(b, BOARD_LED_BUS, BOARD_LED_FLASH), 0);
    check_led("gw:yellow:bus", "trigger", "oneshot\n");
    check_led("gw:yellow:bus", "shot", "1\n");
    snprintf(path, sizeof(path), "%s/leds/gw:yellow:bus/shot", tmpdir);
    write_file(path, "", 0);
    snprintf(path, sizeof(path), "%s/leds/gw:yellow:bus/trigger", tmpdir);
    write_file(path, "", 0);
    assert_i64_eq(board_led_set(b, BOARD_LED_BUS, BOARD_LED_FLASH), 0);
    check_led("gw:yellow:bus", "shot", "1\n");
    check_led("gw:yellow:bus", "trigger", ""); /* not rewritten */
    /* no max_brightness: ON is 1 */
    assert_i64_eq(board_led_set(b, BOARD_LED_BUS, BOARD_LED_ON), 0);
    check_led("gw:yellow:bus", "brightness", "1\n");

    /* named by the board but absent from sysfs; not on this board at all; out of range */
    assert_i64_eq(board_led_set(b, BOARD_LED_FAULT, BOARD_LED_ON), -ENOENT);
    assert_i64_eq(board_led_set(b, BOARD_LED_FAULT, BOARD_LED_ON), -ENOENT); /* not cached */
    assert_i64_eq(board_led_set(b, BOARD_LED_UPLINK, BOARD_LED_ON), 0);
    assert_i64_eq(board_led_set(b, BOARD_LED_COUNT, BOARD_LED_ON), -EINVAL);
    assert_i64_eq(board_led_set(b, BOARD_LED_RUN, (enum board_led_state)99), -EINVAL);
    snprintf(path, sizeof(path), "%s/leds/gw:red:missing", tmpdir);
    assert_i64_eq(access(path, F_OK), -1); /* nothing created outside create mode */
    board_free(b);
}

static void test_leds_create(void **state)
{
    char json[512], path[192], victim[128];
    board_t *b;

    (void)state;
    snprintf(json, sizeof(json),
             "{\"name\": \"l\", \"leds\": {\"root\": \"%s/sim/leds\", \"create\": true, "
             "\"run\": \"run\", \"uplink\": \"uplink\", \"fault\": \"fault\"}}",
             tmpdir);
    b = parse_ok(json);
    assert_i64_eq(board_led_set(b, BOARD_LED_RUN, BOARD_LED_HEARTBEAT), 0);
    snprintf(path, sizeof(path), "%s/sim/leds/run/trigger", tmpdir);
    check_file_text(path, "heartbeat\n");
    assert_i64_eq(board_led_set(b, BOARD_LED_UPLINK, BOARD_LED_ON), 0);
    snprintf(path, sizeof(path), "%s/sim/leds/uplink/brightness", tmpdir);
    check_file_text(path, "1\n");
    assert_i64_eq(board_led_set(b, BOARD_LED_UPLINK, BOARD_LED_OFF), 0);
    check_file_text(path, "0\n");
    snprintf(path, sizeof(path), "%s/sim/leds/bus", tmpdir);
    assert_i64_eq(access(path, F_OK), -1);

    /* a symlink planted in the (world-writable) tree is not followed */
    snprintf(victim, sizeof(victim), "%s/victim", tmpdir);
    write_file(victim, "secret", 6);
    snprintf(path, sizeof(path), "%s/sim/leds/fault", tmpdir);
    assert_i64_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/sim/leds/fault/brightness", tmpdir);
    assert_i64_eq(symlink(victim, path), 0);
    assert_i64_eq(board_led_set(b, BOARD_LED_FAULT, BOARD_LED_ON), -ELOOP);
    check_file_text(victim, "secret");
    board_free(b);
}

/* --- identity ------------------------------------------------------------------------- */

struct id_case {
    const char *prefix;
    const char *raw;
    size_t rawlen; /* 0: strlen(raw) */
    int want_rc;   /* >= 0: the length */
    const char *want;
};

#define A60 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct id_case id_cases[] = {
    {"gw-", "0123456789abcdef0123456789abcdef\n", 0, 35, "gw-0123456789abcdef0123456789abcdef"},
    {NULL, "  SN: 12 34/AB  \n", 0, 11, "SN_12_34_AB"},
    {NULL, "(1234)", 0, 4, "1234"},
    {NULL, "abc\0garbage", 11, 3, "abc"},
    {NULL, "0000000012345678\0", 17, 16, "0000000012345678"}, /* device-tree serial-number */
    {NULL, "\n\n  x y\r\nsecond line", 0, 3, "x_y"},
    {NULL, "h\xc3\xa9llo", 0, 5, "h_llo"},
    {NULL, "keep_under.dots-dash", 0, 20, "keep_under.dots-dash"},
    {"", "a", 0, 1, "a"},
    {NULL, A60 "aaaaaaaaaa", 0, 63, A60 "aaa"},
    {"gw-", A60 "aaaaaaaaaa", 0, 63, "gw-" A60},
    {NULL, A60 "aa!b", 0, 62, A60 "aa"}, /* no room for "_b": cut before the '_' */
    {NULL, A60 "a!bc", 0, 63, A60 "a_b"},
    {"gw-", "", 0, -EINVAL, NULL},
    {"gw-", "!!! ???", 0, -EINVAL, NULL},
    {NULL, "\0abc", 4, -EINVAL, NULL},
    {NULL, "   \n", 0, -EINVAL, NULL},
};

static void test_id_sanitize(void **state)
{
    char buf[BOARD_ID_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(id_cases) / sizeof(id_cases[0]); i++) {
        const struct id_case *c = &id_cases[i];
        size_t len = c->rawlen ? c->rawlen : strlen(c->raw);
        char ctx[96];
        int rc;

        snprintf(ctx, sizeof(ctx), "case %zu (%.40s)", i, c->raw);
        memset(buf, 'z', sizeof(buf));
        rc = board_id_sanitize(c->prefix, c->raw, len, buf, sizeof(buf));
        assert_i64_eq_ctx(ctx, rc, c->want_rc);
        if (rc < 0)
            continue;
        assert_string_equal(buf, c->want);
        assert_i64_eq_ctx(ctx, (long long)strlen(buf), rc);
        assert_true(wire_id_valid(buf));
    }
    assert_i64_eq(board_id_sanitize(NULL, "abc", 3, buf, BOARD_ID_MAX - 1), -ENOSPC);
}

static board_t *identity_board(const char *source, const char *path, const char *prefix)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"name\": \"i\", \"identity\": {\"source\": \"%s\", \"path\": \"%s\", "
             "\"prefix\": \"%s\"}}",
             source, path, prefix);
    return parse_ok(json);
}

static void test_identity_sources(void **state)
{
    char path[128], id[BOARD_ID_MAX];
    board_t *b;

    (void)state;
    tpath(path, sizeof(path), "machine-id");
    write_file(path, "4c1f0e7a9b3d4e2f8a6b5c4d3e2f1a0b\n", 33);
    b = identity_board("machine-id", path, "gw-");
    assert_i64_eq(board_identity(b, id, sizeof(id)), 0);
    assert_string_equal(id, "gw-4c1f0e7a9b3d4e2f8a6b5c4d3e2f1a0b");
    assert_i64_eq(board_identity(b, id, BOARD_ID_MAX - 1), -ENOSPC);
    /* before first boot: empty, or "uninitialized" while systemd runs */
    write_file(path, "", 0);
    assert_i64_eq(board_identity(b, id, sizeof(id)), -EINVAL);
    write_file(path, "uninitialized\n", 14);
    assert_i64_eq(board_identity(b, id, sizeof(id)), -EINVAL);
    write_file(path, "4C1F0E7A9B3D4E2F8A6B5C4D3E2F1A0B\n", 33); /* not lowercase hex */
    assert_i64_eq(board_identity(b, id, sizeof(id)), -EINVAL);
    board_free(b);

    tpath(path, sizeof(path), "serial-number");
    write_file(path, "SN 0042/7\0", 10);
    b = identity_board("file", path, "");
    assert_i64_eq(board_identity(b, id, sizeof(id)), 0);
    assert_string_equal(id, "SN_0042_7");
    board_free(b);

    tpath(path, sizeof(path), "no-such-file");
    b = identity_board("file", path, "gw-");
    assert_i64_eq(board_identity(b, id, sizeof(id)), -ENOENT);
    board_free(b);

    /* machine-id's default path */
    b = parse_ok("{\"name\": \"i\", \"identity\": {\"source\": \"machine-id\"}}");
    if (access("/etc/machine-id", R_OK) != 0) {
        assert_i64_eq(board_identity(b, id, sizeof(id)), -ENOENT);
    } else {
        int rc = board_identity(b, id, sizeof(id));
        assert_true(rc == 0 || rc == -EINVAL);
        if (rc == 0)
            assert_i64_eq((long long)strlen(id), 32);
    }
    board_free(b);
}

/* --- reboot --------------------------------------------------------------------------- */

static void test_reboot_only_through_seam(void **state)
{
    board_t *b;

    (void)state;
    board_set_ops(&fake_ops);
    fake_reboots = 0;
    b = parse_ok("{\"name\": \"r\", \"reboot\": \"system\"}");
    assert_i64_eq(board_reboot(b), -EPERM); /* the fake fails like an unprivileged process */
    assert_i64_eq(fake_reboots, 1);
    board_free(b);
    b = parse_ok("{\"name\": \"r\", \"reboot\": \"none\"}");
    assert_i64_eq(board_reboot(b), 0);
    assert_i64_eq(fake_reboots, 1);
    board_free(b);
    board_set_ops(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_boards),
        cmocka_unit_test(test_file_for),
        cmocka_unit_test(test_parse_complete),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_reports_every_error),
        cmocka_unit_test_setup_teardown(test_load_errors, make_tmpdir, remove_tmpdir),
        cmocka_unit_test(test_rs485_seam),
        cmocka_unit_test(test_rs485_values_match_libmodbus),
        cmocka_unit_test(test_rs485_pty),
        cmocka_unit_test_setup_teardown(test_rs485_find_symlink, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_watchdog_file, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_watchdog_fifo, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_watchdog_systemd, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_leds_sysfs, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_leds_create, make_tmpdir, remove_tmpdir),
        cmocka_unit_test(test_id_sanitize),
        cmocka_unit_test_setup_teardown(test_identity_sources, make_tmpdir, remove_tmpdir),
        cmocka_unit_test(test_reboot_only_through_seam),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
