/* model: see model.h. */
#include "model.h"

#include "quantities.h"

#include <math.h>
#include <stdlib.h>

#define TWO_PI 6.283185307179586
#define MAX_PHASES 3

/* Independent random streams: each parameter or signal draws from its own channel, so
 * adding one never shifts the others. Per-phase channels are CH_x + phase. */
enum channel {
    CH_PARAM = 0x100,      /* + parameter number: fixed per-meter parameters */
    CH_STEP = 0x200,       /* appliance on in this slot? */
    CH_STEP_SIZE = 0x210,  /* how big the appliance is in this slot */
    CH_LOAD_NOISE = 0x220, /* load noise */
    CH_VOLT_NOISE = 0x230, /* voltage noise */
    CH_PF_NOISE = 0x240,   /* power factor noise */
    CH_FREQ_NOISE = 0x250, /* frequency noise (shared by all meters: one grid) */
};

struct phase_par {
    double base_w;         /* standby and always-on load */
    double swing_w;        /* peak of the slow daily-like swing */
    double swing_period_s; /* its period */
    double swing_phase;    /* and phase (radians) */
    double step_w;         /* an appliance switching on and off */
    double step_prob;      /* share of slots it is on */
    double slot_s;         /* length of an on/off slot */
    double slot_offset_s;  /* so that phases do not switch together */
    double noise_w;        /* load noise amplitude */
    double volt_offset;    /* this meter's distance from the transformer, V */
    double volt_phase;     /* phase of the slow voltage swing (radians) */
    double pf_mid;         /* middle of this phase's power factor */
    double pf_phase;
};

struct model {
    uint64_t key;      /* seed and meter index mixed */
    uint64_t grid_key; /* seed only: what all meters on one grid share */
    int phases;
    int64_t start_ms;
    int64_t last_ms;
    struct phase_par ph[MAX_PHASES];
    double energy_import; /* kWh */
    double energy_export; /* kWh */
    double balance;       /* currency */
    double price;         /* currency per kWh */
    double val[QTY_MAX];
};

static uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Uniform in [0, 1), a pure function of (key, channel, k). */
static double rnd(uint64_t key, unsigned channel, int64_t k)
{
    uint64_t h = mix64(key ^ mix64(((uint64_t)channel << 40) ^ (uint64_t)k));
    return (double)(h >> 11) * 0x1p-53;
}

/* Smooth noise in [-1, 1]: random values every period_s seconds, eased in between. */
static double smooth_noise(uint64_t key, unsigned channel, double t, double period_s)
{
    double x = t / period_s;
    double k = floor(x);
    double f = x - k;
    double a = 2 * rnd(key, channel, (int64_t)k) - 1;
    double b = 2 * rnd(key, channel, (int64_t)k + 1) - 1;

    f = f * f * (3 - 2 * f);
    return a + (b - a) * f;
}

static double param(const struct model *m, int n, double lo, double hi)
{
    return lo + (hi - lo) * rnd(m->key, CH_PARAM + (unsigned)n, 0);
}

struct model *model_new(uint64_t seed, int index, int phases, int64_t start_ms)
{
    struct model *m = calloc(1, sizeof(*m));
    int n = 0;

    if (m == NULL)
        return NULL;
    m->grid_key = mix64(seed);
    m->key = mix64(seed ^ mix64(0x6d657465722d7369ull + (uint64_t)index));
    m->phases = phases == 3 ? 3 : 1;
    m->start_ms = start_ms;
    m->last_ms = start_ms;

    for (int i = 0; i < m->phases; i++) {
        struct phase_par *p = &m->ph[i];
        /* A flat on one phase, or one phase of a bigger three-phase installation. */
        double scale = m->phases == 1 ? 1.0 : 1.6;

        p->base_w = scale * param(m, n++, 120, 400);
        p->swing_w = scale * param(m, n++, 100, 500);
        p->swing_period_s = param(m, n++, 600, 1800);
        p->swing_phase = param(m, n++, 0, TWO_PI);
        p->step_w = scale * param(m, n++, 1000, 2500);
        p->step_prob = param(m, n++, 0.15, 0.35);
        p->slot_s = param(m, n++, 20, 60);
        p->slot_offset_s = param(m, n++, 0, 60);
        p->noise_w = 0.02 * p->base_w + 5;
        p->volt_offset = param(m, n++, -1.5, 1.5);
        p->volt_phase = TWO_PI * i / 3.0;
        p->pf_mid = param(m, n++, 0.90, 0.96);
        p->pf_phase = param(m, n++, 0, TWO_PI);
    }
    m->energy_import = 1000.0 + 137.0 * index;
    m->energy_export = 3.0 + 0.5 * index;
    m->price = 0.30;
    m->balance = 60.0 + 7.0 * index;
    model_update(m, start_ms);
    return m;
}

