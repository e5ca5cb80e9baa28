/*
 * meter-agent: polls meters over Modbus, queues every reading in SQLite, publishes the
 * queue to MQTT and answers commands. This file wires the modules together and owns the
 * process: command line, signals, start, reload and stop, and the daemon's side of the
 * commands (commands.h). See docs/configuration.md and docs/protocol.md.
 *
 * Threads: main (signals, reload on SIGHUP, watchdog, LEDs), one per bus (poller), the
 * uplink's two (publisher and MQTT client), and the command thread. agent.ctl serialises
 * everything that changes or walks the running set (configuration, pollers, uplink):
 * reloads and commands. pollers_mu guards only the pollers array, for the readers that
 * must never wait for a reload (health, watchdog).
 */
#include "board.h"
#include "commands.h"
#include "config.h"
#include "log.h"
#include "poller.h"
#include "queue.h"
#include "scan.h"
#include "timeutil.h"
#include "uplink.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REBOOT_DELAY_MS 500 /* lets the reply to "reboot" leave first */

static volatile sig_atomic_t got_stop, got_hup;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        got_hup = 1;
    else
        got_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: meter-agent [-d] [-v] [-f FILE]\n"
               "       meter-agent --check-config FILE | -n [-f FILE]\n"
               "       meter-agent scan --bus tcp:HOST:PORT|rtu:DEVICE[:BAUD[:PARITY[:STOP]]]\n"
               "                        [--units LIST] [--timeout-ms N] [--profiles DIR]\n"
               "  -f FILE             configuration (default /etc/meterlink/agent.json)\n"
               "  -n, --check-config  check the configuration and exit\n"
               "  -d                  stay in the foreground, log to stderr\n"
               "  -v                  more verbose (repeat for more)\n"
               "  --version           print the version and exit\n"
               "  scan                find and identify the meters on a bus (scan --help)\n"
               "SIGHUP reloads the configuration; SIGTERM and SIGINT stop.\n");
}

static void report_stderr(void *arg, const char *msg)
{
    (void)arg;
    fprintf(stderr, "%s\n", msg);
}

static void report_log(void *arg, const char *msg)
{
    (void)arg;
    log_warnx("%s", msg);
}

static void report_json(void *arg, const char *msg)
{
    cJSON_AddItemToArray(arg, cJSON_CreateString(msg));
}

struct agent {
    const char *path; /* the configuration file */
    struct agent_cfg *cfg;
    board_t *board;
    queue_t *q;
    uplink_t *up;
    bool maintenance;
    int64_t started_ms;
    _Atomic int64_t reboot_at; /* mono_ms; 0: none asked for */
    pthread_mutex_t ctl;       /* see the top of the file */
    pthread_mutex_t cmds_mu;   /* cmds, for the MQTT thread */
    commands_t *cmds;
};

/* The uplink thread reads the pollers' counters (agent_health) while reloads stop and
 * start them: pollers_mu keeps a poller from being freed while it is read. */
static pthread_mutex_t pollers_mu = PTHREAD_MUTEX_INITIALIZER;
static poller_t *pollers[CFG_MAX_BUSES];
static int npollers;

/* --- hooks ----------------------------------------------------------------------------- */

/* The health message's "buses" and "meters". Meters that do not fit (the message is
 * bounded, and so is what the cloud takes) are left out and counted in "meters_omitted". */
static int agent_health(void *arg, char *buf, size_t len)
{
    const size_t tail = 48; /* room kept for ],"meters_omitted":N */
    size_t pos = 0;
    int n, omitted = 0, first = 1;

    (void)arg;
    if (len < 64)
        return -1;
    pthread_mutex_lock(&pollers_mu);
    pos = (size_t)snprintf(buf, len, "\"buses\":[");
    for (int i = 0; i < npollers; i++) {
        if (!pollers[i])
            continue;
        if (pos + tail + 2 >= len)
            goto full;
        if (!first)
            buf[pos++] = ',';
        if ((n = poller_bus_health(pollers[i], buf + pos, len - pos - tail)) < 0)
            goto full;
        pos += (size_t)n;
        first = 0;
    }
    if (pos + tail + 16 >= len)
        goto full;
    pos += (size_t)snprintf(buf + pos, len - pos, "],\"meters\":[");
    first = 1;
    for (int i = 0; i < npollers; i++) {
        int written = 0;
        if (!pollers[i])
            continue;
        if (pos + tail + 2 < len) {
            if (!first)
                buf[pos++] = ',';
            n = poller_health(pollers[i], buf + pos, len - pos - tail, &written);
            if (n == 0 && !first)
                pos--; /* nothing written: take the comma back */
            pos += (size_t)n;
            first = first && n == 0;
        }
        omitted += poller_meters(pollers[i]) - written;
    }
    pthread_mutex_unlock(&pollers_mu);
    n = omitted ? snprintf(buf + pos, len - pos, "],\"meters_omitted\":%d", omitted)
                : snprintf(buf + pos, len - pos, "]");
    if (n < 0 || (size_t)n >= len - pos)
        return -1;
    return (int)(pos + (size_t)n);
full:
    pthread_mutex_unlock(&pollers_mu);
    return -1;
}

