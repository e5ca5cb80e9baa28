/*
 * test_agent_config: the agent's configuration validator (agent/config.c) on a table of
 * broken configurations, each a valid base with one to three changes: every row must give
 * exactly the errors it expects (count and message, key path included), nothing more.
 * Also: the shipped agent.example.json parses, cfg_to_json() writes back what cfg_parse()
 * reads (password hidden on request), cfg_mqtt_same(), and the scan command's --bus and
 * --units parsers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include "testutil.h"

#include "config.h"
#include "scan.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORIGIN "test.json"
#define PROFILES MLK_SOURCE_DIR "/agent/profiles"

static const char base_json[] =
    "{\"gateway\":{\"id\":\"gw-01\"},"
    "\"mqtt\":{\"host\":\"127.0.0.1\",\"port\":1883,\"username\":\"gw-01\",\"password\":\"pw\"},"
    "\"queue\":{\"path\":\"/tmp/q.db\"},\"uplink\":{\"batch_max\":500},"
    "\"health\":{\"interval_ms\":60000},"
    "\"profiles_dir\":\"" PROFILES "\","
    "\"buses\":[{\"name\":\"tcp0\",\"type\":\"tcp\",\"host\":\"127.0.0.1\",\"port\":502},"
    "{\"name\":\"rtu0\",\"type\":\"rtu\",\"device\":\"/dev/ttyS1\",\"baud\":9600,"
    "\"parity\":\"N\",\"data_bits\":8,\"stop_bits\":1}],"
    "\"meters\":[{\"id\":\"m1\",\"bus\":\"tcp0\",\"unit\":1,\"profile\":\"sdm630\"},"
    "{\"id\":\"m2\",\"bus\":\"rtu0\",\"unit\":2,\"profile\":\"sdm120\"}]}";

#define DEL NULL /* a change that removes the key */

struct change {
    const char *path; /* "buses[1].baud"; NULL ends the list */
    const char *json; /* the new value as JSON text, or DEL */
};

struct row {
    const char *what;
    struct change ch[3];
    int nerr;           /* errors expected */
    const char *msg[3]; /* texts the messages must contain, in order ("" : any) */
};

static const char long_pw[] = "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"";

