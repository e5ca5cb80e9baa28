/*
 * meter-sim: a Modbus slave that plays electricity meters, for tests, demos and benchmarks.
 *
 * It serves any number of simulated meters (each a unit id with a profile from
 * agent/profiles and a value model, model.h) over Modbus TCP on one listening socket and
 * over Modbus RTU on a pseudo-terminal, from one single-threaded poll loop. libmodbus builds
 * every reply from the meter's register mapping; meter-sim frames the requests itself
 * (TCP: MBAP header; RTU: rtu_frame.h) so that one line can carry many unit ids and a slow
 * or broken client never blocks the loop. With --served-log it writes every value it served,
 * decoded as a master decodes it, so tests can compare what a consumer stored with it.
 *
 * Every reply is built first (libmodbus writes it into a socket pair, the capture, from
 * which it is read back), then changed as the meter's fault says (fault.h), then sent at
 * once or queued until it is due: a slow meter, or the time its bytes take on the RTU line
 * with --line-speed. The queue is a timer list that the poll loop's timeout includes, so the
 * loop stays single-threaded and never sleeps. The RTU line is one resource: a reply due
 * later holds back every reply after it on that line, as on a real bus; TCP replies are
 * independent of each other. Faults are set per meter with --fault and at run time over the
 * control socket (--control, control.h).
 *
 * It is not a conformance test of Modbus and does not emulate a meter's configuration
 * registers.
 */
#define _GNU_SOURCE /* ppoll, accept4 */

#include "control.h"
#include "fault.h"
#include "log.h"
#include "model.h"
#include "profile.h"
#include "quantities.h"
#include "rtu_frame.h"
#include "timeutil.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <modbus/modbus.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_METERS 256
#define MAX_CLIENTS 32
#define TCP_ADU_MAX 260 /* MBAP header (7) + PDU (253) */
#define REQ_BUF (TCP_ADU_MAX + 16)
#define HOST_MAX 256
#define MAX_PENDING 256 /* replies waiting for their time */
#define GARBAGE_MIN 8
#define GARBAGE_MAX 64

enum bus { BUS_TCP, BUS_RTU };
static const char *const bus_names[] = {"tcp", "rtu"};

struct meter_spec {
    const char *arg; /* as given, for messages */
    enum bus bus;
    int unit;
    char model[PROFILE_NAME_MAX];
};

struct fault_spec {
    const char *arg; /* as given, for messages */
    enum bus bus;
    int unit;
    struct fault fault;
};

struct options {
    const char *profiles;
    int tcp;
    char tcp_host[HOST_MAX];
    int tcp_port;
    int rtu;
    const char *pty_link;
    int baud;
    char parity;    /* 'N', 'E' or 'O' */
    int stop_bits;  /* 1 or 2 */
    int line_speed; /* RTU replies take the time their bytes need at baud */
    int turnaround; /* ms an RTU meter waits before it answers */
    const char *control;
    struct meter_spec specs[MAX_METERS];
    int nspecs;
    struct fault_spec faults[MAX_METERS];
    int nfaults;
    const char *served_log;
    uint64_t seed;
    int verbose;
};

struct meter {
    enum bus bus;
    int unit;
    int index; /* position on the command line: with the seed, picks the model's values */
    const struct profile *prof;
    struct model *model;
    modbus_mapping_t *map;
    struct fault fault;
    unsigned long requests; /* requests for this meter that arrived */
    unsigned long replies;  /* replies (or garbage) sent */
    unsigned long faulted;  /* requests a fault changed the answer of */
};

struct client {
    uint64_t id; /* unique for the run: queued replies find their client by it */
    int fd;
    size_t len;
    uint8_t buf[TCP_ADU_MAX];
};

struct sim {
    struct options opt;
    struct profile_set profiles;
    struct meter meters[MAX_METERS];
    int nmeters;

    int listen_fd;
    int tcp_port; /* the port really bound */
    modbus_t *tcp_ctx;
    struct client clients[MAX_CLIENTS];
    int nclients;

    int pty_master;
    int pty_slave; /* kept open so the master never sees a hangup between clients */
    char pty_name[128];
    int pty_linked;
    modbus_t *rtu_ctx;
    struct rtu_framer framer;

    int bits_per_char;
    int64_t rtu_busy_us; /* the RTU line carries a reply until then (mono_us clock) */
    int64_t rtu_sent_us; /* when the last RTU reply was written; 0: none yet */

    /* Replies waiting for their time, in no order; (due_us, seq) orders them. */
    struct pending {
        int64_t due_us;
        uint64_t seq;
        enum bus bus;
        uint64_t client; /* TCP: the client's id */
        int meter;       /* index into meters; -1: a reply for no meter */
        struct fault fault;
        int fc, addr, count;
        int64_t after_reply_us; /* RTU: the previous reply's write to this request; -1 */
        size_t len;
        uint8_t buf[TCP_ADU_MAX];
    } pending[MAX_PENDING];
    int npending;
    uint64_t next_seq;
    uint64_t next_client_id;

    int capture[2]; /* libmodbus writes a reply into [0]; it is read back from [1] */
    uint64_t rng;   /* garbage bytes */
    struct control *ctl;

    FILE *served;
    int served_failed;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: meter-sim [--profiles DIR] [--tcp HOST:PORT] [--rtu] [--pty-link PATH]\n"
            "                 [--baud N] [--parity N|E|O] [--stop-bits 1|2] [--line-speed]\n"
            "                 [--turnaround MS] [--meter BUS:UNIT:MODEL]...\n"
            "                 [--fault BUS:UNIT:KIND[:ARG]]... [--control PATH]\n"
            "                 [--served-log FILE] [--seed N] [-v]\n"
            "\n"
            "Simulates Modbus electricity meters over TCP and over RTU on a pseudo-terminal.\n"
            "\n"
            "  --profiles DIR        meter profiles (*.json); default %s\n"
            "  --tcp HOST:PORT       serve Modbus TCP on HOST:PORT (port 0: any free port)\n"
            "  --rtu                 serve Modbus RTU on a new pseudo-terminal\n"
            "  --pty-link PATH       also make PATH a symlink to the pseudo-terminal\n"
            "  --baud N              line speed for RTU frame timing (default 9600)\n"
            "  --parity N|E|O        RTU parity, for --line-speed (default N)\n"
            "  --stop-bits 1|2       RTU stop bits, for --line-speed (default 1)\n"
            "  --line-speed          RTU replies take as long as their bytes need at --baud\n"
            "  --turnaround MS       an RTU meter waits MS ms before it answers (default 0)\n"
            "  --meter BUS:UNIT:MODEL  a meter: BUS tcp or rtu, UNIT 1..247, MODEL a profile\n"
            "                        (repeat for more meters; unit ids unique per bus)\n"
            "  --fault BUS:UNIT:KIND[:ARG]  a fault of that meter from the start: noreply,\n"
            "                        crc, exception:CODE, slow:MS, garbage or none\n"
            "  --control PATH        UNIX socket taking commands, one a line:\n"
            "                        \"fault BUS:UNIT KIND [ARG]\", \"stats\", \"help\"\n"
            "  --served-log FILE     append one JSON line per read served\n"
            "  --seed N              seed of the value model (default 1)\n"
            "  -v, --verbose         more log output (repeat for more)\n"
            "  -h, --help            this help\n"
            "\n"
            "When ready it prints \"tcp HOST:PORT\", \"rtu DEVICE\", \"control PATH\" and\n"
            "\"ready\" on stdout.\n"
            "SIGINT or SIGTERM stops it.\n",
            profile_default_dir());
}