/* On the MQTT thread: hand the command over; answer at once what is refused at once. */
static void on_command(void *arg, uplink_t *u, const char *payload, size_t len)
{
    struct agent *a = arg;
    char reply[CMD_REPLY_MAX];
    int n = -1;

    pthread_mutex_lock(&a->cmds_mu);
    if (a->cmds)
        n = commands_submit(a->cmds, payload, len, reply);
    pthread_mutex_unlock(&a->cmds_mu);
    if (n > 0)
        uplink_reply(u, reply, (size_t)n);
}

/* On a bus thread. Pollers run only while a->up and a->cfg stay as they are. */
static void on_queued(void *arg)
{
    struct agent *a = arg;
    if (a->up)
        uplink_notify(a->up);
}

/* The retained state of a meter for Home Assistant:
 * {"ts":...,"online":true,"ok":true,"energy_import":1234.5,...} with the newest values. */
static void on_polled(void *arg, const struct meter_cfg *m, const struct reading *r,
                      const struct reading *last_ok, bool online)
{
    struct agent *a = arg;
    char buf[WIRE_READING_MAX + 256], num[40];
    size_t pos;
    int n;

    if (!a->cfg->ha_enabled || !a->up)
        return;
    n = snprintf(buf, sizeof(buf), "{\"ts\":%lld,\"online\":%s,\"ok\":%s,\"last_ok_ts\":%lld",
                 (long long)r->ts_ms, online ? "true" : "false", r->ok ? "true" : "false",
                 (long long)(last_ok ? last_ok->ts_ms : 0));
    if (n < 0 || (size_t)n >= sizeof(buf))
        return;
    pos = (size_t)n;
    for (int q = 0; last_ok && q < qty_count(); q++) {
        if (!(last_ok->present & (1u << q)))
            continue;
        wire_format_double(last_ok->values[q], num, sizeof(num));
        n = snprintf(buf + pos, sizeof(buf) - pos, ",\"%s\":%s", qty_at(q)->name, num);
        if (n < 0 || (size_t)n >= sizeof(buf) - pos)
            return;
        pos += (size_t)n;
    }
    if (pos + 2 > sizeof(buf))
        return;
    buf[pos++] = '}';
    uplink_publish_state(a->up, m->id, buf, pos);
}

/* --- the running set ------------------------------------------------------------------- */

/* Starts a poller per bus of a->cfg. Called with a->ctl held, the pollers stopped. */
static int start_pollers(struct agent *a)
{
    struct poller_hooks hooks = {on_queued, on_polled, a};
    int rc = 0;

    pthread_mutex_lock(&pollers_mu);
    npollers = a->cfg->nbuses;
    pthread_mutex_unlock(&pollers_mu);
    for (int i = 0; i < a->cfg->nbuses; i++) {
        poller_t *p = NULL;
        int prc = poller_start(a->cfg, a->board, i, a->q, &hooks, &p);
        if (prc < 0) {
            log_warnx("bus %s: cannot start: %s", a->cfg->buses[i].name, strerror(-prc));
            rc = prc;
            continue;
        }
        pthread_mutex_lock(&pollers_mu);
        pollers[i] = p;
        pthread_mutex_unlock(&pollers_mu);
    }
    return rc;
}

static void stop_pollers(void)
{
    for (int i = 0; i < CFG_MAX_BUSES; i++) {
        poller_t *p;
        pthread_mutex_lock(&pollers_mu);
        p = pollers[i];
        pollers[i] = NULL;
        pthread_mutex_unlock(&pollers_mu);
        poller_stop(p); /* outside the lock: it waits for the bus thread's current poll */
    }
}

