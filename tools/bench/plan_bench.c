/*
 * plan_bench: what read planning (agent/plan.h) saves per poll, for every profile in a
 * folder (default: the built-in profiles, or MLK_PROFILES). For each profile it prints the
 * requests and registers of one request per value (what mbmd does) against the planned
 * requests, and the RTU line time of both at 9600 baud 8N1. Line time counts the frames
 * and the 3.5-character silence after each, not the meter's turnaround, which comes on top
 * once per request (so it only widens the gap). Prints a Markdown table for
 * docs/benchmarks.md, then how fast the planner itself runs.
 *
 * Not a test: it never fails on the numbers, only on profiles that do not load or plan.
 */
#include "plan.h"
#include "profile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* RTU framing in character times: request 8 (unit, fc, addr 2, count 2, CRC 2); reply
 * 5 + 2 per register (unit, fc, byte count, data, CRC 2); a 3.5-character gap after each. */
#define REQ_CHARS 8.0
#define REPLY_CHARS 5.0
#define SILENCE_CHARS 3.5
#define CHAR_MS (10.0 * 1000.0 / 9600.0) /* 8N1: 10 bits per character at 9600 baud */

static double line_ms(int requests, int registers)
{
    double chars = requests * (REQ_CHARS + REPLY_CHARS + 2 * SILENCE_CHARS) + 2.0 * registers;
    return chars * CHAR_MS;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : profile_default_dir();
    struct profile_set set;
    char err[512];
    int total_req = 0, total_single = 0;
    double t0, t1;
    long rounds = 0;

    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: plan_bench [PROFILE_DIR]\n");
        return 2;
    }
    if (profile_set_load_dir(&set, dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "plan_bench: %s\n", err);
        return 1;
    }
    printf("| profile | requests, one per value | registers, one per value | "
           "requests, planned | registers, planned | of which gap | requests saved | "
           "line ms, one per value | line ms, planned | time ratio |\n");
    printf("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (int i = 0; i < set.n; i++) {
        const struct profile *p = &set.items[i];
        struct plan_stats st;
        int single_regs = 0, rc = plan_stats(p, &st);
        double ms_single, ms_plan;

        if (rc < 0) {
            fprintf(stderr, "plan_bench: %s: cannot plan: %s\n", p->model, strerror(-rc));
            profile_set_free(&set);
            return 1;
        }
        for (int r = 0; r < p->nregs; r++)
            single_regs += reg_words((enum reg_type)p->regs[r].type);
        ms_single = line_ms(st.values, single_regs);
        ms_plan = line_ms(st.requests, st.registers);
        total_req += st.requests;
        total_single += st.values;
        printf("| %s | %d | %d | %d | %d | %d | %.1fx | %.0f | %.0f | %.2f |\n", p->model,
               st.values, single_regs, st.requests, st.registers, st.wasted,
               (double)st.values / st.requests, ms_single, ms_plan, ms_plan / ms_single);
    }
    printf("| all %d profiles | %d | | %d | | | %.1fx | | | |\n", set.n, total_single, total_req,
           (double)total_single / total_req);

    /* The planner runs once per meter at start; this only shows it is cheap. */
    t0 = now_s();
    do {
        for (int i = 0; i < set.n; i++) {
            struct read_req plan[PROFILE_MAX_REGS];
            if (plan_reads(&set.items[i], plan, PROFILE_MAX_REGS) < 0)
                abort();
        }
        rounds++;
        t1 = now_s();
    } while (t1 - t0 < 0.2);
    printf("\nplan_reads: %.2f us per profile (%ld rounds over %d profiles in %.2f s)\n",
           (t1 - t0) * 1e6 / ((double)rounds * set.n), rounds, set.n, t1 - t0);
    profile_set_free(&set);
    return 0;
}
