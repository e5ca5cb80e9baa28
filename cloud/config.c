/*
 * config: see config.h. The option table below is the one list of meter-cloud's settings;
 * meter-cloud.example.json shows the same keys with their defaults.
 */
#include "config.h"

#include "quantities.h"
#include "wire.h"

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
    {"alerts", "interval_s", OPT_INT, INT_FIELD(alerts, interval_s), 1, 3600, NULL, false, NULL, 30,
     "a time in s (1..3600)"},
    {"alerts", "repeat_s", OPT_INT, INT_FIELD(alerts, repeat_s), 0, 604800, NULL, false, NULL, 3600,
     "a time in s (0..604800, 7 days; 0: no reminders)"},
    {"alerts", "retry_max", OPT_INT, INT_FIELD(alerts, retry_max), 0, 20, NULL, false, NULL, 5,
     "a count (0..20)"},
    {"alerts", "retry_base_ms", OPT_INT, INT_FIELD(alerts, retry_base_ms), 100, 600000, NULL, false,
     NULL, 2000, "a time in ms (100..600000)"},
    {"alerts", "retry_max_ms", OPT_INT, INT_FIELD(alerts, retry_max_ms), 100, 3600000, NULL, false,
     NULL, 300000, "a time in ms (100..3600000)"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static const char *const sections[] = {"mqtt", "http",   "store",    "backup", "ingest",
                                       "auth", "rollup", "registry", "alerts"};

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
        if (strcmp(sec, "alerts") == 0 &&
            (strcmp(v->string, "channels") == 0 || strcmp(v->string, "rules") == 0))
            continue; /* parse_alerts() */
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

/* ---- alerts: channels and rules ------------------------------------------------------
 * "alerts": {"interval_s": ..., "channels": {"NAME": {"type": "webhook"|"email", ...}},
 * "rules": [{"name": ..., "kind": ..., ...}]}. Each kind accepts only its own keys. */

static const char *const kind_names[CFG_ALERT_KIND_COUNT] = {
    "meter_offline", "gateway_offline", "data_gap", "threshold", "daily_usage", "balance_days",
};

const char *cfg_alert_kind_name(enum cfg_alert_kind k)
{
    return (unsigned)k < CFG_ALERT_KIND_COUNT ? kind_names[k] : "?";
}

int cfg_alert_kind_meter(enum cfg_alert_kind k)
{
    return k != CFG_ALERT_GATEWAY_OFFLINE && k != CFG_ALERT_DATA_GAP;
}

static bool check_mail(const char *s)
{
    const char *at = strchr(s, '@');

    if (!at || at == s || !at[1] || strchr(at + 1, '@'))
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e || strchr("<>,;\"()[]\\", *s))
            return false;
    return true;
}

static bool check_url(const char *s, const char *const *schemes)
{
    for (; *schemes; schemes++) {
        size_t n = strlen(*schemes);
        if (strncmp(s, *schemes, n) == 0 && s[n] && s[n] != '/')
            return check_printable(s);
    }
    return false;
}

/* A string member of obj at path: 0 and copied into out (size len), or an error counted.
 * check may be NULL; secret values are never shown. */
static int get_str(const cJSON *v, const char *path, char *out, size_t len,
                   bool (*check)(const char *), bool secret, const char *what, struct ctx *x)
{
    char shown[64];

    if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= len ||
        (check && !check(v->valuestring))) {
        if (secret)
            snprintf(shown, sizeof(shown), "the value");
        else
            show(v, shown, sizeof(shown));
        err(x, "%s: %s is not %s", path, shown, what);
        return -1;
    }
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

static int get_int(const cJSON *v, const char *path, long min, long max, int *out, const char *what,
                   struct ctx *x)
{
    char shown[64];
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;

    if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d) || d < (double)min || d > (double)max) {
        show(v, shown, sizeof(shown));
        err(x, "%s: %s is not %s", path, shown, what);
        return -1;
    }
    *out = (int)d;
    return 0;
}

