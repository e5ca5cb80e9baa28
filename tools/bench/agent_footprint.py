#!/usr/bin/env python3
"""agent_footprint: meter-agent's resident memory and CPU.

Two phases, each on a private mosquitto, meter-sim and meter-cloud (tools/stack.py), with
the agent's default (durable) queue:

  memory  32 meters (16 SDM630 + 16 SDM120 on Modbus TCP) every 10 s: VmRSS and VmHWM from
          /proc/PID/status after --settle seconds, and what the resident pages are, from
          /proc/PID/smaps: each library's code, symbol and relocation tables, relocated
          data (RELRO), read-only and writable data; the main malloc arena ([heap]), the
          other threads' malloc arenas, each thread's stack (found by the thread's stack
          pointer in /proc/PID/task/TID/syscall), other anonymous memory; resident and
          private dirty KiB of each.
  cpu     100 meters (50 + 50) every 1 s on Modbus TCP: utime + stime of the agent from
          /proc/PID/stat over --seconds (at least 60), as a share of one core, per thread too.

Every process it starts is stopped at the end, also on failure or Ctrl-C. Prints Markdown
tables for docs/benchmarks.md. Standard library only; run with /usr/bin/python3.

  tools/bench/agent_footprint.py --build build [--seconds 60] [--phase memory|cpu]
      [--env NAME=VALUE]... [--agent PATH]     # e.g. MALLOC_ARENA_MAX=1; a patched agent
"""
import argparse
import json
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


def read_smaps(pid):
    """Every mapping of /proc/PID/smaps in address order: dict with lo, hi, perms, path and
    the KiB fields (Rss, Private_Dirty, ...)."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if not parts[0].endswith(":") and "-" in parts[0] and len(parts) >= 5:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                maps.append({"lo": lo, "hi": hi, "perms": parts[1],
                             "path": parts[5] if len(parts) > 5 else ""})
            elif maps and parts[0].endswith(":") and len(parts) >= 2 and parts[1].isdigit():
                maps[-1][parts[0][:-1]] = int(parts[1])
    return maps


def thread_sps(pid):
    """{tid: stack pointer} from /proc/PID/task/TID/syscall (a blocked thread's registers;
    "running" threads have none)."""
    out = {}
    for t in sorted(int(x) for x in os.listdir(f"/proc/{pid}/task")):
        try:
            with open(f"/proc/{pid}/task/{t}/syscall") as f:
                fields = f.read().split()
            if len(fields) >= 9:
                out[t] = int(fields[7], 16)
        except (OSError, ValueError):
            pass
    return out


ARENA = 64 << 20  # glibc's per-thread malloc heaps: 64 MiB aligned reservations


def classify(maps, sps, main_tid):
    """Names every mapping: a library's code / read-only data / writable data (relocated,
    .data, .bss), [heap] (the main malloc arena), each thread's stack (an anonymous
    mapping after a guard page that holds the thread's stack pointer), the other malloc
    arenas (anonymous, 64 MiB aligned, the unused rest PROT_NONE), other anonymous memory
    (large malloc blocks mapped alone, libraries' .bss tails). Returns [(kind, name, map)]."""
    out = []
    tids = sorted(sps)
    for i, m in enumerate(maps):
        path = m["path"]
        if path.startswith("/"):
            lib = os.path.basename(path)
            same = [x for x in maps[:i] if x["path"] == path]
            nxt = maps[i + 1] if i + 1 < len(maps) else None
            if m["perms"] == "r-xp":
                part = "code"
            elif m["perms"] == "r--p" and not any(x["perms"] == "r-xp" for x in same):
                part = "headers, symbols, relocations"  # what the dynamic linker reads
            elif m["perms"] == "r--p" and nxt and nxt["path"] == path and nxt["perms"] == "rw-p":
                part = "relocated data (RELRO)"  # pointers the dynamic linker wrote
            elif m["perms"] == "r--p":
                part = "read-only data"
            elif m["perms"] == "rw-p":
                part = "writable data"
            else:
                part = m["perms"]
            out.append(("library", f"{lib} {part}", m))
        elif path == "[heap]":
            out.append(("heap", "[heap] (main malloc arena)", m))
        elif path == "[stack]":
            out.append(("stack", "main thread stack", m))
        elif path.startswith("["):
            out.append(("kernel", path, m))
        elif m["perms"] == "---p":
            out.append(("reserved", "guard pages and unused arena space", m))
        else:
            owner = [t for t in tids if m["lo"] <= sps[t] < m["hi"] and t != main_tid]
            prev_guard = i > 0 and maps[i - 1]["perms"] == "---p" and maps[i - 1]["hi"] == m["lo"]
            next_res = (i + 1 < len(maps) and maps[i + 1]["perms"] == "---p"
                        and maps[i + 1]["lo"] == m["hi"])
            if owner:
                out.append(("thread stack", f"thread {tids.index(owner[0]) + 1} stack", m))
            elif prev_guard and not next_res and (m["hi"] - m["lo"]) >= (1 << 20):
                out.append(("thread stack", "thread stack (thread running)", m))
            elif m["lo"] % ARENA == 0 and next_res:
                out.append(("arena", "malloc arena (a thread's)", m))
            else:
                out.append(("anon", "other anonymous", m))
    return out


def smaps(pid):
    """Resident KiB by mapping name (see classify), largest first, with Private_Dirty."""
    sps = thread_sps(pid)
    rows = {}
    for kind, name, m in classify(read_smaps(pid), sps, pid):
        r = rows.setdefault(name, {"kind": kind, "rss": 0, "dirty": 0, "size": 0, "n": 0})
        r["rss"] += m.get("Rss", 0)
        r["dirty"] += m.get("Private_Dirty", 0)
        r["size"] += (m["hi"] - m["lo"]) // 1024
        r["n"] += 1
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["rss"]))


