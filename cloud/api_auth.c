/*
 * api_auth: the HTTP side of auth.h: login, logout, who am I, API tokens, users.
 * docs/api.md, "Authentication", describes each endpoint. Request bodies are parsed
 * strictly (api_body_object); passwords and tokens are never logged, and a token is in a
 * response only once, when it is made.
 */
#include "api_int.h"

#include "log.h"
#include "timeutil.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A string member of a body object: NULL when absent; sets *bad when present but not a
 * string. */
static const char *str_member(const cJSON *o, const char *name, bool *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    if (!v)
        return NULL;
    if (!cJSON_IsString(v)) {
        *bad = true;
        return NULL;
    }
    return v->valuestring;
}

static enum MHD_Result store_failed(struct MHD_Connection *c, int rc)
{
    return api_send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "store: %s",
                          strerror(-rc));
}

static cJSON *user_json(const char *name, const char *role)
{
    cJSON *o = cJSON_CreateObject();

    if (o &&
        (!cJSON_AddStringToObject(o, "name", name) || !cJSON_AddStringToObject(o, "role", role))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

#define REFUSAL_LOG_INTERVAL_MS 10000

/* Logs a login refused during a lockout, at most once per REFUSAL_LOG_INTERVAL_MS: a
 * locked-out client may keep trying as fast as it likes, and must not flood the log. */
static void log_refusal(const char *user, const char *client, int retry)
{
    static atomic_llong last = -REFUSAL_LOG_INTERVAL_MS;
    static atomic_ullong unlogged;
    long long now = mono_ms(), prev = atomic_load(&last);

    if (now - prev < REFUSAL_LOG_INTERVAL_MS ||
        !atomic_compare_exchange_strong(&last, &prev, now)) {
        atomic_fetch_add(&unlogged, 1);
        return;
    }
    log_warnx("auth: login of %s from %s refused: too many failures (retry in %d s; %llu more "
              "refused since the last report)",
              auth_user_name_valid(user) ? user : "(not a user name)", client, retry,
              (unsigned long long)atomic_exchange(&unlogged, 0));
}

static enum MHD_Result h_login(struct api_req *r)
{
    static const char *const keys[] = {"username", "password", NULL};
    struct auth_principal who;
    char token[AUTH_SESSION_TOKEN_MAX], ra[16];
    const char *user, *pw;
    cJSON *body, *root = NULL, *u;
    enum MHD_Result ret;
    int64_t expires = 0;
    int rc, retry = 0;
    bool bad = false;

    if (api_no_params(r, &ret) < 0 || !(body = api_body_object(r, keys, &ret)))
        return ret;
    user = str_member(body, "username", &bad);
    pw = str_member(body, "password", &bad);
    if (bad || !user || !pw) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "the body must be {\"username\":\"...\",\"password\":\"...\"}");
    }
    rc = auth_login(r->a->auth, user, pw, r->client, token, &expires, &who, &retry);
    if (pw[0])
        explicit_bzero((char *)pw, strlen(pw));
    if (rc == -EAGAIN) {
        log_refusal(user, r->client, retry);
        cJSON_Delete(body);
        snprintf(ra, sizeof(ra), "%d", retry);
        root = cJSON_CreateObject();
        if (root) {
            cJSON *e = cJSON_AddObjectToObject(root, "error");
            char msg[96];
            snprintf(msg, sizeof(msg), "too many failed logins; try again in %d s", retry);
            if (!e || !cJSON_AddStringToObject(e, "code", "too_many_requests") ||
                !cJSON_AddStringToObject(e, "message", msg)) {
                cJSON_Delete(root);
                root = NULL;
            }
        }
        return api_send_json_hdr(r->c, MHD_HTTP_TOO_MANY_REQUESTS, root,
                                 MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (rc == -EACCES) {
        log_warnx("auth: failed login of %s from %s",
                  auth_user_name_valid(user) ? user : "(not a user name)", r->client);
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                              "wrong user name or password");
    }
    cJSON_Delete(body);
    if (rc < 0)
        return store_failed(r->c, rc);
    log_info("auth: %s logged in from %s", who.user, r->client);
    root = cJSON_CreateObject();
    if (root && (!cJSON_AddStringToObject(root, "token", token) ||
                 !api_add_time(root, "expires", expires) ||
                 !(u = user_json(who.user, auth_role_name(who.role))))) {
        cJSON_Delete(root);
        root = NULL;
    } else if (root) {
        cJSON_AddItemToObject(root, "user", u);
    }
    explicit_bzero(token, sizeof(token));
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

static enum MHD_Result h_logout(struct api_req *r)
{
    static const char *const no_keys[] = {NULL};
    enum MHD_Result ret;
    cJSON *root;
    int rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    if (r->body) { /* none, or an empty object */
        if (!(root = api_body_object(r, no_keys, &ret)))
            return ret;
        cJSON_Delete(root);
    }
    if (!r->who.sid[0])
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "this is an API token: delete it with DELETE /api/v1/tokens/%" PRId64,
                              r->who.token_id);
    if ((rc = auth_logout(r->a->auth, &r->who)) < 0)
        return store_failed(r->c, rc);
    log_info("auth: %s logged out", r->who.user);
    root = cJSON_CreateObject();
    if (root && !cJSON_AddBoolToObject(root, "ok", true)) {
        cJSON_Delete(root);
        root = NULL;
    }
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

static enum MHD_Result h_me(struct api_req *r)
{
    enum MHD_Result ret;
    cJSON *root, *u;

    if (api_no_params(r, &ret) < 0)
        return ret;
    root = cJSON_CreateObject();
    if (!root || !(u = user_json(r->who.user, auth_role_name(r->who.role)))) {
        cJSON_Delete(root);
        return api_send_json(r->c, MHD_HTTP_OK, NULL);
    }
    cJSON_AddItemToObject(root, "user", u);
    if (!cJSON_AddStringToObject(root, "auth", r->who.sid[0] ? "session" : "token") ||
        (r->who.token_id && !api_add_int(root, "token_id", r->who.token_id))) {
        cJSON_Delete(root);
        root = NULL;
    }
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

/* ---- API tokens ---- */

static cJSON *token_json(const struct store_api_token *t)
{
    cJSON *o = cJSON_CreateObject();

    if (!o || !api_add_int(o, "id", t->id) || !cJSON_AddStringToObject(o, "name", t->name) ||
        !cJSON_AddStringToObject(o, "role", t->role) ||
        !cJSON_AddStringToObject(o, "user", t->user) ||
        !api_add_time(o, "created", t->created_ms) ||
        !(t->has_last_used ? api_add_time(o, "last_used", t->last_used_ms)
                           : cJSON_AddNullToObject(o, "last_used") != NULL)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static enum MHD_Result h_token_create(struct api_req *r)
{
    static const char *const keys[] = {"name", "role", "user", NULL};
    char tok[AUTH_API_TOKEN_LEN + 1], why[160];
    struct store_api_token t;
    enum auth_role role = AUTH_ROLE_NONE;
    const char *name, *rs, *owner;
    cJSON *body, *root;
    enum MHD_Result ret;
    bool bad = false;
    int rc;

    if (api_no_params(r, &ret) < 0 || !(body = api_body_object(r, keys, &ret)))
        return ret;
    name = str_member(body, "name", &bad);
    rs = str_member(body, "role", &bad);
    owner = str_member(body, "user", &bad);
    if (bad || !name) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "the body must be {\"name\":\"...\"} with optional \"role\" and "
                              "\"user\" strings");
    }
    if (rs && auth_role_parse(rs, &role) < 0) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "role: not admin, operator or viewer");
    }
    if (owner && !auth_user_name_valid(owner)) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request", "user: not a user name");
    }
    why[0] = '\0';
    rc = auth_make_token(r->a->auth, &r->who, owner ? owner : r->who.user, name, role, tok, &t, why,
                         sizeof(why));
    cJSON_Delete(body);
    switch (rc) {
    case 0:
        break;
    case -EINVAL:
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", why);
    case -EPERM:
        return api_send_error(r->c, MHD_HTTP_FORBIDDEN, "forbidden", "%s", why);
    case -ENOENT:
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "no such user");
    case -EEXIST:
        return api_send_error(r->c, MHD_HTTP_CONFLICT, "conflict", "%s", why);
    default:
        return store_failed(r->c, rc);
    }
    log_info("auth: %s made API token %" PRId64 " (%s) for %s", r->who.user, t.id, t.role, t.user);
    root = token_json(&t);
    if (root && !cJSON_AddStringToObject(root, "token", tok)) {
        cJSON_Delete(root);
        root = NULL;
    }
    explicit_bzero(tok, sizeof(tok));
    return api_send_json(r->c, MHD_HTTP_CREATED, root);
}