static int get_num(const cJSON *v, const char *path, double min, double max, double *out,
                   const char *what, struct ctx *x)
{
    char shown[64];

    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < min ||
        v->valuedouble > max) {
        show(v, shown, sizeof(shown));
        err(x, "%s: %s is not %s", path, shown, what);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

static void parse_channel(const cJSON *obj, const char *path, struct cfg_alert_channel *ch,
                          struct ctx *x)
{
    static const char *const web_schemes[] = {"http://", "https://", NULL};
    static const char *const mail_schemes[] = {"smtp://", "smtps://", NULL};
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type"), *v;
    char p[160], shown[64];
    bool mail, has_url = false, has_from = false, has_to = false;

    ch->timeout_ms = 10000;
    if (!cJSON_IsString(type) ||
        (strcmp(type->valuestring, "webhook") != 0 && strcmp(type->valuestring, "email") != 0)) {
        if (cJSON_IsString(type) && strcmp(type->valuestring, "mqtt") == 0)
            err(x, "%s.type: \"mqtt\" channels are not supported yet (webhook, email)", path);
        else if (!type)
            err(x, "%s.type: missing (webhook or email)", path);
        else {
            show(type, shown, sizeof(shown));
            err(x, "%s.type: %s is not webhook or email", path, shown);
        }
        return;
    }
    mail = strcmp(type->valuestring, "email") == 0;
    ch->type = mail ? CFG_CHANNEL_EMAIL : CFG_CHANNEL_WEBHOOK;
    cJSON_ArrayForEach(v, obj)
    {
        const char *k = v->string;
        snprintf(p, sizeof(p), "%s.%s", path, k);
        for (const cJSON *w = obj->child; w != v; w = w->next)
            if (strcmp(w->string, k) == 0) {
                err(x, "%s: duplicate key", p);
                goto next;
            }
        if (strcmp(k, "type") == 0) {
            /* done above */
        } else if (strcmp(k, "url") == 0) {
            has_url = true;
            if (mail)
                get_str(v, p, ch->url, sizeof(ch->url), NULL, false,
                        "an SMTP URL (smtp://host[:port] or smtps://host[:port])", x);
            else
                get_str(v, p, ch->url, sizeof(ch->url), NULL, false,
                        "an http:// or https:// URL (at most 511 characters)", x);
            if (ch->url[0] && !check_url(ch->url, mail ? mail_schemes : web_schemes)) {
                show(v, shown, sizeof(shown));
                err(x, "%s: %s is not %s", p, shown,
                    mail ? "an SMTP URL (smtp://host[:port] or smtps://host[:port])"
                         : "an http:// or https:// URL (at most 511 characters)");
                ch->url[0] = '\0';
            }
        } else if (strcmp(k, "timeout_ms") == 0) {
            get_int(v, p, 100, 120000, &ch->timeout_ms, "a time in ms (100..120000)", x);
        } else if (!mail && strcmp(k, "secret") == 0) {
            if (!cJSON_IsNull(v))
                get_str(v, p, ch->secret, sizeof(ch->secret), check_printable, true,
                        "null or a secret (1..255 printable ASCII characters)", x);
        } else if (mail && strcmp(k, "from") == 0) {
            has_from = true;
            get_str(v, p, ch->from, sizeof(ch->from), check_mail, false, "an e-mail address", x);
        } else if (mail && strcmp(k, "to") == 0) {
            const cJSON *e;
            int i = 0;
            has_to = true;
            if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0) {
                show(v, shown, sizeof(shown));
                err(x, "%s: %s is not an array of 1..%d e-mail addresses", p, shown,
                    CFG_ALERT_RCPT_MAX);
                goto next;
            }
            cJSON_ArrayForEach(e, v)
            {
                char pe[180];
                snprintf(pe, sizeof(pe), "%s[%d]", p, i++);
                if (ch->nto == CFG_ALERT_RCPT_MAX) {
                    err(x, "%s: more than %d addresses", p, CFG_ALERT_RCPT_MAX);
                    break;
                }
                if (get_str(e, pe, ch->to[ch->nto], sizeof(ch->to[0]), check_mail, false,
                            "an e-mail address", x) == 0)
                    ch->nto++;
            }
        } else if (mail && strcmp(k, "username") == 0) {
            if (!cJSON_IsNull(v))
                get_str(v, p, ch->username, sizeof(ch->username), check_no_ctl, false,
                        "null or a user name (1..255 characters)", x);
        } else if (mail && strcmp(k, "password") == 0) {
            if (!cJSON_IsNull(v))
                get_str(v, p, ch->password, sizeof(ch->password), check_no_ctl, true,
                        "null or a password (1..255 characters)", x);
        } else if (mail && strcmp(k, "starttls") == 0) {
            if (!cJSON_IsBool(v)) {
                show(v, shown, sizeof(shown));
                err(x, "%s: %s is not true or false", p, shown);
            } else {
                ch->starttls = cJSON_IsTrue(v);
            }
        } else {
            err(x, "%s: unknown key (for a %s channel)", p, mail ? "email" : "webhook");
        }
    next:;
    }
    if (!has_url)
        err(x, "%s.url: missing", path);
    if (mail && !has_from)
        err(x, "%s.from: missing", path);
    if (mail && !has_to)
        err(x, "%s.to: missing", path);
    if (mail && ch->password[0] && !ch->username[0])
        err(x, "%s.password: set without %s.username", path, path);
    if (mail && ch->starttls && strncmp(ch->url, "smtps://", 8) == 0)
        err(x, "%s.starttls: true, but %s.url is smtps:// (TLS from the start)", path, path);
}