/* Strict decimal integer in [lo, hi]: digits only (an optional leading '-'), no spaces,
 * nothing after. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    if (s == NULL ||
        !(isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]))))
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -ERANGE;
    *out = v;
    return 0;
}

static int parse_tcp(const char *arg, struct options *o)
{
    const char *colon = strrchr(arg, ':');
    size_t hlen;
    long port;

    if (colon == NULL || colon == arg) {
        fprintf(stderr, "meter-sim: --tcp \"%s\": expected HOST:PORT\n", arg);
        return -EINVAL;
    }
    hlen = (size_t)(colon - arg);
    if (arg[0] == '[' && hlen >= 2 && arg[hlen - 1] == ']') {
        arg++; /* [::1]:502 */
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(o->tcp_host)) {
        fprintf(stderr, "meter-sim: --tcp \"%s\": bad host\n", arg);
        return -EINVAL;
    }
    if (parse_long(colon + 1, 0, 65535, &port) < 0) {
        fprintf(stderr, "meter-sim: --tcp \"%s\": port \"%s\" is not a number in 0..65535\n", arg,
                colon + 1);
        return -EINVAL;
    }
    memcpy(o->tcp_host, arg, hlen);
    o->tcp_host[hlen] = '\0';
    o->tcp_port = (int)port;
    o->tcp = 1;
    return 0;
}

/* "tcp:3" or "rtu:17" (n bytes of s) into *bus and *unit; -EINVAL with the reason in err. */
static int parse_target(const char *s, size_t n, enum bus *bus, int *unit, char *err, size_t errlen)
{
    char u[16];
    long v;

    if (n > 4 && strncmp(s, "tcp:", 4) == 0) {
        *bus = BUS_TCP;
    } else if (n > 4 && strncmp(s, "rtu:", 4) == 0) {
        *bus = BUS_RTU;
    } else {
        snprintf(err, errlen, "\"%.*s\" is not tcp:UNIT or rtu:UNIT", (int)n, s);
        return -EINVAL;
    }
    if (n - 4 >= sizeof(u)) {
        snprintf(err, errlen, "unit id \"%.*s\" is not a number in 1..247", (int)(n - 4), s + 4);
        return -EINVAL;
    }
    memcpy(u, s + 4, n - 4);
    u[n - 4] = '\0';
    if (parse_long(u, 1, 247, &v) < 0) {
        snprintf(err, errlen, "unit id \"%s\" is not a number in 1..247", u);
        return -EINVAL;
    }
    *unit = (int)v;
    return 0;
}

