/*
 * seqset: a set of uint64 sequence numbers kept as sorted, merged, inclusive ranges.
 *
 * The cloud keeps one per gateway stream: the seqs it has counted (received or reported
 * lost). From it come the ack's "upto" (the end of the range holding 1) and its missing
 * ranges (what lies between 1 and the highest seq but is not in the set).
 *
 * Pure: no I/O, no locks, no logging. The ranges are public so that a store can write them
 * out row by row; only the functions below may change them, which keeps the invariant:
 * r[0..n) sorted by lo, lo <= hi, and r[i].hi + 1 < r[i+1].lo (neither overlapping nor
 * adjacent). Every value of uint64 is a valid seq, 0 and UINT64_MAX included.
 *
 * Errors: int functions return 0 or a negative errno (-EINVAL, -ENOMEM, -ENOSPC).
 */
#ifndef MLK_CLOUD_SEQSET_H
#define MLK_CLOUD_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct seq_range {
    uint64_t lo, hi; /* inclusive */
};

struct seqset {
    struct seq_range *r; /* n ranges, malloc'd; NULL when cap is 0 */
    size_t n, cap;
};

/* An empty set (no memory held); seqset_free() also leaves a set like this. */
void seqset_init(struct seqset *s);
void seqset_free(struct seqset *s);
void seqset_clear(struct seqset *s); /* empty, keeping the memory */

/* Makes dst a copy of src (dst's memory is reused). Returns 0 or -ENOMEM (dst then
 * unchanged). */
int seqset_copy(struct seqset *dst, const struct seqset *src);

/* Adds [lo, hi]. *added (may be NULL) is how many of its seqs were not yet in the set
 * (UINT64_MAX when that is 2^64: the whole range added to an empty set). Returns 0,
 * -EINVAL when lo > hi (set unchanged) or -ENOMEM (set unchanged). Adding above the
 * highest range, the usual case, takes constant time. */
int seqset_add(struct seqset *s, uint64_t lo, uint64_t hi, uint64_t *added);

bool seqset_contains(const struct seqset *s, uint64_t v);

/* How many seqs of [lo, hi] are in the set (0 when lo > hi; saturates at UINT64_MAX). */
uint64_t seqset_count_in(const struct seqset *s, uint64_t lo, uint64_t hi);

/* hi of the range that contains 1, or 0 when 1 is not in the set. */
uint64_t seqset_upto(const struct seqset *s);

/* The highest seq in the set, or 0 when it is empty. */
uint64_t seqset_max(const struct seqset *s);

/* The missing ranges: what [1, seqset_max()] holds that the set does not, ascending. They
 * all lie above seqset_upto(). Writes at most max of them to out (out may be NULL when max
 * is 0) and returns how many there are in all, which may be more than max. */
size_t seqset_missing(const struct seqset *s, struct seq_range *out, size_t max);

/* Writes ranges as JSON, "[[lo,hi],...]" ("[]" for none), NUL-terminated. Returns the
 * length written, or -ENOSPC when len is too small (44 bytes per range plus 3 suffice). */
int seq_ranges_format(const struct seq_range *r, size_t n, char *buf, size_t len);

/* The set as seq_ranges_format() writes it. */
int seqset_format(const struct seqset *s, char *buf, size_t len);

/* Replaces *s with the set written in text (len bytes) as seqset_format() writes it:
 * exactly "[" [ "[" lo "," hi "]" { "," ... } ] "]" with decimal numbers without sign or
 * leading zeros, lo <= hi, ascending and neither overlapping nor adjacent. Nothing else is
 * accepted, no white space either. Returns 0, -EINVAL (s is then empty) or -ENOMEM. */
int seqset_parse(struct seqset *s, const char *text, size_t len);

#endif