static int start_uplink(struct agent *a)
{
    struct uplink_hooks hooks = {agent_health, on_command, a};
    int rc = uplink_start(a->cfg, a->q, &hooks, a->maintenance, &a->up);
    if (rc < 0) {
        log_warnx("cannot start the uplink: %s", strerror(-rc));
        a->up = NULL;
    }
    return rc;
}

/* Reads and checks a configuration file (report gets every error) into a new cfg, and
 * fills in the gateway id from the board when the file has none. Returns the number of
 * errors; *out is set only when there are none. */
static int load_config(const struct agent *a, const char *json, size_t len, const char *origin,
                       cfg_report_fn report, void *arg, struct agent_cfg **out)
{
    struct agent_cfg *c = calloc(1, sizeof(*c));
    int nerr;

    if (!c) {
        report(arg, "out of memory");
        return 1;
    }
    nerr = json ? cfg_parse(json, len, origin, c, report, arg) : cfg_load(origin, c, report, arg);
    if (nerr == 0 && !c->gateway_id[0]) {
        char id[BOARD_ID_MAX], msg[160];
        if (board_identity(a->board, id, sizeof(id)) == 0) {
            snprintf(c->gateway_id, sizeof(c->gateway_id), "%s", id);
        } else {
            snprintf(msg, sizeof(msg), "%s: gateway.id: required (board %s gives no identity)",
                     origin, board_name(a->board));
            report(arg, msg);
            nerr++;
        }
    }
    if (nerr) {
        cfg_free(c);
        free(c);
        return nerr;
    }
    *out = c;
    return 0;
}

static bool queue_opts_same(const struct agent_cfg *x, const struct agent_cfg *y)
{
    const struct queue_opts *a = &x->queue, *b = &y->queue;
    return strcmp(x->queue_path, y->queue_path) == 0 && a->memory_first == b->memory_first &&
           a->max_rows == b->max_rows && a->max_bytes == b->max_bytes &&
           a->max_age_ms == b->max_age_ms && a->mem_max == b->mem_max &&
           a->spill_ms == b->spill_ms && a->spill_rows == b->spill_rows;
}

/* Replaces the running configuration by next (taking it over): stops the pollers,
 * restarts the uplink when the broker connection changes (else switches it over), starts
 * the pollers again. The queue stays open: same stream, nothing queued is lost. notes
 * (may be NULL) gets what does not apply before a restart. Called with a->ctl held. */
static int apply_config(struct agent *a, struct agent_cfg *next, cJSON *notes, bool *restarted)
{
    struct agent_cfg *old = a->cfg;
    bool same_mqtt = cfg_mqtt_same(old, next);
    int rc;

    if (strcmp(old->board, next->board) != 0) {
        log_warnx("reload: board \"%s\" applies at the next start (running: \"%s\")", next->board,
                  old->board);
        if (notes)
            cJSON_AddItemToArray(notes, cJSON_CreateString("board: applies at the next start"));
    }
    if (!queue_opts_same(old, next)) {
        log_warnx("reload: queue settings apply at the next start");
        if (notes)
            cJSON_AddItemToArray(notes, cJSON_CreateString("queue: applies at the next start"));
    }
    stop_pollers();
    if (same_mqtt && a->up) {
        uplink_reconfigure(a->up, next);
    } else if (a->up) {
        log_info("reload: the broker settings changed: reconnecting");
        uplink_forget(a->up, next);
        uplink_stop(a->up);
        a->up = NULL;
    }
    a->cfg = next;
    /* Without an uplink the readings still queue; a later reload may fix it. */
    if (!a->up)
        start_uplink(a);
    cfg_free(old);
    free(old);
    if (restarted)
        *restarted = !same_mqtt;
    rc = start_pollers(a);
    log_info("configuration applied: gateway %s, %d meters on %d buses, stream %s",
             a->cfg->gateway_id, a->cfg->nmeters, a->cfg->nbuses, queue_stream(a->q));
    return rc;
}