/* --fault BUS:UNIT:KIND[:ARG]; whether the meter exists is checked once all are parsed. */
static int parse_fault(const char *arg, struct options *o)
{
    struct fault_spec *fs;
    const char *c1 = strchr(arg, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    const char *c3 = c2 ? strchr(c2 + 1, ':') : NULL;
    char kind[32], err[160];

    if (o->nfaults >= MAX_METERS) {
        fprintf(stderr, "meter-sim: --fault \"%s\": more than %d faults\n", arg, MAX_METERS);
        return -E2BIG;
    }
    fs = &o->faults[o->nfaults];
    if (c2 == NULL) {
        fprintf(stderr, "meter-sim: --fault \"%s\": expected BUS:UNIT:KIND[:ARG]\n", arg);
        return -EINVAL;
    }
    if (parse_target(arg, (size_t)(c2 - arg), &fs->bus, &fs->unit, err, sizeof(err)) < 0) {
        fprintf(stderr, "meter-sim: --fault \"%s\": %s\n", arg, err);
        return -EINVAL;
    }
    snprintf(kind, sizeof(kind), "%.*s", c3 ? (int)(c3 - c2 - 1) : (int)strlen(c2 + 1), c2 + 1);
    if (fault_parse(kind, c3 ? c3 + 1 : NULL, &fs->fault, err, sizeof(err)) < 0) {
        fprintf(stderr, "meter-sim: --fault \"%s\": %s\n", arg, err);
        return -EINVAL;
    }
    fs->arg = arg;
    o->nfaults++;
    return 0;
}

static int parse_meter(const char *arg, struct options *o)
{
    struct meter_spec *sp;
    const char *c1 = strchr(arg, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    char unit[16];
    long u;
    size_t n, mlen;

    if (o->nspecs >= MAX_METERS) {
        fprintf(stderr, "meter-sim: --meter \"%s\": more than %d meters\n", arg, MAX_METERS);
        return -E2BIG;
    }
    sp = &o->specs[o->nspecs];
    if (c1 == NULL || c2 == NULL) {
        fprintf(stderr, "meter-sim: --meter \"%s\": expected BUS:UNIT:MODEL\n", arg);
        return -EINVAL;
    }
    if ((size_t)(c1 - arg) == 3 && strncmp(arg, "tcp", 3) == 0) {
        sp->bus = BUS_TCP;
    } else if ((size_t)(c1 - arg) == 3 && strncmp(arg, "rtu", 3) == 0) {
        sp->bus = BUS_RTU;
    } else {
        fprintf(stderr, "meter-sim: --meter \"%s\": bus \"%.*s\" is not tcp or rtu\n", arg,
                (int)(c1 - arg), arg);
        return -EINVAL;
    }
    n = (size_t)(c2 - c1 - 1);
    if (n >= sizeof(unit)) {
        fprintf(stderr, "meter-sim: --meter \"%s\": unit id is not a number in 1..247\n", arg);
        return -EINVAL;
    }
    memcpy(unit, c1 + 1, n);
    unit[n] = '\0';
    if (parse_long(unit, 1, 247, &u) < 0) {
        fprintf(stderr, "meter-sim: --meter \"%s\": unit id \"%s\" is not a number in 1..247\n",
                arg, unit);
        return -EINVAL;
    }
    mlen = strlen(c2 + 1);
    if (mlen == 0 || mlen >= sizeof(sp->model)) {
        fprintf(stderr, "meter-sim: --meter \"%s\": bad model name\n", arg);
        return -EINVAL;
    }
    for (int i = 0; i < o->nspecs; i++) {
        if (o->specs[i].bus == sp->bus && o->specs[i].unit == (int)u) {
            fprintf(stderr, "meter-sim: --meter \"%s\": unit %ld is already used on %s by \"%s\"\n",
                    arg, u, bus_names[sp->bus], o->specs[i].arg);
            return -EEXIST;
        }
    }
    sp->arg = arg;
    sp->unit = (int)u;
    memcpy(sp->model, c2 + 1, mlen + 1); /* the terminator included: fits, checked above */
    o->nspecs++;
    return 0;
}

/* Parses the command line into *o. Returns 0, 1 when --help was given, or -EINVAL after
 * printing why to stderr. */
static int parse_args(int argc, char **argv, struct options *o)
{
    enum {
        OPT_PROFILES = 256,
        OPT_TCP,
        OPT_RTU,
        OPT_PTY_LINK,
        OPT_BAUD,
        OPT_METER,
        OPT_SERVED_LOG,
        OPT_SEED,
        OPT_PARITY,
        OPT_STOP_BITS,
        OPT_LINE_SPEED,
        OPT_TURNAROUND,
        OPT_FAULT,
        OPT_CONTROL
    };
    static const struct option longopts[] = {
        {"profiles", required_argument, NULL, OPT_PROFILES},
        {"tcp", required_argument, NULL, OPT_TCP},
        {"rtu", no_argument, NULL, OPT_RTU},
        {"pty-link", required_argument, NULL, OPT_PTY_LINK},
        {"baud", required_argument, NULL, OPT_BAUD},
        {"meter", required_argument, NULL, OPT_METER},
        {"served-log", required_argument, NULL, OPT_SERVED_LOG},
        {"seed", required_argument, NULL, OPT_SEED},
        {"parity", required_argument, NULL, OPT_PARITY},
        {"stop-bits", required_argument, NULL, OPT_STOP_BITS},
        {"line-speed", no_argument, NULL, OPT_LINE_SPEED},
        {"turnaround", required_argument, NULL, OPT_TURNAROUND},
        {"fault", required_argument, NULL, OPT_FAULT},
        {"control", required_argument, NULL, OPT_CONTROL},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, bad = 0, meter_args = 0, tcp_meters = 0, rtu_meters = 0;
    long l;

    memset(o, 0, sizeof(*o));
    o->profiles = profile_default_dir();
    o->baud = 9600;
    o->parity = 'N';
    o->stop_bits = 1;
    o->seed = 1;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":vh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_PROFILES:
            o->profiles = optarg;
            break;
        case OPT_TCP:
            if (o->tcp) {
                fprintf(stderr, "meter-sim: --tcp given twice\n");
                bad = 1;
            } else if (parse_tcp(optarg, o) < 0) {
                bad = 1;
            }
            break;
        case OPT_RTU:
            o->rtu = 1;
            break;
        case OPT_PTY_LINK:
            if (optarg[0] == '\0') {
                fprintf(stderr, "meter-sim: --pty-link: empty path\n");
                bad = 1;
            }
            o->pty_link = optarg;
            break;
        case OPT_BAUD:
            if (parse_long(optarg, 50, 4000000, &l) < 0) {
                fprintf(stderr, "meter-sim: --baud \"%s\": not a number in 50..4000000\n", optarg);
                bad = 1;
            } else {
                o->baud = (int)l;
            }
            break;
        case OPT_METER:
            meter_args++;
            if (parse_meter(optarg, o) < 0)
                bad = 1;
            break;
        case OPT_SERVED_LOG:
            o->served_log = optarg;
            break;
        case OPT_SEED: {
            char *end;
            unsigned long long v;

            errno = 0;
            v = strtoull(optarg, &end, 10);
            if (!isdigit((unsigned char)optarg[0]) || errno != 0 || *end != '\0') {
                fprintf(stderr, "meter-sim: --seed \"%s\": not a number in 0..%llu\n", optarg,
                        (unsigned long long)UINT64_MAX);
                bad = 1;
            } else {
                o->seed = (uint64_t)v;
            }
            break;
        }
        case OPT_PARITY:
            if (strlen(optarg) != 1 || strchr("NEO", optarg[0]) == NULL) {
                fprintf(stderr, "meter-sim: --parity \"%s\": not N, E or O\n", optarg);
                bad = 1;
            } else {
                o->parity = optarg[0];
            }
            break;
        case OPT_STOP_BITS:
            if (parse_long(optarg, 1, 2, &l) < 0) {
                fprintf(stderr, "meter-sim: --stop-bits \"%s\": not 1 or 2\n", optarg);
                bad = 1;
            } else {
                o->stop_bits = (int)l;
            }
            break;
        case OPT_LINE_SPEED:
            o->line_speed = 1;
            break;
        case OPT_TURNAROUND:
            if (parse_long(optarg, 0, 60000, &l) < 0) {
                fprintf(stderr, "meter-sim: --turnaround \"%s\": not a number in 0..60000\n",
                        optarg);
                bad = 1;
            } else {
                o->turnaround = (int)l;
            }
            break;
        case OPT_FAULT:
            if (parse_fault(optarg, o) < 0)
                bad = 1;
            break;
        case OPT_CONTROL:
            if (optarg[0] == '\0') {
                fprintf(stderr, "meter-sim: --control: empty path\n");
                bad = 1;
            }
            o->control = optarg;
            break;
        case 'v':
            o->verbose++;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            fprintf(stderr, "meter-sim: %s needs an argument\n", argv[optind - 1]);
            bad = 1;
            break;
        default:
            fprintf(stderr, "meter-sim: unknown option \"%s\"\n", argv[optind - 1]);
            bad = 1;
            break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "meter-sim: unexpected argument \"%s\"\n", argv[optind]);
        bad = 1;
    }

    for (int i = 0; i < o->nspecs; i++) {
        if (o->specs[i].bus == BUS_TCP)
            tcp_meters++;
        else
            rtu_meters++;
    }
    if (meter_args == 0) {
        fprintf(stderr, "meter-sim: no meter: give at least one --meter BUS:UNIT:MODEL\n");
        bad = 1;
    }
    if (tcp_meters > 0 && !o->tcp) {
        fprintf(stderr, "meter-sim: tcp meters need --tcp HOST:PORT\n");
        bad = 1;
    }
    if (rtu_meters > 0 && !o->rtu) {
        fprintf(stderr, "meter-sim: rtu meters need --rtu\n");
        bad = 1;
    }
    if (o->pty_link != NULL && !o->rtu) {
        fprintf(stderr, "meter-sim: --pty-link needs --rtu\n");
        bad = 1;
    }
    if ((o->line_speed || o->turnaround > 0) && !o->rtu) {
        fprintf(stderr, "meter-sim: --line-speed and --turnaround need --rtu\n");
        bad = 1;
    }
    for (int i = 0; i < o->nfaults; i++) {
        int found = 0;

        for (int k = 0; k < o->nspecs; k++)
            if (o->specs[k].bus == o->faults[i].bus && o->specs[k].unit == o->faults[i].unit)
                found = 1;
        if (!found) {
            fprintf(stderr, "meter-sim: --fault \"%s\": no such --meter\n", o->faults[i].arg);
            bad = 1;
        }
    }
    if (bad) {
        fprintf(stderr, "meter-sim: see meter-sim --help\n");
        return -EINVAL;
    }
    return 0;
}

/* --- meters --- */

static int profile_phases(const struct profile *p)
{
    static const char *const three[] = {"voltage_l2", "voltage_l3", "current_l2",
                                        "current_l3", "power_l2",   "power_l3"};

    for (int i = 0; i < p->nregs; i++)
        for (size_t k = 0; k < sizeof(three) / sizeof(three[0]); k++)
            if (p->regs[i].qty == qty_index(three[k]))
                return 3;
    return 1;
}

/* Builds every meter of the command line: profile, model, and a mapping sized to the
 * highest register the profile uses, per function code. */
static int meters_create(struct sim *s)
{
    int64_t start = mono_ms();

    for (int i = 0; i < s->opt.nspecs; i++) {
        const struct meter_spec *sp = &s->opt.specs[i];
        struct meter *m = &s->meters[i];
        int nb_hold = 0, nb_input = 0;

        m->prof = profile_set_find(&s->profiles, sp->model);
        if (m->prof == NULL) {
            char known[512] = "";
            size_t n = 0;

            for (int k = 0; k < s->profiles.n && n < sizeof(known); k++)
                n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s", k ? ", " : "",
                                      s->profiles.items[k].model);
            log_warnx("--meter \"%s\": no profile \"%s\" in %s (there are: %s)", sp->arg, sp->model,
                      s->opt.profiles, known);
            return -ENOENT;
        }
        for (int r = 0; r < m->prof->nregs; r++) {
            const struct prof_reg *reg = &m->prof->regs[r];
            int end = reg->addr + reg_words((enum reg_type)reg->type);

            if (reg->fc == 3 && end > nb_hold)
                nb_hold = end;
            else if (reg->fc == 4 && end > nb_input)
                nb_input = end;
        }
        /* A real meter answers every register of its runs, not only those the profile
         * names; a run for both function codes (fc 0) widens only a table in use. */
        for (int r = 0; r < m->prof->nruns; r++) {
            const struct prof_run *run = &m->prof->runs[r];

            if ((run->fc == 3 || (run->fc == 0 && nb_hold > 0)) && run->end + 1 > nb_hold)
                nb_hold = run->end + 1;
            if ((run->fc == 4 || (run->fc == 0 && nb_input > 0)) && run->end + 1 > nb_input)
                nb_input = run->end + 1;
        }
        m->bus = sp->bus;
        m->unit = sp->unit;
        m->index = i;
        m->map = modbus_mapping_new(0, 0, nb_hold, nb_input);
        m->model = model_new(s->opt.seed, i, profile_phases(m->prof), start);
        s->nmeters = i + 1;
        if (m->map == NULL || m->model == NULL) {
            log_warnx("out of memory");
            return -ENOMEM;
        }
        log_info("meter %s unit %d: %s (%s), %d holding and %d input registers", bus_names[m->bus],
                 m->unit, m->prof->model, m->prof->name, nb_hold, nb_input);
    }
    for (int i = 0; i < s->opt.nfaults; i++) {
        const struct fault_spec *fs = &s->opt.faults[i];
        char text[FAULT_TEXT_MAX];

        for (int k = 0; k < s->nmeters; k++) {
            if (s->meters[k].bus == fs->bus && s->meters[k].unit == fs->unit) {
                s->meters[k].fault = fs->fault; /* the last --fault for a meter wins */
                log_info("meter %s unit %d: fault %s", bus_names[fs->bus], fs->unit,
                         fault_format(&fs->fault, text, sizeof(text)));
            }
        }
    }
    return 0;
}

