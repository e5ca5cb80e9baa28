/*
 * api: see api.h. libmicrohttpd parses HTTP; this file routes, validates query strings
 * and writes JSON. One internal polling thread serves every connection (a bounded number,
 * each with an idle timeout); the store's reader connection would serialise queries
 * anyway, so more threads would buy nothing yet.
 *
 * Every response is JSON with Content-Type application/json, errors included:
 * {"error":{"code":"...","message":"..."}}. A message that quotes a client's input quotes
 * it shortened and with anything but printable ASCII replaced by '?'.
 */
#include "api.h"

#include "log.h"
#include "timeutil.h"
#include "wire.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CONN_LIMIT 64
#define CONN_TIMEOUT_S 30
#define CONN_MEMORY (32 * 1024) /* per connection; bounds the request line and headers */
#define PARAM_VALUE_MAX 64      /* longest accepted query parameter value */
#define LIMIT_DEFAULT 100
#define LIMIT_MAX 10000
#define ALLOWED_METHODS "GET, HEAD"

struct api {
    struct MHD_Daemon *d;
    store_t *st;
    ingest_t *in;
    int port;
};

/* Copies client input for a message: at most 40 bytes, printable ASCII only. */
static const char *shown(const char *s, char *buf, size_t len)
{
    size_t i = 0, max = len > 44 ? 40 : len - 4;

    for (; s && s[i] && i < max; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (s && s[i]) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned int status, char *body,
                                 bool allow)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, ALLOWED_METHODS);
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Sends root (consumed) with status; a 500 when it cannot be printed. */
static enum MHD_Result send_json(struct MHD_Connection *c, unsigned int status, cJSON *root)
{
    char *body = root ? cJSON_PrintUnformatted(root) : NULL;

    cJSON_Delete(root);
    if (!body) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        body = strdup(oom);
        if (!body)
            return MHD_NO;
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    return send_body(c, status, body, false);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned int status, const char *code,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned int status, const char *code,
                                  const char *fmt, ...)
{
    cJSON *root = cJSON_CreateObject(), *e;
    char msg[256];
    char *body;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!root || !(e = cJSON_AddObjectToObject(root, "error")) ||
        !cJSON_AddStringToObject(e, "code", code) || !cJSON_AddStringToObject(e, "message", msg)) {
        cJSON_Delete(root);
        return send_json(c, status, NULL);
    }
    if (status != MHD_HTTP_METHOD_NOT_ALLOWED)
        return send_json(c, status, root);
    body = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!body)
        return send_json(c, status, NULL);
    return send_body(c, status, body, true);
}

/* Adds a number printed with the fewest digits that read back as exactly v (cJSON's own
 * printer may round to 15 digits). */
static bool add_double(cJSON *o, const char *name, double v)
{
    char buf[32];

    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return cJSON_AddRawToObject(o, name, buf) != NULL;
}

static bool add_int(cJSON *o, const char *name, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRId64, v);
    return cJSON_AddRawToObject(o, name, buf) != NULL;
}

static bool add_time(cJSON *o, const char *name, int64_t ms)
{
    char buf[32];
    return cJSON_AddStringToObject(o, name, time_format(ms, buf, sizeof(buf))) != NULL;
}

