/*
 * api_admin: the admin operations: online backups of the store (backup.h) and the cloud's
 * maintenance mode (ingest.h). Admin role only. A backup is downloaded straight from its
 * file (MHD_create_response_from_fd); its name must match the listing's pattern, so a
 * request never names a path.
 */
#include "api_int.h"

#include "backup.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static backup_t *backups; /* set by api_admin_setup(); NULL: backups are off */

void api_admin_setup(backup_t *b)
{
    backups = b;
}

static cJSON *info_json(const struct backup_info *i)
{
    cJSON *o = cJSON_CreateObject();

    if (!o || !cJSON_AddStringToObject(o, "name", i->name) || !api_add_int(o, "size", i->size) ||
        !api_add_time(o, "created", i->created_ms)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static enum MHD_Result no_backups(struct api_req *r)
{
    return api_send_error(r->c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                          "backups are not set up");
}

static enum MHD_Result h_backup_create(struct api_req *r)
{
    struct backup_info info;
    enum MHD_Result ret;
    int rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    if (!backups)
        return no_backups(r);
    rc = backup_now(backups, &info);
    log_info("backup by %s: %s", r->who.user, rc == 0 ? info.name : strerror(-rc));
    if (rc == -EEXIST)
        return api_send_error(r->c, MHD_HTTP_CONFLICT, "conflict",
                              "a backup was made this second already; try again");
    if (rc < 0)
        return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "backup: %s",
                              strerror(-rc));
    return api_send_json(r->c, MHD_HTTP_CREATED, info_json(&info));
}

static enum MHD_Result h_backup_list(struct api_req *r)
{
    struct backup_info *all;
    cJSON *root = NULL, *arr, *o;
    enum MHD_Result ret;
    int n = 0, rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    if (!backups)
        return no_backups(r);
    if (!(all = calloc(BACKUP_LIST_MAX, sizeof(*all))))
        return api_send_json(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    if ((rc = backup_list(backups, all, BACKUP_LIST_MAX, &n)) < 0) {
        free(all);
        return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "backups: %s",
                              strerror(-rc));
    }
    root = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(root, "backups");
    for (int i = 0; arr && i < n; i++) {
        if (!(o = info_json(&all[i]))) {
            cJSON_Delete(root);
            root = NULL;
            break;
        }
        cJSON_AddItemToArray(arr, o);
    }
    free(all);
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

static enum MHD_Result h_backup_get(struct api_req *r)
{
    struct MHD_Response *resp;
    char disp[64];
    enum MHD_Result ret;
    int64_t size;
    int fd, rc;

    if (api_no_params(r, &ret) < 0)
        return ret;
    if (!backups)
        return no_backups(r);
    rc = backup_open(backups, r->param[0], &fd, &size);
    if (rc == -ENOENT)
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "no backup \"%s\"",
                              r->param[0]);
    if (rc < 0)
        return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "backup: %s",
                              strerror(-rc));
    /* the response owns fd from here, also on failure */
    resp = MHD_create_response_from_fd((uint64_t)size, fd);
    if (!resp) {
        close(fd);
        return api_send_json(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    }
    snprintf(disp, sizeof(disp), "attachment; filename=\"%s\"", r->param[0]);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/vnd.sqlite3");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disp);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    ret = MHD_queue_response(r->c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    log_info("backup %s downloaded by %s", r->param[0], r->who.user);
    return ret;
}

static enum MHD_Result maint_answer(struct api_req *r, int applied)
{
    cJSON *root = cJSON_CreateObject();
    int64_t pending = 0;
    int rc = store_pending_count(r->a->st, &pending);

    if (rc < 0) {
        cJSON_Delete(root);
        return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "store: %s",
                              strerror(-rc));
    }
    if (!root || !cJSON_AddBoolToObject(root, "on", ingest_maintenance(r->a->in)) ||
        !api_add_int(root, "pending", pending) ||
        (applied >= 0 && !api_add_int(root, "applied", applied))) {
        cJSON_Delete(root);
        root = NULL;
    }
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

static enum MHD_Result h_maint_get(struct api_req *r)
{
    enum MHD_Result ret;

    if (api_no_params(r, &ret) < 0)
        return ret;
    return maint_answer(r, -1);
}

static enum MHD_Result h_maint_set(struct api_req *r)
{
    static const char *const keys[] = {"on", NULL};
    const cJSON *on;
    enum MHD_Result ret;
    cJSON *body;
    bool want;
    int applied = 0, rc;

    if (api_no_params(r, &ret) < 0 || !(body = api_body_object(r, keys, &ret)))
        return ret;
    on = cJSON_GetObjectItemCaseSensitive(body, "on");
    if (!cJSON_IsBool(on)) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "on: must be true or false");
    }
    want = cJSON_IsTrue(on);
    cJSON_Delete(body);
    rc = ingest_set_maintenance(r->a->in, want, &applied);
    log_info("maintenance %s by %s: %s (%d pending batches applied)", want ? "on" : "off",
             r->who.user, rc == 0 ? "done" : strerror(-rc), applied);
    if (rc < 0)
        return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                              "maintenance: %s (%d pending batches applied; still on)",
                              strerror(-rc), applied);
    return maint_answer(r, applied);
}

const struct api_route api_admin_routes[] = {
    {"POST", "/api/v1/admin/backups", AUTH_ROLE_ADMIN, h_backup_create},
    {"GET", "/api/v1/admin/backups", AUTH_ROLE_ADMIN, h_backup_list},
    {"GET", "/api/v1/admin/backups/{name}", AUTH_ROLE_ADMIN, h_backup_get},
    {"GET", "/api/v1/admin/maintenance", AUTH_ROLE_ADMIN, h_maint_get},
    {"POST", "/api/v1/admin/maintenance", AUTH_ROLE_ADMIN, h_maint_set},
    {NULL, NULL, AUTH_ROLE_NONE, NULL},
};
