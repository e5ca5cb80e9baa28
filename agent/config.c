/*
 * config: parse and validate agent.json. See config.h.
 *
 * Every getter takes the JSON object, the path of that object ("buses[1]") and a key, so each
 * message names exactly where the problem is. Unknown keys are errors: a typo must not be
 * silently ignored.
 */
#include "config.h"
#include "jsonc.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chk {
    const char *origin;
    cfg_report_fn report;
    void *arg;
    int nerr;
};

static void cerr(struct chk *c, const char *path, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cerr(struct chk *c, const char *path, const char *key, const char *fmt, ...)
{
    char what[512], msg[900];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (!*path && !key)
        snprintf(msg, sizeof(msg), "%s: %s", c->origin, what);
    else
        snprintf(msg, sizeof(msg), "%s: %s%s%s: %s", c->origin, path, (*path && key) ? "." : "",
                 key ? key : "", what);
    c->nerr++;
    if (c->report)
        c->report(c->arg, msg);
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

/* String member: absent -> def (NULL def = required). JSON null counts as absent. */
static void get_str(struct chk *c, const cJSON *obj, const char *path, const char *key, char *dst,
                    size_t len, const char *def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (!it || cJSON_IsNull(it)) {
        if (!def)
            cerr(c, path, key, "required");
        else
            snprintf(dst, len, "%s", def);
        return;
    }
    if (!cJSON_IsString(it)) {
        cerr(c, path, key, "must be a string");
        return;
    }
    if (strlen(it->valuestring) >= len) {
        cerr(c, path, key, "longer than %zu characters", len - 1);
        return;
    }
    snprintf(dst, len, "%s", it->valuestring);
}

static void get_id(struct chk *c, const cJSON *obj, const char *path, const char *key, char *dst,
                   const char *def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    get_str(c, obj, path, key, dst, WIRE_ID_MAX, def);
    if (cJSON_IsString(it) && strlen(it->valuestring) < WIRE_ID_MAX && !wire_id_valid(dst))
        cerr(c, path, key, "\"%s\" is not a valid id (1..63 of A-Z a-z 0-9 _ . -)", dst);
}

/* Integer member in [lo, hi]; absent -> def, or an error when required. */
static long get_int(struct chk *c, const cJSON *obj, const char *path, const char *key, long lo,
                    long hi, long def, int required)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (!it || cJSON_IsNull(it)) {
        if (required)
            cerr(c, path, key, "required");
        return def;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble)) {
        cerr(c, path, key, "must be an integer");
        return def;
    }
    if (it->valuedouble < (double)lo || it->valuedouble > (double)hi) {
        cerr(c, path, key, "%.0f is out of range (%ld..%ld)", it->valuedouble, lo, hi);
        return def;
    }
    return (long)it->valuedouble;
}

/* Number member in (lo, hi] (lo excluded: ratios must be > 0); absent -> def. */
static double get_ratio(struct chk *c, const cJSON *obj, const char *path, const char *key,
                        double lo, double hi, double def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (!it || cJSON_IsNull(it))
        return def;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
        cerr(c, path, key, "must be a number");
        return def;
    }
    if (!(it->valuedouble > lo) || it->valuedouble > hi) {
        cerr(c, path, key, "%g is out of range (above %g, at most %g)", it->valuedouble, lo, hi);
        return def;
    }
    return it->valuedouble;
}

/* Boolean member; absent -> def. */
static bool get_bool(struct chk *c, const cJSON *obj, const char *path, const char *key, bool def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (!it || cJSON_IsNull(it))
        return def;
    if (!cJSON_IsBool(it)) {
        cerr(c, path, key, "must be true or false");
        return def;
    }
    return cJSON_IsTrue(it);
}

static int standard_baud(long b)
{
    static const long rates[] = {1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++)
        if (rates[i] == b)
            return 1;
    return 0;
}

