/*
 * fuzz_wire: readings batches as they arrive over MQTT (wire_parse_batch). The agent's
 * queue stores each reading as the text wire_encode_reading() makes and builds batches by
 * joining those texts, so this also covers what the uplink sends from the queue.
 *
 * Checks, for every input: the parser's own counts agree; an accepted envelope and every
 * accepted reading satisfy the documented field rules; the accepted readings, encoded
 * again with wire_encode_batch(), parse back with nothing rejected and to equal values
 * (every bit of every double), and encoding that result gives the same text (fixed point).
 */
#include "fuzz.h"

#include "quantities.h"
#include "wire.h"

#include <string.h>

/* Whether the encoder is documented to carry r->error unchanged: it writes a failed
 * reading's error as printable ASCII without '"' or '\\', and "failed" for an empty one. */
static int error_survives(const char *s)
{
    if (!s[0])
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f || *s == '"' || *s == '\\')
            return 0;
    return 1;
}

static void check_reading(int i, const struct reading *r)
{
    FUZZ_CHECK(r->seq <= 9007199254740991ull, "readings[%d].seq %llu", i,
               (unsigned long long)r->seq);
    FUZZ_CHECK(wire_id_valid(r->meter), "readings[%d].meter \"%s\"", i, r->meter);
    FUZZ_CHECK(r->ts_ms >= 0 && r->ts_ms <= 253402300799999ll, "readings[%d].ts %lld", i,
               (long long)r->ts_ms);
    FUZZ_CHECK(memchr(r->error, '\0', sizeof(r->error)) != NULL,
               "readings[%d].error not terminated", i);
    if (!r->ok)
        FUZZ_CHECK(r->present == 0, "readings[%d] failed but present %#x", i, r->present);
    FUZZ_CHECK(qty_count() >= 32 || (r->present >> qty_count()) == 0,
               "readings[%d].present %#x has bits beyond %d quantities", i, r->present,
               qty_count());
}

static void check_same(int i, const struct reading *a, const struct reading *b)
{
    FUZZ_CHECK(a->seq == b->seq, "readings[%d].seq %llu -> %llu", i, (unsigned long long)a->seq,
               (unsigned long long)b->seq);
    FUZZ_CHECK(strcmp(a->meter, b->meter) == 0, "readings[%d].meter \"%s\" -> \"%s\"", i, a->meter,
               b->meter);
    FUZZ_CHECK(a->ts_ms == b->ts_ms, "readings[%d].ts %lld -> %lld", i, (long long)a->ts_ms,
               (long long)b->ts_ms);
    FUZZ_CHECK(a->ok == b->ok, "readings[%d].ok %d -> %d", i, a->ok, b->ok);
    FUZZ_CHECK(a->unsynced == b->unsynced, "readings[%d].unsynced %d -> %d", i, a->unsynced,
               b->unsynced);
    FUZZ_CHECK(a->present == b->present, "readings[%d].present %#x -> %#x", i, a->present,
               b->present);
    for (int q = 0; q < qty_count(); q++) {
        if (!(a->present & (1u << q)))
            continue;
        /* bit for bit: "reads back as exactly v" (wire.h), so -0 stays -0 */
        FUZZ_CHECK(memcmp(&a->values[q], &b->values[q], sizeof(double)) == 0,
                   "readings[%d].values.%s %.17g -> %.17g", i, qty_at(q)->name, a->values[q],
                   b->values[q]);
    }
    if (!a->ok && error_survives(a->error))
        FUZZ_CHECK(strcmp(a->error, b->error) == 0, "readings[%d].error \"%s\" -> \"%s\"", i,
                   a->error, b->error);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wire_batch b, b2;
    char err[256] = "", err2[256] = "";
    char *enc, *enc2;
    int rc, sum = 0;

    rc = wire_parse_batch((const char *)data, size, &b, err, sizeof(err));
    if (rc < 0) {
        FUZZ_CHECK(err[0] != '\0', "rc %d without a message", rc);
        FUZZ_CHECK(b.readings == NULL && b.n == 0, "rejected batch kept %d readings", b.n);
        return 0;
    }
    FUZZ_CHECK(rc == 0, "rc %d", rc);
    FUZZ_CHECK(wire_id_valid(b.gw), "gw \"%s\"", b.gw);
    FUZZ_CHECK(wire_stream_valid(b.stream), "stream \"%s\"", b.stream);
    FUZZ_CHECK(b.n >= 0 && b.n + b.nrejected <= WIRE_MAX_READINGS, "n %d + rejected %d", b.n,
               b.nrejected);
    for (int w = 0; w < WR_COUNT; w++)
        sum += b.rejected[w];
    FUZZ_CHECK(sum == b.nrejected, "rejected[] sums to %d, nrejected %d", sum, b.nrejected);
    FUZZ_CHECK((b.nrejected == 0) == (b.first_reject[0] == '\0'),
               "nrejected %d, first_reject \"%s\"", b.nrejected, b.first_reject);
    for (int i = 0; i < b.n; i++)
        check_reading(i, &b.readings[i]);

    enc = wire_encode_batch(b.gw, b.stream, b.readings, b.n);
    FUZZ_CHECK(enc != NULL, "wire_encode_batch failed for %d accepted readings", b.n);
    rc = wire_parse_batch(enc, strlen(enc), &b2, err2, sizeof(err2));
    FUZZ_CHECK(rc == 0, "re-parse: rc %d (%s) of %s", rc, err2, enc);
    FUZZ_CHECK(strcmp(b.gw, b2.gw) == 0 && strcmp(b.stream, b2.stream) == 0,
               "envelope %s/%s -> %s/%s", b.gw, b.stream, b2.gw, b2.stream);
    FUZZ_CHECK(b2.n == b.n && b2.nrejected == 0, "re-parse: %d readings -> %d, %d rejected (%s)",
               b.n, b2.n, b2.nrejected, b2.first_reject);
    for (int i = 0; i < b.n; i++)
        check_same(i, &b.readings[i], &b2.readings[i]);
    enc2 = wire_encode_batch(b2.gw, b2.stream, b2.readings, b2.n);
    FUZZ_CHECK(enc2 != NULL && strcmp(enc, enc2) == 0, "encoding is not a fixed point:\n%s\n%s",
               enc, enc2 ? enc2 : "(null)");
    free(enc2);
    free(enc);
    wire_batch_free(&b2);
    wire_batch_free(&b);
    return 0;
}