/* A reading as JSON; with_origin adds its stream and gateway. NULL when out of memory. */
static cJSON *reading_json(const struct store_reading *sr, bool with_origin)
{
    const struct reading *r = &sr->r;
    cJSON *o = cJSON_CreateObject(), *vals;

    if (!o)
        return NULL;
    if (!add_time(o, "ts", r->ts_ms) || !add_int(o, "ts_ms", r->ts_ms) ||
        !add_int(o, "seq", (int64_t)r->seq))
        goto fail;
    if (with_origin && (!cJSON_AddStringToObject(o, "stream", sr->stream) ||
                        !cJSON_AddStringToObject(o, "gateway", sr->gateway)))
        goto fail;
    if (!cJSON_AddBoolToObject(o, "ok", r->ok))
        goto fail;
    if (!r->ok && !cJSON_AddStringToObject(o, "error", r->error))
        goto fail;
    if (r->unsynced && !cJSON_AddStringToObject(o, "clock", "unsynced"))
        goto fail;
    if (!(vals = cJSON_AddObjectToObject(o, "values")))
        goto fail;
    for (int q = 0; q < qty_count(); q++)
        if ((r->present & (1u << q)) && !add_double(vals, qty_at(q)->name, r->values[q]))
            goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static bool add_u64(cJSON *o, const char *name, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    return cJSON_AddRawToObject(o, name, buf) != NULL;
}

/* ingest's counters: what came in, and every reject cause with its count (zeros too, so
 * that the set of causes is visible). Counters only: nothing secret. */
static bool add_ingest(cJSON *root, ingest_t *in)
{
    struct ingest_stats s;
    cJSON *o, *rej;

    ingest_get_stats(in, &s);
    if (!(o = cJSON_AddObjectToObject(root, "ingest")) || !add_u64(o, "messages", s.messages) ||
        !add_u64(o, "batches", s.batches) || !add_u64(o, "stored", s.stored) ||
        !add_u64(o, "duplicates", s.duplicates) || !add_u64(o, "statuses", s.statuses) ||
        !add_u64(o, "losses", s.losses) || !add_u64(o, "health", s.healths) ||
        !add_u64(o, "acks", s.acks) || !add_u64(o, "data_gaps", s.data_gaps) ||
        !(rej = cJSON_AddObjectToObject(o, "rejects")))
        return false;
    for (int i = 0; i < IC_COUNT; i++)
        if (!add_u64(rej, ingest_cause_name((enum ingest_cause)i), s.rejects[i]))
            return false;
    return true;
}

static enum MHD_Result h_health(struct api *a, struct MHD_Connection *c)
{
    bool mqtt = ingest_connected(a->in);
    bool store = store_ping(a->st) == 0;
    cJSON *root = cJSON_CreateObject();

    if (root && (!cJSON_AddStringToObject(root, "status", store ? "ok" : "error") ||
                 !cJSON_AddStringToObject(root, "mqtt", mqtt ? "connected" : "disconnected") ||
                 !cJSON_AddStringToObject(root, "store", store ? "ok" : "error") ||
                 !add_ingest(root, a->in))) {
        cJSON_Delete(root);
        root = NULL;
    }
    return send_json(c, store ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, root);
}

/* Query parameters of one request. */
struct params {
    const char *const *names; /* the accepted names, NULL-terminated */
    const char *value[4];     /* value of names[i]; NULL when absent */
    char err[200];            /* the first problem */
};

static enum MHD_Result collect_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct params *p = cls;
    char b1[48];
    int i;

    for (i = 0; p->names[i]; i++)
        if (strcmp(p->names[i], key) == 0)
            break;
    if (!p->names[i]) {
        snprintf(p->err, sizeof(p->err), "%s: unknown parameter", shown(key, b1, sizeof(b1)));
        return MHD_NO;
    }
    if (p->value[i]) {
        snprintf(p->err, sizeof(p->err), "%s: given more than once", key);
        return MHD_NO;
    }
    if (!value || !*value) {
        snprintf(p->err, sizeof(p->err), "%s: empty value", key);
        return MHD_NO;
    }
    if (strlen(value) > PARAM_VALUE_MAX) {
        snprintf(p->err, sizeof(p->err), "%s: longer than %d characters", key, PARAM_VALUE_MAX);
        return MHD_NO;
    }
    p->value[i] = value;
    return MHD_YES;
}

/* Collects the query string into p; returns -EINVAL with p->err set on a bad one. */
static int get_params(struct MHD_Connection *c, struct params *p)
{
    p->err[0] = '\0';
    memset(p->value, 0, sizeof(p->value));
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_param, p);
    return p->err[0] ? -EINVAL : 0;
}

static enum MHD_Result h_meters(struct api *a, struct MHD_Connection *c)
{
    static const char *const names[] = {NULL};
    struct params p = {.names = names};
    struct store_meter *m = NULL;
    cJSON *root = NULL, *arr;
    int n = 0, rc;

    if (get_params(c, &p) < 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "%s", p.err);
    rc = store_list_meters(a->st, &m, &n);
    if (rc < 0)
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "store: %s",
                          strerror(-rc));
    root = cJSON_CreateObject();
    if (!root || !(arr = cJSON_AddArrayToObject(root, "meters")))
        goto fail;
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject(), *last;
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
        if (!cJSON_AddStringToObject(o, "id", m[i].id) ||
            !cJSON_AddStringToObject(o, "gateway", m[i].gateway) ||
            !add_time(o, "first_seen", m[i].first_seen_ms) ||
            !add_time(o, "last_seen", m[i].last_ts_ms))
            goto fail;
        if (!m[i].has_last) {
            if (!cJSON_AddNullToObject(o, "last_reading"))
                goto fail;
            continue;
        }
        if (!(last = reading_json(&m[i].last, false)))
            goto fail;
        cJSON_AddItemToObject(o, "last_reading", last);
    }
    free(m);
    return send_json(c, MHD_HTTP_OK, root);