static const struct row rows[] = {
    /* top level */
    {"unknown top-level key", {{"meterz", "[]"}}, 1, {ORIGIN ": meterz: unknown key"}},
    {"board not a string", {{"board", "5"}}, 1, {ORIGIN ": board: must be a string"}},
    {"gateway not an object", {{"gateway", "\"gw\""}}, 1, {"gateway: must be an object"}},
    {"gateway id with a blank",
     {{"gateway.id", "\"gw 01\""}},
     1,
     {"gateway.id: \"gw 01\" is not a valid id"}},
    {"gateway unknown key", {{"gateway.name", "\"x\""}}, 1, {"gateway.name: unknown key"}},
    /* mqtt */
    {"mqtt missing", {{"mqtt", DEL}}, 2, {"mqtt: required, an object", "mqtt.host: required"}},
    {"mqtt.host missing", {{"mqtt.host", DEL}}, 1, {"mqtt.host: required"}},
    {"mqtt.host not a string", {{"mqtt.host", "1"}}, 1, {"mqtt.host: must be a string"}},
    {"mqtt.port 0", {{"mqtt.port", "0"}}, 1, {"mqtt.port: 0 is out of range (1..65535)"}},
    {"mqtt.port 65536", {{"mqtt.port", "65536"}}, 1, {"mqtt.port: 65536 is out of range"}},
    {"mqtt.port a string", {{"mqtt.port", "\"1883\""}}, 1, {"mqtt.port: must be an integer"}},
    {"mqtt.port fractional", {{"mqtt.port", "1883.5"}}, 1, {"mqtt.port: must be an integer"}},
    {"mqtt.keepalive 2",
     {{"mqtt.keepalive", "2"}},
     1,
     {"mqtt.keepalive: 2 is out of range (5..3600)"}},
    {"mqtt.reconnect_max_s 0",
     {{"mqtt.reconnect_max_s", "0"}},
     1,
     {"mqtt.reconnect_max_s: 0 is out of range (1..3600)"}},
    {"mqtt misspelt key", {{"mqtt.hots", "\"x\""}}, 1, {"mqtt.hots: unknown key"}},
    {"mqtt.prefix with a slash",
     {{"mqtt.prefix", "\"a/b\""}},
     1,
     {"mqtt.prefix: \"a/b\" is not a valid id"}},
    {"password without username",
     {{"mqtt.username", DEL}},
     1,
     {"mqtt.password: set without a username"}},
    {"password too long", {{"mqtt.password", long_pw}}, 1, {"mqtt.password: longer than 255"}},
    /* queue */
    {"queue missing", {{"queue", DEL}}, 2, {"queue: required", "queue.path: required"}},
    {"queue.path missing", {{"queue.path", DEL}}, 1, {"queue.path: required"}},
    {"queue.durability unknown",
     {{"queue.durability", "\"fast\""}},
     1,
     {"queue.durability: \"fast\" must be \"durable\" or \"memory-first\""}},
    {"queue.max_rows 5",
     {{"queue.max_rows", "5"}},
     1,
     {"queue.max_rows: 5 is out of range (100.."}},
    {"queue.max_bytes too small",
     {{"queue.max_bytes", "1000"}},
     1,
     {"queue.max_bytes: 1000 is too small"}},
    {"memory-first spill_rows >= mem_max",
     {{"queue.durability", "\"memory-first\""},
      {"queue.mem_max", "1000"},
      {"queue.spill_rows", "1000"}},
     1,
     {"queue.spill_rows: must be below queue.mem_max (1000)"}},
    {"queue.mem_max 10",
     {{"queue.mem_max", "10"}},
     1,
     {"queue.mem_max: 10 is out of range (100.."}},
    /* uplink, health, homeassistant */
    {"uplink not an object", {{"uplink", "[]"}}, 1, {"uplink: must be an object"}},
    {"uplink.batch_max 0",
     {{"uplink.batch_max", "0"}},
     1,
     {"uplink.batch_max: 0 is out of range (1..5000)"}},
    {"uplink.inflight_max 1001",
     {{"uplink.inflight_max", "1001"}},
     1,
     {"uplink.inflight_max: 1001 is out of range (1..1000)"}},
    {"uplink.ack_timeout_ms 100",
     {{"uplink.ack_timeout_ms", "100"}},
     1,
     {"uplink.ack_timeout_ms: 100 is out of range (500.."}},
    {"health.interval_ms 500",
     {{"health.interval_ms", "500"}},
     1,
     {"health.interval_ms: 500 is too short"}},
    {"homeassistant.enabled a string",
     {{"homeassistant", "{\"enabled\":\"yes\"}"}},
     1,
     {"homeassistant.enabled: must be true or false"}},
    {"homeassistant.prefix with a blank",
     {{"homeassistant", "{\"enabled\":true,\"prefix\":\"home assistant\"}"}},
     1,
     {"homeassistant.prefix: \"home assistant\" is not a valid id"}},
    {"homeassistant unknown key",
     {{"homeassistant", "{\"discovery\":true}"}},
     1,
     {"homeassistant.discovery: unknown key"}},
    /* profiles */
    {"profiles_dir missing folder",
     {{"profiles_dir", "\"/nonexistent/profiles\""}},
     3,
     {"profiles_dir: ", "meters[0].profile: \"sdm630\" is not a known profile",
      "meters[1].profile: \"sdm120\" is not a known profile"}},
    /* buses */
    {"buses missing",
     {{"buses", DEL}},
     3,
     {"buses: required, a non-empty array", "meters[0].bus: \"tcp0\" is not the name of a bus",
      "meters[1].bus: \"rtu0\" is not the name of a bus"}},
    {"buses empty",
     {{"buses", "[]"}, {"meters", "[]"}},
     2,
     {"buses: required, a non-empty array", "meters: required"}},
    {"bus not an object",
     {{"buses[0]", "\"tcp0\""}},
     2,
     {"buses[0]: must be an object", "meters[0].bus: \"tcp0\" is not the name of a bus"}},
    {"bus type unknown",
     {{"buses[0].type", "\"udp\""}},
     1,
     {"buses[0].type: \"udp\" must be \"tcp\" or \"rtu\""}},
    {"bus type missing", {{"buses[0].type", DEL}}, 1, {"buses[0].type: required"}},
    {"bus name duplicate",
     {{"buses[1].name", "\"tcp0\""}},
     2,
     {"buses[1].name: \"tcp0\" is already used by buses[0]",
      "meters[1].bus: \"rtu0\" is not the name of a bus"}},
    {"bus unknown key", {{"buses[0].speed", "1"}}, 1, {"buses[0].speed: unknown key"}},
    {"tcp bus without host", {{"buses[0].host", DEL}}, 1, {"buses[0].host: required"}},
    {"tcp bus with a device",
     {{"buses[0].device", "\"/dev/ttyS0\""}},
     1,
     {"buses[0].device: only for \"rtu\" buses"}},
    {"rtu bus with a host",
     {{"buses[1].host", "\"h\""}},
     1,
     {"buses[1].host: only for \"tcp\" buses"}},
    {"rtu bus without device", {{"buses[1].device", DEL}}, 1, {"buses[1].device: required"}},
    {"baud 9601",
     {{"buses[1].baud", "9601"}},
     1,
     {ORIGIN ": buses[1].baud: 9601 is not a standard rate (1200 .. 230400)"}},
    {"baud a string", {{"buses[1].baud", "\"9600\""}}, 1, {"buses[1].baud: must be an integer"}},
    {"parity Q",
     {{"buses[1].parity", "\"Q\""}},
     1,
     {"buses[1].parity: \"Q\" must be \"N\", \"E\" or \"O\""}},
    {"data_bits 9",
     {{"buses[1].data_bits", "9"}},
     1,
     {"buses[1].data_bits: 9 is out of range (7..8)"}},
    {"stop_bits 3",
     {{"buses[1].stop_bits", "3"}},
     1,
     {"buses[1].stop_bits: 3 is out of range (1..2)"}},
    {"timeout_ms 5",
     {{"buses[0].timeout_ms", "5"}},
     1,
     {"buses[0].timeout_ms: 5 is out of range (10..60000)"}},
    {"retries 11",
     {{"buses[0].retries", "11"}},
     1,
     {"buses[0].retries: 11 is out of range (0..10)"}},
    {"frame_delay_ms -1",
     {{"buses[1].frame_delay_ms", "-1"}},
     1,
     {"buses[1].frame_delay_ms: -1 is out of range (0..10000)"}},
    /* meters */
    {"meters missing", {{"meters", DEL}}, 1, {"meters: required, a non-empty array"}},
    {"meter not an object", {{"meters[1]", "7"}}, 1, {"meters[1]: must be an object"}},
    {"duplicate meter id",
     {{"meters[1].id", "\"m1\""}},
     1,
     {"meters[1].id: \"m1\" is already used by meters[0]"}},
    {"duplicate unit on a bus",
     {{"meters[1].bus", "\"tcp0\""}, {"meters[1].unit", "1"}},
     1,
     {"meters[1].unit: 1 is already used on bus \"tcp0\" by meters[0]"}},
    {"meter id invalid",
     {{"meters[0].id", "\"m#1\""}},
     1,
     {"meters[0].id: \"m#1\" is not a valid id"}},
    {"meter without id", {{"meters[0].id", DEL}}, 1, {"meters[0].id: required"}},
    {"meter without bus", {{"meters[0].bus", DEL}}, 1, {"meters[0].bus: required"}},
    {"meter on an unknown bus",
     {{"meters[0].bus", "\"nope\""}},
     1,
     {"meters[0].bus: \"nope\" is not the name of a bus"}},
    {"unknown profile",
     {{"meters[0].profile", "\"sdm999\""}},
     1,
     {"meters[0].profile: \"sdm999\" is not a known profile (see " PROFILES ")"}},
    {"meter without profile", {{"meters[0].profile", DEL}}, 1, {"meters[0].profile: required"}},
    {"unit 0", {{"meters[0].unit", "0"}}, 1, {"meters[0].unit: 0 is out of range (1..247)"}},
    {"unit 248", {{"meters[0].unit", "248"}}, 1, {"meters[0].unit: 248 is out of range (1..247)"}},
    {"unit missing", {{"meters[0].unit", DEL}}, 1, {"meters[0].unit: required"}},
    {"interval_ms 50",
     {{"meters[0].interval_ms", "50"}},
     1,
     {"meters[0].interval_ms: 50 is out of range (100..86400000)"}},
    {"ct 0",
     {{"meters[0].ct", "0"}},
     1,
     {"meters[0].ct: 0 is out of range (above 0, at most 1e+06)"}},
    {"pt negative", {{"meters[0].pt", "-5"}}, 1, {"meters[0].pt: -5 is out of range"}},
    {"ct a string", {{"meters[0].ct", "\"40\""}}, 1, {"meters[0].ct: must be a number"}},
    {"ct too large", {{"meters[0].ct", "2e6"}}, 1, {"meters[0].ct: 2e+06 is out of range"}},
    {"meter unknown key", {{"meters[0].colour", "\"red\""}}, 1, {"meters[0].colour: unknown key"}},
    /* several at once: every one is reported */
    {"three errors at once",
     {{"mqtt.port", "0"}, {"buses[1].baud", "9601"}, {"meters[1].unit", "300"}},
     3,
     {"mqtt.port: 0", "buses[1].baud: 9601", "meters[1].unit: 300"}},
};