static void parse_bus(struct chk *c, const cJSON *o, const char *path, struct bus_cfg *b)
{
    static const char *const keys[] = {
        "name",      "type",      "host",       "port",    "device",         "baud", "parity",
        "data_bits", "stop_bits", "timeout_ms", "retries", "frame_delay_ms", NULL};
    char type[16] = "", parity[4] = "N";
    const cJSON *it;

    if (!cJSON_IsObject(o)) {
        cerr(c, path, NULL, "must be an object");
        return;
    }
    check_keys(c, o, path, keys);
    get_id(c, o, path, "name", b->name, NULL);
    get_str(c, o, path, "type", type, sizeof(type), NULL);
    b->timeout_ms = (int)get_int(c, o, path, "timeout_ms", 10, 60000, 1000, 0);
    b->retries = (int)get_int(c, o, path, "retries", 0, 10, 1, 0);
    b->frame_delay_ms = (int)get_int(c, o, path, "frame_delay_ms", 0, 10000, 0, 0);
    if (strcmp(type, "tcp") == 0) {
        b->kind = BUS_TCP;
        get_str(c, o, path, "host", b->host, sizeof(b->host), NULL);
        b->port = (int)get_int(c, o, path, "port", 1, 65535, 502, 0);
        if (cJSON_GetObjectItemCaseSensitive(o, "device"))
            cerr(c, path, "device", "only for \"rtu\" buses");
    } else if (strcmp(type, "rtu") == 0) {
        b->kind = BUS_RTU;
        get_str(c, o, path, "device", b->device, sizeof(b->device), NULL);
        b->baud = (int)get_int(c, o, path, "baud", 300, 4000000, 9600, 0);
        if ((it = cJSON_GetObjectItemCaseSensitive(o, "baud")) && cJSON_IsNumber(it) &&
            it->valuedouble >= 300 && it->valuedouble <= 4000000 &&
            !standard_baud((long)it->valuedouble))
            cerr(c, path, "baud", "%.0f is not a standard rate (1200 .. 230400)", it->valuedouble);
        get_str(c, o, path, "parity", parity, sizeof(parity), "N");
        if (strcmp(parity, "N") && strcmp(parity, "E") && strcmp(parity, "O"))
            cerr(c, path, "parity", "\"%s\" must be \"N\", \"E\" or \"O\"", parity);
        b->parity = parity[0];
        b->data_bits = (int)get_int(c, o, path, "data_bits", 7, 8, 8, 0);
        b->stop_bits = (int)get_int(c, o, path, "stop_bits", 1, 2, 1, 0);
        if (cJSON_GetObjectItemCaseSensitive(o, "host"))
            cerr(c, path, "host", "only for \"tcp\" buses");
    } else if (type[0]) {
        cerr(c, path, "type", "\"%s\" must be \"tcp\" or \"rtu\"", type);
    }
}

static void parse_meter(struct chk *c, const cJSON *o, const char *path, struct agent_cfg *cfg,
                        struct meter_cfg *m)
{
    static const char *const keys[] = {"id",          "bus", "unit", "profile",
                                       "interval_ms", "ct",  "pt",   NULL};
    char bus[WIRE_ID_MAX] = "", prof[PROFILE_NAME_MAX] = "";

    if (!cJSON_IsObject(o)) {
        cerr(c, path, NULL, "must be an object");
        return;
    }
    check_keys(c, o, path, keys);
    get_id(c, o, path, "id", m->id, NULL);
    get_str(c, o, path, "bus", bus, sizeof(bus), NULL);
    m->unit = (int)get_int(c, o, path, "unit", 1, 247, 1, 1);
    get_str(c, o, path, "profile", prof, sizeof(prof), NULL);
    m->interval_ms = (int)get_int(c, o, path, "interval_ms", 100, 86400000, 10000, 0);
    m->ct = get_ratio(c, o, path, "ct", 0, 1000000, 1);
    m->pt = get_ratio(c, o, path, "pt", 0, 1000000, 1);
    m->bus = -1;
    for (int i = 0; bus[0] && i < cfg->nbuses; i++)
        if (strcmp(cfg->buses[i].name, bus) == 0)
            m->bus = i;
    if (bus[0] && m->bus < 0)
        cerr(c, path, "bus", "\"%s\" is not the name of a bus", bus);
    if (prof[0]) {
        m->profile = profile_set_find(&cfg->profiles, prof);
        if (!m->profile)
            cerr(c, path, "profile", "\"%s\" is not a known profile (see %s)", prof,
                 cfg->profiles_dir);
    }
}