static enum MHD_Result h_token_list(struct api_req *r)
{
    struct store_api_token *t = NULL;
    cJSON *root = NULL, *arr;
    enum MHD_Result ret;
    int n = 0, rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    /* an admin sees every token; anyone else their own */
    rc = store_token_list(r->a->st, r->who.role >= AUTH_ROLE_ADMIN ? -1 : r->who.user_id, &t, &n);
    if (rc < 0)
        return store_failed(r->c, rc);
    root = cJSON_CreateObject();
    if (!root || !(arr = cJSON_AddArrayToObject(root, "tokens")))
        goto fail;
    for (int i = 0; i < n; i++) {
        cJSON *o = token_json(&t[i]);
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
    }
    free(t);
    return api_send_json(r->c, MHD_HTTP_OK, root);
fail:
    free(t);
    cJSON_Delete(root);
    return api_send_json(r->c, MHD_HTTP_OK, NULL);
}

static enum MHD_Result h_token_delete(struct api_req *r)
{
    int64_t id = strtoll(r->param[0], NULL, 10); /* checked: 1..18 digits */
    enum MHD_Result ret;
    cJSON *root;
    int rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    rc = store_token_delete(r->a->st, id, r->who.role >= AUTH_ROLE_ADMIN ? -1 : r->who.user_id);
    if (rc == -ENOENT) /* also someone else's: not even its existence is told */
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "no token %" PRId64, id);
    if (rc < 0)
        return store_failed(r->c, rc);
    log_info("auth: %s deleted API token %" PRId64, r->who.user, id);
    root = cJSON_CreateObject();
    if (root && !api_add_int(root, "deleted", id)) {
        cJSON_Delete(root);
        root = NULL;
    }
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

