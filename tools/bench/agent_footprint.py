#!/usr/bin/env python3
"""agent_footprint: meter-agent's resident memory and CPU.

Two phases, each on a private mosquitto, meter-sim and meter-cloud (tools/stack.py), with
the agent's default (durable) queue:

  memory  32 meters (16 SDM630 + 16 SDM120 on Modbus TCP) every 10 s: VmRSS and VmHWM from
          /proc/PID/status after --settle seconds, and what the resident pages are
          (/proc/PID/smaps by mapping: libraries, heap, thread stacks, other anonymous).
  cpu     100 meters (50 + 50) every 1 s on Modbus TCP: utime + stime of the agent from
          /proc/PID/stat over --seconds (at least 60), as a share of one core, per thread too.

Every process it starts is stopped at the end, also on failure or Ctrl-C. Prints Markdown
tables for docs/benchmarks.md. Standard library only; run with /usr/bin/python3.

  tools/bench/agent_footprint.py --build build [--seconds 60] [--phase memory|cpu]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import stack  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
RSS_TARGET_KIB = 4 * 1024
CPU_TARGET = 2.0  # percent of one core
NODE_RED_MIB = 96  # /work/shared/reference/environment.md: Node-RED + node-red-contrib-modbus


def status(pid):
    with open(f"/proc/{pid}/status") as f:
        d = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    return {k: int(d[k].split()[0]) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile",
                                              "VmSize", "Threads") if k in d}


def rollup(pid):
    """Pss (shared pages divided among their users) and USS (private pages) in KiB."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        d = {ln.split(":")[0]: int(ln.split()[1]) for ln in f.read().splitlines()[1:]}
    return d["Pss"], d["Private_Clean"] + d["Private_Dirty"]


def smaps(pid):
    """Resident KiB by kind of mapping: each library (file), [heap], thread stacks (8 MiB
    anonymous mappings next to a guard page), other anonymous memory, [stack]."""
    out, cur, size = {}, None, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                path = parts[5] if len(parts) > 5 else ""
                cur = os.path.basename(path) if path.startswith("/") else path or "anon"
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                size = (hi - lo) // 1024
                if cur == "anon" and size in (8192, 8188, 8196):
                    cur = "thread stacks (anon 8 MiB)"
                elif cur == "anon" and size >= 60000:
                    cur = "malloc arenas (anon 64 MiB)"
                elif cur == "anon":
                    cur = "other anon"
            elif parts[0] == "Rss:":
                out[cur] = out.get(cur, 0) + int(parts[1])
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def cpu_s(path):
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def threads(pid):
    """{tid: cpu seconds}, tids ascending (creation order: main, MQTT loop, uplink, buses)."""
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    out = {}
    for t in tids:
        try:
            out[t] = cpu_s(f"/proc/{pid}/task/{t}/stat")
        except OSError:
            pass
    return out


def start(args, n_meters, interval_ms):
    st = stack.Stack(args.build, workdir=tempfile.mkdtemp(prefix="footprint-", dir=args.dir))
    ms = [(f"m{u:03d}", "tcp", u, "sdm630" if u % 2 else "sdm120") for u in range(1, n_meters + 1)]
    st.start_broker()
    st.start_sim([f"{m[1]}:{m[2]}:{m[3]}" for m in ms])
    st.start_cloud()
    cfg = st.agent_config(ms, interval_ms=interval_ms)
    cfg["queue"]["durability"] = args.durability
    agent = st.start_agent(cfg)
    return st, agent


def stop(args, st):
    st.stop()
    if not args.keep:
        shutil.rmtree(st.dir, ignore_errors=True)


