#!/usr/bin/env python3
"""meter-agent on real buses with meters that fail: real meter-sim (TCP and RTU on a
pseudo-terminal, faults switched at run time over its control socket), real mosquitto, the
real agent.

- A meter that stops answering goes offline (log, health "online": false), is polled ever
  less often (backoff up to 8 x its interval), and never slows the other meters of its bus
  by more than one response timeout: their poll intervals, measured in the simulator's
  served log, stay within interval + timeout. When it answers again it is back online at
  its interval. Per-bus and per-meter counters and round-trip times are in the health
  message.
- `meter-agent scan` finds and identifies the simulated meters of several profiles on TCP
  and on RTU, and its configuration snippet is a valid configuration.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
PROFILES = os.path.abspath(os.path.join(SRC, "agent", "profiles"))
AGENT = os.path.join(BUILD, "agent", "meter-agent")

INTERVAL = 500  # ms
TIMEOUT = 300   # ms, the buses' response timeout
SLACK = 200     # ms: scheduling, process start of a poll, the simulator's own loop


class Tap:
    """mosquitto_sub as the cloud's account on some topics; messages as (topic, payload)."""

    def __init__(self, st, topics, name="tap"):
        self.path = st.path(name + ".out")
        out = open(self.path, "wb")
        argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(st.broker_port), "-u", "meter-cloud",
                "-P", st.users["meter-cloud"], "-v", "-q", "1"]
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
                payload = json.loads(payload)
            except ValueError:
                pass
            self.msgs.append((topic, payload))
        return self.msgs

    def of(self, suffix):
        return [p for t, p in self.poll() if t.endswith(suffix)]