static bool check_id(const char *s)
{
    return wire_id_valid(s);
}

/* The keys each kind accepts besides name, kind and channels. */
static bool rule_key_ok(enum cfg_alert_kind k, const char *key)
{
    switch (k) {
    case CFG_ALERT_METER_OFFLINE:
        return !strcmp(key, "meter") || !strcmp(key, "gateway") || !strcmp(key, "after_s");
    case CFG_ALERT_GATEWAY_OFFLINE:
        return !strcmp(key, "gateway") || !strcmp(key, "after_s");
    case CFG_ALERT_DATA_GAP:
        return !strcmp(key, "gateway");
    case CFG_ALERT_THRESHOLD:
        return !strcmp(key, "meter") || !strcmp(key, "gateway") || !strcmp(key, "quantity") ||
               !strcmp(key, "above") || !strcmp(key, "below") || !strcmp(key, "for_s");
    case CFG_ALERT_DAILY_USAGE:
        return !strcmp(key, "meter") || !strcmp(key, "gateway") || !strcmp(key, "limit_kwh");
    case CFG_ALERT_BALANCE_DAYS:
        return !strcmp(key, "meter") || !strcmp(key, "gateway") || !strcmp(key, "days");
    default:
        return false;
    }
}

static void parse_rule(const cJSON *obj, const char *path, struct cfg_alerts *a,
                       struct cfg_alert_rule *r, struct ctx *x)
{
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(obj, "kind"), *v;
    char p[160], shown[64];
    bool has_name = false, has_limit = false, has_qty = false;
    int k;

