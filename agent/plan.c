/* plan: see plan.h for the rules and why the result is optimal. */
#include "plan.h"

#include <errno.h>
#include <stdlib.h>

/* The unit the planner places: one value, or several that share registers. */
struct atom {
    uint8_t fc;
    long start, end; /* registers [start, end) */
    bool alone;
    int run; /* index into the profile's runs, or -1 when its function code has none */
};

static int by_fc_addr(const void *a, const void *b)
{
    const struct prof_reg *x = *(const struct prof_reg *const *)a;
    const struct prof_reg *y = *(const struct prof_reg *const *)b;
    if (x->fc != y->fc)
        return x->fc - y->fc;
    return (int)x->addr - (int)y->addr;
}

/* Sorted, non-overlapping atoms of p into a[]; returns their number or -EINVAL. */
static int make_atoms(const struct profile *p, int max_read, struct atom *a)
{
    const struct prof_reg *sorted[PROFILE_MAX_REGS];
    int n = 0;

    if (p->nregs < 0 || p->nregs > PROFILE_MAX_REGS)
        return -EINVAL;
    for (int i = 0; i < p->nregs; i++)
        sorted[i] = &p->regs[i];
    if (p->nregs > 1)
        qsort(sorted, (size_t)p->nregs, sizeof(sorted[0]), by_fc_addr);
    for (int i = 0; i < p->nregs; i++) {
        const struct prof_reg *r = sorted[i];
        int w = reg_words((enum reg_type)r->type);
        long start = r->addr, end = start + w;

        if (w == 0)
            return -EINVAL;
        if (n > 0 && a[n - 1].fc == r->fc && start < a[n - 1].end) {
            if (end > a[n - 1].end)
                a[n - 1].end = end;
            a[n - 1].alone = a[n - 1].alone || r->alone;
            continue;
        }
        a[n].fc = r->fc;
        a[n].start = start;
        a[n].end = end;
        a[n].alone = r->alone;
        n++;
    }
    for (int i = 0; i < n; i++) {
        if (a[i].end - a[i].start > max_read)
            return -EINVAL;
        a[i].run = profile_run_find(p, a[i].fc, a[i].start, a[i].end - a[i].start);
        if (a[i].run == -2)
            return -EINVAL;
    }
    return n;
}

int plan_reads(const struct profile *p, struct read_req *out, int max)
{
    struct atom a[PROFILE_MAX_REGS];
    /* For the first k atoms: the fewest requests, then registers, and where the last
     * request of that plan starts. */
    int reqs[PROFILE_MAX_REGS + 1], from[PROFILE_MAX_REGS + 1];
    long regs[PROFILE_MAX_REGS + 1];
    int max_read = p->max_read > PLAN_MODBUS_MAX_READ ? PLAN_MODBUS_MAX_READ : p->max_read;
    long max_gap = p->max_gap > 0 ? p->max_gap : 0;
    int n, k;

    if (max_read < 1)
        return -EINVAL;
    n = make_atoms(p, max_read, a);
    if (n < 0)
        return n;
    reqs[0] = 0;
    regs[0] = 0;
    for (int j = 0; j < n; j++) {
        bool alone = false;

        reqs[j + 1] = -1;
        /* Requests ending with atom j, starting at atom i = j, j-1, ...: once a rule fails
         * for i it fails for every smaller i too (the span only grows, the gap stays, an
         * alone atom stays inside, runs are intervals), so stop there. */
        for (int i = j; i >= 0; i--) {
            long span = a[j].end - a[i].start;
            int cr;
            long cg;

            if (a[i].fc != a[j].fc || span > max_read)
                break;
            if (i < j && (a[i + 1].start - a[i].end > max_gap || a[i].run != a[j].run))
                break;
            alone = alone || a[i].alone;
            if (i < j && alone)
                break;
            cr = reqs[i] + 1;
            cg = regs[i] + span;
            if (reqs[j + 1] < 0 || cr < reqs[j + 1] || (cr == reqs[j + 1] && cg < regs[j + 1])) {
                reqs[j + 1] = cr;
                regs[j + 1] = cg;
                from[j + 1] = i;
            }
        }
    }
    if (reqs[n] > max)
        return -ENOSPC;
    /* Walk the chosen requests back from the last atom. */
    k = n;
    for (int r = reqs[n] - 1; r >= 0; r--) {
        int i = from[k];
        out[r].fc = a[i].fc;
        out[r].addr = (uint16_t)a[i].start;
        out[r].count = (uint16_t)(a[k - 1].end - a[i].start);
        k = i;
    }
    return reqs[n];
}

int plan_stats(const struct profile *p, struct plan_stats *st)
{
    struct read_req plan[PROFILE_MAX_REGS];
    struct atom a[PROFILE_MAX_REGS];
    int n = plan_reads(p, plan, PROFILE_MAX_REGS), na;

    if (n < 0)
        return n;
    na = make_atoms(p, PLAN_MODBUS_MAX_READ, a);
    if (na < 0)
        return na;
    st->values = p->nregs;
    st->requests = n;
    st->registers = 0;
    st->used = 0;
    for (int i = 0; i < n; i++)
        st->registers += plan[i].count;
    for (int i = 0; i < na; i++)
        st->used += (int)(a[i].end - a[i].start);
    st->wasted = st->registers - st->used;
    return 0;
}
