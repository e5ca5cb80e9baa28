/*
 * profile: meter models as data. A profile (agent/profiles/<model>.json) lists the
 * registers that carry each canonical quantity, with function code, type, word and byte
 * order and scale. The agent decodes register words into values with it; meter-sim
 * encodes values into register words with the same table, so both sides agree by
 * construction.
 *
 * Errors: functions return 0 on success or a negative errno value; loaders also write a
 * human-readable reason ("sdm630.json: registers[3].type: \"f33\" is not a type") into
 * the caller's buffer.
 */
#ifndef MLK_PROFILE_H
#define MLK_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum reg_type { RT_U16, RT_I16, RT_U32, RT_I32, RT_U64, RT_I64, RT_F32, RT_F64 };

/* Word and byte order of multi-register values, named by where bytes A (most significant)
 * .. D land: ABCD big-endian, CDAB low word first, BADC bytes swapped in each word,
 * DCBA little-endian. */
enum reg_order { RO_ABCD, RO_CDAB, RO_BADC, RO_DCBA };

/* Optional multiplier a meter supplies for a register (CT/PT meters such as the Chint
 * DTSU666, whose registers are on the secondary side of the transformers). */
enum reg_mult { RM_NONE, RM_CT, RM_PT, RM_CTPT };

#define PROFILE_MAX_REGS 64
#define PROFILE_NAME_MAX 64
#define PROFILE_MAX_RUNS 16
#define PROFILE_MAX_PROBES 4
#define PROF_REG_MAX_INVALID 4

/* A raw bit pattern meaning "not available": the value's bits (most significant word
 * first, after word and byte order are undone, as wide as the type) match when
 * (bits & mask) == value. A plain sentinel has every bit of the type in mask. */
struct prof_invalid {
    uint64_t mask;
    uint64_t value;
};

struct prof_reg {
    int qty;          /* index into the quantities table (-1 in a probe) */
    uint16_t addr;    /* protocol (0-based) address of the first register */
    uint8_t fc;       /* 3 (holding) or 4 (input) */
    uint8_t type;     /* enum reg_type */
    uint8_t order;    /* enum reg_order */
    double scale;     /* value = raw * scale */
    bool alone;       /* the planner reads it in a request of its own */
    uint8_t multiply; /* enum reg_mult: which per-meter ratio the caller applies */
    uint8_t ninvalid;
    struct prof_invalid invalid[PROF_REG_MAX_INVALID];
};

/* Registers [start, end] (inclusive) of function code fc that a read may span; fc 0 applies
 * to both function codes. When a profile has runs for a function code, every register of
 * that function code lies inside one run and the planner keeps each read inside one. */
struct prof_run {
    uint8_t fc;
    uint16_t start;
    uint16_t end;
};

/* An identification probe for a bus scan: read reg.fc/reg.addr (reg_words(reg.type)
 * registers), decode with reg (reg.qty is -1), and accept min <= value <= max. A profile
 * matches when all its probes do; a profile without probes cannot be identified. */
struct prof_probe {
    struct prof_reg reg;
    double min;
    double max;
};

struct profile {
    char model[PROFILE_NAME_MAX]; /* short id used in configs: "sdm630" */
    char name[PROFILE_NAME_MAX];  /* human name: "Eastron SDM630 v2" */
    int max_read;                 /* most registers one request may read (1..125) */
    int max_gap;                  /* most unused registers a merged read may span */
    int nregs;
    struct prof_reg regs[PROFILE_MAX_REGS];
    int nruns; /* 0: reads may span any address */
    struct prof_run runs[PROFILE_MAX_RUNS];
    int nprobes;
    struct prof_probe probes[PROFILE_MAX_PROBES];
};

/* Registers a value of this type occupies (1, 2 or 4). */
int reg_words(enum reg_type t);
const char *reg_type_name(enum reg_type t);
int reg_type_parse(const char *s); /* enum value or -1 */
int reg_order_parse(const char *s);

/* Decode words[0 .. reg_words(r->type)-1] into *out (raw * scale).
 * Returns 0; -ENODATA (*out untouched) when the raw bits match one of r->invalid (the meter
 * says "not available": leave the quantity out); -EDOM when the raw value is not a finite
 * number. The per-meter multiplier (reg_multiplier) is not applied. */
int reg_decode(const struct prof_reg *r, const uint16_t *words, double *out);

/* The factor a decoded value of r is multiplied by for a meter whose current and voltage
 * transformer ratios are ct and pt (1 and 1 when directly connected): 1, ct, pt or ct * pt,
 * as r->multiply says. The primary-side value is reg_decode's value * reg_multiplier. */
double reg_multiplier(const struct prof_reg *r, double ct, double pt);
const char *reg_mult_name(enum reg_mult m); /* "none", "ct", "pt", "ct*pt" */

/* Checks a probe against the words read at its address: decodes them (into *value when
 * value is not NULL) and returns 1 when min <= value <= max, 0 when outside, or
 * reg_decode's negative error. */
int profile_probe_match(const struct prof_probe *pr, const uint16_t *words, double *value);

/* Encode v (in the quantity's unit) into words[0 .. reg_words(r->type)-1]: divide by the
 * scale, round to the nearest integer for integer types, clamp to the type's range.
 * Returns 0, -ERANGE if v had to be clamped, or -EDOM (words untouched) when v is NaN. */
int reg_encode(const struct prof_reg *r, double v, uint16_t *words);

/* Parse one profile from JSON text. origin names the source in error messages. Unknown
 * keys are errors; docs/configuration.md ("Meter profiles") describes every key. */
int profile_parse(const char *json, size_t len, const char *origin, struct profile *out, char *err,
                  size_t errlen);
int profile_load_file(const char *path, struct profile *out, char *err, size_t errlen);

/* Index into p->runs of the run holding registers [addr, addr + n) of function code fc;
 * -1 when p has no runs for fc (reads may go anywhere), -2 when it has but none holds them. */
int profile_run_find(const struct profile *p, int fc, long addr, long n);

/* A set of profiles loaded from a directory (every *.json in it). */
struct profile_set {
    int n;
    struct profile *items;
};

/* Loads every *.json in dir, in name order. Any broken file, a model defined twice or a
 * folder without profiles is an error (err says which and why) and leaves the set empty.
 * Free with profile_set_free(). */
int profile_set_load_dir(struct profile_set *set, const char *dir, char *err, size_t errlen);
void profile_set_free(struct profile_set *set);
const struct profile *profile_set_find(const struct profile_set *set, const char *model);

/* The profile directory compiled in (the source tree's agent/profiles, or the install
 * location), overridden by the MLK_PROFILES environment variable. */
const char *profile_default_dir(void);

#endif