static void meters_free(struct sim *s)
{
    for (int i = 0; i < s->nmeters; i++) {
        if (s->meters[i].map != NULL)
            modbus_mapping_free(s->meters[i].map);
        model_free(s->meters[i].model);
    }
    s->nmeters = 0;
}

static struct meter *meter_find(struct sim *s, enum bus bus, int unit)
{
    for (int i = 0; i < s->nmeters; i++)
        if (s->meters[i].bus == bus && s->meters[i].unit == unit)
            return &s->meters[i];
    return NULL;
}

static uint16_t *meter_table(struct meter *m, int fc, int *nb)
{
    if (fc == 3) {
        *nb = m->map->nb_registers;
        return m->map->tab_registers;
    }
    *nb = m->map->nb_input_registers;
    return m->map->tab_input_registers;
}

/* Brings the model to now_ms and writes every profile register's value into the mapping. */
static void meter_refresh(struct meter *m, int64_t now_ms)
{
    model_update(m->model, now_ms);
    for (int r = 0; r < m->prof->nregs; r++) {
        const struct prof_reg *reg = &m->prof->regs[r];
        double v = model_value(m->model, reg->qty);
        uint16_t *tab;
        int nb;

        if (reg->fc != 3 && reg->fc != 4)
            continue;
        tab = meter_table(m, reg->fc, &nb);
        if (reg_encode(reg, v, tab + reg->addr) == -ERANGE)
            log_debug("%s unit %d: %s = %g does not fit %s; clamped", bus_names[m->bus], m->unit,
                      qty_at(reg->qty)->name, v, reg_type_name((enum reg_type)reg->type));
    }
}

/* --- served log --- */

static int64_t mono_us(void);

static int header_length(enum bus bus)
{
    return bus == BUS_TCP ? 7 : 1;
}

/*
 * One JSON line for a reply p that was just sent (or, for noreply, not sent): every profile
 * register that lies wholly in the range read, decoded from the register words in the reply
 * itself, so the log holds exactly what a master got. A fault adds "fault" (and "code" or
 * "delay_ms"); a fault that leaves the master without data logs "values":{}. Error replies
 * without a fault are not logged, as before.
 */
static void served_log(struct sim *s, const struct pending *p)
{
    const struct meter *m;
    int off = header_length(p->bus);
    int fc = p->fc, addr = p->addr, count = p->count, first = 1, data;
    uint16_t words[MODBUS_MAX_READ_REGISTERS];

    if (s->served == NULL || p->meter < 0)
        return;
    m = &s->meters[p->meter];
    /* A read reply with data: fc, byte count, 2 * count bytes (then the CRC on RTU). */
    data = (fc == MODBUS_FC_READ_HOLDING_REGISTERS || fc == MODBUS_FC_READ_INPUT_REGISTERS) &&
           count >= 1 && count <= MODBUS_MAX_READ_REGISTERS && p->len >= (size_t)off + 2 &&
           p->buf[off] == fc && p->buf[off + 1] == 2 * count &&
           p->len >= (size_t)(off + 2 + 2 * count) &&
           (p->fault.kind == FAULT_NONE || p->fault.kind == FAULT_SLOW);
    if (!data && p->fault.kind == FAULT_NONE)
        return;
    fprintf(s->served,
            "{\"t\":%" PRId64 ",\"bus\":\"%s\",\"unit\":%d,\"fc\":%d,\"addr\":%d,\"count\":%d,",
            now_ms(), bus_names[m->bus], m->unit, fc, addr, count);
    if (p->fault.kind != FAULT_NONE) {
        fprintf(s->served, "\"fault\":\"%s\",", fault_kind_name(p->fault.kind));
        if (p->fault.kind == FAULT_EXCEPTION)
            fprintf(s->served, "\"code\":%d,", p->fault.arg);
        else if (p->fault.kind == FAULT_SLOW)
            fprintf(s->served, "\"delay_ms\":%d,", p->fault.arg);
    }
    if (p->after_reply_us >= 0)
        fprintf(s->served, "\"after_reply_us\":%" PRId64 ",", p->after_reply_us);
    if (p->bus == BUS_RTU && p->due_us > 0 && p->fault.kind != FAULT_NOREPLY)
        fprintf(s->served, "\"late_us\":%" PRId64 ",", mono_us() - p->due_us);
    fputs("\"values\":{", s->served);
    for (int i = 0; data && i < count; i++)
        words[i] = (uint16_t)((p->buf[off + 2 + 2 * i] << 8) | p->buf[off + 3 + 2 * i]);
    for (int r = 0; data && r < m->prof->nregs; r++) {
        const struct prof_reg *reg = &m->prof->regs[r];
        int w = reg_words((enum reg_type)reg->type);
        double v;

        if (reg->fc != fc || reg->addr < addr || reg->addr + w > addr + count)
            continue;
        if (reg_decode(reg, words + (reg->addr - addr), &v) < 0)
            continue;
        fprintf(s->served, "%s\"%s\":%.17g", first ? "" : ",", qty_at(reg->qty)->name, v);
        first = 0;
    }
    fputs("}}\n", s->served);
    if (fflush(s->served) != 0 && !s->served_failed) {
        log_warn("%s: write", s->opt.served_log);
        s->served_failed = 1;
    }
}

