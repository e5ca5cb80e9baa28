/* commands: see commands.h. */
#include "commands.h"
#include "log.h"
#include "wire.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_NUM_MAX 9007199254740991.0 /* 2^53 - 1: exact in a double */

static void set_err(struct cmd_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(struct cmd_error *err, const char *code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

/* The id of a request: a string of 1..CMD_ID_MAX bytes or an integer of at most 2^53 - 1 in
 * size. Returns a copy to echo in the reply, or NULL (why in *why). */
static cJSON *request_id(const cJSON *root, const char **why)
{
    const cJSON *id = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "id") : NULL;

    if (!id) {
        *why = "no \"id\"";
        return NULL;
    }
    if (cJSON_IsString(id)) {
        size_t n = strlen(id->valuestring);
        if (n == 0 || n > CMD_ID_MAX) {
            *why = "\"id\" must be 1..128 bytes";
            return NULL;
        }
        return cJSON_CreateString(id->valuestring);
    }
    if (cJSON_IsNumber(id) && isfinite(id->valuedouble) &&
        id->valuedouble == floor(id->valuedouble) && fabs(id->valuedouble) <= ID_NUM_MAX)
        return cJSON_CreateNumber(id->valuedouble);
    *why = "\"id\" must be a string or an integer";
    return NULL;
}

static char *build_reply(cJSON *id, const char *cmd, cJSON *result, const struct cmd_error *err)
{
    cJSON *r = cJSON_CreateObject(), *e;
    char *out = NULL;

    if (!r) {
        cJSON_Delete(id);
        cJSON_Delete(result);
        if (err)
            cJSON_Delete(err->errors);
        return NULL;
    }
    cJSON_AddItemToObject(r, "id", id ? id : cJSON_CreateNull());
    if (cmd)
        cJSON_AddStringToObject(r, "cmd", cmd);
    if (!err) {
        cJSON_AddTrueToObject(r, "ok");
        cJSON_AddItemToObject(r, "result", result ? result : cJSON_CreateObject());
    } else {
        cJSON_Delete(result);
        cJSON_AddFalseToObject(r, "ok");
        if ((e = cJSON_AddObjectToObject(r, "error"))) {
            cJSON_AddStringToObject(e, "code", err->code ? err->code : "failed");
            cJSON_AddStringToObject(e, "message", err->message);
            if (err->errors)
                cJSON_AddItemToObject(e, "errors", err->errors);
        } else {
            cJSON_Delete(err->errors);
        }
    }
    out = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return out;
}

/* --- arguments --------------------------------------------------------------------------- */

struct args {
    const cJSON *obj; /* the args object (an empty one when absent) */
    cJSON *errors;    /* messages, an array */
    int nerr;
};

static void arg_err(struct args *a, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void arg_err(struct args *a, const char *key, const char *fmt, ...)
{
    char what[256], msg[320];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(msg, sizeof(msg), "args%s%s: %s", key ? "." : "", key ? key : "", what);
    a->nerr++;
    if (a->errors)
        cJSON_AddItemToArray(a->errors, cJSON_CreateString(msg));
}

static void only_keys(struct args *a, const char *const *allowed)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, a->obj)
    {
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            if (strcmp(it->string, allowed[i]) == 0)
                ok = 1;
        if (!ok)
            arg_err(a, it->string, "unknown argument");
    }
}

/* Integer argument in [lo, hi]; absent: def, or an error when required. */
static long arg_int(struct args *a, const char *key, long lo, long hi, long def, int required)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(a->obj, key);

    if (!it) {
        if (required)
            arg_err(a, key, "required");
        return def;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) ||
        it->valuedouble != floor(it->valuedouble)) {
        arg_err(a, key, "must be an integer");
        return def;
    }
    if (it->valuedouble < (double)lo || it->valuedouble > (double)hi) {
        arg_err(a, key, "%.0f is out of range (%ld..%ld)", it->valuedouble, lo, hi);
        return def;
    }
    return (long)it->valuedouble;
}

