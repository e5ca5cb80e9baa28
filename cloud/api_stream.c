/*
 * api_stream: the live stream of events (GET /api/v1/stream, Server-Sent Events from
 * events.h) and the metrics for Prometheus (GET /metrics, text exposition format 0.0.4),
 * with the HTTP request counters and latency histogram that api.c feeds.
 *
 * A stream's content callback blocks its connection's thread (libmicrohttpd runs one per
 * connection) in waits of at most STREAM_WAIT_MS for the next event, so it notices within
 * that time the server stopping (events_close from api_stop) and the client going away
 * (its socket hung up). EVENTS_SUBSCRIBERS_MAX streams at once; more get a 503.
 */
#include "api_int.h"
#include "events.h"
#include "ingest.h"
#include "store.h"
#include "timeutil.h"
#include "wire.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#ifndef POLLRDHUP
#define POLLRDHUP 0x2000 /* Linux; declared only with _GNU_SOURCE */
#endif

#define STREAM_WAIT_MS 1000
#define STREAM_KEEPALIVE_MS 15000
#define STREAM_FILTER_MAX 32 /* meters in ?meters= */
#define STREAM_OUT_MAX (EVENTS_DATA_MAX + 128)
#define METRICS_MAX (64 * 1024)

/* ---- HTTP request metrics (api.c calls these) ---- */

static const double buckets_s[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS (sizeof(buckets_s) / sizeof(buckets_s[0]))

static atomic_uint_fast64_t http_class[6];             /* 1xx..5xx, then anything else */
static atomic_uint_fast64_t http_bucket[NBUCKETS + 1]; /* le each bound; last: +Inf */
static atomic_uint_fast64_t http_sum_us, http_timed;
static _Thread_local int64_t t_start_us; /* the connection thread's current request */

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void api_metrics_begin(void)
{
    t_start_us = mono_us();
}

void api_metrics_done(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
    unsigned int status = ci ? ci->http_status : 0;
    int64_t us;

    if (status == 0)
        return; /* nothing was answered (the client went away first) */
    atomic_fetch_add(&http_class[status >= 100 && status < 600 ? status / 100 - 1 : 5], 1);
    if (t_start_us <= 0)
        return; /* not timed: a stream, or finished on another thread */
    us = mono_us() - t_start_us;
    t_start_us = 0;
    atomic_fetch_add(&http_sum_us, (uint64_t)us);
    atomic_fetch_add(&http_timed, 1);
    for (size_t i = 0; i <= NBUCKETS; i++)
        if (i == NBUCKETS || (double)us / 1e6 <= buckets_s[i]) {
            atomic_fetch_add(&http_bucket[i], 1);
            break;
        }
}

/* ---- GET /api/v1/stream ---- */

struct stream {
    events_sub_t *sub;
    int fd; /* the client's socket; -1 when unknown */
    int nfilter;
    char filter[STREAM_FILTER_MAX][WIRE_ID_MAX];
    int64_t last_write_ms; /* mono_ms */
    char out[STREAM_OUT_MAX];
    size_t out_len, out_off; /* out[out_off..out_len) is still to be sent */
};

static bool wanted(const struct stream *s, const struct event *ev)
{
    if (s->nfilter == 0 || !ev->meter[0])
        return true; /* a filter selects readings; status events always pass */
    for (int i = 0; i < s->nfilter; i++)
        if (strcmp(s->filter[i], ev->meter) == 0)
            return true;
    return false;
}

/* Whether the client has hung up (or its socket failed). */
static bool client_gone(const struct stream *s)
{
    struct pollfd p = {.fd = s->fd, .events = POLLIN | POLLRDHUP};
    char c;

    if (s->fd < 0 || poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL | POLLRDHUP))
        return true;
    return (p.revents & POLLIN) && recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void out_printf(struct stream *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void out_printf(struct stream *s, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(s->out + s->out_len, sizeof(s->out) - s->out_len, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof(s->out) - s->out_len)
        s->out_len += (size_t)n;
}

/* libmicrohttpd's content reader: the next bytes of the stream, blocking until there are
 * some (bounded waits, see the top of the file). */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *s = cls;
    struct event ev;
    uint64_t dropped;
    size_t n;

    (void)pos;
    while (s->out_off == s->out_len) {
        int rc;

        s->out_off = s->out_len = 0;
        rc = events_next(s->sub, STREAM_WAIT_MS, &ev, &dropped);
        if (rc == -ESHUTDOWN)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (client_gone(s))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (rc == 0) {
            if (dropped)
                out_printf(s, "event: dropped\ndata: {\"dropped\":%" PRIu64 "}\n\n", dropped);
            if (wanted(s, &ev))
                out_printf(s, "event: %s\nid: %" PRIu64 "\ndata: %s\n\n", ev.name, ev.id, ev.data);
        } else if (mono_ms() - s->last_write_ms >= STREAM_KEEPALIVE_MS)
            out_printf(s, ": keepalive\n\n");
    }
    n = s->out_len - s->out_off;
    if (n > max)
        n = max;
    memcpy(buf, s->out + s->out_off, n);
    s->out_off += n;
    s->last_write_ms = mono_ms();
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct stream *s = cls;

    events_unsubscribe(s->sub);
    free(s);
}

/* ?meters=a,b: fills s->filter. 0, or sends the 400 and returns -EINVAL with *ret set. */
static int parse_filter(struct api_req *r, struct stream *s, enum MHD_Result *ret)
{
    const char *v = MHD_lookup_connection_value(r->c, MHD_GET_ARGUMENT_KIND, "meters");
    char b[48];

    while (v && *v) {
        size_t len = strcspn(v, ",");
        if (s->nfilter == STREAM_FILTER_MAX || len == 0 || len >= WIRE_ID_MAX) {
            *ret = api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                                  "meters: at most %d meter ids, separated by commas",
                                  STREAM_FILTER_MAX);
            return -EINVAL;
        }
        snprintf(s->filter[s->nfilter], WIRE_ID_MAX, "%.*s", (int)len, v);
        if (!wire_id_valid(s->filter[s->nfilter])) {
            *ret = api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                                  "meters: \"%s\" is not a meter id",
                                  api_shown(s->filter[s->nfilter], b, sizeof(b)));
            return -EINVAL;
        }
        s->nfilter++;
        v += len;
        if (*v == ',')
            v++;
    }
    return 0;
}

