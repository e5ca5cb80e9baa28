/*
 * api_registry: the meter registry and sites (docs/api.md, "Registry"). A meter first seen
 * through MQTT is listed with "registered": false until someone registers it (POST); a
 * registered meter may have no readings yet. Validation is registry.c's; errors name the
 * field: {"error":{"code":"bad_field","field":"area","message":"area: ..."}}.
 */
#include "api_ext.h"

#include "registry.h"
#include "timeutil.h"
#include "tz.h"
#include "wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const meter_keys[] = {
    "id", "gateway", "site", "region", "area", "dwelling_type", "prepaid", "replaced_at", NULL};
static const char *const site_keys[] = {"id", "title", "tz", "tariff", NULL};

static enum MHD_Result field_error(struct api_req *r, const struct registry_error *e)
{
    cJSON *root = cJSON_CreateObject(), *o;
    char msg[REGISTRY_FIELD_MAX + REGISTRY_MSG_MAX + 4];

    snprintf(msg, sizeof(msg), "%s: %s", e->field, e->msg);
    if (!root || !(o = cJSON_AddObjectToObject(root, "error")) ||
        !cJSON_AddStringToObject(o, "code", "bad_field") ||
        !cJSON_AddStringToObject(o, "field", e->field) ||
        !cJSON_AddStringToObject(o, "message", msg)) {
        cJSON_Delete(root);
        root = NULL;
    }
    return api_send_json(r->c, MHD_HTTP_BAD_REQUEST, root);
}

static bool add_str_or_null(cJSON *o, const char *name, const char *v)
{
    return v && *v ? cJSON_AddStringToObject(o, name, v) != NULL
                   : cJSON_AddNullToObject(o, name) != NULL;
}