/* SIGHUP: re-read the file; on any error keep running what runs. */
static void reload_file(struct agent *a)
{
    struct agent_cfg *next = NULL;
    int nerr;

    log_info("reloading %s", a->path);
    pthread_mutex_lock(&a->ctl);
    nerr = load_config(a, NULL, 0, a->path, report_log, NULL, &next);
    if (nerr)
        log_warnx("%s: %d error%s; keeping the running configuration", a->path, nerr,
                  nerr == 1 ? "" : "s");
    else
        apply_config(a, next, NULL, NULL);
    pthread_mutex_unlock(&a->ctl);
}

/* Writes len bytes of text to path atomically: a temporary file in the same folder,
 * fsync, rename over path, fsync of the folder. Returns 0 or a negative errno. */
static int write_atomic(const char *path, const char *text, size_t len)
{
    char tmp[CFG_STR_MAX + 32], dir[CFG_STR_MAX];
    const char *slash = strrchr(path, '/');
    size_t off = 0;
    int fd, rc = 0, n;

    n = snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* it holds a password */
    if (fd < 0)
        return -errno;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = -errno;
            break;
        }
        off += (size_t)w;
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    /* the rename itself must survive a power cut */
    if (slash)
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path) > 0 ? (int)(slash - path) : 1, path);
    else
        snprintf(dir, sizeof(dir), ".");
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        fsync(fd);
        close(fd);
    }
    return 0;
}

/* --- commands: the daemon's side (commands.h) ------------------------------------------- */

static int op_ping(void *arg, cJSON *res, struct cmd_error *err)
{
    struct agent *a = arg;
    struct queue_stats qs;

    (void)err;
    pthread_mutex_lock(&a->ctl);
    queue_get_stats(a->q, &qs);
    cJSON_AddNumberToObject(res, "uptime_s", (double)((mono_ms() - a->started_ms) / 1000));
    cJSON_AddStringToObject(res, "version", MLK_VERSION);
    cJSON_AddStringToObject(res, "stream", queue_stream(a->q));
    cJSON_AddStringToObject(res, "gateway", a->cfg->gateway_id);
    cJSON_AddStringToObject(res, "board", board_name(a->board));
    cJSON_AddBoolToObject(res, "maintenance", a->maintenance);
    cJSON_AddNumberToObject(res, "queue_depth", (double)qs.depth);
    cJSON_AddNumberToObject(res, "meters", a->cfg->nmeters);
    cJSON_AddNumberToObject(res, "ts", (double)now_ms());
    pthread_mutex_unlock(&a->ctl);
    return 0;
}

static cJSON *reading_json(const struct reading *r)
{
    cJSON *o = cJSON_CreateObject(), *v;

    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "meter", r->meter);
    cJSON_AddNumberToObject(o, "seq", (double)r->seq);
    cJSON_AddNumberToObject(o, "ts", (double)r->ts_ms);
    cJSON_AddBoolToObject(o, "ok", r->ok);
    if (!r->ok) {
        cJSON_AddStringToObject(o, "error", r->error);
        return o;
    }
    /* wire's shortest exact form: cJSON's own printing may drop the last bit */
    if ((v = cJSON_AddObjectToObject(o, "values")))
        for (int q = 0; q < qty_count(); q++)
            if (r->present & (1u << q)) {
                char num[40];
                wire_format_double(r->values[q], num, sizeof(num));
                cJSON_AddRawToObject(v, qty_at(q)->name, num);
            }
    return o;
}

