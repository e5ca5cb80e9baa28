#!/usr/bin/env python3
"""pages_bench: SQLite pages the agent's queue writes per day (flash wear), per durability.

Starts a private mosquitto, meter-sim (16 SDM630 + 16 SDM120 on Modbus TCP), meter-cloud and
two meter-agents polling those 32 meters every 10 s: gw-01 with queue.durability "durable",
gw-02 with "memory-first" (the same meters under other ids, so the cloud stores both). After
a warm-up it takes each agent's health message (the queue's pages_written: SQLite pages
written to the WAL since the queue was opened, SQLITE_DBSTATUS_CACHE_WRITE; and commits)
and /proc/PID/io write_bytes (bytes the agent sent to the block layer: WAL, checkpoints into
the main file, file system metadata), waits the measured period, takes both again, and
extrapolates the difference linearly to a day. The interval is the real 10 s: a faster one
would batch acks differently and change what is measured.

Every process it starts is stopped at the end, also on failure or Ctrl-C. Prints a Markdown
table for docs/benchmarks.md. Standard library only; run with /usr/bin/python3.

  tools/bench/pages_bench.py --build build [--seconds 180]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import stack  # noqa: E402

INTERVAL_MS = 10000
MODES = (("gw-01", "durable"), ("gw-02", "memory-first"))


def meters(gw):
    tag = "d" if gw == "gw-01" else "m"
    return [(f"{tag}{u:02d}", "tcp", u, "sdm630" if u <= 16 else "sdm120") for u in range(1, 33)]


def health(st, gw):
    code, body = st.get(f"/api/v1/gateways/{gw}")
    return (body or {}).get("health") if code == 200 else None


def write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        d = dict(line.split(": ") for line in f.read().splitlines())
    return int(d["write_bytes"]), int(d["wchar"])


def fresh_health(st, gw, after_ms, timeout=30):
    """The first health message of gw stamped after after_ms."""
    return stack.wait_for(lambda: (lambda h: h if h and h["ts"] > after_ms else None)(
        health(st, gw)), timeout, f"a health message of {gw}", interval=0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="the CMake build folder")
    ap.add_argument("--seconds", type=float, default=180, help="measured period")
    ap.add_argument("--warmup", type=float, default=25, help="seconds before measuring")
    ap.add_argument("--dir", default="/tmp", help="where the run folder goes")
    ap.add_argument("--keep", action="store_true", help="keep the run folder")
    ap.add_argument("--outage", action="store_true",
                    help="stop the broker for the measured period (readings back up on the "
                    "gateway), then start it again and take the counters once it is back")
    args = ap.parse_args()

    st = stack.Stack(args.build, workdir=tempfile.mkdtemp(prefix="pages-", dir=args.dir))
    try:
        st.start_broker(gateways=[gw for gw, _ in MODES])
        st.start_sim([f"tcp:{u}:{'sdm630' if u <= 16 else 'sdm120'}" for u in range(1, 33)])
        st.start_cloud()
        agents = {}
        for gw, mode in MODES:
            cfg = st.agent_config(meters(gw), gw=gw, interval_ms=INTERVAL_MS)
            cfg["queue"]["durability"] = mode
            cfg["health"] = {"interval_ms": 5000}
            agents[gw] = st.start_agent(cfg, name=f"meter-agent-{gw}")
        time.sleep(args.warmup)
        t0 = int(time.time() * 1000)
        h0, io0 = {}, {}
        for gw, _ in MODES:
            h0[gw] = fresh_health(st, gw, t0)
            io0[gw] = write_bytes(agents[gw].p.pid)
        if args.outage:
            st.stop_broker()
        time.sleep(args.seconds)
        if args.outage:
            st.restart_broker()
            io_out = {gw: write_bytes(agents[gw].p.pid) for gw, _ in MODES}
        t1 = int(time.time() * 1000)
        rows = []
        for gw, mode in MODES:
            if not agents[gw].alive():
                raise RuntimeError(f"{gw} exited:\n" + agents[gw].tail())
            h1 = fresh_health(st, gw, t1)
            io1 = io_out[gw] if args.outage else write_bytes(agents[gw].p.pid)
            secs = (h1["ts"] - h0[gw]["ts"]) / 1000
            q0, q1 = h0[gw]["queue"], h1["queue"]
            readings = h1["uplink"]["acked_upto"] - h0[gw]["uplink"]["acked_upto"]
            if args.outage:  # what was taken while the broker was away, acked or not yet
                secs = args.seconds
                readings = round(32 * args.seconds * 1000 / INTERVAL_MS)
            pages = q1["pages_written"] - q0["pages_written"]
            commits = q1["commits"] - q0["commits"]
            wb = io1[0] - io0[gw][0]
            day = 86400 / secs
            rows.append((mode, secs, readings, commits, pages, wb, day))
        print(f"pages_bench: 32 meters (16 sdm630 + 16 sdm120, Modbus TCP) every {INTERVAL_MS // 1000}"
              f" s, {args.dir} on {fs_type(args.dir)}, measured {args.seconds:.0f} s after a "
              f"{args.warmup:.0f} s warm-up"
              + (", broker stopped for the measured period (pages and commits up to the first"
                 " health message after it is back; block-layer bytes only while it is away)"
                 if args.outage else "") + "\n")
        print("| durability | measured s | readings acked | commits | pages per reading |"
              " commits per reading | pages per day | MiB of WAL pages per day |"
              " block-layer bytes per reading | MiB written per day (/proc io) |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for mode, secs, readings, commits, pages, wb, day in rows:
            r = readings if readings > 0 else 1
            print(f"| {mode} | {secs:.0f} | {readings} | {commits} | {pages / r:.2f} |"
                  f" {commits / r:.2f} | {pages * day:,.0f} | {pages * day * 4096 / 2**20:,.0f} |"
                  f" {wb / r:,.0f} | {wb * day / 2**20:,.0f} |")
        print("\nA day of 32 meters at 10 s is 276,480 readings. Pages are the queue's page"
              " size (4096 bytes).")
    finally:
        st.stop()
        if not args.keep:
            shutil.rmtree(st.dir, ignore_errors=True)
    return 0


def fs_type(path):
    import subprocess
    out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", path], capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