/* --- applying changes ---------------------------------------------------------------- */

/* Finds the parent of the last path element and that element's key or index. */
static cJSON *walk(cJSON *root, const char *path, char *last, size_t lastlen, int *index)
{
    char buf[128], *save = NULL, *tok, *next;
    cJSON *cur = root;

    snprintf(buf, sizeof(buf), "%s", path);
    tok = strtok_r(buf, ".", &save);
    while (tok) {
        char *br = strchr(tok, '[');
        next = strtok_r(NULL, ".", &save);
        if (br) {
            *br = '\0';
            cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
            if (!next) {
                *index = (int)strtol(br + 1, NULL, 10);
                last[0] = '\0';
                return cur;
            }
            cur = cJSON_GetArrayItem(cur, (int)strtol(br + 1, NULL, 10));
        } else if (!next) {
            *index = -1;
            snprintf(last, lastlen, "%s", tok);
            return cur;
        } else {
            cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
        }
        tok = next;
    }
    return NULL;
}

static void apply(cJSON *root, const struct change *c)
{
    char last[64];
    int index = -1;
    cJSON *parent = walk(root, c->path, last, sizeof(last), &index), *v = NULL;

    if (!parent)
        print_error("change %s: no such place in the base configuration\n", c->path);
    assert_non_null(parent);
    if (c->json) {
        v = cJSON_Parse(c->json);
        assert_non_null(v);
    }
    if (index >= 0) {
        if (v)
            cJSON_ReplaceItemInArray(parent, index, v);
        else
            cJSON_DeleteItemFromArray(parent, index);
    } else if (v) {
        if (cJSON_GetObjectItemCaseSensitive(parent, last))
            cJSON_ReplaceItemInObjectCaseSensitive(parent, last, v);
        else
            cJSON_AddItemToObject(parent, last, v);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(parent, last);
    }
}

