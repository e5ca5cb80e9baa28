/*
 * ingest: see ingest.h.
 *
 * Threading: one thread runs loop_main(): it drives libmosquitto (mosquitto_loop) and
 * every callback below runs on it, so the rate limiter and the parse path need no locks.
 * Counters are atomics because the HTTP threads read them. We run our own loop instead
 * of mosquitto_loop_start() because mosquitto_loop_forever() gives up for good on some
 * errors (a failed DNS lookup, a protocol error); this loop retries after every error.
 *
 * Order per message: parse, store, then publish the ack. An ack is never published for
 * anything the store has not committed; when the cloud dies between commit and ack, the
 * gateway resends after its ack timeout and the store answers it from the committed state
 * (the resent readings are duplicates).
 *
 * Group commit: readings batches are stored in a group (store_group_begin), one transaction
 * for several messages, and their acks, counters and live events wait in the group until
 * its commit. A group is committed as soon as the broker has nothing more to hand over
 * right now (a poll finds no complete message and no unread byte), after GROUP_MAX_MS, at
 * GROUP_MAX_READINGS readings or GROUP_MAX_BATCHES batches, and before any other message
 * (status, loss, health) or store write. So an idle cloud acks at once, and a busy one
 * pays one commit (one fsync, one write of each page touched) per group instead of one per
 * batch. Per stream only the newest ack of the group is published: it covers the others.
 * A failed commit stores none of the group: nothing of it is acked, and the gateways send
 * it again. The broker's PUBACK to each message does not wait for the commit; it need not,
 * since a gateway keeps every reading until our ack covers it.
 */
#include "ingest.h"

#include "events.h"
#include "log.h"
#include "msg.h"
#include "timeutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>

#define KEEPALIVE_S 30
#define LOOP_TIMEOUT_MS 500
#define DELAY_MIN_S 1
#define DELAY_MAX_S 30
#define REJECT_LOG_INTERVAL_MS 60000
#define STATUS_MAX_PAYLOAD 65536
#define TOPIC_MAX (CFG_PREFIX_MAX + 32)
#define GAP_CHECK_INTERVAL_MS 1000
#define GAPS_PER_CHECK 16
#define GROUP_MAX_MS 250         /* a group is committed at most this long after it began */
#define GROUP_MAX_READINGS 50000 /* ... or once it holds this many readings */
#define GROUP_MAX_BATCHES 256    /* ... or this many batches */

/* A batch stored in the open group: what to count and publish after its commit. */
struct group_batch {
    char gw[WIRE_ID_MAX];
    struct wire_batch b; /* kept for the live events */
    int inserted, duplicates;
    bool stored; /* false: nothing stored (-E2BIG), only its ack is due */
};

/* The open group (loop thread only). */
struct group {
    bool open;
    int64_t deadline; /* mono_ms */
    int readings, n;
    struct group_batch batches[GROUP_MAX_BATCHES];
    /* the newest ack per (gateway, stream), in order of first appearance */
    int nacks;
    struct {
        char gw[WIRE_ID_MAX];
        struct store_ack ack;
    } acks[GROUP_MAX_BATCHES];
};

/* A command waiting for its reply (ingest_command). */
struct pending_cmd {
    bool used;
    bool done; /* reply is set */
    char id[INGEST_CMD_ID_LEN + 1];
    char gw[WIRE_ID_MAX];
    char *reply;
};

struct ingest {
    struct cfg_mqtt cfg;
    store_t *st;
    struct mosquitto *mosq;
    int gap_grace_ms;
    char sub[5][TOPIC_MAX]; /* readings, status, loss, health, reply */

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu; /* with cond: wakes the thread from its reconnect delay */
    pthread_cond_t cond;
    /* maintenance mode: under maint_mu, a batch is either kept pending or stored, and the
     * pending ones are applied before any later batch (ingest_set_maintenance) */
    pthread_mutex_t maint_mu;
    bool maint;
    atomic_bool maint_seen; /* maint, readable without maint_mu (it is set under it) */
    struct group *group;    /* loop thread only */
    atomic_bool stop;
    atomic_bool connected;

    /* loop thread only */
    bool attempted; /* a connect was tried: reconnect from now on */
    bool warned;    /* the current outage has been logged */
    int delay_s;    /* next reconnect delay */
    int64_t last_log[IC_COUNT];
    bool logged[IC_COUNT];
    uint64_t suppressed[IC_COUNT];
    int64_t next_gap_check; /* mono_ms */

    atomic_uint_fast64_t messages, batches, stored, duplicates, statuses;
    atomic_uint_fast64_t losses, healths, acks, data_gaps, commands, replies;
    atomic_uint_fast64_t rejects[IC_COUNT];

    /* commands: cmd_mu guards the table and cmd_closed; cmd_cond wakes the waiters */
    pthread_mutex_t cmd_mu;
    pthread_cond_t cmd_cond;
    bool cmd_closed;
    struct pending_cmd cmds[INGEST_CMD_PENDING_MAX];
};

const char *ingest_cause_name(enum ingest_cause c)
{
    static const char *const names[] = {"envelope", "gw_mismatch"};

    if (c == IC_ENVELOPE || c == IC_GW_MISMATCH)
        return names[c];
    if (c >= IC_READING && c < IC_READING + WR_COUNT)
        return wire_reject_name((enum wire_reject)(c - IC_READING));
    switch (c) {
    case IC_BAD_TOPIC:
        return "bad_topic";
    case IC_BAD_STATUS:
        return "bad_status";
    case IC_BAD_LOSS:
        return "bad_loss";
    case IC_BAD_HEALTH:
        return "bad_health";
    case IC_BAD_REPLY:
        return "bad_reply";
    case IC_SEQ_LIMIT:
        return "seq_limit";
    case IC_STORE:
        return "store_error";
    default:
        return "?";
    }
}

