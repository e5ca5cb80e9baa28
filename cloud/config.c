/*
 * config: see config.h. The option table below is the one list of meter-cloud's settings;
 * meter-cloud.example.json shows the same keys with their defaults.
 */
#include "config.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_FILE_MAX (1024 * 1024) /* a config file larger than this is a mistake */

enum opt_type {
    OPT_STR,      /* a string */
    OPT_STR_NULL, /* a string or null (stored as "") */
    OPT_INT,      /* an integer in [min, max] */
};

/* Extra check of a string value; returns true when it is acceptable. */
typedef bool (*opt_check_fn)(const char *s);

struct opt {
    const char *section;
    const char *name;
    enum opt_type type;
    size_t off;  /* offset of the field in struct cfg */
    size_t size; /* OPT_STR*: size of the char array (max length + 1) */
    long min, max;
    opt_check_fn check;
    bool secret; /* never echo the value in an error */
    const char *def_str;
    long def_int;
    const char *what; /* completes "<value> is not ..." */
};

static bool check_prefix(const char *s)
{
    size_t n = strlen(s);
    if (s[0] == '/' || s[n - 1] == '/' || strstr(s, "//"))
        return false;
    for (; *s; s++)
        if (*s == '+' || *s == '#' || (unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static bool check_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

static bool check_no_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static bool check_ipv4(const char *s)
{
    struct in_addr a;
    return inet_pton(AF_INET, s, &a) == 1;
}

#define STR_FIELD(sec, fld) offsetof(struct cfg, sec.fld), sizeof(((struct cfg *)0)->sec.fld)
#define INT_FIELD(sec, fld) offsetof(struct cfg, sec.fld), 0

static const struct opt opts[] = {
    {"mqtt", "host", OPT_STR, STR_FIELD(mqtt, host), 0, 0, check_printable, false, "127.0.0.1", 0,
     "a host name or address (1..255 printable characters)"},
    {"mqtt", "port", OPT_INT, INT_FIELD(mqtt, port), 1, 65535, NULL, false, NULL, 1883,
     "a port (1..65535)"},
    {"mqtt", "prefix", OPT_STR, STR_FIELD(mqtt, prefix), 0, 0, check_prefix, false, "meterlink", 0,
     "a topic prefix (1..127 characters, no + or #, no empty level)"},
    {"mqtt", "client_id", OPT_STR, STR_FIELD(mqtt, client_id), 0, 0, check_printable, false,
     "meter-cloud", 0, "a client id (1..64 printable ASCII characters)"},
    {"mqtt", "username", OPT_STR_NULL, STR_FIELD(mqtt, username), 0, 0, check_no_ctl, false, NULL,
     0, "null or a user name (1..255 characters)"},
    {"mqtt", "password", OPT_STR_NULL, STR_FIELD(mqtt, password), 0, 0, NULL, true, NULL, 0,
     "null or a password (1..255 characters)"},
    {"http", "bind", OPT_STR, STR_FIELD(http, bind), 0, 0, check_ipv4, false, "127.0.0.1", 0,
     "an IPv4 address such as 127.0.0.1"},
    {"http", "port", OPT_INT, INT_FIELD(http, port), 0, 65535, NULL, false, NULL, 8080,
     "a port (0..65535; 0 picks a free one)"},
    {"http", "port_file", OPT_STR_NULL, STR_FIELD(http, port_file), 0, 0, check_no_ctl, false, NULL,
     0, "null or a file path"},
    {"http", "web_root", OPT_STR_NULL, STR_FIELD(http, web_root), 0, 0, check_no_ctl, false, NULL,
     0, "null or a folder path"},
    {"http", "command_timeout_ms", OPT_INT, INT_FIELD(http, command_timeout_ms), 100, 120000, NULL,
     false, NULL, 10000, "a time in ms (100..120000)"},
    {"store", "path", OPT_STR, STR_FIELD(store, path), 0, 0, check_no_ctl, false,
     "/var/lib/meterlink/cloud.db", 0, "a file path"},
    {"backup", "dir", OPT_STR_NULL, STR_FIELD(backup, dir), 0, 0, check_no_ctl, false, NULL, 0,
     "null (the store's folder/backups) or a folder path"},
    {"backup", "interval_s", OPT_INT, INT_FIELD(backup, interval_s), 60, 2592000, NULL, false, NULL,
     86400, "a time in s (60..2592000, 30 days)"},
    {"backup", "keep", OPT_INT, INT_FIELD(backup, keep), 1, 1000, NULL, false, NULL, 7,
     "a count (1..1000)"},
    {"ingest", "gap_grace_ms", OPT_INT, INT_FIELD(ingest, gap_grace_ms), 100, 604800000, NULL,
     false, NULL, 300000, "a time in ms (100..604800000, 7 days)"},
    {"auth", "pbkdf2_iterations", OPT_INT, INT_FIELD(auth, pbkdf2_iterations), 1000, 10000000, NULL,
     false, NULL, 100000, "an iteration count (1000..10000000)"},
    {"auth", "session_ttl_s", OPT_INT, INT_FIELD(auth, session_ttl_s), 1, 2592000, NULL, false,
     NULL, 43200, "a time in s (1..2592000, 30 days)"},
    {"auth", "login_max_failures", OPT_INT, INT_FIELD(auth, login_max_failures), 1, 1000, NULL,
     false, NULL, 5, "a count (1..1000)"},
    {"auth", "lockout_s", OPT_INT, INT_FIELD(auth, lockout_s), 1, 86400, NULL, false, NULL, 30,
     "a time in s (1..86400)"},
    {"auth", "lockout_max_s", OPT_INT, INT_FIELD(auth, lockout_max_s), 1, 86400, NULL, false, NULL,
     900, "a time in s (1..86400)"},
    {"rollup", "raw_days", OPT_INT, INT_FIELD(rollup, raw_days), 0, 36500, NULL, false, NULL, 60,
     "a number of days (0..36500; 0: keep for ever)"},
    {"rollup", "m5_days", OPT_INT, INT_FIELD(rollup, m5_days), 0, 36500, NULL, false, NULL, 180,
     "a number of days (0..36500; 0: keep for ever)"},
    {"rollup", "hour_days", OPT_INT, INT_FIELD(rollup, hour_days), 0, 36500, NULL, false, NULL, 0,
     "a number of days (0..36500; 0: keep for ever)"},
    {"rollup", "day_days", OPT_INT, INT_FIELD(rollup, day_days), 0, 36500, NULL, false, NULL, 0,
     "a number of days (0..36500; 0: keep for ever)"},
    {"rollup", "interval_s", OPT_INT, INT_FIELD(rollup, interval_s), 10, 86400, NULL, false, NULL,
     3600, "a time in s (10..86400)"},
    {"rollup", "gap_s", OPT_INT, INT_FIELD(rollup, gap_s), 1, 86400, NULL, false, NULL, 900,
     "a time in s (1..86400)"},
    {"rollup", "max_power_kw", OPT_INT, INT_FIELD(rollup, max_power_kw), 1, 1000000, NULL, false,
     NULL, 1000, "a power in kW (1..1000000)"},
    {"rollup", "kpi_cache_ms", OPT_INT, INT_FIELD(rollup, kpi_cache_ms), 0, 60000, NULL, false,
     NULL, 1000, "a time in ms (0..60000; 0: off)"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static const char *const sections[] = {"mqtt",   "http", "store",  "backup",
                                       "ingest", "auth", "rollup", "registry"};

struct ctx {
    const char *file;
    cfg_report_fn report;
    void *arg;
    int nerr;
};

static void err(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void err(struct ctx *x, const char *fmt, ...)
{
    char msg[512];
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(line, sizeof(line), "%s: %s", x->file, msg);
    x->nerr++;
    if (x->report)
        x->report(x->arg, line);
}

/* Renders a JSON value for an error message, shortened to fit out. */
static void show(const cJSON *v, char *out, size_t len)
{
    char *s;

    if (cJSON_IsObject(v)) {
        snprintf(out, len, "an object");
        return;
    }
    if (cJSON_IsArray(v)) {
        snprintf(out, len, "an array");
        return;
    }
    s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(out, len, "(value)");
        return;
    }
    if (strlen(s) >= len && len > 4)
        snprintf(out, len, "%.*s...", (int)(len - 4), s);
    else
        snprintf(out, len, "%s", s);
    free(s);
}

static void set_opt(const struct opt *o, const cJSON *v, struct cfg *c, struct ctx *x)
{
    char *base = (char *)c + o->off;
    char shown[64];

    if (o->secret)
        snprintf(shown, sizeof(shown), "the value");
    else
        show(v, shown, sizeof(shown));

    if (o->type == OPT_INT) {
        double d = v->valuedouble;
        if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d) || d < (double)o->min ||
            d > (double)o->max) {
            err(x, "%s.%s: %s is not %s", o->section, o->name, shown, o->what);
            return;
        }
        *(int *)(void *)base = (int)d;
        return;
    }
    if (o->type == OPT_STR_NULL && cJSON_IsNull(v)) {
        base[0] = '\0';
        return;
    }
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0' || strlen(v->valuestring) >= o->size ||
        (o->check && !o->check(v->valuestring))) {
        err(x, "%s.%s: %s is not %s", o->section, o->name, shown, o->what);
        return;
    }
    memcpy(base, v->valuestring, strlen(v->valuestring) + 1);
}

static void parse_section(const char *sec, const cJSON *obj, struct cfg *c, struct ctx *x)
{
    bool seen[NOPTS] = {false};
    const cJSON *v;
    char shown[64];

    if (!cJSON_IsObject(obj)) {
        show(obj, shown, sizeof(shown));
        err(x, "%s: %s is not an object", sec, shown);
        return;
    }
    cJSON_ArrayForEach(v, obj)
    {
        size_t i;
        for (i = 0; i < NOPTS; i++)
            if (strcmp(opts[i].section, sec) == 0 && strcmp(opts[i].name, v->string) == 0)
                break;
        if (i == NOPTS) {
            err(x, "%s.%s: unknown key", sec, v->string);
            continue;
        }
        if (seen[i]) {
            err(x, "%s.%s: duplicate key", sec, v->string);
            continue;
        }
        seen[i] = true;
        set_opt(&opts[i], v, c, x);
    }
}

/* ---- registry lists and rollup tiers -------------------------------------------------
 * "registry" is not a flat section: {"regions": {"north": ["a1", "a2"], ...},
 * "dwelling_types": ["flat", "house", ...]}. */

static bool reg_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n >= CFG_REG_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-'))
            return false;
    return true;
}

/* Copies the array of names v (at path) into out (max entries of CFG_REG_NAME_MAX). */
static int reg_names(const cJSON *v, const char *path, char (*out)[CFG_REG_NAME_MAX], int max,
                     struct ctx *x)
{
    const cJSON *e;
    char shown[64];
    int n = 0, i = 0;

    if (!cJSON_IsArray(v)) {
        show(v, shown, sizeof(shown));
        err(x, "%s: %s is not an array of names", path, shown);
        return 0;
    }
    cJSON_ArrayForEach(e, v)
    {
        bool dup = false;
        if (!cJSON_IsString(e) || !reg_name_ok(e->valuestring)) {
            show(e, shown, sizeof(shown));
            err(x, "%s[%d]: %s is not a name (1..31 of [A-Za-z0-9_.-])", path, i, shown);
        } else if (n == max) {
            err(x, "%s: more than %d names", path, max);
            break;
        } else {
            for (int k = 0; k < n; k++)
                dup = dup || strcmp(out[k], e->valuestring) == 0;
            if (dup)
                err(x, "%s[%d]: \"%s\" is listed twice", path, i, e->valuestring);
            else
                snprintf(out[n++], CFG_REG_NAME_MAX, "%s", e->valuestring);
        }
        i++;
    }
    return n;
}

static void parse_registry(const cJSON *obj, struct cfg_registry *r, struct ctx *x)
{
    const cJSON *v, *reg;
    char shown[64], path[96];

    if (!cJSON_IsObject(obj)) {
        show(obj, shown, sizeof(shown));
        err(x, "registry: %s is not an object", shown);
        return;
    }
    cJSON_ArrayForEach(v, obj)
    {
        if (strcmp(v->string, "dwelling_types") == 0) {
            r->ndwellings =
                reg_names(v, "registry.dwelling_types", r->dwellings, CFG_DWELLINGS_MAX, x);
        } else if (strcmp(v->string, "regions") == 0) {
            if (!cJSON_IsObject(v)) {
                show(v, shown, sizeof(shown));
                err(x, "registry.regions: %s is not an object of region: [areas]", shown);
                continue;
            }
            r->nregions = 0;
            cJSON_ArrayForEach(reg, v)
            {
                struct cfg_region *g;
                bool dup = false;
                if (!reg_name_ok(reg->string)) {
                    err(x, "registry.regions: \"%.40s\" is not a name (1..31 of [A-Za-z0-9_.-])",
                        reg->string);
                    continue;
                }
                for (int k = 0; k < r->nregions; k++)
                    dup = dup || strcmp(r->regions[k].name, reg->string) == 0;
                if (dup) {
                    err(x, "registry.regions.%s: duplicate key", reg->string);
                    continue;
                }
                if (r->nregions == CFG_REGIONS_MAX) {
                    err(x, "registry.regions: more than %d regions", CFG_REGIONS_MAX);
                    break;
                }
                g = &r->regions[r->nregions++];
                snprintf(g->name, sizeof(g->name), "%s", reg->string);
                snprintf(path, sizeof(path), "registry.regions.%s", reg->string);
                g->nareas = reg_names(reg, path, g->areas, CFG_AREAS_MAX, x);
            }
        } else {
            err(x, "registry.%s: unknown key", v->string);
        }
    }
}

/* The tiers must nest: a coarser tier is rebuilt from a finer one while the raw
 * readings exist, so it may not be dropped before them. */
static void check_rollup(const struct cfg_rollup *r, struct ctx *x)
{
    if (r->raw_days == 0 && r->m5_days != 0)
        err(x, "rollup.m5_days: %d, but rollup.raw_days keeps raw readings for ever", r->m5_days);
    else if (r->m5_days != 0 && r->m5_days < r->raw_days)
        err(x, "rollup.m5_days: %d is less than rollup.raw_days (%d)", r->m5_days, r->raw_days);
    if (r->hour_days != 0 && (r->m5_days == 0 || r->hour_days < r->m5_days))
        err(x, "rollup.hour_days: %d is less than rollup.m5_days (%d; 0 is for ever)", r->hour_days,
            r->m5_days);
    if (r->day_days != 0 && (r->hour_days == 0 || r->day_days < r->hour_days))
        err(x, "rollup.day_days: %d is less than rollup.hour_days (%d; 0 is for ever)", r->day_days,
            r->hour_days);
}

void cfg_defaults(struct cfg *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < NOPTS; i++) {
        char *base = (char *)c + opts[i].off;
        if (opts[i].type == OPT_INT)
            *(int *)(void *)base = (int)opts[i].def_int;
        else if (opts[i].def_str)
            snprintf(base, opts[i].size, "%s", opts[i].def_str);
    }
}

