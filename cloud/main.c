/*
 * meter-cloud: receives readings from the gateways over MQTT, stores them and serves them
 * over a JSON HTTP API.
 *
 * main.c is the daemon's shape only: command line, configuration, signals, start and stop
 * order. The work is in ingest (MQTT), store (SQLite), api (HTTP), with the pure parts in
 * seqset (counted seqs) and msg (loss, health and ack payloads).
 *
 * Threads: ingest, alerts and libmicrohttpd run their own; the main thread only waits for signals.
 * The signals we act on are blocked in every thread and only unblocked inside
 * sigsuspend() here, so the handlers (which only set flags) always run on this thread and
 * can never be missed between a check and the wait.
 */
#include "alerts.h"
#include "api.h"
#include "api_alerts.h"
#include "auth.h"
#include "backup.h"
#include "config.h"
#include "ingest.h"
#include "log.h"
#include "rollup.h"
#include "store.h"
#include "tz.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
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
            "       %s -f CONFIG.json --create-admin NAME\n"
            "  -f FILE             configuration file (JSON)\n"
            "  --create-admin NAME add an admin user and exit; the password is read from\n"
            "                      MLK_ADMIN_PASSWORD or, when that is not set, stdin\n"
            "  -d                  stay in the foreground and log to stderr\n"
            "  -v                  log more (debug); repeat for more\n"
            "  -n, --check-config  check the configuration, print every error, exit\n"
            "  --version           print the version and exit\n"
            "  --help              print this help and exit\n"
            "On start, when the store has no user yet and MLK_ADMIN_USER and\n"
            "MLK_ADMIN_PASSWORD are set, that admin is created.\n",
            PROG, PROG);
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

/* Reads a password for --create-admin: MLK_ADMIN_PASSWORD, else one line of stdin (without
 * echo on a terminal). The line end is not part of it. Returns 0 or -EINVAL. */
static int read_password(char *pw, size_t len)
{
    const char *env = getenv("MLK_ADMIN_PASSWORD");
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) == 1;
    size_t n;

    if (env) {
        if (strlen(env) >= len)
            return -EINVAL;
        memcpy(pw, env, strlen(env) + 1);
        return 0;
    }
    if (tty && tcgetattr(STDIN_FILENO, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        fprintf(stderr, "password: ");
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    } else {
        tty = false;
    }
    if (!fgets(pw, (int)len, stdin))
        pw[0] = '\0';
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    n = strlen(pw);
    if (n == len - 1 && pw[n - 1] != '\n')
        return -EINVAL; /* longer than any acceptable password */
    while (n && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
        pw[--n] = '\0';
    return 0;
}

/* --create-admin NAME: adds the user and exits. Never prints the password. */
static int create_admin(const struct cfg *cfg, const char *name)
{
    char pw[AUTH_PASSWORD_MAX + 2], why[160], err[512];
    store_t *st = NULL;
    auth_t *auth = NULL;
    int rc, status = 1;

    if (read_password(pw, sizeof(pw)) < 0) {
        fprintf(stderr, "%s: password: longer than %d bytes\n", PROG, AUTH_PASSWORD_MAX);
        goto done;
    }
    if (!auth_user_name_valid(name)) {
        fprintf(stderr, "%s: %s: not a user name (1..64 of [A-Za-z0-9_.@-])\n", PROG, name);
        goto done;
    }
    if (!auth_password_acceptable(pw, why, sizeof(why))) {
        fprintf(stderr, "%s: password: %s\n", PROG, why);
        goto done;
    }
    if ((rc = store_open(cfg->store.path, &st, err, sizeof(err))) < 0) {
        fprintf(stderr, "%s: store: %s: %s\n", PROG, cfg->store.path, err);
        goto done;
    }
    if ((rc = auth_open(&cfg->auth, st, &auth)) < 0) {
        fprintf(stderr, "%s: auth: %s\n", PROG, strerror(-rc));
        goto done;
    }
    why[0] = '\0';
    rc = auth_add_user(auth, name, AUTH_ROLE_ADMIN, pw, false, why, sizeof(why));
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", PROG, why[0] ? why : strerror(-rc));
        goto done;
    }
    printf("admin %s created\n", name);
    status = 0;
done:
    explicit_bzero(pw, sizeof(pw));
    auth_close(auth);
    store_close(st);
    return status;
}

