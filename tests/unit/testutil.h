/*
 * testutil: assertions the cmocka 1.1.5 set lacks, for the unit tests only. cmocka's own
 * assert_float_equal converts to float and assert_int_equal prints in hex; these compare
 * doubles exactly (or within an epsilon) and print both values in decimal, with an optional
 * context string naming the table row being checked.
 *
 * Include after <cmocka.h>.
 */
#ifndef MLK_TESTUTIL_H
#define MLK_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline void mlk_check_i64(const char *ctx, const char *expr, long long got, long long want,
                                 const char *file, int line)
{
    if (got == want)
        return;
    print_error("%s%s%s: got %lld, want %lld\n", ctx ? ctx : "", ctx ? ": " : "", expr, got, want);
    _fail(file, line);
}

static inline void mlk_check_u64(const char *ctx, const char *expr, unsigned long long got,
                                 unsigned long long want, const char *file, int line)
{
    if (got == want)
        return;
    print_error("%s%s%s: got %llu (0x%llx), want %llu (0x%llx)\n", ctx ? ctx : "", ctx ? ": " : "",
                expr, got, got, want, want);
    _fail(file, line);
}

/* eps 0 asks for exact equality (NaN never equals anything). */
static inline void mlk_check_double(const char *ctx, const char *expr, double got, double want,
                                    double eps, const char *file, int line)
{
    if (eps == 0 ? got == want : fabs(got - want) <= eps)
        return;
    print_error("%s%s%s: got %.17g, want %.17g (within %g)\n", ctx ? ctx : "", ctx ? ": " : "",
                expr, got, want, eps);
    _fail(file, line);
}

static inline void mlk_check_contains(const char *ctx, const char *expr, const char *got,
                                      const char *want, const char *file, int line)
{
    if (got && want && strstr(got, want))
        return;
    print_error("%s%s%s: \"%s\" does not contain \"%s\"\n", ctx ? ctx : "", ctx ? ": " : "", expr,
                got ? got : "(null)", want ? want : "(null)");
    _fail(file, line);
}

#define assert_i64_eq(got, want) mlk_check_i64(NULL, #got, (got), (want), __FILE__, __LINE__)
#define assert_i64_eq_ctx(ctx, got, want)                                                          \
    mlk_check_i64((ctx), #got, (got), (want), __FILE__, __LINE__)
#define assert_u64_eq(got, want) mlk_check_u64(NULL, #got, (got), (want), __FILE__, __LINE__)
#define assert_u64_eq_ctx(ctx, got, want)                                                          \
    mlk_check_u64((ctx), #got, (got), (want), __FILE__, __LINE__)
#define assert_double_eq(got, want)                                                                \
    mlk_check_double(NULL, #got, (got), (want), 0, __FILE__, __LINE__)
#define assert_double_eq_ctx(ctx, got, want)                                                       \
    mlk_check_double((ctx), #got, (got), (want), 0, __FILE__, __LINE__)
#define assert_double_near_ctx(ctx, got, want, eps)                                                \
    mlk_check_double((ctx), #got, (got), (want), (eps), __FILE__, __LINE__)
#define assert_contains(got, want) mlk_check_contains(NULL, #got, (got), (want), __FILE__, __LINE__)
#define assert_contains_ctx(ctx, got, want)                                                        \
    mlk_check_contains((ctx), #got, (got), (want), __FILE__, __LINE__)

#endif