/* String argument that is a valid id; absent: NULL (an error when required). */
static const char *arg_id(struct args *a, const char *key, int required)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(a->obj, key);

    if (!it || cJSON_IsNull(it)) {
        if (required)
            arg_err(a, key, "required");
        return NULL;
    }
    if (!cJSON_IsString(it)) {
        arg_err(a, key, "must be a string");
        return NULL;
    }
    if (!wire_id_valid(it->valuestring)) {
        arg_err(a, key, "not a valid id (1..63 of A-Z a-z 0-9 _ . -)");
        return NULL;
    }
    return it->valuestring;
}

/* --- the commands ------------------------------------------------------------------------ */

static const char *const no_keys[] = {NULL};

static int run_ping(const struct cmd_ops *ops, struct args *a, cJSON *res, struct cmd_error *err)
{
    only_keys(a, no_keys);
    return a->nerr ? 1 : ops->ping(ops->arg, res, err);
}

static int run_poll_now(const struct cmd_ops *ops, struct args *a, cJSON *res,
                        struct cmd_error *err)
{
    static const char *const keys[] = {"meter", NULL};
    const char *meter;

    only_keys(a, keys);
    meter = arg_id(a, "meter", 0);
    return a->nerr ? 1 : ops->poll_now(ops->arg, meter, res, err);
}

static int run_get_config(const struct cmd_ops *ops, struct args *a, cJSON *res,
                          struct cmd_error *err)
{
    only_keys(a, no_keys);
    return a->nerr ? 1 : ops->get_config(ops->arg, res, err);
}

static int run_set_config(const struct cmd_ops *ops, struct args *a, cJSON *res,
                          struct cmd_error *err)
{
    static const char *const keys[] = {"config", NULL};
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(a->obj, "config");

    only_keys(a, keys);
    if (!cfg)
        arg_err(a, "config", "required: the whole configuration, an object");
    else if (!cJSON_IsObject(cfg))
        arg_err(a, "config", "must be an object");
    return a->nerr ? 1 : ops->set_config(ops->arg, cfg, res, err);
}

static int run_read_registers(const struct cmd_ops *ops, struct args *a, cJSON *res,
                              struct cmd_error *err)
{
    static const char *const keys[] = {"bus", "unit", "function", "address", "count", NULL};
    struct cmd_read rq;
    const char *bus;

    memset(&rq, 0, sizeof(rq));
    only_keys(a, keys);
    bus = arg_id(a, "bus", 1);
    if (bus)
        snprintf(rq.bus, sizeof(rq.bus), "%s", bus);
    rq.unit = (int)arg_int(a, "unit", 1, 247, 1, 1);
    rq.fc = (int)arg_int(a, "function", 3, 4, 3, 0);
    rq.addr = (int)arg_int(a, "address", 0, 65535, 0, 1);
    rq.count = (int)arg_int(a, "count", 1, 125, 1, 1);
    if (!a->nerr && rq.addr + rq.count > 65536)
        arg_err(a, "count", "address + count is beyond register 65535");
    return a->nerr ? 1 : ops->read_registers(ops->arg, &rq, res, err);
}

static int run_maintenance(const struct cmd_ops *ops, struct args *a, cJSON *res,
                           struct cmd_error *err)
{
    static const char *const keys[] = {"on", NULL};
    const cJSON *on = cJSON_GetObjectItemCaseSensitive(a->obj, "on");

    only_keys(a, keys);
    if (!on)
        arg_err(a, "on", "required: true or false");
    else if (!cJSON_IsBool(on))
        arg_err(a, "on", "must be true or false");
    return a->nerr ? 1 : ops->maintenance(ops->arg, cJSON_IsTrue(on), res, err);
}

static int run_reboot(const struct cmd_ops *ops, struct args *a, cJSON *res, struct cmd_error *err)
{
    only_keys(a, no_keys);
    return a->nerr ? 1 : ops->reboot(ops->arg, res, err);
}

