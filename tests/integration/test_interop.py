#!/usr/bin/env python3
"""Interoperability with Modbus implementations that are not ours.

(a) mbpoll (Debian's mbpoll, libmodbus inside) reads meter-sim over TCP and over RTU on
    the pseudo-terminal and must print exactly the values the served log says were served.
(b) meter-agent reads a pymodbus 3.0.0 slave (tests/integration/pymodbus_server.py) that
    holds the SDM630 map with known float32 values; those values must come out of
    meter-cloud's API (broker, agent and cloud are the real ones).
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))
MBPOLL = "/usr/bin/mbpoll"


def load_profile(name):
    with open(os.path.join(SRC, "agent", "profiles", name + ".json")) as f:
        return json.load(f)


def f32(v):
    return struct.unpack(">f", struct.pack(">f", v))[0]


class Case(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.addCleanup(self.cleanup)

    def cleanup(self):
        self.st.stop()
        if self._outcome_failed():
            print(self.st.logs(), file=sys.stderr)
        shutil.rmtree(self.st.dir, ignore_errors=True)

    def _outcome_failed(self):
        # Inside a cleanup, _outcome.success is always True (Python 3.11 resets it for each
        # cleanup); the result's lists are what tell.
        res = getattr(getattr(self, "_outcome", None), "result", None)
        return res is not None and any(t is self for t, _ in res.errors + res.failures)


class Mbpoll(Case):
    """mbpoll prints each float with printf's %g: compare with the served value so printed."""

    def mbpoll(self, target, unit, addr, nfloats):
        if target == "tcp":
            host, port = self.st.tcp_endpoint.rsplit(":", 1)
            argv = [MBPOLL, "-m", "tcp", "-p", port]
            dev = host
        else:
            argv = [MBPOLL, "-m", "rtu", "-b", "9600", "-P", "none", "-d", "8", "-s", "1"]
            dev = self.st.path("rtu0")
        argv += ["-a", str(unit), "-t", "3:float", "-B", "-0", "-r", str(addr),
                 "-c", str(nfloats), "-o", "2", "-1", dev]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=30)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, f"{' '.join(argv)}:\n{out}")
        printed = {int(m.group(1)): m.group(2)
                   for m in re.finditer(r"^\[(\d+)\]:\s+(\S+)\s*$", out, re.M)}
        self.assertEqual(sorted(printed), list(range(addr, addr + 2 * nfloats, 2)), out)
        return printed

    def served(self):
        with open(self.st.served_log) as f:
            return [json.loads(line) for line in f]

    def check(self, bus, unit, profile, addr, nfloats):
        n = len(self.served())
        printed = self.mbpoll(bus, unit, addr, nfloats)
        new = stack.wait_for(lambda: [e for e in self.served()[n:]
                                      if e["bus"] == bus and e["unit"] == unit],
                             10, f"the served-log line of mbpoll's read of {bus}:{unit}")
        self.assertEqual(len(new), 1, f"one read served for mbpoll's poll: {new}")
        e = new[0]
        self.assertEqual((e["fc"], e["addr"], e["count"]), (4, addr, 2 * nfloats), e)
        at = {r["address"]: r["quantity"] for r in profile["registers"]}
        checked = 0
        for a, text in printed.items():
            if a in at:
                q = at[a]
                self.assertIn(q, e["values"], f"{bus}:{unit} {q} not in the served log")
                self.assertEqual(text, "%g" % e["values"][q],
                                 f"{bus}:{unit} [{a}] {q}: mbpoll printed {text}, "
                                 f"meter-sim served {e['values'][q]!r}")
                checked += 1
            else:
                self.assertEqual(float(text), 0.0, f"{bus}:{unit} [{a}]: not in the profile")
        self.assertEqual(checked, len(e["values"]), f"{bus}:{unit}: every served value seen")
        self.assertGreater(checked, 0)

    def test_mbpoll_reads_what_meter_sim_served(self):
        self.st.start_sim(["tcp:1:sdm630", "tcp:2:sdm120", "rtu:3:sdm630", "rtu:9:sdm120"])
        sdm630, sdm120 = load_profile("sdm630"), load_profile("sdm120")
        for bus, unit, prof in (("tcp", 1, sdm630), ("rtu", 3, sdm630)):
            self.check(bus, unit, prof, 0, 20)   # 40 registers: voltages, currents, powers
            self.check(bus, unit, prof, 52, 12)  # total power .. energy export
        for bus, unit in (("tcp", 2), ("rtu", 9)):
            self.check(bus, unit, sdm120, 0, 6)


# Values that are exact in float32 and values that are not, signs and magnitudes mixed.
SDM630_VALUES = {
    "voltage_l1": 230.5, "voltage_l2": 229.87, "voltage_l3": 231.125,
    "current_l1": 5.5, "current_l2": 4.2, "current_l3": 0.0625,
    "power_l1": 1265.3, "power_l2": 977.0, "power_l3": -12.75,
    "power": 2229.55, "apparent_power": 2331.9, "reactive_power": -512.25,
    "power_factor": 0.956, "frequency": 49.98,
    "energy_import": 123456.78, "energy_export": 0.5,
}


class AgentReadsPymodbus(Case):
    def test_agent_reads_pymodbus_slave_values(self):
        st = self.st
        profile_path = os.path.join(SRC, "agent", "profiles", "sdm630.json")
        self.assertEqual(set(SDM630_VALUES),
                         {r["quantity"] for r in load_profile("sdm630")["registers"]})
        st.start_broker()
        st.start_cloud()
        out_path = st.path("pymodbus.out")
        with open(out_path, "wb") as out:
            st._start("pymodbus", ["/usr/bin/python3", os.path.join(HERE, "pymodbus_server.py"),
                                   "--profile", profile_path, "--unit", "5",
                                   "--values", json.dumps(SDM630_VALUES)], stdout=out)

        def port():
            if not st.procs["pymodbus"].alive():
                raise RuntimeError("pymodbus_server exited:\n" + st.procs["pymodbus"].tail())
            with open(out_path) as f:
                m = re.search(r"^port (\d+)$", f.read(), re.M)
            return int(m.group(1)) if m else None

        st.tcp_endpoint = f"127.0.0.1:{stack.wait_for(port, 30, 'pymodbus_server port')}"
        st.start_agent(st.agent_config([("pm-1", "tcp", 5, "sdm630")], interval_ms=300))

        dead = []

        def readings():
            dead.extend(n for n in ("meter-agent", "pymodbus") if not st.procs[n].alive())
            if dead:
                return True  # stop waiting: wait_for() would retry on an exception
            code, body = st.get("/api/v1/meters/pm-1/readings?limit=10")
            return body["readings"] if code == 200 and len(body["readings"]) >= 3 else None

        got = stack.wait_for(readings, 30, "3 readings of pm-1 in the API")
        if dead:
            self.fail(f"{dead[0]} exited early:\n{st.procs[dead[0]].tail()}")
        for r in got:
            self.assertTrue(r["ok"], f"failed poll {r}")
            self.assertEqual(set(r["values"]), set(SDM630_VALUES), f"quantities of {r}")
            for q, v in SDM630_VALUES.items():
                want = f32(v)
                self.assertAlmostEqual(r["values"][q], want, delta=1e-9 * max(1.0, abs(want)),
                                       msg=f"seq {r['seq']} {q}: got {r['values'][q]!r}, "
                                           f"pymodbus holds {want!r} (float32 of {v})")
        self.assertEqual(st.stop_proc("meter-agent"), 0, "meter-agent exit status")


if __name__ == "__main__":
    unittest.main(verbosity=2)
