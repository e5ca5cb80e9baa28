/* scan: see scan.h. */
#include "scan.h"
#include "log.h"
#include "plan.h"
#include "timeutil.h"
#include "wire.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX 256  /* distinct reads per unit: probes and candidates' plans */
#define VOLT_MIN 99.0  /* 110 V - 10 % */
#define VOLT_MAX 253.0 /* 230 V + 10 % */

/* --- arguments ------------------------------------------------------------------------- */

/* Strict decimal in [lo, hi]. */
static int parse_long(const char *s, size_t n, long lo, long hi, long *out)
{
    char buf[24], *end;
    long v;

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
    errno = 0;
    v = strtol(buf, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int standard_baud(long b)
{
    static const long rates[] = {1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++)
        if (rates[i] == b)
            return 1;
    return 0;
}

int scan_parse_bus(const char *spec, struct bus_cfg *b, char *err, size_t errlen)
{
    const char *p;
    long v;

    if (strncmp(spec, "tcp:", 4) == 0) {
        const char *host = spec + 4, *colon;
        size_t hlen;
        b->kind = BUS_TCP;
        snprintf(b->name, sizeof(b->name), "tcp0");
        b->port = 502;
        if (*host == '[') { /* [v6]:port */
            const char *close = strchr(host, ']');
            if (!close) {
                snprintf(err, errlen, "\"%s\": no ']' after the IPv6 address", spec);
                return -EINVAL;
            }
            hlen = (size_t)(close - host - 1);
            host++;
            colon = close[1] == ':' ? close + 1 : NULL;
            if (close[1] && !colon) {
                snprintf(err, errlen, "\"%s\": expected :PORT after ']'", spec);
                return -EINVAL;
            }
        } else {
            colon = strrchr(host, ':');
            hlen = colon ? (size_t)(colon - host) : strlen(host);
        }
        if (hlen == 0 || hlen >= sizeof(b->host)) {
            snprintf(err, errlen, "\"%s\": the host is empty or too long", spec);
            return -EINVAL;
        }
        memcpy(b->host, host, hlen);
        b->host[hlen] = '\0';
        if (colon) {
            if (parse_long(colon + 1, strlen(colon + 1), 1, 65535, &v) < 0) {
                snprintf(err, errlen, "\"%s\": the port is not a number in 1..65535", spec);
                return -EINVAL;
            }
            b->port = (int)v;
        }
        return 0;
    }
    if (strncmp(spec, "rtu:", 4) == 0) {
        /* Fields from the right: the device path may itself contain ':' (by-path names). */
        const char *f[4];
        size_t flen[4];
        int nf = 0, k = 0;
        const char *end = spec + strlen(spec), *devend;

        b->kind = BUS_RTU;
        snprintf(b->name, sizeof(b->name), "rtu0");
        b->baud = 9600;
        b->parity = 'N';
        b->data_bits = 8;
        b->stop_bits = 1;
        for (p = end; p > spec + 4 && nf < 3;) {
            const char *c = p - 1;
            while (c > spec + 4 && *c != ':')
                c--;
            if (*c != ':' || c == spec + 4 - 1)
                break;
            f[nf] = c + 1;
            flen[nf] = (size_t)(p - c - 1);
            nf++;
            p = c;
        }
        /* f[0] is the last field. Take the longest tail that reads as BAUD[:PARITY[:STOP]]. */
        for (k = nf; k > 0; k--) {
            int ok = parse_long(f[k - 1], flen[k - 1], 1, 4000000, &v) == 0;
            if (k >= 2)
                ok = ok && flen[k - 2] == 1 && strchr("NEO", f[k - 2][0]);
            if (k == 3)
                ok = ok && flen[0] == 1 && (f[0][0] == '1' || f[0][0] == '2');
            if (ok)
                break;
        }
        devend = k > 0 ? f[k - 1] - 1 : end;
        if (devend <= spec + 4 || (size_t)(devend - spec - 4) >= sizeof(b->device)) {
            snprintf(err, errlen, "\"%s\": the device is empty or too long", spec);
            return -EINVAL;
        }
        memcpy(b->device, spec + 4, (size_t)(devend - spec - 4));
        b->device[devend - spec - 4] = '\0';
        if (k >= 1) {
            parse_long(f[k - 1], flen[k - 1], 1, 4000000, &v);
            if (!standard_baud(v)) {
                snprintf(err, errlen, "\"%s\": %ld is not a standard rate (1200 .. 230400)", spec,
                         v);
                return -EINVAL;
            }
            b->baud = (int)v;
        }
        if (k >= 2)
            b->parity = f[k - 2][0];
        if (k >= 3)
            b->stop_bits = f[0][0] - '0';
        return 0;
    }
    snprintf(err, errlen, "\"%s\": expected tcp:HOST:PORT or rtu:DEVICE[:BAUD[:PARITY[:STOP]]]",
             spec);
    return -EINVAL;
}

int scan_parse_units(const char *spec, bool units[SCAN_UNIT_MAX + 1], char *err, size_t errlen)
{
    const char *p = spec;
    int n = 0;

    memset(units, 0, (SCAN_UNIT_MAX + 1) * sizeof(bool));
    while (*p) {
        const char *comma = strchr(p, ','), *dash;
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        long lo, hi;

        dash = memchr(p, '-', len);
        if (dash) {
            if (parse_long(p, (size_t)(dash - p), 1, SCAN_UNIT_MAX, &lo) < 0 ||
                parse_long(dash + 1, len - (size_t)(dash - p) - 1, 1, SCAN_UNIT_MAX, &hi) < 0 ||
                hi < lo) {
                snprintf(err, errlen, "\"%.*s\": expected a range FIRST-LAST of 1..247", (int)len,
                         p);
                return -EINVAL;
            }
        } else if (parse_long(p, len, 1, SCAN_UNIT_MAX, &lo) == 0) {
            hi = lo;
        } else {
            snprintf(err, errlen, "\"%.*s\": expected a unit id 1..247 or a range", (int)len, p);
            return -EINVAL;
        }
        for (long u = lo; u <= hi; u++) {
            n += !units[u];
            units[u] = true;
        }
        if (!comma)
            break;
        p = comma + 1;
        if (!*p) {
            snprintf(err, errlen, "\"%s\": ends with ','", spec);
            return -EINVAL;
        }
    }
    if (n == 0) {
        snprintf(err, errlen, "no unit ids");
        return -EINVAL;
    }
    return n;
}

/* --- reading ----------------------------------------------------------------------------- */

struct cached {
    uint8_t fc;
    uint16_t addr, count;
    int err; /* 0 or the Modbus errno */
    uint16_t words[MODBUS_MAX_READ_REGISTERS];
};

struct scanner {
    const struct bus_cfg *bus;
    modbus_t *ctx;
    int connected;
    int verbose;
    int unit;
    int ncache;
    struct cached cache[CACHE_MAX];
    unsigned long requests;
};

static int is_gateway_silence(int e)
{
    /* a Modbus TCP gateway's way of saying "nobody there" */
    return e == EMBXGPATH || e == EMBXGTAR;
}

/* Reads (fc, addr, count) of the current unit, once per unit. Returns the entry. */
static const struct cached *scan_read(struct scanner *s, int fc, int addr, int count)
{
    struct cached *c;
    int rc;

    for (int i = 0; i < s->ncache; i++)
        if (s->cache[i].fc == fc && s->cache[i].addr == addr && s->cache[i].count == count)
            return &s->cache[i];
    c = &s->cache[s->ncache < CACHE_MAX ? s->ncache++ : CACHE_MAX - 1];
    c->fc = (uint8_t)fc;
    c->addr = (uint16_t)addr;
    c->count = (uint16_t)count;
    if (!s->connected) {
        if (modbus_connect(s->ctx) < 0) {
            c->err = errno ? errno : ECONNREFUSED;
            return c;
        }
        s->connected = 1;
    }
    modbus_set_slave(s->ctx, s->unit);
    s->requests++;
    rc = fc == 4 ? modbus_read_input_registers(s->ctx, addr, count, c->words)
                 : modbus_read_registers(s->ctx, addr, count, c->words);
    c->err = rc == count ? 0 : rc < 0 ? errno : EMBBADDATA;
    if (s->verbose)
        fprintf(stderr, "scan: unit %d fc %d addr %d count %d: %s\n", s->unit, fc, addr, count,
                c->err ? modbus_strerror(c->err) : "ok");
    if (c->err && !(c->err >= EMBXILFUN && c->err <= EMBXGTAR)) {
        /* a late reply must not answer the next request */
        if (s->bus->kind == BUS_TCP) {
            modbus_close(s->ctx);
            s->connected = 0;
        } else {
            modbus_flush(s->ctx);
        }
    }
    return c;
}

/* --- identifying ------------------------------------------------------------------------- */

struct cand {
    const struct profile *prof;
    double probe_val[PROFILE_MAX_PROBES];
    int verified; /* its whole plan read without an exception */
    int decoded;  /* registers decoded to a value */
    int volt_score;
};

static int probe_all(struct scanner *s, const struct profile *p, double *vals, int *some)
{
    int all = p->nprobes > 0;

    *some = 0;
    for (int i = 0; i < p->nprobes; i++) {
        const struct prof_probe *pr = &p->probes[i];
        const struct cached *c =
            scan_read(s, pr->reg.fc, pr->reg.addr, reg_words((enum reg_type)pr->reg.type));
        int m = c->err ? 0 : profile_probe_match(pr, c->words, &vals[i]);
        if (m == 1)
            *some = 1;
        else
            all = 0;
    }
    return all;
}

/* Reads the candidate's whole plan and scores it. */
static void verify(struct scanner *s, struct cand *c)
{
    struct read_req plan[PROFILE_MAX_REGS];
    const struct cached *got[PROFILE_MAX_REGS];
    int n = plan_reads(c->prof, plan, PROFILE_MAX_REGS);

    c->verified = n > 0;
    for (int i = 0; i < n; i++) {
        got[i] = scan_read(s, plan[i].fc, plan[i].addr, plan[i].count);
        if (got[i]->err)
            c->verified = 0;
    }
    if (!c->verified)
        return;
    for (int r = 0; r < c->prof->nregs; r++) {
        const struct prof_reg *reg = &c->prof->regs[r];
        const char *name = qty_at(reg->qty)->name;
        double v;
        for (int i = 0; i < n; i++) {
            if (plan[i].fc != reg->fc || reg->addr < plan[i].addr ||
                reg->addr + reg_words((enum reg_type)reg->type) > plan[i].addr + plan[i].count)
                continue;
            if (reg_decode(reg, &got[i]->words[reg->addr - plan[i].addr], &v) == 0) {
                c->decoded++;
                if (strncmp(name, "voltage_", 8) == 0)
                    c->volt_score += v >= VOLT_MIN && v <= VOLT_MAX ? 1 : -1;
            }
            break;
        }
    }
}

static int cand_better(const struct cand *a, const struct cand *b)
{
    if (a->verified != b->verified)
        return a->verified > b->verified;
    if (a->volt_score != b->volt_score)
        return a->volt_score > b->volt_score;
    if (a->decoded != b->decoded)
        return a->decoded > b->decoded;
    return strcmp(a->prof->model, b->prof->model) < 0;
}

static int cand_equal(const struct cand *a, const struct cand *b)
{
    return a->verified == b->verified && a->volt_score == b->volt_score && a->decoded == b->decoded;
}

/* Present: the unit answered something (a reply or an exception of its own). */
static int unit_present(struct scanner *s, const struct profile_set *ps)
{
    int tried[5] = {0};

    /* one read of each function code the probes use, function 4 first */
    for (int fc = 4; fc >= 3; fc--)
        for (int i = 0; i < ps->n && !tried[fc]; i++)
            for (int k = 0; k < ps->items[i].nprobes && !tried[fc]; k++) {
                const struct prof_reg *r = &ps->items[i].probes[k].reg;
                const struct cached *c;
                if (r->fc != fc)
                    continue;
                tried[fc] = 1;
                c = scan_read(s, r->fc, r->addr, reg_words((enum reg_type)r->type));
                if (c->err == 0 ||
                    (c->err >= EMBXILFUN && c->err <= EMBXGTAR && !is_gateway_silence(c->err)) ||
                    c->err == EMBBADCRC || c->err == EMBBADDATA)
                    return 1;
            }
    return 0;
}

static cJSON *probe_values(const struct cand *c)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < c->prof->nprobes; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(round(c->probe_val[i] * 1000) / 1000));
    return a;
}