def smaps_by_kind(rows):
    kinds = {}
    for name, r in rows.items():
        k = r["kind"]
        if k == "library":
            k = "library " + name.split(" ", 1)[1]
        d = kinds.setdefault(k, {"rss": 0, "dirty": 0})
        d["rss"] += r["rss"]
        d["dirty"] += r["dirty"]
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["rss"]))


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
    path = st.path("meter-agent.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    os.chmod(path, 0o600)
    env = dict(os.environ)
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    agent_bin = args.agent or os.path.join(st.build, "agent", "meter-agent")
    agent = st._start("meter-agent", [agent_bin, "-d", "-f", path], env=env)
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
          f"({polls} readings confirmed by the cloud)"
          + (f"; agent {args.agent}" if args.agent else "")
          + (f"; env {' '.join(args.env)}" if args.env else "") + "\n")
    print("| VmRSS KiB | VmHWM KiB | RssAnon KiB | RssFile KiB | Pss KiB | USS KiB | threads |"
          " VmSize KiB | target RSS KiB | RSS vs target | Node-RED (cited) MiB |"
          " Node-RED / agent |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    print(f"| {s['VmRSS']} | {s['VmHWM']} | {s['RssAnon']} | {s['RssFile']} | {pss} | {uss} |"
          f" {s['Threads']} |"
          f" {s['VmSize']} | {RSS_TARGET_KIB} | {s['VmRSS'] / RSS_TARGET_KIB:.2f} |"
          f" {NODE_RED_MIB} | {NODE_RED_MIB * 1024 / s['VmRSS']:.0f}x |")
    print("\nResident KiB by kind:\n")
    print("| kind | resident KiB | of which private dirty KiB |")
    print("|---|--:|--:|")
    for k, v in smaps_by_kind(m).items():
        print(f"| {k} | {v['rss']} | {v['dirty']} |")
    print(f"\nResident KiB by mapping (every mapping with {args.min_kib} KiB or more):\n")
    print("| mapping | resident KiB | private dirty KiB | mapped KiB | mappings |")
    print("|---|--:|--:|--:|--:|")
    for k, v in m.items():
        if v["rss"] >= args.min_kib:
            print(f"| {k} | {v['rss']} | {v['dirty']} | {v['size']} | {v['n']} |")


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
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set in the agent's environment (e.g. MALLOC_ARENA_MAX=1); repeat")
    ap.add_argument("--agent", help="another meter-agent binary (e.g. a patched build)")
    ap.add_argument("--min-kib", type=int, default=16,
                    help="memory phase: list mappings with at least this many KiB resident")
    args = ap.parse_args()
    if args.phase in ("memory", "both"):
        phase_memory(args)
    if args.phase in ("cpu", "both"):
        phase_cpu(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