static int op_poll_now(void *arg, const char *meter, cJSON *res, struct cmd_error *err)
{
    struct agent *a = arg;
    struct poller_job *jobs = NULL;
    struct reading *out = NULL;
    cJSON *arr;
    int mi = -1, nbus, rc = -1;

    pthread_mutex_lock(&a->ctl);
    nbus = a->cfg->nbuses;
    if (meter && (mi = cfg_meter_find(a->cfg, meter)) < 0) {
        err->code = "not_found";
        snprintf(err->message, sizeof(err->message), "no meter \"%s\"", meter);
        goto out;
    }
    jobs = calloc((size_t)nbus, sizeof(*jobs));
    out = calloc((size_t)a->cfg->nmeters, sizeof(*out));
    if (!jobs || !out) {
        err->code = "failed";
        snprintf(err->message, sizeof(err->message), "out of memory");
        goto out;
    }
    /* every bus at once: each bus thread polls its meters */
    for (int b = 0; b < nbus; b++) {
        jobs[b].kind = POLLER_JOB_POLL;
        jobs[b].meter = mi;
        jobs[b].out = out;
        jobs[b].max = 0;
        jobs[b].err = -ESRCH;
    }
    {
        int used = 0;
        for (int b = 0; b < nbus; b++) {
            int here = 0;
            if (mi >= 0 && a->cfg->meters[mi].bus != b)
                continue;
            for (int i = 0; i < a->cfg->nmeters; i++)
                here += a->cfg->meters[i].bus == b && (mi < 0 || i == mi);
            if (here == 0 || !pollers[b])
                continue;
            jobs[b].out = out + used;
            jobs[b].max = here;
            used += here;
            if (poller_submit(pollers[b], &jobs[b]) < 0)
                jobs[b].err = -ESRCH;
            else
                jobs[b].err = 0;
        }
        for (int b = 0; b < nbus; b++)
            if (jobs[b].max > 0 && jobs[b].err == 0)
                poller_wait(pollers[b], &jobs[b]);
    }
    if (!(arr = cJSON_AddArrayToObject(res, "readings"))) {
        err->code = "failed";
        snprintf(err->message, sizeof(err->message), "out of memory");
        goto out;
    }
    for (int b = 0; b < nbus; b++)
        for (int i = 0; jobs[b].max > 0 && i < jobs[b].n; i++)
            cJSON_AddItemToArray(arr, reading_json(&jobs[b].out[i]));
    rc = 0;
out:
    pthread_mutex_unlock(&a->ctl);
    free(jobs);
    free(out);
    return rc;
}

static int op_get_config(void *arg, cJSON *res, struct cmd_error *err)
{
    struct agent *a = arg;
    cJSON *c;

    pthread_mutex_lock(&a->ctl);
    c = cfg_to_json(a->cfg, true);
    cJSON_AddStringToObject(res, "path", a->path);
    pthread_mutex_unlock(&a->ctl);
    if (!c) {
        err->code = "failed";
        snprintf(err->message, sizeof(err->message), "out of memory");
        return -1;
    }
    cJSON_AddItemToObject(res, "config", c);
    return 0;
}

static int op_set_config(void *arg, const cJSON *config, cJSON *res, struct cmd_error *err)
{
    struct agent *a = arg;
    cJSON *copy = cJSON_Duplicate(config, 1), *errors = cJSON_CreateArray(), *mqtt, *pw, *notes;
    struct agent_cfg *next = NULL;
    char *text = NULL;
    bool restarted = false;
    int nerr, rc = -1, wrc;

    pthread_mutex_lock(&a->ctl);
    if (!copy || !errors) {
        err->code = "failed";
        snprintf(err->message, sizeof(err->message), "out of memory");
        goto out;
    }
    /* get_config hides the password: "***" back means "keep the running one" */
    mqtt = cJSON_GetObjectItemCaseSensitive(copy, "mqtt");
    pw = cJSON_IsObject(mqtt) ? cJSON_GetObjectItemCaseSensitive(mqtt, "password") : NULL;
    if (cJSON_IsString(pw) && strcmp(pw->valuestring, CFG_HIDDEN_PASSWORD) == 0)
        cJSON_ReplaceItemInObjectCaseSensitive(mqtt, "password",
                                               cJSON_CreateString(a->cfg->mqtt_password));
    if (!(text = cJSON_Print(copy))) {
        err->code = "failed";
        snprintf(err->message, sizeof(err->message), "out of memory");
        goto out;
    }
    nerr = load_config(a, text, strlen(text), "set_config", report_json, errors, &next);
    if (nerr) {
        err->code = "invalid_config";
        snprintf(err->message, sizeof(err->message),
                 "%d error%s; the running configuration is kept", nerr, nerr == 1 ? "" : "s");
        err->errors = errors;
        errors = NULL;
        log_warnx("set_config: %d error%s; keeping the running configuration", nerr,
                  nerr == 1 ? "" : "s");
        goto out;
    }
    if ((wrc = write_atomic(a->path, text, strlen(text))) < 0) {
        err->code = "failed";
        snprintf(err->message, sizeof(err->message),
                 "cannot write %s: %s; the running configuration is kept", a->path, strerror(-wrc));
        log_warnx("set_config: cannot write %s: %s", a->path, strerror(-wrc));
        cfg_free(next);
        free(next);
        goto out;
    }
    log_info("set_config: %s written; applying it", a->path);
    notes = cJSON_AddArrayToObject(res, "notes");
    apply_config(a, next, notes, &restarted);
    cJSON_AddBoolToObject(res, "applied", true);
    cJSON_AddBoolToObject(res, "reconnected", restarted);
    cJSON_AddStringToObject(res, "path", a->path);
    cJSON_AddStringToObject(res, "stream", queue_stream(a->q));
    rc = 0;
out:
    pthread_mutex_unlock(&a->ctl);
    cJSON_Delete(errors);
    cJSON_Delete(copy);
    free(text);
    return rc;
}