/* A meter as listed: seen (m, may be NULL) and/or registered (g, may be NULL). */
static cJSON *meter_json(const struct store_meter *m, const struct store_reg *g)
{
    cJSON *o = cJSON_CreateObject(), *arr, *last;

    if (!o || !cJSON_AddStringToObject(o, "id", g ? g->id : m->id) ||
        !cJSON_AddBoolToObject(o, "registered", g != NULL) ||
        !add_str_or_null(o, "gateway", g ? g->gateway : m->gateway) ||
        !add_str_or_null(o, "site", g ? g->site : NULL) ||
        !add_str_or_null(o, "region", g ? g->region : NULL) ||
        !add_str_or_null(o, "area", g ? g->area : NULL) ||
        !add_str_or_null(o, "dwelling_type", g ? g->dwelling : NULL) ||
        !cJSON_AddBoolToObject(o, "prepaid", g && g->prepaid) ||
        !(arr = cJSON_AddArrayToObject(o, "replaced")))
        goto fail;
    for (int i = 0; g && i < g->nreplaced; i++) {
        char buf[32];
        cJSON *t = cJSON_CreateString(time_format(g->replaced[i], buf, sizeof(buf)));
        if (!t)
            goto fail;
        cJSON_AddItemToArray(arr, t);
    }
    if (m) {
        if (!api_add_time(o, "first_seen", m->first_seen_ms) ||
            !api_add_time(o, "last_seen", m->last_ts_ms))
            goto fail;
        if (m->has_last) {
            if (!(last = apx_reading_json(&m->last, false)))
                goto fail;
            cJSON_AddItemToObject(o, "last_reading", last);
        } else if (!cJSON_AddNullToObject(o, "last_reading")) {
            goto fail;
        }
    } else if (!cJSON_AddNullToObject(o, "first_seen") || !cJSON_AddNullToObject(o, "last_seen") ||
               !cJSON_AddNullToObject(o, "last_reading")) {
        goto fail;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static enum MHD_Result h_meters(struct api_req *r)
{
    struct store_meter *m = NULL;
    struct store_reg *g = NULL;
    int nm = 0, ng = 0, i = 0, j = 0, rc;
    enum MHD_Result ret;
    cJSON *root = NULL, *arr;

    if (api_no_params(r, &ret) < 0)
        return ret;
    if ((rc = store_list_meters(r->a->st, &m, &nm)) < 0 ||
        (rc = store_reg_list(r->a->st, &g, &ng)) < 0) {
        free(m);
        return apx_store_error(r, rc);
    }
    root = cJSON_CreateObject();
    if (!root || !(arr = cJSON_AddArrayToObject(root, "meters")))
        goto fail;
    /* both sorted by id (byte order): merge */
    while (i < nm || j < ng) {
        int c = i == nm ? 1 : j == ng ? -1 : strcmp(m[i].id, g[j].id);
        cJSON *o = meter_json(c <= 0 ? &m[i] : NULL, c >= 0 ? &g[j] : NULL);
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
        i += c <= 0;
        j += c >= 0;
    }
    free(m);
    free(g);
    return api_send_json(r->c, MHD_HTTP_OK, root);
fail:
    free(m);
    free(g);
    cJSON_Delete(root);
    return api_send_json(r->c, MHD_HTTP_OK, NULL);
}

/* The seen meter called id (*found false when it has no readings). */
static int seen_meter(store_t *st, const char *id, struct store_meter *out, bool *found)
{
    struct store_meter *m = NULL;
    int n = 0, rc;

    *found = false;
    /* the list is the one place the store joins a meter with its newest reading */
    if ((rc = store_list_meters(st, &m, &n)) < 0)
        return rc;
    for (int i = 0; i < n; i++)
        if (strcmp(m[i].id, id) == 0) {
            *out = m[i];
            *found = true;
            break;
        }
    free(m);
    return 0;
}

static enum MHD_Result send_meter(struct api_req *r, unsigned int status, const char *id)
{
    struct store_meter m;
    struct store_reg g;
    bool seen, reg;
    int rc;

    if ((rc = seen_meter(r->a->st, id, &m, &seen)) < 0)
        return apx_store_error(r, rc);
    rc = store_reg_get(r->a->st, id, &g);
    if (rc < 0 && rc != -ENOENT)
        return apx_store_error(r, rc);
    reg = rc == 0;
    if (!seen && !reg)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "meter \"%s\" not found", id);
    return api_send_json(r->c, status, meter_json(seen ? &m : NULL, reg ? &g : NULL));
}

static enum MHD_Result h_meter(struct api_req *r)
{
    enum MHD_Result ret;

    if (api_no_params(r, &ret) < 0)
        return ret;
    return send_meter(r, MHD_HTTP_OK, r->param[0]);
}

static enum MHD_Result reg_write_error(struct api_req *r, int rc, const struct store_reg *g)
{
    if (rc == -EEXIST)
        return api_send_error(r->c, MHD_HTTP_CONFLICT, "conflict",
                              "meter \"%s\" is registered already (PATCH it)", g->id);
    if (rc == -ENXIO) {
        struct registry_error e;
        snprintf(e.field, sizeof(e.field), "site");
        snprintf(e.msg, sizeof(e.msg), "site \"%s\" does not exist (POST /api/v1/sites first)",
                 g->site);
        return field_error(r, &e);
    }
    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found",
                              "meter \"%s\" is not registered", g->id);
    return apx_store_error(r, rc);
}

static enum MHD_Result h_meter_post(struct api_req *r)
{
    struct store_reg g;
    struct registry_error e;
    enum MHD_Result ret;
    int64_t replaced = 0;
    bool has_replaced;
    cJSON *body;
    int rc;

    if (api_no_params(r, &ret) < 0 || !(body = api_body_object(r, meter_keys, &ret)))
        return ret;
    memset(&g, 0, sizeof(g));
    rc = registry_meter_apply(apx_registry, body, true, &g, &has_replaced, &replaced, &e);
    cJSON_Delete(body);
    if (rc < 0)
        return field_error(r, &e);
    if ((rc = store_reg_put(r->a->st, &g, true, now_ms())) < 0)
        return reg_write_error(r, rc, &g);
    return send_meter(r, MHD_HTTP_CREATED, g.id);
}

static enum MHD_Result h_meter_patch(struct api_req *r)
{
    struct store_reg g;
    struct registry_error e;
    enum MHD_Result ret;
    int64_t replaced = 0;
    bool has_replaced;
    cJSON *body;
    int rc;

