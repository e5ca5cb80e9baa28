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
#include <time.h>

/* 2020-01-01: a gateway clock before this has not been set. */
#define CLOCK_SANE_MS 1577836800000LL

enum meter_state { MS_UNKNOWN, MS_ONLINE, MS_OFFLINE };

struct err_counts {
    uint64_t requests, timeouts, crc, exceptions, other;
};

struct pmeter {
    const struct meter_cfg *m;
    int index; /* into cfg->meters */
    struct read_req plan[PROFILE_MAX_REGS];
    int nplan;
    int req_of[PROFILE_MAX_REGS]; /* register i is read by plan[req_of[i]] */
    int64_t slot;                 /* mono_ms the current poll was scheduled for */
    int64_t due;                  /* mono_ms of the next attempt (slot, or a retry) */
    int attempt;                  /* retries made in the current poll */
    int64_t interval_ms;          /* the interval now: the configured one, or backed off */
    /* under poller.mu */
    enum meter_state state;
    struct err_counts ec;
    uint64_t polls, failures;
    int consecutive; /* failed polls in a row */
    int64_t rtt_ms;  /* time the last successful poll took on the line */
    int64_t rtt_max_ms;
    double rtt_avg_ms; /* moving average over about 16 successful polls */
    struct reading last_ok;
    bool has_last_ok;
};

struct poller {
    const struct agent_cfg *cfg;
    const struct bus_cfg *bus;
    queue_t *q;
    struct poller_hooks hooks;
    pthread_t thread;
    atomic_int stop;
    const board_t *board;
    _Atomic int64_t round_ms; /* mono time of the last loop round */
    int64_t round_max_ms;
    pthread_mutex_t mu; /* counters, jobs */
    pthread_cond_t cv;  /* jobs queued (bus thread) and jobs done (waiters) */
    struct poller_job *jobs, **jobs_tail;
    struct err_counts ec; /* the bus's requests, under mu */
    uint64_t connect_failures;
    modbus_t *ctx;
    int connected;
    int nmeters;
    struct pmeter *meters;
    /* readings of this bus cycle, queued in one queue_append when the bus goes idle */
    struct reading pend[POLLER_BATCH_MAX];
    int npend;
    int64_t pend_ms; /* mono time the oldest pending reading was taken */
};

/* Queues the readings of the cycle (one transaction in durable mode). */
static void flush_pending(poller_t *p)
{
    if (p->npend == 0)
        return;
    if (queue_append(p->q, p->pend, p->npend) < 0)
        log_warnx("bus %s: %d readings could not be queued", p->bus->name, p->npend);
    else if (p->hooks.queued)
        p->hooks.queued(p->hooks.arg);
    p->npend = 0;
}

int64_t poller_backoff_cap_ms(int64_t interval_ms)
{
    int64_t cap = 8 * interval_ms;
    if (cap > POLLER_BACKOFF_MAX_MS)
        cap = POLLER_BACKOFF_MAX_MS;
    return cap < interval_ms ? interval_ms : cap;
}

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
        pthread_mutex_lock(&p->mu);
        p->connect_failures++;
        pthread_mutex_unlock(&p->mu);
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

/* After a failed request: a TCP connection may carry a late reply that would answer the
 * next request, so it is closed; a serial line is flushed. */
static void bus_reset(poller_t *p)
{
    if (p->bus->kind == BUS_TCP) {
        modbus_close(p->ctx);
        p->connected = 0;
    } else {
        modbus_flush(p->ctx);
    }
}

static int is_exception(int e)
{
    return e >= EMBXILFUN && e <= EMBXGTAR;
}

const char *poller_error_name(int e, char *buf, size_t len)
{
    if (e == ETIMEDOUT)
        snprintf(buf, len, "timeout");
    else if (e == EMBBADCRC)
        snprintf(buf, len, "crc");
    else if (is_exception(e))
        snprintf(buf, len, "exception %d", e - MODBUS_ENOBASE);
    else if (e == EMBBADDATA || e == EMBBADEXC || e == EMBBADSLAVE)
        snprintf(buf, len, "bad reply");
    else
        snprintf(buf, len, "%s", modbus_strerror(e));
    return buf;
}

static void count_error(struct err_counts *c, int e)
{
    if (e == ETIMEDOUT)
        c->timeouts++;
    else if (e == EMBBADCRC)
        c->crc++;
    else if (is_exception(e))
        c->exceptions++;
    else
        c->other++;
}

