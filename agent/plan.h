/*
 * plan: read planning. Turns the registers a profile needs into the fewest Modbus read
 * requests the meter accepts, and among those the plan that reads the fewest registers.
 * Pure: no I/O, no allocation.
 *
 * The rules, per function code (requests never mix function codes):
 *   - a request reads at most min(max_read, 125) registers;
 *   - a value is never split across requests; values that share a register (duplicates,
 *     overlaps) are read by the same request;
 *   - the unused registers between two neighbouring values of a request number at most
 *     max_gap;
 *   - a register marked "alone" is read by a request that reads nothing else;
 *   - when the profile has runs for the function code, every request stays inside one run.
 * Requests start at the first register of a value and end at the last register of one, so
 * a read never starts or ends inside a value the profile names.
 *
 * Optimality: a request reads a consecutive stretch of the values sorted by address, and
 * every rule above holds for any sub-stretch of a stretch it holds for. plan_reads finds a
 * partition into stretches with the fewest requests, then the fewest registers read, by
 * dynamic programming over the sorted values (O(n^2), n <= PROFILE_MAX_REGS). (Because the
 * rules are closed under sub-stretches, a greedy left-to-right merge would also reach the
 * fewest requests, but it can read more registers than needed: with max_read 10, max_gap
 * 8 and two-register values at 0, 8 and 10 it reads 0..9 and 10..11 where 0..1 and 8..11
 * suffice.)
 */
#ifndef MLK_AGENT_PLAN_H
#define MLK_AGENT_PLAN_H

#include "profile.h"

#define PLAN_MODBUS_MAX_READ 125 /* registers in one FC03/FC04 reply (Modbus limit) */

struct read_req {
    uint8_t fc;
    uint16_t addr;
    uint16_t count;
};

/* Fills out[0..max-1] with the requests in (function code, address) order; returns their
 * number, -ENOSPC when max is too small (PROFILE_MAX_REGS entries always suffice), or
 * -EINVAL when the profile cannot be planned: max_read < 1, a register outside every run
 * of its function code, or overlapping values wider together than max_read (profile_parse
 * refuses the first two; hand-built profiles may not). */
int plan_reads(const struct profile *p, struct read_req *out, int max);

struct plan_stats {
    int values;    /* registers entries in the profile (one request each if read singly) */
    int requests;  /* requests per poll with plan_reads */
    int registers; /* registers those requests read */
    int used;      /* registers that carry a value (each counted once) */
    int wasted;    /* registers - used: gap registers read and thrown away */
};

/* Plans p and fills *st; returns 0 or plan_reads' negative error. */
int plan_stats(const struct profile *p, struct plan_stats *st);

#endif
