#!/usr/bin/env python3
"""ingest_bench: how many readings per second meter-cloud stores from a real broker.

Each run starts a private mosquitto and meter-cloud on a new store (tools/stack.py), then
runs ingest_pub (tools/bench/ingest_pub.c), which pre-encodes COUNT readings in batches of
BATCH exactly as meter-agent sends them (METERS meters in turn, VALUES values each) and
publishes them with QoS 1, at most WINDOW batches ahead of the cloud's acks. The run's time
is from the first publish until GET /api/v1/gateways/gw-01 shows the stream complete up to
COUNT (polled every 20 ms; ingest_pub's own time until the last ack is printed too). It
reads meter-cloud's CPU time (/proc/PID/stat) and bytes written (/proc/PID/io) over the
run; with --profile it records a perf profile (-e cpu-clock) of meter-cloud in the first run.

Prints each run and a Markdown table (medians) for docs/benchmarks.md. Every process it
starts is stopped at the end, also on failure. Standard library only; /usr/bin/python3.

  tools/bench/ingest_bench.py --build build                    # 5 runs of 1,000,000 readings
  tools/bench/ingest_bench.py --build build --count 200000 --runs 3 --batch 500
  tools/bench/ingest_bench.py --build /tmp/old/build --pub build/tools/bench/ingest_pub
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import stack  # noqa: E402

TARGET_RPS = 200000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        d = dict(line.split(": ") for line in f.read().splitlines())
    return int(d["write_bytes"])


def upto(st, stream):
    code, body = st.get("/api/v1/gateways/gw-01")
    if code != 200:
        return 0
    for s in body.get("streams", []):
        if s["stream"] == stream:
            return s["upto"]
    return 0


def run_one(args, profile):
    st = stack.Stack(args.build, workdir=tempfile.mkdtemp(prefix="ingest-", dir=args.dir))
    perf = None
    try:
        st.start_broker()
        st.start_cloud()
        cloud = st.procs["meter-cloud"].p.pid
        pub = args.pub or os.path.join(args.build, "tools", "bench", "ingest_pub")
        env = dict(os.environ, MLK_BENCH_PASSWORD=st.users["gw-01"])
        if profile:
            perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999",
                                     "-g", "-o", st.path("perf.data"), "-p", str(cloud)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        cpu0, wb0 = cpu_s(cloud), write_bytes(cloud)
        p = subprocess.Popen([pub, "127.0.0.1", str(st.broker_port), st.prefix, "gw-01",
                              str(args.count), str(args.batch), str(args.meters),
                              str(args.values), str(args.window), str(int(args.timeout))],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # ingest_pub encodes first and says so on stderr; time from its first publish
        line = p.stderr.readline()
        t0 = time.monotonic()
        stream = line.rsplit("stream ", 1)[-1].strip()
        n = 0
        deadline = t0 + args.timeout
        while time.monotonic() < deadline:
            n = upto(st, stream)
            if n >= args.count:
                break
            if p.poll() not in (None, 0):
                break
            time.sleep(0.02)
        t1 = time.monotonic()
        cpu1, wb1 = cpu_s(cloud), write_bytes(cloud)
        out, err = p.communicate(timeout=args.timeout)
        info = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        if perf:
            perf.send_signal(2)
            perf.wait(timeout=60)
            perf = None
            rep = subprocess.run(["perf", "report", "-i", st.path("perf.data"), "--stdio",
                                  "--no-children", "--sort", "dso,sym", "--percentage",
                                  "relative", "-g", "none"], capture_output=True, text=True)
            rows = [ln for ln in rep.stdout.splitlines() if ln.strip().endswith("]") or "%" in ln]
            print("perf profile of meter-cloud (cpu-clock, self time):")
            for ln in [r for r in rows if r.strip() and r.strip()[0].isdigit()][:args.top]:
                print("  " + ln.strip())
        return {"done": n >= args.count, "upto": n, "seconds": t1 - t0,
                "rate": min(n, args.count) / (t1 - t0),
                "acked_s": float(info.get("acked", "nan")),
                "cpu_us": (cpu1 - cpu0) * 1e6 / max(n, 1),
                "wbytes": (wb1 - wb0) / max(n, 1), "pub_err": err.strip()[-300:]}
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
    ap.add_argument("--count", type=int, default=1000000, help="readings per run")
    ap.add_argument("--batch", type=int, default=500, help="readings per batch (agent default)")
    ap.add_argument("--meters", type=int, default=32)
    ap.add_argument("--values", type=int, default=16, help="values per reading")
    ap.add_argument("--window", type=int, default=64, help="batches ahead of the acks")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="perf profile of the first run")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--pub", help="ingest_pub to use (default: the one in --build); with it,"
                    " --build may be the build of another version of meter-cloud")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    args.pub = args.pub and os.path.abspath(args.pub)

    print(f"ingest_bench: {args.count} readings of {args.values} values, {args.meters} meters, "
          f"batches of {args.batch}, window {args.window}; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    runs = []
    for i in range(args.runs):
        r = run_one(args, args.profile and i == 0)
        runs.append(r)
        print(f"  run {i + 1}: " + ("" if r["done"] else f"NOT DONE (upto {r['upto']}) ")
              + f"{r['seconds']:.2f} s, {r['rate']:.0f} readings/s (last ack after "
              f"{r['acked_s']:.2f} s), cloud CPU {r['cpu_us']:.2f} us and {r['wbytes']:.0f} "
              f"bytes written per reading" + (f"; {r['pub_err']}" if not r["done"] else ""),
              flush=True)
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    print("\n| readings | batch | runs | readings/s (median) | min..max | vs target 200k |"
          " cloud CPU us per reading | cloud bytes written per reading |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    print(f"| {args.count} | {args.batch} | {len(runs)} | {med('rate'):.0f} |"
          f" {min(r['rate'] for r in runs):.0f}..{max(r['rate'] for r in runs):.0f} |"
          f" {med('rate') / TARGET_RPS:.2f} | {med('cpu_us'):.2f} | {med('wbytes'):.0f} |")
    return 0 if all(r["done"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