/* Scans one unit; adds what it found to found[] / unknown[]. Returns 1 when a meter was
 * identified. */
static int scan_unit(struct scanner *s, const struct profile_set *ps, cJSON *found, cJSON *unknown,
                     int text)
{
    struct cand *cands = calloc((size_t)ps->n, sizeof(*cands));
    cJSON *partial = cJSON_CreateArray(), *o, *arr;
    int nc = 0, best = -1, nequal = 0, rc = 0;

    s->ncache = 0;
    if (!cands || !partial)
        goto out;
    if (!unit_present(s, ps))
        goto out;
    for (int i = 0; i < ps->n; i++) {
        int some;
        cands[nc].prof = &ps->items[i];
        if (probe_all(s, &ps->items[i], cands[nc].probe_val, &some))
            nc++;
        else if (some)
            cJSON_AddItemToArray(partial, cJSON_CreateString(ps->items[i].model));
    }
    if (nc == 0) {
        if ((o = cJSON_CreateObject())) {
            cJSON_AddNumberToObject(o, "unit", s->unit);
            cJSON_AddItemToObject(o, "partial", partial);
            partial = NULL;
            cJSON_AddItemToArray(unknown, o);
        }
        if (text)
            printf("unit %d: answers, but no profile's probes all match\n", s->unit);
        goto out;
    }
    for (int i = 0; i < nc; i++) {
        if (nc > 1)
            verify(s, &cands[i]);
        if (best < 0 || cand_better(&cands[i], &cands[best]))
            best = i;
    }
    for (int i = 0; i < nc; i++)
        nequal += i != best && cand_equal(&cands[i], &cands[best]);
    if (!(o = cJSON_CreateObject()))
        goto out;
    cJSON_AddNumberToObject(o, "unit", s->unit);
    cJSON_AddStringToObject(o, "profile", cands[best].prof->model);
    cJSON_AddStringToObject(o, "name", cands[best].prof->name);
    cJSON_AddItemToObject(o, "probes", probe_values(&cands[best]));
    cJSON_AddBoolToObject(o, "ambiguous", nequal > 0);
    arr = cJSON_AddArrayToObject(o, "candidates");
    for (int i = 0; arr && i < nc; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(cands[i].prof->model));
    arr = cJSON_AddArrayToObject(o, "equal");
    for (int i = 0; arr && i < nc; i++)
        if (i != best && cand_equal(&cands[i], &cands[best]))
            cJSON_AddItemToArray(arr, cJSON_CreateString(cands[i].prof->model));
    cJSON_AddItemToArray(found, o);
    if (text) {
        printf("unit %d: %s (%s), probes", s->unit, cands[best].prof->model,
               cands[best].prof->name);
        for (int i = 0; i < cands[best].prof->nprobes; i++)
            printf(" %.2f", cands[best].probe_val[i]);
        if (nequal) {
            printf("; ambiguous: equally likely");
            for (int i = 0, first = 1; i < nc; i++)
                if (i != best && cand_equal(&cands[i], &cands[best])) {
                    printf("%s %s", first ? "" : ",", cands[i].prof->model);
                    first = 0;
                }
        } else if (nc > 1) {
            printf("; also matched the probes of");
            for (int i = 0, first = 1; i < nc; i++)
                if (i != best) {
                    printf("%s %s", first ? "" : ",", cands[i].prof->model);
                    first = 0;
                }
        }
        printf("\n");
        fflush(stdout);
    }
    rc = 1;
out:
    cJSON_Delete(partial);
    free(cands);
    return rc;
}

