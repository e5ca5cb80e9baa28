/*
 * events: see events.h. One mutex guards the ring, the cursors and the counters; one
 * condition variable wakes the subscribers on a publish and on close. A publish holds the
 * mutex only to copy an event in: ingest never waits for a client.
 */
#include "events.h"

#include "quantities.h"
#include "timeutil.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct events_sub {
    uint64_t next; /* id of the next event this subscriber reads */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond; /* CLOCK_MONOTONIC; set up once by init() */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct event ring[EVENTS_RING];
static uint64_t last_id; /* id of the newest event; 0: none yet */
static bool closed;
static int nsubs;
static uint64_t ndropped;

static void init(void)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cond, &ca);
    pthread_condattr_destroy(&ca);
}

void events_open(void)
{
    pthread_once(&once, init);
    pthread_mutex_lock(&mu);
    closed = false;
    pthread_mutex_unlock(&mu);
}

void events_close(void)
{
    pthread_once(&once, init);
    pthread_mutex_lock(&mu);
    closed = true;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&mu);
}

/* Appends an event (data already formatted); drops it when data did not fit. */
static void publish(const char *name, const char *meter, const char *data, int len)
{
    struct event *e;

    if (len < 0 || len >= EVENTS_DATA_MAX)
        return;
    pthread_once(&once, init);
    pthread_mutex_lock(&mu);
    e = &ring[(last_id + 1) % EVENTS_RING];
    e->id = ++last_id;
    snprintf(e->name, sizeof(e->name), "%s", name);
    snprintf(e->meter, sizeof(e->meter), "%s", meter);
    memcpy(e->data, data, (size_t)len + 1);
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&mu);
}

/* Appends ",\"name\":v" with the fewest digits that read back as v. */
static int put_value(char *buf, size_t len, const char *name, double v)
{
    char num[32];

    for (int prec = 15; prec <= 17; prec++) {
        snprintf(num, sizeof(num), "%.*g", prec, v);
        if (strtod(num, NULL) == v)
            break;
    }
    return snprintf(buf, len, "\"%s\":%s", name, num);
}

static void publish_reading(const char *gw, const struct reading *r)
{
    char data[EVENTS_DATA_MAX], ts[32];
    size_t n;
    int k, first = 1;

    /* ids are [A-Za-z0-9_.-] (wire_id_valid): nothing to escape */
    k = snprintf(data, sizeof(data),
                 "{\"meter\":\"%s\",\"gw\":\"%s\",\"ts\":\"%s\",\"seq\":%" PRIu64 ",\"values\":{",
                 r->meter, gw, time_format(r->ts_ms, ts, sizeof(ts)), r->seq);
    if (k < 0 || (size_t)k >= sizeof(data))
        return;
    n = (size_t)k;
    for (int q = 0; q < qty_count() && n < sizeof(data); q++) {
        if (!(r->present & (1u << q)))
            continue;
        if (!first)
            data[n++] = ',';
        first = 0;
        if (n >= sizeof(data))
            return;
        k = put_value(data + n, sizeof(data) - n, qty_at(q)->name, r->values[q]);
        if (k < 0 || (size_t)k >= sizeof(data) - n)
            return;
        n += (size_t)k;
    }
    k = snprintf(data + n, sizeof(data) - n, "}}");
    if (k < 0 || (size_t)k >= sizeof(data) - n)
        return;
    publish("reading", r->meter, data, (int)(n + (size_t)k));
}

void events_publish_batch(const char *gw, const struct reading *rd, int n)
{
    /* per meter, the newest reading with values; a batch is bounded (wire.h), so the
     * quadratic scan is too */
    for (int i = 0; i < n; i++) {
        const struct reading *best = NULL;
        bool seen = false;

        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(rd[j].meter, rd[i].meter) == 0;
        if (seen)
            continue; /* published with the meter's first reading */
        for (int j = i; j < n; j++)
            if (strcmp(rd[j].meter, rd[i].meter) == 0 && rd[j].ok &&
                (!best || rd[j].seq > best->seq))
                best = &rd[j];
        if (best)
            publish_reading(gw, best);
    }
}

void events_publish_status(const char *gw, const char *state, int64_t ts_ms)
{
    char data[EVENTS_DATA_MAX], ts[32];
    int k = snprintf(data, sizeof(data), "{\"gw\":\"%s\",\"state\":\"%s\",\"ts\":\"%s\"}", gw,
                     state, time_format(ts_ms, ts, sizeof(ts)));

    publish("status", "", data, k);
}

int events_subscribe(events_sub_t **out)
{
    events_sub_t *s;
    int rc = 0;

    *out = NULL;
    if (!(s = calloc(1, sizeof(*s))))
        return -ENOMEM;
    pthread_once(&once, init);
    pthread_mutex_lock(&mu);
    if (closed)
        rc = -ESHUTDOWN;
    else if (nsubs >= EVENTS_SUBSCRIBERS_MAX)
        rc = -EBUSY;
    else {
        nsubs++;
        s->next = last_id + 1;
    }
    pthread_mutex_unlock(&mu);
    if (rc < 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void events_unsubscribe(events_sub_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&mu);
    nsubs--;
    pthread_mutex_unlock(&mu);
    free(s);
}

int events_next(events_sub_t *s, int timeout_ms, struct event *ev, uint64_t *dropped)
{
    struct timespec until;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    *dropped = 0;
    pthread_mutex_lock(&mu);
    while (!closed && s->next > last_id && rc == 0)
        rc = pthread_cond_timedwait(&cond, &mu, &until) == ETIMEDOUT ? -ETIMEDOUT : 0;
    if (closed)
        rc = -ESHUTDOWN;
    else if (s->next <= last_id) {
        /* the oldest event still in the ring is last_id - EVENTS_RING + 1 */
        if (last_id >= EVENTS_RING && s->next < last_id - EVENTS_RING + 1) {
            *dropped = last_id - EVENTS_RING + 1 - s->next;
            ndropped += *dropped;
            s->next = last_id - EVENTS_RING + 1;
        }
        *ev = ring[s->next % EVENTS_RING];
        s->next++;
        rc = 0;
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

void events_get_stats(struct events_stats *st)
{
    pthread_mutex_lock(&mu);
    st->published = last_id;
    st->dropped = ndropped;
    st->subscribers = nsubs;
    pthread_mutex_unlock(&mu);
}
