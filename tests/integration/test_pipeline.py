#!/usr/bin/env python3
"""End to end on real parts: meter-sim (2 meters over TCP, 2 over RTU on a pseudo-terminal)
-> meter-agent -> SQLite queue -> a real mosquitto -> meter-cloud -> HTTP API.

Asserts through the API that every simulated meter's readings arrived, each value equal to
what the simulator served for that register at that moment, nothing duplicated and, after
a clean stop of the agent, every seq of the stream present (nothing lost).
"""
import json
import os
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
METERS = [("house", "tcp", 1, "sdm630"), ("garage", "tcp", 2, "sdm120"),
          ("flat-1", "rtu", 1, "sdm630"), ("flat-2", "rtu", 7, "sdm120")]
PROFILE_QTYS = {}


def load_profiles():
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "agent", "profiles")
    for name in ("sdm630", "sdm120"):
        with open(os.path.join(src, name + ".json")) as f:
            PROFILE_QTYS[name] = {r["quantity"] for r in json.load(f)["registers"]}


def served_index(path):
    """{(bus, unit): [(t, {qty: value}), ...]} in log order."""
    idx = {}
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            idx.setdefault((e["bus"], e["unit"]), []).append((e["t"], e["values"]))
    return idx


class Pipeline(unittest.TestCase):
    def setUp(self):
        load_profiles()
        self.st = stack.Stack(BUILD)
        self.addCleanup(self.st.finish, self)

    def test_readings_arrive_exactly(self):
        st = self.st
        st.start_broker()
        st.start_sim([f"{m[1]}:{m[2]}:{m[3]}" for m in METERS])
        st.start_cloud()
        st.start_agent(st.agent_config(METERS, interval_ms=300))

        def enough():
            code, body = st.get("/api/v1/meters")
            if code != 200:
                return False
            seen = {m["id"]: m for m in body["meters"]}
            return all(m[0] in seen for m in METERS) and all(
                len(st.get(f"/api/v1/meters/{m[0]}/readings?limit=10")[1]["readings"]) >= 8
                for m in METERS)

        stack.wait_for(enough, 60, "8 readings of every meter in the API")
        # A clean stop: the agent publishes what it queued and deletes it on PUBACK.
        self.assertEqual(st.stop_proc("meter-agent"), 0, "meter-agent exit status")
        db = sqlite3.connect(st.path("queue-gw-01.db"))
        next_seq = int(db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
        left = db.execute("SELECT count(*) FROM q").fetchone()[0]
        db.close()
        self.assertEqual(left, 0, "readings left in the agent's queue after a clean stop")

        def stored_seqs():
            seqs = []
            for m in METERS:
                seqs += [r["seq"] for r in
                         st.get(f"/api/v1/meters/{m[0]}/readings?limit=10000")[1]["readings"]]
            return sorted(seqs)

        stack.wait_for(lambda: stored_seqs() == list(range(1, next_seq)), 15,
                       f"seq 1..{next_seq - 1} in the cloud")

        code, body = st.get("/api/v1/meters")
        self.assertEqual(code, 200)
        listed = {m["id"]: m for m in body["meters"]}
        self.assertEqual(sorted(listed), sorted(m[0] for m in METERS))
        for m in METERS:
            self.assertEqual(listed[m[0]]["gateway"], "gw-01")

        served = served_index(st.served_log)
        all_seqs = []
        stream = None
        for mid, bus, unit, prof in METERS:
            code, body = st.get(f"/api/v1/meters/{mid}/readings?limit=10000")
            self.assertEqual(code, 200, body)
            readings = body["readings"]
            self.assertGreaterEqual(len(readings), 8, mid)
            ts = [r["ts_ms"] for r in readings]
            self.assertEqual(ts, sorted(ts, reverse=True), f"{mid}: newest first")
            self.assertEqual(len(set(ts)), len(ts), f"{mid}: duplicated timestamps")
            log = served[(bus, unit)]
            for r in readings:
                self.assertTrue(r["ok"], f"{mid}: failed poll {r}")
                self.assertEqual(set(r["values"]), PROFILE_QTYS[prof], f"{mid} quantities")
                stream = stream or r["stream"]
                self.assertEqual(r["stream"], stream)
                all_seqs.append(r["seq"])
                for q, v in r["values"].items():
                    # The value must be what the simulator served last for this register
                    # at the reading's time stamp (taken when the reply arrived; the
                    # simulator logs right after sending, so allow it a few ms; polls are
                    # 300 ms apart, so the match is unambiguous).
                    cand = [vals[q] for t, vals in log if q in vals and t <= r["ts_ms"] + 50]
                    self.assertTrue(cand, f"{mid} {q}: nothing served before {r['ts_ms']}")
                    self.assertAlmostEqual(v, cand[-1], delta=1e-9 * max(1.0, abs(v)),
                                           msg=f"{mid} seq {r['seq']} {q}")
            # energy counters only go up, consistent with positive power
            e = [r["values"]["energy_import"] for r in reversed(readings)]
            self.assertEqual(e, sorted(e), f"{mid}: energy_import must not fall")
        self.assertEqual(len(set(all_seqs)), len(all_seqs), "a seq stored twice")
        self.assertEqual(sorted(all_seqs), list(range(1, max(all_seqs) + 1)),
                         "every seq of the stream arrived")

    def test_bad_parameters(self):
        st = self.st
        st.start_broker()
        st.start_cloud()
        for q, name in [("limit=abc", "limit"), ("limit=0", "limit"), ("from=yesterday", "from"),
                        ("to=2026-13-01", "to"), ("from=2026-12-02&to=2026-12-01", "from"),
                        ("bogus=1", "bogus")]:
            code, body = st.get(f"/api/v1/meters/house/readings?{q}")
            self.assertEqual(code, 400, q)
            self.assertEqual(body["error"]["code"], "bad_parameter", q)
            self.assertIn(name, body["error"]["message"], q)
        code, body = st.get("/api/v1/meters/nosuch/readings")
        self.assertEqual(code, 404, body)
        self.assertIn("error", body)


if __name__ == "__main__":
    unittest.main(verbosity=2)