int cfg_parse(const char *json, size_t len, const char *origin, struct agent_cfg *cfg,
              cfg_report_fn report, void *arg)
{
    static const char *const top_keys[] = {
        "gateway",      "board",         "mqtt",  "queue",  "uplink", "health",
        "profiles_dir", "homeassistant", "buses", "meters", NULL};
    static const char *const ha_keys[] = {"enabled", "prefix", NULL};
    static const char *const gw_keys[] = {"id", NULL};
    static const char *const mqtt_keys[] = {"host",     "port",      "prefix",          "username",
                                            "password", "keepalive", "reconnect_max_s", NULL};
    static const char *const queue_keys[] = {"path",      "durability", "max_rows",
                                             "max_bytes", "max_age_s",  "mem_max",
                                             "spill_ms",  "spill_rows", NULL};
    static const char *const uplink_keys[] = {"batch_max",      "batch_bytes", "inflight_max",
                                              "ack_timeout_ms", "window",      NULL};
    static const char *const health_keys[] = {"interval_ms", NULL};
    char durability[16] = "";
    struct chk c = {origin, report, arg, 0};
    char *text = malloc(len + 1);
    cJSON *root = NULL;
    const cJSON *o, *it;
    static const cJSON empty_obj = {.type = cJSON_Object};
    char perr[512];
    int i;

    memset(cfg, 0, sizeof(*cfg));
    if (!text) {
        cerr(&c, "", NULL, "out of memory");
        goto done;
    }
    memcpy(text, json, len);
    text[len] = '\0';
    json_strip_comments(text, len);
    root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        const char *where = cJSON_GetErrorPtr();
        if (root)
            cerr(&c, "", NULL, "the top level must be a JSON object");
        else if (where && where >= text && where <= text + len)
            cerr(&c, "", NULL, "not valid JSON (near line %d)", json_line_of(text, where));
        else
            cerr(&c, "", NULL, "not valid JSON");
        goto done;
    }
    check_keys(&c, root, "", top_keys);

    o = cJSON_GetObjectItemCaseSensitive(root, "gateway");
    if (o && !cJSON_IsObject(o)) {
        cerr(&c, "", "gateway", "must be an object");
    } else if (o) {
        check_keys(&c, o, "gateway", gw_keys);
        get_id(&c, o, "gateway", "id", cfg->gateway_id, ""); /* "": the board's identity */
    }
    get_str(&c, root, "", "board", cfg->board, sizeof(cfg->board), "sim");

    o = cJSON_GetObjectItemCaseSensitive(root, "mqtt");
    if (!cJSON_IsObject(o)) {
        cerr(&c, "", "mqtt", "required, an object");
        o = &empty_obj;
    }
    check_keys(&c, o, "mqtt", mqtt_keys);
    get_str(&c, o, "mqtt", "host", cfg->mqtt_host, sizeof(cfg->mqtt_host), NULL);
    cfg->mqtt_port = (int)get_int(&c, o, "mqtt", "port", 1, 65535, 1883, 0);
    get_id(&c, o, "mqtt", "prefix", cfg->mqtt_prefix, "meterlink");
    get_str(&c, o, "mqtt", "username", cfg->mqtt_username, sizeof(cfg->mqtt_username), "");
    get_str(&c, o, "mqtt", "password", cfg->mqtt_password, sizeof(cfg->mqtt_password), "");
    if (cfg->mqtt_password[0] && !cfg->mqtt_username[0])
        cerr(&c, "mqtt", "password", "set without a username");
    cfg->mqtt_keepalive = (int)get_int(&c, o, "mqtt", "keepalive", 5, 3600, 30, 0);
    cfg->mqtt_reconnect_max_s = (int)get_int(&c, o, "mqtt", "reconnect_max_s", 1, 3600, 30, 0);

    o = cJSON_GetObjectItemCaseSensitive(root, "queue");
    if (!cJSON_IsObject(o)) {
        cerr(&c, "", "queue", "required, an object with \"path\"");
        o = &empty_obj;
    }
    check_keys(&c, o, "queue", queue_keys);
    get_str(&c, o, "queue", "path", cfg->queue_path, sizeof(cfg->queue_path), NULL);
    queue_default_opts(&cfg->queue);
    get_str(&c, o, "queue", "durability", durability, sizeof(durability), "durable");
    if (strcmp(durability, "durable") == 0)
        cfg->queue.memory_first = false;
    else if (strcmp(durability, "memory-first") == 0)
        cfg->queue.memory_first = true;
    else
        cerr(&c, "queue", "durability", "\"%s\" must be \"durable\" or \"memory-first\"",
             durability);
    cfg->queue.max_rows = get_int(&c, o, "queue", "max_rows", 100, 100000000, 1000000, 0);
    cfg->queue.max_bytes =
        (int64_t)get_int(&c, o, "queue", "max_bytes", 0, 1L << 40, 0, 0); /* 0: no bound */
    cfg->queue.max_age_ms =
        (int64_t)get_int(&c, o, "queue", "max_age_s", 0, 10L * 366 * 86400, 0, 0) * 1000;
    cfg->queue.mem_max = get_int(&c, o, "queue", "mem_max", 100, 10000000, 20000, 0);
    cfg->queue.spill_ms = (int64_t)get_int(&c, o, "queue", "spill_ms", 0, 3600000, 10000, 0);
    cfg->queue.spill_rows = get_int(&c, o, "queue", "spill_rows", 0, 10000000, 2000, 0);
    if (cfg->queue.spill_rows >= cfg->queue.mem_max)
        cerr(&c, "queue", "spill_rows", "must be below queue.mem_max (%ld)", cfg->queue.mem_max);
    if (cfg->queue.max_bytes > 0 && cfg->queue.max_bytes < 65536)
        cerr(&c, "queue", "max_bytes", "%lld is too small (at least 65536, or 0 for no bound)",
             (long long)cfg->queue.max_bytes);

    o = cJSON_GetObjectItemCaseSensitive(root, "uplink");
    if (o && !cJSON_IsObject(o))
        cerr(&c, "", "uplink", "must be an object");
    if (!cJSON_IsObject(o))
        o = &empty_obj;
    check_keys(&c, o, "uplink", uplink_keys);
    cfg->batch_max = (int)get_int(&c, o, "uplink", "batch_max", 1, WIRE_MAX_READINGS, 5000, 0);
    cfg->batch_bytes =
        (int)get_int(&c, o, "uplink", "batch_bytes", 4096, WIRE_MAX_PAYLOAD, WIRE_MAX_PAYLOAD, 0);
    cfg->inflight_max = (int)get_int(&c, o, "uplink", "inflight_max", 1, 1000, 16, 0);
    cfg->ack_timeout_ms = (int)get_int(&c, o, "uplink", "ack_timeout_ms", 500, 3600000, 30000, 0);
    cfg->window = (int)get_int(&c, o, "uplink", "window", 1, 1000000, 20000, 0);

    o = cJSON_GetObjectItemCaseSensitive(root, "health");
    if (o && !cJSON_IsObject(o))
        cerr(&c, "", "health", "must be an object");
    if (!cJSON_IsObject(o))
        o = &empty_obj;
    check_keys(&c, o, "health", health_keys);
    cfg->health_interval_ms = (int)get_int(&c, o, "health", "interval_ms", 0, 86400000, 60000, 0);
    if (cfg->health_interval_ms > 0 && cfg->health_interval_ms < 1000)
        cerr(&c, "health", "interval_ms", "%d is too short (at least 1000, or 0 for none)",
             cfg->health_interval_ms);

    o = cJSON_GetObjectItemCaseSensitive(root, "homeassistant");
    if (o && !cJSON_IsObject(o))
        cerr(&c, "", "homeassistant", "must be an object");
    if (!cJSON_IsObject(o))
        o = &empty_obj;
    check_keys(&c, o, "homeassistant", ha_keys);
    cfg->ha_enabled = get_bool(&c, o, "homeassistant", "enabled", false);
    get_id(&c, o, "homeassistant", "prefix", cfg->ha_prefix, "homeassistant");

    get_str(&c, root, "", "profiles_dir", cfg->profiles_dir, sizeof(cfg->profiles_dir),
            profile_default_dir());
    if (profile_set_load_dir(&cfg->profiles, cfg->profiles_dir, perr, sizeof(perr)) < 0)
        cerr(&c, "", "profiles_dir", "%s", perr);

    o = cJSON_GetObjectItemCaseSensitive(root, "buses");
    if (!cJSON_IsArray(o) || cJSON_GetArraySize(o) == 0) {
        cerr(&c, "", "buses", "required, a non-empty array");
    } else if (cJSON_GetArraySize(o) > CFG_MAX_BUSES) {
        cerr(&c, "", "buses", "more than %d buses", CFG_MAX_BUSES);
    } else {
        i = 0;
        cJSON_ArrayForEach(it, o)
        {
            char path[32];
            snprintf(path, sizeof(path), "buses[%d]", i);
            parse_bus(&c, it, path, &cfg->buses[i]);
            for (int j = 0; j < i; j++)
                if (cfg->buses[i].name[0] && strcmp(cfg->buses[j].name, cfg->buses[i].name) == 0)
                    cerr(&c, path, "name", "\"%s\" is already used by buses[%d]",
                         cfg->buses[i].name, j);
            i++;
        }
        cfg->nbuses = i;
    }

    o = cJSON_GetObjectItemCaseSensitive(root, "meters");
    if (!cJSON_IsArray(o) || cJSON_GetArraySize(o) == 0) {
        cerr(&c, "", "meters", "required, a non-empty array");
    } else if (cJSON_GetArraySize(o) > CFG_MAX_METERS) {
        cerr(&c, "", "meters", "more than %d meters", CFG_MAX_METERS);
    } else {
        i = 0;
        cJSON_ArrayForEach(it, o)
        {
            char path[32];
            struct meter_cfg *m = &cfg->meters[i];
            snprintf(path, sizeof(path), "meters[%d]", i);
            parse_meter(&c, it, path, cfg, m);
            for (int j = 0; j < i; j++) {
                if (m->id[0] && strcmp(cfg->meters[j].id, m->id) == 0)
                    cerr(&c, path, "id", "\"%s\" is already used by meters[%d]", m->id, j);
                else if (m->bus >= 0 && cfg->meters[j].bus == m->bus &&
                         cfg->meters[j].unit == m->unit)
                    cerr(&c, path, "unit", "%d is already used on bus \"%s\" by meters[%d]",
                         m->unit, cfg->buses[m->bus].name, j);
            }
            i++;
        }
        cfg->nmeters = i;
    }
