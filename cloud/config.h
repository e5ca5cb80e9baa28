/*
 * config: meter-cloud's configuration file (JSON), parsed and validated in full.
 *
 * One table in config.c lists every key with its type, bounds, default and meaning; it
 * drives parsing, validation and defaults. Every key is optional (the defaults are those
 * of meter-cloud.example.json); unknown and duplicate keys are errors. This module only
 * reads the file: it does not open sockets or files named in it.
 *
 * Errors: cfg_load() returns 0 or a negative errno and reports each problem through the
 * caller's callback as "FILE: key.path: reason". It never logs by itself.
 */
#ifndef MLK_CLOUD_CONFIG_H
#define MLK_CLOUD_CONFIG_H

#include <limits.h>
#include <stddef.h>

#define CFG_HOST_MAX 256
#define CFG_PREFIX_MAX 128
#define CFG_CLIENT_ID_MAX 65
#define CFG_CRED_MAX 256
#define CFG_BIND_MAX 16 /* INET_ADDRSTRLEN */
#define CFG_PATH_MAX PATH_MAX

/* An empty string means "not set" (null in the file) for the optional strings. */
struct cfg_mqtt {
    char host[CFG_HOST_MAX];
    int port;
    char prefix[CFG_PREFIX_MAX];
    char client_id[CFG_CLIENT_ID_MAX];
    char username[CFG_CRED_MAX];
    char password[CFG_CRED_MAX]; /* secret: never log it */
};

struct cfg_http {
    char bind[CFG_BIND_MAX]; /* a dotted IPv4 address */
    int port;                /* 0: an ephemeral port */
    char port_file[CFG_PATH_MAX];
    int command_timeout_ms;      /* how long POST .../commands waits for the gateway's reply */
    char web_root[CFG_PATH_MAX]; /* the dashboard's files (web.h); "": the built-in default */
};

struct cfg_store {
    char path[CFG_PATH_MAX];
};

/* Online backups of the store (backup.h). dir "": "<folder of store.path>/backups". */
struct cfg_backup {
    char dir[CFG_PATH_MAX];
    int interval_s; /* between periodic backups */
    int keep;       /* the newest this many are kept */
};

struct cfg_ingest {
    int gap_grace_ms; /* a missing seq range open this long is a data gap event */
};

/* Users, sessions and login throttling (auth.h). The token secret is not configured: it is
 * generated at first start and kept in the store. */
struct cfg_auth {
    int pbkdf2_iterations;  /* for new password hashes; stored hashes keep their own count */
    int session_ttl_s;      /* a session token expires this long after login */
    int login_max_failures; /* failed logins (per user name, per client address) before a lockout */
    int lockout_s;          /* the first lockout; it doubles with each further failure */
    int lockout_max_s;      /* ... up to this */
};

/* Rollups, retention tiers and usage rules (rollup.h, usage.h). Days 0: kept for ever. */
struct cfg_rollup {
    int raw_days, m5_days, hour_days, day_days;
    int interval_s;   /* between retention runs */
    int gap_s;        /* consecutive readings further apart than this leave a gap */
    int max_power_kw; /* a counter rising faster than this is a new counter */
    int kpi_cache_ms; /* a meter's KPI answer is reused this long while nothing is written */
};

/* The lists the meter registry validates against (registry.h). Names: 1..31 of
 * [A-Za-z0-9_.-]. */
#define CFG_REG_NAME_MAX 32
#define CFG_REGIONS_MAX 32
#define CFG_AREAS_MAX 64
#define CFG_DWELLINGS_MAX 32
struct cfg_region {
    char name[CFG_REG_NAME_MAX];
    int nareas;
    char areas[CFG_AREAS_MAX][CFG_REG_NAME_MAX];
};
struct cfg_registry {
    int nregions;
    struct cfg_region regions[CFG_REGIONS_MAX];
    int ndwellings;
    char dwellings[CFG_DWELLINGS_MAX][CFG_REG_NAME_MAX];
};

/* Alerts (alerts.h): where notifications go (channels) and what raises an alert (rules).
 * Names of channels and rules: 1..31 of [A-Za-z0-9_.-]. */
#define CFG_ALERT_NAME_MAX 32
#define CFG_ALERT_CHANNELS_MAX 8
#define CFG_ALERT_RULES_MAX 64
#define CFG_ALERT_RCPT_MAX 8
#define CFG_URL_MAX 512
#define CFG_MAIL_MAX 256
#define CFG_ID_MAX 64 /* a meter or gateway id (WIRE_ID_MAX) */