static int op_read_registers(void *arg, const struct cmd_read *rq, cJSON *res,
                             struct cmd_error *err)
{
    struct agent *a = arg;
    struct poller_job job;
    char ebuf[WIRE_ERROR_MAX];
    int b, rc = -1;
    cJSON *w;

    memset(&job, 0, sizeof(job));
    pthread_mutex_lock(&a->ctl);
    if ((b = cfg_bus_find(a->cfg, rq->bus)) < 0 || !pollers[b]) {
        err->code = "not_found";
        snprintf(err->message, sizeof(err->message), "no bus \"%s\"", rq->bus);
        goto out;
    }
    job.kind = POLLER_JOB_READ;
    job.unit = rq->unit;
    job.fc = rq->fc;
    job.addr = rq->addr;
    job.count = rq->count;
    if (poller_submit(pollers[b], &job) < 0) {
        err->code = "failed";
        snprintf(err->message, sizeof(err->message), "bus %s is stopping", rq->bus);
        goto out;
    }
    poller_wait(pollers[b], &job);
    if (job.err) {
        err->code = "modbus";
        if (job.err < 0)
            snprintf(err->message, sizeof(err->message), "bus %s: %s", rq->bus, strerror(-job.err));
        else
            snprintf(err->message, sizeof(err->message),
                     "bus %s unit %d function %d address %d count %d: %s after %lld ms", rq->bus,
                     rq->unit, rq->fc, rq->addr, rq->count,
                     poller_error_name(job.err, ebuf, sizeof(ebuf)), (long long)job.rtt_ms);
        goto out;
    }
    cJSON_AddStringToObject(res, "bus", rq->bus);
    cJSON_AddNumberToObject(res, "unit", rq->unit);
    cJSON_AddNumberToObject(res, "function", rq->fc);
    cJSON_AddNumberToObject(res, "address", rq->addr);
    cJSON_AddNumberToObject(res, "count", rq->count);
    if ((w = cJSON_AddArrayToObject(res, "words")))
        for (int i = 0; i < rq->count; i++)
            cJSON_AddItemToArray(w, cJSON_CreateNumber(job.words[i]));
    cJSON_AddNumberToObject(res, "rtt_ms", (double)job.rtt_ms);
    rc = 0;
out:
    pthread_mutex_unlock(&a->ctl);
    return rc;
}

static int op_maintenance(void *arg, bool on, cJSON *res, struct cmd_error *err)
{
    struct agent *a = arg;
    struct queue_stats qs;

    (void)err;
    pthread_mutex_lock(&a->ctl);
    a->maintenance = on;
    if (a->up)
        uplink_set_maintenance(a->up, on);
    queue_get_stats(a->q, &qs);
    cJSON_AddBoolToObject(res, "maintenance", on);
    cJSON_AddNumberToObject(res, "queue_depth", (double)qs.depth);
    pthread_mutex_unlock(&a->ctl);
    return 0;
}

static int op_reboot(void *arg, cJSON *res, struct cmd_error *err)
{
    struct agent *a = arg;

    (void)err;
    cJSON_AddStringToObject(res, "reboot", "scheduled");
    cJSON_AddNumberToObject(res, "in_ms", REBOOT_DELAY_MS);
    cJSON_AddStringToObject(res, "board", board_name(a->board));
    atomic_store(&a->reboot_at, mono_ms() + REBOOT_DELAY_MS);
    return 0;
}

static void op_reply(void *arg, const char *payload, size_t len)
{
    struct agent *a = arg;

    pthread_mutex_lock(&a->ctl);
    if (a->up)
        uplink_reply(a->up, payload, len);
    else
        log_warnx("command reply dropped: no uplink");
    pthread_mutex_unlock(&a->ctl);
}

