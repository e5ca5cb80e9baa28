/*
 * meter-agent: polls meters over Modbus, queues every reading in SQLite, publishes the
 * queue to MQTT. This file wires the modules together and owns the process: command line,
 * signals, start and stop. See docs/configuration.md.
 */
#include "board.h"
#include "config.h"
#include "log.h"
#include "poller.h"
#include "queue.h"
#include "timeutil.h"
#include "uplink.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t got_stop;

static void on_signal(int sig)
{
    (void)sig;
    got_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: meter-agent [-d] [-v] [-f FILE]\n"
               "       meter-agent --check-config FILE | -n [-f FILE]\n"
               "  -f FILE             configuration (default /etc/meterlink/agent.json)\n"
               "  -n, --check-config  check the configuration and exit\n"
               "  -d                  stay in the foreground, log to stderr\n"
               "  -v                  more verbose (repeat for more)\n"
               "  --version           print the version and exit\n");
}

static void report_stderr(void *arg, const char *msg)
{
    (void)arg;
    fprintf(stderr, "%s\n", msg);
}

static void notify_uplink(void *arg)
{
    uplink_notify(arg);
}

/* The uplink thread reads the pollers' counters (meters_health) while main starts and
 * stops them: pollers_mu keeps a poller from being freed while it is read. */
static pthread_mutex_t pollers_mu = PTHREAD_MUTEX_INITIALIZER;
static poller_t *pollers[CFG_MAX_BUSES];
static int npollers;

/* The health message's "meters" array: every bus's meters. */
static int meters_health(void *arg, char *buf, size_t len)
{
    size_t pos = 0;
    (void)arg;
    if (len < 3)
        return -1;
    pthread_mutex_lock(&pollers_mu);
    buf[pos++] = '[';
    for (int i = 0; i < npollers; i++) {
        poller_t *p = pollers[i];
        int n;
        if (!p)
            continue;
        if (pos > 1)
            buf[pos++] = ',';
        n = poller_health(p, buf + pos, len - pos - 1);
        if (n < 0) {
            pthread_mutex_unlock(&pollers_mu);
            return -1;
        }
        pos += (size_t)n;
        if (n == 0 && pos > 1 && buf[pos - 1] == ',')
            pos--;
    }
    pthread_mutex_unlock(&pollers_mu);
    if (pos + 1 >= len)
        return -1;
    buf[pos++] = ']';
    return (int)pos;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"check-config", no_argument, NULL, 'n'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *path = "/etc/meterlink/agent.json";
    int check = 0, fg = 0, verbose = 0, ch, nerr, rc = 1;
    static struct agent_cfg cfg;
    queue_t *q = NULL;
    uplink_t *up = NULL;
    board_t *board = NULL;
    int64_t last_kick = 0;
    struct sigaction sa;

    /* first of all: a stop signal during start-up must stop cleanly, too */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
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

    nerr = cfg_load(path, &cfg, report_stderr, NULL);
    if (check) {
        /* the board file is part of the configuration */
        if (nerr == 0) {
            char bpath[512], err[BOARD_ERR_MAX];
            if (board_file_for(cfg.board, bpath, sizeof(bpath)) < 0 ||
                board_load(bpath, &board, err, sizeof(err)) < 0) {
                fprintf(stderr, "%s: board \"%s\": %s\n", path, cfg.board, err);
                nerr++;
            }
            board_free(board);
            board = NULL;
        }
        if (nerr == 0)
            printf("configuration OK\n");
        else
            fprintf(stderr, "%s: %d error%s\n", path, nerr, nerr == 1 ? "" : "s");
        cfg_free(&cfg);
        return nerr ? 1 : 0;
    }
    if (nerr) {
        fprintf(stderr, "%s: %d error%s; not starting\n", path, nerr, nerr == 1 ? "" : "s");
        cfg_free(&cfg);
        return 1;
    }
    {
        char bpath[512], err[BOARD_ERR_MAX], id[BOARD_ID_MAX];
        int brc;
        if (board_file_for(cfg.board, bpath, sizeof(bpath)) < 0 ||
            board_load(bpath, &board, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s: board \"%s\": %s\n", path, cfg.board, err);
            cfg_free(&cfg);
            return 1;
        }
        brc = board_identity(board, id, sizeof(id));
        if (brc == 0 && !cfg.gateway_id[0]) {
            snprintf(cfg.gateway_id, sizeof(cfg.gateway_id), "%s", id);
        } else if (brc < 0 && brc != -ENODATA) {
            fprintf(stderr, "%s: board %s: gateway identity: %s\n", path, board_name(board),
                    strerror(-brc));
            goto early_out;
        }
        if (!cfg.gateway_id[0]) {
            fprintf(stderr, "%s: gateway.id: required (board %s gives no identity)\n", path,
                    board_name(board));
            goto early_out;
        }
    }
    log_init("meter-agent", verbose, fg);
    if (!fg)
        log_info("running in the background is not supported yet; logging to syslog");


    if (queue_open(cfg.queue_path, &cfg.queue, &q) < 0) {
        log_warnx("cannot open the queue %s", cfg.queue_path);
        goto out;
    }
    npollers = cfg.nbuses; /* before the uplink thread reads it */
    if (uplink_start(&cfg, q, meters_health, NULL, &up) < 0) {
        log_warnx("cannot start the uplink");
        goto out;
    }
    for (int i = 0; i < cfg.nbuses; i++) {
        poller_t *p = NULL;
        if (poller_start(&cfg, board, i, q, notify_uplink, up, &p) < 0) {
            log_warnx("bus %s: cannot start", cfg.buses[i].name);
            goto out;
        }
        pthread_mutex_lock(&pollers_mu);
        pollers[i] = p;
        pthread_mutex_unlock(&pollers_mu);
    }
    log_info("gateway %s: %d meters on %d buses, stream %s", cfg.gateway_id, cfg.nmeters,
             cfg.nbuses, queue_stream(q));
    if ((rc = board_watchdog_start(board)) < 0)
        log_warnx("watchdog: %s", strerror(-rc));
    board_led_set(board, BOARD_LED_RUN, BOARD_LED_HEARTBEAT);
    board_sd_notify("READY=1");
    while (!got_stop) {
        struct uplink_stats us;
        long iv = board_watchdog_interval_ms(board);

        sleep_ms(100);
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
        uplink_get_stats(up, &us);
        board_led_set(board, BOARD_LED_UPLINK, us.connected ? BOARD_LED_ON : BOARD_LED_OFF);
    }
    log_info("stopping");
    board_sd_notify("STOPPING=1");
    rc = 0;
out:
    /* pollers first (they wake the uplink), then the uplink */
    for (int i = 0; i < cfg.nbuses; i++) {
        poller_t *p;
        pthread_mutex_lock(&pollers_mu);
        p = pollers[i];
        pollers[i] = NULL;
        pthread_mutex_unlock(&pollers_mu);
        poller_stop(p);
    }
    if (up)
        uplink_stop(up);
    queue_close(q);
    if (board) {
        board_led_set(board, BOARD_LED_RUN, BOARD_LED_OFF);
        board_led_set(board, BOARD_LED_UPLINK, BOARD_LED_OFF);
        board_watchdog_stop(board); /* the magic close: only on a clean stop */
    }
early_out:
    board_free(board);
    cfg_free(&cfg);
    return rc;
}