/* --- replies: build, break, queue, send --- */

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock of mono_ms() */
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t rng_next(struct sim *s)
{
    /* xorshift64*: garbage only needs to look random and repeat with the seed. */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 0x2545F4914F6CDD1DULL;
}

/* Reads back what libmodbus wrote into the capture socket: up to TCP_ADU_MAX bytes into out,
 * anything beyond is thrown away. Returns the length. */
static size_t capture_take(struct sim *s, uint8_t *out)
{
    uint8_t extra[TCP_ADU_MAX];
    ssize_t n = recv(s->capture[1], out, TCP_ADU_MAX, MSG_DONTWAIT);

    if (n <= 0)
        return 0;
    while (recv(s->capture[1], extra, sizeof(extra), MSG_DONTWAIT) > 0)
        log_warnx("a reply longer than %d bytes; cut", TCP_ADU_MAX);
    return (size_t)n;
}

/* The reply to a request with exception code, as libmodbus would frame it. */
static size_t build_exception(enum bus bus, const uint8_t *req, int code, uint8_t *out)
{
    if (bus == BUS_RTU) {
        uint16_t crc;

        out[0] = req[0];
        out[1] = (uint8_t)(req[1] | 0x80);
        out[2] = (uint8_t)code;
        crc = rtu_crc16(out, 3);
        out[3] = (uint8_t)(crc & 0xFF);
        out[4] = (uint8_t)(crc >> 8);
        return 5;
    }
    memcpy(out, req, 4); /* transaction and protocol id */
    out[4] = 0;
    out[5] = 3; /* unit, fc, code */
    out[6] = req[6];
    out[7] = (uint8_t)(req[7] | 0x80);
    out[8] = (uint8_t)code;
    return 9;
}

/* Random bytes that no master can take for a reply to req: on RTU the CRC never checks, on
 * TCP the MBAP header is broken as break_check() breaks it. */
static size_t build_garbage(struct sim *s, enum bus bus, const uint8_t *req, uint8_t *out)
{
    size_t n = GARBAGE_MIN + (size_t)(rng_next(s) % (GARBAGE_MAX - GARBAGE_MIN + 1));

    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(rng_next(s) >> 56);
    if (bus == BUS_RTU) {
        uint16_t crc = rtu_crc16(out, n - 2);

        if (out[n - 2] == (crc & 0xFF) && out[n - 1] == (crc >> 8))
            out[n - 1] ^= 0xFF;
    } else {
        out[0] = (uint8_t)~req[0];
        out[2] |= 0x01;
        out[3] |= 0x01;
        out[6] = (uint8_t)(req[6] ^ 0x80);
    }
    return n;
}

/* Breaks the check of a reply. RTU: the CRC. TCP, which has no checksum: every field of the
 * MBAP header a master may check, because masters differ in which they check: libmodbus
 * 3.1.6 the transaction id, and the protocol id only when both its bytes are not 0;
 * pymodbus 3.0.0 only the unit id. */
static void break_check(enum bus bus, uint8_t *buf, size_t len)
{
    if (len < (size_t)header_length(bus) + 1)
        return;
    if (bus == BUS_RTU) {
        buf[len - 1] ^= 0xFF;
        return;
    }
    buf[0] ^= 0xFF;
    buf[2] = 0xA5;
    buf[3] = 0x5A;
    buf[6] ^= 0x80;
}

static struct client *client_by_id(struct sim *s, uint64_t id)
{
    for (int i = 0; i < s->nclients; i++)
        if (s->clients[i].id == id && s->clients[i].fd >= 0)
            return &s->clients[i];
    return NULL;
}

static void tcp_drop(struct client *c, const char *why);

/* Logs p and puts it on its line now. The log line comes first so that it is there when
 * the master has the reply, and its time is never later than the reply's arrival. */
static void reply_send(struct sim *s, const struct pending *p)
{
    struct client *c = NULL;

    if (p->bus == BUS_TCP) {
        c = client_by_id(s, p->client);
        if (c == NULL) {
            log_debug("tcp: the client of a queued reply is gone; dropped");
            return;
        }
    }
    if (p->meter >= 0)
        s->meters[p->meter].replies++;
    served_log(s, p);
    if (p->bus == BUS_RTU) {
        ssize_t n = write(s->pty_master, p->buf, p->len);

        s->rtu_sent_us = mono_us();

        if (n < 0 || (size_t)n != p->len)
            log_debug("rtu: reply not written (%s); is anyone on the line?",
                      n < 0 ? strerror(errno) : "short write");
    } else if (send(c->fd, p->buf, p->len, MSG_NOSIGNAL) != (ssize_t)p->len) {
        /* The socket blocks, with a send timeout (tcp_accept()). */
        tcp_drop(c, "reply not sent");
    }
}

static int pending_has_rtu(const struct sim *s)
{
    for (int i = 0; i < s->npending; i++)
        if (s->pending[i].bus == BUS_RTU)
            return 1;
    return 0;
}

/* Sends p now, or queues it until p->due_us when that is later or when an earlier RTU reply
 * still holds the line (replies on one line leave in the order they were queued). */
static void reply_schedule(struct sim *s, struct pending *p, int64_t now_us)
{
    if (p->due_us <= now_us && !(p->bus == BUS_RTU && pending_has_rtu(s))) {
        reply_send(s, p);
        return;
    }
    if (s->npending >= MAX_PENDING) {
        log_warnx("%d replies queued already; dropping one", MAX_PENDING);
        return;
    }
    p->seq = s->next_seq++;
    s->pending[s->npending++] = *p;
}

/* Sends every queued reply that is due by now_us, earliest first. */
static void pending_run(struct sim *s, int64_t now_us)
{
    for (;;) {
        int best = -1;

        for (int i = 0; i < s->npending; i++) {
            const struct pending *q = &s->pending[i];

            if (q->due_us > now_us)
                continue;
            if (best < 0 || q->due_us < s->pending[best].due_us ||
                (q->due_us == s->pending[best].due_us && q->seq < s->pending[best].seq))
                best = i;
        }
        if (best < 0)
            return;
        struct pending p = s->pending[best];

        s->pending[best] = s->pending[--s->npending];
        reply_send(s, &p);
    }
}

/* When the next queued reply is due, or -1. */
static int64_t pending_deadline(const struct sim *s)
{
    int64_t d = -1;

    for (int i = 0; i < s->npending; i++)
        if (d < 0 || s->pending[i].due_us < d)
            d = s->pending[i].due_us;
    return d;
}

/* --- requests --- */

