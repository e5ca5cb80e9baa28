#!/usr/bin/env python3
"""A Modbus TCP slave built on pymodbus 3.0.0 (Debian's python3-pymodbus), serving fixed
values with a meter profile's register map: a second, independent implementation of a
meter for interoperability tests. Run it with /usr/bin/python3.

    pymodbus_server.py --profile agent/profiles/sdm630.json --values '{"voltage_l1": 230.5}'
                       [--unit 1] [--host 127.0.0.1] [--port 0] [-v]

It encodes every value the profile names and --values gives (float32, byte order ABCD, the
only encoding it knows; anything else is an error), leaves every other register 0, listens,
prints "port N" on stdout when it accepts connections, and runs until SIGTERM or SIGINT.
"""
import argparse
import asyncio
import json
import logging
import signal
import struct
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartAsyncTcpServer


def encode(profile, values):
    """{fc: [register words]} for the profile's registers with the given values."""
    tables = {3: [], 4: []}
    unknown = set(values) - {r["quantity"] for r in profile["registers"]}
    if unknown:
        raise ValueError(f"quantities not in the profile: {sorted(unknown)}")
    for reg in profile["registers"]:
        fc = reg.get("function", profile.get("function", 3))
        typ = reg.get("type", profile.get("type"))
        order = reg.get("order", profile.get("order", "ABCD"))
        scale = reg.get("scale", profile.get("scale", 1))
        if typ != "f32" or order != "ABCD" or scale != 1 or fc not in tables:
            raise ValueError(f"{reg['quantity']}: only f32 ABCD, scale 1, FC 3 or 4")
        if reg["quantity"] not in values:
            continue
        hi, lo = struct.unpack(">HH", struct.pack(">f", values[reg["quantity"]]))
        t = tables[fc]
        addr = reg["address"]
        if len(t) < addr + 2:
            t.extend([0] * (addr + 2 - len(t)))
        t[addr], t[addr + 1] = hi, lo
    # A real meter answers every register of its runs ([start, end] pairs, or per function
    # code {"3": [...], "4": [...]}), not only those the profile names.
    runs = profile.get("runs", [])
    per_fc = runs.items() if isinstance(runs, dict) else [(None, runs)]
    for fc, pairs in per_fc:
        for fcode in ([int(fc)] if fc is not None else [f for f in tables if tables[f]]):
            for _, end in pairs:
                t = tables[fcode]
                t.extend([0] * max(0, end + 1 - len(t)))
    return tables


async def serve(args, tables):
    def block(words):
        return ModbusSequentialDataBlock(0, (words or [0]) + [0] * 8)

    slave = ModbusSlaveContext(hr=block(tables[3]), ir=block(tables[4]), zero_mode=True)
    context = ModbusServerContext(slaves={args.unit: slave}, single=False)
    server = await StartAsyncTcpServer(context=context, address=(args.host, args.port),
                                       defer_start=True)
    task = asyncio.create_task(server.serve_forever())
    await server.serving
    port = server.server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--values", required=True, help="JSON object: quantity -> value")
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true", help="pymodbus's own log")
    args = ap.parse_args()
    # pymodbus logs a client that hangs up as an error; only -v shows its log.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)
    with open(args.profile) as f:
        profile = json.load(f)
    try:
        tables = encode(profile, json.loads(args.values))
    except ValueError as e:
        print(f"pymodbus_server: {e}", file=sys.stderr)
        return 2
    asyncio.run(serve(args, tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