done:
    cJSON_Delete(root);
    free(text);
    return c.nerr;
}

int cfg_load(const char *path, struct agent_cfg *cfg, cfg_report_fn report, void *arg)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    if (!f) {
        char msg[600];
        snprintf(msg, sizeof(msg), "%s: cannot open: %s", path, strerror(errno));
        if (report)
            report(arg, msg);
        return 1;
    }
    buf = malloc(1 << 20);
    n = buf ? fread(buf, 1, 1 << 20, f) : 0;
    if (!buf || !feof(f)) {
        char msg[600];
        snprintf(msg, sizeof(msg), "%s: %s", path,
                 buf ? "larger than 1 MiB or unreadable" : "out of memory");
        if (report)
            report(arg, msg);
        fclose(f);
        free(buf);
        return 1;
    }
    fclose(f);
    rc = cfg_parse(buf, n, path, cfg, report, arg);
    free(buf);
    return rc;
}

void cfg_free(struct agent_cfg *cfg)
{
    profile_set_free(&cfg->profiles);
}

/* --- writing a configuration back ----------------------------------------------------- */

static void add_num(cJSON *o, const char *key, double v, int *fail)
{
    if (!cJSON_AddNumberToObject(o, key, v))
        *fail = 1;
}

static void add_str(cJSON *o, const char *key, const char *v, int *fail)
{
    if (!cJSON_AddStringToObject(o, key, v))
        *fail = 1;
}