enum cfg_channel_type { CFG_CHANNEL_WEBHOOK, CFG_CHANNEL_EMAIL };

struct cfg_alert_channel {
    char name[CFG_ALERT_NAME_MAX];
    enum cfg_channel_type type;
    char url[CFG_URL_MAX]; /* webhook: http(s)://...; email: smtp://host[:port] or smtps:// */
    int timeout_ms;        /* one delivery attempt, connecting included */
    /* webhook */
    char secret[CFG_CRED_MAX]; /* HMAC-SHA256 key of the signature header; "": unsigned.
                                * secret: never log it */
    /* email */
    char from[CFG_MAIL_MAX];
    int nto;
    char to[CFG_ALERT_RCPT_MAX][CFG_MAIL_MAX];
    char username[CFG_CRED_MAX]; /* "": no SMTP AUTH */
    char password[CFG_CRED_MAX]; /* secret: never log it */
    int starttls;                /* smtp://: 1 requires STARTTLS */
};

enum cfg_alert_kind {
    CFG_ALERT_METER_OFFLINE,   /* no good reading of a meter for after_s */
    CFG_ALERT_GATEWAY_OFFLINE, /* a gateway's status is offline, or nothing from it for after_s */
    CFG_ALERT_DATA_GAP,        /* a gateway has data gaps open (missing seqs past the grace) */
    CFG_ALERT_THRESHOLD,       /* a quantity above/below limit for for_s */
    CFG_ALERT_DAILY_USAGE,     /* today's energy_import use above limit (kWh) */
    CFG_ALERT_BALANCE_DAYS,    /* a prepaid meter's balance lasts fewer than limit days */
    CFG_ALERT_KIND_COUNT
};

struct cfg_alert_rule {
    char name[CFG_ALERT_NAME_MAX];
    enum cfg_alert_kind kind;
    char meter[CFG_ID_MAX];   /* meter rules: only this meter; "": every meter */
    char gateway[CFG_ID_MAX]; /* only this gateway (or its meters); "": every one */
    int after_s;              /* the offline rules */
    int quantity;             /* threshold: a quantities.h index */
    int below;                /* threshold: 1 fires below limit, 0 above it */
    double limit;             /* threshold: the value; daily_usage: kWh; balance_days: days */
    int for_s;                /* threshold: how long the value must stay past limit */
    int nchannels;
    int channels[CFG_ALERT_CHANNELS_MAX]; /* indexes into cfg_alerts.channels */
};

struct cfg_alerts {
    int interval_s;    /* between evaluations of the rules */
    int repeat_s;      /* reminder of an unacknowledged firing alert this often; 0: never */
    int retry_max;     /* further attempts of a failed delivery */
    int retry_base_ms; /* delay before the first retry; it doubles with each one */
    int retry_max_ms;  /* ... up to this */
    int nchannels;
    struct cfg_alert_channel channels[CFG_ALERT_CHANNELS_MAX];
    int nrules;
    struct cfg_alert_rule rules[CFG_ALERT_RULES_MAX];
};

/* "meter_offline", "gateway_offline", "data_gap", "threshold", "daily_usage",
 * "balance_days"; "?" for another value. */
const char *cfg_alert_kind_name(enum cfg_alert_kind k);
/* Whether rules of kind k are about meters (else gateways). */
int cfg_alert_kind_meter(enum cfg_alert_kind k);

struct cfg {
    struct cfg_mqtt mqtt;
    struct cfg_http http;
    struct cfg_store store;
    struct cfg_backup backup;
    struct cfg_ingest ingest;
    struct cfg_auth auth;
    struct cfg_rollup rollup;
    struct cfg_registry registry;
    struct cfg_alerts alerts;
};

/* Receives one error message (without a trailing newline). */
typedef void (*cfg_report_fn)(void *arg, const char *msg);

/* Fills *c with the defaults. */
void cfg_defaults(struct cfg *c);

/* Reads and validates the file at path into *c (defaults first, then the file). Reports
 * every error through report(arg, msg) before returning. Returns 0, -EINVAL when the file
 * has errors, or another negative errno when it cannot be read. */
int cfg_load(const char *path, struct cfg *c, cfg_report_fn report, void *arg);

#endif
