/*
 * fuzz_qrow: packed readings as the agent's queue reads them back from its file
 * (wire_unpack_reading; a chunk row's body is a version byte and packed readings one after
 * another). The file is outside input too: a torn write or a bad disk can leave anything.
 *
 * Checks, for every input read as a sequence of packed readings: each one either unpacks
 * to a reading that satisfies the field rules (valid meter id, ts in 0..year 9999, no values
 * when failed, no bits beyond the quantities, finite values) or is refused with -EILSEQ,
 * never read past its end; packing an accepted reading again gives exactly the bytes it
 * came from (one byte string per reading); its wire JSON parses back to the same values, bit
 * for bit (or, with a value beyond 1e15, is refused alone as bad_values); and the fast double
 * formatter gives the same text as its printf/strtod
 * reference for every value.
 */
#include "fuzz.h"

#include "quantities.h"
#include "wire.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static void check_values(const struct reading *r, const struct reading *back)
{
    FUZZ_CHECK(back->present == r->present, "present %#x -> %#x", r->present, back->present);
    for (int q = 0; q < qty_count(); q++) {
        char fast[40], slow[40];
        if (!(r->present & (1u << q)))
            continue;
        FUZZ_CHECK(isfinite(r->values[q]), "values.%s %g", qty_at(q)->name, r->values[q]);
        FUZZ_CHECK(memcmp(&r->values[q], &back->values[q], sizeof(double)) == 0,
                   "values.%s %.17g -> %.17g", qty_at(q)->name, r->values[q], back->values[q]);
        wire_format_double(r->values[q], fast, sizeof(fast));
        wire_format_double_slow(r->values[q], slow, sizeof(slow));
        FUZZ_CHECK(strcmp(fast, slow) == 0, "%.17g: \"%s\", reference \"%s\"", r->values[q], fast,
                   slow);
    }
}

static int too_big(const struct reading *r)
{
    for (int q = 0; q < qty_count(); q++)
        if ((r->present & (1u << q)) && fabs(r->values[q]) > 1e15)
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t pos = 0;
    int i = 0;

    while (pos < size) {
        struct reading r;
        unsigned char again[WIRE_PACKED_MAX];
        char json[WIRE_READING_MAX + 128], env[WIRE_READING_MAX + 256], err[160];
        struct wire_batch b;
        int n = wire_unpack_reading(data + pos, size - pos, &r), m, jl;

        if (n < 0) {
            FUZZ_CHECK(n == -EILSEQ, "reading %d: rc %d", i, n);
            break;
        }
        FUZZ_CHECK(n > 0 && (size_t)n <= size - pos && n <= WIRE_PACKED_MAX,
                   "reading %d took %d of %zu bytes", i, n, size - pos);
        FUZZ_CHECK(wire_id_valid(r.meter), "reading %d: meter \"%s\"", i, r.meter);
        FUZZ_CHECK(r.ts_ms >= 0 && r.ts_ms <= 253402300799999ll, "reading %d: ts %lld", i,
                   (long long)r.ts_ms);
        FUZZ_CHECK(memchr(r.error, '\0', sizeof(r.error)) != NULL, "reading %d: error", i);
        FUZZ_CHECK(r.ok || r.present == 0, "reading %d failed with present %#x", i, r.present);
        FUZZ_CHECK(qty_count() >= 32 || (r.present >> qty_count()) == 0, "reading %d: present %#x",
                   i, r.present);
        m = wire_pack_reading(&r, again, sizeof(again));
        FUZZ_CHECK(m == n && memcmp(again, data + pos, (size_t)n) == 0,
                   "reading %d: %d bytes pack again to %d different ones", i, n, m);

        r.seq = (uint64_t)i + 1;
        jl = wire_encode_reading(&r, json, sizeof(json));
        FUZZ_CHECK(jl > 0, "reading %d: encode rc %d", i, jl);
        jl = snprintf(
            env, sizeof(env),
            "{\"v\":1,\"gw\":\"gw-01\",\"stream\":\"0123456789abcdef\",\"readings\":[%s]}", json);
        FUZZ_CHECK(wire_parse_batch(env, (size_t)jl, &b, err, sizeof(err)) == 0, "%s: %s", env,
                   err);
        if (too_big(&r)) { /* the cloud refuses values beyond 1e15 (wire.h): counted, alone */
            FUZZ_CHECK(b.n == 0 && b.rejected[WR_VALUES] == 1, "%s: %d readings", env, b.n);
            wire_batch_free(&b);
            pos += (size_t)n;
            i++;
            continue;
        }
        FUZZ_CHECK(b.n == 1 && b.nrejected == 0, "%s: %d readings, %s", env, b.n, b.first_reject);
        FUZZ_CHECK(strcmp(b.readings[0].meter, r.meter) == 0 && b.readings[0].ts_ms == r.ts_ms &&
                       b.readings[0].ok == r.ok && b.readings[0].unsynced == r.unsynced,
                   "%s: fields changed", env);
        check_values(&r, &b.readings[0]);
        wire_batch_free(&b);
        pos += (size_t)n;
        i++;
    }
    return 0;
}