/* The reboot command, on the main thread: everything stops and the queue is closed first
 * (memory-first readings reach the file); a board that does not reboot (sim) or cannot
 * (no permission) gets everything started again. */
static void do_reboot(struct agent *a)
{
    int rc;

    pthread_mutex_lock(&a->ctl);
    log_info("reboot: stopping pollers, uplink and queue");
    stop_pollers();
    if (a->up)
        uplink_stop(a->up);
    a->up = NULL;
    queue_close(a->q);
    a->q = NULL;
    rc = board_reboot(a->board);
    if (rc < 0)
        log_warnx("reboot: %s; carrying on", strerror(-rc));
    else
        log_info("reboot: the board did not reboot; carrying on");
    if ((rc = queue_open(a->cfg->queue_path, &a->cfg->queue, &a->q)) < 0) {
        log_warnx("cannot open the queue %s again: %s; stopping", a->cfg->queue_path,
                  strerror(-rc));
        got_stop = 1;
    } else {
        start_uplink(a);
        start_pollers(a);
    }
    pthread_mutex_unlock(&a->ctl);
}

/* --- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"check-config", no_argument, NULL, 'n'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct agent ag;
    struct agent *a = &ag;
    struct cmd_ops ops = {op_ping,       op_poll_now,       op_get_config,
                          op_set_config, op_read_registers, op_maintenance,
                          op_reboot,     op_reply,          a};
    const char *path = "/etc/meterlink/agent.json";
    int check = 0, fg = 0, verbose = 0, ch, nerr, rc = 1;
    struct agent_cfg *cfg = NULL;
    board_t *board = NULL;
    int64_t last_kick = 0;
    struct sigaction sa;

    if (argc > 1 && strcmp(argv[1], "scan") == 0)
        return scan_main(argc - 1, argv + 1);

    /* first of all: a stop signal during start-up must stop cleanly, too */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    while ((ch = getopt_long(argc, argv, "f:ndvh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            path = optarg;
            break;
        case 'n':
            check = 1;
            break;
        case 'd':
            fg = 1;
            break;
        case 'v':
            verbose++;
            break;
        case 'V':
            printf("meter-agent %s\n", MLK_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (check && optind < argc)
        path = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "meter-agent: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    if (!(cfg = calloc(1, sizeof(*cfg)))) {
        fprintf(stderr, "meter-agent: out of memory\n");
        return 1;
    }
    nerr = cfg_load(path, cfg, report_stderr, NULL);
    if (check) {
        /* the board file is part of the configuration */
        if (nerr == 0) {
            char bpath[512], err[BOARD_ERR_MAX];
            if (board_file_for(cfg->board, bpath, sizeof(bpath)) < 0 ||
                board_load(bpath, &board, err, sizeof(err)) < 0) {
                fprintf(stderr, "%s: board \"%s\": %s\n", path, cfg->board, err);
                nerr++;
            }
            board_free(board);
            board = NULL;
        }
        if (nerr == 0)
            printf("configuration OK\n");
        else
            fprintf(stderr, "%s: %d error%s\n", path, nerr, nerr == 1 ? "" : "s");
        cfg_free(cfg);
        free(cfg);
        return nerr ? 1 : 0;
    }
    if (nerr) {
        fprintf(stderr, "%s: %d error%s; not starting\n", path, nerr, nerr == 1 ? "" : "s");
        cfg_free(cfg);
        free(cfg);
        return 1;
    }
    {
        char bpath[512], err[BOARD_ERR_MAX], id[BOARD_ID_MAX];
        int brc;
        if (board_file_for(cfg->board, bpath, sizeof(bpath)) < 0 ||
            board_load(bpath, &board, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s: board \"%s\": %s\n", path, cfg->board, err);
            cfg_free(cfg);
            free(cfg);
            return 1;
        }
        brc = board_identity(board, id, sizeof(id));
        if (brc == 0 && !cfg->gateway_id[0]) {
            snprintf(cfg->gateway_id, sizeof(cfg->gateway_id), "%s", id);
        } else if (brc < 0 && brc != -ENODATA) {
            fprintf(stderr, "%s: board %s: gateway identity: %s\n", path, board_name(board),
                    strerror(-brc));
            goto early_out;
        }
        if (!cfg->gateway_id[0]) {
            fprintf(stderr, "%s: gateway.id: required (board %s gives no identity)\n", path,
                    board_name(board));
            goto early_out;
        }
    }
    log_init("meter-agent", verbose, fg);
    if (!fg)
        log_info("running in the background is not supported yet; logging to syslog");

    a->path = path;
    a->cfg = cfg;
    a->board = board;
    a->started_ms = mono_ms();
    atomic_init(&a->reboot_at, 0);
    pthread_mutex_init(&a->ctl, NULL);
    pthread_mutex_init(&a->cmds_mu, NULL);
    cfg = NULL; /* a->cfg from here on */

    if (queue_open(a->cfg->queue_path, &a->cfg->queue, &a->q) < 0) {
        log_warnx("cannot open the queue %s", a->cfg->queue_path);
        goto out;
    }
    if ((rc = commands_start(&ops, &a->cmds)) < 0) {
        log_warnx("cannot start the command thread: %s", strerror(-rc));
        rc = 1;
        goto out;
    }
    pthread_mutex_lock(&a->ctl);
    npollers = a->cfg->nbuses; /* before the uplink thread reads it */
    if (start_uplink(a) < 0 || start_pollers(a) < 0) {
        pthread_mutex_unlock(&a->ctl);
        rc = 1;
        goto out;
    }
    pthread_mutex_unlock(&a->ctl);
    log_info("gateway %s: %d meters on %d buses, stream %s", a->cfg->gateway_id, a->cfg->nmeters,
             a->cfg->nbuses, queue_stream(a->q));
    if ((rc = board_watchdog_start(board)) < 0)
        log_warnx("watchdog: %s", strerror(-rc));
    board_led_set(board, BOARD_LED_RUN, BOARD_LED_HEARTBEAT);
    board_sd_notify("READY=1");
    while (!got_stop) {
        long iv = board_watchdog_interval_ms(board);
        int64_t reboot_at = atomic_load(&a->reboot_at);

        sleep_ms(100);
        if (got_hup) {
            got_hup = 0;
            board_sd_notify("RELOADING=1");
            reload_file(a);
            board_sd_notify("READY=1");
        }
        if (reboot_at && mono_ms() >= reboot_at) {
            atomic_store(&a->reboot_at, 0);
            do_reboot(a);
        }
        /* Kick the watchdog only while every bus thread goes round: a stuck poller must
         * end in a reset, not in a gateway that looks alive and reads nothing. */
        if (iv > 0 && mono_ms() - last_kick >= iv) {
            int healthy = 1;
            pthread_mutex_lock(&pollers_mu);
            for (int i = 0; i < npollers; i++)
                if (pollers[i] &&
                    poller_idle_ms(pollers[i]) > poller_round_max_ms(pollers[i]) + 10000)
                    healthy = 0;
            pthread_mutex_unlock(&pollers_mu);
            if (healthy) {
                board_watchdog_kick(board);
                last_kick = mono_ms();
            }
        }
        /* never wait here for a reload or a command */
        if (pthread_mutex_trylock(&a->ctl) == 0) {
            struct uplink_stats us = {0};
            if (a->up)
                uplink_get_stats(a->up, &us);
            pthread_mutex_unlock(&a->ctl);
            board_led_set(board, BOARD_LED_UPLINK, us.connected ? BOARD_LED_ON : BOARD_LED_OFF);
        }
    }
    log_info("stopping");
    board_sd_notify("STOPPING=1");
    rc = 0;
out:
    /* commands first (one may be running), then pollers (they wake the uplink), then the
     * uplink */
    {
        commands_t *c;
        pthread_mutex_lock(&a->cmds_mu);
        c = a->cmds;
        a->cmds = NULL;
        pthread_mutex_unlock(&a->cmds_mu);
        commands_stop(c);
    }
    pthread_mutex_lock(&a->ctl);
    stop_pollers();
    if (a->up)
        uplink_stop(a->up);
    a->up = NULL;
    queue_close(a->q);
    a->q = NULL;
    pthread_mutex_unlock(&a->ctl);
    if (board) {
        board_led_set(board, BOARD_LED_RUN, BOARD_LED_OFF);
        board_led_set(board, BOARD_LED_UPLINK, BOARD_LED_OFF);
        board_watchdog_stop(board); /* the magic close: only on a clean stop */
    }
    cfg = a->cfg;
early_out:
    board_free(board);
    if (cfg) {
        cfg_free(cfg);
        free(cfg);
    }
    return rc;
}
