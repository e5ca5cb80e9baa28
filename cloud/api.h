/*
 * api: meter-cloud's HTTP API (libmicrohttpd), JSON in and out. docs/api.md lists the
 * endpoints. Requests are served on libmicrohttpd's own thread; handlers read the store
 * and ingest's state, and never write.
 *
 * Not yet here: authentication, the dashboard's static files, SSE, /metrics.
 *
 * Errors: int functions return 0 or a negative errno.
 */
#ifndef MLK_CLOUD_API_H
#define MLK_CLOUD_API_H

#include "config.h"
#include "ingest.h"
#include "store.h"

#include <stddef.h>

typedef struct api api_t;

/* Starts listening on cfg->bind:cfg->port (port 0: a free one, see api_port). st and in
 * must outlive the server. On failure writes the reason to err (errlen bytes). */
int api_start(const struct cfg_http *cfg, store_t *st, ingest_t *in, api_t **out, char *err,
              size_t errlen);

/* The port the server listens on. */
int api_port(const api_t *a);

/* Stops the server (waits for requests being served) and frees a; NULL is allowed. */
void api_stop(api_t *a);

#endif