class Control:
    """meter-sim's control socket: one command line, one answer line."""

    def __init__(self, path):
        self.path = path

    def send(self, line):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.path)
            s.sendall(line.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        answer = buf.decode().strip()
        if not answer.startswith("ok") and not answer.startswith("{"):
            raise RuntimeError(f"meter-sim control: {line!r}: {answer}")
        return answer


def served(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class AgentBus(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.addCleanup(self.cleanup)

    def cleanup(self):
        self.st.stop()
        if self.failed():
            print(self.st.logs(60), file=sys.stderr)

    def finish(self, name="meter-agent"):
        """A clean stop: exit status 0 and no sanitizer report in the log."""
        proc = self.st.procs[name]
        self.assertEqual(self.st.stop_proc(name), 0, f"{name} exit status")
        with open(proc.log_path, errors="replace") as f:
            log = f.read()
        for bad in ("Sanitizer", "runtime error"):
            self.assertNotIn(bad, log, f"{name}: {bad}")

    def failed(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        if hasattr(outcome, "errors"):  # Python < 3.11
            return any(exc for _, exc in outcome.errors)
        result = outcome.result  # 3.11: failures are recorded at once
        return any(t is self for t, _ in result.errors + result.failures)

    def health_meters(self, tap):
        h = tap.of("/health")
        return {m["id"]: m for m in h[-1]["meters"]} if h else {}

    def test_dead_meter_offline_backoff_and_back(self):
        st = self.st
        meters = [("t1", "tcp", 1, "sdm630"), ("t2", "tcp", 2, "sdm120"), ("t3", "tcp", 3, "sdm120"),
                  ("r4", "rtu", 4, "sdm120"), ("r5", "rtu", 5, "sdm120"), ("r6", "rtu", 6, "sdm630")]
        dead = {("tcp", 2): "t2", ("rtu", 5): "r5"}
        ctl = Control(st.path("sim.ctl"))
        st.start_broker()
        st.start_sim([f"{m[1]}:{m[2]}:{m[3]}" for m in meters], extra=["--control", ctl.path])
        cfg = st.agent_config(meters, interval_ms=INTERVAL)
        for b in cfg["buses"]:
            b["timeout_ms"] = TIMEOUT
            b["retries"] = 1
        cfg["health"] = {"interval_ms": 1000}
        tap = Tap(st, ["meterlink/gw-01/health"])
        st.start_agent(cfg)
        stack.wait_for(lambda: len(self.health_meters(tap)) == 6 and all(
            m["online"] for m in self.health_meters(tap).values()), 30, "every meter online")

        t_fault = int(time.time() * 1000)
        for (bus, unit) in dead:
            ctl.send(f"fault {bus}:{unit} noreply")
        stack.wait_for(lambda: all(not self.health_meters(tap)[m]["online"] for m in dead.values()),
                       30, "the dead meters reported offline")
        seen_backoff = {}

        def backed_off():
            hm = self.health_meters(tap)
            for m in dead.values():
                seen_backoff[m] = max(seen_backoff.get(m, 0), hm[m]["interval_ms"])
            return all(v >= 4 * INTERVAL for v in seen_backoff.values())
        stack.wait_for(backed_off, 30, "the offline meters' intervals to back off")
        time.sleep(4)  # a few backed-off polls more
        t_recover = int(time.time() * 1000)
        hm = self.health_meters(tap)
        for m in dead.values():
            self.assertFalse(hm[m]["online"], m)
            self.assertEqual(hm[m]["state"], "offline", m)
            self.assertGreaterEqual(hm[m]["timeouts"], 3, m)
            self.assertGreaterEqual(hm[m]["consecutive_failures"], 3, m)
            self.assertLessEqual(hm[m]["interval_ms"], 8 * INTERVAL, f"{m}: backoff cap")
        for m in ("t1", "t3", "r4", "r6"):
            self.assertTrue(hm[m]["online"], m)
            self.assertEqual(hm[m]["interval_ms"], INTERVAL, m)
            self.assertEqual(hm[m]["failures"], 0, m)
            self.assertGreater(hm[m]["rtt_avg_ms"], 0, m)
            self.assertGreaterEqual(hm[m]["rtt_max_ms"], hm[m]["rtt_ms"], m)
        buses = {b["name"]: b for b in tap.of("/health")[-1]["buses"]}
        for b in ("tcp0", "rtu0"):
            self.assertGreaterEqual(buses[b]["timeouts"], 3, b)
            self.assertEqual(buses[b]["offline"], 1, b)
            self.assertGreater(buses[b]["requests"], buses[b]["timeouts"], b)

        for (bus, unit) in dead:
            ctl.send(f"fault {bus}:{unit} none")
        stack.wait_for(lambda: all(self.health_meters(tap)[m]["online"] for m in dead.values()),
                       8 * INTERVAL / 1000 + 20, "the meters back online")
        time.sleep(2)  # a few polls at the normal interval
        hm = self.health_meters(tap)
        for m in dead.values():
            self.assertEqual(hm[m]["interval_ms"], INTERVAL, f"{m}: back to its interval")

        # The served log: per meter, the first request of every poll.
        log = served(st.served_log)
        first_addr = {}
        for e in log:
            k = (e["bus"], e["unit"])
            first_addr[k] = min(first_addr.get(k, 1 << 20), e["addr"])
        polls = {}
        for e in log:
            k = (e["bus"], e["unit"])
            if e["addr"] == first_addr[k]:
                polls.setdefault(k, []).append((e["t"], e.get("fault")))
        for k, p in polls.items():
            if k in dead:
                continue
            # while a neighbour was dead, and after: never more than interval + timeout
            ts = [t for t, _ in p if t >= t_fault + INTERVAL]
            gaps = [b - a for a, b in zip(ts, ts[1:])]
            self.assertTrue(gaps, k)
            self.assertLessEqual(max(gaps), INTERVAL + TIMEOUT + SLACK,
                                 f"{k}: poll gaps while a neighbour was dead: {gaps}")
        for k, name in dead.items():
            attempts = [t for t, fault in polls[k] if fault == "noreply"]
            gaps = [b - a for a, b in zip(attempts, attempts[1:])]
            self.assertGreaterEqual(len(attempts), 4, f"{name}: attempts while dead")
            # the backoff doubles up to 8 x the interval (plus one timeout of its own)
            self.assertGreaterEqual(max(gaps), 4 * INTERVAL - 50, f"{name}: gaps {gaps}")
            self.assertLessEqual(max(gaps), 8 * INTERVAL + TIMEOUT + SLACK, f"{name}: gaps {gaps}")
            # answered polls after the fault was lifted come at the interval again
            back = [t for t, fault in polls[k] if fault is None and t > t_recover]
            back_gaps = [b - a for a, b in zip(back, back[1:])]
            self.assertGreaterEqual(len(back), 3, f"{name}: polls after recovery")
            self.assertLessEqual(max(back_gaps), INTERVAL + TIMEOUT + SLACK,
                                 f"{name}: gaps after recovery {back_gaps}")
        agent_log = st.procs["meter-agent"].tail(400)
        for name in dead.values():
            self.assertRegex(agent_log, rf"meter {name}: offline after 3 failed polls")
            self.assertRegex(agent_log, rf"meter {name}: online again")
        self.assertTrue(st.procs["meter-agent"].alive())
        self.finish()

    # -- scan ---------------------------------------------------------------------------
    TCP_METERS = {1: "sdm630", 2: "cg-em340", 3: "chint-dtsu666", 4: "abb-b2x", 5: "iem3x55",
                  6: "or-we-517", 7: "sdm120", 8: "chint-ddsu666", 9: "iem3000",
                  10: "cg-em24-din"}
    RTU_METERS = {3: "sdm120", 5: "sdm630", 9: "cg-em340"}
    # models no register tells apart: the scan names the first and says it is ambiguous
    TWINS = {"sdm630": "sdm72dm-v2", "sdm120": "sdm230"}

    def scan(self, bus, units, json_out=True, timeout_ms=200):
        argv = [AGENT, "scan", "--bus", bus, "--units", units, "--timeout-ms", str(timeout_ms),
                "--profiles", PROFILES]
        if json_out:
            argv.append("--json")
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return (json.loads(r.stdout) if json_out else r.stdout), time.monotonic() - t0

    def check_found(self, doc, expected, probed):
        found = {m["unit"]: m for m in doc["meters"]}
        self.assertEqual(sorted(found), sorted(expected), f"units found: {doc}")
        self.assertEqual(doc["units_probed"], probed)
        self.assertEqual(doc["unknown"], [])
        for unit, model in expected.items():
            m = found[unit]
            self.assertEqual(m["profile"], model, f"unit {unit}: {m}")
            self.assertIn(model, m["candidates"])
            self.assertTrue(99 <= m["probes"][0] <= 253, f"unit {unit}: voltage {m['probes']}")
            self.assertTrue(45 <= m["probes"][1] <= 65, f"unit {unit}: frequency {m['probes']}")
            if model in self.TWINS:
                self.assertTrue(m["ambiguous"], f"unit {unit}: {m}")
                self.assertEqual(m["equal"], [self.TWINS[model]], f"unit {unit}")
            else:
                self.assertFalse(m["ambiguous"], f"unit {unit}: {m}")

    def test_scan_finds_and_identifies(self):
        st = self.st
        sims = [f"tcp:{u}:{m}" for u, m in self.TCP_METERS.items()] + \
               [f"rtu:{u}:{m}" for u, m in self.RTU_METERS.items()]
        st.start_sim(sims)

        doc, secs = self.scan("tcp:" + st.tcp_endpoint, "1-12")
        self.check_found(doc, self.TCP_METERS, 12)
        self.assertLess(secs, 20)

        # RTU: absent units cost two timeouts each
        doc_rtu, secs = self.scan("rtu:" + st.path("rtu0") + ":9600:N:1", "1-10")
        self.check_found(doc_rtu, self.RTU_METERS, 10)
        self.assertLess(secs, 7 * 2 * 0.2 + 10)
        bus = doc_rtu["config"]["buses"][0]
        self.assertEqual((bus["type"], bus["baud"], bus["parity"], bus["stop_bits"]),
                         ("rtu", 9600, "N", 1))

        # text: one line per meter, then the snippet
        text, _ = self.scan("tcp:" + st.tcp_endpoint, "1-3,11", json_out=False)
        lines = [ln for ln in text.splitlines() if ln.startswith("unit ")]
        self.assertEqual([re.match(r"unit (\d+): (\S+)", ln).groups() for ln in lines],
                         [("1", "sdm630"), ("2", "cg-em340"), ("3", "chint-dtsu666")], text)
        self.assertIn("ambiguous", lines[0])
        self.assertIn("3 meters found on 4 units probed", text)

        # the snippets, pasted into a configuration, are valid
        conf = {"gateway": {"id": "gw-scan"}, "mqtt": {"host": "127.0.0.1"},
                "queue": {"path": st.path("scan-q.db")}, "profiles_dir": PROFILES,
                "buses": doc["config"]["buses"] + doc_rtu["config"]["buses"],
                "meters": doc["config"]["meters"] + doc_rtu["config"]["meters"]}
        path = st.path("scan-agent.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        r = subprocess.run([AGENT, "--check-config", path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("configuration OK", r.stdout)
        self.assertEqual(len(conf["meters"]), len(self.TCP_METERS) + len(self.RTU_METERS))

        # usage errors
        for bad in (["--bus", "udp:1.2.3.4"], ["--bus", "rtu:/dev/null:9601"],
                    ["--bus", "tcp:" + st.tcp_endpoint, "--units", "0-3"],
                    ["--bus", "tcp:" + st.tcp_endpoint, "--timeout-ms", "5"], []):
            r = subprocess.run([AGENT, "scan"] + bad, capture_output=True, text=True)
            self.assertEqual(r.returncode, 2, f"{bad}: {r.stderr}")
            self.assertIn("meter-agent scan", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