    if (api_no_params(r, &ret) < 0 || !(body = api_body_object(r, meter_keys, &ret)))
        return ret;
    rc = store_reg_get(r->a->st, r->param[0], &g);
    if (rc < 0) {
        cJSON_Delete(body);
        if (rc == -ENOENT)
            return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found",
                                  "meter \"%s\" is not registered (POST /api/v1/meters)",
                                  r->param[0]);
        return apx_store_error(r, rc);
    }
    rc = registry_meter_apply(apx_registry, body, false, &g, &has_replaced, &replaced, &e);
    cJSON_Delete(body);
    if (rc < 0)
        return field_error(r, &e);
    if ((rc = store_reg_put(r->a->st, &g, false, now_ms())) < 0)
        return reg_write_error(r, rc, &g);
    if (has_replaced && (rc = store_reg_replaced(r->a->st, g.id, replaced)) < 0)
        return apx_store_error(r, rc);
    return send_meter(r, MHD_HTTP_OK, g.id);
}

static enum MHD_Result deleted(struct api_req *r, const char *id)
{
    cJSON *root = cJSON_CreateObject();

    if (root && !cJSON_AddStringToObject(root, "deleted", id)) {
        cJSON_Delete(root);
        root = NULL;
    }
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

static enum MHD_Result h_meter_delete(struct api_req *r)
{
    enum MHD_Result ret;
    int rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    rc = store_reg_delete(r->a->st, r->param[0]);
    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found",
                              "meter \"%s\" is not registered", r->param[0]);
    if (rc < 0)
        return apx_store_error(r, rc);
    return deleted(r, r->param[0]);
}

static cJSON *site_json(const struct store_site *s)
{
    cJSON *o = cJSON_CreateObject(), *t;

    if (!o || !cJSON_AddStringToObject(o, "id", s->id) || !add_str_or_null(o, "title", s->title) ||
        !cJSON_AddStringToObject(o, "tz", s->tz))
        goto fail;
    if (s->has_tariff) {
        if (!(t = cJSON_AddObjectToObject(o, "tariff")) ||
            !apx_add_double(t, "price_per_kwh", s->price) ||
            !cJSON_AddStringToObject(t, "currency", s->currency))
            goto fail;
    } else if (!cJSON_AddNullToObject(o, "tariff")) {
        goto fail;
    }
    if (!api_add_int(o, "meters", s->meters) || !api_add_time(o, "created", s->created_ms) ||
        !api_add_time(o, "updated", s->updated_ms))
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static enum MHD_Result h_sites(struct api_req *r)
{
    struct store_site *s = NULL;
    enum MHD_Result ret;
    cJSON *root, *arr;
    int n = 0, rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    if ((rc = store_site_list(r->a->st, &s, &n)) < 0)
        return apx_store_error(r, rc);
    root = cJSON_CreateObject();
    if (!root || !(arr = cJSON_AddArrayToObject(root, "sites")))
        goto fail;
    for (int i = 0; i < n; i++) {
        cJSON *o = site_json(&s[i]);
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
    }
    free(s);
    return api_send_json(r->c, MHD_HTTP_OK, root);
fail:
    free(s);
    cJSON_Delete(root);
    return api_send_json(r->c, MHD_HTTP_OK, NULL);
}

static enum MHD_Result send_site(struct api_req *r, unsigned int status, const char *id)
{
    struct store_site s;
    int rc = store_site_get(r->a->st, id, &s);

    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "site \"%s\" not found", id);
    if (rc < 0)
        return apx_store_error(r, rc);
    return api_send_json(r->c, status, site_json(&s));
}

static enum MHD_Result h_site(struct api_req *r)
{
    enum MHD_Result ret;

    if (api_no_params(r, &ret) < 0)
        return ret;
    return send_site(r, MHD_HTTP_OK, r->param[0]);
}

static enum MHD_Result h_site_write(struct api_req *r, bool create)
{
    struct store_site s;
    struct registry_error e;
    enum MHD_Result ret;
    cJSON *body;
    int rc;