/*
 * Answers one framed request for meter m (NULL: a TCP unit id with no meter, answered with
 * exception 0x0B as a gateway does) on bus, from TCP client client. req holds the whole ADU
 * (RTU: CRC included, already checked) in a buffer of at least REQ_BUF bytes, zero after the
 * frame, because libmodbus reads the fields the function code implies without knowing the
 * frame's length.
 *
 * This is the one place where a reply is decided: libmodbus builds it from the meter's
 * mapping into the capture socket, the meter's fault changes it, and the delay (the fault's,
 * the turnaround, the line time with --line-speed) decides when it goes out.
 */
static void serve_request(struct sim *s, struct meter *m, enum bus bus, uint64_t client,
                          const uint8_t *req, int len)
{
    modbus_t *ctx = bus == BUS_TCP ? s->tcp_ctx : s->rtu_ctx;
    int off = header_length(bus);
    int fc = req[off];
    int is_read = fc == MODBUS_FC_READ_HOLDING_REGISTERS || fc == MODBUS_FC_READ_INPUT_REGISTERS;
    int64_t now = mono_us(), start = now, delay = 0;
    struct pending p;
    int rc;

    memset(&p, 0, sizeof(p));
    p.bus = bus;
    p.client = client;
    p.meter = m != NULL ? (int)(m - s->meters) : -1;
    p.fault = m != NULL ? m->fault : (struct fault){FAULT_NONE, 0};
    p.fc = fc;
    /* How long the master took from the previous reply to this request (its reaction,
     * the pseudo-terminal both ways included), when nothing else held the line. */
    p.after_reply_us =
        bus == BUS_RTU && s->rtu_sent_us > 0 && !pending_has_rtu(s) ? now - s->rtu_sent_us : -1;
    p.addr = (req[off + 1] << 8) | req[off + 2];
    p.count = (req[off + 3] << 8) | req[off + 4];
    if (m != NULL) {
        m->requests++;
        if (p.fault.kind != FAULT_NONE && p.fault.kind != FAULT_SLOW)
            m->faulted++;
        log_debug("%s unit %d: fc %d addr %d count %d", bus_names[bus], m->unit, fc, p.addr,
                  p.count);
    }

    switch (p.fault.kind) {
    case FAULT_NOREPLY:
        served_log(s, &p);
        return;
    case FAULT_EXCEPTION:
        p.len = build_exception(bus, req, p.fault.arg, p.buf);
        break;
    case FAULT_GARBAGE:
        p.len = build_garbage(s, bus, req, p.buf);
        break;
    default:
        modbus_set_socket(ctx, s->capture[0]);
        if (m == NULL) {
            rc = modbus_reply_exception(ctx, req, MODBUS_EXCEPTION_GATEWAY_TARGET);
        } else {
            if (is_read)
                meter_refresh(m, mono_ms());
            if (bus == BUS_RTU)
                modbus_set_slave(ctx, m->unit);
            /* Writes (FC 5, 6, 15, 16) land in the mapping as libmodbus does it; the next
             * read overwrites the registers the profile names. Range errors get libmodbus's
             * exceptions. */
            rc = modbus_reply(ctx, req, len, m->map);
        }
        p.len = capture_take(s, p.buf);
        if (rc < 0 || p.len == 0) {
            log_warn("%s unit %d: building the reply", bus_names[bus], m ? m->unit : req[off - 1]);
            return;
        }
        if (p.fault.kind == FAULT_CRC)
            break_check(bus, p.buf, p.len);
        break;
    }

    if (p.fault.kind == FAULT_SLOW)
        delay += (int64_t)p.fault.arg * 1000;
    if (bus == BUS_RTU) {
        delay += (int64_t)s->opt.turnaround * 1000;
        if (s->opt.line_speed)
            delay += line_reply_us(s->opt.baud, s->bits_per_char, (size_t)len, p.len);
        if (s->rtu_busy_us > start)
            start = s->rtu_busy_us; /* the line still carries an earlier reply */
        /* After the reply the line must stay silent for 3.5 characters before the master
         * may start its next request: a request that comes sooner starts only then. */
        s->rtu_busy_us = start + delay;
        if (s->opt.line_speed)
            s->rtu_busy_us += line_silence_us(s->opt.baud, s->bits_per_char);
    }
    p.due_us = start + delay;
    reply_schedule(s, &p, now);
}

/* libmodbus sleeps for the response timeout before it answers "illegal data value" (and
 * then flushes the line); in a single-threaded server that sleep would stall every bus, so
 * make it as short as libmodbus allows. */
static void reply_ctx_setup(modbus_t *ctx)
{
    if (modbus_set_response_timeout(ctx, 0, 1) < 0)
        log_warn("modbus_set_response_timeout");
}

/* --- TCP --- */

static int tcp_listen(struct sim *s)
{
    struct addrinfo hints, *res = NULL, *ai;
    char port[16];
    int fd = -1, rc, one = 1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", s->opt.tcp_port);
    rc = getaddrinfo(s->opt.tcp_host, port, &hints, &res);
    if (rc != 0) {
        log_warnx("--tcp %s: %s", s->opt.tcp_host, gai_strerror(rc));
        return -EINVAL;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        log_warn("--tcp %s:%d: cannot listen", s->opt.tcp_host, s->opt.tcp_port);
        goto fail;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        log_warn("getsockname");
        goto fail;
    }
    s->tcp_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    /* The context only builds replies, into the capture socket. */
    s->tcp_ctx = modbus_new_tcp("127.0.0.1", 502);
    if (s->tcp_ctx == NULL) {
        log_warn("modbus_new_tcp");
        goto fail;
    }
    reply_ctx_setup(s->tcp_ctx);
    freeaddrinfo(res);
    s->listen_fd = fd;
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -EIO;
}

static void tcp_accept(struct sim *s)
{
    struct client *c;
    int fd, one = 1;
    struct timeval tv = {.tv_sec = 2, .tv_usec = 0};

    fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            log_warn("accept");
        return;
    }
    if (s->nclients >= MAX_CLIENTS) {
        log_warnx("tcp: %d clients already; refusing another", MAX_CLIENTS);
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* Replies are written blocking; a client that stops reading must not stall the loop
     * for long. */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    c = &s->clients[s->nclients++];
    c->id = ++s->next_client_id;
    c->fd = fd;
    c->len = 0;
    log_debug("tcp: client %d connected (%d now)", fd, s->nclients);
}

static void tcp_drop(struct client *c, const char *why)
{
    log_debug("tcp: client %d: %s; closing", c->fd, why);
    close(c->fd);
    c->fd = -1;
}

/* Answers one MBAP frame of len bytes at the start of c->buf. */
static void tcp_frame(struct sim *s, struct client *c, size_t len)
{
    uint8_t req[REQ_BUF];
    int unit = c->buf[6];
    struct meter *m;

    memset(req, 0, sizeof(req));
    memcpy(req, c->buf, len);
    m = meter_find(s, BUS_TCP, unit);
    if (m == NULL)
        log_debug("tcp: no meter with unit %d", unit);
    serve_request(s, m, BUS_TCP, c->id, req, (int)len);
}

static void tcp_read(struct sim *s, struct client *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);

    if (n == 0) {
        tcp_drop(c, "disconnected");
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        log_debug("tcp: client %d: recv: %s", c->fd, strerror(errno));
        tcp_drop(c, "receive error");
        return;
    }
    c->len += (size_t)n;

    /* MBAP: transaction id (2), protocol id (2, zero), length of what follows (2), unit. */
    while (c->len >= 7 && c->fd >= 0) {
        unsigned proto = ((unsigned)c->buf[2] << 8) | c->buf[3];
        size_t follow = ((size_t)c->buf[4] << 8) | c->buf[5];
        size_t total = 6 + follow;

        if (proto != 0 || follow < 2 || total > TCP_ADU_MAX) {
            tcp_drop(c, "not a Modbus TCP frame");
            return;
        }
        if (c->len < total)
            break;
        tcp_frame(s, c, total);
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
    }
}

