#!/usr/bin/env python3
"""drain_bench: how fast a backlog drains from the agent's queue into the cloud's store.

For each uplink setting (batch_max x inflight_max x window) it starts a private mosquitto and
meter-cloud (tools/stack.py), copies a queue file prefilled with COUNT readings (made once by
`queue_bench --prefill`, 32 meters, 16 values each, as an SDM630 sends), starts meter-agent
on it with one meter whose polls fail at once (a closed port, polled once a day), and times
until the cloud's GET /api/v1/gateways/gw-01 says the stream is complete up to COUNT. It
reads each process's CPU time from /proc/PID/stat over the drain, and with --profile records
a perf (cpu-clock) profile of the agent, broker and cloud during the first setting's run.
A run still unfinished after --timeout seconds (300) is reported with what was confirmed.

Every process it starts is stopped at the end, also on failure or Ctrl-C. Prints a Markdown
table for docs/benchmarks.md. Standard library only; run with /usr/bin/python3.

  tools/bench/drain_bench.py --build build                     # default setting, 1M readings
  tools/bench/drain_bench.py --build build --sweep             # and the other settings
"""
import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import stack  # noqa: E402

TARGET_RPS = 100000
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT = (5000, 16, 20000)  # agent defaults (agent/config.c): batch_max, inflight_max, window
SWEEP = [(500, 16, 20000), (2000, 16, 20000), (5000, 16, 5000), (5000, 16, 100000),
         (5000, 64, 1000000)]


def cpu_s(pid):
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def io(pid):
    """/proc/PID/io: rchar and wchar (bytes through read/write calls, page cache included),
    write_bytes (bytes sent to the block layer)."""
    with open(f"/proc/{pid}/io") as f:
        d = dict(line.split(": ") for line in f.read().splitlines())
    return {k: int(d[k]) for k in ("rchar", "wchar", "write_bytes")}


def gateway(st, stream):
    """(upto of stream, duplicates, the agent's uplink resends from its last health)."""
    code, body = st.get("/api/v1/gateways/gw-01")
    if code != 200:
        return 0, 0, 0
    n = 0
    for s in body.get("streams", []):
        if s["stream"] == stream:
            n = s["upto"]
    resends = ((body.get("health") or {}).get("uplink") or {}).get("resends", 0)
    return n, body.get("duplicates", 0), resends


def agent_cfg(st, queue_path, batch_max, inflight_max, window):
    return {
        "gateway": {"id": "gw-01"},
        "mqtt": {"host": "127.0.0.1", "port": st.broker_port, "prefix": st.prefix,
                 "username": "gw-01", "password": st.users["gw-01"], "reconnect_max_s": 2},
        "queue": {"path": queue_path, "max_rows": 4000000},
        "uplink": {"batch_max": batch_max, "inflight_max": inflight_max, "window": window},
        "profiles_dir": os.path.join(st.src, "agent", "profiles"),
        "buses": [{"name": "none", "type": "tcp", "host": "127.0.0.1", "port": stack.free_port(),
                   "timeout_ms": 100, "retries": 0}],
        "meters": [{"id": "idle", "bus": "none", "unit": 1, "profile": "sdm120",
                    "interval_ms": 86400000}],
    }


def perf_report(data, comm, sort):
    """Self time of one command in a perf.data by sort keys ("dso" or "dso,sym"), as
    (percent, dso, symbol) rows, largest first."""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                          "--comm", comm, "--sort", sort, "--percentage", "relative"],
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if not parts or not parts[0].endswith("%"):
            continue
        sym = parts[3].strip() if len(parts) > 3 else ""  # parts[2] is the "[.]" tag
        rows.append((float(parts[0].rstrip("%")), parts[1] if len(parts) > 1 else "?", sym))
    return rows


