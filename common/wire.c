/* wire: see wire.h. */
#include "wire.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const reject_names[WR_COUNT] = {
    "not_object", "bad_seq", "bad_meter", "bad_ts", "bad_ok", "bad_values",
};

const char *wire_reject_name(enum wire_reject r)
{
    return (unsigned)r < WR_COUNT ? reject_names[r] : "?";
}

bool wire_id_valid(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= WIRE_ID_MAX - 1)
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return n > 0;
}

bool wire_stream_valid(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= WIRE_STREAM_MAX - 1 || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return n >= 8;
}

/* The reference formatter: glibc prints with 15, 16 and 17 significant digits and the first
 * that strtod reads back as v is the shortest. Exact, but 1-4 us per value. */
int wire_format_double_slow(double v, char *buf, size_t len)
{
    int n;

    if (!isfinite(v))
        return snprintf(buf, len, "null");
    if (v == floor(v) && fabs(v) < 1e15)
        return snprintf(buf, len, "%.0f", v);
    for (int prec = 15; prec < 17; prec++) {
        n = snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return n;
    }
    return snprintf(buf, len, "%.17g", v);
}

/*
 * Grisu3 (Florian Loitsch, "Printing Floating-Point Numbers Quickly and Accurately with
 * Integers", PLDI 2010): the shortest digits that read back as v, closest to v, computed
 * with 64-bit integers and a cached power of ten. For about 0.5% of doubles it cannot prove
 * that its digits are the shortest and closest; then it says so and the slow path is used.
 */
struct diyfp {
    uint64_t f;
    int e;
};

/* 10^p for p = -348, -340, ..., 340: 64-bit significand rounded to nearest, binary exponent
 * (generated with Python's exact integers: f = round(10^p / 2^e), 2^63 <= f < 2^64). */