static const struct {
    const char *name;
    int (*run)(const struct cmd_ops *, struct args *, cJSON *, struct cmd_error *);
} table[] = {
    {"ping", run_ping},
    {"poll_now", run_poll_now},
    {"get_config", run_get_config},
    {"set_config", run_set_config},
    {"read_registers", run_read_registers},
    {"maintenance", run_maintenance},
    {"reboot", run_reboot},
};

char *commands_run(const struct cmd_ops *ops, const char *payload, size_t len)
{
    static const cJSON empty = {.type = cJSON_Object};
    struct cmd_error err = {NULL, "", NULL};
    const char *why = NULL, *name = NULL;
    cJSON *root = NULL, *id = NULL, *id2 = NULL, *result = NULL;
    const cJSON *cmd, *args;
    struct args a = {&empty, NULL, 0};
    char *reply = NULL;
    int rc = -1;

    if (len > CMD_MAX_PAYLOAD) {
        log_warnx("command: %zu bytes, more than %d: not read", len, CMD_MAX_PAYLOAD);
        return NULL;
    }
    root = cJSON_ParseWithLength(payload, len);
    if (!root) {
        log_warnx("command: not JSON (%zu bytes): no reply possible", len);
        return NULL;
    }
    if (!(id = request_id(root, &why))) {
        log_warnx("command: %s: no reply possible", why);
        goto out;
    }
    cmd = cJSON_GetObjectItemCaseSensitive(root, "cmd");
    args = cJSON_GetObjectItemCaseSensitive(root, "args");
    if (!cJSON_IsString(cmd)) {
        set_err(&err, "bad_request", "\"cmd\" is missing or not a string");
        goto reply;
    }
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(cmd->valuestring, table[i].name) == 0)
            name = table[i].name;
    if (!name) {
        char shown[40];
        snprintf(shown, sizeof(shown), "%s", cmd->valuestring);
        set_err(&err, "unknown_command",
                "unknown command \"%s%s\" (ping, poll_now, get_config, set_config, "
                "read_registers, maintenance, reboot)",
                shown, strlen(cmd->valuestring) >= sizeof(shown) ? "..." : "");
        goto reply;
    }
    if (args && !cJSON_IsNull(args) && !cJSON_IsObject(args)) {
        set_err(&err, "bad_args", "\"args\" must be an object");
        goto reply;
    }
    if (cJSON_IsObject(args))
        a.obj = args;
    a.errors = cJSON_CreateArray();
    result = cJSON_CreateObject();
    if (!a.errors || !result) {
        set_err(&err, "failed", "out of memory");
        goto reply;
    }
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].name == name)
            rc = table[i].run(ops, &a, result, &err);
    if (rc > 0) { /* the arguments were refused */
        set_err(&err, "bad_args", "%s: %d bad argument%s", name, a.nerr, a.nerr == 1 ? "" : "s");
        err.errors = a.errors;
        a.errors = NULL;
    } else if (rc < 0 && !err.code) {
        set_err(&err, "failed", "%s failed", name);
    }
    if (rc == 0)
        log_info("command %s: ok", name);
    else
        log_info("command %s: %s: %s", name, err.code, err.message);
reply:
    id2 = cJSON_Duplicate(id, 1);
    reply = build_reply(id, name, rc == 0 ? result : NULL, rc == 0 ? NULL : &err);
    if (rc == 0)
        result = NULL; /* the reply took it */
    id = NULL;
    if (reply && strlen(reply) > CMD_MAX_PAYLOAD) {
        /* bounded both ways: the cloud drops larger replies */
        struct cmd_error big = {"too_large", "", NULL};
        snprintf(big.message, sizeof(big.message),
                 "the reply would be %zu bytes, more than %d (poll_now: ask for one meter)",
                 strlen(reply), CMD_MAX_PAYLOAD);
        log_warnx("command %s: %s", name, big.message);
        free(reply);
        reply = build_reply(id2, name, NULL, &big);
        id2 = NULL;
    }