static const char *mqtt_strerror(int rc)
{
    return rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc);
}

/* Counts n rejects of cause c and logs the reason unless this cause was logged less than a
 * minute ago; the next line says how many went unlogged in between. */
static void reject(ingest_t *in, enum ingest_cause c, uint64_t n, const char *gw,
                   const char *reason)
{
    int64_t now = mono_ms();

    atomic_fetch_add(&in->rejects[c], n);
    if (in->logged[c] && now - in->last_log[c] < REJECT_LOG_INTERVAL_MS) {
        in->suppressed[c] += n;
        return;
    }
    if (in->suppressed[c])
        log_warnx(
            "ingest: %s: %llu message(s) dropped (%s): %s (and %llu more since the last report)",
            gw, (unsigned long long)n, ingest_cause_name(c), reason,
            (unsigned long long)in->suppressed[c]);
    else
        log_warnx("ingest: %s: %llu message(s) dropped (%s): %s", gw, (unsigned long long)n,
                  ingest_cause_name(c), reason);
    in->logged[c] = true;
    in->last_log[c] = now;
    in->suppressed[c] = 0;
}

/* Counts a batch's rejected readings by cause. wire gives the reason of the batch's first
 * reject only, so one line covers the batch: it is logged when one of its causes was not
 * logged in the last minute, and names every cause with its count. */
static void reject_readings(ingest_t *in, const char *gw, const struct wire_batch *b)
{
    int64_t now = mono_ms();
    uint64_t unlogged = 0;
    char causes[200];
    size_t len = 0;
    bool due = false;

    causes[0] = '\0';
    for (int w = 0; w < WR_COUNT; w++) {
        int c = IC_READING + w;
        if (!b->rejected[w])
            continue;
        atomic_fetch_add(&in->rejects[c], (uint64_t)b->rejected[w]);
        if (!in->logged[c] || now - in->last_log[c] >= REJECT_LOG_INTERVAL_MS)
            due = true;
        if (len < sizeof(causes))
            len += (size_t)snprintf(causes + len, sizeof(causes) - len, "%s%s %d", len ? ", " : "",
                                    wire_reject_name((enum wire_reject)w), b->rejected[w]);
    }
    if (!due) {
        for (int w = 0; w < WR_COUNT; w++)
            in->suppressed[IC_READING + w] += (uint64_t)b->rejected[w];
        return;
    }
    for (int w = 0; w < WR_COUNT; w++) {
        int c = IC_READING + w;
        if (!b->rejected[w])
            continue;
        unlogged += in->suppressed[c];
        in->suppressed[c] = 0;
        in->logged[c] = true;
        in->last_log[c] = now;
    }
    if (unlogged)
        log_warnx("ingest: %s: %d reading(s) dropped (%s); first: %s (and %llu more since the "
                  "last report)",
                  gw, b->nrejected, causes, b->first_reject, (unsigned long long)unlogged);
    else
        log_warnx("ingest: %s: %d reading(s) dropped (%s); first: %s", gw, b->nrejected, causes,
                  b->first_reject);
}

enum topic_kind { T_READINGS, T_STATUS, T_LOSS, T_HEALTH, T_REPLY };

/* Splits "<prefix>/<gw>/readings|status|loss|health|reply"; returns 0, or -EINVAL for any
 * other topic. */
static int split_topic(const char *prefix, const char *topic, char *gw, enum topic_kind *k)
{
    size_t pl = strlen(prefix), gl;
    const char *g, *slash;

    if (strncmp(topic, prefix, pl) != 0 || topic[pl] != '/')
        return -EINVAL;
    g = topic + pl + 1;
    slash = strchr(g, '/');
    if (!slash || (gl = (size_t)(slash - g)) == 0 || gl >= WIRE_ID_MAX)
        return -EINVAL;
    memcpy(gw, g, gl);
    gw[gl] = '\0';
    if (!wire_id_valid(gw))
        return -EINVAL;
    if (strcmp(slash + 1, "readings") == 0)
        *k = T_READINGS;
    else if (strcmp(slash + 1, "status") == 0)
        *k = T_STATUS;
    else if (strcmp(slash + 1, "loss") == 0)
        *k = T_LOSS;
    else if (strcmp(slash + 1, "health") == 0)
        *k = T_HEALTH;
    else if (strcmp(slash + 1, "reply") == 0)
        *k = T_REPLY;
    else
        return -EINVAL;
    return 0;
}

/* Publishes a's ack to gateway gw: QoS 1, not retained. Called only with a committed
 * state. A failure is logged (debug) and not retried: the gateway resends what stays
 * unconfirmed, and the answer to that is another ack. */
static void publish_ack(ingest_t *in, const char *gw, const struct store_ack *a)
{
    char topic[TOPIC_MAX], buf[MSG_ACK_MAX];
    int n, rc;

    n = msg_format_ack(a, buf, sizeof(buf));
    if (n < 0) {
        log_warnx("ingest: %s: cannot encode the ack of stream %s", gw, a->stream);
        return;
    }
    snprintf(topic, sizeof(topic), "%s/%s/ack", in->cfg.prefix, gw);
    rc = mosquitto_publish(in->mosq, NULL, topic, n, buf, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        log_debug("ingest: %s: ack not published: %s", gw, mqtt_strerror(rc));
        return;
    }
    atomic_fetch_add(&in->acks, 1);
    log_debug("ingest: %s: ack %s", gw, buf);
}