/* --- the command ------------------------------------------------------------------------- */

static void scan_usage(FILE *f)
{
    fprintf(f,
            "usage: meter-agent scan --bus tcp:HOST[:PORT] | rtu:DEVICE[:BAUD[:PARITY[:STOP]]]\n"
            "                        [--units LIST] [--timeout-ms N] [--profiles DIR]\n"
            "                        [--json] [-v]\n"
            "  --bus SPEC       the bus: Modbus TCP (port 502 by default) or a serial line\n"
            "                   (9600 baud, parity N, 1 stop bit, 8 data bits by default)\n"
            "  --units LIST     unit ids to probe: 1-247 (default), 5, 1,3,10-20\n"
            "  --timeout-ms N   response timeout, 10..60000 (default 300); an absent unit\n"
            "                   costs two timeouts\n"
            "  --profiles DIR   meter profiles (default %s)\n"
            "  --json           one JSON document on stdout instead of text\n"
            "  -v               log every request on stderr\n"
            "Prints one line per meter found and a configuration snippet to paste into\n"
            "agent.json. Do not scan a serial line that a running agent polls.\n",
            profile_default_dir());
}

static cJSON *snippet(const struct bus_cfg *b, const cJSON *found)
{
    cJSON *root = cJSON_CreateObject(), *buses, *bus, *meters;
    const cJSON *it;
    char parity[2] = {b->parity, '\0'};

    if (!root)
        return NULL;
    buses = cJSON_AddArrayToObject(root, "buses");
    if (buses && (bus = cJSON_CreateObject())) {
        cJSON_AddStringToObject(bus, "name", b->name);
        cJSON_AddStringToObject(bus, "type", b->kind == BUS_TCP ? "tcp" : "rtu");
        if (b->kind == BUS_TCP) {
            cJSON_AddStringToObject(bus, "host", b->host);
            cJSON_AddNumberToObject(bus, "port", b->port);
        } else {
            cJSON_AddStringToObject(bus, "device", b->device);
            cJSON_AddNumberToObject(bus, "baud", b->baud);
            cJSON_AddStringToObject(bus, "parity", parity);
            cJSON_AddNumberToObject(bus, "data_bits", b->data_bits);
            cJSON_AddNumberToObject(bus, "stop_bits", b->stop_bits);
        }
        cJSON_AddNumberToObject(bus, "timeout_ms", b->timeout_ms);
        cJSON_AddItemToArray(buses, bus);
    }
    meters = cJSON_AddArrayToObject(root, "meters");
    cJSON_ArrayForEach(it, found)
    {
        const char *model = cJSON_GetObjectItem(it, "profile")->valuestring;
        int unit = cJSON_GetObjectItem(it, "unit")->valueint;
        char id[WIRE_ID_MAX];
        cJSON *m = cJSON_CreateObject();
        if (!m || !meters)
            break;
        snprintf(id, sizeof(id), "%.50s-%d", model, unit);
        cJSON_AddStringToObject(m, "id", id);
        cJSON_AddStringToObject(m, "bus", b->name);
        cJSON_AddNumberToObject(m, "unit", unit);
        cJSON_AddStringToObject(m, "profile", model);
        cJSON_AddNumberToObject(m, "interval_ms", 10000);
        cJSON_AddItemToArray(meters, m);
    }
    return root;
}

