/* quantities: see quantities.h. DESIGN.md section 3 is the source of this table. */
#include "quantities.h"

#include <string.h>

static const struct quantity qty_table[] = {
    {"energy_import", "kWh", QTY_COUNTER},
    {"energy_export", "kWh", QTY_COUNTER},
    {"power", "W", QTY_GAUGE},
    {"power_l1", "W", QTY_GAUGE},
    {"power_l2", "W", QTY_GAUGE},
    {"power_l3", "W", QTY_GAUGE},
    {"voltage_l1", "V", QTY_GAUGE},
    {"voltage_l2", "V", QTY_GAUGE},
    {"voltage_l3", "V", QTY_GAUGE},
    {"current_l1", "A", QTY_GAUGE},
    {"current_l2", "A", QTY_GAUGE},
    {"current_l3", "A", QTY_GAUGE},
    {"frequency", "Hz", QTY_GAUGE},
    {"power_factor", "1", QTY_GAUGE},
    {"reactive_power", "var", QTY_GAUGE},
    {"apparent_power", "VA", QTY_GAUGE},
    {"balance", "currency", QTY_BALANCE},
};

#define QTY_N ((int)(sizeof(qty_table) / sizeof(qty_table[0])))

int qty_count(void)
{
    return QTY_N;
}

const struct quantity *qty_at(int i)
{
    if (i < 0 || i >= QTY_N)
        return NULL;
    return &qty_table[i];
}

int qty_index(const char *name)
{
    for (int i = 0; i < QTY_N; i++)
        if (strcmp(qty_table[i].name, name) == 0)
            return i;
    return -1;
}

const struct quantity *qty_find(const char *name)
{
    return qty_at(qty_index(name));
}