out:
    cJSON_Delete(id2);
    cJSON_Delete(a.errors);
    cJSON_Delete(result);
    cJSON_Delete(id);
    cJSON_Delete(root);
    return reply;
}

/* --- the command thread ------------------------------------------------------------------ */

struct commands {
    struct cmd_ops ops;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *q[CMD_QUEUE_MAX];
    size_t qlen[CMD_QUEUE_MAX];
    int head, n, stop;
};

static void *commands_main(void *arg)
{
    commands_t *c = arg;

    pthread_mutex_lock(&c->mu);
    for (;;) {
        char *msg, *reply;
        size_t len;

        while (!c->stop && c->n == 0)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop)
            break;
        msg = c->q[c->head];
        len = c->qlen[c->head];
        c->head = (c->head + 1) % CMD_QUEUE_MAX;
        c->n--;
        pthread_mutex_unlock(&c->mu);
        reply = commands_run(&c->ops, msg, len);
        if (reply)
            c->ops.reply(c->ops.arg, reply, strlen(reply));
        free(reply);
        free(msg);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int commands_start(const struct cmd_ops *ops, commands_t **out)
{
    commands_t *c = calloc(1, sizeof(*c));
    int rc;

    if (!c)
        return -ENOMEM;
    c->ops = *ops;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if ((rc = pthread_create(&c->thread, NULL, commands_main, c)) != 0) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return -rc;
    }
    *out = c;
    return 0;
}

/* An error reply built in the caller's buffer, without allocating much. */
static int quick_reply(const cJSON *id, const char *code, const char *message, char *reply)
{
    char *idtext = cJSON_PrintUnformatted(id);
    int n;

    if (!idtext)
        return -1;
    n = snprintf(reply, CMD_REPLY_MAX,
                 "{\"id\":%s,\"ok\":false,\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", idtext,
                 code, message);
    free(idtext);
    return n < 0 || n >= CMD_REPLY_MAX ? -1 : n;
}

int commands_submit(commands_t *c, const char *payload, size_t len, char *reply)
{
    const char *why = NULL;
    cJSON *root, *id;
    char *copy;
    int n;

    if (len > CMD_MAX_PAYLOAD) {
        /* Not parsed: a bounded look for nothing. The sender learns it from the log only. */
        log_warnx("command: %zu bytes, more than %d: refused unread", len, CMD_MAX_PAYLOAD);
        return -1;
    }
    if (!(root = cJSON_ParseWithLength(payload, len))) {
        log_warnx("command: not JSON (%zu bytes): no reply possible", len);
        return -1;
    }
    if (!(id = request_id(root, &why))) {
        log_warnx("command: %s: no reply possible", why);
        cJSON_Delete(root);
        return -1;
    }
    cJSON_Delete(root);
    pthread_mutex_lock(&c->mu);
    if (c->n >= CMD_QUEUE_MAX || c->stop) {
        pthread_mutex_unlock(&c->mu);
        log_warnx("command: %d commands waiting: refused", CMD_QUEUE_MAX);
        n = quick_reply(id, "busy", "too many commands waiting; try again later", reply);
        cJSON_Delete(id);
        return n;
    }
    if (!(copy = malloc(len + 1))) {
        pthread_mutex_unlock(&c->mu);
        n = quick_reply(id, "failed", "out of memory", reply);
        cJSON_Delete(id);
        return n;
    }
    cJSON_Delete(id);
    memcpy(copy, payload, len);
    copy[len] = '\0';
    c->q[(c->head + c->n) % CMD_QUEUE_MAX] = copy;
    c->qlen[(c->head + c->n) % CMD_QUEUE_MAX] = len;
    c->n++;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void commands_stop(commands_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    for (; c->n > 0; c->n--) {
        free(c->q[c->head]);
        c->head = (c->head + 1) % CMD_QUEUE_MAX;
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
