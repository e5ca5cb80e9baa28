/*
 * fuzz_config: the agent's configuration file (cfg_parse), arbitrary bytes.
 *
 * Profiles come from MLK_PROFILES (agent/profiles; ctest and run.sh set it) unless the
 * input names a profiles_dir, which the fuzzer may do: cfg_parse then reads *.json files
 * from that folder, which is what the agent does too.
 *
 * Checks: the count returned equals the messages reported, each message names the origin;
 * a configuration with no errors is complete: every meter has a bus and a profile of this
 * configuration, ids are valid and unique, and numbers are in their documented ranges.
 */
#include "fuzz.h"

#include "config.h"
#include "wire.h"

#include <string.h>

#define ORIGIN "fuzz.json"

static void report(void *arg, const char *msg)
{
    int *n = arg;

    FUZZ_CHECK(strncmp(msg, ORIGIN ": ", strlen(ORIGIN) + 2) == 0,
               "message does not name the origin: \"%s\"", msg);
    (*n)++;
}

static void check_valid(const struct agent_cfg *c)
{
    /* empty: the agent takes the board's identity (config.h) */
    FUZZ_CHECK(!c->gateway_id[0] || wire_id_valid(c->gateway_id), "gateway.id \"%s\"",
               c->gateway_id);
    FUZZ_CHECK(wire_id_valid(c->mqtt_prefix), "mqtt.prefix \"%s\"", c->mqtt_prefix);
    FUZZ_CHECK(c->mqtt_port >= 1 && c->mqtt_port <= 65535, "mqtt.port %d", c->mqtt_port);
    FUZZ_CHECK(c->batch_max >= 1 && c->batch_max <= WIRE_MAX_READINGS, "batch_max %d",
               c->batch_max);
    FUZZ_CHECK(c->profiles.n > 0, "no profiles loaded");
    FUZZ_CHECK(c->nbuses >= 1 && c->nbuses <= CFG_MAX_BUSES, "nbuses %d", c->nbuses);
    FUZZ_CHECK(c->nmeters >= 1 && c->nmeters <= CFG_MAX_METERS, "nmeters %d", c->nmeters);
    for (int i = 0; i < c->nbuses; i++) {
        const struct bus_cfg *b = &c->buses[i];
        FUZZ_CHECK(wire_id_valid(b->name), "buses[%d].name \"%s\"", i, b->name);
        FUZZ_CHECK(b->kind == BUS_TCP || b->kind == BUS_RTU, "buses[%d].kind %d", i, b->kind);
        if (b->kind == BUS_TCP)
            FUZZ_CHECK(b->port >= 1 && b->port <= 65535, "buses[%d].port %d", i, b->port);
        else
            FUZZ_CHECK(b->parity == 'N' || b->parity == 'E' || b->parity == 'O',
                       "buses[%d].parity 0x%02x", i, (unsigned char)b->parity);
        for (int j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(c->buses[j].name, b->name) != 0, "buses[%d] and [%d]: \"%s\"", j, i,
                       b->name);
    }
    for (int i = 0; i < c->nmeters; i++) {
        const struct meter_cfg *m = &c->meters[i];
        FUZZ_CHECK(wire_id_valid(m->id), "meters[%d].id \"%s\"", i, m->id);
        FUZZ_CHECK(m->bus >= 0 && m->bus < c->nbuses, "meters[%d].bus %d of %d", i, m->bus,
                   c->nbuses);
        FUZZ_CHECK(m->unit >= 1 && m->unit <= 247, "meters[%d].unit %d", i, m->unit);
        FUZZ_CHECK(m->interval_ms >= 100 && m->interval_ms <= 86400000, "meters[%d].interval_ms %d",
                   i, m->interval_ms);
        FUZZ_CHECK(m->profile && m->profile >= c->profiles.items &&
                       m->profile < c->profiles.items + c->profiles.n,
                   "meters[%d].profile does not point into the loaded profiles", i);
        for (int j = 0; j < i; j++) {
            FUZZ_CHECK(strcmp(c->meters[j].id, m->id) != 0, "meters[%d] and [%d]: \"%s\"", j, i,
                       m->id);
            FUZZ_CHECK(c->meters[j].bus != m->bus || c->meters[j].unit != m->unit,
                       "meters[%d] and [%d]: bus %d unit %d", j, i, m->bus, m->unit);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct agent_cfg cfg; /* tens of KiB: not on the stack */
    int reported = 0, nerr;

    nerr = cfg_parse((const char *)data, size, ORIGIN, &cfg, report, &reported);
    FUZZ_CHECK(nerr == reported, "returned %d errors, reported %d", nerr, reported);
    if (nerr == 0)
        check_valid(&cfg);
    cfg_free(&cfg);
    return 0;
}
