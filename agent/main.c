/*
 * meter-agent: polls meters over Modbus, queues every reading in SQLite, publishes the
 * queue to MQTT. This file wires the modules together and owns the process: command line,
 * signals, start and stop. See docs/configuration.md.
 */
#include "config.h"
#include "log.h"
#include "poller.h"
#include "queue.h"
#include "timeutil.h"
#include "uplink.h"

#include <getopt.h>
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
    poller_t *pollers[CFG_MAX_BUSES] = {0};
    struct sigaction sa;

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
    log_init("meter-agent", verbose, fg);
    if (!fg)
        log_info("running in the background is not supported yet; logging to syslog");

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    if (queue_open(cfg.queue_path, cfg.queue_max_rows, &q) < 0) {
        log_warnx("cannot open the queue %s", cfg.queue_path);
        goto out;
    }
    if (uplink_start(&cfg, q, &up) < 0) {
        log_warnx("cannot start the uplink");
        goto out;
    }
    for (int i = 0; i < cfg.nbuses; i++) {
        if (poller_start(&cfg, i, q, notify_uplink, up, &pollers[i]) < 0) {
            log_warnx("bus %s: cannot start", cfg.buses[i].name);
            goto out;
        }
    }
    log_info("gateway %s: %d meters on %d buses, stream %s", cfg.gateway_id, cfg.nmeters,
             cfg.nbuses, queue_stream(q));
    while (!got_stop)
        sleep_ms(100);
    log_info("stopping");
    rc = 0;
out:
    for (int i = 0; i < cfg.nbuses; i++)
        poller_stop(pollers[i]);
    if (up)
        uplink_stop(up);
    queue_close(q);
    cfg_free(&cfg);
    return rc;
}
