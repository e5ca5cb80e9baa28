/*
 * api: see api.h. libmicrohttpd parses HTTP; this file routes, authenticates, reads
 * request bodies, validates query strings and writes JSON. The endpoints of api_*.c are
 * routed from route_tables[] below (api_int.h says how to add some).
 *
 * Threads: one per connection (a bounded number, each with an idle timeout). A command
 * waits up to http.command_timeout_ms for its gateway, and a login spends tens of ms in
 * PBKDF2: with one thread for all, either would stall every other request. Suspending
 * the connection (MHD_suspend_connection) while a command waits would save the threads,
 * but it needs a timer and a hand-over between threads for each command; at CONN_LIMIT
 * connections, blocking a thread per request is simpler and bounded.
 *
 * Every response is JSON with Content-Type application/json, errors included:
 * {"error":{"code":"...","message":"..."}}. A message that quotes a client's input quotes
 * it shortened and with anything but printable ASCII replaced by '?'.
 */
#include "api.h"

#include "api_int.h"
#include "auth.h"
#include "events.h"
#include "log.h"
#include "msg.h"
#include "timeutil.h"
#include "web.h"
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

const char *api_shown(const char *s, char *buf, size_t len)
{
    return shown(s, buf, len);
}

/* Sends body (malloc'd, consumed) with status and one optional header (name NULL: none). */
static enum MHD_Result send_body(struct MHD_Connection *c, unsigned int status, char *body,
                                 const char *name, const char *value)
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
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (name)
        MHD_add_response_header(r, name, value);
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Sends root (consumed) with status and one optional header; a 500 when it cannot be
 * printed. */
static enum MHD_Result send_json_hdr(struct MHD_Connection *c, unsigned int status, cJSON *root,
                                     const char *name, const char *value)
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
        name = NULL;
    }
    return send_body(c, status, body, name, value);
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned int status, cJSON *root)
{
    return send_json_hdr(c, status, root, NULL, NULL);
}

enum MHD_Result api_send_json(struct MHD_Connection *c, unsigned int status, cJSON *root)
{
    return send_json_hdr(c, status, root, NULL, NULL);
}

enum MHD_Result api_send_json_hdr(struct MHD_Connection *c, unsigned int status, cJSON *root,
                                  const char *name, const char *value)
{
    return send_json_hdr(c, status, root, name, value);
}

static enum MHD_Result send_verror(struct MHD_Connection *c, unsigned int status, const char *code,
                                   const char *fmt, va_list ap)
{
    cJSON *root = cJSON_CreateObject(), *e;
    char msg[256];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (!root || !(e = cJSON_AddObjectToObject(root, "error")) ||
        !cJSON_AddStringToObject(e, "code", code) || !cJSON_AddStringToObject(e, "message", msg)) {
        cJSON_Delete(root);
        return send_json(c, status, NULL);
    }
    return send_json(c, status, root);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned int status, const char *code,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned int status, const char *code,
                                  const char *fmt, ...)
{
    enum MHD_Result ret;
    va_list ap;

    va_start(ap, fmt);
    ret = send_verror(c, status, code, fmt, ap);
    va_end(ap);
    return ret;
}

enum MHD_Result api_send_error(struct MHD_Connection *c, unsigned int status, const char *code,
                               const char *fmt, ...)
{
    enum MHD_Result ret;
    va_list ap;

    va_start(ap, fmt);
    ret = send_verror(c, status, code, fmt, ap);
    va_end(ap);
    return ret;
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

bool api_add_time(cJSON *o, const char *name, int64_t ms)
{
    return add_time(o, name, ms);
}

bool api_add_int(cJSON *o, const char *name, int64_t v)
{
    return add_int(o, name, v);
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
        !add_u64(o, "commands", s.commands) || !add_u64(o, "replies", s.replies) ||
        !(rej = cJSON_AddObjectToObject(o, "rejects")))
        return false;
    for (int i = 0; i < IC_COUNT; i++)
        if (!add_u64(rej, ingest_cause_name((enum ingest_cause)i), s.rejects[i]))
            return false;
    return true;
}