fail:
    free(m);
    cJSON_Delete(root);
    return send_json(c, MHD_HTTP_OK, NULL);
}

/* Parses a limit: decimal digits only, 1..LIMIT_MAX. */
static int parse_limit(const char *s, int *out)
{
    char *end;
    long v;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > LIMIT_MAX)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

static enum MHD_Result h_readings(struct api *a, struct MHD_Connection *c, const char *meter)
{
    static const char *const names[] = {"from", "to", "limit", NULL};
    struct params p = {.names = names};
    struct store_reading *v = NULL;
    int64_t from = 0, to = INT64_MAX;
    int limit = LIMIT_DEFAULT, n = 0, rc;
    cJSON *root = NULL, *arr;
    char b[48], b2[48];

    if (get_params(c, &p) < 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "%s", p.err);
    if (p.value[0] && time_parse(p.value[0], &from) < 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                          "from: \"%s\" is not a time (ISO 8601 or epoch s/ms)",
                          shown(p.value[0], b, sizeof(b)));
    if (p.value[1] && time_parse(p.value[1], &to) < 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                          "to: \"%s\" is not a time (ISO 8601 or epoch s/ms)",
                          shown(p.value[1], b, sizeof(b)));
    if (p.value[2] && parse_limit(p.value[2], &limit) < 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                          "limit: \"%s\" is not an integer 1..%d", shown(p.value[2], b, sizeof(b)),
                          LIMIT_MAX);
    if (from >= to)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "from: %s is not before to: %s",
                          time_format(from, b, sizeof(b)), time_format(to, b2, sizeof(b2)));

    rc = store_readings(a->st, meter, from, to, limit, &v, &n);
    if (rc == -ENOENT)
        return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "meter \"%s\" not found", meter);
    if (rc < 0)
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "store: %s",
                          strerror(-rc));
    root = cJSON_CreateObject();
    if (!root || !cJSON_AddStringToObject(root, "meter", meter) ||
        !(arr = cJSON_AddArrayToObject(root, "readings")))
        goto fail;
    for (int i = 0; i < n; i++) {
        cJSON *o = reading_json(&v[i], true);
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
    }
    free(v);
    return send_json(c, MHD_HTTP_OK, root);
fail:
    free(v);
    cJSON_Delete(root);
    return send_json(c, MHD_HTTP_OK, NULL);
}

static bool add_time_or_null(cJSON *o, const char *name, bool has, int64_t ms)
{
    return has ? add_time(o, name, ms) : cJSON_AddNullToObject(o, name) != NULL;
}

static bool add_gauge(cJSON *o, const char *name, bool has, int64_t v)
{
    return has && v >= 0 ? add_int(o, name, v) : cJSON_AddNullToObject(o, name) != NULL;
}