/* --- RTU --- */

static int rtu_open(struct sim *s)
{
    struct termios tio;
    int fl;

    if (openpty(&s->pty_master, &s->pty_slave, NULL, NULL, NULL) < 0) {
        log_warn("openpty");
        return -EIO;
    }
    fcntl(s->pty_master, F_SETFD, FD_CLOEXEC);
    fcntl(s->pty_slave, F_SETFD, FD_CLOEXEC);
    if (ttyname_r(s->pty_slave, s->pty_name, sizeof(s->pty_name)) != 0) {
        log_warn("ttyname_r");
        return -EIO;
    }
    /* Raw on the slave side, so that no byte of a frame is translated or echoed. */
    if (tcgetattr(s->pty_slave, &tio) < 0) {
        log_warn("tcgetattr %s", s->pty_name);
        return -EIO;
    }
    cfmakeraw(&tio);
    if (tcsetattr(s->pty_slave, TCSANOW, &tio) < 0) {
        log_warn("tcsetattr %s", s->pty_name);
        return -EIO;
    }
    /* Non-blocking: a read never waits, and a reply nobody reads fails instead of hanging. */
    fl = fcntl(s->pty_master, F_GETFL);
    if (fl < 0 || fcntl(s->pty_master, F_SETFL, fl | O_NONBLOCK) < 0) {
        log_warn("fcntl O_NONBLOCK");
        return -EIO;
    }

    if (s->opt.pty_link != NULL) {
        struct stat st;

        if (lstat(s->opt.pty_link, &st) == 0) {
            if (!S_ISLNK(st.st_mode)) {
                log_warnx("--pty-link %s: exists and is not a symlink", s->opt.pty_link);
                return -EEXIST;
            }
            unlink(s->opt.pty_link); /* a stale link from an earlier run */
        }
        if (symlink(s->pty_name, s->opt.pty_link) < 0) {
            log_warn("--pty-link %s", s->opt.pty_link);
            return -EIO;
        }
        s->pty_linked = 1;
    }

    /* Builds replies (and their CRC) only: never connected, it writes into the capture. */
    s->rtu_ctx = modbus_new_rtu(s->pty_name, s->opt.baud, s->opt.parity, 8, s->opt.stop_bits);
    if (s->rtu_ctx == NULL) {
        log_warn("modbus_new_rtu");
        return -EIO;
    }
    reply_ctx_setup(s->rtu_ctx);
    s->bits_per_char = line_bits_per_char(s->opt.parity, s->opt.stop_bits);
    rtu_framer_init(&s->framer, rtu_silence_ms(s->opt.baud));
    return 0;
}

/* Takes every complete frame from the framer and answers those for our meters. */
static void rtu_drain(struct sim *s, int64_t now)
{
    uint8_t req[REQ_BUF];
    int n;

    for (;;) {
        memset(req, 0, sizeof(req));
        n = rtu_framer_next(&s->framer, now, req);
        if (n == RTU_NONE)
            break;
        if (n == RTU_DROPPED) {
            log_debug("rtu: dropped a bad frame (%lu so far)", s->framer.bad);
            continue;
        }
        struct meter *m = meter_find(s, BUS_RTU, req[0]);

        if (m == NULL) {
            /* Not ours (or broadcast, unit 0): on a multi-drop bus the line stays silent. */
            log_debug("rtu: no meter with unit %d", req[0]);
            continue;
        }
        serve_request(s, m, BUS_RTU, 0, req, n);
    }
}

static void rtu_read(struct sim *s)
{
    uint8_t buf[512];
    ssize_t n = read(s->pty_master, buf, sizeof(buf));

    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            log_warn("read %s", s->pty_name);
        return;
    }
    rtu_framer_feed(&s->framer, buf, (size_t)n, mono_ms());
    rtu_drain(s, mono_ms());
}

/* --- control channel commands --- */

/* "stats": one JSON object with the requests of every meter. */
static void ctl_stats(struct sim *s, char *out, size_t outlen)
{
    size_t n = 0;
    char text[FAULT_TEXT_MAX];

#define PUT(...)                                                                                   \
    do {                                                                                           \
        if (n < outlen)                                                                            \
            n += (size_t)snprintf(out + n, outlen - n, __VA_ARGS__);                               \
    } while (0)
    PUT("{\"meters\":[");
    for (int i = 0; i < s->nmeters; i++) {
        const struct meter *m = &s->meters[i];

        PUT("%s{\"bus\":\"%s\",\"unit\":%d,\"model\":\"%s\",\"requests\":%lu,\"replies\":%lu,"
            "\"faulted\":%lu,\"fault\":\"%s\"}",
            i ? "," : "", bus_names[m->bus], m->unit, m->prof->model, m->requests, m->replies,
            m->faulted, fault_format(&m->fault, text, sizeof(text)));
    }
    PUT("],\"pending\":%d,\"tcp_clients\":%d,\"rtu_bad_frames\":%lu}", s->npending, s->nclients,
        s->framer.bad);
#undef PUT
    if (n >= outlen)
        snprintf(out, outlen, "error: stats do not fit %zu bytes", outlen);
}

/* "fault BUS:UNIT KIND [ARG]" with the words after "fault". */
static void ctl_fault(struct sim *s, char **w, int nw, char *out, size_t outlen)
{
    enum bus bus;
    int unit;
    struct meter *m;
    struct fault f;
    char err[160], text[FAULT_TEXT_MAX];

    if (nw < 2 || nw > 3) {
        snprintf(out, outlen, "error: usage: fault BUS:UNIT KIND [ARG]");
        return;
    }
    if (parse_target(w[0], strlen(w[0]), &bus, &unit, err, sizeof(err)) < 0) {
        snprintf(out, outlen, "error: %s", err);
        return;
    }
    m = meter_find(s, bus, unit);
    if (m == NULL) {
        snprintf(out, outlen, "error: no meter %s", w[0]);
        return;
    }
    if (fault_parse(w[1], nw == 3 ? w[2] : NULL, &f, err, sizeof(err)) < 0) {
        snprintf(out, outlen, "error: %s", err);
        return;
    }
    m->fault = f;
    log_info("meter %s unit %d: fault %s", bus_names[bus], unit,
             fault_format(&f, text, sizeof(text)));
    snprintf(out, outlen, "ok");
}

/* control_handler: one command line. */
static void ctl_command(void *arg, char *line, char *out, size_t outlen)
{
    struct sim *s = arg;
    char *w[8], *save = NULL, *tok;
    int nw = 0;

    for (tok = strtok_r(line, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save)) {
        if (nw == (int)(sizeof(w) / sizeof(w[0]))) {
            snprintf(out, outlen, "error: too many words");
            return;
        }
        w[nw++] = tok;
    }
    if (nw == 0) {
        snprintf(out, outlen, "error: empty command");
    } else if (strcmp(w[0], "fault") == 0) {
        ctl_fault(s, w + 1, nw - 1, out, outlen);
    } else if (strcmp(w[0], "stats") == 0 && nw == 1) {
        ctl_stats(s, out, outlen);
    } else if (strcmp(w[0], "help") == 0 && nw == 1) {
        snprintf(out, outlen,
                 "ok commands: fault BUS:UNIT none|noreply|crc|exception CODE|slow MS|garbage; "
                 "stats");
    } else {
        snprintf(out, outlen, "error: unknown command \"%s\" (fault, stats, help)", w[0]);
    }
}