/* Replaces anything but printable ASCII in a failed poll's error text by '?': it is shown
 * in the API and logs, and wire.h only bounds its length. */
static void clean_errors(struct reading *r, int n)
{
    for (int i = 0; i < n; i++)
        for (char *p = r[i].error; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                *p = '?';
}

/* Commits the open group, then publishes what waited for it; on a failed commit, counts
 * its batches as not stored. Loop thread only. */
static void group_flush(ingest_t *in)
{
    struct group *g = in->group;
    int rc;

    if (!g->open)
        return;
    g->open = false;
    rc = store_group_commit(in->st);
    if (rc < 0) {
        char err[200];
        snprintf(err, sizeof(err), "a group of %d batches (%d readings) not stored: %s", g->n,
                 g->readings, strerror(-rc));
        reject(in, IC_STORE, (uint64_t)g->n, g->n ? g->batches[0].gw : "?", err);
    } else {
        for (int i = 0; i < g->nacks; i++)
            publish_ack(in, g->acks[i].gw, &g->acks[i].ack);
    }
    for (int i = 0; i < g->n; i++) {
        struct group_batch *e = &g->batches[i];
        if (rc == 0 && e->stored) {
            atomic_fetch_add(&in->batches, 1);
            atomic_fetch_add(&in->stored, (uint64_t)e->inserted);
            atomic_fetch_add(&in->duplicates, (uint64_t)e->duplicates);
            if (e->inserted > 0)
                events_publish_batch(e->gw, e->b.readings, e->b.n);
        }
        wire_batch_free(&e->b);
    }
    g->n = g->nacks = g->readings = 0;
}

/* Keeps ack a of gateway gw to publish after the group's commit: it replaces an older one
 * of the same stream. */
static void group_ack(struct group *g, const char *gw, const struct store_ack *a)
{
    int i;

    for (i = 0; i < g->nacks; i++)
        if (strcmp(g->acks[i].gw, gw) == 0 && strcmp(g->acks[i].ack.stream, a->stream) == 0)
            break;
    if (i == g->nacks) {
        snprintf(g->acks[i].gw, sizeof(g->acks[i].gw), "%s", gw);
        g->nacks++;
    }
    g->acks[i].ack = *a;
}

/* Makes sure a group is open for a batch of n readings (committing a full one first).
 * Returns false when none could be begun: the batch is then stored on its own. */
static bool group_enter(ingest_t *in, int n)
{
    struct group *g = in->group;

    if (!g)
        return false;
    if (g->open && (g->n == GROUP_MAX_BATCHES || g->readings + n > GROUP_MAX_READINGS ||
                    mono_ms() >= g->deadline))
        group_flush(in);
    if (g->open)
        return true;
    if (store_group_begin(in->st) < 0)
        return false;
    g->open = true;
    g->deadline = mono_ms() + GROUP_MAX_MS;
    return true;
}

/* During maintenance: keeps the batch pending, unacked (the gateway keeps it until a later
 * ack says it is stored). Returns false when maintenance is off. */
static bool keep_pending(ingest_t *in, const char *gw, const char *payload, size_t len)
{
    int rc;
    char err[200];

    pthread_mutex_lock(&in->maint_mu);
    if (!in->maint) {
        pthread_mutex_unlock(&in->maint_mu);
        return false;
    }
    rc = store_pending_add(in->st, gw, payload, len, now_ms());
    pthread_mutex_unlock(&in->maint_mu);
    if (rc < 0) {
        snprintf(err, sizeof(err), "batch not kept pending: %s", strerror(-rc));
        reject(in, IC_STORE, 1, gw, err);
    }
    return true;
}

/* Parses, stores and acks one batch. applying: it comes from the pending table (never kept
 * pending again). Returns 0, or the store's error when the batch could not be stored for a
 * reason that may pass (a rejected batch returns 0: storing it again would not help). */
static int on_readings(ingest_t *in, const char *gw, const char *payload, size_t len, bool applying)
{
    int ret = 0;
    struct wire_batch b;
    struct store_put_result res;
    char err[200];
    bool grouped;
    int rc;

    if (len > WIRE_MAX_PAYLOAD) {
        snprintf(err, sizeof(err), "payload of %zu bytes exceeds %d", len, WIRE_MAX_PAYLOAD);
        reject(in, IC_ENVELOPE, 1, gw, err);
        return 0;
    }
    if (len && memchr(payload, '\0', len)) {
        /* JSON text never holds a NUL byte; cJSON would skip a leading one as white space */
        reject(in, IC_ENVELOPE, 1, gw, "payload contains a NUL byte");
        return 0;
    }
    err[0] = '\0';
    if (wire_parse_batch(payload, len, &b, err, sizeof(err)) < 0) {
        reject(in, IC_ENVELOPE, 1, gw, err[0] ? err : "unusable payload");
        return 0;
    }
    if (strcmp(b.gw, gw) != 0) {
        /* a gateway may only speak for itself: the broker ACL ties it to its topic */
        snprintf(err, sizeof(err), "payload gw \"%s\" differs from the topic's", b.gw);
        reject(in, IC_GW_MISMATCH, 1, gw, err);
        goto done;
    }
    if (!applying && atomic_load(&in->maint_seen)) {
        /* the group's writer must not wait for maint_mu: ingest_set_maintenance() may hold
         * it while it waits for the writer */
        group_flush(in);
        if (keep_pending(in, gw, payload, len))
            goto done;
    }
    if (b.nrejected)
        reject_readings(in, gw, &b);
    clean_errors(b.readings, b.n);
    grouped = !applying && group_enter(in, b.n);
    rc = store_put_batch(in->st, gw, b.stream, b.readings, b.n, now_ms(), &res);
    if (grouped && (rc == 0 || rc == -E2BIG)) {
        struct group_batch *e = &in->group->batches[in->group->n++];
        snprintf(e->gw, sizeof(e->gw), "%s", gw);
        e->stored = rc == 0;
        e->inserted = res.inserted;
        e->duplicates = res.duplicates;
        group_ack(in->group, gw, &res.ack);
        in->group->readings += b.n;
        log_debug("ingest: %s: stream %s: %d stored, %d new seqs, %d duplicate, %d rejected "
                  "(to commit)",
                  gw, b.stream, res.inserted, res.received, res.duplicates, b.nrejected);
        if (rc == -E2BIG)
            reject(in, IC_SEQ_LIMIT, 1, gw,
                   "batch not stored: the stream has too many "
                   "missing ranges");
        e->b = b; /* the group frees it */
        return 0;
    }
    if (rc == -E2BIG) {
        /* Nothing stored. The ack of the state as it is lets the gateway fill the oldest
         * holes (or report them lost) until the batch fits. */
        snprintf(err, sizeof(err),
                 "stream %s: batch of %d readings not stored: the stream would have more than "
                 "%d missing ranges",
                 b.stream, b.n, STORE_SEQ_RANGES_MAX);
        reject(in, IC_SEQ_LIMIT, 1, gw, err);
        publish_ack(in, gw, &res.ack);
        goto done;
    }
    if (rc < 0) {
        snprintf(err, sizeof(err), "batch of %d readings not stored: %s", b.n, strerror(-rc));
        reject(in, IC_STORE, 1, gw, err);
        ret = rc;
        goto done;
    }
    atomic_fetch_add(&in->batches, 1);
    atomic_fetch_add(&in->stored, (uint64_t)res.inserted);
    atomic_fetch_add(&in->duplicates, (uint64_t)res.duplicates);
    log_debug("ingest: %s: stream %s: %d stored, %d new seqs, %d duplicate, %d rejected", gw,
              b.stream, res.inserted, res.received, res.duplicates, b.nrejected);
    publish_ack(in, gw, &res.ack);
    if (res.inserted > 0)
        events_publish_batch(gw, b.readings, b.n); /* committed: the live stream may see it */
done:
    wire_batch_free(&b);
    return ret;
}

static void on_loss(ingest_t *in, const char *gw, const char *payload, size_t len)
{
    struct msg_loss *l;
    struct store_loss_result res;
    char err[200];
    int rc;

    l = malloc(sizeof(*l));
    if (!l) {
        reject(in, IC_STORE, 1, gw, "loss report not stored: out of memory");
        return;
    }
    err[0] = '\0';
    if (msg_parse_loss(payload, len, l, err, sizeof(err)) < 0) {
        reject(in, IC_BAD_LOSS, 1, gw, err[0] ? err : "unusable loss report");
        goto done;
    }
    if (strcmp(l->gw, gw) != 0) {
        snprintf(err, sizeof(err), "loss report: payload gw \"%s\" differs from the topic's",
                 l->gw);
        reject(in, IC_GW_MISMATCH, 1, gw, err);
        goto done;
    }
    rc = store_put_loss(in->st, gw, l->stream, l->losses, l->n, now_ms(), &res);
    if (rc == -E2BIG) {
        snprintf(err, sizeof(err),
                 "stream %s: loss report not stored: the stream would have more than %d "
                 "missing ranges",
                 l->stream, STORE_SEQ_RANGES_MAX);
        reject(in, IC_SEQ_LIMIT, 1, gw, err);
        publish_ack(in, gw, &res.ack);
        goto done;
    }
    if (rc < 0) {
        snprintf(err, sizeof(err), "loss report not stored: %s", strerror(-rc));
        reject(in, IC_STORE, 1, gw, err);
        goto done;
    }
    atomic_fetch_add(&in->losses, 1);
    /* a report is repeated until acked: only one that counts new seqs is news */
    if (res.lost)
        log_warnx("ingest: %s: stream %s: the gateway reports %llu reading(s) lost "
                  "(first range %llu..%llu, %s)",
                  gw, l->stream, (unsigned long long)res.lost,
                  (unsigned long long)l->losses[0].first, (unsigned long long)l->losses[0].last,
                  l->losses[0].reason);
    publish_ack(in, gw, &res.ack);
done:
    free(l);
}

static void on_health(ingest_t *in, const char *gw, const char *payload, size_t len)
{
    struct msg_health h;
    char err[200];

    err[0] = '\0';
    if (msg_parse_health(payload, len, &h, err, sizeof(err)) < 0) {
        reject(in, IC_BAD_HEALTH, 1, gw, err[0] ? err : "unusable health message");
        return;
    }
    if (strcmp(h.gw, gw) != 0) {
        snprintf(err, sizeof(err), "health: payload gw \"%s\" differs from the topic's", h.gw);
        reject(in, IC_GW_MISMATCH, 1, gw, err);
        return;
    }
    if (!h.has_ts)
        h.h.ts_ms = now_ms();
    if (store_put_health(in->st, gw, payload, len, &h.h, now_ms()) < 0) {
        reject(in, IC_STORE, 1, gw, "health not stored");
        return;
    }
    atomic_fetch_add(&in->healths, 1);
}

/* Publishes the ack of each of gateway gw's newest streams. */
static void ack_streams(ingest_t *in, const char *gw)
{
    struct store_ack *acks;
    int n = 0;

    acks = malloc(STORE_STREAMS_MAX * sizeof(*acks));
    if (!acks)
        return;
    if (store_stream_acks(in->st, gw, acks, STORE_STREAMS_MAX, &n) < 0)
        log_warnx("ingest: %s: cannot read its streams for an ack", gw);
    for (int i = 0; i < n; i++)
        publish_ack(in, gw, &acks[i]);
    free(acks);
}

static void on_status(ingest_t *in, const char *gw, const char *payload, size_t len)
{
    const cJSON *state, *ts;
    cJSON *root = NULL;
    int64_t when = now_ms();
    bool changed;
    char err[96];

    if (len == 0)
        return; /* a retained status being cleared */
    if (len > STATUS_MAX_PAYLOAD) {
        snprintf(err, sizeof(err), "status of %zu bytes exceeds %d", len, STATUS_MAX_PAYLOAD);
        reject(in, IC_BAD_STATUS, 1, gw, err);
        return;
    }
    root = cJSON_ParseWithLength(payload, len);
    state = cJSON_GetObjectItemCaseSensitive(root, "state");
    if (!cJSON_IsObject(root) || !cJSON_IsString(state) ||
        (strcmp(state->valuestring, "online") != 0 && strcmp(state->valuestring, "offline") != 0)) {
        reject(in, IC_BAD_STATUS, 1, gw,
               "status: not a JSON object with \"state\": \"online\" or \"offline\"");
        goto done;
    }
    /* The gateway's own time when it sends one; a Last Will has none. */
    ts = cJSON_GetObjectItemCaseSensitive(root, "ts");
    if (cJSON_IsNumber(ts) && isfinite(ts->valuedouble) && ts->valuedouble >= 0 &&
        ts->valuedouble <= 253402300799999.0 && ts->valuedouble == floor(ts->valuedouble))
        when = (int64_t)ts->valuedouble;
    if (store_put_status(in->st, gw, state->valuestring, when, &changed) < 0) {
        reject(in, IC_STORE, 1, gw, "status not stored");
        goto done;
    }
    atomic_fetch_add(&in->statuses, 1);
    if (changed) {
        log_info("ingest: gateway %s is %s", gw, state->valuestring);
        events_publish_status(gw, state->valuestring, when);
    }
    if (strcmp(state->valuestring, "online") == 0)
        ack_streams(in, gw);
done:
    cJSON_Delete(root);
}

/* A gateway's reply to a command: handed to the command waiting for it (same id, same
 * gateway). A reply nobody waits for any more (it came after the timeout) is dropped. */
static void on_reply(ingest_t *in, const char *gw, const char *payload, size_t len)
{
    const cJSON *id, *ok;
    cJSON *root = NULL;
    char err[96];
    bool matched = false;

    if (len > INGEST_REPLY_MAX) {
        snprintf(err, sizeof(err), "reply of %zu bytes exceeds %d", len, INGEST_REPLY_MAX);
        reject(in, IC_BAD_REPLY, 1, gw, err);
        return;
    }
    if (!msg_utf8_valid(payload, len) || !(root = cJSON_ParseWithLength(payload, len)) ||
        !cJSON_IsObject(root) ||
        !cJSON_IsString(id = cJSON_GetObjectItemCaseSensitive(root, "id")) ||
        strlen(id->valuestring) != INGEST_CMD_ID_LEN ||
        !cJSON_IsBool(ok = cJSON_GetObjectItemCaseSensitive(root, "ok"))) {
        reject(in, IC_BAD_REPLY, 1, gw,
               "reply: not a JSON object with a command \"id\" and a boolean \"ok\"");
        goto done;
    }
    pthread_mutex_lock(&in->cmd_mu);
    for (int i = 0; i < INGEST_CMD_PENDING_MAX; i++) {
        struct pending_cmd *p = &in->cmds[i];
        if (!p->used || p->done || strcmp(p->id, id->valuestring) != 0 || strcmp(p->gw, gw) != 0)
            continue;
        if ((p->reply = malloc(len + 1))) {
            memcpy(p->reply, payload, len);
            p->reply[len] = '\0';
            p->done = true;
            matched = true;
            pthread_cond_broadcast(&in->cmd_cond);
        }
        break;
    }
    pthread_mutex_unlock(&in->cmd_mu);
    if (matched)
        atomic_fetch_add(&in->replies, 1);
    else
        log_debug("ingest: %s: reply to command %s: nobody waits for it (late or unknown)", gw,
                  id->valuestring);
done:
    cJSON_Delete(root);
}

static void on_message(struct mosquitto *mosq, void *arg, const struct mosquitto_message *m)
{
    ingest_t *in = arg;
    char gw[WIRE_ID_MAX];
    enum topic_kind k;

    atomic_fetch_add(&in->messages, 1);
    if (m->payloadlen < 0 || split_topic(in->cfg.prefix, m->topic, gw, &k) < 0) {
        reject(in, IC_BAD_TOPIC, 1, "?", "a topic not of the form <prefix>/<gw>/<kind>");
        return;
    }
    if (k != T_READINGS && k != T_REPLY)
        group_flush(in); /* in order, and their store writes do not join a group */
    switch (k) {
    case T_READINGS:
        on_readings(in, gw, m->payload, (size_t)m->payloadlen, false);
        break;
    case T_STATUS:
        on_status(in, gw, m->payload, (size_t)m->payloadlen);
        break;
    case T_LOSS:
        on_loss(in, gw, m->payload, (size_t)m->payloadlen);
        break;
    case T_HEALTH:
        on_health(in, gw, m->payload, (size_t)m->payloadlen);
        break;
    case T_REPLY:
        on_reply(in, gw, m->payload, (size_t)m->payloadlen);
        break;
    }
}

static void on_connect(struct mosquitto *mosq, void *arg, int rc)
{
    ingest_t *in = arg;
    int r = MOSQ_ERR_SUCCESS;

    if (rc != 0) {
        if (!in->warned)
            log_warnx("mqtt: %s:%d refused the connection: %s", in->cfg.host, in->cfg.port,
                      mosquitto_connack_string(rc));
        in->warned = true;
        return;
    }
    log_info("mqtt: connected to %s:%d", in->cfg.host, in->cfg.port);
    atomic_store(&in->connected, true);
    in->warned = false;
    in->delay_s = DELAY_MIN_S;
    /* a clean session forgets subscriptions: subscribe on every connect */
    for (size_t i = 0; i < sizeof(in->sub) / sizeof(in->sub[0]); i++) {
        int ri = mosquitto_subscribe(mosq, NULL, in->sub[i], 1);
        if (ri != MOSQ_ERR_SUCCESS && r == MOSQ_ERR_SUCCESS)
            r = ri;
    }
    if (r != MOSQ_ERR_SUCCESS)
        log_warnx("mqtt: subscribe: %s", mqtt_strerror(r));
}

static void on_subscribe(struct mosquitto *mosq, void *arg, int mid, int n, const int *qos)
{
    for (int i = 0; i < n; i++)
        if (qos[i] > 2)
            log_warnx("mqtt: the broker refused a subscription (reason %d)", qos[i]);
}

static void on_disconnect(struct mosquitto *mosq, void *arg, int rc)
{
    ingest_t *in = arg;
    bool was = atomic_exchange(&in->connected, false);

    if (was && rc != 0 && !atomic_load(&in->stop)) {
        log_warnx("mqtt: lost the connection to %s:%d (%s); reconnecting", in->cfg.host,
                  in->cfg.port, mqtt_strerror(rc));
        in->warned = true;
    }
}

static void on_log(struct mosquitto *mosq, void *arg, int level, const char *msg)
{
    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING))
        log_debug("mqtt: %s", msg);
}