struct msgs {
    int n;
    char m[16][900];
};

static void collect(void *arg, const char *msg)
{
    struct msgs *ms = arg;
    if (ms->n < 16)
        snprintf(ms->m[ms->n], sizeof(ms->m[0]), "%s", msg);
    ms->n++;
}

static struct agent_cfg cfg; /* tens of KiB: not on the stack */

static int parse_text(const char *text, struct msgs *ms)
{
    memset(ms, 0, sizeof(*ms));
    return cfg_parse(text, strlen(text), ORIGIN, &cfg, collect, ms);
}

/* --- tests ----------------------------------------------------------------------------- */

static void test_base_is_valid(void **state)
{
    struct msgs ms;
    int n = parse_text(base_json, &ms);

    (void)state;
    if (n)
        print_error("first error: %s\n", ms.m[0]);
    assert_i64_eq(n, 0);
    assert_i64_eq(cfg.nbuses, 2);
    assert_i64_eq(cfg.nmeters, 2);
    assert_double_eq(cfg.meters[0].ct, 1.0);
    assert_double_eq(cfg.meters[0].pt, 1.0);
    assert_false(cfg.ha_enabled);
    assert_string_equal(cfg.ha_prefix, "homeassistant");
    assert_i64_eq(cfg.buses[1].parity, 'N');
    cfg_free(&cfg);
}