static const struct diyfp cached_pow[87] = {
    {0xfa8fd5a0081c0288ull, -1220}, /* 1e-348 */
    {0xbaaee17fa23ebf76ull, -1193}, /* 1e-340 */
    {0x8b16fb203055ac76ull, -1166}, /* 1e-332 */
    {0xcf42894a5dce35eaull, -1140}, /* 1e-324 */
    {0x9a6bb0aa55653b2dull, -1113}, /* 1e-316 */
    {0xe61acf033d1a45dfull, -1087}, /* 1e-308 */
    {0xab70fe17c79ac6caull, -1060}, /* 1e-300 */
    {0xff77b1fcbebcdc4full, -1034}, /* 1e-292 */
    {0xbe5691ef416bd60cull, -1007}, /* 1e-284 */
    {0x8dd01fad907ffc3cull, -980},  /* 1e-276 */
    {0xd3515c2831559a83ull, -954},  /* 1e-268 */
    {0x9d71ac8fada6c9b5ull, -927},  /* 1e-260 */
    {0xea9c227723ee8bcbull, -901},  /* 1e-252 */
    {0xaecc49914078536dull, -874},  /* 1e-244 */
    {0x823c12795db6ce57ull, -847},  /* 1e-236 */
    {0xc21094364dfb5637ull, -821},  /* 1e-228 */
    {0x9096ea6f3848984full, -794},  /* 1e-220 */
    {0xd77485cb25823ac7ull, -768},  /* 1e-212 */
    {0xa086cfcd97bf97f4ull, -741},  /* 1e-204 */
    {0xef340a98172aace5ull, -715},  /* 1e-196 */
    {0xb23867fb2a35b28eull, -688},  /* 1e-188 */
    {0x84c8d4dfd2c63f3bull, -661},  /* 1e-180 */
    {0xc5dd44271ad3cdbaull, -635},  /* 1e-172 */
    {0x936b9fcebb25c996ull, -608},  /* 1e-164 */
    {0xdbac6c247d62a584ull, -582},  /* 1e-156 */
    {0xa3ab66580d5fdaf6ull, -555},  /* 1e-148 */
    {0xf3e2f893dec3f126ull, -529},  /* 1e-140 */
    {0xb5b5ada8aaff80b8ull, -502},  /* 1e-132 */
    {0x87625f056c7c4a8bull, -475},  /* 1e-124 */
    {0xc9bcff6034c13053ull, -449},  /* 1e-116 */
    {0x964e858c91ba2655ull, -422},  /* 1e-108 */
    {0xdff9772470297ebdull, -396},  /* 1e-100 */
    {0xa6dfbd9fb8e5b88full, -369},  /* 1e-92 */
    {0xf8a95fcf88747d94ull, -343},  /* 1e-84 */
    {0xb94470938fa89bcfull, -316},  /* 1e-76 */
    {0x8a08f0f8bf0f156bull, -289},  /* 1e-68 */
    {0xcdb02555653131b6ull, -263},  /* 1e-60 */
    {0x993fe2c6d07b7facull, -236},  /* 1e-52 */
    {0xe45c10c42a2b3b06ull, -210},  /* 1e-44 */
    {0xaa242499697392d3ull, -183},  /* 1e-36 */
    {0xfd87b5f28300ca0eull, -157},  /* 1e-28 */
    {0xbce5086492111aebull, -130},  /* 1e-20 */
    {0x8cbccc096f5088ccull, -103},  /* 1e-12 */
    {0xd1b71758e219652cull, -77},   /* 1e-4 */
    {0x9c40000000000000ull, -50},   /* 1e4 */
    {0xe8d4a51000000000ull, -24},   /* 1e12 */
    {0xad78ebc5ac620000ull, 3},     /* 1e20 */
    {0x813f3978f8940984ull, 30},    /* 1e28 */
    {0xc097ce7bc90715b3ull, 56},    /* 1e36 */
    {0x8f7e32ce7bea5c70ull, 83},    /* 1e44 */
    {0xd5d238a4abe98068ull, 109},   /* 1e52 */
    {0x9f4f2726179a2245ull, 136},   /* 1e60 */
    {0xed63a231d4c4fb27ull, 162},   /* 1e68 */
    {0xb0de65388cc8ada8ull, 189},   /* 1e76 */
    {0x83c7088e1aab65dbull, 216},   /* 1e84 */
    {0xc45d1df942711d9aull, 242},   /* 1e92 */
    {0x924d692ca61be758ull, 269},   /* 1e100 */
    {0xda01ee641a708deaull, 295},   /* 1e108 */
    {0xa26da3999aef774aull, 322},   /* 1e116 */
    {0xf209787bb47d6b85ull, 348},   /* 1e124 */
    {0xb454e4a179dd1877ull, 375},   /* 1e132 */
    {0x865b86925b9bc5c2ull, 402},   /* 1e140 */
    {0xc83553c5c8965d3dull, 428},   /* 1e148 */
    {0x952ab45cfa97a0b3ull, 455},   /* 1e156 */
    {0xde469fbd99a05fe3ull, 481},   /* 1e164 */
    {0xa59bc234db398c25ull, 508},   /* 1e172 */
    {0xf6c69a72a3989f5cull, 534},   /* 1e180 */
    {0xb7dcbf5354e9beceull, 561},   /* 1e188 */
    {0x88fcf317f22241e2ull, 588},   /* 1e196 */
    {0xcc20ce9bd35c78a5ull, 614},   /* 1e204 */
    {0x98165af37b2153dfull, 641},   /* 1e212 */
    {0xe2a0b5dc971f303aull, 667},   /* 1e220 */
    {0xa8d9d1535ce3b396ull, 694},   /* 1e228 */
    {0xfb9b7cd9a4a7443cull, 720},   /* 1e236 */
    {0xbb764c4ca7a44410ull, 747},   /* 1e244 */
    {0x8bab8eefb6409c1aull, 774},   /* 1e252 */
    {0xd01fef10a657842cull, 800},   /* 1e260 */
    {0x9b10a4e5e9913129ull, 827},   /* 1e268 */
    {0xe7109bfba19c0c9dull, 853},   /* 1e276 */
    {0xac2820d9623bf429ull, 880},   /* 1e284 */
    {0x80444b5e7aa7cf85ull, 907},   /* 1e292 */
    {0xbf21e44003acdd2dull, 933},   /* 1e300 */
    {0x8e679c2f5e44ff8full, 960},   /* 1e308 */
    {0xd433179d9c8cb841ull, 986},   /* 1e316 */
    {0x9e19db92b4e31ba9ull, 1013},  /* 1e324 */
    {0xeb96bf6ebadf77d9ull, 1039},  /* 1e332 */
    {0xaf87023b9bf0ee6bull, 1066},  /* 1e340 */
};
#define CACHED_POW_FIRST (-348)