/* Sleeps up to s seconds; returns early when ingest_stop() is called. */
static void wait_stop(ingest_t *in, int s)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += s;
    pthread_mutex_lock(&in->mu);
    while (!atomic_load(&in->stop))
        if (pthread_cond_timedwait(&in->cond, &in->mu, &t) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&in->mu);
}

static void backoff(ingest_t *in, int rc)
{
    if (!in->warned)
        log_warnx("mqtt: cannot reach %s:%d (%s); retrying", in->cfg.host, in->cfg.port,
                  mqtt_strerror(rc));
    else
        log_debug("mqtt: %s:%d (%s); retrying in %d s", in->cfg.host, in->cfg.port,
                  mqtt_strerror(rc), in->delay_s);
    in->warned = true;
    wait_stop(in, in->delay_s);
    in->delay_s = in->delay_s * 2 > DELAY_MAX_S ? DELAY_MAX_S : in->delay_s * 2;
}

/* Asks the store for data gaps (missing ranges open longer than the grace time) at most
 * once per GAP_CHECK_INTERVAL_MS, and logs each once. */
static void check_gaps(ingest_t *in)
{
    struct store_gap g[GAPS_PER_CHECK];
    int64_t mono = mono_ms(), now;
    int n = 0;

    if (mono < in->next_gap_check)
        return;
    in->next_gap_check = mono + GAP_CHECK_INTERVAL_MS;
    now = now_ms();
    if (store_check_gaps(in->st, now, in->gap_grace_ms, g, GAPS_PER_CHECK, &n) < 0)
        return; /* the store logged why; try again next time */
    for (int i = 0; i < n; i++)
        log_warnx("ingest: data gap: gateway %s stream %s: seqs %llu..%llu missing for %lld s "
                  "(neither received nor reported lost)",
                  g[i].gateway, g[i].stream, (unsigned long long)g[i].first,
                  (unsigned long long)g[i].last, (long long)((now - g[i].first_seen_ms) / 1000));
    atomic_fetch_add(&in->data_gaps, (uint64_t)n);
    if (n == GAPS_PER_CHECK)
        in->next_gap_check = mono; /* more may be due */
}