void model_free(struct model *m)
{
    free(m);
}

/* Active power of phase i at t seconds since start, W (> 0: import). */
static double phase_load(const struct model *m, int i, double t)
{
    const struct phase_par *p = &m->ph[i];
    double w = p->base_w;
    double slot = floor((t + p->slot_offset_s) / p->slot_s);

    w += p->swing_w * 0.5 * (1 + sin(TWO_PI * t / p->swing_period_s + p->swing_phase));
    if (rnd(m->key, CH_STEP + (unsigned)i, (int64_t)slot) < p->step_prob)
        w += p->step_w * (0.9 + 0.2 * rnd(m->key, CH_STEP_SIZE + (unsigned)i, (int64_t)slot));
    w += p->noise_w * smooth_noise(m->key, CH_LOAD_NOISE + (unsigned)i, t, 2.0);
    return w < 1 ? 1 : w;
}

static double total_load(const struct model *m, double t)
{
    double w = 0;

    for (int i = 0; i < m->phases; i++)
        w += phase_load(m, i, t);
    return w;
}

/* Energy imported between t1 and t2 seconds, kWh: midpoint rule with steps of at most
 * 0.25 s, fine enough to follow the load's steps; coarser after very long idle gaps. */
static double integrate_kwh(const struct model *m, double t1, double t2)
{
    double dt = t2 - t1;
    long n;
    double h, ws = 0;

    if (dt <= 0)
        return 0;
    n = (long)ceil(dt / 0.25);
    if (n > 200000)
        n = 200000;
    h = dt / (double)n;
    for (long k = 0; k < n; k++)
        ws += total_load(m, t1 + ((double)k + 0.5) * h) * h;
    return ws / 3.6e6;
}

static void set(struct model *m, const char *name, double v)
{
    int q = qty_index(name);

    if (q >= 0 && q < QTY_MAX)
        m->val[q] = v;
}

void model_update(struct model *m, int64_t now_ms)
{
    static const char *const volt[] = {"voltage_l1", "voltage_l2", "voltage_l3"};
    static const char *const curr[] = {"current_l1", "current_l2", "current_l3"};
    static const char *const pwr[] = {"power_l1", "power_l2", "power_l3"};
    double t, p_sum = 0, s_sum = 0, q_sum = 0, f;

    if (now_ms > m->last_ms) {
        double de = integrate_kwh(m, (double)(m->last_ms - m->start_ms) / 1000.0,
                                  (double)(now_ms - m->start_ms) / 1000.0);

        m->energy_import += de;
        m->balance -= de * m->price;
        while (m->balance < 5.0)
            m->balance += 50.0; /* a top-up */
        m->last_ms = now_ms;
    }
    t = (double)(m->last_ms - m->start_ms) / 1000.0;

    for (int i = 0; i < m->phases; i++) {
        const struct phase_par *p = &m->ph[i];
        double pw = phase_load(m, i, t);
        double v, pf, s;

        /* Same slow swing for every meter (one grid), a per-meter offset, a sag with load
         * and a little noise. */
        v = 230.0 + 3.0 * sin(TWO_PI * t / 900.0 + p->volt_phase + 6.0 * rnd(m->grid_key, 1, 0));
        v += p->volt_offset - 0.4 * pw / 1000.0;
        v += 0.3 * smooth_noise(m->key, CH_VOLT_NOISE + (unsigned)i, t, 3.0);
        pf = p->pf_mid + 0.03 * sin(TWO_PI * t / 700.0 + p->pf_phase) +
             0.01 * smooth_noise(m->key, CH_PF_NOISE + (unsigned)i, t, 4.0);
        if (pf < 0.85)
            pf = 0.85;
        if (pf > 0.999)
            pf = 0.999;
        s = pw / pf;

        set(m, volt[i], v);
        set(m, curr[i], s / v);
        set(m, pwr[i], pw);
        p_sum += pw;
        s_sum += s;
        q_sum += sqrt(s * s - pw * pw);
    }
    f = 50.0 + 0.03 * sin(TWO_PI * t / 420.0 + 6.0 * rnd(m->grid_key, 2, 0)) +
        0.01 * smooth_noise(m->grid_key, CH_FREQ_NOISE, t, 5.0);

    set(m, "power", p_sum);
    set(m, "apparent_power", s_sum);
    set(m, "reactive_power", q_sum);
    set(m, "power_factor", p_sum / s_sum);
    set(m, "frequency", f);
    set(m, "energy_import", m->energy_import);
    set(m, "energy_export", m->energy_export);
    set(m, "balance", m->balance);
}

double model_value(const struct model *m, int qty)
{
    if (qty < 0 || qty >= QTY_MAX)
        return 0;
    return m->val[qty];
}
