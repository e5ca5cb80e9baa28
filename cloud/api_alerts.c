/*
 * api_alerts: the alert endpoints (docs/api.md, "Alerts"): the list with filters, one alert
 * with its delivery attempts, the acknowledgement, and the configured rules. The alerts
 * themselves are alerts.c's; this file only reads query strings and writes JSON.
 */
#include "api_alerts.h"

#include "alerts.h"
#include "api_int.h"
#include "quantities.h"
#include "timeutil.h"
#include "wire.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIMIT_DEFAULT 100
#define PARAM_VALUE_MAX 64

static alerts_t *alerts_ctx;

void api_alerts_setup(alerts_t *a)
{
    alerts_ctx = a;
}

static enum MHD_Result unavailable(struct api_req *r)
{
    return api_send_error(r->c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                          "alerts are not running on this server");
}

static enum MHD_Result store_error(struct api_req *r, int rc)
{
    return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "alerts: %s",
                          strerror(-rc));
}

/* Query parameters of GET /api/v1/alerts. */
struct qp {
    const char *state, *meter, *gateway, *limit;
    char err[160];
};

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    struct qp *p = cls;
    const char **slot = !strcmp(key, "state")     ? &p->state
                        : !strcmp(key, "meter")   ? &p->meter
                        : !strcmp(key, "gateway") ? &p->gateway
                        : !strcmp(key, "limit")   ? &p->limit
                                                  : NULL;
    char b[48];

    (void)kind;
    if (!slot) {
        snprintf(p->err, sizeof(p->err), "%s: unknown parameter (state, meter, gateway, limit)",
                 api_shown(key, b, sizeof(b)));
        return MHD_NO;
    }
    if (*slot) {
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
    *slot = value;
    return MHD_YES;
}

/* A positive decimal integer of at most 18 digits; -1 when s is not one. */
static int64_t parse_pos(const char *s)
{
    int64_t v = 0;
    size_t n = strlen(s);

    if (n == 0 || n > 18 || s[0] == '0')
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static enum MHD_Result h_list(struct api_req *r)
{
    struct qp p = {0};
    struct alerts_filter f = {.state = -1, .limit = LIMIT_DEFAULT};
    struct alert *v = NULL;
    cJSON *root, *arr;
    char b[48];
    int n = 0, total = 0, rc;

    if (!alerts_ctx)
        return unavailable(r);
    MHD_get_connection_values(r->c, MHD_GET_ARGUMENT_KIND, collect, &p);
    if (p.err[0])
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter", "%s", p.err);
    if (p.state) {
        if (strcmp(p.state, "open") == 0)
            f.state = ALERT_NONE;
        else if ((f.state = alert_state_parse(p.state)) < 0)
            return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                                  "state: \"%s\" is not open, firing, acknowledged or resolved",
                                  api_shown(p.state, b, sizeof(b)));
    }
    if (p.meter && !wire_id_valid(p.meter))
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                              "meter: \"%s\" is not a meter id (1..63 of [A-Za-z0-9_.-])",
                              api_shown(p.meter, b, sizeof(b)));
    if (p.gateway && !wire_id_valid(p.gateway))
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                              "gateway: \"%s\" is not a gateway id (1..63 of [A-Za-z0-9_.-])",
                              api_shown(p.gateway, b, sizeof(b)));
    if (p.limit) {
        int64_t l = parse_pos(p.limit);
        if (l < 1 || l > ALERT_LIST_MAX)
            return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                                  "limit: \"%s\" is not an integer 1..%d",
                                  api_shown(p.limit, b, sizeof(b)), ALERT_LIST_MAX);
        f.limit = (int)l;
    }
    f.meter = p.meter;
    f.gateway = p.gateway;
    if ((rc = alerts_list(alerts_ctx, &f, &v, &n, &total)) < 0)
        return store_error(r, rc);
    root = cJSON_CreateObject();
    if (!root || !(arr = cJSON_AddArrayToObject(root, "alerts")))
        goto fail;
    for (int i = 0; i < n; i++) {
        cJSON *o = alerts_alert_json(&v[i]);
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
    }
    if (!cJSON_AddNumberToObject(root, "total", total) ||
        !cJSON_AddNumberToObject(root, "limit", f.limit))
        goto fail;
    free(v);
    return api_send_json(r->c, MHD_HTTP_OK, root);