/* One request, one attempt. Returns 0 or the errno. Counts it for the bus and for pm
 * (NULL: a raw read of a job). */
static int request(poller_t *p, struct pmeter *pm, int fc, int addr, int count, uint16_t *dst)
{
    int rc, e;

    if (bus_connect(p) < 0) {
        e = errno ? errno : ECONNREFUSED;
        pthread_mutex_lock(&p->mu);
        if (pm)
            count_error(&pm->ec, e);
        pthread_mutex_unlock(&p->mu);
        return e;
    }
    if (fc == 4)
        rc = modbus_read_input_registers(p->ctx, addr, count, dst);
    else
        rc = modbus_read_registers(p->ctx, addr, count, dst);
    e = rc == count ? 0 : rc < 0 ? errno : EMBBADDATA;
    pthread_mutex_lock(&p->mu);
    p->ec.requests++;
    if (pm)
        pm->ec.requests++;
    if (e) {
        count_error(&p->ec, e);
        if (pm)
            count_error(&pm->ec, e);
    }
    pthread_mutex_unlock(&p->mu);
    if (e && !is_exception(e))
        bus_reset(p);
    if (p->bus->frame_delay_ms > 0)
        sleep_ms(p->bus->frame_delay_ms);
    return e;
}

/* One attempt at the meter's whole plan: stops at the first failed request, so a meter
 * that does not answer costs one response timeout. */
static int attempt_plan(poller_t *p, struct pmeter *pm, uint16_t words[][MODBUS_MAX_READ_REGISTERS],
                        int64_t *rtt)
{
    int64_t t0 = mono_ms();
    int e = 0;

    modbus_set_slave(p->ctx, pm->m->unit);
    for (int i = 0; i < pm->nplan && !e; i++)
        e = request(p, pm, pm->plan[i].fc, pm->plan[i].addr, pm->plan[i].count, words[i]);
    *rtt = mono_ms() - t0 - (int64_t)pm->nplan * p->bus->frame_delay_ms;
    if (*rtt < 0)
        *rtt = 0;
    return e;
}

/* Retries left for the current poll: none for a meter that failed its last poll or is
 * offline (it would only hold up the bus), none after an exception (the meter answered). */
static int may_retry(const poller_t *p, const struct pmeter *pm, int e)
{
    return !is_exception(e) && pm->state != MS_OFFLINE && pm->consecutive == 0 &&
           pm->attempt < p->bus->retries;
}

/* Ends a poll: the reading (decoded, or failed with e), counters, online state, queue,
 * hooks. *out gets the reading when out is not NULL: then it is queued at once (with what
 * the cycle has pending before it, so its seq is known); else it waits for the end of the
 * bus cycle (flush_pending). */
static void finish_poll(poller_t *p, struct pmeter *pm, int e,
                        uint16_t words[][MODBUS_MAX_READ_REGISTERS], int64_t rtt,
                        struct reading *out)
{
    const struct profile *prof = pm->m->profile;
    struct reading r, last;
    char ebuf[WIRE_ERROR_MAX];
    bool online, has_last;

    memset(&r, 0, sizeof(r));
    snprintf(r.meter, sizeof(r.meter), "%s", pm->m->id);
    r.ts_ms = now_ms(); /* when the (last) response arrived */
    r.unsynced = r.ts_ms < CLOCK_SANE_MS;
    if (e) {
        r.ok = false;
        snprintf(r.error, sizeof(r.error), "%s", poller_error_name(e, ebuf, sizeof(ebuf)));
    } else {
        r.ok = true;
        for (int i = 0; i < prof->nregs; i++) {
            const struct prof_reg *reg = &prof->regs[i];
            const struct read_req *rq = &pm->plan[pm->req_of[i]];
            double v;
            /* -ENODATA: the meter says "not available"; -EDOM: not a number. Both leave
             * the quantity out of the reading. */
            if (reg_decode(reg, &words[pm->req_of[i]][reg->addr - rq->addr], &v) == 0) {
                r.values[reg->qty] = v * reg_multiplier(reg, pm->m->ct, pm->m->pt);
                r.present |= 1u << reg->qty;
            }
        }
    }
    if (p->npend == POLLER_BATCH_MAX)
        flush_pending(p);
    if (p->npend == 0)
        p->pend_ms = mono_ms();
    p->pend[p->npend++] = r;
    if (out) {
        int at = p->npend - 1;
        flush_pending(p);
        r.seq = p->pend[at].seq; /* queue_append set the seqs of the array */
    }

