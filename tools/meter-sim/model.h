/*
 * model: the electrical values of one simulated meter over time.
 *
 * Voltages near 230 V, frequency near 50 Hz, a household-like load per phase (base load, a
 * slow swing, appliances switching on and off, a little noise), and the values that follow
 * from it: current = apparent power / voltage, reactive power from the power factor, energy
 * integrated over the time that really passed. Every gauge is a pure function of
 * (seed, meter index, time since start); the counters add up that same function, so runs
 * with the same seed agree except for when they were read. Import power stays positive, so
 * energy_export keeps its starting value; the prepaid balance falls with energy used and is
 * topped up when it runs low.
 *
 * This knows quantities (common/quantities.h), not registers: meter-sim encodes the values
 * into registers with the meter's profile.
 */
#ifndef MLK_MODEL_H
#define MLK_MODEL_H

#include <stdint.h>

struct model;

/* A meter with phases (1 or 3) whose clock starts at start_ms (a monotonic clock, ms).
 * index distinguishes meters that share a seed. Returns NULL when out of memory. */
struct model *model_new(uint64_t seed, int index, int phases, int64_t start_ms);
void model_free(struct model *m);

/* Advances the model to now_ms (same clock as start_ms). Time going back is ignored. */
void model_update(struct model *m, int64_t now_ms);

/* Value of quantity qty (index into the quantities table) as of the last update, in the
 * quantity's unit; 0 for a quantity the model does not simulate. */
double model_value(const struct model *m, int qty);

#endif
