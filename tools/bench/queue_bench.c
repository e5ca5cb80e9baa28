/*
 * queue_bench: how fast the agent's queue (agent/queue.h) takes readings, against SQLite
 * driven directly.
 *
 * Benchmark mode (the default) appends readings through queue_append() in calls of 1000,
 * 100 and 1 readings, durable and memory-first, each on a new file in DIR (default
 * /tmp), and in the same run inserts the same rows (seq, ts, the same encoded bodies) into
 * the same table with SQLite itself: from /usr/bin/python3 (sqlite3 executemany, one
 * transaction per batch: what "SQLite manages from a script" means) and from C (one
 * prepared INSERT, one transaction per batch: the ceiling for this schema). Both use WAL
 * and synchronous=FULL, like the durable queue. Those rows are the wire JSON the queue stored
 * up to 2026-12 (one row per reading); the queue now stores packed readings, many to a row,
 * and encodes to wire JSON when a batch is fetched (timed separately). The cases are
 * interleaved round by round so
 * that a noisy machine slows all of them alike; it prints the median of the rounds, the
 * ratios, and a Markdown table for docs/benchmarks.md.
 *
 * Prefill mode (--prefill PATH) writes a queue file of --count readings of --meters meters
 * for the drain benchmark (tools/bench/drain_bench.py) and prints its stream id.
 *
 * Not a test: it only fails when the queue or SQLite refuse to work.
 */
#include "queue.h"
#include "quantities.h"
#include "timeutil.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3"
#define NBODIES 1024        /* distinct reading bodies cycled through */
#define TARGET_RPS 300000.0 /* the target for batched durable appends */
#define MAX_ROUNDS 51

/* Our own messages. stderr itself goes to /dev/null during the benchmark: the queue logs a
 * line per file opened, which would drown the results. */
static FILE *errf;

/* The same rows into the same table as the queue's, from a script: argv db bodies count
 * batch; prints the seconds from the first executemany to the last commit. */
static const char py_script[] =
    "import sqlite3, sys, time\n"
    "db, bodies, count, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
    "b = open(bodies).read().splitlines()\n"
    "rows = [(i + 1, 1700000000000 + i * 1000, b[i % len(b)]) for i in range(count)]\n"
    "con = sqlite3.connect(db, isolation_level=None)\n"
    "con.execute('PRAGMA journal_mode=WAL')\n"
    "con.execute('PRAGMA synchronous=FULL')\n"
    "con.execute('CREATE TABLE q(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL,"
    " body TEXT NOT NULL)')\n"
    "t0 = time.perf_counter()\n"
    "for i in range(0, count, batch):\n"
    "    con.execute('BEGIN')\n"
    "    con.executemany('INSERT INTO q(seq, ts, body) VALUES (?, ?, ?)', rows[i:i + batch])\n"
    "    con.execute('COMMIT')\n"
    "print(time.perf_counter() - t0)\n"
    "con.close()\n";