/* Reads the whole file into a malloc'd buffer; returns 0 or a negative errno. */
static int read_file(const char *path, char **out, size_t *outlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n;
    int rc;

    if (!f)
        return -errno;
    buf = malloc(CFG_FILE_MAX + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto fail;
    }
    n = fread(buf, 1, CFG_FILE_MAX + 1, f);
    if (ferror(f)) {
        rc = -EIO;
        goto fail;
    }
    if (n > CFG_FILE_MAX) {
        rc = -EFBIG;
        goto fail;
    }
    fclose(f);
    *out = buf;
    *outlen = n;
    return 0;
fail:
    free(buf);
    fclose(f);
    return rc;
}

int cfg_load(const char *path, struct cfg *c, cfg_report_fn report, void *arg)
{
    struct ctx x = {.file = path, .report = report, .arg = arg, .nerr = 0};
    bool seen[sizeof(sections) / sizeof(sections[0])] = {false};
    const char *end = NULL;
    cJSON *root = NULL;
    const cJSON *v;
    char *buf = NULL;
    size_t len = 0;
    int rc;

    cfg_defaults(c);
    rc = read_file(path, &buf, &len);
    if (rc < 0) {
        if (rc == -EFBIG)
            err(&x, "larger than %d bytes", CFG_FILE_MAX);
        else
            err(&x, "cannot read: %s", strerror(-rc));
        goto done;
    }
    root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        int line = 1, col = 1;
        for (const char *p = buf; end && p < end && p < buf + len; p++) {
            if (*p == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        err(&x, "line %d, column %d: not valid JSON", line, col);
        rc = -EINVAL;
        goto done;
    }
    while (end && end < buf + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end && end < buf + len)
        err(&x, "characters after the JSON value");
    if (!cJSON_IsObject(root)) {
        err(&x, "not a JSON object");
        goto check;
    }
    cJSON_ArrayForEach(v, root)
    {
        size_t i;
        for (i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
            if (strcmp(sections[i], v->string) == 0)
                break;
        if (i == sizeof(sections) / sizeof(sections[0])) {
            err(&x, "%s: unknown key", v->string);
            continue;
        }
        if (seen[i]) {
            err(&x, "%s: duplicate key", v->string);
            continue;
        }
        seen[i] = true;
        if (strcmp(sections[i], "registry") == 0)
            parse_registry(v, &c->registry, &x);
        else
            parse_section(sections[i], v, c, &x);
    }
    if (c->mqtt.password[0] && !c->mqtt.username[0])
        err(&x, "mqtt.password: set without mqtt.username");
    if (c->auth.lockout_max_s < c->auth.lockout_s)
        err(&x, "auth.lockout_max_s: %d is less than auth.lockout_s (%d)", c->auth.lockout_max_s,
            c->auth.lockout_s);
    check_rollup(&c->rollup, &x);
check:
    rc = x.nerr ? -EINVAL : 0;
done:
    cJSON_Delete(root);
    free(buf);
    return rc;
}
