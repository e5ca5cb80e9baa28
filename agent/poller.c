/* poller: see poller.h. */
#include "poller.h"
#include "log.h"
#include "plan.h"
#include "timeutil.h"

#include <errno.h>
#include <modbus.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2020-01-01: a gateway clock before this has not been set. */
#define CLOCK_SANE_MS 1577836800000LL

struct pmeter {
    const struct meter_cfg *m;
    struct read_req plan[PROFILE_MAX_REGS];
    int nplan;
    int req_of[PROFILE_MAX_REGS]; /* register i is read by plan[req_of[i]] */
    int64_t due;                  /* mono_ms */
    /* counters, under poller.mu */
    uint64_t polls, failures, timeouts, crc, exceptions, other;
    int consecutive; /* failed polls in a row */
    int online;
    int64_t rtt_ms;  /* time the last successful poll took */
};

struct poller {
    const struct agent_cfg *cfg;
    const struct bus_cfg *bus;
    queue_t *q;
    poller_notify_fn notify;
    void *arg;
    pthread_t thread;
    atomic_int stop;
    const board_t *board;
    _Atomic int64_t round_ms; /* mono time of the last loop round */
    int64_t round_max_ms;
    pthread_mutex_t mu; /* guards the meters' counters */
    modbus_t *ctx;
    int connected;
    int nmeters;
    struct pmeter *meters;
};

static modbus_t *bus_new(const struct bus_cfg *b)
{
    modbus_t *ctx;
    if (b->kind == BUS_TCP) {
        char port[8];
        snprintf(port, sizeof(port), "%d", b->port);
        ctx = modbus_new_tcp_pi(b->host, port);
    } else {
        ctx = modbus_new_rtu(b->device, b->baud, b->parity, b->data_bits, b->stop_bits);
    }
    if (!ctx)
        return NULL;
    modbus_set_response_timeout(ctx, (uint32_t)(b->timeout_ms / 1000),
                                (uint32_t)(b->timeout_ms % 1000) * 1000);
    modbus_set_error_recovery(ctx, MODBUS_ERROR_RECOVERY_PROTOCOL);
    return ctx;
}

static int bus_connect(poller_t *p)
{
    if (p->connected)
        return 0;
    if (modbus_connect(p->ctx) < 0) {
        log_debug("bus %s: connect: %s", p->bus->name, modbus_strerror(errno));
        return -1;
    }
    if (p->bus->kind == BUS_RTU && p->board) {
        struct board_line line;
        int rc = board_rs485_setup(p->board, p->bus->device, modbus_get_socket(p->ctx), &line);
        if (rc < 0) { /* "kernel" asked for and the line cannot do it */
            log_warnx("bus %s: RS-485 on %s: %s", p->bus->name, p->bus->device, strerror(-rc));
            modbus_close(p->ctx);
            errno = -rc;
            return -1;
        }
        if (line.mode == BOARD_RS485_RTS) {
            modbus_rtu_set_rts(p->ctx, line.rts); /* BOARD_RTS_* == MODBUS_RTU_RTS_* */
            if (line.rts_delay_us >= 0)
                modbus_rtu_set_rts_delay(p->ctx, line.rts_delay_us);
        }
    }
    p->connected = 1;
    return 0;
}

static void bus_reset(poller_t *p)
{
    if (p->bus->kind == BUS_TCP) {
        modbus_close(p->ctx);
        p->connected = 0;
    } else {
        modbus_flush(p->ctx);
    }
}

static const char *error_name(int e, char *buf, size_t len)
{
    if (e == ETIMEDOUT)
        return "timeout";
    if (e == EMBBADCRC)
        return "crc";
    if (e >= EMBXILFUN && e <= EMBXGTAR) {
        snprintf(buf, len, "exception %d", e - MODBUS_ENOBASE);
        return buf;
    }
    if (e == EMBBADDATA || e == EMBBADEXC || e == EMBBADSLAVE)
        return "bad reply";
    snprintf(buf, len, "%s", modbus_strerror(e));
    return buf;
}