int scan_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"bus", required_argument, NULL, 'b'},
        {"units", required_argument, NULL, 'u'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"profiles", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static bool units[SCAN_UNIT_MAX + 1];
    static struct scanner s;
    struct bus_cfg bus;
    struct profile_set ps = {0, NULL};
    const char *bus_spec = NULL, *units_spec = "1-247", *profiles = NULL;
    char err[512];
    cJSON *found = NULL, *unknown = NULL, *doc = NULL;
    int ch, json = 0, verbose = 0, nunits, nfound = 0, rc = 1, probed = 0;
    long timeout = 300;
    int64_t t0;

    memset(&bus, 0, sizeof(bus));
    optind = 1;
    while ((ch = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            bus_spec = optarg;
            break;
        case 'u':
            units_spec = optarg;
            break;
        case 't':
            if (parse_long(optarg, strlen(optarg), 10, 60000, &timeout) < 0) {
                fprintf(stderr,
                        "meter-agent scan: --timeout-ms \"%s\": not a number in "
                        "10..60000\n",
                        optarg);
                return 2;
            }
            break;
        case 'p':
            profiles = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'v':
            verbose++;
            break;
        case 'h':
            scan_usage(stdout);
            return 0;
        default:
            scan_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "meter-agent scan: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!bus_spec) {
        fprintf(stderr, "meter-agent scan: --bus is required\n");
        scan_usage(stderr);
        return 2;
    }
    if (scan_parse_bus(bus_spec, &bus, err, sizeof(err)) < 0) {
        fprintf(stderr, "meter-agent scan: --bus %s\n", err);
        return 2;
    }
    bus.timeout_ms = (int)timeout;
    if ((nunits = scan_parse_units(units_spec, units, err, sizeof(err))) < 0) {
        fprintf(stderr, "meter-agent scan: --units %s\n", err);
        return 2;
    }
    if (profile_set_load_dir(&ps, profiles ? profiles : profile_default_dir(), err, sizeof(err)) <
        0) {
        fprintf(stderr, "meter-agent scan: profiles: %s\n", err);
        return 1;
    }
    s.bus = &bus;
    s.verbose = verbose;
    if (bus.kind == BUS_TCP) {
        char port[8];
        snprintf(port, sizeof(port), "%d", bus.port);
        s.ctx = modbus_new_tcp_pi(bus.host, port);
    } else {
        s.ctx = modbus_new_rtu(bus.device, bus.baud, bus.parity, bus.data_bits, bus.stop_bits);
    }
    if (!s.ctx) {
        fprintf(stderr, "meter-agent scan: %s: %s\n", bus_spec, modbus_strerror(errno));
        goto out;
    }
    modbus_set_response_timeout(s.ctx, (uint32_t)(timeout / 1000),
                                (uint32_t)(timeout % 1000) * 1000);
    if (modbus_connect(s.ctx) < 0) {
        fprintf(stderr, "meter-agent scan: %s: cannot connect: %s\n", bus_spec,
                modbus_strerror(errno));
        goto out;
    }
    s.connected = 1;
    found = cJSON_CreateArray();
    unknown = cJSON_CreateArray();
    if (!found || !unknown) {
        fprintf(stderr, "meter-agent scan: out of memory\n");
        goto out;
    }
    fprintf(stderr, "scan: %s, %d unit%s, timeout %ld ms, %d profiles\n", bus_spec, nunits,
            nunits == 1 ? "" : "s", timeout, ps.n);
    t0 = mono_ms();
    for (int u = 1; u <= SCAN_UNIT_MAX; u++) {
        if (!units[u])
            continue;
        s.unit = u;
        probed++;
        nfound += scan_unit(&s, &ps, found, unknown, !json);
    }
    doc = snippet(&bus, found);
    if (json) {
        cJSON *out = cJSON_CreateObject();
        char *text;
        if (out) {
            cJSON_AddStringToObject(out, "bus", bus_spec);
            cJSON_AddNumberToObject(out, "units_probed", probed);
            cJSON_AddNumberToObject(out, "requests", (double)s.requests);
            cJSON_AddNumberToObject(out, "seconds", (double)(mono_ms() - t0) / 1000.0);
            cJSON_AddItemToObject(out, "meters", found);
            cJSON_AddItemToObject(out, "unknown", unknown);
            cJSON_AddItemToObject(out, "config", doc);
            found = unknown = doc = NULL;
            if ((text = cJSON_Print(out)))
                printf("%s\n", text);
            free(text);
            cJSON_Delete(out);
        }
    } else {
        char *text = doc ? cJSON_Print(doc) : NULL;
        printf("%d meter%s found on %d unit%s probed in %.1f s (%lu requests)\n", nfound,
               nfound == 1 ? "" : "s", probed, probed == 1 ? "" : "s",
               (double)(mono_ms() - t0) / 1000.0, s.requests);
        if (nfound && text)
            printf("configuration snippet (agent.json \"buses\" and \"meters\"):\n%s\n", text);
        free(text);
    }
    rc = 0;
out:
    if (s.ctx) {
        if (s.connected)
            modbus_close(s.ctx);
        modbus_free(s.ctx);
    }
    cJSON_Delete(found);
    cJSON_Delete(unknown);
    cJSON_Delete(doc);
    profile_set_free(&ps);
    return rc;
}
