/*
 * seqset: see seqset.h.
 *
 * The ranges live in one sorted array. Finding where a range goes is a binary search;
 * merging moves the tail of the array. Seqs arrive mostly in order, so the common add
 * extends or follows the last range and moves nothing. Arithmetic is written so that it
 * never wraps at 0 or UINT64_MAX: "hi + 1" and "lo - 1" only where they cannot overflow.
 */
#include "seqset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAP_MIN 8

void seqset_init(struct seqset *s)
{
    s->r = NULL;
    s->n = s->cap = 0;
}

void seqset_free(struct seqset *s)
{
    free(s->r);
    seqset_init(s);
}

void seqset_clear(struct seqset *s)
{
    s->n = 0;
}

/* Room for one more range. */
static int reserve_one(struct seqset *s)
{
    struct seq_range *g;
    size_t cap;

    if (s->n < s->cap)
        return 0;
    cap = s->cap ? s->cap * 2 : CAP_MIN;
    if (cap < s->cap || cap > SIZE_MAX / sizeof(*s->r))
        return -ENOMEM;
    g = realloc(s->r, cap * sizeof(*s->r));
    if (!g)
        return -ENOMEM;
    s->r = g;
    s->cap = cap;
    return 0;
}

int seqset_copy(struct seqset *dst, const struct seqset *src)
{
    struct seq_range *g;

    if (src->n > dst->cap) {
        if (src->n > SIZE_MAX / sizeof(*dst->r))
            return -ENOMEM;
        g = realloc(dst->r, src->n * sizeof(*dst->r));
        if (!g)
            return -ENOMEM;
        dst->r = g;
        dst->cap = src->n;
    }
    if (src->n)
        memcpy(dst->r, src->r, src->n * sizeof(*dst->r));
    dst->n = src->n;
    return 0;
}

/* Whether range x overlaps or touches [lo, ...) from the left: x.hi >= lo - 1. */
static bool reaches(const struct seq_range *x, uint64_t lo)
{
    return lo == 0 || x->hi >= lo - 1;
}

/* Whether range x lies wholly above hi with at least one seq between: x.lo > hi + 1. */
static bool beyond(const struct seq_range *x, uint64_t hi)
{
    return hi != UINT64_MAX && x->lo > hi + 1;
}

/* The first index in [from, n) whose range reaches lo (n when none). reaches() is false
 * then true along the array because the his are ascending. */
static size_t first_reaching(const struct seqset *s, size_t from, uint64_t lo)
{
    size_t a = from, b = s->n;

    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (reaches(&s->r[m], lo))
            b = m;
        else
            a = m + 1;
    }
    return a;
}

/* The first index in [from, n) whose range lies beyond hi (n when none). */
static size_t first_beyond(const struct seqset *s, size_t from, uint64_t hi)
{
    size_t a = from, b = s->n;

    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (beyond(&s->r[m], hi))
            b = m;
        else
            a = m + 1;
    }
    return a;
}

/* How many seqs of [lo, hi] (lo <= hi) ranges [i, j) hold, returned as "size of [lo, hi]
 * minus that": UINT64_MAX stands for 2^64 (nothing held of the whole range). */
static uint64_t not_held(const struct seqset *s, size_t i, size_t j, uint64_t lo, uint64_t hi)
{
    uint64_t rem = hi - lo; /* what is not held, minus 1 */
    bool none = false;      /* nothing is left: all of [lo, hi] is held */

    for (size_t k = i; k < j && !none; k++) {
        uint64_t a = s->r[k].lo > lo ? s->r[k].lo : lo;
        uint64_t b = s->r[k].hi < hi ? s->r[k].hi : hi;
        if (a > b)
            continue; /* only touching */
        if (b - a >= rem)
            none = true;
        else
            rem -= b - a + 1;
    }
    if (none)
        return 0;
    return rem == UINT64_MAX ? UINT64_MAX : rem + 1;
}

int seqset_add(struct seqset *s, uint64_t lo, uint64_t hi, uint64_t *added)
{
    size_t i, j;
    uint64_t nl, nh;

    if (added)
        *added = 0;
    if (lo > hi)
        return -EINVAL;
    /* fast path: above everything, not touching the last range */
    if (s->n == 0 || !reaches(&s->r[s->n - 1], lo)) {
        if (reserve_one(s) < 0)
            return -ENOMEM;
        s->r[s->n].lo = lo;
        s->r[s->n].hi = hi;
        s->n++;
        if (added)
            *added = hi - lo == UINT64_MAX ? UINT64_MAX : hi - lo + 1;
        return 0;
    }
    i = first_reaching(s, 0, lo);
    j = first_beyond(s, i, hi);
    /* [i, j) overlap or touch [lo, hi]: they and it become one range */
    if (i == j) {
        if (reserve_one(s) < 0)
            return -ENOMEM;
        memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(*s->r));
        s->r[i].lo = lo;
        s->r[i].hi = hi;
        s->n++;
        if (added)
            *added = hi - lo == UINT64_MAX ? UINT64_MAX : hi - lo + 1;
        return 0;
    }
    if (added)
        *added = not_held(s, i, j, lo, hi);
    nl = s->r[i].lo < lo ? s->r[i].lo : lo;
    nh = s->r[j - 1].hi > hi ? s->r[j - 1].hi : hi;
    s->r[i].lo = nl;
    s->r[i].hi = nh;
    if (j - i > 1) {
        memmove(&s->r[i + 1], &s->r[j], (s->n - j) * sizeof(*s->r));
        s->n -= j - i - 1;
    }
    return 0;
}