static struct diyfp diy_mul(struct diyfp a, struct diyfp b)
{
    /* the high 64 bits of the 128-bit product, rounded (32-bit targets have no __int128) */
    const uint64_t m32 = 0xffffffffu;
    uint64_t ah = a.f >> 32, al = a.f & m32, bh = b.f >> 32, bl = b.f & m32;
    uint64_t hh = ah * bh, lh = al * bh, hl = ah * bl, ll = al * bl;
    uint64_t mid = (ll >> 32) + (hl & m32) + (lh & m32) + ((uint64_t)1 << 31);
    struct diyfp r = {hh + (hl >> 32) + (lh >> 32) + (mid >> 32), a.e + b.e + 64};
    return r;
}

static struct diyfp diy_normalize(struct diyfp x)
{
    int s = __builtin_clzll(x.f);
    x.f <<= s;
    x.e -= s;
    return x;
}

static bool round_weed(char *buf, int len, uint64_t dist_too_high_w, uint64_t unsafe, uint64_t rest,
                       uint64_t ten_kappa, uint64_t unit)
{
    uint64_t small_dist = dist_too_high_w - unit, big_dist = dist_too_high_w + unit;

    while (rest < small_dist && unsafe - rest >= ten_kappa &&
           (rest + ten_kappa < small_dist || small_dist - rest >= rest + ten_kappa - small_dist)) {
        buf[len - 1]--;
        rest += ten_kappa;
    }
    if (rest < big_dist && unsafe - rest >= ten_kappa &&
        (rest + ten_kappa < big_dist || big_dist - rest > rest + ten_kappa - big_dist))
        return false;
    return 2 * unit <= rest && rest <= unsafe - 4 * unit;
}

/* Digits of w between low and high (same exponent, -60 <= e <= -32). */
static bool digit_gen(struct diyfp low, struct diyfp w, struct diyfp high, char *buf, int *len,
                      int *kappa)
{
    uint64_t unit = 1;
    struct diyfp too_low = {low.f - unit, low.e}, too_high = {high.f + unit, high.e};
    uint64_t unsafe = too_high.f - too_low.f;
    int sh = -w.e;
    uint64_t one = (uint64_t)1 << sh;
    uint32_t integrals = (uint32_t)(too_high.f >> sh);
    uint64_t fractionals = too_high.f & (one - 1);
    uint32_t divisor = 1;

    *kappa = 0;
    if (integrals) {
        *kappa = 1;
        while (divisor <= integrals / 10) {
            divisor *= 10;
            (*kappa)++;
        }
    }
    *len = 0;
    while (*kappa > 0) {
        buf[(*len)++] = (char)('0' + integrals / divisor);
        integrals %= divisor;
        (*kappa)--;
        uint64_t rest = ((uint64_t)integrals << sh) + fractionals;
        if (rest < unsafe)
            return round_weed(buf, *len, too_high.f - w.f, unsafe, rest, (uint64_t)divisor << sh,
                              unit);
        divisor /= 10;
    }
    for (;;) {
        fractionals *= 10;
        unit *= 10;
        unsafe *= 10;
        buf[(*len)++] = (char)('0' + (fractionals >> sh));
        fractionals &= one - 1;
        (*kappa)--;
        if (*len > 17)
            return false;
        if (fractionals < unsafe)
            return round_weed(buf, *len, (too_high.f - w.f) * unit, unsafe, fractionals, one, unit);
    }
}