static cJSON *ranges_json(const struct seq_range *r, int n)
{
    cJSON *arr = cJSON_CreateArray();
    char buf[48];

    for (int i = 0; arr && i < n; i++) {
        cJSON *pair;
        snprintf(buf, sizeof(buf), "[%" PRIu64 ",%" PRIu64 "]", r[i].lo, r[i].hi);
        if (!(pair = cJSON_CreateRaw(buf))) {
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddItemToArray(arr, pair);
    }
    return arr;
}

static cJSON *stream_json(const struct store_stream *x)
{
    cJSON *o = cJSON_CreateObject(), *m;

    if (!o || !cJSON_AddStringToObject(o, "stream", x->id) || !add_u64(o, "upto", x->upto) ||
        !add_u64(o, "received", x->received) || !add_u64(o, "duplicates", x->duplicates) ||
        !add_u64(o, "lost", x->lost) || !(m = ranges_json(x->missing, x->nmissing)))
        goto fail;
    cJSON_AddItemToObject(o, "missing", m);
    if (!add_u64(o, "missing_ranges", x->nmissing_total) ||
        !add_int(o, "gaps_open", x->gaps_open) || !add_time(o, "first_seen", x->first_seen_ms) ||
        !add_time(o, "last_seen", x->last_seen_ms))
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* A gateway as GET /api/v1/gateways lists it. */
static cJSON *gateway_json(const struct store_gateway *g)
{
    cJSON *o = cJSON_CreateObject(), *arr;
    bool st = g->status[0] != '\0';

    if (!o || !cJSON_AddStringToObject(o, "id", g->id) ||
        !(st ? cJSON_AddStringToObject(o, "status", g->status)
             : cJSON_AddNullToObject(o, "status")) ||
        !add_time_or_null(o, "status_since", st, g->status_ts_ms) ||
        !add_time_or_null(o, "last_seen", g->has_last_seen, g->last_seen_ms) ||
        !add_gauge(o, "queue_depth", g->has_health, g->health.queue_depth) ||
        !add_gauge(o, "oldest_unsent_age_s", g->has_health, g->health.oldest_age_s) ||
        !(arr = cJSON_AddArrayToObject(o, "streams")))
        goto fail;
    for (int i = 0; i < g->nstreams; i++) {
        cJSON *x = stream_json(&g->streams[i]);
        if (!x)
            goto fail;
        cJSON_AddItemToArray(arr, x);
    }
    if (!add_int(o, "streams_total", g->nstreams_total) || !add_u64(o, "received", g->received) ||
        !add_u64(o, "duplicates", g->duplicates) || !add_u64(o, "lost", g->lost) ||
        !add_u64(o, "gaps", g->gaps) ||
        !add_time_or_null(o, "health_ts", g->has_health, g->health.ts_ms))
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static enum MHD_Result h_gateways(struct api *a, struct MHD_Connection *c)
{
    static const char *const names[] = {NULL};
    struct params p = {.names = names};
    struct store_gateway *g = NULL;
    cJSON *root = NULL, *arr;
    int n = 0, rc;

    if (get_params(c, &p) < 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "%s", p.err);
    rc = store_list_gateways(a->st, &g, &n);
    if (rc < 0)
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "store: %s",
                          strerror(-rc));
    root = cJSON_CreateObject();
    if (!root || !(arr = cJSON_AddArrayToObject(root, "gateways")))
        goto fail;
    for (int i = 0; i < n; i++) {
        cJSON *o = gateway_json(&g[i]);
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
    }
    store_gateways_free(g, n);
    return send_json(c, MHD_HTTP_OK, root);
fail:
    store_gateways_free(g, n);
    cJSON_Delete(root);
    return send_json(c, MHD_HTTP_OK, NULL);
}

static cJSON *loss_json(const struct store_loss_entry *e)
{
    cJSON *o = cJSON_CreateObject();

    if (!o || !cJSON_AddStringToObject(o, "stream", e->stream) ||
        !add_u64(o, "first", e->loss.first) || !add_u64(o, "last", e->loss.last) ||
        !add_u64(o, "count", e->loss.count) ||
        !cJSON_AddStringToObject(o, "reason", e->loss.reason) ||
        !add_time(o, "ts", e->loss.ts_ms) || !add_time(o, "received_at", e->received_ms)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static enum MHD_Result h_gateway(struct api *a, struct MHD_Connection *c, const char *id)
{
    static const char *const names[] = {NULL};
    struct params p = {.names = names};
    struct store_gateway g;
    struct store_loss_entry *losses = NULL;
    char *health = NULL;
    cJSON *root = NULL, *h, *arr;
    int nl = 0, rc;

    if (get_params(c, &p) < 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "%s", p.err);
    rc = store_get_gateway(a->st, id, &g, &health, &losses, &nl);
    if (rc == -ENOENT)
        return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "gateway \"%s\" not found", id);
    if (rc < 0)
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "store: %s",
                          strerror(-rc));
    if (!(root = gateway_json(&g)))
        goto fail;
    /* stored only after validation (msg_parse_health), so it parses */
    h = health ? cJSON_Parse(health) : cJSON_CreateNull();
    if (!h)
        goto fail;
    cJSON_AddItemToObject(root, "health", h);
    if (!(arr = cJSON_AddArrayToObject(root, "losses")))
        goto fail;
    for (int i = 0; i < nl; i++) {
        cJSON *o = loss_json(&losses[i]);
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
    }
    store_gateway_clear(&g);
    free(health);
    free(losses);
    return send_json(c, MHD_HTTP_OK, root);
fail:
    store_gateway_clear(&g);
    free(health);
    free(losses);
    cJSON_Delete(root);
    return send_json(c, MHD_HTTP_OK, NULL);
}

enum route {
    RT_NONE,
    RT_HEALTH,
    RT_METERS,
    RT_READINGS,
    RT_BAD_METER,
    RT_GATEWAYS,
    RT_GATEWAY,
    RT_BAD_GATEWAY
};

/* Copies the n bytes at s to id when they are a valid id (1..63 of [A-Za-z0-9_.-]). */
static bool take_id(const char *s, size_t n, char *id)
{
    if (n == 0 || n >= WIRE_ID_MAX)
        return false;
    memcpy(id, s, n);
    id[n] = '\0';
    return wire_id_valid(id);
}

/* Maps a path to a route; for RT_READINGS and RT_GATEWAY copies the id to id. */
static enum route route(const char *url, char *id)
{
    static const char mp[] = "/api/v1/meters/", gp[] = "/api/v1/gateways/";
    const char *p, *slash;

    if (strcmp(url, "/healthz") == 0)
        return RT_HEALTH;
    if (strcmp(url, "/api/v1/meters") == 0)
        return RT_METERS;
    if (strcmp(url, "/api/v1/gateways") == 0)
        return RT_GATEWAYS;
    if (strncmp(url, gp, sizeof(gp) - 1) == 0) {
        p = url + sizeof(gp) - 1;
        if (strchr(p, '/'))
            return RT_NONE;
        return take_id(p, strlen(p), id) ? RT_GATEWAY : RT_BAD_GATEWAY;
    }
    if (strncmp(url, mp, sizeof(mp) - 1) != 0)
        return RT_NONE;
    p = url + sizeof(mp) - 1;
    slash = strchr(p, '/');
    if (!slash || strcmp(slash, "/readings") != 0)
        return RT_NONE;
    return take_id(p, (size_t)(slash - p), id) ? RT_READINGS : RT_BAD_METER;
}

/* The 400 for an invalid id in the path: what (meter, gateway), the id as given. */
static enum MHD_Result bad_id(struct MHD_Connection *c, const char *what, const char *id, size_t n)
{
    char raw[WIRE_ID_MAX + 8], b[48];

    snprintf(raw, sizeof(raw), "%.*s", n > WIRE_ID_MAX ? WIRE_ID_MAX : (int)n, id);
    return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                      "%s: \"%s\" is not a %s id (1..63 of [A-Za-z0-9_.-])", what,
                      shown(raw, b, sizeof(b)), what);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    static int first_call_seen;
    struct api *a = cls;
    char id[WIRE_ID_MAX], b[48];
    enum route rt = route(url, id);

    /* Errors are answered on the first call, before any body is read (libmicrohttpd then
     * closes the connection). A good request is answered on the second call, once the
     * request is complete, so that the connection can be kept alive. */
    if (rt == RT_NONE)
        return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path: %s",
                          shown(url, b, sizeof(b)));
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                          "%s: only GET and HEAD", shown(method, b, sizeof(b)));
    if (!*con_cls) {
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if ((cl && strcmp(cl, "0") != 0) ||
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
            return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "a %s has no body", method);
        *con_cls = &first_call_seen;
        return MHD_YES;
    }
    if (*upload_data_size)
        return MHD_NO; /* a body we were not told about: drop the connection */
    log_debug("http: %s %s", method, shown(url, b, sizeof(b)));
    switch (rt) {
    case RT_HEALTH:
        return h_health(a, c);
    case RT_METERS:
        return h_meters(a, c);
    case RT_READINGS:
        return h_readings(a, c, id);
    case RT_GATEWAYS:
        return h_gateways(a, c);
    case RT_GATEWAY:
        return h_gateway(a, c, id);
    case RT_BAD_GATEWAY: {
        const char *p = url + strlen("/api/v1/gateways/");
        return bad_id(c, "gateway", p, strlen(p));
    }
    default: {
        const char *p = url + strlen("/api/v1/meters/");
        return bad_id(c, "meter", p, (size_t)(strchr(p, '/') - p));
    }
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_warnx("http: %s", msg);
}

int api_start(const struct cfg_http *cfg, store_t *st, ingest_t *in, api_t **out, char *err,
              size_t errlen)
{
    const union MHD_DaemonInfo *di;
    struct sockaddr_in sa;
    struct api *a;

    *out = NULL;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->bind, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "http.bind: %s is not an IPv4 address", cfg->bind);
        return -EINVAL;
    }
    a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    a->st = st;
    a->in = in;
    a->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, (uint16_t)cfg->port,
        NULL, NULL, handle, a, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first: see MHD */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONN_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY, MHD_OPTION_END);
    if (!a->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (see the message above)", cfg->bind,
                 cfg->port);
        free(a);
        return -EADDRNOTAVAIL;
    }
    di = MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_BIND_PORT);
    a->port = di && di->port ? di->port : cfg->port;
    *out = a;
    return 0;
}

int api_port(const api_t *a)
{
    return a->port;
}

void api_stop(api_t *a)
{
    if (!a)
        return;
    if (a->d)
        MHD_stop_daemon(a->d);
    free(a);
}
