/*
 * fuzz_profile: meter profiles (profile_parse). Profiles are files a user may write or
 * download, so the parser must refuse anything malformed with a message naming the file, and
 * a profile it accepts must hold every rule the poller, the read planner and the bus scan
 * rely on (profile.h): fields in range, no quantity mapped twice, every register inside a
 * run of its function code when the profile has runs, probes with min <= max.
 */
#include "fuzz.h"

#include "profile.h"
#include "quantities.h"

#include <math.h>
#include <string.h>

#define ORIGIN "fuzz.json"

/* What registers and probes share: where the value is and how it is read. */
static void check_loc(const char *what, int i, const struct prof_reg *r, int max_read)
{
    int words = reg_words((enum reg_type)r->type);

    FUZZ_CHECK(r->fc == 3 || r->fc == 4, "%s[%d].fc %d", what, i, r->fc);
    FUZZ_CHECK(r->type <= RT_F64 && words >= 1, "%s[%d].type %d", what, i, r->type);
    FUZZ_CHECK(r->order <= RO_DCBA, "%s[%d].order %d", what, i, r->order);
    FUZZ_CHECK(isfinite(r->scale) && r->scale != 0, "%s[%d].scale %g", what, i, r->scale);
    FUZZ_CHECK((long)r->addr + words <= 65536, "%s[%d] at %u, %d words", what, i, r->addr, words);
    FUZZ_CHECK(words <= max_read, "%s[%d]: %d words, max_read %d", what, i, words, max_read);
    FUZZ_CHECK(r->multiply <= RM_CTPT, "%s[%d].multiply %d", what, i, r->multiply);
    FUZZ_CHECK(r->ninvalid <= PROF_REG_MAX_INVALID, "%s[%d].ninvalid %d", what, i, r->ninvalid);
    /* docs/configuration.md: an invalid pattern is at most as wide as the type */
    for (int k = 0; k < r->ninvalid && words < 4; k++)
        FUZZ_CHECK((r->invalid[k].mask >> (16 * words)) == 0 &&
                       (r->invalid[k].value >> (16 * words)) == 0,
                   "%s[%d].invalid[%d]: mask %#llx value %#llx for a %d-bit type", what, i, k,
                   (unsigned long long)r->invalid[k].mask, (unsigned long long)r->invalid[k].value,
                   16 * words);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct profile p;
    char err[512] = "";
    int rc;

    rc = profile_parse((const char *)data, size, ORIGIN, &p, err, sizeof(err));
    if (rc < 0) {
        FUZZ_CHECK(strncmp(err, ORIGIN ": ", strlen(ORIGIN) + 2) == 0,
                   "rc %d, message \"%s\" does not name the origin", rc, err);
        return 0;
    }
    FUZZ_CHECK(rc == 0, "rc %d", rc);
    FUZZ_CHECK(p.model[0] && memchr(p.model, '\0', sizeof(p.model)), "model");
    FUZZ_CHECK(p.name[0] && memchr(p.name, '\0', sizeof(p.name)), "name");
    FUZZ_CHECK(p.max_read >= 1 && p.max_read <= 125, "max_read %d", p.max_read);
    FUZZ_CHECK(p.max_gap >= 0 && p.max_gap <= 124, "max_gap %d", p.max_gap);
    FUZZ_CHECK(p.nruns >= 0 && p.nruns <= PROFILE_MAX_RUNS, "nruns %d", p.nruns);
    for (int i = 0; i < p.nruns; i++) {
        const struct prof_run *a = &p.runs[i];
        FUZZ_CHECK((a->fc == 0 || a->fc == 3 || a->fc == 4) && a->start <= a->end,
                   "runs[%d]: fc %d [%u, %u]", i, a->fc, a->start, a->end);
        for (int j = 0; j < i; j++) {
            const struct prof_run *b = &p.runs[j];
            FUZZ_CHECK(a->fc != b->fc || a->end < b->start || b->end < a->start,
                       "runs [%u, %u] and [%u, %u] of fc %d overlap", b->start, b->end, a->start,
                       a->end, a->fc);
        }
    }
    FUZZ_CHECK(p.nprobes >= 0 && p.nprobes <= PROFILE_MAX_PROBES, "nprobes %d", p.nprobes);
    for (int i = 0; i < p.nprobes; i++) {
        const struct prof_probe *pr = &p.probes[i];
        check_loc("probe", i, &pr->reg, p.max_read);
        FUZZ_CHECK(pr->reg.qty == -1, "probe[%d].qty %d", i, pr->reg.qty);
        FUZZ_CHECK(isfinite(pr->min) && isfinite(pr->max) && pr->min <= pr->max,
                   "probe[%d]: min %g max %g", i, pr->min, pr->max);
    }
    FUZZ_CHECK(p.nregs >= 1 && p.nregs <= PROFILE_MAX_REGS, "nregs %d", p.nregs);
    for (int i = 0; i < p.nregs; i++) {
        const struct prof_reg *r = &p.regs[i];
        int words = reg_words((enum reg_type)r->type);

        check_loc("registers", i, r, p.max_read);
        FUZZ_CHECK(r->qty >= 0 && r->qty < qty_count(), "registers[%d].qty %d", i, r->qty);
        /* profile.h: with runs for its function code, a register lies inside one */
        FUZZ_CHECK(profile_run_find(&p, r->fc, r->addr, words) != -2,
                   "registers[%d] (fc %d, %u..%d) is in none of the %d runs", i, r->fc, r->addr,
                   r->addr + words - 1, p.nruns);
        for (int j = 0; j < i; j++)
            FUZZ_CHECK(p.regs[j].qty != r->qty, "registers[%d] and [%d] both map %s", j, i,
                       qty_at(r->qty)->name);
    }
    return 0;
}
