/*
 * rollup: per meter and quantity, readings summed up per 5 minutes, hour and day, so that
 * charts and usage over long ranges read a few hundred rows instead of millions.
 *
 * This file has two parts. The pure part builds and merges rollup rows (the store calls it
 * inside a batch's transaction, and the unit tests call it directly). The job part runs
 * the retention tiers on a thread of its own (store_retention() once an interval).
 *
 * A row covers [ts, ts + its unit): 5-minute and hourly rows are UTC-aligned, daily rows
 * start at local midnight of the meter's site (UTC for a meter without a site). A step
 * between two consecutive readings counts in the row of the later reading (usage.h has
 * the counter and balance rules). A step longer than the gap limit is not put in any row:
 * it is kept as a gap (usage.h, struct usage_gap), so that a chart never shows a gap's
 * usage as if it all happened in the minute the gateway came back.
 *
 * Errors: int functions return 0 or a negative errno.
 */
#ifndef MLK_CLOUD_ROLLUP_H
#define MLK_CLOUD_ROLLUP_H

#include "usage.h"

#include <stdbool.h>
#include <stdint.h>

#define ROLLUP_5M_MS 300000
#define ROLLUP_1H_MS 3600000

struct rollup_row {
    int64_t ts;           /* bucket start, UTC ms */
    int64_t n;            /* readings in the bucket */
    double min, max, sum; /* avg = sum / n */
    double first, last;
    int64_t first_ts, last_ts;
    double delta;   /* counter: usage of the steps ending here; balance: use (falls) */
    double topup;   /* balance: top-ups (rises); 0 otherwise */
    int64_t resets; /* counter steps that were a reset, rollover or new counter */
};

struct rollup_point {
    int64_t ts;
    double v;
};

/* How steps count: kind is a quantities.h enum qty_kind. */
struct rollup_params {
    int kind;
    int64_t gap_ms;          /* a step longer than this is a gap */
    double max_power_kw;     /* counters: plausibility limit (usage_counter_step) */
    const int64_t *replaced; /* registry replacement times, ascending */
    int nreplaced;
};

/* Builds the rows (UTC-aligned, unit_ms wide) of the points p[0..n) (ascending, unique
 * ts) and the gaps among them. prev, when not NULL, is the reading just before p[0]: its
 * step to p[0] counts. rows and gaps need room for n entries each; *nrows and *ngaps get
 * the counts. */
void rollup_build(const struct rollup_params *pr, const struct rollup_point *prev,
                  const struct rollup_point *p, int n, int64_t unit_ms, struct rollup_row *rows,
                  int *nrows, struct usage_gap *gaps, int *ngaps);

/* Adds row r into acc (acc->n == 0 and no usage: acc becomes r, with acc->ts kept). */
void rollup_merge(struct rollup_row *acc, const struct rollup_row *r);

/* Sorts p[0..n) by ts and drops every later copy of a ts already present (the store keeps
 * the first copy it received); returns the new count. -ENOMEM when out of memory. */
int rollup_sort_unique(struct rollup_point *p, int n);

/* --- the retention job --- */

struct store;
typedef struct rollup_job rollup_job_t;

struct rollup_retention {
    int raw_days, m5_days, hour_days, day_days; /* 0: kept for ever */
    int interval_s;                             /* between runs; the first after 60 s */
};

/* Starts the thread that applies r to st every r->interval_s seconds. */
int rollup_job_start(struct store *st, const struct rollup_retention *r, rollup_job_t **out);
/* Stops and frees it (waits for a run in progress); NULL is allowed. */
void rollup_job_stop(rollup_job_t *j);

#endif