static void test_bad_configs(void **state)
{
    char ctx[160];
    int failed = 0;

    (void)state;
    assert_true(sizeof(rows) / sizeof(rows[0]) >= 25);
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        const struct row *row = &rows[r];
        cJSON *root = cJSON_Parse(base_json);
        struct msgs ms;
        char *text;
        int n;

        assert_non_null(root);
        for (int i = 0; i < 3 && row->ch[i].path; i++)
            apply(root, &row->ch[i]);
        text = cJSON_PrintUnformatted(root);
        cJSON_Delete(root);
        assert_non_null(text);
        n = parse_text(text, &ms);
        snprintf(ctx, sizeof(ctx), "row %zu (%s)", r, row->what);
        if (n != row->nerr) {
            print_error("%s: %d errors, want %d; got:\n", ctx, n, row->nerr);
            for (int i = 0; i < ms.n && i < 16; i++)
                print_error("    %s\n", ms.m[i]);
            failed++;
        } else {
            assert_i64_eq_ctx(ctx, ms.n, n); /* the count is what was reported */
            for (int i = 0; i < n && i < 3; i++) {
                assert_true(strncmp(ms.m[i], ORIGIN ": ", strlen(ORIGIN) + 2) == 0);
                if (!strstr(ms.m[i], row->msg[i])) {
                    print_error("%s: message %d \"%s\" does not contain \"%s\"\n", ctx, i, ms.m[i],
                                row->msg[i]);
                    failed++;
                }
            }
        }
        cfg_free(&cfg);
        free(text);
    }
    assert_i64_eq(failed, 0);
}

static void test_not_json(void **state)
{
    struct msgs ms;

    (void)state;
    assert_i64_eq(parse_text("{\"mqtt\": {\n\"host\": }", &ms), 1);
    assert_contains(ms.m[0], ORIGIN ": not valid JSON (near line 2)");
    cfg_free(&cfg);
    assert_i64_eq(parse_text("[1, 2]", &ms), 1);
    assert_contains(ms.m[0], "the top level must be a JSON object");
    cfg_free(&cfg);
    assert_i64_eq(parse_text("", &ms), 1);
    cfg_free(&cfg);
}

static void test_example_parses(void **state)
{
    struct msgs ms;
    int n;

    (void)state;
    memset(&ms, 0, sizeof(ms));
    setenv("MLK_PROFILES", PROFILES, 1); /* the example leaves profiles_dir to the default */
    n = cfg_load(MLK_SOURCE_DIR "/agent/agent.example.json", &cfg, collect, &ms);
    if (n)
        print_error("first error: %s\n", ms.m[0]);
    assert_i64_eq(n, 0);
    assert_true(cfg.nmeters > 0);
    cfg_free(&cfg);
}

static void test_round_trip(void **state)
{
    static struct agent_cfg again;
    cJSON *root = cJSON_Parse(base_json), *out;
    const cJSON *pw;
    struct msgs ms;
    char *text;

    (void)state;
    apply(root, &(struct change){"meters[0].ct", "40"});
    apply(root, &(struct change){"meters[0].pt", "100"});
    apply(root, &(struct change){"homeassistant", "{\"enabled\":true,\"prefix\":\"ha\"}"});
    apply(root, &(struct change){"queue.durability", "\"memory-first\""});
    apply(root, &(struct change){"buses[1].parity", "\"E\""});
    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    assert_i64_eq(parse_text(text, &ms), 0);
    free(text);

    /* hidden password */
    out = cfg_to_json(&cfg, true);
    assert_non_null(out);
    pw = cJSON_GetObjectItem(cJSON_GetObjectItem(out, "mqtt"), "password");
    assert_true(cJSON_IsString(pw));
    assert_string_equal(pw->valuestring, CFG_HIDDEN_PASSWORD);
    cJSON_Delete(out);

    /* what it writes reads back as the same configuration */
    out = cfg_to_json(&cfg, false);
    assert_non_null(out);
    text = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    memset(&ms, 0, sizeof(ms));
    assert_i64_eq(cfg_parse(text, strlen(text), "again", &again, collect, &ms), 0);
    free(text);
    assert_string_equal(again.gateway_id, cfg.gateway_id);
    assert_string_equal(again.mqtt_password, "pw");
    assert_true(cfg_mqtt_same(&cfg, &again));
    assert_double_eq(again.meters[0].ct, 40);
    assert_double_eq(again.meters[0].pt, 100);
    assert_true(again.ha_enabled);
    assert_string_equal(again.ha_prefix, "ha");
    assert_true(again.queue.memory_first);
    assert_i64_eq(again.queue.mem_max, cfg.queue.mem_max);
    assert_i64_eq(again.queue.spill_rows, cfg.queue.spill_rows);
    assert_i64_eq(again.buses[1].parity, 'E');
    assert_i64_eq(again.buses[1].baud, 9600);
    assert_i64_eq(again.meters[1].interval_ms, cfg.meters[1].interval_ms);
    assert_string_equal(again.meters[1].profile->model, "sdm120");
    assert_i64_eq(again.meters[1].bus, 1);

    /* a changed port is another connection */
    again.mqtt_port = 1884;
    assert_false(cfg_mqtt_same(&cfg, &again));
    assert_i64_eq(cfg_bus_find(&cfg, "rtu0"), 1);
    assert_i64_eq(cfg_bus_find(&cfg, "nope"), -1);
    assert_i64_eq(cfg_meter_find(&cfg, "m2"), 1);
    cfg_free(&again);
    cfg_free(&cfg);
}

