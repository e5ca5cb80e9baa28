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

#define PROFILE_MAX_REGS 64
#define PROFILE_NAME_MAX 64

struct prof_reg {
    int qty;          /* index into the quantities table */
    uint16_t addr;    /* protocol (0-based) address of the first register */
    uint8_t fc;       /* 3 (holding) or 4 (input) */
    uint8_t type;     /* enum reg_type */
    uint8_t order;    /* enum reg_order */
    double scale;     /* value = raw * scale */
};

struct profile {
    char model[PROFILE_NAME_MAX]; /* short id used in configs: "sdm630" */
    char name[PROFILE_NAME_MAX];  /* human name: "Eastron SDM630 v2" */
    int max_read;                 /* most registers one request may read (1..125) */
    int max_gap;                  /* most unused registers a merged read may span */
    int nregs;
    struct prof_reg regs[PROFILE_MAX_REGS];
};

/* Registers a value of this type occupies (1, 2 or 4). */
int reg_words(enum reg_type t);
const char *reg_type_name(enum reg_type t);
int reg_type_parse(const char *s); /* enum value or -1 */
int reg_order_parse(const char *s);

/* Decode words[0 .. reg_words(r->type)-1] into *out (raw * scale).
 * Returns 0, or -EDOM when the raw value is not a finite number. */
int reg_decode(const struct prof_reg *r, const uint16_t *words, double *out);

/* Encode v (in the quantity's unit) into words[0 .. reg_words(r->type)-1]: divide by the
 * scale, round to the nearest integer for integer types, clamp to the type's range.
 * Returns 0, -ERANGE if v had to be clamped, or -EDOM (words untouched) when v is NaN. */
int reg_encode(const struct prof_reg *r, double v, uint16_t *words);

/* Parse one profile from JSON text. origin names the source in error messages. */
int profile_parse(const char *json, size_t len, const char *origin, struct profile *out,
                  char *err, size_t errlen);
int profile_load_file(const char *path, struct profile *out, char *err, size_t errlen);

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
