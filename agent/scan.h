/*
 * scan: `meter-agent scan`, which finds the meters on one bus and names their models.
 *
 * For every unit id asked for it reads the identification probes of every profile
 * (docs/configuration.md, "Probes"; each distinct register read once per unit). A unit
 * that answers neither a read of function 4 nor one of function 3 is absent (so an empty
 * unit id costs two response timeouts). A profile matches when all its probes do. When
 * several match, each candidate's whole read plan is read: a candidate the meter refuses
 * (an exception) drops out; of the rest the one whose voltages look like a real supply
 * (more phases within 99..253 V, fewer outside) and which decodes more of its registers
 * wins, then the first by name. Candidates that stay equal are reported as ambiguous.
 *
 * It prints one line per meter found and a configuration snippet ("buses" and "meters")
 * to paste into agent.json, or with --json one JSON document with all of it.
 *
 * Not for: polling, or anything the running agent does; scan opens the bus itself, so it
 * must not run while an agent polls the same serial line.
 */
#ifndef MLK_AGENT_SCAN_H
#define MLK_AGENT_SCAN_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>

#define SCAN_UNIT_MAX 247

/* Parses "tcp:HOST[:PORT]" ("[v6]:PORT" too; port 502 by default) or
 * "rtu:DEVICE[:BAUD[:PARITY[:STOP]]]" (9600, N, 1 by default; DEVICE may contain ':')
 * into *b (name "tcp0" or "rtu0", timeout_ms and retries left as they are). Returns 0, or
 * -EINVAL with the reason in err. */
int scan_parse_bus(const char *spec, struct bus_cfg *b, char *err, size_t errlen);

/* Parses "1-247", "5" or "1,3,10-20" into units[1..SCAN_UNIT_MAX] (units[0] unused).
 * Returns how many units are set, or -EINVAL with the reason in err. */
int scan_parse_units(const char *spec, bool units[SCAN_UNIT_MAX + 1], char *err, size_t errlen);

/* The `meter-agent scan` command: argv[0] is "scan". Returns the exit status: 0 when the
 * scan ran (found meters or not), 1 when the bus could not be opened or the profiles not
 * loaded, 2 on a usage error. */
int scan_main(int argc, char **argv);

#endif