    pthread_mutex_lock(&p->mu);
    pm->polls++;
    if (e) {
        pm->failures++;
        pm->consecutive++;
        if (pm->state != MS_OFFLINE && pm->consecutive >= POLLER_OFFLINE_AFTER) {
            log_warnx("meter %s: offline after %d failed polls (%s); polling it less often",
                      pm->m->id, pm->consecutive, r.error);
            pm->state = MS_OFFLINE;
        } else if (pm->state == MS_OFFLINE) {
            pm->interval_ms *= 2;
            if (pm->interval_ms > poller_backoff_cap_ms(pm->m->interval_ms))
                pm->interval_ms = poller_backoff_cap_ms(pm->m->interval_ms);
        }
        log_debug("meter %s: poll failed: %s", pm->m->id, r.error);
    } else {
        if (pm->state == MS_OFFLINE)
            log_info("meter %s: online again after %d failed polls", pm->m->id, pm->consecutive);
        else if (pm->state == MS_UNKNOWN)
            log_info("meter %s: online", pm->m->id);
        pm->state = MS_ONLINE;
        pm->consecutive = 0;
        pm->interval_ms = pm->m->interval_ms;
        pm->rtt_ms = rtt;
        if (rtt > pm->rtt_max_ms)
            pm->rtt_max_ms = rtt;
        pm->rtt_avg_ms =
            pm->rtt_avg_ms > 0 ? pm->rtt_avg_ms + ((double)rtt - pm->rtt_avg_ms) / 16 : (double)rtt;
        pm->last_ok = r;
        pm->has_last_ok = true;
    }
    online = pm->state == MS_ONLINE;
    has_last = pm->has_last_ok;
    last = pm->last_ok;
    pthread_mutex_unlock(&p->mu);
    if (p->hooks.polled)
        p->hooks.polled(p->hooks.arg, pm->m, &r, has_last ? &last : NULL, online);
    if (out)
        *out = r;
}

static void schedule_next(struct pmeter *pm)
{
    int64_t now = mono_ms();

    pm->attempt = 0;
    pm->slot += pm->interval_ms;
    if (pm->slot < now) /* fell behind: skip, never burst */
        pm->slot = now + pm->interval_ms;
    pm->due = pm->slot;
}

/* A poll requested by a job: the same rules as a scheduled one, retries made at once. The
 * meter's schedule is left as it is. */
static void poll_for_job(poller_t *p, struct pmeter *pm, struct reading *out)
{
    uint16_t words[PROFILE_MAX_REGS][MODBUS_MAX_READ_REGISTERS];
    int64_t rtt;
    int e, saved = pm->attempt;

    pm->attempt = 0;
    for (;;) {
        e = attempt_plan(p, pm, words, &rtt);
        if (!e || !may_retry(p, pm, e))
            break;
        pm->attempt++;
    }
    pm->attempt = saved;
    finish_poll(p, pm, e, words, rtt, out);
}

static void run_job(poller_t *p, struct poller_job *job)
{
    job->err = 0;
    job->n = 0;
    if (job->kind == POLLER_JOB_READ) {
        int64_t t0 = mono_ms();
        modbus_set_slave(p->ctx, job->unit);
        job->err = request(p, NULL, job->fc, job->addr, job->count, job->words);
        job->rtt_ms = mono_ms() - t0 - p->bus->frame_delay_ms;
        if (job->rtt_ms < 0)
            job->rtt_ms = 0;
        return;
    }
    for (int i = 0; i < p->nmeters && !p->stop; i++) {
        struct pmeter *pm = &p->meters[i];
        if (job->meter >= 0 && pm->index != job->meter)
            continue;
        if (job->n >= job->max)
            break;
        poll_for_job(p, pm, &job->out[job->n++]);
        atomic_store(&p->round_ms, mono_ms()); /* a long job is not a stuck thread */
    }
    if (job->meter >= 0 && job->n == 0)
        job->err = -ENOENT;
}

static struct poller_job *take_job(poller_t *p)
{
    struct poller_job *job;

