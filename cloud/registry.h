/*
 * registry: validation of the meter registry and of sites, as the API receives them
 * (JSON bodies of POST and PATCH). Pure: it checks and fills the store's structs; the
 * store keeps them (store.h, "registry, rollups and usage").
 *
 * Meters: "id" (create only), "gateway" and "site" (required on create), "region",
 * "area", "dwelling_type" (optional, null clears; checked against the registry lists of
 * the configuration: an area must be one of its region's areas), "prepaid" (boolean),
 * "replaced_at" (PATCH only: the time the meter was replaced by a new one; ISO 8601 or
 * epoch). Sites: "id" (create only), "title", "tz" (an IANA zone this machine knows;
 * required on create), "tariff" (null, or {"price_per_kwh": number >= 0, "currency":
 * "EUR"}). Unknown fields are errors.
 *
 * Errors: -EINVAL with field (the JSON key at fault) and msg (what is wrong) filled.
 */
#ifndef MLK_CLOUD_REGISTRY_H
#define MLK_CLOUD_REGISTRY_H

#include "config.h"
#include "store.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REGISTRY_FIELD_MAX 32
#define REGISTRY_MSG_MAX 200

struct registry_error {
    char field[REGISTRY_FIELD_MAX];
    char msg[REGISTRY_MSG_MAX];
};

/* Applies body to *r: on create r starts empty and must end complete; on update r holds
 * the stored registration and body changes some of it. *replaced_at (when *has_replaced)
 * is a replacement event to record. */
int registry_meter_apply(const struct cfg_registry *cfg, const cJSON *body, bool create,
                         struct store_reg *r, bool *has_replaced, int64_t *replaced_at,
                         struct registry_error *e);

/* The same for a site. */
int registry_site_apply(const cJSON *body, bool create, struct store_site *s,
                        struct registry_error *e);

#endif