/* ---- users (admin) ---- */

static cJSON *stored_user_json(const struct store_user *u)
{
    cJSON *o = user_json(u->name, u->role);

    if (o && (!api_add_time(o, "created", u->created_ms) ||
              !api_add_time(o, "updated", u->updated_ms))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Answers with {"user":{...}} for name as stored now. */
static enum MHD_Result send_user(struct api_req *r, unsigned int status, const char *name)
{
    struct store_user u;
    cJSON *root, *o;
    int rc;

    if ((rc = store_user_get(r->a->st, name, &u)) < 0)
        return store_failed(r->c, rc);
    explicit_bzero(u.pwhash, sizeof(u.pwhash));
    root = cJSON_CreateObject();
    if (!root || !(o = stored_user_json(&u))) {
        cJSON_Delete(root);
        return api_send_json(r->c, status, NULL);
    }
    cJSON_AddItemToObject(root, "user", o);
    return api_send_json(r->c, status, root);
}

static enum MHD_Result h_user_list(struct api_req *r)
{
    struct store_user *u = NULL;
    cJSON *root = NULL, *arr;
    enum MHD_Result ret;
    int n = 0, rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    if ((rc = store_user_list(r->a->st, &u, &n)) < 0)
        return store_failed(r->c, rc);
    root = cJSON_CreateObject();
    if (!root || !(arr = cJSON_AddArrayToObject(root, "users")))
        goto fail;
    for (int i = 0; i < n; i++) {
        cJSON *o = stored_user_json(&u[i]);
        if (!o)
            goto fail;
        cJSON_AddItemToArray(arr, o);
    }
    explicit_bzero(u, (size_t)n * sizeof(*u));
    free(u);
    return api_send_json(r->c, MHD_HTTP_OK, root);
fail:
    explicit_bzero(u, (size_t)n * sizeof(*u));
    free(u);
    cJSON_Delete(root);
    return api_send_json(r->c, MHD_HTTP_OK, NULL);
}

static enum MHD_Result h_user_create(struct api_req *r)
{
    static const char *const keys[] = {"name", "role", "password", NULL};
    const char *name, *rs, *pw;
    enum auth_role role = AUTH_ROLE_NONE;
    enum MHD_Result ret;
    char why[160], copy[STORE_USER_NAME_MAX];
    cJSON *body;
    bool bad = false;
    int rc;

    if (api_no_params(r, &ret) < 0 || !(body = api_body_object(r, keys, &ret)))
        return ret;
    name = str_member(body, "name", &bad);
    rs = str_member(body, "role", &bad);
    pw = str_member(body, "password", &bad);
    if (bad || !name || !rs || !pw) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "the body must be {\"name\":\"...\",\"role\":\"...\",\"password\":"
                              "\"...\"}");
    }
    if (auth_role_parse(rs, &role) < 0) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "role: not admin, operator or viewer");
    }
    why[0] = '\0';
    rc = auth_add_user(r->a->auth, name, role, pw, false, why, sizeof(why));
    explicit_bzero((char *)pw, strlen(pw));
    snprintf(copy, sizeof(copy), "%s", name);
    cJSON_Delete(body);
    if (rc == -EINVAL)
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", why);
    if (rc == -EEXIST)
        return api_send_error(r->c, MHD_HTTP_CONFLICT, "conflict", "%s", why);
    if (rc < 0)
        return store_failed(r->c, rc);
    log_info("auth: %s added user %s (%s)", r->who.user, copy, auth_role_name(role));
    return send_user(r, MHD_HTTP_CREATED, copy);
}