/* Shortest digits of v > 0 (finite): v = digits * 10^*dexp. false: not proven. */
static bool grisu3(double v, char *digits, int *len, int *dexp)
{
    uint64_t bits;
    struct diyfp w, mplus, mminus, c;
    int kappa, i;

    memcpy(&bits, &v, sizeof(bits));
    uint64_t sig = bits & (((uint64_t)1 << 52) - 1);
    int bexp = (int)((bits >> 52) & 0x7ff);
    if (bexp) {
        w.f = sig | ((uint64_t)1 << 52);
        w.e = bexp - 1075;
    } else {
        w.f = sig;
        w.e = -1074;
    }
    /* the boundaries halfway to the neighbours; the lower one is closer at a power of two */
    mplus = diy_normalize((struct diyfp){(w.f << 1) + 1, w.e - 1});
    if (sig == 0 && bexp > 1)
        mminus = (struct diyfp){(w.f << 2) - 1, w.e - 2};
    else
        mminus = (struct diyfp){(w.f << 1) - 1, w.e - 1};
    mminus.f <<= mminus.e - mplus.e;
    mminus.e = mplus.e;
    w = diy_normalize(w);
    /* a cached 10^p that brings the product's exponent into [-60, -32] */
    i = (int)(((-46 - w.e) * 0.30102999566398114 - CACHED_POW_FIRST) / 8);
    if (i < 0)
        i = 0;
    if (i > 86)
        i = 86;
    while (i < 86 && w.e + cached_pow[i].e + 64 < -60)
        i++;
    while (i > 0 && w.e + cached_pow[i].e + 64 > -32)
        i--;
    c = cached_pow[i];
    if (w.e + c.e + 64 < -60 || w.e + c.e + 64 > -32)
        return false;
    if (!digit_gen(diy_mul(mminus, c), diy_mul(w, c), diy_mul(mplus, c), digits, len, &kappa))
        return false;
    *dexp = kappa - (CACHED_POW_FIRST + 8 * i);
    return true;
}

/* Writes digits * 10^dexp (len digits, the first not 0) as printf's %.<prec>g would. */
static int put_g(char *out, bool neg, const char *d, int len, int dexp, int prec)
{
    int x = len - 1 + dexp, n = 0;

    if (neg)
        out[n++] = '-';
    if (x < -4 || x >= prec) {
        out[n++] = d[0];
        if (len > 1) {
            out[n++] = '.';
            memcpy(out + n, d + 1, (size_t)len - 1);
            n += len - 1;
        }
        int ax = x < 0 ? -x : x;
        out[n++] = 'e';
        out[n++] = x < 0 ? '-' : '+';
        if (ax >= 100)
            out[n++] = (char)('0' + ax / 100);
        out[n++] = (char)('0' + ax / 10 % 10);
        out[n++] = (char)('0' + ax % 10);
    } else if (x >= 0) {
        for (int k = 0; k <= x; k++)
            out[n++] = k < len ? d[k] : '0';
        if (len > x + 1) {
            out[n++] = '.';
            memcpy(out + n, d + x + 1, (size_t)(len - x - 1));
            n += len - x - 1;
        }
    } else {
        out[n++] = '0';
        out[n++] = '.';
        for (int k = 0; k < -x - 1; k++)
            out[n++] = '0';
        memcpy(out + n, d, (size_t)len);
        n += len;
    }
    out[n] = '\0';
    return n;
}