/* --- main loop --- */

static void sim_close(struct sim *s)
{
    for (int i = 0; i < s->nclients; i++)
        if (s->clients[i].fd >= 0)
            close(s->clients[i].fd);
    s->nclients = 0;
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    /* Free the contexts without modbus_close(): their sockets are ours, closed here. */
    if (s->tcp_ctx != NULL)
        modbus_free(s->tcp_ctx);
    if (s->rtu_ctx != NULL)
        modbus_free(s->rtu_ctx);
    if (s->pty_linked)
        unlink(s->opt.pty_link);
    if (s->pty_master >= 0)
        close(s->pty_master);
    if (s->pty_slave >= 0)
        close(s->pty_slave);
    for (int i = 0; i < 2; i++)
        if (s->capture[i] >= 0)
            close(s->capture[i]);
    control_close(s->ctl);
    if (s->served != NULL)
        fclose(s->served);
    meters_free(s);
    profile_set_free(&s->profiles);
}

static void clients_compact(struct sim *s)
{
    for (int i = 0; i < s->nclients;) {
        if (s->clients[i].fd < 0)
            s->clients[i] = s->clients[--s->nclients];
        else
            i++;
    }
}

static int sim_loop(struct sim *s, const sigset_t *waitmask)
{
    struct pollfd fds[2 + MAX_CLIENTS + CONTROL_POLLFDS];

    while (!stop_signal) {
        int nfds = 0, listen_i = -1, pty_i = -1, first_client, ctl_i = -1, nctl = 0, rc;
        int64_t deadline, due, now;
        struct timespec ts, *tsp = NULL;

        /* Replies due first: an RTU request framed below queues behind them. */
        pending_run(s, mono_us());
        clients_compact(s);

        deadline = s->pty_master >= 0 ? rtu_framer_deadline(&s->framer) : -1;
        if (deadline >= 0)
            deadline *= 1000;
        due = pending_deadline(s);
        if (due >= 0 && (deadline < 0 || due < deadline))
            deadline = due;

        if (s->listen_fd >= 0) {
            listen_i = nfds;
            fds[nfds++] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
        }
        if (s->pty_master >= 0) {
            pty_i = nfds;
            fds[nfds++] = (struct pollfd){.fd = s->pty_master, .events = POLLIN};
        }
        first_client = nfds;
        for (int i = 0; i < s->nclients; i++)
            fds[nfds++] = (struct pollfd){.fd = s->clients[i].fd, .events = POLLIN};
        if (s->ctl != NULL) {
            ctl_i = nfds;
            nctl = control_pollfds(s->ctl, fds + nfds);
            nfds += nctl;
        }

        if (deadline >= 0) {
            int64_t wait = deadline - mono_us();

            if (wait < 0)
                wait = 0;
            ts.tv_sec = (time_t)(wait / 1000000);
            ts.tv_nsec = (long)(wait % 1000000) * 1000L;
            tsp = &ts;
        }
        /* SIGINT/SIGTERM are blocked except inside ppoll, so a signal can only arrive
         * while we wait, and then always ends the wait. */
        rc = ppoll(fds, (nfds_t)nfds, tsp, waitmask);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            log_warn("ppoll");
            return -EIO;
        }

        now = mono_us();
        pending_run(s, now);
        if (pty_i >= 0 && (fds[pty_i].revents & (POLLIN | POLLHUP | POLLERR)))
            rtu_read(s);
        if (s->pty_master >= 0)
            rtu_drain(s, mono_ms()); /* frames that ended at a silence */
        for (int i = 0; i < s->nclients; i++) {
            if (fds[first_client + i].revents & (POLLIN | POLLHUP | POLLERR))
                tcp_read(s, &s->clients[i]);
        }
        if (ctl_i >= 0)
            control_dispatch(s->ctl, fds + ctl_i, nctl);
        /* Compact before accepting, so the poll indexes above stayed valid. */
        clients_compact(s);
        if (listen_i >= 0 && (fds[listen_i].revents & POLLIN))
            tcp_accept(s);
    }
    log_info("signal %d: stopping", (int)stop_signal);
    return 0;
}

int main(int argc, char **argv)
{
    struct sim *s;
    struct sigaction sa;
    sigset_t block, waitmask;
    char err[512];
    int rc, status = 1;

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        fprintf(stderr, "meter-sim: out of memory\n");
        return 1;
    }
    s->listen_fd = -1;
    s->pty_master = -1;
    s->pty_slave = -1;
    s->capture[0] = s->capture[1] = -1;

    rc = parse_args(argc, argv, &s->opt);
    if (rc != 0) {
        free(s);
        return rc > 0 ? 0 : 2;
    }
    log_init("meter-sim", s->opt.verbose, 1);

    /* Block the stop signals now; ppoll() unblocks them while it waits. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGTERM);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    if (profile_set_load_dir(&s->profiles, s->opt.profiles, err, sizeof(err)) < 0) {
        log_warnx("--profiles %s: %s", s->opt.profiles, err);
        goto out;
    }
    if (meters_create(s) < 0)
        goto out;
    s->rng = s->opt.seed * 0x9E3779B97F4A7C15ULL + 1;
    if (s->rng == 0)
        s->rng = 1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, s->capture) < 0) {
        log_warn("socketpair");
        goto out;
    }
    if (s->opt.control != NULL) {
        rc = control_open(s->opt.control, ctl_command, s, &s->ctl);
        if (rc < 0) {
            errno = -rc;
            log_warn("--control %s", s->opt.control);
            goto out;
        }
    }
    if (s->opt.served_log != NULL) {
        s->served = fopen(s->opt.served_log, "a");
        if (s->served == NULL) {
            log_warn("--served-log %s", s->opt.served_log);
            goto out;
        }
    }
    if (s->opt.tcp && tcp_listen(s) < 0)
        goto out;
    if (s->opt.rtu && rtu_open(s) < 0)
        goto out;

    if (s->opt.tcp) {
        int v6 = strchr(s->opt.tcp_host, ':') != NULL;

        printf("tcp %s%s%s:%d\n", v6 ? "[" : "", s->opt.tcp_host, v6 ? "]" : "", s->tcp_port);
        log_info("serving Modbus TCP on %s port %d", s->opt.tcp_host, s->tcp_port);
    }
    if (s->opt.rtu) {
        printf("rtu %s\n", s->pty_name);
        log_info("serving Modbus RTU on %s%s%s", s->pty_name, s->pty_linked ? " via " : "",
                 s->pty_linked ? s->opt.pty_link : "");
    }
    if (s->ctl != NULL)
        printf("control %s\n", s->opt.control);
    printf("ready\n");
    fflush(stdout);

    if (sim_loop(s, &waitmask) == 0)
        status = 0;
out:
    sim_close(s);
    free(s);
    return status;
}