static enum MHD_Result h_user_update(struct api_req *r)
{
    static const char *const keys[] = {"role", "password", NULL};
    const char *name = r->param[0], *rs, *pw;
    enum auth_role role = AUTH_ROLE_NONE;
    enum MHD_Result ret;
    char why[160];
    cJSON *body;
    bool bad = false;
    int rc;

    if (api_no_params(r, &ret) < 0 || !(body = api_body_object(r, keys, &ret)))
        return ret;
    rs = str_member(body, "role", &bad);
    pw = str_member(body, "password", &bad);
    if (bad || (!rs && !pw)) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "the body must have \"role\" and/or \"password\" (strings)");
    }
    if (rs && auth_role_parse(rs, &role) < 0) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "role: not admin, operator or viewer");
    }
    why[0] = '\0';
    rc = auth_update_user(r->a->auth, name, role, pw, why, sizeof(why));
    if (pw)
        explicit_bzero((char *)pw, strlen(pw));
    cJSON_Delete(body);
    if (rc == -EINVAL)
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", why);
    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "no user \"%s\"", name);
    if (rc == -EBUSY)
        return api_send_error(r->c, MHD_HTTP_CONFLICT, "last_admin", "%s", why);
    if (rc < 0)
        return store_failed(r->c, rc);
    log_info("auth: %s changed user %s%s%s%s", r->who.user, name, rs ? ": role " : "",
             rs ? auth_role_name(role) : "", pw ? " (new password; sessions ended)" : "");
    return send_user(r, MHD_HTTP_OK, name);
}

static enum MHD_Result h_user_delete(struct api_req *r)
{
    const char *name = r->param[0];
    enum MHD_Result ret;
    cJSON *root;
    int rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    rc = store_user_delete(r->a->st, name);
    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "no user \"%s\"", name);
    if (rc == -EBUSY)
        return api_send_error(r->c, MHD_HTTP_CONFLICT, "last_admin", "\"%s\" is the last admin",
                              name);
    if (rc < 0)
        return store_failed(r->c, rc);
    log_info("auth: %s deleted user %s", r->who.user, name);
    root = cJSON_CreateObject();
    if (root && !cJSON_AddStringToObject(root, "deleted", name)) {
        cJSON_Delete(root);
        root = NULL;
    }
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

/* Logout and POST /tokens are open to viewers although they are not GETs: they change only
 * the caller's own credentials. */
const struct api_route api_auth_routes[] = {
    {"POST", "/api/v1/login", AUTH_ROLE_NONE, h_login},
    {"POST", "/api/v1/logout", AUTH_ROLE_VIEWER, h_logout},
    {"GET", "/api/v1/me", AUTH_ROLE_VIEWER, h_me},
    {"GET", "/api/v1/tokens", AUTH_ROLE_VIEWER, h_token_list},
    {"POST", "/api/v1/tokens", AUTH_ROLE_VIEWER, h_token_create},
    {"DELETE", "/api/v1/tokens/{token}", AUTH_ROLE_VIEWER, h_token_delete},
    {"GET", "/api/v1/users", AUTH_ROLE_ADMIN, h_user_list},
    {"POST", "/api/v1/users", AUTH_ROLE_ADMIN, h_user_create},
    {"PATCH", "/api/v1/users/{user}", AUTH_ROLE_ADMIN, h_user_update},
    {"DELETE", "/api/v1/users/{user}", AUTH_ROLE_ADMIN, h_user_delete},
    {NULL, NULL, AUTH_ROLE_NONE, NULL},
};