static void *loop_main(void *arg)
{
    ingest_t *in = arg;
    bool sock = false; /* a connection is being made or is up */
    int rc;

    while (!atomic_load(&in->stop)) {
        if (!in->group->open)
            check_gaps(in);
        if (!sock) {
            group_flush(in);
            if (in->attempted)
                rc = mosquitto_reconnect_async(in->mosq);
            else
                rc = mosquitto_connect_async(in->mosq, in->cfg.host, in->cfg.port, KEEPALIVE_S);
            in->attempted = true;
            if (rc != MOSQ_ERR_SUCCESS) {
                backoff(in, rc);
                continue;
            }
            sock = true;
        }
        if (in->group->open) {
            /* commit once the broker has nothing more for us right now, or when due */
            uint64_t before = atomic_load(&in->messages);
            int unread = 0;
            rc = mosquitto_loop(in->mosq, 0, 1);
            if ((atomic_load(&in->messages) == before &&
                 (ioctl(mosquitto_socket(in->mosq), FIONREAD, &unread) != 0 || unread == 0)) ||
                mono_ms() >= in->group->deadline)
                group_flush(in);
        } else {
            rc = mosquitto_loop(in->mosq, LOOP_TIMEOUT_MS, 1);
        }
        if (rc != MOSQ_ERR_SUCCESS) {
            group_flush(in);
            sock = false;
            if (atomic_load(&in->stop))
                break;
            backoff(in, rc);
        }
    }
    group_flush(in);
    return NULL;
}