static void test_scan_bus_spec(void **state)
{
    static const struct {
        const char *spec;
        int ok;
        const char *host_or_dev;
        int port_or_baud;
        char parity;
        int stop;
    } t[] = {
        {"tcp:127.0.0.1:5020", 1, "127.0.0.1", 5020, 0, 0},
        {"tcp:meter.local", 1, "meter.local", 502, 0, 0},
        {"tcp:[::1]:1502", 1, "::1", 1502, 0, 0},
        {"tcp:host:0", 0, NULL, 0, 0, 0},
        {"tcp:host:70000", 0, NULL, 0, 0, 0},
        {"tcp::502", 0, NULL, 0, 0, 0},
        {"tcp:[::1", 0, NULL, 0, 0, 0},
        {"rtu:/dev/ttyUSB0", 1, "/dev/ttyUSB0", 9600, 'N', 1},
        {"rtu:/dev/ttyUSB0:2400", 1, "/dev/ttyUSB0", 2400, 'N', 1},
        {"rtu:/dev/ttyUSB0:19200:E", 1, "/dev/ttyUSB0", 19200, 'E', 1},
        {"rtu:/dev/ttyUSB0:9600:O:2", 1, "/dev/ttyUSB0", 9600, 'O', 2},
        {"rtu:/dev/serial/by-path/pci-0000:00:14.0-usb-0:1.2:1.0-port0", 1,
         "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1.2:1.0-port0", 9600, 'N', 1},
        {"rtu:/dev/ttyUSB0:9601", 0, NULL, 0, 0, 0},
        {"rtu:", 0, NULL, 0, 0, 0},
        {"udp:1.2.3.4", 0, NULL, 0, 0, 0},
    };
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct bus_cfg b;
        int rc;
        memset(&b, 0, sizeof(b));
        rc = scan_parse_bus(t[i].spec, &b, err, sizeof(err));
        assert_i64_eq_ctx(t[i].spec, rc == 0, t[i].ok);
        if (!t[i].ok) {
            assert_true(strlen(err) > 0);
            continue;
        }
        if (b.kind == BUS_TCP) {
            assert_string_equal(b.host, t[i].host_or_dev);
            assert_i64_eq_ctx(t[i].spec, b.port, t[i].port_or_baud);
        } else {
            assert_string_equal(b.device, t[i].host_or_dev);
            assert_i64_eq_ctx(t[i].spec, b.baud, t[i].port_or_baud);
            assert_i64_eq_ctx(t[i].spec, b.parity, t[i].parity);
            assert_i64_eq_ctx(t[i].spec, b.stop_bits, t[i].stop);
        }
    }
}

static void test_scan_units(void **state)
{
    static bool u[SCAN_UNIT_MAX + 1];
    char err[256];

    (void)state;
    assert_i64_eq(scan_parse_units("1-247", u, err, sizeof(err)), 247);
    assert_i64_eq(scan_parse_units("5", u, err, sizeof(err)), 1);
    assert_true(u[5] && !u[4] && !u[6]);
    assert_i64_eq(scan_parse_units("1,3,10-12,3", u, err, sizeof(err)), 5);
    assert_true(u[1] && u[3] && u[10] && u[11] && u[12] && !u[2]);
    assert_i64_eq(scan_parse_units("0", u, err, sizeof(err)), -EINVAL);
    assert_i64_eq(scan_parse_units("248", u, err, sizeof(err)), -EINVAL);
    assert_i64_eq(scan_parse_units("5-3", u, err, sizeof(err)), -EINVAL);
    assert_i64_eq(scan_parse_units("1,", u, err, sizeof(err)), -EINVAL);
    assert_i64_eq(scan_parse_units("a", u, err, sizeof(err)), -EINVAL);
    assert_i64_eq(scan_parse_units("", u, err, sizeof(err)), -EINVAL);
    assert_i64_eq(scan_parse_units("1-", u, err, sizeof(err)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_is_valid), cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_not_json),      cmocka_unit_test(test_example_parses),
        cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_scan_bus_spec),
        cmocka_unit_test(test_scan_units),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
