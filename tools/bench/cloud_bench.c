/*
 * cloud_bench: loads a meter-cloud store with synthetic readings through the store API
 * (store.h, the same store_put_batch the ingest thread calls, rollups included), for the
 * HTTP benchmark in cloud_bench.sh. Prints the load time and rate.
 *
 *   cloud_bench STORE.db [METERS [DAYS]]      default 10 meters, 365 days
 *
 * Each meter reads once a minute up to now: energy_import (a counter rising with a daily
 * load curve), power, voltage_l1; meter m00 is prepaid (balance, topped up weekly). Meters
 * are registered at site "bench" (Europe/Berlin, 0.30 EUR/kWh) before loading, so daily
 * rollups are built in local time as the data arrives. One batch is one meter-day (1440
 * readings), so a year of one meter is 365 transactions.
 *
 * Not a test: it fails only when the store does.
 */
#include "quantities.h"
#include "store.h"
#include "timeutil.h"
#include "wire.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PER_DAY 1440
#define MIN_MS 60000LL

/* A decimal count, strictly: digits only, at most 9 of them. */
static int parse_count(const char *s, int *out)
{
    char *end;
    long v;

    if (*s < '0' || *s > '9' || strlen(s) > 9)
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    int meters = 10, days = 365;
    const char *path;
    struct store_site site;
    struct reading *r;
    store_t *st;
    char err[256];
    int64_t start, t0, total = 0;
    int e = qty_index("energy_import"), p = qty_index("power"), v = qty_index("voltage_l1");
    int bal = qty_index("balance");
    uint64_t seq = 0;

    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: cloud_bench STORE.db [METERS [DAYS]]\n");
        return 2;
    }
    path = argv[1];
    if (argc > 2 && parse_count(argv[2], &meters) < 0)
        meters = 0;
    if (argc > 3 && parse_count(argv[3], &days) < 0)
        days = 0;
    if (meters < 1 || meters > 100 || days < 1 || days > 3660) {
        fprintf(stderr, "cloud_bench: METERS 1..100, DAYS 1..3660\n");
        return 2;
    }
    if (store_open(path, &st, err, sizeof(err)) < 0) {
        fprintf(stderr, "cloud_bench: %s: %s\n", path, err);
        return 1;
    }
    store_usage_config(st, 900000, 1000, 0); /* roll everything up, however old */
    memset(&site, 0, sizeof(site));
    snprintf(site.id, sizeof(site.id), "bench");
    snprintf(site.tz, sizeof(site.tz), "Europe/Berlin");
    site.has_tariff = true;
    site.price = 0.30;
    snprintf(site.currency, sizeof(site.currency), "EUR");
    if (store_site_put(st, &site, true, now_ms()) < 0 && store_site_get(st, "bench", &site) < 0) {
        fprintf(stderr, "cloud_bench: cannot create the site\n");
        return 1;
    }
    for (int m = 0; m < meters; m++) {
        struct store_reg g;
        memset(&g, 0, sizeof(g));
        snprintf(g.id, sizeof(g.id), "m%02d", m);
        snprintf(g.gateway, sizeof(g.gateway), "gw-bench");
        snprintf(g.site, sizeof(g.site), "bench");
        g.prepaid = m == 0;
        store_reg_put(st, &g, true, now_ms());
    }
    r = calloc(PER_DAY, sizeof(*r));
    if (!r)
        return 1;
    start = (now_ms() / MIN_MS - (int64_t)days * PER_DAY) * MIN_MS;
    t0 = mono_ms();
    for (int m = 0; m < meters; m++) {
        double energy = 1000.0 * m, balance = 100;
        char stream[WIRE_STREAM_MAX];
        snprintf(stream, sizeof(stream), "be0c%012x", m);
        for (int d = 0; d < days; d++) {
            struct store_put_result res;
            for (int i = 0; i < PER_DAY; i++) {
                int64_t ts = start + ((int64_t)d * PER_DAY + i) * MIN_MS + 1234;
                /* a daily curve: 300 W at night, up to 2300 W in the evening */
                double w = 300 + 1000 * (1 + sin(2 * M_PI * (i - 720) / PER_DAY)) + 13 * m;
                memset(&r[i], 0, sizeof(r[i]));
                r[i].seq = ++seq;
                snprintf(r[i].meter, sizeof(r[i].meter), "m%02d", m);
                r[i].ts_ms = ts;
                r[i].ok = true;
                energy += w / 60000.0;
                r[i].values[e] = round(energy * 1000) / 1000;
                r[i].values[p] = round(w * 10) / 10;
                r[i].values[v] = 230 + 5 * sin(i / 60.0);
                r[i].present = 1u << e | 1u << p | 1u << v;
                if (m == 0) {
                    balance -= w / 60000.0 * 0.30;
                    if (i == 0 && d % 7 == 0)
                        balance += 50;
                    r[i].values[bal] = round(balance * 100) / 100;
                    r[i].present |= 1u << bal;
                }
            }
            if (store_put_batch(st, "gw-bench", stream, r, PER_DAY, now_ms(), &res) < 0) {
                fprintf(stderr, "cloud_bench: store_put_batch failed\n");
                return 1;
            }
            total += res.inserted;
        }
        fprintf(stderr, "meter m%02d loaded (%lld readings so far, %.1f s)\n", m, (long long)total,
                (mono_ms() - t0) / 1000.0);
    }
    {
        double s = (mono_ms() - t0) / 1000.0;
        printf("loaded %lld readings (%d meters x %d days of 1-minute readings) in %.1f s: "
               "%.0f readings/s, rollups included\n",
               (long long)total, meters, days, s, total / s);
    }
    free(r);
    store_close(st);
    return 0;
}