    pthread_mutex_lock(&p->mu);
    job = p->jobs;
    if (job) {
        p->jobs = job->next;
        if (!p->jobs)
            p->jobs_tail = &p->jobs;
    }
    pthread_mutex_unlock(&p->mu);
    return job;
}

static void job_done(poller_t *p, struct poller_job *job)
{
    pthread_mutex_lock(&p->mu);
    job->done = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Naps up to ms, waking early for a job or a stop. */
static void nap(poller_t *p, int64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    while (!p->jobs && !p->stop)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&p->mu);
}

static void *poller_main(void *arg)
{
    poller_t *p = arg;
    uint16_t words[PROFILE_MAX_REGS][MODBUS_MAX_READ_REGISTERS];
    struct poller_job *job;

    while (!p->stop) {
        struct pmeter *next = NULL;
        int64_t now = mono_ms(), rtt;
        int e;

        atomic_store(&p->round_ms, now);
        if ((job = take_job(p))) {
            flush_pending(p);
            run_job(p, job);
            job_done(p, job);
            continue;
        }
        for (int i = 0; i < p->nmeters; i++)
            if (!next || p->meters[i].due < next->due)
                next = &p->meters[i];
        if (!next || next->due > now) {
            int64_t wait = next ? next->due - now : 100;
            /* The bus is idle: the readings taken go to the queue when the next poll is
             * POLLER_BATCH_MS away or the oldest waited that long (meters spread over the
             * interval would otherwise cost a transaction each). */
            if (p->npend > 0) {
                int64_t left = p->pend_ms + POLLER_BATCH_MS - now;
                if (wait >= POLLER_BATCH_MS || left <= 0)
                    flush_pending(p);
                else if (left < wait)
                    wait = left;
            }
            nap(p, wait > 100 ? 100 : wait); /* short naps keep the watchdog fed */
            continue;
        }
        e = attempt_plan(p, next, words, &rtt);
        if (e && may_retry(p, next, e)) {
            /* Retry after every other meter that is due now: one that stopped answering
             * must not hold up the rest of the bus for (retries + 1) timeouts. */
            next->attempt++;
            next->due = mono_ms();
            continue;
        }
        finish_poll(p, next, e, words, rtt, NULL);
        schedule_next(next);
    }
    flush_pending(p);
    /* Jobs nobody will run: their waiters must not wait forever. */
    while ((job = take_job(p))) {
        job->err = -ECANCELED;
        job_done(p, job);
    }
    return NULL;
}