    if (api_no_params(r, &ret) < 0 || !(body = api_body_object(r, site_keys, &ret)))
        return ret;
    memset(&s, 0, sizeof(s));
    if (!create && (rc = store_site_get(r->a->st, r->param[0], &s)) < 0) {
        cJSON_Delete(body);
        if (rc == -ENOENT)
            return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "site \"%s\" not found",
                                  r->param[0]);
        return apx_store_error(r, rc);
    }
    rc = registry_site_apply(body, create, &s, &e);
    cJSON_Delete(body);
    if (rc < 0)
        return field_error(r, &e);
    rc = store_site_put(r->a->st, &s, create, now_ms());
    if (rc == -EEXIST)
        return api_send_error(r->c, MHD_HTTP_CONFLICT, "conflict",
                              "site \"%s\" exists already (PATCH it)", s.id);
    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "site \"%s\" not found", s.id);
    if (rc < 0)
        return apx_store_error(r, rc);
    return send_site(r, create ? MHD_HTTP_CREATED : MHD_HTTP_OK, s.id);
}

static enum MHD_Result h_site_post(struct api_req *r)
{
    return h_site_write(r, true);
}

static enum MHD_Result h_site_patch(struct api_req *r)
{
    return h_site_write(r, false);
}

static enum MHD_Result h_site_delete(struct api_req *r)
{
    enum MHD_Result ret;
    int rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    rc = store_site_delete(r->a->st, r->param[0]);
    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "site \"%s\" not found",
                              r->param[0]);
    if (rc == -EBUSY)
        return api_send_error(r->c, MHD_HTTP_CONFLICT, "conflict",
                              "site \"%s\" still has registered meters", r->param[0]);
    if (rc < 0)
        return apx_store_error(r, rc);
    return deleted(r, r->param[0]);
}

/* The choices the registry accepts, for forms: regions with their areas, dwelling types. */
static enum MHD_Result h_options(struct api_req *r)
{
    const struct cfg_registry *g = apx_registry;
    enum MHD_Result ret;
    cJSON *root, *regions, *dw;

    if (api_no_params(r, &ret) < 0)
        return ret;
    root = cJSON_CreateObject();
    if (!root || !(regions = cJSON_AddArrayToObject(root, "regions")) ||
        !(dw = cJSON_AddArrayToObject(root, "dwelling_types")))
        goto fail;
    for (int i = 0; g && i < g->nregions; i++) {
        cJSON *o = cJSON_CreateObject(), *areas;
        if (!o)
            goto fail;
        cJSON_AddItemToArray(regions, o);
        if (!cJSON_AddStringToObject(o, "name", g->regions[i].name) ||
            !(areas = cJSON_AddArrayToObject(o, "areas")))
            goto fail;
        for (int j = 0; j < g->regions[i].nareas; j++) {
            cJSON *a = cJSON_CreateString(g->regions[i].areas[j]);
            if (!a)
                goto fail;
            cJSON_AddItemToArray(areas, a);
        }
    }
    for (int i = 0; g && i < g->ndwellings; i++) {
        cJSON *d = cJSON_CreateString(g->dwellings[i]);
        if (!d)
            goto fail;
        cJSON_AddItemToArray(dw, d);
    }
    return api_send_json(r->c, MHD_HTTP_OK, root);
fail:
    cJSON_Delete(root);
    return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
}

/* Listed before api.c's core routes: GET /api/v1/meters is this file's (with the registry). */
const struct api_route api_registry_routes[] = {
    {"GET", "/api/v1/meters", AUTH_ROLE_VIEWER, h_meters},
    {"POST", "/api/v1/meters", AUTH_ROLE_OPERATOR, h_meter_post},
    {"GET", "/api/v1/meters/{meter}", AUTH_ROLE_VIEWER, h_meter},
    {"PATCH", "/api/v1/meters/{meter}", AUTH_ROLE_OPERATOR, h_meter_patch},
    {"DELETE", "/api/v1/meters/{meter}", AUTH_ROLE_OPERATOR, h_meter_delete},
    {"GET", "/api/v1/sites", AUTH_ROLE_VIEWER, h_sites},
    {"POST", "/api/v1/sites", AUTH_ROLE_OPERATOR, h_site_post},
    {"GET", "/api/v1/sites/{site}", AUTH_ROLE_VIEWER, h_site},
    {"PATCH", "/api/v1/sites/{site}", AUTH_ROLE_OPERATOR, h_site_patch},
    {"DELETE", "/api/v1/sites/{site}", AUTH_ROLE_OPERATOR, h_site_delete},
    {"GET", "/api/v1/registry/options", AUTH_ROLE_VIEWER, h_options},
    {NULL, NULL, AUTH_ROLE_NONE, NULL},
};