fail:
    free(v);
    cJSON_Delete(root);
    return api_send_json(r->c, MHD_HTTP_OK, NULL);
}

/* The {alert} of the path as an id; on a bad one sends the 400 and returns -1. */
static int64_t alert_id(struct api_req *r, enum MHD_Result *ret)
{
    int64_t id = parse_pos(r->param[0]);
    char b[48];

    if (id < 1)
        *ret = api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_parameter",
                              "alert: \"%s\" is not an alert id (a positive integer)",
                              api_shown(r->param[0], b, sizeof(b)));
    return id;
}

static enum MHD_Result h_get(struct api_req *r)
{
    struct alert al;
    struct alert_delivery *d = NULL;
    enum MHD_Result ret;
    cJSON *root, *arr;
    int64_t id;
    int nd = 0, rc;

    if (!alerts_ctx)
        return unavailable(r);
    if (api_no_params(r, &ret) < 0 || (id = alert_id(r, &ret)) < 1)
        return ret;
    rc = alerts_get(alerts_ctx, id, &al, &d, &nd);
    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "no alert %" PRId64, id);
    if (rc < 0)
        return store_error(r, rc);
    if (!(root = alerts_alert_json(&al)) || !(arr = cJSON_AddArrayToObject(root, "deliveries")))
        goto fail;
    for (int i = 0; i < nd; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
        if (!api_add_int(o, "id", d[i].id) ||
            !cJSON_AddStringToObject(o, "channel", d[i].channel) ||
            !cJSON_AddStringToObject(o, "event", d[i].event) ||
            !cJSON_AddNumberToObject(o, "attempt", d[i].attempt) ||
            !cJSON_AddStringToObject(o, "status", d[i].ok ? "delivered" : "failed") ||
            !(d[i].http_status ? cJSON_AddNumberToObject(o, "code", d[i].http_status)
                               : cJSON_AddNullToObject(o, "code")) ||
            !(d[i].error[0] ? cJSON_AddStringToObject(o, "error", d[i].error)
                            : cJSON_AddNullToObject(o, "error")) ||
            !api_add_time(o, "at", d[i].ts_ms) ||
            !(d[i].next_ms ? api_add_time(o, "retry_at", d[i].next_ms)
                           : cJSON_AddNullToObject(o, "retry_at") != NULL))
            goto fail;
    }
    free(d);
    return api_send_json(r->c, MHD_HTTP_OK, root);
fail:
    free(d);
    cJSON_Delete(root);
    return api_send_json(r->c, MHD_HTTP_OK, NULL);
}

static enum MHD_Result h_ack(struct api_req *r)
{
    static const char *const keys[] = {NULL};
    struct alert al;
    enum MHD_Result ret;
    cJSON *root;
    int64_t id;
    int rc;

    if (!alerts_ctx)
        return unavailable(r);
    if (api_no_params(r, &ret) < 0 || (id = alert_id(r, &ret)) < 1)
        return ret;
    if (r->body) {
        cJSON *body = api_body_object(r, keys, &ret);
        if (!body)
            return ret;
        cJSON_Delete(body);
    }
    rc = alerts_ack(alerts_ctx, id, r->who.user, now_ms(), &al);
    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "no alert %" PRId64, id);
    if (rc == -EALREADY)
        return api_send_error(r->c, MHD_HTTP_CONFLICT, "conflict",
                              "alert %" PRId64 " is resolved: there is nothing to acknowledge", id);
    if (rc < 0)
        return store_error(r, rc);
    root = alerts_alert_json(&al);
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

static enum MHD_Result h_rules(struct api_req *r)
{
    const struct cfg_alerts *c;
    enum MHD_Result ret;
    cJSON *root, *arr, *chs;

