/* plan: see plan.h. */
#include "plan.h"

#include <errno.h>
#include <stdlib.h>

static int by_fc_addr(const void *a, const void *b)
{
    const struct prof_reg *x = *(const struct prof_reg *const *)a;
    const struct prof_reg *y = *(const struct prof_reg *const *)b;
    if (x->fc != y->fc)
        return x->fc - y->fc;
    return (int)x->addr - (int)y->addr;
}

int plan_reads(const struct profile *p, struct read_req *out, int max)
{
    const struct prof_reg *sorted[PROFILE_MAX_REGS];
    int n = 0;

    for (int i = 0; i < p->nregs; i++)
        sorted[i] = &p->regs[i];
    qsort(sorted, (size_t)p->nregs, sizeof(sorted[0]), by_fc_addr);

    for (int i = 0; i < p->nregs; i++) {
        const struct prof_reg *r = sorted[i];
        long start = r->addr, end = (long)r->addr + reg_words((enum reg_type)r->type);

        if (n > 0) {
            struct read_req *cur = &out[n - 1];
            long cur_end = (long)cur->addr + cur->count;
            long new_end = end > cur_end ? end : cur_end;
            if (cur->fc == r->fc && start - cur_end <= p->max_gap &&
                new_end - cur->addr <= p->max_read) {
                cur->count = (uint16_t)(new_end - cur->addr);
                continue;
            }
        }
        if (n == max)
            return -ENOSPC;
        out[n].fc = r->fc;
        out[n].addr = (uint16_t)start;
        out[n].count = (uint16_t)(end - start);
        n++;
    }
    return n;
}