int wire_format_double(double v, char *buf, size_t len)
{
    char d[24];
    int nd, dexp;
    bool neg = signbit(v);
    double a = fabs(v);

    /* subnormals: the reference's 15 digits are more than the shortest; keep its text */
    if (len < 32 || !isfinite(v) || (a != 0 && a < DBL_MIN))
        return wire_format_double_slow(v, buf, len);
    if (a < 1e15 && a == floor(a)) {
        /* an integer: at most 15 digits */
        uint64_t u = (uint64_t)a;
        char t[24];
        int k = 0, n = 0;
        do {
            t[k++] = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (neg)
            buf[n++] = '-';
        while (k)
            buf[n++] = t[--k];
        buf[n] = '\0';
        return n;
    }
    if (!grisu3(a, d, &nd, &dexp))
        return wire_format_double_slow(v, buf, len);
    {
        /* A power of two has a lower neighbour twice as close: its shortest 16 digits may
         * be other than the nearest 16 (which do not read back), and then the reference
         * prints 17. Keep the reference's text. */
        uint64_t bits;
        memcpy(&bits, &a, sizeof(bits));
        if (nd >= 16 && (bits & (((uint64_t)1 << 52) - 1)) == 0)
            return wire_format_double_slow(v, buf, len);
    }
    while (nd > 1 && d[nd - 1] == '0') {
        nd--;
        dexp++;
    }
    return put_g(buf, neg, d, nd, dexp, nd <= 15 ? 15 : nd);
}

/* Appends formatted text to buf at *pos; returns -1 once it no longer fits. */
static int put(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int put(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*pos >= len)
        return -1;
    va_start(ap, fmt);
    n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len - *pos)
        return -1;
    *pos += (size_t)n;
    return 0;
}