static enum MHD_Result h_stream(struct api_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct MHD_Response *resp;
    enum MHD_Result ret;
    struct stream *s;
    int rc;

    t_start_us = 0; /* a stream's life is not a request's latency */
    if (!(s = calloc(1, sizeof(*s))))
        return MHD_NO;
    if (parse_filter(r, s, &ret) < 0) {
        free(s);
        return ret;
    }
    rc = events_subscribe(&s->sub);
    if (rc < 0) {
        free(s);
        if (rc == -ENOMEM)
            return MHD_NO;
        return api_send_error(r->c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                              rc == -EBUSY ? "already %d streams open; try again later"
                                           : "shutting down (%d)",
                              EVENTS_SUBSCRIBERS_MAX);
    }
    s->fd = ci ? ci->connect_fd : -1;
    s->last_write_ms = mono_ms();
    out_printf(s, ": connected\n\n"); /* sends the headers now */
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
    if (!resp) {
        stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    ret = MHD_queue_response(r->c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- GET /metrics ---- */

struct text {
    char *buf;
    size_t len;
    bool full;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->full)
        return;
    va_start(ap, fmt);
    n = vsnprintf(t->buf + t->len, METRICS_MAX - t->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= METRICS_MAX - t->len)
        t->full = true;
    else
        t->len += (size_t)n;
}

static void counter(struct text *t, const char *name, const char *help, uint64_t v)
{
    put(t, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

static void gauge(struct text *t, const char *name, const char *help, int64_t v)
{
    put(t, "# HELP %s %s\n# TYPE %s gauge\n%s %" PRId64 "\n", name, help, name, name, v);
}

static void put_ingest(struct text *t, ingest_t *in)
{
    struct ingest_stats s;

    ingest_get_stats(in, &s);
    counter(t, "meterlink_ingest_messages_total", "MQTT messages received.", s.messages);
    counter(t, "meterlink_ingest_batches_total", "Readings batches committed.", s.batches);
    counter(t, "meterlink_ingest_readings_stored_total", "Readings stored new.", s.stored);
    counter(t, "meterlink_ingest_duplicates_total", "Readings already stored, ignored.",
            s.duplicates);
    counter(t, "meterlink_ingest_statuses_total", "Gateway status messages recorded.", s.statuses);
    counter(t, "meterlink_ingest_losses_total", "Loss reports committed.", s.losses);
    counter(t, "meterlink_ingest_health_total", "Health messages stored.", s.healths);
    counter(t, "meterlink_ingest_acks_total", "Acks handed to the MQTT library.", s.acks);
    counter(t, "meterlink_ingest_data_gaps_total", "Data gap events found.", s.data_gaps);
    counter(t, "meterlink_ingest_commands_total", "Commands published.", s.commands);
    counter(t, "meterlink_ingest_replies_total", "Command replies matched.", s.replies);
    put(t, "# HELP meterlink_ingest_rejects_total Messages or readings dropped, by cause.\n"
           "# TYPE meterlink_ingest_rejects_total counter\n");
    for (int i = 0; i < IC_COUNT; i++)
        put(t, "meterlink_ingest_rejects_total{cause=\"%s\"} %" PRIu64 "\n",
            ingest_cause_name((enum ingest_cause)i), s.rejects[i]);
    gauge(t, "meterlink_mqtt_connected", "1 when connected to the broker.",
          ingest_connected(in) ? 1 : 0);
}

static void put_gateways(struct text *t, store_t *st)
{
    struct store_gateway *g = NULL;
    int n = 0;
    int64_t online = 0, offline = 0, unknown = 0;

    if (store_list_gateways(st, &g, &n) < 0)
        return; /* left out rather than wrong */
    for (int i = 0; i < n; i++) {
        if (strcmp(g[i].status, "online") == 0)
            online++;
        else if (strcmp(g[i].status, "offline") == 0)
            offline++;
        else
            unknown++;
    }
    store_gateways_free(g, n);
    put(t,
        "# HELP meterlink_gateways Gateways known, by last reported status.\n"
        "# TYPE meterlink_gateways gauge\n"
        "meterlink_gateways{status=\"online\"} %" PRId64 "\n"
        "meterlink_gateways{status=\"offline\"} %" PRId64 "\n"
        "meterlink_gateways{status=\"unknown\"} %" PRId64 "\n",
        online, offline, unknown);
}

static void put_http(struct text *t)
{
    static const char *const cls[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
    uint64_t cum = 0;

    put(t, "# HELP meterlink_http_requests_total HTTP requests answered, by status class.\n"
           "# TYPE meterlink_http_requests_total counter\n");
    for (int i = 0; i < 6; i++)
        put(t, "meterlink_http_requests_total{class=\"%s\"} %" PRIu64 "\n", cls[i],
            (uint64_t)atomic_load(&http_class[i]));
    put(t, "# HELP meterlink_http_request_duration_seconds Time from a request's start to the "
           "end of its answer (streams excluded).\n"
           "# TYPE meterlink_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i <= NBUCKETS; i++) {
        cum += atomic_load(&http_bucket[i]);
        if (i < NBUCKETS)
            put(t, "meterlink_http_request_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                buckets_s[i], cum);
        else
            put(t, "meterlink_http_request_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
                cum);
    }
    put(t,
        "meterlink_http_request_duration_seconds_sum %.6f\n"
        "meterlink_http_request_duration_seconds_count %" PRIu64 "\n",
        (double)atomic_load(&http_sum_us) / 1e6, (uint64_t)atomic_load(&http_timed));
}

static enum MHD_Result h_metrics(struct api_req *r)
{
    struct events_stats es;
    struct MHD_Response *resp;
    struct text t = {0};
    enum MHD_Result ret;

    if (api_no_params(r, &ret) < 0)
        return ret;
    if (!(t.buf = malloc(METRICS_MAX)))
        return MHD_NO;
    put_ingest(&t, r->a->in);
    put_gateways(&t, r->a->st);
    events_get_stats(&es);
    gauge(&t, "meterlink_stream_clients", "Live stream (SSE) clients connected.", es.subscribers);
    counter(&t, "meterlink_stream_events_total", "Events published to the live stream.",
            es.published);
    counter(&t, "meterlink_stream_events_dropped_total",
            "Events slow stream clients lost, summed over the clients.", es.dropped);
    put_http(&t);
    if (t.full) {
        free(t.buf);
        return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                              "metrics exceed %d bytes", METRICS_MAX);
    }
    resp = MHD_create_response_from_buffer(t.len, t.buf, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(t.buf);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    ret = MHD_queue_response(r->c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

const struct api_route api_stream_routes[] = {
    {"GET", "/api/v1/stream", AUTH_ROLE_VIEWER, h_stream},
    {"GET", "/metrics", AUTH_ROLE_VIEWER, h_metrics},
    {NULL, NULL, AUTH_ROLE_NONE, NULL},
};