static int build_meter(struct pmeter *pm, const struct meter_cfg *m)
{
    const struct profile *prof = m->profile;

    pm->m = m;
    pm->interval_ms = m->interval_ms;
    pm->state = MS_UNKNOWN;
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
                 const struct poller_hooks *hooks, poller_t **out)
{
    poller_t *p = calloc(1, sizeof(*p));
    pthread_condattr_t ca;
    int rc = 0, k = 0;
    int64_t now = mono_ms(), worst;

    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->jobs_tail = &p->jobs;
    p->cfg = cfg;
    p->board = board;
    atomic_init(&p->round_ms, now);
    atomic_init(&p->stop, 0);
    p->bus = &cfg->buses[bus];
    p->q = q;
    if (hooks)
        p->hooks = *hooks;
    for (int i = 0; i < cfg->nmeters; i++)
        p->nmeters += cfg->meters[i].bus == bus;
    if (p->nmeters > 0 && !(p->meters = calloc((size_t)p->nmeters, sizeof(*p->meters)))) {
        rc = -ENOMEM;
        goto fail;
    }
    for (int i = 0; i < cfg->nmeters; i++) {
        if (cfg->meters[i].bus != bus)
            continue;
        if ((rc = build_meter(&p->meters[k], &cfg->meters[i])) < 0)
            goto fail;
        p->meters[k].index = i;
        p->meters[k].slot = p->meters[k].due = now + k * 10; /* small stagger */
        log_info("meter %s: %s on bus %s unit %d, %d requests per poll", cfg->meters[i].id,
                 cfg->meters[i].profile->model, p->bus->name, cfg->meters[i].unit,
                 p->meters[k].nplan);
        k++;
    }
    /* One round is one attempt at one meter's plan (retries are rounds of their own), or
     * one raw read of a job. */
    p->round_max_ms = (int64_t)p->bus->timeout_ms + p->bus->frame_delay_ms;
    for (int i = 0; i < p->nmeters; i++) {
        worst = (int64_t)p->meters[i].nplan * (p->bus->timeout_ms + p->bus->frame_delay_ms);
        if (p->bus->kind == BUS_TCP)
            worst += p->bus->timeout_ms; /* a reconnect */
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
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return rc;
}

void poller_stop(poller_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    if (p->connected)
        modbus_close(p->ctx);
    modbus_free(p->ctx);
    free(p->meters);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int poller_submit(poller_t *p, struct poller_job *job)
{
    pthread_mutex_lock(&p->mu);
    if (p->stop) {
        pthread_mutex_unlock(&p->mu);
        return -ESHUTDOWN;
    }
    job->done = 0;
    job->next = NULL;
    *p->jobs_tail = job;
    p->jobs_tail = &job->next;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void poller_wait(poller_t *p, struct poller_job *job)
{
    pthread_mutex_lock(&p->mu);
    while (!job->done)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static const char *state_name(enum meter_state s)
{
    return s == MS_ONLINE ? "online" : s == MS_OFFLINE ? "offline" : "unknown";
}

int poller_meters(poller_t *p)
{
    return p->nmeters;
}

int poller_health(poller_t *p, char *buf, size_t len, int *nwritten)
{
    size_t pos = 0;

    *nwritten = 0;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->nmeters; i++) {
        const struct pmeter *pm = &p->meters[i];
        int n = snprintf(
            buf + pos, len - pos,
            "%s{\"id\":\"%s\",\"bus\":\"%s\",\"unit\":%d,\"profile\":\"%s\",\"online\":%s,"
            "\"state\":\"%s\",\"polls\":%llu,\"failures\":%llu,\"consecutive_failures\":%d,"
            "\"requests\":%llu,\"timeouts\":%llu,\"crc\":%llu,\"exceptions\":%llu,"
            "\"other_errors\":%llu,\"interval_ms\":%lld,\"rtt_ms\":%lld,\"rtt_avg_ms\":%.1f,"
            "\"rtt_max_ms\":%lld,\"requests_per_poll\":%d,\"last_ok_ts\":%lld}",
            i ? "," : "", pm->m->id, p->bus->name, pm->m->unit, pm->m->profile->model,
            pm->state == MS_ONLINE ? "true" : "false", state_name(pm->state),
            (unsigned long long)pm->polls, (unsigned long long)pm->failures, pm->consecutive,
            (unsigned long long)pm->ec.requests, (unsigned long long)pm->ec.timeouts,
            (unsigned long long)pm->ec.crc, (unsigned long long)pm->ec.exceptions,
            (unsigned long long)pm->ec.other, (long long)pm->interval_ms, (long long)pm->rtt_ms,
            pm->rtt_avg_ms, (long long)pm->rtt_max_ms, pm->nplan,
            (long long)(pm->has_last_ok ? pm->last_ok.ts_ms : 0));
        if (n < 0 || (size_t)n >= len - pos) {
            if (pos < len)
                buf[pos] = '\0';
            break; /* whole meters only */
        }
        pos += (size_t)n;
        (*nwritten)++;
    }
    pthread_mutex_unlock(&p->mu);
    return (int)pos;
}

int poller_bus_health(poller_t *p, char *buf, size_t len)
{
    int n, offline = 0;

    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->nmeters; i++)
        offline += p->meters[i].state == MS_OFFLINE;
    n = snprintf(buf, len,
                 "{\"name\":\"%s\",\"type\":\"%s\",\"meters\":%d,\"offline\":%d,"
                 "\"requests\":%llu,\"timeouts\":%llu,\"crc\":%llu,\"exceptions\":%llu,"
                 "\"other_errors\":%llu,\"connect_failures\":%llu}",
                 p->bus->name, p->bus->kind == BUS_TCP ? "tcp" : "rtu", p->nmeters, offline,
                 (unsigned long long)p->ec.requests, (unsigned long long)p->ec.timeouts,
                 (unsigned long long)p->ec.crc, (unsigned long long)p->ec.exceptions,
                 (unsigned long long)p->ec.other, (unsigned long long)p->connect_failures);
    pthread_mutex_unlock(&p->mu);
    return n < 0 || (size_t)n >= len ? -1 : n;
}

int64_t poller_idle_ms(poller_t *p)
{
    return mono_ms() - atomic_load(&p->round_ms);
}

int64_t poller_round_max_ms(poller_t *p)
{
    return p->round_max_ms;
}