int ingest_start(const struct cfg_mqtt *cfg, const struct cfg_ingest *icfg, store_t *st,
                 ingest_t **out)
{
    static const char *const kinds[] = {"readings", "status", "loss", "health", "reply"};
    pthread_condattr_t ca;
    ingest_t *in;
    int rc;

    *out = NULL;
    in = calloc(1, sizeof(*in));
    if (!in)
        return -ENOMEM;
    in->cfg = *cfg;
    in->st = st;
    if ((rc = store_maint_get(st, &in->maint)) < 0) {
        free(in);
        return rc;
    }
    atomic_init(&in->maint_seen, in->maint);
    if (!(in->group = calloc(1, sizeof(*in->group)))) {
        free(in);
        return -ENOMEM;
    }
    in->gap_grace_ms = icfg->gap_grace_ms;
    in->delay_s = DELAY_MIN_S;
    atomic_init(&in->stop, false);
    atomic_init(&in->connected, false);
    for (size_t i = 0; i < sizeof(in->sub) / sizeof(in->sub[0]); i++)
        snprintf(in->sub[i], sizeof(in->sub[i]), "%s/+/%s", cfg->prefix, kinds[i]);
    pthread_mutex_init(&in->mu, NULL);
    pthread_mutex_init(&in->maint_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&in->cond, &ca);
    pthread_cond_init(&in->cmd_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&in->cmd_mu, NULL);

    mosquitto_lib_init();
    in->mosq = mosquitto_new(cfg->client_id, true, in);
    if (!in->mosq) {
        rc = errno == EINVAL ? -EINVAL : -ENOMEM;
        goto fail;
    }
    /* callbacks run on our loop thread while others may call mosquitto_disconnect() */
    mosquitto_threaded_set(in->mosq, true);
    mosquitto_int_option(in->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    if (cfg->username[0] &&
        mosquitto_username_pw_set(in->mosq, cfg->username,
                                  cfg->password[0] ? cfg->password : NULL) != MOSQ_ERR_SUCCESS) {
        rc = -ENOMEM;
        goto fail;
    }
    mosquitto_connect_callback_set(in->mosq, on_connect);
    mosquitto_disconnect_callback_set(in->mosq, on_disconnect);
    mosquitto_subscribe_callback_set(in->mosq, on_subscribe);
    mosquitto_message_callback_set(in->mosq, on_message);
    mosquitto_log_callback_set(in->mosq, on_log);
    if ((rc = pthread_create(&in->thread, NULL, loop_main, in)) != 0) {
        rc = -rc;
        goto fail;
    }
    in->thread_started = true;
    *out = in;
    return 0;
fail:
    ingest_stop(in);
    return rc;
}

void ingest_stop(ingest_t *in)
{
    if (!in)
        return;
    ingest_commands_close(in);
    atomic_store(&in->stop, true);
    pthread_mutex_lock(&in->mu);
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->mu);
    if (in->mosq && atomic_load(&in->connected))
        mosquitto_disconnect(in->mosq); /* wakes mosquitto_loop() */
    if (in->thread_started)
        pthread_join(in->thread, NULL);
    if (in->mosq)
        mosquitto_destroy(in->mosq);
    mosquitto_lib_cleanup();
    pthread_cond_destroy(&in->cond);
    pthread_mutex_destroy(&in->mu);
    pthread_mutex_destroy(&in->maint_mu);
    for (int i = 0; i < INGEST_CMD_PENDING_MAX; i++)
        free(in->cmds[i].reply);
    free(in->group);
    pthread_cond_destroy(&in->cmd_cond);
    pthread_mutex_destroy(&in->cmd_mu);
    free(in);
}