static enum MHD_Result h_health(struct api_req *r)
{
    struct api *a = r->a;
    struct MHD_Connection *c = r->c;
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

int api_no_params(struct api_req *r, enum MHD_Result *ret)
{
    static const char *const names[] = {NULL};
    struct params p = {.names = names};

    if (get_params(r->c, &p) < 0) {
        *ret = send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "%s", p.err);
        return -EINVAL;
    }
    return 0;
}

cJSON *api_body_object(struct api_req *r, const char *const *keys, enum MHD_Result *ret)
{
    const char *end = NULL;
    const cJSON *v, *w;
    cJSON *root;
    char b[48];

    if (!r->body) {
        *ret =
            send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    if (!msg_utf8_valid(r->body, r->body_len)) {
        *ret = send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request", "the body is not valid UTF-8");
        return NULL;
    }
    root = cJSON_ParseWithLengthOpts(r->body, r->body_len, &end, 0);
    while (root && end && end < r->body + r->body_len && strchr(" \t\r\n", *end))
        end++;
    if (!root || !cJSON_IsObject(root) || (end && end != r->body + r->body_len)) {
        cJSON_Delete(root);
        *ret = send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                          "the body is not one JSON object");
        return NULL;
    }
    cJSON_ArrayForEach(v, root)
    {
        int i;
        for (i = 0; keys[i] && strcmp(keys[i], v->string) != 0; i++)
            ;
        if (!keys[i]) {
            *ret = send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request", "%s: unknown key",
                              shown(v->string, b, sizeof(b)));
            goto fail;
        }
        for (w = root->child; w != v; w = w->next)
            if (strcmp(w->string, v->string) == 0) {
                *ret = send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request", "%s: given twice",
                                  v->string);
                goto fail;
            }
    }
    return root;
fail:
    cJSON_Delete(root);
    return NULL;
}