def run_one(args, prefilled, stream, batch_max, inflight_max, window, profile):
    st = stack.Stack(args.build, workdir=tempfile.mkdtemp(prefix="drain-", dir=args.dir))
    perf = None
    try:
        st.start_broker()
        st.start_cloud()
        qpath = st.path("queue-gw-01.db")
        shutil.copyfile(prefilled, qpath)
        pids = {"mosquitto": st.procs["mosquitto"].p.pid,
                "meter-cloud": st.procs["meter-cloud"].p.pid}
        cpu0 = {k: cpu_s(p) for k, p in pids.items()}
        io0 = io(pids["meter-cloud"])
        t0 = time.monotonic()
        agent = st.start_agent(agent_cfg(st, qpath, batch_max, inflight_max, window))
        pids["meter-agent"] = agent.p.pid
        cpu0["meter-agent"] = 0.0
        t_first = None
        n = 0
        deadline = t0 + args.timeout
        while time.monotonic() < deadline:
            if not agent.alive():
                raise RuntimeError("meter-agent exited:\n" + agent.tail())
            n, dups, resends = gateway(st, stream)
            if n > 0 and t_first is None:
                t_first, n_first = time.monotonic(), n
                if profile:  # now that every thread of the agent runs
                    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F",
                                             "499", "-o", st.path("perf.data"), "-p",
                                             ",".join(str(p) for p in pids.values())],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if n >= args.count:
                break
            time.sleep(0.2)
        t1 = time.monotonic()
        cpu1 = {k: cpu_s(p) for k, p in pids.items()}
        io1 = io(pids["meter-cloud"])
        io1a = io(pids["meter-agent"])
        if t_first is None:
            raise RuntimeError(f"no ack in {args.timeout} s")
        # a run that does not finish in time is reported with what it did confirm
        res = {"batch_max": batch_max, "inflight_max": inflight_max, "window": window,
               "seconds": t1 - t0,
               "done": n >= args.count, "upto": n, "duplicates": dups, "resends": resends,
               "rate": min(n, args.count) / (t1 - t0), "first_ack_s": t_first - t0,
               "steady_rate": (n - n_first) / (t1 - t_first) if t1 > t_first else 0,
               "cpu": {k: cpu1[k] - cpu0[k] for k in pids},
               "cloud_io": {k: io1[k] - io0[k] for k in io1}, "agent_io": io1a}
        if perf:
            perf.send_signal(2)
            perf.wait(timeout=60)
            perf = None
            res["profile"] = {}
            for c in ("meter-agent", "mosquitto", "meter-cloud"):
                rows = perf_report(st.path("perf.data"), c, "dso,sym")
                dsos = {}
                for pct, dso, _ in rows:
                    dsos[dso] = dsos.get(dso, 0) + pct
                res["profile"][c] = (sorted(((p, d, "") for d, p in dsos.items()),
                                            reverse=True)[:6], rows[:args.top])
        return res
    finally:
        if perf:
            perf.kill()
            perf.wait()
        st.stop()
        if not args.keep:
            shutil.rmtree(st.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="the CMake build folder")
    ap.add_argument("--count", type=int, default=1000000, help="backlog, readings")
    ap.add_argument("--values", type=int, default=16, help="values per reading")
    ap.add_argument("--runs", type=int, default=1, help="runs of each setting (median)")
    ap.add_argument("--sweep", action="store_true", help="also the other uplink settings")
    ap.add_argument("--setting", action="append", default=[],
                    help="BATCH_MAX:INFLIGHT_MAX[:WINDOW] to run (repeatable; replaces the "
                    "default; WINDOW defaults to 20000)")
    ap.add_argument("--profile", action="store_true", help="perf profile of the first setting")
    ap.add_argument("--top", type=int, default=12, help="profile rows per process")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds per run at most; a run cut short reports what was confirmed")
    ap.add_argument("--dir", default="/tmp", help="where the run folders go")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    ap.add_argument("--queue-file", help="use this file made by queue_bench --prefill (it is "
                    "copied, not changed) instead of making one; --count must match it")
    args = ap.parse_args()

    settings = [tuple(int(x) for x in (s + ":20000").split(":")[:3]) for s in args.setting]
    settings = settings or [DEFAULT]
    if args.sweep:
        settings += [s for s in SWEEP if s not in settings]
    bench = os.path.join(args.build, "tools", "bench", "queue_bench")
    pre_dir = tempfile.mkdtemp(prefix="drain-prefill-", dir=args.dir)
    try:
        if args.queue_file:
            prefilled = args.queue_file
            db = sqlite3.connect(f"file:{prefilled}?mode=ro", uri=True)
            meta = dict(db.execute("SELECT key, value FROM meta"))
            rows = db.execute("SELECT count(*) FROM q").fetchone()[0]
            db.close()
            if rows != args.count:
                raise SystemExit(f"{prefilled} holds {rows} readings, not --count {args.count}")
            info = {"stream": meta["stream"], "seconds": "0"}
        else:
            prefilled = os.path.join(pre_dir, "queue.db")
            out = subprocess.run([bench, "--prefill", prefilled, "--count", str(args.count),
                                  "--meters", "32", "--values", str(args.values)],
                                 capture_output=True, text=True, check=True).stdout
            info = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        stream = info["stream"]
        size = os.path.getsize(prefilled)
        print(f"drain_bench: {args.count} readings of {args.values} values prefilled in "
              f"{float(info['seconds']):.1f} s ({size / 1e6:.0f} MB queue file, {args.dir} on "
              f"{fs_type(args.dir)}); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
              flush=True)
        results = []
        for i, (b, f, w) in enumerate(settings):
            runs = []
            for r in range(args.runs):
                res = run_one(args, prefilled, stream, b, f, w,
                              args.profile and i == 0 and r == 0)
                runs.append(res)
                print(f"  batch_max {b:5d} inflight_max {f:4d} window {w:7d}: "
                      + ("" if res["done"] else f"NOT DONE, upto {res['upto']}, ")
                      + f"{res['seconds']:6.1f} s, dups {res['duplicates']}, resends "
                      f"{res['resends']}, "
                      f"{res['rate']:8.0f} readings/s (steady {res['steady_rate']:.0f}/s, first "
                      f"ack after {res['first_ack_s']:.1f} s); CPU s: " +
                      ", ".join(f"{k} {v:.1f}" for k, v in res["cpu"].items()) +
                      "; bytes per reading: cloud " +
                      ", ".join(f"{k} {v / max(res['upto'], 1):.0f}"
                                for k, v in res["cloud_io"].items())
                      + ", agent " +
                      ", ".join(f"{k} {v / max(res['upto'], 1):.0f}"
                                for k, v in res["agent_io"].items()),
                      flush=True)
            results.append(runs)
    finally:
        shutil.rmtree(pre_dir, ignore_errors=True)

    print("\n| batch_max | inflight_max | window | runs | seconds (median) |"
          " readings/s (median) | steady readings/s | vs target 100k | duplicates stored |"
          " agent resends | CPU us per reading: agent | broker | cloud |"
          " cloud bytes written per reading |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for runs in results:
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        cpu = lambda k: statistics.median(r["cpu"][k] for r in runs)  # noqa: E731
        b, f, w = runs[0]["batch_max"], runs[0]["inflight_max"], runs[0]["window"]
        n = max(min(med("upto"), args.count), 1)  # per reading confirmed (all when done)
        tag = " (default)" if (b, f, w) == DEFAULT else ""
        done = all(r["done"] for r in runs)
        secs = f"{med('seconds'):.1f}" if done else f"> {med('seconds'):.0f} (upto {med('upto'):.0f})"
        print(f"| {b}{tag} | {f} | {w} | {len(runs)} | {secs} | {med('rate'):.0f} |"
              f" {med('steady_rate'):.0f} | {med('rate') / TARGET_RPS:.2f} |"
              f" {med('duplicates'):.0f} | {med('resends'):.0f} |"
              f" {cpu('meter-agent') * 1e6 / n:.1f} |"
              f" {cpu('mosquitto') * 1e6 / n:.1f} |"
              f" {cpu('meter-cloud') * 1e6 / n:.1f} |"
              f" {statistics.median(r['cloud_io']['write_bytes'] for r in runs) / n:.0f} |")
    for runs in results:
        prof = runs[0].get("profile")
        if not prof:
            continue
        print(f"\nperf profile (cpu-clock, self time) of batch_max {runs[0]['batch_max']}, "
              f"inflight_max {runs[0]['inflight_max']}:")
        for comm, (dsos, rows) in prof.items():
            print(f"\n{comm}: " + ", ".join(f"{d} {p:.0f}%" for p, d, _ in dsos))
            for pct, dso, sym in rows:
                print(f"  {pct:5.1f}%  {dso:28s} {sym}")
    return 0


def fs_type(path):
    out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", path], capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