/* On start: the first admin from MLK_ADMIN_USER and MLK_ADMIN_PASSWORD, when the store has
 * no user. The password is removed from the environment either way. Returns 0, or -1 when
 * the variables are set, there is no user, and they cannot make one. */
static int admin_from_env(auth_t *auth)
{
    const char *user = getenv("MLK_ADMIN_USER"), *pw = getenv("MLK_ADMIN_PASSWORD");
    char why[160];
    int rc;

    if (!user || !pw) {
        unsetenv("MLK_ADMIN_PASSWORD");
        return 0;
    }
    why[0] = '\0';
    rc = auth_add_user(auth, user, AUTH_ROLE_ADMIN, pw, true, why, sizeof(why));
    explicit_bzero((char *)pw, strlen(pw));
    unsetenv("MLK_ADMIN_PASSWORD");
    if (rc == 0)
        log_info("auth: created admin %s (MLK_ADMIN_USER)", user);
    else if (rc == -EEXIST)
        log_debug("auth: MLK_ADMIN_USER ignored: there are users already");
    else {
        log_warnx("auth: MLK_ADMIN_USER %s: %s", auth_user_name_valid(user) ? user : "(invalid)",
                  why[0] ? why : strerror(-rc));
        return -1;
    }
    return 0;
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
        {"create-admin", required_argument, NULL, 'A'},
        {NULL, 0, NULL, 0},
    };
    const char *cfg_path = NULL, *new_admin = NULL;
    bool foreground = false, check_only = false, port_file_written = false;
    int verbose = 0, ch, rc, status = 1;
    struct cfg *cfg = NULL;
    store_t *st = NULL;
    ingest_t *in = NULL;
    auth_t *auth = NULL;
    api_t *api = NULL;
    rollup_job_t *job = NULL;
    backup_t *bk = NULL;
    alerts_t *alerts = NULL;
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
        case 'A':
            new_admin = optarg;
            break;
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
    if (new_admin) {
        if (cfg_load(cfg_path, cfg, report_plain, NULL) < 0)
            status = 1;
        else
            status = create_admin(cfg, new_admin);
        free(cfg);
        return status;
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
    store_usage_config(st, (int64_t)cfg->rollup.gap_s * 1000, cfg->rollup.max_power_kw,
                       cfg->rollup.m5_days);
    if ((rc = auth_open(&cfg->auth, st, &auth)) < 0) {
        log_warnx("auth: cannot start: %s", strerror(-rc));
        goto done;
    }
    if (admin_from_env(auth) < 0)
        goto done;
    /* before ingest and the HTTP server: libcurl is set up before their threads run */
    if ((rc = alerts_start(&cfg->alerts, cfg->store.path, st, true, &alerts, err, sizeof(err))) <
        0) {
        log_warnx("alerts: cannot start: %s", err);
        goto done;
    }
    log_info("alerts: %d rule%s, %d channel%s, every %d s", cfg->alerts.nrules,
             cfg->alerts.nrules == 1 ? "" : "s", cfg->alerts.nchannels,
             cfg->alerts.nchannels == 1 ? "" : "s", cfg->alerts.interval_s);
    api_alerts_setup(alerts);
    if ((rc = ingest_start(&cfg->mqtt, &cfg->ingest, st, &in)) < 0) {
        log_warnx("mqtt: cannot start: %s", strerror(-rc));
        goto done;
    }
    {
        struct rollup_retention ret = {cfg->rollup.raw_days, cfg->rollup.m5_days,
                                       cfg->rollup.hour_days, cfg->rollup.day_days,
                                       cfg->rollup.interval_s};
        if ((rc = rollup_job_start(st, &ret, &job)) < 0) {
            log_warnx("retention: cannot start: %s", strerror(-rc));
            goto done;
        }
    }
    if ((rc = backup_start(&cfg->backup, cfg->store.path, st, &bk)) < 0) {
        log_warnx("backup: cannot start: %s", strerror(-rc));
        goto done;
    }
    api_admin_setup(bk);
    api_usage_setup(&cfg->rollup, &cfg->registry);
    if ((rc = api_start(&cfg->http, st, in, auth, &api, err, sizeof(err))) < 0) {
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
    alerts_stop(alerts);
    backup_stop(bk);
    rollup_job_stop(job);
    auth_close(auth);
    store_close(st);
    tz_cache_clear();
    if (port_file_written)
        unlink(cfg->http.port_file);
    if (status == 0)
        log_info("stopped");
    free(cfg);
    return status;
}