struct opts {
    const char *dir;
    int rounds;
    int values;
    int meters;
    int python;
    double scale;
    /* prefill */
    const char *prefill;
    long count;
    int batch;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(errf ? errf : stderr, "queue_bench: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
    exit(1);
}

/* A reading like one of an SDM630's: the first nvalues quantities, float32 values (what
 * a meter sends, so the wire text is as long as a real one). */
static void make_reading(struct reading *r, int meter, int k, int nvalues, int64_t ts)
{
    static const double base[] = {12345.678, 12.5,  1523.4, 510.2,  498.7, 514.5,
                                  229.8,     231.1, 230.4,  2.21,   2.17,  2.24,
                                  49.98,     0.97,  120.5,  1530.1, 42.0};
    memset(r, 0, sizeof(*r));
    snprintf(r->meter, sizeof(r->meter), "m%02d", meter);
    r->ts_ms = ts;
    r->ok = true;
    for (int q = 0; q < nvalues && q < qty_count() && q < (int)(sizeof(base) / sizeof(base[0]));
         q++) {
        double wobble = 1.0 + 0.01 * sin((double)(k * 7 + q * 13 + meter));
        r->values[q] = (double)(float)(base[q] * wobble);
        r->present |= 1u << q;
    }
}

static const char *fs_name(const char *dir)
{
    struct statfs s;
    if (statfs(dir, &s) < 0)
        return "?";
    switch ((unsigned long)s.f_type) {
    case 0xEF53:
        return "ext4";
    case 0x01021994:
        return "tmpfs";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x794C7630:
        return "overlayfs";
    case 0xF2F52010:
        return "f2fs";
    default:
        return "other";
    }
}

static void unlink_db(const char *path)
{
    char p[600];
    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

/* ---- the cases ----------------------------------------------------------------------- */

/* The readings of the benchmark cases: NBODIES of them, cycled through. The SQLite cases
 * store exactly their encoded bodies. */
static struct reading tmpl[NBODIES];

/* count readings through queue_append in calls of batch; returns readings/s. Copying a
 * template into the call's array is inside the timing (about 0.1 us of a reading's cost). */
static double run_queue(const char *path, bool memory_first, long count, int batch, uint64_t *pages)
{
    struct queue_opts o;
    struct queue_stats st;
    struct reading *r = calloc((size_t)batch, sizeof(*r));
    queue_t *q;
    double t0, t1;
    long done = 0;
    int rc;

    if (!r)
        die("calloc", ENOMEM);
    unlink_db(path);
    queue_default_opts(&o);
    o.memory_first = memory_first;
    o.max_rows = count + 1000;
    if ((rc = queue_open(path, &o, &q)) < 0)
        die("queue_open", rc);
    t0 = now_s();
    while (done < count) {
        int n = count - done < batch ? (int)(count - done) : batch;
        for (int i = 0; i < n; i++)
            r[i] = tmpl[(done + i) % NBODIES];
        if ((rc = queue_append(q, r, n)) < 0)
            die("queue_append", rc);
        done += n;
    }
    queue_get_stats(q, &st);
    queue_close(q); /* memory-first: writes what still waits in memory */
    t1 = now_s();
    *pages = st.pages_written;
    unlink_db(path);
    free(r);
    return (double)count / (t1 - t0);
}

/* Readings per second read back out of a durable queue as wire batches (queue_fetch_sized:
 * unpacking and encoding to wire JSON, what the uplink pays per reading it publishes), in
 * batches of 5000 readings / 1 MiB. The appends before are not timed. */
static double run_fetch(const char *path, long count)
{
    struct queue_opts o;
    struct reading *r = calloc(1000, sizeof(*r));
    struct qbatch b;
    queue_t *q;
    uint64_t after = 0;
    long got = 0;
    double t0;
    int rc;

    if (!r)
        die("calloc", ENOMEM);
    unlink_db(path);
    queue_default_opts(&o);
    o.max_rows = count + 1000;
    if ((rc = queue_open(path, &o, &q)) < 0)
        die("queue_open", rc);
    for (long done = 0; done < count; done += 1000) {
        for (int i = 0; i < 1000; i++)
            r[i] = tmpl[(done + i) % NBODIES];
        if ((rc = queue_append(q, r, 1000)) < 0)
            die("queue_append", rc);
    }
    t0 = now_s();
    while ((rc = queue_fetch_sized(q, "gw-01", after, 0, 5000, 1 << 20, &b)) == 1) {
        after = b.last_seq;
        got += b.count;
        free(b.payload);
    }
    if (rc < 0)
        die("queue_fetch", rc);
    t0 = now_s() - t0;
    queue_close(q);
    unlink_db(path);
    free(r);
    return (double)got / t0;
}

/* What wire_pack_reading() alone costs per reading (the queue packs on append). */
static double pack_us(long count)
{
    unsigned char buf[WIRE_PACKED_MAX];
    double t0 = now_s();
    for (long k = 0; k < count; k++)
        if (wire_pack_reading(&tmpl[k % NBODIES], buf, sizeof(buf)) < 0)
            die("wire_pack_reading", ENOSPC);
    return (now_s() - t0) * 1e6 / (double)count;
}

/* What wire_encode_reading() alone costs per reading (paid when a batch is fetched). */
static double encode_us(long count)
{
    char buf[WIRE_READING_MAX];
    double t0 = now_s();
    for (long k = 0; k < count; k++)
        if (wire_encode_reading(&tmpl[k % NBODIES], buf, sizeof(buf)) < 0)
            die("wire_encode_reading", ENOSPC);
    return (now_s() - t0) * 1e6 / (double)count;
}

/* Nanoseconds per value of four ways to print the template values: what the wire does
 * (wire_format_double: Grisu3, shortest round trip), its reference (the same text by trying
 * %.15g, %.16g, %.17g with strtod), one "%.17g" (round-trips, not shortest), one "%.9g"
 * (round-trips a float32). */
static void format_costs(double ns[4])
{
    char buf[40];
    long n = 0;
    volatile size_t sink = 0;
    for (int way = 0; way < 4; way++) {
        double t0 = now_s();
        n = 0;
        for (int rep = 0; rep < 20; rep++)
            for (int i = 0; i < NBODIES; i++)
                for (int q = 0; q < QTY_MAX; q++) {
                    double v = tmpl[i].values[q];
                    if (!(tmpl[i].present & (1u << q)))
                        continue;
                    if (way == 0)
                        sink += (size_t)wire_format_double(v, buf, sizeof(buf));
                    else if (way == 1)
                        sink += (size_t)wire_format_double_slow(v, buf, sizeof(buf));
                    else
                        sink += (size_t)snprintf(buf, sizeof(buf), way == 2 ? "%.17g" : "%.9g", v);
                    n++;
                }
        ns[way] = (now_s() - t0) * 1e9 / (double)(n ? n : 1);
    }
    (void)sink;
}

static double run_sqlite_c(const char *path, char **bodies, long count, int batch)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    double t0, t1;

    unlink_db(path);
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE q(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL,"
                     " body TEXT NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO q(seq, ts, body) VALUES (?1, ?2, ?3)", -1, &s, NULL) !=
            SQLITE_OK) {
        fprintf(errf, "queue_bench: sqlite: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    t0 = now_s();
    for (long i = 0; i < count; i += batch) {
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        for (long j = i; j < i + batch && j < count; j++) {
            sqlite3_bind_int64(s, 1, j + 1);
            sqlite3_bind_int64(s, 2, 1700000000000 + j * 1000);
            sqlite3_bind_text(s, 3, bodies[j % NBODIES], -1, SQLITE_STATIC);
            if (sqlite3_step(s) != SQLITE_DONE) {
                fprintf(errf, "queue_bench: sqlite insert: %s\n", sqlite3_errmsg(db));
                exit(1);
            }
            sqlite3_reset(s);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            fprintf(errf, "queue_bench: sqlite commit: %s\n", sqlite3_errmsg(db));
            exit(1);
        }
    }
    t1 = now_s();
    sqlite3_finalize(s);
    sqlite3_close(db);
    unlink_db(path);
    return (double)count / (t1 - t0);
}

/* Runs the Python script; returns readings/s, or 0 when Python is not there. */
static double run_python(const char *path, const char *bodies, long count, int batch)
{
    char cnt[24], bat[24], out[64] = "";
    int pfd[2], status;
    pid_t pid;
    ssize_t n, got = 0;

    unlink_db(path);
    snprintf(cnt, sizeof(cnt), "%ld", count);
    snprintf(bat, sizeof(bat), "%d", batch);
    if (pipe(pfd) < 0)
        die("pipe", errno);
    pid = fork();
    if (pid < 0)
        die("fork", errno);
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execl(PYTHON, PYTHON, "-c", py_script, path, bodies, cnt, bat, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    while ((n = read(pfd[0], out + got, sizeof(out) - 1 - (size_t)got)) > 0)
        got += n;
    out[got] = '\0';
    close(pfd[0]);
    waitpid(pid, &status, 0);
    unlink_db(path);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || atof(out) <= 0)
        return 0;
    return (double)count / atof(out);
}

/* ---- statistics and output ----------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double s[MAX_ROUNDS];
    memcpy(s, v, sizeof(*v) * (size_t)n);
    qsort(s, (size_t)n, sizeof(*s), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static void fmt_rate(double v, char *buf, size_t len)
{
    if (v <= 0)
        snprintf(buf, len, "n/a");
    else if (v >= 1e6)
        snprintf(buf, len, "%.2fM", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, len, "%.0fk", v / 1e3);
    else
        snprintf(buf, len, "%.0f", v);
}

enum { C_DURABLE, C_MEMORY, C_PYTHON, C_SQLITE, C_N };
static const char *const case_name[C_N] = {"queue durable", "queue memory-first",
                                           "python3 sqlite3 executemany", "sqlite3 C"};

static int prefill(const struct opts *op)
{
    struct queue_opts o;
    struct queue_stats st;
    struct reading *r = calloc((size_t)op->batch, sizeof(*r));
    queue_t *q;
    long per_meter = (op->count + op->meters - 1) / op->meters;
    int64_t ts0 = now_ms() - per_meter * 10000 - 60000; /* in the past, 10 s apart */
    double t0 = now_s();
    long done = 0;
    int rc;

    if (!r)
        die("calloc", ENOMEM);
    queue_default_opts(&o);
    o.max_rows = op->count * 2 > 1000000 ? op->count * 2 : 1000000;
    if ((rc = queue_open(op->prefill, &o, &q)) < 0)
        die("queue_open", rc);
    while (done < op->count) {
        int n = op->count - done < op->batch ? (int)(op->count - done) : op->batch;
        for (int i = 0; i < n; i++) {
            long k = done + i;
            make_reading(&r[i], (int)(k % op->meters), (int)(k / op->meters), op->values,
                         ts0 + (k / op->meters) * 10000);
        }
        if ((rc = queue_append(q, r, n)) < 0)
            die("queue_append", rc);
        done += n;
    }
    queue_get_stats(q, &st);
    printf("stream %s\nreadings %ld\nnext_seq %llu\nseconds %.2f\n", queue_stream(q), done,
           (unsigned long long)st.next_seq, now_s() - t0);
    queue_close(q);
    free(r);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: queue_bench [--dir DIR] [--rounds N] [--values N] [--scale X] [--no-python]\n"
            "       queue_bench --prefill PATH [--count N] [--meters N] [--values N] [--batch N]\n"
            "  --dir DIR      where the benchmark files go (default /tmp)\n"
            "  --rounds N     rounds of every case; the median is reported (default 5)\n"
            "  --values N     values per reading, 1..16 (default 16, an SDM630's)\n"
            "  --scale X      multiply the reading counts (default 1)\n"
            "  --no-python    skip the python3 sqlite3 comparison\n"
            "  --prefill PATH write a durable queue file of --count readings (default 1000000)\n"
            "                 of --meters meters (default 32), --batch per append (1000)\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"rounds", required_argument, NULL, 'r'},
        {"values", required_argument, NULL, 'v'},
        {"scale", required_argument, NULL, 's'},
        {"no-python", no_argument, NULL, 'P'},
        {"prefill", required_argument, NULL, 'p'},
        {"count", required_argument, NULL, 'c'},
        {"meters", required_argument, NULL, 'm'},
        {"batch", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct opts op = {.dir = "/tmp",
                      .rounds = 5,
                      .values = 16,
                      .meters = 32,
                      .python = 1,
                      .scale = 1.0,
                      .count = 1000000,
                      .batch = 1000};
    static const int batches[] = {1000, 100, 1};
    enum { NB = 3 };
    double res[NB][C_N][MAX_ROUNDS], med[NB][C_N], enc[MAX_ROUNDS], pk[MAX_ROUNDS],
        fetch[MAX_ROUNDS];
    uint64_t pages[NB][2];
    char path[512], bodies_path[512], *bodies[NBODIES];
    long counts[NB][C_N];
    FILE *bf;
    int ch;

    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'd':
            op.dir = optarg;
            break;
        case 'r':
            op.rounds = (int)strtol(optarg, &end, 10);
            if (*end || op.rounds < 1 || op.rounds > MAX_ROUNDS) {
                fprintf(stderr, "queue_bench: --rounds: 1..%d\n", MAX_ROUNDS);
                return 2;
            }
            break;
        case 'v':
            op.values = (int)strtol(optarg, &end, 10);
            if (*end || op.values < 1 || op.values > 16) {
                fprintf(stderr, "queue_bench: --values: 1..16\n");
                return 2;
            }
            break;
        case 's':
            op.scale = strtod(optarg, &end);
            if (*end || !(op.scale > 0 && op.scale <= 100)) {
                fprintf(stderr, "queue_bench: --scale: a number in (0, 100]\n");
                return 2;
            }
            break;
        case 'P':
            op.python = 0;
            break;
        case 'p':
            op.prefill = optarg;
            break;
        case 'c':
            op.count = strtol(optarg, &end, 10);
            if (*end || op.count < 1 || op.count > 100000000) {
                fprintf(stderr, "queue_bench: --count: 1..100000000\n");
                return 2;
            }
            break;
        case 'm':
            op.meters = (int)strtol(optarg, &end, 10);
            if (*end || op.meters < 1 || op.meters > 100) {
                fprintf(stderr, "queue_bench: --meters: 1..100\n");
                return 2;
            }
            break;
        case 'b':
            op.batch = (int)strtol(optarg, &end, 10);
            if (*end || op.batch < 1 || op.batch > 100000) {
                fprintf(stderr, "queue_bench: --batch: 1..100000\n");
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (op.prefill)
        return prefill(&op);
    {
        int saved = dup(2), null = open("/dev/null", O_WRONLY);
        if (saved < 0 || null < 0 || !(errf = fdopen(saved, "w")))
            die("/dev/null", errno);
        setvbuf(errf, NULL, _IOLBF, 0);
        dup2(null, 2);
        close(null);
    }

    /* the bodies the queue would store, for the two SQLite cases */
    snprintf(bodies_path, sizeof(bodies_path), "%s/queue_bench-%d.bodies", op.dir, (int)getpid());
    if (!(bf = fopen(bodies_path, "w")))
        die(bodies_path, errno);
    {
        size_t total = 0;
        for (int i = 0; i < NBODIES; i++) {
            struct reading r;
            char buf[WIRE_READING_MAX];
            int len;
            make_reading(&tmpl[i], i % op.meters, i / op.meters, op.values,
                         1700000000000 + (i / op.meters) * 10000);
            r = tmpl[i];
            r.seq = (uint64_t)i + 1;
            len = wire_encode_reading(&r, buf, sizeof(buf));
            if (len < 0)
                die("wire_encode_reading", len);
            bodies[i] = strdup(buf);
            total += (size_t)len;
            fprintf(bf, "%s\n", buf);
        }
        fclose(bf);
        printf("queue_bench: %s (%s), %d values per reading, %.0f bytes per encoded reading, "
               "SQLite %s, %d rounds\n",
               op.dir, fs_name(op.dir), op.values, (double)total / NBODIES, sqlite3_libversion(),
               op.rounds);
    }
    snprintf(path, sizeof(path), "%s/queue_bench-%d.db", op.dir, (int)getpid());

    /* Readings per case: durable with one reading per call is one fsync per reading. */
    for (int b = 0; b < NB; b++) {
        long big = (long)(100000 * op.scale), one = (long)(1000 * op.scale);
        counts[b][C_DURABLE] = batches[b] == 1 ? one : batches[b] == 100 ? big / 2 : big;
        counts[b][C_MEMORY] = batches[b] == 1 ? big / 4 : big;
        counts[b][C_PYTHON] = counts[b][C_DURABLE];
        counts[b][C_SQLITE] = counts[b][C_DURABLE];
    }
    for (int r = 0; r < op.rounds; r++) {
        for (int b = 0; b < NB; b++) {
            for (int c = 0; c < C_N; c++) {
                long n = counts[b][c];
                switch (c) {
                case C_DURABLE:
                case C_MEMORY:
                    res[b][c][r] = run_queue(path, c == C_MEMORY, n, batches[b], &pages[b][c]);
                    break;
                case C_PYTHON:
                    res[b][c][r] = op.python ? run_python(path, bodies_path, n, batches[b]) : 0;
                    break;
                case C_SQLITE:
                    res[b][c][r] = run_sqlite_c(path, bodies, n, batches[b]);
                    break;
                }
            }
        }
        enc[r] = encode_us((long)(100000 * op.scale));
        pk[r] = pack_us((long)(100000 * op.scale));
        fetch[r] = run_fetch(path, (long)(100000 * op.scale));
        fprintf(errf, "queue_bench: round %d of %d done\n", r + 1, op.rounds);
    }
    for (int b = 0; b < NB; b++)
        for (int c = 0; c < C_N; c++)
            med[b][c] = median(res[b][c], op.rounds);

    printf("\n| readings per call | case | readings | readings/s (median) | min | max |"
           " vs python3 | vs sqlite3 C | vs target 300k |\n");
    printf("|--:|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for (int b = 0; b < NB; b++) {
        for (int c = 0; c < C_N; c++) {
            char m[16], lo[16], hi[16], vp[16] = "", vs[16] = "", vt[16] = "";
            double mn = res[b][c][0], mx = res[b][c][0];
            for (int r = 1; r < op.rounds; r++) {
                mn = res[b][c][r] < mn ? res[b][c][r] : mn;
                mx = res[b][c][r] > mx ? res[b][c][r] : mx;
            }
            fmt_rate(med[b][c], m, sizeof(m));
            fmt_rate(mn, lo, sizeof(lo));
            fmt_rate(mx, hi, sizeof(hi));
            if (c != C_PYTHON && med[b][C_PYTHON] > 0)
                snprintf(vp, sizeof(vp), "%.2f", med[b][c] / med[b][C_PYTHON]);
            if (c != C_SQLITE && med[b][c] > 0)
                snprintf(vs, sizeof(vs), "%.2f", med[b][c] / med[b][C_SQLITE]);
            if (c == C_DURABLE || c == C_MEMORY)
                snprintf(vt, sizeof(vt), "%.2f", med[b][c] / TARGET_RPS);
            printf("| %d | %s | %ld | %s | %s | %s | %s | %s | %s |\n", batches[b], case_name[c],
                   counts[b][c], m, lo, hi, vp, vs, vt);
        }
    }
    printf("\nSQLite pages written by the queue (last round): ");
    for (int b = 0; b < NB; b++)
        printf("%s%d per call: durable %.3f, memory-first %.3f per reading", b ? "; " : "",
               batches[b], (double)pages[b][0] / (double)counts[b][C_DURABLE],
               (double)pages[b][1] / (double)counts[b][C_MEMORY]);
    printf("\n");
    {
        double e = median(enc, op.rounds), p = median(pk, op.rounds), d = 1e6 / med[0][C_DURABLE],
               f = median(fetch, op.rounds);
        printf("A batched durable append (1000 per call, medians): %.2f us per reading in all, "
               "of which wire_pack_reading %.2f us (%.0f%%)\n",
               d, p, 100 * p / d);
        printf("Fetching wire batches (5000 readings / 1 MiB): %.0f readings/s, %.2f us per "
               "reading, of which wire_encode_reading %.2f us\n",
               f, 1e6 / f, e);
    }
    {
        double ns[4];
        format_costs(ns);
        printf("Printing one value: wire_format_double %.0f ns, its printf/strtod reference "
               "%.0f ns, snprintf %%.17g %.0f ns, snprintf %%.9g %.0f ns\n",
               ns[0], ns[1], ns[2], ns[3]);
    }
    unlink(bodies_path);
    for (int i = 0; i < NBODIES; i++)
        free(bodies[i]);
    return 0;
}
