/*
 * api_int.h: what the files of meter-cloud's HTTP API share: the request as a handler sees
 * it, route tables, and the response helpers. api.c owns the server, routing,
 * authentication and body handling; each api_*.c file has a table of routes and their
 * handlers. Only for cloud/api*.c.
 *
 * Adding endpoints: write a table
 *     const struct api_route api_foo_routes[] = {
 *         {"GET", "/api/v1/meters/{meter}/usage", AUTH_ROLE_VIEWER, h_usage},
 *         {NULL, NULL, AUTH_ROLE_NONE, NULL},
 *     };
 * declare it below, and list it in route_tables[] in api.c. By the time a handler runs,
 * the caller has been authenticated and holds at least the route's role, the path's
 * parameters are valid, and a body (POST, PATCH only) is complete and at most API_BODY_MAX
 * bytes.
 *
 * Handlers run on libmicrohttpd's connection threads (one per connection), so they may
 * block (a command waits for its gateway), but they must be thread-safe; the store and
 * ingest are.
 */
#ifndef MLK_CLOUD_API_INT_H
#define MLK_CLOUD_API_INT_H

#include "api.h"
#include "auth.h"

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define API_BODY_MAX (64 * 1024) /* a request body larger than this gets 413 */
#define API_PARAMS_MAX 2         /* {...} parameters in one path */
#define API_PARAM_MAX 128        /* bytes of one path parameter, NUL included */

struct api {
    struct MHD_Daemon *d;
    store_t *st;
    ingest_t *in;
    auth_t *auth;
    struct web *web; /* the dashboard's static files (web.h) */
    struct cfg_http cfg;
    int port;
};

/* One request, as its handler sees it. */
struct api_req {
    struct api *a;
    struct MHD_Connection *c;
    const char *method; /* "GET" also for HEAD */
    const char *url;    /* the path, percent-decoded by libmicrohttpd */
    /* The path's {...} segments in order, valid for their kind (see api.c, param_kinds):
     * {meter} and {gateway} are ids (wire_id_valid), {user} a user name, {token} a
     * positive decimal number; any other name is an id. */
    const char *param[API_PARAMS_MAX];
    char param_buf[API_PARAMS_MAX][API_PARAM_MAX];
    const char *body; /* POST, PATCH: the body, NUL-terminated (NULL when empty) */
    size_t body_len;
    char client[AUTH_CLIENT_MAX]; /* the peer's address */
    struct auth_principal who;    /* the caller; who.role is AUTH_ROLE_NONE on public routes */
};

typedef enum MHD_Result (*api_fn)(struct api_req *r);

struct api_route {
    const char *method;  /* "GET" (answers HEAD too), "POST", "PATCH", "DELETE"; NULL ends */
    const char *path;    /* literal segments and {name} parameters, e.g. "/api/v1/users/{user}" */
    enum auth_role role; /* the least role; AUTH_ROLE_NONE: no token needed */
    api_fn fn;
};

/* The route tables of the api_*.c files, each ended by an entry with method NULL. */
extern const struct api_route api_auth_routes[];     /* api_auth.c: login, tokens, users */
extern const struct api_route api_cmd_routes[];      /* api_cmd.c: gateway commands */
extern const struct api_route api_admin_routes[];    /* api_admin.c: backups, maintenance */
extern const struct api_route api_registry_routes[]; /* api_registry.c: meters, sites */
extern const struct api_route api_usage_routes[];    /* api_usage.c: usage, KPIs, series */
extern const struct api_route api_stream_routes[];   /* api_stream.c: SSE stream, metrics */
extern const struct api_route api_alerts_routes[];   /* api_alerts.c: alerts and their rules */

/* api_stream.c's request metrics: api_metrics_begin() when a request starts, and
 * api_metrics_done() when it completes (on the connection's thread). */
void api_metrics_begin(void);
void api_metrics_done(struct MHD_Connection *c);

/* Sends root (consumed) as JSON with status; a 500 when it is NULL (out of memory). */
enum MHD_Result api_send_json(struct MHD_Connection *c, unsigned int status, cJSON *root);

/* As api_send_json, with one more response header (name NULL: none). */
enum MHD_Result api_send_json_hdr(struct MHD_Connection *c, unsigned int status, cJSON *root,
                                  const char *name, const char *value);

/* Sends {"error":{"code":code,"message":...}} with status. */
enum MHD_Result api_send_error(struct MHD_Connection *c, unsigned int status, const char *code,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Client input made fit for a message: at most 40 bytes, printable ASCII only. */
const char *api_shown(const char *s, char *buf, size_t len);

/* Adds a time as ISO 8601 UTC with milliseconds, an integer printed exactly. */
bool api_add_time(cJSON *o, const char *name, int64_t ms);
bool api_add_int(cJSON *o, const char *name, int64_t v);

/* The body as a JSON object, strictly: valid UTF-8, one object and nothing after it but
 * white space, no key twice, only keys listed in keys (NULL-terminated). On any failure
 * sends the 400 and returns NULL with *ret set; the caller returns *ret. */
cJSON *api_body_object(struct api_req *r, const char *const *keys, enum MHD_Result *ret);

/* Rejects any query parameter: 0, or sends the 400 and returns -EINVAL with *ret set. */
int api_no_params(struct api_req *r, enum MHD_Result *ret);

#endif
