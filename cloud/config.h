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
};

struct cfg_store {
    char path[CFG_PATH_MAX];
};

struct cfg_ingest {
    int gap_grace_ms; /* a missing seq range open this long is a data gap event */
};

struct cfg {
    struct cfg_mqtt mqtt;
    struct cfg_http http;
    struct cfg_store store;
    struct cfg_ingest ingest;
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
