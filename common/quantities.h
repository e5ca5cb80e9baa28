/*
 * quantities: the one table of measured quantities, their canonical names and units.
 * Agent, wire protocol, store, API and dashboard all use these names.
 */
#ifndef MLK_QUANTITIES_H
#define MLK_QUANTITIES_H

enum qty_kind {
    QTY_GAUGE,   /* instantaneous value */
    QTY_COUNTER, /* monotonic on the meter; may reset, roll over or be replaced */
    QTY_BALANCE, /* prepaid balance: falls with use, rises on top-up */
};

#define QTY_MAX 32 /* capacity of per-quantity arrays; qty_count() <= QTY_MAX */

struct quantity {
    const char *name;
    const char *unit;
    enum qty_kind kind;
};

/* Number of quantities in the table. */
int qty_count(void);
/* Entry i (0 <= i < qty_count()), or NULL. */
const struct quantity *qty_at(int i);
/* Index of the quantity called name, or -1 if there is none. */
int qty_index(const char *name);
/* Entry called name, or NULL. */
const struct quantity *qty_find(const char *name);

#endif
