/*
 * api: meter-cloud's HTTP API (libmicrohttpd), JSON in and out. docs/api.md lists the
 * endpoints. Requests are served on libmicrohttpd's threads, one per connection. Every
 * endpoint but login and /healthz needs a token (auth.h); api_int.h is the inside.
 *
 * Not yet here: the dashboard's static files, SSE, /metrics.
 *
 * Errors: int functions return 0 or a negative errno.
 */
#ifndef MLK_CLOUD_API_H
#define MLK_CLOUD_API_H

#include "auth.h"
#include "config.h"
#include "ingest.h"
#include "store.h"

#include <stddef.h>

typedef struct api api_t;

/* Starts listening on cfg->bind:cfg->port (port 0: a free one, see api_port). st, in and
 * auth must outlive the server. On failure writes the reason to err (errlen bytes). */
int api_start(const struct cfg_http *cfg, store_t *st, ingest_t *in, auth_t *auth, api_t **out,
              char *err, size_t errlen);

/* The port the server listens on. */
int api_port(const api_t *a);

/* Stops the server (ends commands waiting for a gateway, waits for requests being served)
 * and frees a; NULL is allowed. */
void api_stop(api_t *a);

/* The registry lists and the rollup and usage rules that the registry and usage endpoints
 * use (api_registry.c, api_usage.c). Call once before api_start(); both must outlive the
 * server. NULL gives the defaults (empty lists). */
void api_usage_setup(const struct cfg_rollup *roll, const struct cfg_registry *reg);

/* The backups the admin endpoints make and serve (api_admin.c); b must outlive the server.
 * Call before api_start(); NULL (the default) answers 503 there. */
struct backup;
void api_admin_setup(struct backup *b);

#endif