static enum MHD_Result h_meters(struct api_req *r)
{
    struct api *a = r->a;
    struct MHD_Connection *c = r->c;
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

static enum MHD_Result h_readings(struct api_req *r)
{
    struct api *a = r->a;
    struct MHD_Connection *c = r->c;
    const char *meter = r->param[0];
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

static enum MHD_Result h_gateways(struct api_req *r)
{
    struct api *a = r->a;
    struct MHD_Connection *c = r->c;
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

static enum MHD_Result h_gateway(struct api_req *r)
{
    struct api *a = r->a;
    struct MHD_Connection *c = r->c;
    const char *id = r->param[0];
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

/* ---- routing ---------------------------------------------------------------------------
 * A request is matched against the route tables (api_int.h) in order. Then, all on the
 * first call of the handler, before any body is read: 404 (no route has the path), 405
 * (one has, not with this method), 401/403 (token and role), 400 (a path parameter), and
 * the body's headers (413, 415, or 400 for a body where none belongs). A request that
 * passes is answered on the last call, once its body (at most API_BODY_MAX bytes) is in. */

static const struct api_route core_routes[] = {
    {"GET", "/healthz", AUTH_ROLE_NONE, h_health},
    {"GET", "/api/v1/meters", AUTH_ROLE_VIEWER, h_meters},
    {"GET", "/api/v1/meters/{meter}/readings", AUTH_ROLE_VIEWER, h_readings},
    {"GET", "/api/v1/gateways", AUTH_ROLE_VIEWER, h_gateways},
    {"GET", "/api/v1/gateways/{gateway}", AUTH_ROLE_VIEWER, h_gateway},
    {NULL, NULL, AUTH_ROLE_NONE, NULL},
};

/* Every route table. Add new ones here. */
/* clang-format off */
static const struct api_route *const route_tables[] = {
    api_registry_routes, /* first: its GET /api/v1/meters (with the registry) wins */
    api_usage_routes,
    core_routes,
    api_auth_routes,
    api_cmd_routes,
    api_admin_routes,
    api_stream_routes,
    api_alerts_routes,
};
/* clang-format on */

#define NTABLES (sizeof(route_tables) / sizeof(route_tables[0]))

static bool token_id_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 18 || s[0] == '0')
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* How each kind of path parameter is checked; a name not listed is checked as an id. */
static const struct param_kind {
    const char *name;
    bool (*valid)(const char *s);
    const char *what; /* completes "is not ..." */
} param_kinds[] = {
    {"id", wire_id_valid, "an id (1..63 of [A-Za-z0-9_.-])"},
    {"meter", wire_id_valid, "a meter id (1..63 of [A-Za-z0-9_.-])"},
    {"gateway", wire_id_valid, "a gateway id (1..63 of [A-Za-z0-9_.-])"},
    {"user", auth_user_name_valid, "a user name (1..64 of [A-Za-z0-9_.@-])"},
    {"token", token_id_valid, "a token id (a positive integer)"},
};

/* A {name} of a pattern: its kind. */
static const struct param_kind *param_kind(const char *name, size_t n)
{
    for (size_t i = 1; i < sizeof(param_kinds) / sizeof(param_kinds[0]); i++)
        if (strlen(param_kinds[i].name) == n && strncmp(param_kinds[i].name, name, n) == 0)
            return &param_kinds[i];
    return &param_kinds[0];
}

/* Matches url against a route's path. A {name} matches one segment, also an empty one
 * (which its check then rejects). On a match fills r->param/param_buf and kinds. */
static bool match(const char *pat, const char *url, struct api_req *r,
                  const struct param_kind **kinds)
{
    int n = 0;

    while (*pat) {
        if (*pat == '{') {
            const char *close = strchr(pat, '}');
            size_t len = strcspn(url, "/");
            if (!close || n == API_PARAMS_MAX)
                return false;
            snprintf(r->param_buf[n], API_PARAM_MAX, "%.*s",
                     len < API_PARAM_MAX ? (int)len : API_PARAM_MAX - 1, url);
            r->param[n] = r->param_buf[n];
            kinds[n++] = param_kind(pat + 1, (size_t)(close - pat - 1));
            pat = close + 1;
            url += len;
            continue;
        }
        if (*pat++ != *url++)
            return false;
    }
    return *url == '\0';
}

/* The route for (method, url); NULL when none. Fills allow with the methods the path has
 * (for a 405) and *path_known when any route has the path. */
static const struct api_route *find_route(const char *method, const char *url, struct api_req *r,
                                          const struct param_kind **kinds, char *allow,
                                          size_t allowlen, bool *path_known)
{
    const struct param_kind *k[API_PARAMS_MAX];
    struct api_req tmp;
    const struct api_route *found = NULL;
    size_t len = 0;

    *path_known = false;
    allow[0] = '\0';
    for (size_t t = 0; t < NTABLES; t++)
        for (const struct api_route *rt = route_tables[t]; rt->method; rt++) {
            memset(&tmp, 0, sizeof(tmp));
            if (!match(rt->path, url, &tmp, k))
                continue;
            *path_known = true;
            if (len < allowlen && !strstr(allow, rt->method))
                len += (size_t)snprintf(
                    allow + len, allowlen - len, "%s%s%s", len ? ", " : "", rt->method,
                    strcmp(rt->method, MHD_HTTP_METHOD_GET) == 0 ? ", HEAD" : "");
            if (!found && strcmp(rt->method, method) == 0) {
                found = rt;
                memcpy(r->param_buf, tmp.param_buf, sizeof(r->param_buf));
                for (int i = 0; i < API_PARAMS_MAX; i++) {
                    r->param[i] = tmp.param[i] ? r->param_buf[i] : NULL;
                    kinds[i] = tmp.param[i] ? k[i] : NULL;
                }
            }
        }
    return found;
}

/* One request's state across the handler's calls; freed by request_done(). */
struct req_state {
    struct api_req r;
    const struct api_route *rt;
    bool body_allowed;
    bool too_large; /* the body (chunked, no Content-Length) outgrew API_BODY_MAX */
    size_t dropped; /* bytes of it discarded since */
    char *body;
    size_t len;
};

static void client_address(struct MHD_Connection *c, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;

    snprintf(out, len, "?");
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)len);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)len);
}