/* One transaction with retries. Returns 0 or the errno of the last attempt. */
static int read_one(poller_t *p, const struct read_req *rq, uint16_t *dst)
{
    int e = 0;
    for (int attempt = 0; attempt <= p->bus->retries; attempt++) {
        int rc;
        if (bus_connect(p) < 0) {
            e = errno ? errno : ECONNREFUSED;
            continue;
        }
        if (rq->fc == 4)
            rc = modbus_read_input_registers(p->ctx, rq->addr, rq->count, dst);
        else
            rc = modbus_read_registers(p->ctx, rq->addr, rq->count, dst);
        if (rc == rq->count)
            return 0;
        e = rc < 0 ? errno : EMBBADDATA;
        if (e >= EMBXILFUN && e <= EMBXGTAR)
            return e; /* the meter answered: retrying changes nothing */
        bus_reset(p);
    }
    return e ? e : EIO;
}

static void poll_meter(poller_t *p, struct pmeter *pm)
{
    const struct profile *prof = pm->m->profile;
    uint16_t words[PROFILE_MAX_REGS][MODBUS_MAX_READ_REGISTERS];
    struct reading r;
    char ebuf[WIRE_ERROR_MAX];
    int e = 0;

    int64_t t0 = mono_ms();

    memset(&r, 0, sizeof(r));
    snprintf(r.meter, sizeof(r.meter), "%s", pm->m->id);
    modbus_set_slave(p->ctx, pm->m->unit);
    for (int i = 0; i < pm->nplan && !e; i++) {
        e = read_one(p, &pm->plan[i], words[i]);
        if (p->bus->frame_delay_ms > 0)
            sleep_ms(p->bus->frame_delay_ms);
    }
    r.ts_ms = now_ms(); /* when the (last) response arrived */
    r.unsynced = r.ts_ms < CLOCK_SANE_MS;
    pthread_mutex_lock(&p->mu);
    pm->polls++;
    if (e) {
        pm->failures++;
        pm->consecutive++;
        if (e == ETIMEDOUT)
            pm->timeouts++;
        else if (e == EMBBADCRC)
            pm->crc++;
        else if (e >= EMBXILFUN && e <= EMBXGTAR)
            pm->exceptions++;
        else
            pm->other++;
        if (pm->online && pm->consecutive >= 3) {
            pm->online = 0;
            log_warnx("meter %s: offline after %d failed polls (%s)", pm->m->id,
                      pm->consecutive, error_name(e, ebuf, sizeof(ebuf)));
        }
    } else {
        if (!pm->online)
            log_info("meter %s: online", pm->m->id);
        pm->online = 1;
        pm->consecutive = 0;
        pm->rtt_ms = mono_ms() - t0;
    }
    pthread_mutex_unlock(&p->mu);
    if (e) {
        r.ok = false;
        snprintf(r.error, sizeof(r.error), "%s", error_name(e, ebuf, sizeof(ebuf)));
        log_debug("meter %s: poll failed: %s", pm->m->id, r.error);
    } else {
        r.ok = true;
        for (int i = 0; i < prof->nregs; i++) {
            const struct prof_reg *reg = &prof->regs[i];
            const struct read_req *rq = &pm->plan[pm->req_of[i]];
            double v;
            if (reg_decode(reg, &words[pm->req_of[i]][reg->addr - rq->addr], &v) == 0) {
                r.values[reg->qty] = v;
                r.present |= 1u << reg->qty;
            }
        }
    }
    if (queue_append(p->q, &r, 1) < 0)
        log_warnx("meter %s: reading could not be queued", pm->m->id);
    else if (p->notify)
        p->notify(p->arg);
}

static void *poller_main(void *arg)
{
    poller_t *p = arg;

    while (!p->stop) {
        struct pmeter *next = NULL;
        int64_t now = mono_ms();

        atomic_store(&p->round_ms, now);
        for (int i = 0; i < p->nmeters; i++)
            if (!next || p->meters[i].due < next->due)
                next = &p->meters[i];
        if (next->due > now) {
            int64_t wait = next->due - now;
            sleep_ms(wait > 100 ? 100 : wait); /* short naps keep stop responsive */
            continue;
        }
        poll_meter(p, next);
        next->due += next->m->interval_ms;
        if (next->due < mono_ms()) /* fell behind: skip, never burst */
            next->due = mono_ms() + next->m->interval_ms;
    }
    return NULL;
}