/* Copies s keeping only characters that need no JSON escaping and are printable. */
static void safe_text(const char *s, char *out, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; s[i] && j + 1 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        out[j++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    out[j] = '\0';
}

/* Appends n bytes; -1 once they no longer fit (with room for the NUL). */
static int put_raw(char *buf, size_t len, size_t *pos, const char *s, size_t n)
{
    if (*pos + n >= len)
        return -1;
    memcpy(buf + *pos, s, n);
    *pos += n;
    buf[*pos] = '\0';
    return 0;
}

static int put_u64(char *buf, size_t len, size_t *pos, uint64_t u)
{
    char t[24];
    int k = sizeof(t);
    do {
        t[--k] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    return put_raw(buf, len, pos, t + k, sizeof(t) - (size_t)k);
}

#define PUT_LIT(s) put_raw(buf, len, &pos, s, sizeof(s) - 1)

int wire_encode_reading(const struct reading *r, char *buf, size_t len)
{
    size_t pos = 0;
    char num[40];
    int first = 1;

    if (PUT_LIT("{\"seq\":") < 0 || put_u64(buf, len, &pos, r->seq) < 0 ||
        PUT_LIT(",\"meter\":\"") < 0 || put_raw(buf, len, &pos, r->meter, strlen(r->meter)) < 0 ||
        PUT_LIT("\",\"ts\":") < 0 || (r->ts_ms < 0 && PUT_LIT("-") < 0) ||
        put_u64(buf, len, &pos, r->ts_ms < 0 ? 0 - (uint64_t)r->ts_ms : (uint64_t)r->ts_ms) < 0 ||
        (r->ok ? PUT_LIT(",\"ok\":true") : PUT_LIT(",\"ok\":false")) < 0)
        return -ENOSPC;
    if (r->unsynced && PUT_LIT(",\"clock\":\"unsynced\"") < 0)
        return -ENOSPC;
    if (!r->ok) {
        char err[WIRE_ERROR_MAX];
        safe_text(r->error[0] ? r->error : "failed", err, sizeof(err));
        if (PUT_LIT(",\"error\":\"") < 0 || put_raw(buf, len, &pos, err, strlen(err)) < 0 ||
            PUT_LIT("\"}") < 0)
            return -ENOSPC;
        return (int)pos;
    }
    if (PUT_LIT(",\"values\":{") < 0)
        return -ENOSPC;
    for (int q = 0; q < qty_count(); q++) {
        const char *name;
        int n;
        if (!(r->present & (1u << q)) || !isfinite(r->values[q]))
            continue;
        n = wire_format_double(r->values[q], num, sizeof(num));
        name = qty_at(q)->name;
        if ((!first && PUT_LIT(",") < 0) || PUT_LIT("\"") < 0 ||
            put_raw(buf, len, &pos, name, strlen(name)) < 0 || PUT_LIT("\":") < 0 ||
            put_raw(buf, len, &pos, num, (size_t)n) < 0)
            return -ENOSPC;
        first = 0;
    }
    if (PUT_LIT("}}") < 0)
        return -ENOSPC;
    return (int)pos;
}

/* ---- packed readings -------------------------------------------------------------------- */

static bool fits_float(double v)
{
    return fabs(v) <= FLT_MAX && (double)(float)v == v;
}

static void le_put(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t le_get(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int wire_pack_reading(const struct reading *r, unsigned char *buf, size_t len)
{
    size_t ml = strlen(r->meter), pos = 0;
    uint32_t present = 0, narrow = 0;

    if (!wire_id_valid(r->meter))
        return -EINVAL;
    if (len < 2 + ml + 8 + 8)
        return -ENOSPC;
    buf[pos++] = (unsigned char)((r->ok ? 1 : 0) | (r->unsynced ? 2 : 0));
    buf[pos++] = (unsigned char)ml;
    memcpy(buf + pos, r->meter, ml);
    pos += ml;
    le_put(buf + pos, (uint64_t)r->ts_ms, 8);
    pos += 8;
    if (!r->ok) {
        size_t el = strnlen(r->error, WIRE_ERROR_MAX - 1);
        if (pos + 1 + el > len)
            return -ENOSPC;
        buf[pos++] = (unsigned char)el;
        memcpy(buf + pos, r->error, el);
        return (int)(pos + el);
    }
    for (int q = 0; q < qty_count() && q < 32; q++)
        if ((r->present & (1u << q)) && isfinite(r->values[q])) {
            present |= 1u << q;
            if (fits_float(r->values[q]))
                narrow |= 1u << q;
        }
    le_put(buf + pos, present, 4);
    le_put(buf + pos + 4, narrow, 4);
    pos += 8;
    for (int q = 0; q < 32; q++) {
        if (!(present & (1u << q)))
            continue;
        if (narrow & (1u << q)) {
            float f = (float)r->values[q];
            uint32_t u;
            memcpy(&u, &f, 4);
            if (pos + 4 > len)
                return -ENOSPC;
            le_put(buf + pos, u, 4);
            pos += 4;
        } else {
            uint64_t u;
            memcpy(&u, &r->values[q], 8);
            if (pos + 8 > len)
                return -ENOSPC;
            le_put(buf + pos, u, 8);
            pos += 8;
        }
    }
    return (int)pos;
}

int wire_unpack_reading(const unsigned char *buf, size_t len, struct reading *r)
{
    size_t pos = 0, ml;
    uint32_t present, narrow;
    int64_t ts;

    if (len < 2)
        return -EILSEQ;
    memset(r, 0, sizeof(*r));
    if (buf[0] & ~3u)
        return -EILSEQ;
    r->ok = buf[0] & 1;
    r->unsynced = (buf[0] & 2) != 0;
    ml = buf[1];
    pos = 2;
    if (ml < 1 || ml >= WIRE_ID_MAX || len < pos + ml + 8)
        return -EILSEQ;
    memcpy(r->meter, buf + pos, ml);
    r->meter[ml] = '\0';
    if (memchr(r->meter, '\0', ml) || !wire_id_valid(r->meter))
        return -EILSEQ;
    pos += ml;
    ts = (int64_t)le_get(buf + pos, 8);
    if (ts < 0 || ts > 253402300799999ll)
        return -EILSEQ;
    r->ts_ms = ts;
    pos += 8;
    if (!r->ok) {
        size_t el;
        if (len < pos + 1)
            return -EILSEQ;
        el = buf[pos++];
        if (el >= WIRE_ERROR_MAX || len < pos + el || memchr(buf + pos, '\0', el))
            return -EILSEQ;
        memcpy(r->error, buf + pos, el);
        r->error[el] = '\0';
        return (int)(pos + el);
    }
    if (len < pos + 8)
        return -EILSEQ;
    present = (uint32_t)le_get(buf + pos, 4);
    narrow = (uint32_t)le_get(buf + pos + 4, 4);
    pos += 8;
    if ((narrow & ~present) || (qty_count() < 32 && (present >> qty_count())))
        return -EILSEQ;
    for (int q = 0; q < 32; q++) {
        double v;
        if (!(present & (1u << q)))
            continue;
        if (narrow & (1u << q)) {
            uint32_t u;
            float f;
            if (len < pos + 4)
                return -EILSEQ;
            u = (uint32_t)le_get(buf + pos, 4);
            memcpy(&f, &u, 4);
            v = f;
            pos += 4;
        } else {
            uint64_t u;
            if (len < pos + 8)
                return -EILSEQ;
            u = le_get(buf + pos, 8);
            memcpy(&v, &u, 8);
            pos += 8;
            if (fits_float(v))
                return -EILSEQ; /* not canonical: it would be packed as a float32 */
        }
        if (!isfinite(v))
            return -EILSEQ;
        r->values[q] = v;
    }
    r->present = present;
    return (int)pos;
}

char *wire_encode_batch(const char *gw, const char *stream, const struct reading *r, int n)
{
    size_t cap = 256 + (size_t)(n > 0 ? n : 0) * WIRE_READING_MAX, pos = 0;
    char *out = malloc(cap);

    if (!out)
        return NULL;
    if (put(out, cap, &pos, "{\"v\":%d,\"gw\":\"%s\",\"stream\":\"%s\",\"readings\":[",
            WIRE_VERSION, gw, stream) < 0)
        goto fail;
    for (int i = 0; i < n; i++) {
        int w;
        if (i > 0)
            out[pos++] = ',';
        w = wire_encode_reading(&r[i], out + pos, cap - pos);
        if (w < 0)
            goto fail;
        pos += (size_t)w;
    }
    if (put(out, cap, &pos, "]}") < 0)
        goto fail;
    return out;
fail:
    free(out);
    return NULL;
}

static int eset(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int eset(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* An integer-valued JSON number in [lo, hi] (both exactly representable). */
static bool int_in(const cJSON *it, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(it))
        return false;
    double v = it->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static void reject(struct wire_batch *b, enum wire_reject why, int idx, const char *detail)
{
    if (b->nrejected++ == 0)
        snprintf(b->first_reject, sizeof(b->first_reject), "readings[%d]: %s", idx, detail);
    b->rejected[why]++;
}

/* Fills *r from o; returns -1 and counts the reject when o is not a valid reading. */
static int parse_reading(struct wire_batch *b, int idx, const cJSON *o, struct reading *r)
{
    const cJSON *it;
    double v;

    memset(r, 0, sizeof(*r));
    if (!cJSON_IsObject(o)) {
        reject(b, WR_NOT_OBJECT, idx, "not an object");
        return -1;
    }
    if (!int_in(cJSON_GetObjectItemCaseSensitive(o, "seq"), 0, 9007199254740991.0, &v)) {
        reject(b, WR_SEQ, idx, "seq: required, an integer 0..2^53-1");
        return -1;
    }
    r->seq = (uint64_t)v;
    it = cJSON_GetObjectItemCaseSensitive(o, "meter");
    if (!cJSON_IsString(it) || !wire_id_valid(it->valuestring)) {
        reject(b, WR_METER, idx, "meter: required, 1..63 of [A-Za-z0-9_.-]");
        return -1;
    }
    memcpy(r->meter, it->valuestring, strlen(it->valuestring) + 1);
    /* ts: ms since the epoch, up to year 9999 */
    if (!int_in(cJSON_GetObjectItemCaseSensitive(o, "ts"), 0, 253402300799999.0, &v)) {
        reject(b, WR_TS, idx, "ts: required, integer ms since the epoch");
        return -1;
    }
    r->ts_ms = (int64_t)v;
    it = cJSON_GetObjectItemCaseSensitive(o, "ok");
    if (!cJSON_IsBool(it)) {
        reject(b, WR_OK, idx, "ok: required, true or false");
        return -1;
    }
    r->ok = cJSON_IsTrue(it);
    it = cJSON_GetObjectItemCaseSensitive(o, "clock");
    r->unsynced = cJSON_IsString(it) && strcmp(it->valuestring, "unsynced") == 0;
    if (!r->ok) {
        it = cJSON_GetObjectItemCaseSensitive(o, "error");
        snprintf(r->error, sizeof(r->error), "%s", cJSON_IsString(it) ? it->valuestring : "failed");
        return 0;
    }
    it = cJSON_GetObjectItemCaseSensitive(o, "values");
    if (!cJSON_IsObject(it)) {
        reject(b, WR_VALUES, idx, "values: required when ok, an object");
        return -1;
    }
    const cJSON *val;
    cJSON_ArrayForEach(val, it)
    {
        int q = qty_index(val->string);
        if (q < 0)
            continue; /* unknown quantities are ignored (forward compatibility) */
        if (!cJSON_IsNumber(val) || !isfinite(val->valuedouble) || fabs(val->valuedouble) > 1e15) {
            reject(b, WR_VALUES, idx, "values: each must be a finite number");
            return -1;
        }
        r->values[q] = val->valuedouble;
        r->present |= 1u << q;
    }
    return 0;
}

int wire_parse_batch(const char *buf, size_t len, struct wire_batch *b, char *err, size_t errlen)
{
    cJSON *root;
    const cJSON *it, *arr;
    double v;
    int rc = -EINVAL, n, i = 0;

    memset(b, 0, sizeof(*b));
    if (len > WIRE_MAX_PAYLOAD)
        return eset(err, errlen, "payload of %zu bytes exceeds %d", len, WIRE_MAX_PAYLOAD);
    root = cJSON_ParseWithLength(buf, len);
    if (!root)
        return eset(err, errlen, "not valid JSON");
    if (!cJSON_IsObject(root)) {
        eset(err, errlen, "not a JSON object");
        goto done;
    }
    if (!int_in(cJSON_GetObjectItemCaseSensitive(root, "v"), 0, 1e9, &v) || v != WIRE_VERSION) {
        eset(err, errlen, "v: required, protocol version %d", WIRE_VERSION);
        goto done;
    }
    it = cJSON_GetObjectItemCaseSensitive(root, "gw");
    if (!cJSON_IsString(it) || !wire_id_valid(it->valuestring)) {
        eset(err, errlen, "gw: required, 1..63 of [A-Za-z0-9_.-]");
        goto done;
    }
    memcpy(b->gw, it->valuestring, strlen(it->valuestring) + 1);
    it = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (!cJSON_IsString(it) || !wire_stream_valid(it->valuestring)) {
        eset(err, errlen, "stream: required, 8..32 lowercase hex digits");
        goto done;
    }
    memcpy(b->stream, it->valuestring, strlen(it->valuestring) + 1);
    arr = cJSON_GetObjectItemCaseSensitive(root, "readings");
    if (!cJSON_IsArray(arr)) {
        eset(err, errlen, "readings: required, an array");
        goto done;
    }
    n = cJSON_GetArraySize(arr);
    if (n > WIRE_MAX_READINGS) {
        eset(err, errlen, "readings: %d entries exceed %d", n, WIRE_MAX_READINGS);
        goto done;
    }
    b->readings = calloc(n ? (size_t)n : 1, sizeof(*b->readings));
    if (!b->readings) {
        rc = -ENOMEM;
        eset(err, errlen, "out of memory");
        goto done;
    }
    cJSON_ArrayForEach(it, arr)
    {
        if (parse_reading(b, i, it, &b->readings[b->n]) == 0)
            b->n++;
        i++;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    if (rc < 0)
        wire_batch_free(b);
    return rc;
}

void wire_batch_free(struct wire_batch *b)
{
    free(b->readings);
    b->readings = NULL;
    b->n = 0;
}
