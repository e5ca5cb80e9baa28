/*
 * api_ext.h: what api_registry.c and api_usage.c (the registry, usage, KPI, series and
 * export endpoints) share beyond api_int.h: their configuration, query strings with
 * lists, and JSON numbers. Only for those two files.
 */
#ifndef MLK_CLOUD_API_EXT_H
#define MLK_CLOUD_API_EXT_H

#include "api_int.h"
#include "config.h"
#include "store.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#define APX_PARAMS_MAX 8
#define APX_VALUE_MAX 64        /* a query value; a list (meters=) may be longer */
#define APX_LIST_VALUE_MAX 4096 /* ... up to this */

/* The configuration of these endpoints, set by api_usage_setup(). */
extern const struct cfg_rollup *apx_rollup;
extern const struct cfg_registry *apx_registry;

/* Query parameters: names lists the accepted ones (NULL-terminated, at most
 * APX_PARAMS_MAX); list_name, when not NULL, is the one that may be long. */
struct apx_params {
    const char *const *names;
    const char *list_name;
    const char *value[APX_PARAMS_MAX];
    char err[200];
};

/* Collects r's query string into p; on a bad one sends the 400, returns -EINVAL, *ret set. */
int apx_params(struct api_req *r, struct apx_params *p, enum MHD_Result *ret);
/* The value of name, or NULL. */
const char *apx_param(const struct apx_params *p, const char *name);

/* Adds v with the fewest digits that read back exactly (null when not finite). */
bool apx_add_double(cJSON *o, const char *name, double v);
cJSON *apx_double(double v);
/* A reading as GET .../readings shows it; with_meter adds "meter". */
cJSON *apx_reading_json(const struct store_reading *sr, bool with_meter);

/* The 500 for a store error rc. */
enum MHD_Result apx_store_error(struct api_req *r, int rc);

#endif