static cJSON *add_obj(cJSON *o, const char *key, int *fail)
{
    cJSON *it = cJSON_AddObjectToObject(o, key);
    if (!it)
        *fail = 1;
    return it ? it : o; /* on failure keep going into o; the result is dropped anyway */
}

cJSON *cfg_to_json(const struct agent_cfg *cfg, bool hide_password)
{
    cJSON *root = cJSON_CreateObject(), *o, *arr;
    char parity[2] = "N";
    int fail = !root;

    if (fail)
        return NULL;
    o = add_obj(root, "gateway", &fail);
    add_str(o, "id", cfg->gateway_id, &fail);
    add_str(root, "board", cfg->board, &fail);

    o = add_obj(root, "mqtt", &fail);
    add_str(o, "host", cfg->mqtt_host, &fail);
    add_num(o, "port", cfg->mqtt_port, &fail);
    add_str(o, "prefix", cfg->mqtt_prefix, &fail);
    if (cfg->mqtt_username[0])
        add_str(o, "username", cfg->mqtt_username, &fail);
    if (cfg->mqtt_password[0])
        add_str(o, "password", hide_password ? CFG_HIDDEN_PASSWORD : cfg->mqtt_password, &fail);
    add_num(o, "keepalive", cfg->mqtt_keepalive, &fail);
    add_num(o, "reconnect_max_s", cfg->mqtt_reconnect_max_s, &fail);

    o = add_obj(root, "queue", &fail);
    add_str(o, "path", cfg->queue_path, &fail);
    add_str(o, "durability", cfg->queue.memory_first ? "memory-first" : "durable", &fail);
    add_num(o, "max_rows", (double)cfg->queue.max_rows, &fail);
    add_num(o, "max_bytes", (double)cfg->queue.max_bytes, &fail);
    add_num(o, "max_age_s", (double)(cfg->queue.max_age_ms / 1000), &fail);
    add_num(o, "mem_max", (double)cfg->queue.mem_max, &fail);
    add_num(o, "spill_ms", (double)cfg->queue.spill_ms, &fail);
    add_num(o, "spill_rows", (double)cfg->queue.spill_rows, &fail);

    o = add_obj(root, "uplink", &fail);
    add_num(o, "batch_max", cfg->batch_max, &fail);
    add_num(o, "batch_bytes", cfg->batch_bytes, &fail);
    add_num(o, "inflight_max", cfg->inflight_max, &fail);
    add_num(o, "ack_timeout_ms", cfg->ack_timeout_ms, &fail);
    add_num(o, "window", cfg->window, &fail);

    o = add_obj(root, "health", &fail);
    add_num(o, "interval_ms", cfg->health_interval_ms, &fail);

    o = add_obj(root, "homeassistant", &fail);
    if (!cJSON_AddBoolToObject(o, "enabled", cfg->ha_enabled))
        fail = 1;
    add_str(o, "prefix", cfg->ha_prefix, &fail);

    add_str(root, "profiles_dir", cfg->profiles_dir, &fail);

    arr = cJSON_AddArrayToObject(root, "buses");
    for (int i = 0; arr && i < cfg->nbuses; i++) {
        const struct bus_cfg *b = &cfg->buses[i];
        cJSON *it = cJSON_CreateObject();
        if (!it || !cJSON_AddItemToArray(arr, it)) {
            cJSON_Delete(it);
            fail = 1;
            break;
        }
        add_str(it, "name", b->name, &fail);
        add_str(it, "type", b->kind == BUS_TCP ? "tcp" : "rtu", &fail);
        if (b->kind == BUS_TCP) {
            add_str(it, "host", b->host, &fail);
            add_num(it, "port", b->port, &fail);
        } else {
            add_str(it, "device", b->device, &fail);
            add_num(it, "baud", b->baud, &fail);
            parity[0] = b->parity;
            add_str(it, "parity", parity, &fail);
            add_num(it, "data_bits", b->data_bits, &fail);
            add_num(it, "stop_bits", b->stop_bits, &fail);
        }
        add_num(it, "timeout_ms", b->timeout_ms, &fail);
        add_num(it, "retries", b->retries, &fail);
        add_num(it, "frame_delay_ms", b->frame_delay_ms, &fail);
    }
    if (!arr)
        fail = 1;

    arr = cJSON_AddArrayToObject(root, "meters");
    for (int i = 0; arr && i < cfg->nmeters; i++) {
        const struct meter_cfg *m = &cfg->meters[i];
        cJSON *it = cJSON_CreateObject();
        if (!it || !cJSON_AddItemToArray(arr, it)) {
            cJSON_Delete(it);
            fail = 1;
            break;
        }
        add_str(it, "id", m->id, &fail);
        add_str(it, "bus", m->bus >= 0 ? cfg->buses[m->bus].name : "", &fail);
        add_num(it, "unit", m->unit, &fail);
        add_str(it, "profile", m->profile ? m->profile->model : "", &fail);
        add_num(it, "interval_ms", m->interval_ms, &fail);
        add_num(it, "ct", m->ct, &fail);
        add_num(it, "pt", m->pt, &fail);
    }
    if (!arr)
        fail = 1;
    if (fail) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

bool cfg_mqtt_same(const struct agent_cfg *a, const struct agent_cfg *b)
{
    return strcmp(a->gateway_id, b->gateway_id) == 0 && strcmp(a->mqtt_host, b->mqtt_host) == 0 &&
           a->mqtt_port == b->mqtt_port && strcmp(a->mqtt_prefix, b->mqtt_prefix) == 0 &&
           strcmp(a->mqtt_username, b->mqtt_username) == 0 &&
           strcmp(a->mqtt_password, b->mqtt_password) == 0 &&
           a->mqtt_keepalive == b->mqtt_keepalive &&
           a->mqtt_reconnect_max_s == b->mqtt_reconnect_max_s;
}

int cfg_bus_find(const struct agent_cfg *cfg, const char *name)
{
    for (int i = 0; i < cfg->nbuses; i++)
        if (strcmp(cfg->buses[i].name, name) == 0)
            return i;
    return -1;
}

int cfg_meter_find(const struct agent_cfg *cfg, const char *id)
{
    for (int i = 0; i < cfg->nmeters; i++)
        if (strcmp(cfg->meters[i].id, id) == 0)
            return i;
    return -1;
}
