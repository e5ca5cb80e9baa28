#!/usr/bin/env python3
"""rtu_bench: meter-agent's Modbus RTU bus cycle time against the line's lower bound.

One RTU bus on meter-sim's pseudo-terminal with line-speed emulation (--line-speed, --baud,
--parity, --stop-bits, --turnaround), 8 meters by default (SDM630 and SDM120 in turn), all
polled at the shortest interval the agent takes (100 ms), so the bus is never idle: a meter
is polled again as soon as every other meter had its turn. A private mosquitto takes the
agent's readings and health messages (no cloud: the cycle is the bus's).

What is measured, for each framing (8N1, 8E1 by default):

  cycle     the time between two polls of the same meter: from meter-sim's served log (one
            line per reply, "t" when it went out), the first request of each poll; the
            median over every meter and cycle in --seconds after --settle.
  rtt       the agent's own view, from its health messages: each meter's rtt_ms (the line
            time of its last poll) and requests_per_poll; their sum over the meters is the
            bus's busy time per cycle, and cycle - sum(rtt) is the time the bus thread
            spends between polls (queueing the reading, hooks, scheduling).
  bound     the line-rate lower bound of one cycle, from the read plan the agent really
            used (the requests meter-sim served in one poll of each meter, checked against
            requests_per_poll): per request, (8 + 5 + 2 * registers) characters of request
            and reply plus two 3.5-character silences, at bits_per_char / baud, plus the
            simulator's turnaround.
  reaction  meter-sim's served log has, for each RTU request, the time from the previous
            reply's write to its arrival (after_reply_us): the agent's reaction, libmodbus
            and the pseudo-terminal both ways included. Up to the 3.5-character silence a
            master must keep anyway it costs nothing; beyond it the line stands idle.
  late      meter-sim logs how long after its due time each reply was written (late_us):
            its own scheduling delay, which holds the line as long.
  raw       the same plan read by a minimal master (this script, raw bytes on the
            pseudo-terminal, next request as soon as a reply is complete) for --raw-cycles
            cycles after the agent stopped: what the simulator and the pseudo-terminal
            alone cost above the bound.

Prints one Markdown table row per framing and run (ratio = bound / measured; target >= 0.9),
and the medians over --runs runs. Every process it starts is stopped at the end, also on
failure or Ctrl-C. Standard library only; run with /usr/bin/python3.

  tools/bench/rtu_bench.py --build build [--runs 3] [--seconds 60] [--framing 8N1,8E1]
      [--agent PATH] [--env NAME=VALUE]...      # a patched agent, its environment
"""
import argparse
import json
import os
import select
import shutil
import subprocess
import statistics
import sys
import tempfile
import termios
import time
import tty

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import stack  # noqa: E402

TARGET = 0.9
INTERVAL_MS = 100  # the agent's shortest interval: the bus never waits for a slot


def bits_per_char(framing):
    """"8N1" -> 10: start + 8 data + parity (E or O) + stop bits."""
    data, parity, stop = int(framing[0]), framing[1], int(framing[2])
    return 1 + data + (1 if parity in "EO" else 0) + stop


def request_bound_s(count, bits, baud, turnaround_ms):
    """One read of count registers: 8 + (5 + 2 * count) characters and two 3.5-character
    silences (after the request, after the reply) at bits / baud, plus the turnaround."""
    chars = 8 + 5 + 2 * count + 7
    return chars * bits / baud + turnaround_ms / 1000


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_request(unit, fc, addr, count):
    body = bytes([unit, fc, addr >> 8, addr & 0xFF, count >> 8, count & 0xFF])
    c = crc16(body)
    return body + bytes([c & 0xFF, c >> 8])