bool ingest_connected(ingest_t *in)
{
    return atomic_load(&in->connected);
}

void ingest_get_stats(ingest_t *in, struct ingest_stats *s)
{
    s->messages = atomic_load(&in->messages);
    s->batches = atomic_load(&in->batches);
    s->stored = atomic_load(&in->stored);
    s->duplicates = atomic_load(&in->duplicates);
    s->statuses = atomic_load(&in->statuses);
    s->losses = atomic_load(&in->losses);
    s->healths = atomic_load(&in->healths);
    s->acks = atomic_load(&in->acks);
    s->data_gaps = atomic_load(&in->data_gaps);
    s->commands = atomic_load(&in->commands);
    s->replies = atomic_load(&in->replies);
    for (int i = 0; i < IC_COUNT; i++)
        s->rejects[i] = atomic_load(&in->rejects[i]);
}

static bool cmd_name_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n >= INGEST_CMD_NAME_MAX)
        return false;
    for (; *s; s++)
        if ((*s < 'a' || *s > 'z') && *s != '_')
            return false;
    return true;
}

/* A fresh random id in the form of a UUID v4. */
static int cmd_new_id(char id[INGEST_CMD_ID_LEN + 1])
{
    uint8_t b[16];
    size_t got = 0;
    int o = 0;

    while (got < sizeof(b)) {
        ssize_t r = getrandom(b + got, sizeof(b) - got, 0);
        if (r < 0 && errno != EINTR)
            return -EIO;
        if (r > 0)
            got += (size_t)r;
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            id[o++] = '-';
        snprintf(id + o, 3, "%02x", b[i]);
        o += 2;
    }
    return 0;
}