    if (!alerts_ctx)
        return unavailable(r);
    if (api_no_params(r, &ret) < 0)
        return ret;
    c = alerts_config(alerts_ctx);
    root = cJSON_CreateObject();
    if (!root || !(arr = cJSON_AddArrayToObject(root, "rules")) ||
        !(chs = cJSON_AddArrayToObject(root, "channels")) ||
        !cJSON_AddNumberToObject(root, "interval_s", c->interval_s) ||
        !cJSON_AddNumberToObject(root, "repeat_s", c->repeat_s))
        goto fail;
    for (int i = 0; i < c->nrules; i++) {
        const struct cfg_alert_rule *ru = &c->rules[i];
        cJSON *o = cJSON_CreateObject(), *names;
        const struct quantity *q;
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
        if (!cJSON_AddStringToObject(o, "name", ru->name) ||
            !cJSON_AddStringToObject(o, "kind", cfg_alert_kind_name(ru->kind)) ||
            !(names = cJSON_AddArrayToObject(o, "channels")))
            goto fail;
        if (cfg_alert_kind_meter(ru->kind) &&
            !(ru->meter[0] ? cJSON_AddStringToObject(o, "meter", ru->meter)
                           : cJSON_AddNullToObject(o, "meter")))
            goto fail;
        if (!(ru->gateway[0] ? cJSON_AddStringToObject(o, "gateway", ru->gateway)
                             : cJSON_AddNullToObject(o, "gateway")))
            goto fail;
        switch (ru->kind) {
        case CFG_ALERT_METER_OFFLINE:
        case CFG_ALERT_GATEWAY_OFFLINE:
            if (!cJSON_AddNumberToObject(o, "after_s", ru->after_s))
                goto fail;
            break;
        case CFG_ALERT_THRESHOLD:
            q = qty_at(ru->quantity);
            if (!cJSON_AddStringToObject(o, "quantity", q ? q->name : "?") ||
                !cJSON_AddNumberToObject(o, ru->below ? "below" : "above", ru->limit) ||
                !cJSON_AddStringToObject(o, "unit", q ? q->unit : "") ||
                !cJSON_AddNumberToObject(o, "for_s", ru->for_s))
                goto fail;
            break;
        case CFG_ALERT_DAILY_USAGE:
            if (!cJSON_AddNumberToObject(o, "limit_kwh", ru->limit))
                goto fail;
            break;
        case CFG_ALERT_BALANCE_DAYS:
            if (!cJSON_AddNumberToObject(o, "days", ru->limit))
                goto fail;
            break;
        default:
            break;
        }
        for (int k = 0; k < ru->nchannels; k++) {
            cJSON *s = cJSON_CreateString(c->channels[ru->channels[k]].name);
            if (!s)
                goto fail;
            cJSON_AddItemToArray(names, s);
        }
    }
    /* channels: names and types only; URLs may carry tokens, and secrets stay inside */
    for (int i = 0; i < c->nchannels; i++) {
        const struct cfg_alert_channel *ch = &c->channels[i];
        cJSON *o = cJSON_CreateObject();
        if (!o)
            goto fail;
        cJSON_AddItemToArray(chs, o);
        if (!cJSON_AddStringToObject(o, "name", ch->name) ||
            !cJSON_AddStringToObject(o, "type",
                                     ch->type == CFG_CHANNEL_EMAIL ? "email" : "webhook") ||
            (ch->type == CFG_CHANNEL_WEBHOOK &&
             !cJSON_AddBoolToObject(o, "signed", ch->secret[0] != '\0')) ||
            (ch->type == CFG_CHANNEL_EMAIL && !cJSON_AddNumberToObject(o, "recipients", ch->nto)))
            goto fail;
    }
    return api_send_json(r->c, MHD_HTTP_OK, root);
fail:
    cJSON_Delete(root);
    return api_send_json(r->c, MHD_HTTP_OK, NULL);
}

/* "rules" comes before "{alert}": both match /api/v1/alerts/rules, and the first wins */
const struct api_route api_alerts_routes[] = {
    {"GET", "/api/v1/alerts", AUTH_ROLE_VIEWER, h_list},
    {"GET", "/api/v1/alerts/rules", AUTH_ROLE_VIEWER, h_rules},
    {"GET", "/api/v1/alerts/{alert}", AUTH_ROLE_VIEWER, h_get},
    {"POST", "/api/v1/alerts/{alert}/ack", AUTH_ROLE_OPERATOR, h_ack},
    {NULL, NULL, AUTH_ROLE_NONE, NULL},
};