static int build_meter(struct pmeter *pm, const struct meter_cfg *m)
{
    const struct profile *prof = m->profile;

    pm->m = m;
    pm->nplan = plan_reads(prof, pm->plan, PROFILE_MAX_REGS);
    if (pm->nplan < 0)
        return pm->nplan;
    for (int i = 0; i < prof->nregs; i++) {
        const struct prof_reg *reg = &prof->regs[i];
        pm->req_of[i] = -1;
        for (int j = 0; j < pm->nplan; j++)
            if (pm->plan[j].fc == reg->fc && reg->addr >= pm->plan[j].addr &&
                reg->addr + reg_words((enum reg_type)reg->type) <=
                    pm->plan[j].addr + pm->plan[j].count)
                pm->req_of[i] = j;
        if (pm->req_of[i] < 0)
            return -EINVAL;
    }
    return 0;
}

int poller_start(const struct agent_cfg *cfg, const board_t *board, int bus, queue_t *q,
                 poller_notify_fn notify, void *arg, poller_t **out)
{
    poller_t *p = calloc(1, sizeof(*p));
    int rc = 0, k = 0;
    int64_t now = mono_ms();

    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    p->cfg = cfg;
    p->board = board;
    atomic_init(&p->round_ms, now);
    p->bus = &cfg->buses[bus];
    p->q = q;
    p->notify = notify;
    p->arg = arg;
    for (int i = 0; i < cfg->nmeters; i++)
        p->nmeters += cfg->meters[i].bus == bus;
    if (p->nmeters == 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        *out = NULL;
        return 0;
    }
    p->meters = calloc((size_t)p->nmeters, sizeof(*p->meters));
    if (!p->meters) {
        rc = -ENOMEM;
        goto fail;
    }
    for (int i = 0; i < cfg->nmeters; i++) {
        if (cfg->meters[i].bus != bus)
            continue;
        if ((rc = build_meter(&p->meters[k], &cfg->meters[i])) < 0)
            goto fail;
        p->meters[k].due = now + k * 10; /* small stagger */
        log_info("meter %s: %s on bus %s unit %d, %d requests per poll", cfg->meters[i].id,
                 cfg->meters[i].profile->model, p->bus->name, cfg->meters[i].unit,
                 p->meters[k].nplan);
        k++;
    }
    for (int i = 0; i < p->nmeters; i++) {
        int64_t worst = (int64_t)p->meters[i].nplan * (p->bus->retries + 1) *
                        (p->bus->timeout_ms + p->bus->frame_delay_ms);
        if (worst > p->round_max_ms)
            p->round_max_ms = worst;
    }
    p->ctx = bus_new(p->bus);
    if (!p->ctx) {
        log_warn("bus %s: cannot create Modbus context", p->bus->name);
        rc = -EINVAL;
        goto fail;
    }
    if ((rc = pthread_create(&p->thread, NULL, poller_main, p)) != 0) {
        rc = -rc;
        goto fail;
    }
    *out = p;
    return 0;
fail:
    if (p->ctx)
        modbus_free(p->ctx);
    free(p->meters);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return rc;
}

void poller_stop(poller_t *p)
{
    if (!p)
        return;
    p->stop = 1;
    pthread_join(p->thread, NULL);
    if (p->connected)
        modbus_close(p->ctx);
    modbus_free(p->ctx);
    free(p->meters);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int poller_health(poller_t *p, char *buf, size_t len)
{
    size_t pos = 0;

    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->nmeters; i++) {
        const struct pmeter *pm = &p->meters[i];
        int n = snprintf(buf + pos, len - pos,
                         "%s{\"id\":\"%s\",\"bus\":\"%s\",\"unit\":%d,\"online\":%s,"
                         "\"polls\":%llu,\"failures\":%llu,\"timeouts\":%llu,\"crc\":%llu,"
                         "\"exceptions\":%llu,\"other_errors\":%llu,\"rtt_ms\":%lld,"
                         "\"requests_per_poll\":%d}",
                         i ? "," : "", pm->m->id, p->bus->name, pm->m->unit,
                         pm->online ? "true" : "false", (unsigned long long)pm->polls,
                         (unsigned long long)pm->failures, (unsigned long long)pm->timeouts,
                         (unsigned long long)pm->crc, (unsigned long long)pm->exceptions,
                         (unsigned long long)pm->other, (long long)pm->rtt_ms, pm->nplan);
        if (n < 0 || (size_t)n >= len - pos) {
            pthread_mutex_unlock(&p->mu);
            return -1;
        }
        pos += (size_t)n;
    }
    pthread_mutex_unlock(&p->mu);
    return (int)pos;
}

int64_t poller_idle_ms(poller_t *p)
{
    return mono_ms() - atomic_load(&p->round_ms);
}

int64_t poller_round_max_ms(poller_t *p)
{
    return p->round_max_ms;
}
