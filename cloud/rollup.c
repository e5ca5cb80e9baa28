/* rollup: see rollup.h. */
#include "rollup.h"

#include "log.h"
#include "quantities.h"
#include "store.h"
#include "timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FIRST_RUN_DELAY_S 60

static int64_t floor_mod(int64_t a, int64_t b)
{
    int64_t m = a % b;
    return m < 0 ? m + b : m;
}

void rollup_build(const struct rollup_params *pr, const struct rollup_point *prev,
                  const struct rollup_point *p, int n, int64_t unit_ms, struct rollup_row *rows,
                  int *nrows, struct usage_gap *gaps, int *ngaps)
{
    const struct rollup_point *last = prev;
    int nr = 0, ng = 0, ri = 0;

    for (int i = 0; i < n; i++) {
        int64_t ts = p[i].ts, start = ts - floor_mod(ts, unit_ms);
        double v = p[i].v, use = 0, topup = 0;
        struct rollup_row *row;

        if (nr == 0 || rows[nr - 1].ts != start) {
            row = &rows[nr++];
            memset(row, 0, sizeof(*row));
            row->ts = start;
        }
        row = &rows[nr - 1];
        if (row->n == 0 || v < row->min)
            row->min = v;
        if (row->n == 0 || v > row->max)
            row->max = v;
        if (row->n == 0) {
            row->first = v;
            row->first_ts = ts;
        }
        row->last = v;
        row->last_ts = ts;
        row->sum += v;
        row->n++;
        if (last && (pr->kind == QTY_COUNTER || pr->kind == QTY_BALANCE)) {
            int64_t dt = ts - last->ts;
            bool replaced;

            while (ri < pr->nreplaced && pr->replaced[ri] <= last->ts)
                ri++;
            replaced = ri < pr->nreplaced && pr->replaced[ri] <= ts;
            if (pr->kind == QTY_COUNTER) {
                enum usage_step k = US_REPLACED;
                if (!replaced)
                    use = usage_counter_step(last->v, v, dt, pr->max_power_kw, &k);
                if (k != US_NORMAL)
                    row->resets++;
            } else if (!replaced) {
                usage_balance_step(last->v, v, &use, &topup);
            }
            row->topup += topup; /* a top-up is an event: it counts where it is seen */
            if (dt > pr->gap_ms) {
                gaps[ng].from_ts = last->ts;
                gaps[ng].to_ts = ts;
                gaps[ng].delta = use;
                ng++;
            } else {
                row->delta += use;
            }
        }
        last = &p[i];
    }
    *nrows = nr;
    *ngaps = ng;
}

void rollup_merge(struct rollup_row *acc, const struct rollup_row *r)
{
    if (acc->n == 0) {
        int64_t ts = acc->ts;
        double delta = acc->delta, topup = acc->topup;
        int64_t resets = acc->resets;
        *acc = *r;
        acc->ts = ts;
        acc->delta += delta;
        acc->topup += topup;
        acc->resets += resets;
        return;
    }
    if (r->n > 0) {
        if (r->min < acc->min)
            acc->min = r->min;
        if (r->max > acc->max)
            acc->max = r->max;
        if (r->first_ts < acc->first_ts) {
            acc->first = r->first;
            acc->first_ts = r->first_ts;
        }
        if (r->last_ts > acc->last_ts) {
            acc->last = r->last;
            acc->last_ts = r->last_ts;
        }
        acc->sum += r->sum;
        acc->n += r->n;
    }
    acc->delta += r->delta;
    acc->topup += r->topup;
    acc->resets += r->resets;
}

struct indexed {
    struct rollup_point p;
    int i;
};

static int cmp_indexed(const void *a, const void *b)
{
    const struct indexed *x = a, *y = b;
    if (x->p.ts != y->p.ts)
        return x->p.ts < y->p.ts ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

int rollup_sort_unique(struct rollup_point *p, int n)
{
    struct indexed *t;
    int m = 0;

    if (n <= 0)
        return 0;
    t = malloc((size_t)n * sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        t[i].p = p[i];
        t[i].i = i;
    }
    qsort(t, (size_t)n, sizeof(*t), cmp_indexed);
    for (int i = 0; i < n; i++)
        if (m == 0 || p[m - 1].ts != t[i].p.ts)
            p[m++] = t[i].p;
    free(t);
    return m;
}

/* --- the retention job --- */

struct rollup_job {
    store_t *st;
    struct rollup_retention r;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
};

static void *job_main(void *arg)
{
    rollup_job_t *j = arg;
    int wait_s = FIRST_RUN_DELAY_S;

    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait_s;
        while (!j->stop && pthread_cond_timedwait(&j->cond, &j->mu, &until) == 0)
            ;
        if (j->stop)
            break;
        pthread_mutex_unlock(&j->mu);
        {
            struct store_retention_result res;
            int64_t t0 = mono_ms();
            int rc = store_retention(j->st, now_ms(), j->r.raw_days, j->r.m5_days, j->r.hour_days,
                                     j->r.day_days, &res);
            if (rc < 0)
                log_warnx("retention: %s", strerror(-rc));
            else if (res.readings || res.rows)
                log_info("retention: %lld readings and %lld rollup rows deleted in %lld ms",
                         (long long)res.readings, (long long)res.rows, (long long)(mono_ms() - t0));
        }
        pthread_mutex_lock(&j->mu);
        wait_s = j->r.interval_s;
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int rollup_job_start(struct store *st, const struct rollup_retention *r, rollup_job_t **out)
{
    rollup_job_t *j = calloc(1, sizeof(*j));
    pthread_condattr_t ca;

    *out = NULL;
    if (!j)
        return -ENOMEM;
    j->st = st;
    j->r = *r;
    if (j->r.interval_s < 1)
        j->r.interval_s = 3600;
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_cond_init(&j->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
        pthread_cond_destroy(&j->cond);
        pthread_mutex_destroy(&j->mu);
        free(j);
        return -EAGAIN;
    }
    *out = j;
    return 0;
}

void rollup_job_stop(rollup_job_t *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->mu);
    free(j);
}