/* The 401, with the header that says which scheme is wanted. */
static enum MHD_Result unauthorized(struct MHD_Connection *c, const char *msg)
{
    cJSON *root = cJSON_CreateObject(), *e;

    if (!root || !(e = cJSON_AddObjectToObject(root, "error")) ||
        !cJSON_AddStringToObject(e, "code", "unauthorized") ||
        !cJSON_AddStringToObject(e, "message", msg)) {
        cJSON_Delete(root);
        root = NULL;
    }
    return api_send_json_hdr(c, MHD_HTTP_UNAUTHORIZED, root, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                             "Bearer");
}

/* Checks the caller's token against the route's role; fills r->who. MHD_YES with *ok when
 * the request may go on; else the answer is queued. */
static enum MHD_Result authorize(struct api_req *r, enum auth_role need, bool *ok)
{
    const char *h =
        MHD_lookup_connection_value(r->c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    int rc;

    *ok = false;
    if (need == AUTH_ROLE_NONE) {
        *ok = true;
        return MHD_YES;
    }
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return unauthorized(r->c, "this needs a token: Authorization: Bearer <token>");
    for (h += 7; *h == ' '; h++)
        ;
    rc = auth_check(r->a->auth, h, &r->who);
    if (rc == -ETIME)
        return unauthorized(r->c, "the session has expired; log in again");
    if (rc == -EACCES)
        return unauthorized(r->c, "the token is not valid (unknown, revoked or malformed)");
    if (rc < 0)
        return send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "auth: %s",
                          strerror(-rc));
    if (r->who.role < need)
        return send_error(r->c, MHD_HTTP_FORBIDDEN, "forbidden",
                          "this needs the %s role; %s has %s", auth_role_name(need), r->who.user,
                          auth_role_name(r->who.role));
    *ok = true;
    return MHD_YES;
}