class Tap:
    """mosquitto_sub as the cloud's account; messages as (topic, payload)."""

    def __init__(self, st, topics, name="tap"):
        self.path = st.path(name + ".out")
        out = open(self.path, "wb")
        argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(st.broker_port), "-u",
                "meter-cloud", "-P", st.users["meter-cloud"], "-v", "-q", "0"]
        for t in topics:
            argv += ["-t", t]
        st._start(name, argv, stdout=out)
        out.close()
        self.off = 0
        self.msgs = []

    def poll(self):
        with open(self.path, "rb") as f:
            f.seek(self.off)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return self.msgs
        self.off += end + 1
        for line in data[:end].decode("utf-8", "replace").split("\n"):
            topic, _, payload = line.partition(" ")
            try:
                self.msgs.append((topic, json.loads(payload)))
            except ValueError:
                pass
        return self.msgs


def served(path):
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line being written
    return out


def plans_from_log(log, units):
    """Per unit, its poll's requests [(fc, addr, count)] in order: the requests between two
    consecutive starts of its poll (the first request's address comes back each cycle)."""
    per = {}
    for e in log:
        if e.get("bus") == "rtu" and e["unit"] in units and "fault" not in e:
            per.setdefault(e["unit"], []).append((e["t"], e["fc"], e["addr"], e["count"]))
    plans, starts = {}, {}
    for u, reqs in per.items():
        first = reqs[0][1:]
        idx = [i for i, r in enumerate(reqs) if r[1:] == first]
        if len(idx) < 3:
            raise RuntimeError(f"unit {u}: fewer than 3 polls served")
        # a whole poll between the second and third start (the first may be partial)
        plans[u] = [r[1:] for r in reqs[idx[1]:idx[2]]]
        starts[u] = [reqs[i][0] for i in idx]
    return plans, starts