    r->after_s = 900;
    r->quantity = -1;
    if (!cJSON_IsString(kind)) {
        if (!kind)
            err(x, "%s.kind: missing", path);
        else {
            show(kind, shown, sizeof(shown));
            err(x, "%s.kind: %s is not a rule kind", path, shown);
        }
        return;
    }
    for (k = 0; k < CFG_ALERT_KIND_COUNT; k++)
        if (strcmp(kind->valuestring, kind_names[k]) == 0)
            break;
    if (k == CFG_ALERT_KIND_COUNT) {
        show(kind, shown, sizeof(shown));
        err(x,
            "%s.kind: %s is not meter_offline, gateway_offline, data_gap, threshold, "
            "daily_usage or balance_days",
            path, shown);
        return;
    }
    r->kind = (enum cfg_alert_kind)k;
    cJSON_ArrayForEach(v, obj)
    {
        const char *key = v->string;
        snprintf(p, sizeof(p), "%s.%s", path, key);
        for (const cJSON *w = obj->child; w != v; w = w->next)
            if (strcmp(w->string, key) == 0) {
                err(x, "%s: duplicate key", p);
                goto next;
            }
        if (strcmp(key, "kind") == 0) {
            /* done above */
        } else if (strcmp(key, "name") == 0) {
            has_name = true;
            if (get_str(v, p, r->name, sizeof(r->name), reg_name_ok, false,
                        "a name (1..31 of [A-Za-z0-9_.-])", x) == 0)
                for (int i = 0; a->rules + i < r; i++)
                    if (strcmp(a->rules[i].name, r->name) == 0)
                        err(x, "%s: \"%s\" is the name of rules[%d] too", p, r->name, i);
        } else if (strcmp(key, "channels") == 0) {
            const cJSON *e;
            int i = 0;
            if (!cJSON_IsArray(v)) {
                show(v, shown, sizeof(shown));
                err(x, "%s: %s is not an array of channel names", p, shown);
                goto next;
            }
            cJSON_ArrayForEach(e, v)
            {
                int c;
                if (!cJSON_IsString(e)) {
                    show(e, shown, sizeof(shown));
                    err(x, "%s[%d]: %s is not a channel name", p, i++, shown);
                    continue;
                }
                for (c = 0; c < a->nchannels; c++)
                    if (strcmp(a->channels[c].name, e->valuestring) == 0)
                        break;
                if (c == a->nchannels)
                    err(x, "%s[%d]: \"%.40s\" is not a channel of alerts.channels", p, i,
                        e->valuestring);
                else if (r->nchannels < CFG_ALERT_CHANNELS_MAX) {
                    bool dup = false;
                    for (int j = 0; j < r->nchannels; j++)
                        dup = dup || r->channels[j] == c;
                    if (dup)
                        err(x, "%s[%d]: \"%s\" is listed twice", p, i, e->valuestring);
                    else
                        r->channels[r->nchannels++] = c;
                }
                i++;
            }
        } else if (!rule_key_ok(r->kind, key)) {
            err(x, "%s: unknown key (for a %s rule)", p, kind_names[r->kind]);
        } else if (strcmp(key, "meter") == 0) {
            get_str(v, p, r->meter, sizeof(r->meter), check_id, false,
                    "a meter id (1..63 of [A-Za-z0-9_.-])", x);
        } else if (strcmp(key, "gateway") == 0) {
            get_str(v, p, r->gateway, sizeof(r->gateway), check_id, false,
                    "a gateway id (1..63 of [A-Za-z0-9_.-])", x);
        } else if (strcmp(key, "after_s") == 0) {
            get_int(v, p, 1, 604800, &r->after_s, "a time in s (1..604800, 7 days)", x);
        } else if (strcmp(key, "for_s") == 0) {
            get_int(v, p, 0, 604800, &r->for_s, "a time in s (0..604800, 7 days)", x);
        } else if (strcmp(key, "quantity") == 0) {
            has_qty = true;
            if (!cJSON_IsString(v) || qty_index(v->valuestring) < 0) {
                show(v, shown, sizeof(shown));
                err(x, "%s: %s is not a quantity (power, voltage_l1, energy_import, ...)", p,
                    shown);
            } else {
                r->quantity = qty_index(v->valuestring);
            }
        } else if (strcmp(key, "above") == 0 || strcmp(key, "below") == 0) {
            if (has_limit) {
                err(x, "%s: a threshold rule has either above or below, not both", p);
                goto next;
            }
            has_limit = true;
            r->below = strcmp(key, "below") == 0;
            get_num(v, p, -1e15, 1e15, &r->limit, "a number", x);
        } else if (strcmp(key, "limit_kwh") == 0) {
            has_limit = true;
            get_num(v, p, 0, 1e12, &r->limit, "an energy in kWh (0..1e12)", x);
        } else if (strcmp(key, "days") == 0) {
            has_limit = true;
            get_num(v, p, 0.1, 3650, &r->limit, "a number of days (0.1..3650)", x);
        }
    next:;
    }
    if (!has_name)
        err(x, "%s.name: missing", path);
    if (r->kind == CFG_ALERT_THRESHOLD && !has_qty)
        err(x, "%s.quantity: missing", path);
    if (r->kind == CFG_ALERT_THRESHOLD && !has_limit)
        err(x, "%s: a threshold rule needs above or below", path);
    if (r->kind == CFG_ALERT_DAILY_USAGE && !has_limit)
        err(x, "%s.limit_kwh: missing", path);
    if (r->kind == CFG_ALERT_BALANCE_DAYS && !has_limit)
        err(x, "%s.days: missing", path);
}