bool seqset_contains(const struct seqset *s, uint64_t v)
{
    size_t a = 0, b = s->n;

    while (a < b) { /* the first range with hi >= v */
        size_t m = a + (b - a) / 2;
        if (s->r[m].hi >= v)
            b = m;
        else
            a = m + 1;
    }
    return a < s->n && s->r[a].lo <= v;
}

uint64_t seqset_count_in(const struct seqset *s, uint64_t lo, uint64_t hi)
{
    uint64_t total = 0;
    size_t i;

    if (lo > hi)
        return 0;
    for (i = first_reaching(s, 0, lo); i < s->n && s->r[i].lo <= hi; i++) {
        uint64_t a = s->r[i].lo > lo ? s->r[i].lo : lo;
        uint64_t b = s->r[i].hi < hi ? s->r[i].hi : hi;
        uint64_t c;
        if (a > b)
            continue;
        c = b - a; /* size - 1 */
        if (c == UINT64_MAX || total > UINT64_MAX - c - 1)
            return UINT64_MAX;
        total += c + 1;
    }
    return total;
}

uint64_t seqset_upto(const struct seqset *s)
{
    /* ranges neither overlap nor touch, so only the first can hold 1 */
    if (s->n > 0 && s->r[0].lo <= 1 && s->r[0].hi >= 1)
        return s->r[0].hi;
    return 0;
}

uint64_t seqset_max(const struct seqset *s)
{
    return s->n ? s->r[s->n - 1].hi : 0;
}

size_t seqset_missing(const struct seqset *s, struct seq_range *out, size_t max)
{
    uint64_t next = 1; /* the lowest seq not yet accounted for */
    size_t cnt = 0;

    for (size_t k = 0; k < s->n; k++) {
        if (s->r[k].lo > next) {
            if (cnt < max) {
                out[cnt].lo = next;
                out[cnt].hi = s->r[k].lo - 1;
            }
            cnt++;
        }
        if (s->r[k].hi == UINT64_MAX)
            break;
        if (s->r[k].hi + 1 > next)
            next = s->r[k].hi + 1;
    }
    return cnt;
}

int seq_ranges_format(const struct seq_range *r, size_t n, char *buf, size_t len)
{
    size_t pos = 0;
    int w;

    if (len < 3)
        return -ENOSPC;
    buf[pos++] = '[';
    for (size_t k = 0; k < n; k++) {
        w = snprintf(buf + pos, len - pos, "%s[%llu,%llu]", k ? "," : "",
                     (unsigned long long)r[k].lo, (unsigned long long)r[k].hi);
        if (w < 0 || (size_t)w >= len - pos)
            return -ENOSPC;
        pos += (size_t)w;
    }
    if (len - pos < 2)
        return -ENOSPC;
    buf[pos++] = ']';
    buf[pos] = '\0';
    return (int)pos;
}

int seqset_format(const struct seqset *s, char *buf, size_t len)
{
    return seq_ranges_format(s->r, s->n, buf, len);
}

/* Reads a decimal uint64 at *p (before end): digits only, no leading zero unless it is
 * "0", no overflow. Advances *p. */
static int parse_u64(const char **p, const char *end, uint64_t *out)
{
    const char *q = *p;
    uint64_t v = 0;

    if (q >= end || *q < '0' || *q > '9')
        return -EINVAL;
    if (*q == '0' && q + 1 < end && q[1] >= '0' && q[1] <= '9')
        return -EINVAL;
    for (; q < end && *q >= '0' && *q <= '9'; q++) {
        unsigned d = (unsigned)(*q - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *p = q;
    *out = v;
    return 0;
}

static int expect(const char **p, const char *end, char c)
{
    if (*p >= end || **p != c)
        return -EINVAL;
    (*p)++;
    return 0;
}

int seqset_parse(struct seqset *s, const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    int rc = -EINVAL;

    seqset_clear(s);
    if (expect(&p, end, '[') < 0)
        goto fail;
    if (p < end && *p == ']') {
        p++;
        goto tail;
    }
    for (;;) {
        uint64_t lo, hi;
        if (expect(&p, end, '[') < 0 || parse_u64(&p, end, &lo) < 0 || expect(&p, end, ',') < 0 ||
            parse_u64(&p, end, &hi) < 0 || expect(&p, end, ']') < 0)
            goto fail;
        /* reversed, or not above the previous range with a seq between */
        if (lo > hi || (s->n && (s->r[s->n - 1].hi == UINT64_MAX || lo <= s->r[s->n - 1].hi + 1)))
            goto fail;
        if (reserve_one(s) < 0) {
            rc = -ENOMEM;
            goto fail;
        }
        s->r[s->n].lo = lo;
        s->r[s->n].hi = hi;
        s->n++;
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (expect(&p, end, ']') < 0)
            goto fail;
        break;
    }
tail:
    if (p != end)
        goto fail;
    return 0;
fail:
    seqset_clear(s);
    return rc;
}
