/*
 * config: the agent's configuration (one JSON file, docs/configuration.md).
 *
 * cfg_load() validates the whole file and reports every error it finds, each naming the
 * key path and the reason ("agent.json: buses[1].baud: 9601 is not a standard rate"),
 * through the caller's report function; nothing is half-applied. Profiles named by meters
 * are resolved against the loaded profile set.
 */
#ifndef MLK_AGENT_CONFIG_H
#define MLK_AGENT_CONFIG_H

#include "profile.h"
#include "queue.h"
#include "wire.h"

#include <stdbool.h>

#define CFG_MAX_BUSES 32
#define CFG_MAX_METERS 256
#define CFG_STR_MAX 256

enum bus_kind { BUS_TCP, BUS_RTU };

struct bus_cfg {
    char name[WIRE_ID_MAX];
    enum bus_kind kind;
    /* tcp */
    char host[CFG_STR_MAX];
    int port;
    /* rtu */
    char device[CFG_STR_MAX];
    int baud;
    char parity; /* 'N', 'E' or 'O' */
    int data_bits;
    int stop_bits;
    /* both */
    int timeout_ms;
    int retries;
    int frame_delay_ms; /* pause between transactions on this bus */
};

struct meter_cfg {
    char id[WIRE_ID_MAX];
    int bus; /* index into buses */
    int unit;
    const struct profile *profile; /* points into cfg.profiles */
    int interval_ms;
    double ct; /* current transformer ratio (1: direct), for profiles with "multiply" */
    double pt; /* voltage transformer ratio (1: direct) */
};

struct agent_cfg {
    char gateway_id[WIRE_ID_MAX]; /* empty: from the board's identity */
    char board[CFG_STR_MAX];      /* board name ("sim") or board file path */
    char mqtt_host[CFG_STR_MAX];
    int mqtt_port;
    char mqtt_prefix[WIRE_ID_MAX];
    char mqtt_username[CFG_STR_MAX];
    char mqtt_password[CFG_STR_MAX]; /* never logged */
    int mqtt_keepalive;
    int mqtt_reconnect_max_s; /* reconnect backoff doubles from 1 s up to this */
    char queue_path[CFG_STR_MAX];
    struct queue_opts queue;
    int batch_max;   /* readings per published batch */
    int batch_bytes; /* payload bytes per published batch (at least one reading) */
    int inflight_max;
    int window;             /* readings published and not yet confirmed by the cloud, at most */
    int ack_timeout_ms;     /* resend what the cloud has not confirmed after this */
    int health_interval_ms; /* 0: no health messages */
    char profiles_dir[CFG_STR_MAX];
    bool ha_enabled;             /* Home Assistant MQTT discovery */
    char ha_prefix[WIRE_ID_MAX]; /* its discovery prefix, "homeassistant" */
    int nbuses;
    struct bus_cfg buses[CFG_MAX_BUSES];
    int nmeters;
    struct meter_cfg meters[CFG_MAX_METERS];
    struct profile_set profiles;
};

/* Called once per error found; msg is the full message. */
typedef void (*cfg_report_fn)(void *arg, const char *msg);

/* Loads and validates path into *cfg. Returns the number of errors (0 = valid). */
int cfg_load(const char *path, struct agent_cfg *cfg, cfg_report_fn report, void *arg);
/* Same for JSON text; origin names it in messages. */
int cfg_parse(const char *json, size_t len, const char *origin, struct agent_cfg *cfg,
              cfg_report_fn report, void *arg);
void cfg_free(struct agent_cfg *cfg);

/* The configuration as a JSON document that cfg_parse() accepts and that gives the same
 * configuration: every key with its effective value (defaults filled in). With
 * hide_password the MQTT password is written as CFG_HIDDEN_PASSWORD. Returns a cJSON object
 * the caller frees with cJSON_Delete(), or NULL when out of memory. */
#define CFG_HIDDEN_PASSWORD "***"
struct cJSON;
struct cJSON *cfg_to_json(const struct agent_cfg *cfg, bool hide_password);

/* True when a and b connect to the broker the same way (host, port, account, keepalive,
 * reconnect backoff, prefix and gateway id): a reload between them keeps the connection. */
bool cfg_mqtt_same(const struct agent_cfg *a, const struct agent_cfg *b);

/* Index of the bus called name, or -1. */
int cfg_bus_find(const struct agent_cfg *cfg, const char *name);
/* Index of the meter called id, or -1. */
int cfg_meter_find(const struct agent_cfg *cfg, const char *id);

#endif