def phase_memory(args):
    st, agent = start(args, 32, 10000)
    try:
        time.sleep(args.settle)
        if not agent.alive():
            raise RuntimeError("meter-agent exited:\n" + agent.tail())
        s = status(agent.p.pid)
        m = smaps(agent.p.pid)
        pss, uss = rollup(agent.p.pid)
        polls = acked(st)
    finally:
        stop(args, st)
    print(f"\n### memory: 32 meters every 10 s, {args.durability}, after {args.settle:.0f} s "
          f"({polls} readings confirmed by the cloud)\n")
    print("| VmRSS KiB | VmHWM KiB | RssAnon KiB | RssFile KiB | Pss KiB | USS KiB | threads |"
          " VmSize KiB | target RSS KiB | RSS vs target | Node-RED (cited) MiB |"
          " Node-RED / agent |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    print(f"| {s['VmRSS']} | {s['VmHWM']} | {s['RssAnon']} | {s['RssFile']} | {pss} | {uss} |"
          f" {s['Threads']} |"
          f" {s['VmSize']} | {RSS_TARGET_KIB} | {s['VmRSS'] / RSS_TARGET_KIB:.2f} |"
          f" {NODE_RED_MIB} | {NODE_RED_MIB * 1024 / s['VmRSS']:.0f}x |")
    print("\nResident KiB by mapping (top 12):\n")
    print("| mapping | resident KiB |")
    print("|---|--:|")
    for k, v in list(m.items())[:12]:
        print(f"| {k} | {v} |")


def acked(st):
    code, body = st.get("/api/v1/gateways/gw-01")
    if code != 200:
        return 0
    return sum(s["upto"] for s in body.get("streams", []))


def phase_cpu(args):
    st, agent = start(args, 100, 1000)
    perf = None
    try:
        time.sleep(args.settle)
        pid = agent.p.pid
        if args.profile:
            perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999",
                                     "-o", st.path("perf.data"), "-p", str(pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c0, th0, t0, a0 = cpu_s(f"/proc/{pid}/stat"), threads(pid), time.monotonic(), acked(st)
        time.sleep(args.seconds)
        c1, th1, t1, a1 = cpu_s(f"/proc/{pid}/stat"), threads(pid), time.monotonic(), acked(st)
        if not agent.alive():
            raise RuntimeError("meter-agent exited:\n" + agent.tail())
        s = status(pid)
        prof = None
        if perf:
            perf.send_signal(2)
            perf.wait(timeout=60)
            perf = None
            prof = subprocess.run(["perf", "report", "-i", st.path("perf.data"), "--stdio",
                                   "--no-children", "--sort", "dso,sym"],
                                  capture_output=True, text=True).stdout
    finally:
        if perf:
            perf.kill()
            perf.wait()
        stop(args, st)
    wall = t1 - t0
    pct = 100 * (c1 - c0) / wall
    readings = a1 - a0
    print(f"\n### cpu: 100 meters every 1 s, {args.durability}, {wall:.0f} s measured after "
          f"{args.settle:.0f} s\n")
    print("| CPU s | wall s | % of one core | target % | vs target | readings confirmed |"
          " us CPU per reading | VmRSS KiB | VmHWM KiB |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    print(f"| {c1 - c0:.2f} | {wall:.0f} | {pct:.2f} | {CPU_TARGET} | {pct / CPU_TARGET:.2f} |"
          f" {readings} | {(c1 - c0) * 1e6 / max(readings, 1):.0f} | {s['VmRSS']} |"
          f" {s['VmHWM']} |")
    # Threads have no names; the first is main, the rest in creation order (in the agent of
    # this writing: the MQTT loop, the uplink, then one per bus).
    names = ["main"]
    print("\n| thread (creation order) | CPU s | % of one core |")
    print("|---|--:|--:|")
    for i, t in enumerate(th1):
        d = th1[t] - th0.get(t, 0)
        print(f"| {names[i] if i < len(names) else 'thread ' + str(i + 1)} | {d:.2f} |"
              f" {100 * d / wall:.2f} |")
    if prof:
        print("\nperf (cpu-clock, self time), top 20:\n")
        rows = [ln for ln in prof.splitlines() if ln.strip() and not ln.startswith("#")]
        for ln in rows[:20]:
            print("    " + ln.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="the CMake build folder")
    ap.add_argument("--phase", choices=("memory", "cpu", "both"), default="both")
    ap.add_argument("--seconds", type=float, default=60, help="cpu phase: measured seconds")
    ap.add_argument("--settle", type=float, default=30, help="seconds before measuring")
    ap.add_argument("--profile", action="store_true", help="cpu phase: perf profile too")
    ap.add_argument("--durability", choices=("durable", "memory-first"), default="durable",
                    help="the agent's queue.durability")
    ap.add_argument("--dir", default="/tmp", help="where the run folders go")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    args = ap.parse_args()
    if args.phase in ("memory", "both"):
        phase_memory(args)
    if args.phase in ("cpu", "both"):
        phase_cpu(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