int ingest_command(ingest_t *in, const char *gw, const char *cmd, const char *args_json,
                   int timeout_ms, char id[INGEST_CMD_ID_LEN + 1], char **reply)
{
    char topic[TOPIC_MAX], *payload = NULL;
    struct pending_cmd *p = NULL;
    struct timespec deadline;
    size_t alen = strlen(args_json), plen;
    int rc;

    *reply = NULL;
    id[0] = '\0';
    if (!wire_id_valid(gw) || !cmd_name_valid(cmd) || alen == 0 || alen > INGEST_CMD_ARGS_MAX)
        return -EINVAL;
    if (!atomic_load(&in->connected))
        return -ENOTCONN;
    if ((rc = cmd_new_id(id)) < 0)
        return rc;
    plen = alen + INGEST_CMD_NAME_MAX + INGEST_CMD_ID_LEN + 32;
    if (!(payload = malloc(plen)))
        return -ENOMEM;
    plen = (size_t)snprintf(payload, plen, "{\"id\":\"%s\",\"cmd\":\"%s\",\"args\":%s}", id, cmd,
                            args_json);
    snprintf(topic, sizeof(topic), "%s/%s/cmd", in->cfg.prefix, gw);

    /* the slot is taken before the publish, so a reply can never arrive unexpected */
    pthread_mutex_lock(&in->cmd_mu);
    rc = in->cmd_closed ? -ESHUTDOWN : -EBUSY;
    for (int i = 0; !in->cmd_closed && i < INGEST_CMD_PENDING_MAX; i++)
        if (!in->cmds[i].used) {
            p = &in->cmds[i];
            memset(p, 0, sizeof(*p));
            p->used = true;
            memcpy(p->id, id, INGEST_CMD_ID_LEN + 1);
            snprintf(p->gw, sizeof(p->gw), "%s", gw);
            break;
        }
    pthread_mutex_unlock(&in->cmd_mu);
    if (!p) {
        free(payload);
        return rc;
    }

    rc = mosquitto_publish(in->mosq, NULL, topic, (int)plen, payload, 1, false);
    free(payload);
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&in->cmd_mu);
    if (rc != MOSQ_ERR_SUCCESS) {
        log_debug("ingest: %s: command %s not published: %s", gw, cmd, mqtt_strerror(rc));
        rc = -ENOTCONN;
        goto out;
    }
    atomic_fetch_add(&in->commands, 1);
    rc = 0;
    while (!p->done && !in->cmd_closed && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&in->cmd_cond, &in->cmd_mu, &deadline);
    if (p->done) {
        *reply = p->reply;
        p->reply = NULL;
        rc = 0;
    } else {
        rc = in->cmd_closed ? -ESHUTDOWN : -ETIMEDOUT;
    }
out:
    free(p->reply);
    p->reply = NULL;
    p->used = false;
    pthread_mutex_unlock(&in->cmd_mu);
    return rc;
}

void ingest_commands_close(ingest_t *in)
{
    pthread_mutex_lock(&in->cmd_mu);
    in->cmd_closed = true;
    pthread_cond_broadcast(&in->cmd_cond);
    pthread_mutex_unlock(&in->cmd_mu);
}

/* ---- Maintenance mode (ingest.h) ---- */

bool ingest_maintenance(ingest_t *in)
{
    bool on;

    pthread_mutex_lock(&in->maint_mu);
    on = in->maint;
    pthread_mutex_unlock(&in->maint_mu);
    return on;
}

int ingest_set_maintenance(ingest_t *in, bool on, int *applied)
{
    struct store_pending p;
    int rc = 0;

    *applied = 0;
    /* held throughout: a batch arriving now waits, then is stored after every pending one */
    pthread_mutex_lock(&in->maint_mu);
    if (on) {
        if ((rc = store_maint_set(in->st, true)) == 0) {
            in->maint = true;
            atomic_store(&in->maint_seen, true);
        }
        goto done;
    }
    /* bounded by the pending rows: none can be added while maint_mu is held */
    for (;;) {
        rc = store_pending_first(in->st, &p);
        if (rc == -ENOENT) {
            rc = 0;
            break;
        }
        if (rc < 0)
            break;
        rc = on_readings(in, p.gateway, p.payload, p.len, true);
        /* delete only after the batch is stored: a crash in between applies it again, which
         * stores nothing twice */
        if (rc == 0)
            rc = store_pending_delete(in->st, p.id);
        free(p.payload);
        if (rc < 0)
            break;
        (*applied)++;
    }
    if (rc == 0 && (rc = store_maint_set(in->st, false)) == 0) {
        in->maint = false;
        atomic_store(&in->maint_seen, false);
    }
done:
    pthread_mutex_unlock(&in->maint_mu);
    return rc;
}
