/*
 * meter-cloud: receives readings from the gateways over MQTT, stores them and serves them
 * over a JSON HTTP API.
 *
 * main.c is the daemon's shape only: command line, configuration, signals, start and stop
 * order. The work is in ingest (MQTT), store (SQLite), api (HTTP), with the pure parts in
 * seqset (counted seqs) and msg (loss, health and ack payloads).
 *
 * Threads: ingest and libmicrohttpd run their own; the main thread only waits for signals.
 * The signals we act on are blocked in every thread and only unblocked inside
 * sigsuspend() here, so the handlers (which only set flags) always run on this thread and
 * can never be missed between a check and the wait.
 */
#include "api.h"
#include "config.h"
#include "ingest.h"
#include "log.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef MLK_VERSION
#define MLK_VERSION "unknown"
#endif

#define PROG "meter-cloud"

static volatile sig_atomic_t quit_signal;
static volatile sig_atomic_t hup_seen;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        hup_seen = 1;
    else
        quit_signal = sig;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s -f CONFIG.json [-d] [-v] [--check-config] [--version] [--help]\n"
            "  -f FILE             configuration file (JSON)\n"
            "  -d                  stay in the foreground and log to stderr\n"
            "  -v                  log more (debug); repeat for more\n"
            "  -n, --check-config  check the configuration, print every error, exit\n"
            "  --version           print the version and exit\n"
            "  --help              print this help and exit\n",
            PROG);
}

static void report_plain(void *arg, const char *msg)
{
    fprintf(stderr, "%s\n", msg);
}

static void report_log(void *arg, const char *msg)
{
    log_warnx("%s", msg);
}

/* Writes the port number to path atomically (temporary file, then rename), so a reader
 * sees either no file or the whole number. Returns 0 or a negative errno. */
static int write_port_file(const char *path, int port)
{
    char tmp[CFG_PATH_MAX + 16], buf[16];
    int fd, n, rc = 0;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    n = snprintf(buf, sizeof(buf), "%d\n", port);
    if (write(fd, buf, (size_t)n) != n)
        rc = errno ? -errno : -EIO;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    return rc;
}

static void log_stats(ingest_t *in)
{
    struct ingest_stats s;
    char rej[512];
    size_t len = 0;

    ingest_get_stats(in, &s);
    rej[0] = '\0';
    for (int c = 0; c < IC_COUNT; c++)
        if (s.rejects[c] && len < sizeof(rej))
            len += (size_t)snprintf(rej + len, sizeof(rej) - len, " %s=%llu",
                                    ingest_cause_name((enum ingest_cause)c),
                                    (unsigned long long)s.rejects[c]);
    log_info("ingest: %llu messages, %llu batches, %llu readings stored, %llu duplicates, "
             "%llu statuses, %llu loss reports, %llu health, %llu acks, %llu data gaps; "
             "dropped:%s",
             (unsigned long long)s.messages, (unsigned long long)s.batches,
             (unsigned long long)s.stored, (unsigned long long)s.duplicates,
             (unsigned long long)s.statuses, (unsigned long long)s.losses,
             (unsigned long long)s.healths, (unsigned long long)s.acks,
             (unsigned long long)s.data_gaps, rej[0] ? rej : " none");
}

static void setup_signals(sigset_t *waitmask)
{
    struct sigaction sa;
    sigset_t block;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    /* blocked before any thread starts, so every thread inherits the mask */
    pthread_sigmask(SIG_BLOCK, &block, waitmask);
    sigdelset(waitmask, SIGINT);
    sigdelset(waitmask, SIGTERM);
    sigdelset(waitmask, SIGHUP);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"check-config", no_argument, NULL, 'n'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cfg_path = NULL;
    bool foreground = false, check_only = false, port_file_written = false;
    int verbose = 0, ch, rc, status = 1;
    struct cfg *cfg = NULL;
    store_t *st = NULL;
    ingest_t *in = NULL;
    api_t *api = NULL;
    sigset_t waitmask;
    char err[512];

    while ((ch = getopt_long(argc, argv, "f:dvnh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            cfg_path = optarg;
            break;
        case 'd':
            foreground = true;
            break;
        case 'v':
            verbose++;
            break;
        case 'n':
            check_only = true;
            break;
        case 'V':
            printf("%s %s\n", PROG, MLK_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !cfg_path) {
        if (optind < argc)
            fprintf(stderr, "%s: unexpected argument: %s\n", PROG, argv[optind]);
        else
            fprintf(stderr, "%s: -f CONFIG.json is required\n", PROG);
        usage(stderr);
        return 2;
    }

    log_init(PROG, verbose, 1);
    cfg = malloc(sizeof(*cfg));
    if (!cfg)
        fatalx("out of memory");
    if (check_only) {
        rc = cfg_load(cfg_path, cfg, report_plain, NULL);
        if (rc == 0)
            fprintf(stderr, "configuration OK\n");
        free(cfg);
        return rc == 0 ? 0 : 1;
    }
    if (cfg_load(cfg_path, cfg, report_log, NULL) < 0) {
        log_warnx("%s: configuration has errors; not starting", cfg_path);
        goto done;
    }
    if (!foreground) {
        /* keep the working directory: relative paths in the config stay valid */
        if (daemon(1, 0) < 0)
            fatal("daemon");
        log_init(PROG, verbose, 0);
    }
    setup_signals(&waitmask);
    log_info("starting %s %s", PROG, MLK_VERSION);
    log_info("mqtt %s:%d prefix %s client_id %s%s%s", cfg->mqtt.host, cfg->mqtt.port,
             cfg->mqtt.prefix, cfg->mqtt.client_id, cfg->mqtt.username[0] ? " user " : "",
             cfg->mqtt.username); /* never the password */

    if ((rc = store_open(cfg->store.path, &st, err, sizeof(err))) < 0) {
        log_warnx("store: %s: %s", cfg->store.path, err);
        goto done;
    }
    log_info("store %s", cfg->store.path);
    if ((rc = ingest_start(&cfg->mqtt, &cfg->ingest, st, &in)) < 0) {
        log_warnx("mqtt: cannot start: %s", strerror(-rc));
        goto done;
    }
    if ((rc = api_start(&cfg->http, st, in, &api, err, sizeof(err))) < 0) {
        log_warnx("http: %s", err);
        goto done;
    }
    log_info("listening on http://%s:%d", cfg->http.bind, api_port(api));
    if (cfg->http.port_file[0]) {
        if ((rc = write_port_file(cfg->http.port_file, api_port(api))) < 0) {
            log_warnx("http.port_file: %s: %s", cfg->http.port_file, strerror(-rc));
            goto done;
        }
        port_file_written = true;
    }

    while (!quit_signal) {
        sigsuspend(&waitmask);
        if (hup_seen) {
            hup_seen = 0;
            log_info("SIGHUP: reloading the configuration is not supported yet; ignored");
        }
    }
    log_info("stopping on signal %d", (int)quit_signal);
    status = 0;
done:
    /* reverse order of start: no request and no message may reach a closed store */
    api_stop(api);
    if (in)
        log_stats(in);
    ingest_stop(in);
    store_close(st);
    if (port_file_written)
        unlink(cfg->http.port_file);
    if (status == 0)
        log_info("stopped");
    free(cfg);
    return status;
}