class RawMaster:
    """The pseudo-terminal's master side, raw bytes, a request as soon as a reply is in."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIOFLUSH)

    def close(self):
        os.close(self.fd)

    def read(self, unit, fc, addr, count, timeout=2.0):
        want = 5 + 2 * count
        os.write(self.fd, rtu_request(unit, fc, addr, count))
        got = b""
        deadline = time.monotonic() + timeout
        while len(got) < want:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise RuntimeError(f"unit {unit}: no whole reply ({got.hex()})")
            got += os.read(self.fd, 512)
        if crc16(got[:want]) != 0 or got[0] != unit or got[1] != fc:
            raise RuntimeError(f"unit {unit}: bad reply {got.hex()}")


def one_run(args, framing, run_no):
    bits = bits_per_char(framing)
    parity, stop_bits = framing[1], int(framing[2])
    models = args.models.split(",")
    meters = [(f"r{u}", "rtu", u, models[(u - 1) % len(models)]) for u in range(1, args.meters + 1)]
    units = {m[2]: m for m in meters}
    st = stack.Stack(args.build, workdir=tempfile.mkdtemp(prefix="rtubench-", dir=args.dir))
    raw_cycles = []
    try:
        st.start_broker()
        st.start_sim([f"rtu:{m[2]}:{m[3]}" for m in meters],
                     extra=["--line-speed", "--baud", str(args.baud), "--parity", parity,
                            "--stop-bits", str(stop_bits), "--turnaround", str(args.turnaround)])
        cfg = st.agent_config(meters, interval_ms=INTERVAL_MS)
        bus = cfg["buses"][0]
        bus.update({"baud": args.baud, "parity": parity, "stop_bits": stop_bits,
                    "timeout_ms": args.timeout_ms, "retries": 1,
                    "frame_delay_ms": args.frame_delay_ms})
        cfg["queue"]["durability"] = args.durability
        cfg["health"] = {"interval_ms": 1000}
        tap = Tap(st, [f"{st.prefix}/gw-01/health"])
        path = st.path("meter-agent.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        os.chmod(path, 0o600)
        env = dict(os.environ)
        for kv in args.env:
            k, _, v = kv.partition("=")
            env[k] = v
        agent = st._start("meter-agent", [args.agent or os.path.join(st.build, "agent",
                                                                     "meter-agent"),
                                          "-d", "-f", path], env=env)

        def health():
            h = [p for t, p in tap.poll() if t.endswith("/health")]
            return h[-1] if h and len(h[-1].get("meters", [])) == len(meters) else None

        stack.wait_for(lambda: (h := health()) and all(m["online"] for m in h["meters"]), 60,
                       "every meter online")
        time.sleep(args.settle)
        t0_ms = int(time.time() * 1000)
        h0 = health()
        n0 = len(tap.poll())
        time.sleep(args.seconds)
        t1_ms = int(time.time() * 1000)
        h1 = health()
        if not agent.alive():
            raise RuntimeError("meter-agent exited:\n" + agent.tail())
        hs = [p for t, p in tap.poll()[n0:] if t.endswith("/health")]
        st.stop_proc("meter-agent")

        # the raw master on the same simulator, the same plan
        log = served(st.served_log)
        plans, starts = plans_from_log(log, set(units))
        rm = RawMaster(st.path("rtu0"))
        try:
            for _ in range(2):  # warm-up
                for u in sorted(plans):
                    for fc, addr, count in plans[u]:
                        rm.read(u, fc, addr, count)
            t_raw_ms = int(time.time() * 1000) + 1
            for _ in range(args.raw_cycles):
                c0 = time.monotonic()
                for u in sorted(plans):
                    for fc, addr, count in plans[u]:
                        rm.read(u, fc, addr, count)
                raw_cycles.append(time.monotonic() - c0)
        finally:
            rm.close()
        log = served(st.served_log)
    finally:
        st.stop()
        if not args.keep:
            shutil.rmtree(st.dir, ignore_errors=True)
    silence_us = 3.5 * bits * 1e6 / args.baud
    agent_log = [e for e in log if t0_ms <= e["t"] <= t1_ms and "after_reply_us" in e]
    react = [e["after_reply_us"] for e in agent_log]
    # a poll's first request comes after another meter's poll: the bus thread queued that
    # reading (queue_append) and picked the next meter in between
    firsts = {u: (p[0][0], p[0][1]) for u, p in plans.items()}
    react_first = [e["after_reply_us"] for e in agent_log
                   if (e["fc"], e["addr"]) == firsts.get(e["unit"])]
    react_next = [e["after_reply_us"] for e in agent_log
                  if (e["fc"], e["addr"]) != firsts.get(e["unit"])]
    react_raw = [e["after_reply_us"] for e in log
                 if e["t"] > t_raw_ms and "after_reply_us" in e]
    if not react or not react_raw:
        raise RuntimeError("meter-sim logged no after_reply_us")
    idle_us = sum(max(0.0, a - silence_us) for a in react)
    # meter-sim's own delay: replies written after their due time (older builds: none)
    late = [e["late_us"] for e in log if t0_ms <= e["t"] <= t1_ms and "late_us" in e]

    # cycle times: per meter, between starts of its polls inside the measured window
    cycles = []
    for u, ts in starts.items():
        w = [t for t in ts if t0_ms <= t <= t1_ms]
        cycles += [(b - a) / 1000 for a, b in zip(w, w[1:])]
    if not cycles:
        raise RuntimeError("no whole cycle in the measured window")
    hm = {m["id"]: m for m in h1["meters"]}
    for u, (mid, _, _, model) in units.items():
        rpp = hm[mid]["requests_per_poll"]
        if rpp != len(plans[u]):
            raise RuntimeError(f"{mid}: agent says {rpp} requests per poll, "
                               f"meter-sim served {len(plans[u])}")
    bound = sum(request_bound_s(count, bits, args.baud, args.turnaround)
                for u in plans for _, _, count in plans[u])
    # the agent's line time per cycle: per health message, the sum of the meters' rtt_ms
    rtt_sums = [sum(m["rtt_ms"] for m in h["meters"]) / 1000 for h in hs
                if len(h.get("meters", [])) == len(meters)]
    polls = sum(hm[m[0]]["polls"] for m in meters) - sum(
        {x["id"]: x for x in h0["meters"]}[m[0]]["polls"] for m in meters)
    failures = sum(hm[m[0]]["failures"] for m in meters) - sum(
        {x["id"]: x for x in h0["meters"]}[m[0]]["failures"] for m in meters)
    cyc = statistics.median(cycles)
    rtt = statistics.median(rtt_sums) if rtt_sums else float("nan")
    raw = statistics.median(raw_cycles)
    return {
        "framing": framing, "run": run_no, "bits": bits,
        "requests": sum(len(p) for p in plans.values()),
        "registers": sum(c for p in plans.values() for _, _, c in p),
        "plans": {units[u][3]: p for u, p in plans.items()},
        "cycles": len(cycles), "cycle": cyc, "p10": quantile(cycles, 0.1),
        "p90": quantile(cycles, 0.9), "rtt_sum": rtt, "between": cyc - rtt,
        "bound": bound, "ratio": bound / cyc, "raw": raw, "raw_ratio": bound / raw,
        "polls": polls, "failures": failures, "load": os.getloadavg()[0],
        "mean": statistics.mean(cycles), "max": max(cycles),
        "react_med": statistics.median(react), "react_p99": quantile(react, 0.99),
        "react_max": max(react),
        "first_med": statistics.median(react_first), "first_p99": quantile(react_first, 0.99),
        "next_med": statistics.median(react_next), "next_p99": quantile(react_next, 0.99), "react_over": sum(a > silence_us for a in react) / len(react),
        "idle_per_cycle": idle_us / 1e6 / (len(cycles) / len(meters)) if cycles else 0,
        "react_raw_med": statistics.median(react_raw), "react_raw_p99": quantile(react_raw, 0.99),
        "silence_us": silence_us,
        "late_med": statistics.median(late) if late else float("nan"),
        "late_p99": quantile(late, 0.99) if late else float("nan"),
        "late_per_cycle": sum(late) / 1e6 / (len(cycles) / len(meters)) if late else float("nan"),
    }


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def fmt_ms(s):
    return f"{s * 1000:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="the CMake build folder")
    ap.add_argument("--framing", default="8N1,8E1", help="comma-separated, e.g. 8N1,8E1,8N2")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--turnaround", type=int, default=20, help="meter-sim --turnaround, ms")
    ap.add_argument("--meters", type=int, default=8)
    ap.add_argument("--models", default="sdm630,sdm120", help="profiles, in turn")
    ap.add_argument("--durability", choices=("durable", "memory-first"), default="durable")
    ap.add_argument("--timeout-ms", type=int, default=1000, help="the bus's timeout_ms")
    ap.add_argument("--frame-delay-ms", type=int, default=0, help="the bus's frame_delay_ms")
    ap.add_argument("--seconds", type=float, default=60, help="measured seconds per run")
    ap.add_argument("--settle", type=float, default=5, help="seconds before measuring")
    ap.add_argument("--raw-cycles", type=int, default=10, help="cycles of the raw master")
    ap.add_argument("--runs", type=int, default=1, help="runs per framing")
    ap.add_argument("--dir", default="/tmp", help="where the run folders go")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    ap.add_argument("--agent", help="another meter-agent binary (e.g. a patched build)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set in the agent's environment; repeat")
    args = ap.parse_args()
    framings = [f.strip().upper() for f in args.framing.split(",") if f.strip()]
    for f in framings:
        if len(f) != 3 or f[0] != "8" or f[1] not in "NEO" or f[2] not in "12":
            ap.error(f"--framing {f}: expected 8N1, 8E1, 8O1, 8N2, ...")

    try:  # the commit when the run starts (the binaries are those of --build)
        commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    results = []
    for r in range(1, args.runs + 1):
        for f in framings:
            res = one_run(args, f, r)
            results.append(res)
            print(f"run {r} {f}: cycle {fmt_ms(res['cycle'])} ms over {res['cycles']} cycles, "
                  f"bound {fmt_ms(res['bound'])} ms, ratio {res['ratio']:.3f}; raw master "
                  f"{fmt_ms(res['raw'])} ms ({res['raw_ratio']:.3f})", file=sys.stderr)

    first = results[0]
    print(f"\ncommit {commit}; command: {' '.join(sys.argv)}")
    print(f"\n{args.meters} meters ({args.models} in turn) on one RTU bus at {args.baud} baud, "
          f"turnaround {args.turnaround} ms, queue {args.durability}, frame_delay_ms "
          f"{args.frame_delay_ms}; {args.seconds:.0f} s per run after {args.settle:.0f} s"
          + (f"; agent {args.agent}" if args.agent else "")
          + (f"; env {' '.join(args.env)}" if args.env else ""))
    print("read plans: " + "; ".join(f"{m}: " + ", ".join(f"fc{fc} {a}+{c}" for fc, a, c in p)
                                     for m, p in sorted(first["plans"].items())))
    print(f"per cycle: {first['requests']} requests, {first['registers']} registers\n")
    print("| framing | run | poll intervals | cycle ms (median) | p10 | p90 | bound ms | bound / cycle |"
          " agent rtt sum ms | between polls ms | raw master ms | bound / raw | polls |"
          " failed | load avg |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for res in results:
        print(f"| {res['framing']} | {res['run']} | {res['cycles']} | {fmt_ms(res['cycle'])} |"
              f" {fmt_ms(res['p10'])} | {fmt_ms(res['p90'])} | {fmt_ms(res['bound'])} |"
              f" {res['ratio']:.3f} | {fmt_ms(res['rtt_sum'])} | {fmt_ms(res['between'])} |"
              f" {fmt_ms(res['raw'])} | {res['raw_ratio']:.3f} | {res['polls']} |"
              f" {res['failures']} | {res['load']:.1f} |")
    print("\nThe master's reaction (meter-sim's after_reply_us: from a reply's write to the next"
          " request's arrival, the pseudo-terminal both ways included) against the 3.5-character"
          " silence, which a reaction up to that long costs nothing:\n")
    print("| framing | run | cycle ms mean | cycle ms max | silence us | agent reaction us median |"
          " p99 | max | requests over the silence | line idle ms per cycle |"
          " agent, a poll's first request: median | p99 | agent, within a poll: median | p99 |"
          " raw master reaction us median | p99 | meter-sim late us median | p99 |"
          " meter-sim late ms per cycle |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for res in results:
        print(f"| {res['framing']} | {res['run']} | {fmt_ms(res['mean'])} | {fmt_ms(res['max'])} |"
              f" {res['silence_us']:.0f} | {res['react_med']:.0f} | {res['react_p99']:.0f} |"
              f" {res['react_max']:.0f} | {100 * res['react_over']:.2f} % |"
              f" {fmt_ms(res['idle_per_cycle'])} | {res['first_med']:.0f} | {res['first_p99']:.0f} |"
              f" {res['next_med']:.0f} | {res['next_p99']:.0f} | {res['react_raw_med']:.0f} |"
              f" {res['react_raw_p99']:.0f} | {res['late_med']:.0f} | {res['late_p99']:.0f} |"
              f" {fmt_ms(res['late_per_cycle'])} |")
    if args.runs > 1:
        print("\nMedians over the runs:\n")
        print("| framing | cycle ms | bound ms | bound / cycle | vs target 0.9 | agent rtt sum ms |"
              " between polls ms | raw master ms | bound / raw |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for f in framings:
            rs = [x for x in results if x["framing"] == f]

            def med(k):
                return statistics.median(x[k] for x in rs)
            print(f"| {f} | {fmt_ms(med('cycle'))} | {fmt_ms(med('bound'))} |"
                  f" {med('ratio'):.3f} | {'met' if med('ratio') >= TARGET else 'missed'} |"
                  f" {fmt_ms(med('rtt_sum'))} | {fmt_ms(med('between'))} |"
                  f" {fmt_ms(med('raw'))} | {med('raw_ratio'):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