/* Whether a Content-Type is JSON: application/json, parameters allowed. */
static bool json_type(const char *ct)
{
    size_t n = strlen("application/json");

    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* The handler's first call for a request: everything but the body. */
static enum MHD_Result begin(struct api *a, struct MHD_Connection *c, const char *url,
                             const char *method, void **con_cls)
{
    const struct param_kind *kinds[API_PARAMS_MAX] = {NULL};
    const char *m = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0 ? MHD_HTTP_METHOD_GET : method;
    const char *cl, *te, *ct;
    const struct api_route *rt;
    struct req_state *s;
    char allow[64], b[48];
    bool known, ok, body_allowed;
    enum MHD_Result ret;
    struct api_req r;

    memset(&r, 0, sizeof(r));
    r.a = a;
    r.c = c;
    r.method = m;
    r.url = url;
    if (web_path(a->web, url)) /* the dashboard: "/" and "/static/..." (web.h) */
        return web_serve(a->web, c, url, method);
    rt = find_route(m, url, &r, kinds, allow, sizeof(allow), &known);
    if (!known)
        return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path: %s",
                          shown(url, b, sizeof(b)));
    if (!rt) {
        cJSON *root = cJSON_CreateObject(), *e;
        char msg[128];
        snprintf(msg, sizeof(msg), "%s: only %s", shown(method, b, sizeof(b)), allow);
        if (!root || !(e = cJSON_AddObjectToObject(root, "error")) ||
            !cJSON_AddStringToObject(e, "code", "method_not_allowed") ||
            !cJSON_AddStringToObject(e, "message", msg)) {
            cJSON_Delete(root);
            root = NULL;
        }
        return api_send_json_hdr(c, MHD_HTTP_METHOD_NOT_ALLOWED, root, MHD_HTTP_HEADER_ALLOW,
                                 allow);
    }
    client_address(c, r.client, sizeof(r.client));
    ret = authorize(&r, rt->role, &ok);
    if (!ok)
        return ret;
    for (int i = 0; i < API_PARAMS_MAX; i++)
        if (r.param[i] && !kinds[i]->valid(r.param[i]))
            return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "%s: \"%s\" is not %s",
                              kinds[i]->name, shown(r.param[i], b, sizeof(b)), kinds[i]->what);
    cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    body_allowed = strcmp(m, MHD_HTTP_METHOD_POST) == 0 || strcmp(m, MHD_HTTP_METHOD_PATCH) == 0;
    if (!body_allowed && ((cl && strcmp(cl, "0") != 0) || te))
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "a %s has no body", method);
    if (body_allowed && cl) {
        char *end;
        unsigned long long n;
        errno = 0;
        n = strtoull(cl, &end, 10);
        if (errno || *end || end == cl || n > API_BODY_MAX)
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
                              "the body is larger than %d bytes", API_BODY_MAX);
    }
    if (body_allowed && ((cl && strcmp(cl, "0") != 0) || te) && (!ct || !json_type(ct)))
        return send_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                          "the body must be JSON (Content-Type: application/json)");
    if (!(s = calloc(1, sizeof(*s))))
        return MHD_NO;
    s->r = r;
    for (int i = 0; i < API_PARAMS_MAX; i++)
        s->r.param[i] = r.param[i] ? s->r.param_buf[i] : NULL;
    s->rt = rt;
    s->body_allowed = body_allowed;
    *con_cls = s;
    return MHD_YES;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct req_state *s = *con_cls;
    char b[48];

    if (!s) {
        api_metrics_begin();
        return begin(cls, c, url, method, con_cls);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        char *nb;
        if (!s->body_allowed)
            return MHD_NO; /* a body we were not told about: drop the connection */
        *upload_data_size = 0;
        /* libmicrohttpd cannot answer before the body is in: the rest of a body that is
         * too large is read and dropped, up to a bound, then the connection is */
        if (s->too_large || s->len + n > API_BODY_MAX) {
            s->too_large = true;
            s->dropped += n;
            return s->dropped > 4 * API_BODY_MAX ? MHD_NO : MHD_YES;
        }
        if (!(nb = realloc(s->body, s->len + n + 1)))
            return MHD_NO;
        s->body = nb;
        memcpy(s->body + s->len, upload_data, n);
        s->len += n;
        s->body[s->len] = '\0';
        return MHD_YES;
    }
    if (s->too_large)
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
                          "the body is larger than %d bytes", API_BODY_MAX);
    s->r.body = s->len ? s->body : NULL;
    s->r.body_len = s->len;
    log_debug("http: %s %s%s%s", method, shown(url, b, sizeof(b)), s->r.who.user[0] ? " by " : "",
              s->r.who.user);
    return s->rt->fn(&s->r);
}

static void request_done(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct req_state *s = *con_cls;

    api_metrics_done(c); /* every request ends here, answered from begin() or not */
    if (!s)
        return;
    if (s->body) {
        explicit_bzero(s->body, s->len); /* may hold a password */
        free(s->body);
    }
    explicit_bzero(&s->r.who, sizeof(s->r.who));
    free(s);
    *con_cls = NULL;
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

int api_start(const struct cfg_http *cfg, store_t *st, ingest_t *in, auth_t *auth, api_t **out,
              char *err, size_t errlen)
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
    a->auth = auth;
    a->cfg = *cfg;
    events_open();
    if (web_open(cfg->web_root, &a->web, err, errlen) < 0) {
        free(a);
        return -ENOENT;
    }
    a->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                MHD_USE_AUTO | MHD_USE_ERROR_LOG,
                            (uint16_t)cfg->port, NULL, NULL, handle, a, MHD_OPTION_EXTERNAL_LOGGER,
                            mhd_log, NULL, /* first: see MHD */
                            MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned int)CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned int)CONN_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                            (size_t)CONN_MEMORY, MHD_OPTION_END);
    if (!a->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (see the message above)", cfg->bind,
                 cfg->port);
        web_close(a->web);
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
    /* commands waiting for a gateway end now, so that their threads can be joined */
    ingest_commands_close(a->in);
    events_close(); /* live streams end within a wait (api_stream.c) */
    if (a->d)
        MHD_stop_daemon(a->d);
    web_close(a->web); /* after the server: responses point into it */
    free(a);
}
