/*
 * plan: read planning. Turns the registers a profile needs into the fewest Modbus read
 * requests the meter accepts: registers of one function code, sorted by address, are merged
 * while the merged span stays within the profile's max_read and the unused registers
 * between two values stay within max_gap. A value is never split across requests.
 * Pure: no I/O, no allocation.
 */
#ifndef MLK_AGENT_PLAN_H
#define MLK_AGENT_PLAN_H

#include "profile.h"

struct read_req {
    uint8_t fc;
    uint16_t addr;
    uint16_t count;
};

/* Fills out[0..max-1]; returns the number of requests, or -ENOSPC when max is too small.
 * PROFILE_MAX_REGS entries always suffice. */
int plan_reads(const struct profile *p, struct read_req *out, int max);

#endif
