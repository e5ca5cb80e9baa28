/*
 * api_cmd: POST /api/v1/gateways/{gateway}/commands: a command to a gateway and its reply
 * (ingest_command does the MQTT part). The connection's thread waits for the reply, at most
 * http.command_timeout_ms (see api.c on threads). The command name is checked against the
 * protocol's list and its args only for being a JSON object of bounded size: what the args
 * of each command mean is the gateway's business, and it answers ok:false for bad ones.
 * Args are never logged (set_config may carry secrets).
 */
#include "api_int.h"

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const commands[] = {
    "ping", "poll_now", "get_config", "set_config", "read_registers", "maintenance", "reboot", NULL,
};

static bool known_command(const char *s)
{
    for (int i = 0; commands[i]; i++)
        if (strcmp(commands[i], s) == 0)
            return true;
    return false;
}

/* The answer from a reply (validated by ingest: an object with our id and a boolean ok):
 * {"id","ok","result"} or {"id","ok","error"}; a missing one is null. */
static cJSON *answer(const char *id, const char *reply)
{
    cJSON *in = cJSON_Parse(reply), *out = cJSON_CreateObject(), *v;
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(in, "ok");
    bool good = cJSON_IsTrue(ok);
    const char *key = good ? "result" : "error";

    if (!in || !out || !cJSON_AddStringToObject(out, "id", id) ||
        !cJSON_AddBoolToObject(out, "ok", good))
        goto fail;
    v = cJSON_DetachItemFromObjectCaseSensitive(in, key);
    if (!v && !(v = cJSON_CreateNull()))
        goto fail;
    cJSON_AddItemToObject(out, key, v);
    cJSON_Delete(in);
    return out;
fail:
    cJSON_Delete(in);
    cJSON_Delete(out);
    return NULL;
}

static enum MHD_Result h_command(struct api_req *r)
{
    static const char *const keys[] = {"cmd", "args", NULL};
    const char *gw = r->param[0];
    char id[INGEST_CMD_ID_LEN + 1], cmd[INGEST_CMD_NAME_MAX], b[48];
    const cJSON *c, *args;
    char *args_json = NULL, *reply = NULL;
    cJSON *body, *root;
    enum MHD_Result ret;
    int rc;

    if (api_no_params(r, &ret) < 0 || !(body = api_body_object(r, keys, &ret)))
        return ret;
    c = cJSON_GetObjectItemCaseSensitive(body, "cmd");
    args = cJSON_GetObjectItemCaseSensitive(body, "args");
    if (!cJSON_IsString(c) || !known_command(c->valuestring)) {
        ret = api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                             "cmd: %s%s%s is not one of ping, poll_now, get_config, set_config, "
                             "read_registers, maintenance, reboot",
                             cJSON_IsString(c) ? "\"" : "",
                             cJSON_IsString(c) ? api_shown(c->valuestring, b, sizeof(b))
                                               : "a missing or non-string value",
                             cJSON_IsString(c) ? "\"" : "");
        cJSON_Delete(body);
        return ret;
    }
    if (args && !cJSON_IsObject(args)) {
        cJSON_Delete(body);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request", "args: not an object");
    }
    snprintf(cmd, sizeof(cmd), "%s", c->valuestring);
    args_json = args ? cJSON_PrintUnformatted(args) : strdup("{}");
    cJSON_Delete(body);
    if (!args_json)
        return api_send_json(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    if (strlen(args_json) > INGEST_CMD_ARGS_MAX) {
        free(args_json);
        return api_send_error(r->c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "args: larger than %d bytes as JSON", INGEST_CMD_ARGS_MAX);
    }
    rc = store_gateway_exists(r->a->st, gw);
    if (rc == -ENOENT) {
        free(args_json);
        return api_send_error(r->c, MHD_HTTP_NOT_FOUND, "not_found", "gateway \"%s\" not found",
                              gw);
    }
    if (rc < 0) {
        free(args_json);
        return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "store: %s",
                              strerror(-rc));
    }
    rc = ingest_command(r->a->in, gw, cmd, args_json, r->a->cfg.command_timeout_ms, id, &reply);
    free(args_json);
    log_info("command %s %s to %s by %s: %s", id[0] ? id : "-", cmd, gw, r->who.user,
             rc == 0            ? "replied"
             : rc == -ETIMEDOUT ? "no reply in time"
                                : strerror(-rc));
    switch (rc) {
    case 0:
        break;
    case -ETIMEDOUT:
        return api_send_error(r->c, MHD_HTTP_GATEWAY_TIMEOUT, "gateway_timeout",
                              "no reply from gateway %s to command %s within %d ms", gw, id,
                              r->a->cfg.command_timeout_ms);
    case -ENOTCONN:
        return api_send_error(r->c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                              "not connected to the MQTT broker");
    case -EBUSY:
        return api_send_error(r->c, MHD_HTTP_SERVICE_UNAVAILABLE, "busy",
                              "%d commands are waiting for replies already; try again later",
                              INGEST_CMD_PENDING_MAX);
    case -ESHUTDOWN:
        return api_send_error(r->c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                              "meter-cloud is stopping");
    default:
        return api_send_error(r->c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "command: %s",
                              strerror(-rc));
    }
    root = answer(id, reply);
    free(reply);
    return api_send_json(r->c, MHD_HTTP_OK, root);
}

const struct api_route api_cmd_routes[] = {
    {"POST", "/api/v1/gateways/{gateway}/commands", AUTH_ROLE_OPERATOR, h_command},
    {NULL, NULL, AUTH_ROLE_NONE, NULL},
};