static void parse_alerts(const cJSON *obj, struct cfg *c, struct ctx *x)
{
    struct cfg_alerts *a = &c->alerts;
    const cJSON *channels = NULL, *rules = NULL, *v;
    char shown[64], path[128];
    int i;

    parse_section("alerts", obj, c, x); /* the plain keys; complains if obj is no object */
    if (!cJSON_IsObject(obj))
        return;
    cJSON_ArrayForEach(v, obj)
    {
        const cJSON **slot = strcmp(v->string, "channels") == 0 ? &channels
                             : strcmp(v->string, "rules") == 0  ? &rules
                                                                : NULL;
        if (!slot)
            continue;
        if (*slot)
            err(x, "alerts.%s: duplicate key", v->string);
        else
            *slot = v;
    }
    if (channels && !cJSON_IsObject(channels)) {
        show(channels, shown, sizeof(shown));
        err(x, "alerts.channels: %s is not an object of name: {channel}", shown);
    } else if (channels) {
        cJSON_ArrayForEach(v, channels)
        {
            struct cfg_alert_channel *ch;
            bool dup = false;
            if (!reg_name_ok(v->string)) {
                err(x, "alerts.channels: \"%.40s\" is not a name (1..31 of [A-Za-z0-9_.-])",
                    v->string);
                continue;
            }
            for (i = 0; i < a->nchannels; i++)
                dup = dup || strcmp(a->channels[i].name, v->string) == 0;
            if (dup) {
                err(x, "alerts.channels.%s: duplicate key", v->string);
                continue;
            }
            if (a->nchannels == CFG_ALERT_CHANNELS_MAX) {
                err(x, "alerts.channels: more than %d channels", CFG_ALERT_CHANNELS_MAX);
                break;
            }
            snprintf(path, sizeof(path), "alerts.channels.%s", v->string);
            if (!cJSON_IsObject(v)) {
                show(v, shown, sizeof(shown));
                err(x, "%s: %s is not an object", path, shown);
                continue;
            }
            ch = &a->channels[a->nchannels++];
            snprintf(ch->name, sizeof(ch->name), "%s", v->string);
            parse_channel(v, path, ch, x);
        }
    }
    if (rules && !cJSON_IsArray(rules)) {
        show(rules, shown, sizeof(shown));
        err(x, "alerts.rules: %s is not an array of rules", shown);
    } else if (rules) {
        i = 0;
        cJSON_ArrayForEach(v, rules)
        {
            snprintf(path, sizeof(path), "alerts.rules[%d]", i++);
            if (a->nrules == CFG_ALERT_RULES_MAX) {
                err(x, "alerts.rules: more than %d rules", CFG_ALERT_RULES_MAX);
                break;
            }
            if (!cJSON_IsObject(v)) {
                show(v, shown, sizeof(shown));
                err(x, "%s: %s is not an object", path, shown);
                continue;
            }
            parse_rule(v, path, a, &a->rules[a->nrules], x);
            a->nrules++;
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
        else if (strcmp(sections[i], "alerts") == 0)
            parse_alerts(v, c, &x);
        else
            parse_section(sections[i], v, c, &x);
    }
    if (c->mqtt.password[0] && !c->mqtt.username[0])
        err(&x, "mqtt.password: set without mqtt.username");
    if (c->auth.lockout_max_s < c->auth.lockout_s)
        err(&x, "auth.lockout_max_s: %d is less than auth.lockout_s (%d)", c->auth.lockout_max_s,
            c->auth.lockout_s);
    check_rollup(&c->rollup, &x);
    if (c->alerts.retry_max_ms < c->alerts.retry_base_ms)
        err(&x, "alerts.retry_max_ms: %d is less than alerts.retry_base_ms (%d)",
            c->alerts.retry_max_ms, c->alerts.retry_base_ms);
check:
    rc = x.nerr ? -EINVAL : 0;
done:
    cJSON_Delete(root);
    free(buf);
    return rc;
}
