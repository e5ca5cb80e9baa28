#!/usr/bin/env python3
"""Registry, usage, KPIs, series, bars, readings and export over real HTTP, on readings
published through a real mosquitto broker (mosquitto_pub as the gateway account) into a
real meter-cloud.

Data (hand-computed figures; see tests/unit/test_usage.c for the rules): meter m1 reads
every 15 minutes, 7 s past the UTC quarter hour, from 2026-03-27 00:00 CET to 2026-03-31
00:00 CEST, its counter rising 0.25 kWh a reading (1 kWh an hour); a counter reset on
03-28; no readings 03-30 03:00..05:45 CEST (a gap inside the day); a power spike of 9000 W.
The batches arrive shuffled and one batch twice. m2 is registered only during the test;
m3 is prepaid; m4 gets a replacement event.
"""
import csv
import io
import json
import os
import random
import subprocess
import sys
import unittest
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
GW = "gw-01"
STREAM = "00c0ffee00c0ffee"
Q = 15 * 60 * 1000
S = int(datetime(2026, 3, 26, 23, 0, tzinfo=timezone.utc).timestamp() * 1000)  # 03-27 00:00 CET
N = 4 * 95 + 1  # 95 hours (one lost to DST) of readings, and the closing one
REGISTRY = {"regions": {"north": ["a1", "a2"], "south": ["b1"]},
            "dwelling_types": ["flat", "house"]}


def ms(y, mo, d, h=0, mi=0):
    return int(datetime(y, mo, d, h, mi, tzinfo=timezone.utc).timestamp() * 1000)


def readings_m1():
    """(ts, values) of m1."""
    out = []
    gap_from, gap_to = ms(2026, 3, 30, 1, 0), ms(2026, 3, 30, 3, 45)  # 03:00..05:45 CEST
    reset = ms(2026, 3, 28, 12, 0)  # 03-28 13:00 CET: counter back to 0
    k_reset = (reset - S) // Q
    for k in range(N):
        t = S + k * Q
        if gap_from <= t <= gap_to:
            continue
        e = 1000 + 0.25 * k if k < k_reset else 0.25 + 0.25 * (k - k_reset)
        p = 9000.0 if t == ms(2026, 3, 29, 10, 15) else 1000.0 + 500 * (k % 4)
        out.append((t + 7000, {"energy_import": e, "power": p}))
    return out


def readings_m2():
    """m2: 2 days from 03-27 00:00 UTC, 1 kWh an hour."""
    s = ms(2026, 3, 27)
    return [(s + k * Q + 7000, {"energy_import": 50 + 0.25 * k}) for k in range(2 * 96 + 1)]


def readings_m4():
    """m4: 2 days from 03-27 00:00 CET, 1 kWh an hour (for the replacement test)."""
    return [(S + k * Q + 7000, {"energy_import": 300 + 0.25 * k}) for k in range(2 * 96 + 1)]


def readings_m3():
    """m3 (prepaid): 3 days from 03-27 00:00 CET; energy and balance; the balance falls
    0.5 a reading and is topped up by 50 at k = 100."""
    out = []
    for k in range(3 * 96 - 4 + 1):
        b = 180 - 0.5 * k if k < 100 else 230 - 0.5 * k
        out.append((S + k * Q + 7000, {"energy_import": 10 + 0.25 * k, "balance": b}))
    return out


class UsageApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        st = cls.st = stack.Stack(BUILD)
        try:
            st.start_broker()
            cfg = st.cloud_config()
            cfg["registry"] = REGISTRY
            # the data is of March 2026: keep (and roll up) readings that old
            cfg["rollup"] = {"gap_s": 900, "kpi_cache_ms": 0, "raw_days": 3650, "m5_days": 3650}
            st.start_cloud(cfg)
            st.add_cloud_user("vera", "viewer", "viewer-password-1")
            st.add_cloud_user("otto", "operator", "operator-password-1")
            cls.viewer = st.login_token("vera", "viewer-password-1")
            cls.operator = st.login_token("otto", "operator-password-1")
            cls.seq = 0
            cls.publish_all()
        except Exception:
            print(st.logs(40), file=sys.stderr)
            st.stop()
            raise

    failed = False

    def tearDown(self):
        if stack.test_failed(self):
            UsageApi.failed = True

    @classmethod
    def tearDownClass(cls):
        cls.st.stop()
        try:
            with open(cls.st.path("meter-cloud.log"), "rb") as f:
                log = f.read().decode("utf-8", "replace")
        except OSError:
            log = ""
        # a sanitizer build reports at exit: any report fails the run
        bad = [x for x in ("AddressSanitizer", "LeakSanitizer", "runtime error:") if x in log]
        if cls.failed or bad:
            print(cls.st.logs(60), file=sys.stderr)
        else:
            cls.st.remove()
        if bad:
            raise AssertionError(f"meter-cloud's log has sanitizer reports: {bad}")

    @classmethod
    def publish(cls, batch):
        payload = json.dumps({"v": 1, "gw": GW, "stream": STREAM, "readings": batch}).encode()
        r = subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(cls.st.broker_port),
                            "-u", GW, "-P", cls.st.users[GW], "-q", "1",
                            "-t", f"{cls.st.prefix}/{GW}/readings", "-s"],
                           input=payload, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"mosquitto_pub: {r.stderr.decode()}")

    @classmethod
    def publish_all(cls):
        st = cls.st
        # the registry first, as an operator would: a site, m1 and m3 registered
        code, body, _ = st.request("POST", "/api/v1/sites",
                                   {"id": "berlin", "title": "Berlin flats", "tz": "Europe/Berlin",
                                    "tariff": {"price_per_kwh": 0.25, "currency": "EUR"}})
        assert code == 201, body
        for m in ({"id": "m1", "gateway": GW, "site": "berlin", "region": "north", "area": "a1",
                   "dwelling_type": "flat"},
                  {"id": "m3", "gateway": GW, "site": "berlin", "prepaid": True},
                  {"id": "m4", "gateway": GW, "site": "berlin"}):
            code, body, _ = st.request("POST", "/api/v1/meters", m)
            assert code == 201, body
        rows = [("m1", t, v) for t, v in readings_m1()] + [("m2", t, v) for t, v in readings_m2()]
        rows += [("m3", t, v) for t, v in readings_m3()]
        rows += [("m4", t, v) for t, v in readings_m4()]
        batches = []
        for i in range(0, len(rows), 60):
            batch = []
            for meter, t, v in rows[i:i + 60]:
                cls.seq += 1
                batch.append({"seq": cls.seq, "meter": meter, "ts": t, "ok": True, "values": v})
            batches.append(batch)
        random.Random(7).shuffle(batches)
        batches.append(batches[3])  # a batch delivered twice
        for b in batches:
            cls.publish(b)
        want = len(rows)

        def stored():
            code, h = st.get("/healthz", token=None)
            return code == 200 and h["ingest"]["stored"] == want
        stack.wait_for(stored, 60, f"{want} readings stored")

    # -- helpers ------------------------------------------------------------------
    def get(self, path, token=stack.ADMIN):
        code, body = self.st.get(path, token=token)
        return code, body

    def assert_bad(self, path, name, code=400):
        c, body = self.get(path)
        self.assertEqual(c, code, f"{path}: {body}")
        self.assertIn(name, body["error"]["message"], path)

    # -- registry -----------------------------------------------------------------
    def test_registry_validation(self):
        st = self.st
        cases = [
            ({"id": "x1", "gateway": GW, "site": "berlin", "region": "north", "area": "b1"},
             "area", "not an area of region north"),
            ({"id": "x1", "gateway": GW, "site": "berlin", "region": "west"}, "region", "west"),
            ({"id": "x1", "gateway": GW, "site": "berlin", "dwelling_type": "castle"},
             "dwelling_type", "castle"),
            ({"id": "x1", "gateway": GW, "site": "nosuch"}, "site", "does not exist"),
            ({"id": "x1", "gateway": GW}, "site", "required"),
            ({"id": "bad id", "gateway": GW, "site": "berlin"}, "id", "not an id"),
            ({"id": "x1", "gateway": GW, "site": "berlin", "area": "a1"}, "area", "region"),
            ({"id": "x1", "gateway": GW, "site": "berlin", "prepaid": "yes"}, "prepaid", "true"),
        ]
        for body, field, text in cases:
            code, resp, _ = st.request("POST", "/api/v1/meters", body)
            self.assertEqual(code, 400, f"{body}: {resp}")
            self.assertEqual(resp["error"].get("field"), field, resp)
            self.assertIn(field, resp["error"]["message"])
            self.assertIn(text, resp["error"]["message"])
        code, resp, _ = st.request("POST", "/api/v1/meters", {"id": "m1", "gateway": GW,
                                                              "site": "berlin"})
        self.assertEqual(code, 409, resp)
        code, resp, _ = st.request("POST", "/api/v1/meters", {"id": "x1", "colour": "red"})
        self.assertEqual(code, 400, resp)
        self.assertIn("colour", resp["error"]["message"])
        for body, field in [({"id": "s2", "tz": "Mars/Olympus"}, "tz"),
                            ({"id": "s2", "tz": "+05:30"}, "tz"),
                            ({"id": "s2", "tz": "UTC", "tariff": {"price_per_kwh": -1,
                                                                  "currency": "EUR"}},
                             "tariff.price_per_kwh"),
                            ({"id": "s2", "tz": "UTC", "tariff": {"price_per_kwh": 1,
                                                                  "currency": "euro"}},
                             "tariff.currency"),
                            ({"tz": "UTC"}, "id")]:
            code, resp, _ = st.request("POST", "/api/v1/sites", body)
            self.assertEqual(code, 400, f"{body}: {resp}")
            self.assertEqual(resp["error"]["field"], field, resp)

    def test_registry_roles_and_crud(self):
        st = self.st
        # viewers read, operators change
        code, body, _ = st.request("POST", "/api/v1/sites", {"id": "oslo", "tz": "Europe/Oslo"},
                                   token=self.viewer)
        self.assertEqual(code, 403, body)
        code, body = self.get("/api/v1/sites", token=self.viewer)
        self.assertEqual(code, 200, body)
        code, body = self.get("/api/v1/sites", token=None)
        self.assertEqual(code, 401, body)
        code, body, _ = st.request("POST", "/api/v1/sites", {"id": "oslo", "tz": "Europe/Oslo"},
                                   token=self.operator)
        self.assertEqual(code, 201, body)
        self.assertIsNone(body["tariff"])
        code, body, _ = st.request("PATCH", "/api/v1/sites/oslo",
                                   {"tariff": {"price_per_kwh": 1.5, "currency": "NOK"}},
                                   token=self.operator)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["tariff"], {"price_per_kwh": 1.5, "currency": "NOK"})
        code, body, _ = st.request("POST", "/api/v1/meters",
                                   {"id": "x9", "gateway": GW, "site": "oslo", "region": "south",
                                    "area": "b1"}, token=self.operator)
        self.assertEqual(code, 201, body)
        self.assertTrue(body["registered"])
        self.assertIsNone(body["last_reading"])  # registered before any reading
        code, body, _ = st.request("PATCH", "/api/v1/meters/x9", {"region": "north"},
                                   token=self.operator)
        self.assertEqual(code, 400, body)  # b1 is not an area of north
        self.assertEqual(body["error"]["field"], "area")
        code, body, _ = st.request("PATCH", "/api/v1/meters/x9",
                                   {"region": "north", "area": "a2", "dwelling_type": "house"},
                                   token=self.operator)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["region"], body["area"], body["dwelling_type"]),
                         ("north", "a2", "house"))
        code, body, _ = st.request("DELETE", "/api/v1/sites/oslo", token=self.operator)
        self.assertEqual(code, 409, body)  # x9 is there
        code, body, _ = st.request("DELETE", "/api/v1/meters/x9", token=self.viewer)
        self.assertEqual(code, 403, body)
        code, body, _ = st.request("DELETE", "/api/v1/meters/x9", token=self.operator)
        self.assertEqual(code, 200, body)
        code, body = self.get("/api/v1/meters/x9")
        self.assertEqual(code, 404, body)
        code, body, _ = st.request("DELETE", "/api/v1/sites/oslo", token=self.operator)
        self.assertEqual(code, 200, body)
        code, body = self.get("/api/v1/sites/oslo")
        self.assertEqual(code, 404, body)

    def test_meter_list(self):
        code, body = self.get("/api/v1/meters", token=self.viewer)
        self.assertEqual(code, 200, body)
        meters = {m["id"]: m for m in body["meters"]}
        self.assertTrue(meters["m1"]["registered"])
        self.assertEqual(meters["m1"]["site"], "berlin")
        self.assertEqual(meters["m1"]["area"], "a1")
        self.assertFalse(meters["m2"]["registered"])  # seen through MQTT only
        self.assertEqual(meters["m2"]["gateway"], GW)
        self.assertIsNotNone(meters["m2"]["last_reading"])

    # -- usage ----------------------------------------------------------------------
    def test_usage_days_dst(self):
        code, body = self.get("/api/v1/meters/m1/usage?period=day&from=2026-03-27T00:00:00%2B01:00"
                              "&to=2026-03-31T00:00:00%2B02:00")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["tz"], "Europe/Berlin")
        got = [(b["start"], b["energy"], b["complete"]) for b in body["buckets"]]
        # 03-27: 95 steps (the first reading has none); 03-28: 24 (the reset step counts its
        # 0.25); 03-29: 23 hours; 03-30: 24, its gap (03:00..05:45) lies inside the day
        self.assertEqual(got, [("2026-03-27T00:00:00+01:00", 23.75, True),
                               ("2026-03-28T00:00:00+01:00", 24.0, True),
                               ("2026-03-29T00:00:00+01:00", 23.0, True),
                               ("2026-03-30T00:00:00+02:00", 24.0, True)])
        self.assertEqual(body["totals"]["energy"], 94.75)
        self.assertEqual(body["totals"]["cost"], 23.6875)
        self.assertEqual(body["totals"]["currency"], "EUR")
        self.assertEqual(body["daily"]["days"], 4)
        self.assertEqual((body["daily"]["min"], body["daily"]["max"]), (23.0, 24.0))

    def test_usage_hours_gap(self):
        code, body = self.get("/api/v1/meters/m1/usage?period=hour&from=2026-03-30T01:00:00%2B02:00"
                              "&to=2026-03-30T07:00:00%2B02:00")
        self.assertEqual(code, 200, body)
        got = [(b["start"][11:19], b["energy"], b["complete"]) for b in body["buckets"]]
        # readings 03:00..05:45 CEST are missing: 02:00 has its steps but the gap starts at
        # its last reading; 03..05 null; 06:00 gets 3 steps (06:00:07 ends the gap)
        self.assertEqual(got, [("01:00:00", 1.0, True), ("02:00:00", 1.0, False),
                               ("03:00:00", None, False), ("04:00:00", None, False),
                               ("05:00:00", None, False), ("06:00:00", 0.75, False)])
        self.assertEqual(body["totals"]["gap_energy"], 3.25)
        code, body = self.get("/api/v1/meters/m1/usage?period=hour&from=2026-03-29T00:00:00%2B01:00"
                              "&to=2026-03-30T00:00:00%2B02:00")
        self.assertEqual(len(body["buckets"]), 23)
        self.assertEqual({b["energy"] for b in body["buckets"]}, {1.0})
        self.assertEqual(body["buckets"][2]["start"], "2026-03-29T03:00:00+02:00")

    def test_usage_week_month_30m(self):
        code, body = self.get("/api/v1/meters/m1/usage?period=week&from=2026-03-25&to=2026-03-26")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["buckets"][0]["start"], "2026-03-23T00:00:00+01:00")
        self.assertEqual(body["buckets"][0]["energy"], 70.75)  # 23.75 + 24 + 23
        self.assertFalse(body["buckets"][0]["complete"])  # the data starts on Friday
        code, body = self.get("/api/v1/meters/m1/usage?period=30m&from=2026-03-29T09:00:00Z"
                              "&to=2026-03-29T10:00:00Z")
        self.assertEqual([b["energy"] for b in body["buckets"]], [0.5, 0.5])

    def test_unregistered_then_registered(self):
        # m2 unregistered: UTC days; 03-27 has 95 steps, 03-28 96
        code, body = self.get("/api/v1/meters/m2/usage?period=day&from=2026-03-27T00:00:00Z"
                              "&to=2026-03-29T00:00:00Z")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["tz"], "UTC")
        self.assertEqual([(b["start"], b["energy"]) for b in body["buckets"]],
                         [("2026-03-27T00:00:00+00:00", 23.75), ("2026-03-28T00:00:00+00:00", 24.0)])
        code, resp, _ = self.st.request("POST", "/api/v1/meters",
                                        {"id": "m2", "gateway": GW, "site": "berlin"})
        self.assertEqual(code, 201, resp)
        # now Berlin days: 03-27 00:00 CET = 03-26 23:00Z: the data starts an hour in (23
        # hours, 91 steps = 22.75, incomplete); 03-28 CET = [03-27 23:00Z, 03-28 23:00Z):
        # 24.0; 03-29 (23 h) holds the last hour of data, 03-28 23:00..03-29 00:00:07Z: 5
        # readings = 1.25, incomplete
        code, body = self.get("/api/v1/meters/m2/usage?period=day&from=2026-03-27T00:00:00%2B01:00"
                              "&to=2026-03-30T00:00:00%2B02:00")
        self.assertEqual(body["tz"], "Europe/Berlin")
        self.assertEqual([(b["start"], b["energy"], b["complete"]) for b in body["buckets"]],
                         [("2026-03-27T00:00:00+01:00", 22.75, False),
                          ("2026-03-28T00:00:00+01:00", 24.0, True),
                          ("2026-03-29T00:00:00+01:00", 1.25, False)])

    def test_replacement_event(self):
        # a registry replacement recomputes the step across it: m4's step ending 03-28
        # 12:15:07Z counts 0 from now on
        q = "/api/v1/meters/m4/usage?period=day&from=2026-03-28T00:00:00%2B01:00&to=2026-03-28T01:00:00%2B01:00"
        code, body = self.get(q)
        self.assertEqual(body["buckets"][0]["energy"], 24.0, body)
        code, resp, _ = self.st.request("PATCH", "/api/v1/meters/m4",
                                        {"replaced_at": "2026-03-28T12:05:00Z"})
        self.assertEqual(code, 200, resp)
        self.assertEqual(resp["replaced"], ["2026-03-28T12:05:00.000Z"])
        code, body = self.get(q)
        self.assertEqual(body["buckets"][0]["energy"], 23.75, body)

    # -- KPIs ---------------------------------------------------------------------------
    def test_kpi(self):
        code, body = self.get("/api/v1/meters/m1/kpi?at=2026-03-30T12:00:00%2B02:00",
                              token=self.viewer)
        self.assertEqual(code, 200, body)
        # today 00:00..12:00 CEST: 12 hours = 12.0 (the gap inside counts: its ends are
        # inside the range); yesterday (the 23-hour day) 00:00 CET..12:00 CEST = 11 hours
        t = body["today"]
        self.assertEqual((t["energy"], t["previous"], t["change"]), (12.0, 11.0, 1.0))
        self.assertEqual(t["change_pct"], 9.09)
        self.assertEqual(t["cost"], 3.0)
        self.assertTrue(t["complete"])
        # 2026-03-30 is a Monday: the week is today so far, the last one had no data yet
        self.assertEqual(body["week"]["start"], "2026-03-30T00:00:00+02:00")
        self.assertEqual(body["week"]["energy"], 12.0)
        self.assertIsNone(body["week"]["previous"])  # no readings then: null, not 0
        self.assertIsNone(body["week"]["change"])
        self.assertIsNone(body["week"]["change_pct"])
        # the month: 23.75 + 24 + 23 + 12 = 82.75; February had none
        self.assertEqual(body["month"]["energy"], 82.75)
        self.assertEqual(body["month"]["previous_start"], "2026-02-01T00:00:00+01:00")
        # current power: the last reading at or before 'at' (09:45:07Z, k % 4 == 3)
        self.assertEqual(body["power"]["w"], 2500.0)
        self.assertFalse(body["prepaid"])

    def test_kpi_prepaid(self):
        code, body = self.get("/api/v1/meters/m3/kpi?at=2026-03-30T00:00:00%2B02:00")
        self.assertEqual(code, 200, body)
        self.assertTrue(body["prepaid"])
        b = body["balance"]
        # readings k = 0..284, 15 min apart from 03-27 00:00:07 CET; 'at' is 03-29 22:00Z,
        # just before k = 284: the last balance is k = 283's, 230 - 141.5 = 88.5
        self.assertEqual(b["value"], 88.5)
        # the top-up: 50 less the 0.5 used in its interval, never negative use
        self.assertEqual(b["topups_7d"], 49.5)
        self.assertEqual(len(b["topups"]), 1)
        self.assertEqual(b["topups"][0]["amount"], 49.5)
        self.assertEqual(b["topups"][0]["hour"], "2026-03-28T01:00:00+01:00")  # k = 100
        # use: 283 steps of 0.5 less the top-up step = 141.0, over the meter's age (from
        # its first reading, 03-26 23:00:07Z, to 'at': 70 h 59 min 53 s)
        days = (ms(2026, 3, 29, 22) - (S + 7000)) / 86400000
        self.assertAlmostEqual(b["window_days"], days, places=3)
        self.assertAlmostEqual(b["avg_daily_use"], 141.0 / days, places=5)
        self.assertAlmostEqual(b["days_left"], 88.5 / (141.0 / days), places=1)

    # -- series, bars ---------------------------------------------------------------------
    def test_series(self):
        code, body = self.get("/api/v1/meters/m1/series?quantity=power&from=2026-03-29T00:00:00Z"
                              "&to=2026-03-30T00:00:00Z&points=24")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["tier"], "1h")
        pts = body["points"]
        self.assertLessEqual(len(pts), 24)
        self.assertEqual(len(pts), 24)
        # the spike survives the downsampling: max of 10:00Z is 9000
        spike = [p for p in pts if p[0] == ms(2026, 3, 29, 10)]
        self.assertEqual(spike[0][3], 9000.0)
        self.assertEqual(spike[0][1], 1000.0)
        for p in pts:
            self.assertLessEqual(p[1], p[2])
            self.assertLessEqual(p[2], p[3])
        # a short range: raw readings
        code, body = self.get("/api/v1/meters/m1/series?quantity=power&from=2026-03-29T10:00:00Z"
                              "&to=2026-03-29T11:00:00Z")
        self.assertEqual(body["tier"], "raw")
        self.assertEqual(len(body["points"]), 4)
        self.assertEqual(body["points"][1][1:], [9000.0, 9000.0, 9000.0])

    def test_bars(self):
        code, body = self.get("/api/v1/meters/m1/bars?quantity=energy_import&interval=hour"
                              "&from=2026-03-29T10:00:00Z&to=2026-03-29T12:00:00Z")
        self.assertEqual(code, 200, body)
        bars = body["bars"]
        self.assertEqual(len(bars), 2)
        ts, o, h, lo, c, n = bars[0]
        self.assertEqual(ts, ms(2026, 3, 29, 10))
        self.assertEqual(n, 4)
        self.assertEqual(c - o, 0.75)
        self.assertEqual((h, lo), (c, o))
        code, body = self.get("/api/v1/meters/m1/bars?quantity=power&interval=day"
                              "&from=2026-03-29T00:00:00%2B01:00&to=2026-03-30T00:00:00%2B02:00")
        self.assertEqual(body["bars"][0][0], ms(2026, 3, 28, 23))
        self.assertEqual(body["bars"][0][2], 9000.0)
        self.assertEqual(body["bars"][0][5], 92)  # 23 hours of readings

    # -- readings of several meters, export ------------------------------------------------
    def test_readings_and_export(self):
        code, body = self.get("/api/v1/readings?meters=m1,m2&from=2026-03-28T00:00:00Z"
                              "&to=2026-03-28T00:31:00Z&limit=5")
        self.assertEqual(code, 200, body)
        rs = body["readings"]
        self.assertEqual(len(rs), 5)
        self.assertEqual([r["ts_ms"] for r in rs], sorted([r["ts_ms"] for r in rs], reverse=True))
        self.assertEqual({r["meter"] for r in rs}, {"m1", "m2"})
        code, text, hdrs = self.st.request("GET", "/api/v1/export?meters=m1,m2&format=csv")
        self.assertEqual(code, 200, text)
        self.assertTrue(hdrs["content-type"].startswith("text/csv"))
        rows = list(csv.DictReader(io.StringIO(text)))
        self.assertEqual(len(rows), len(readings_m1()) + len(readings_m2()))
        self.assertEqual(rows[0]["meter"], "m1")
        self.assertEqual(float(rows[0]["energy_import"]), 1000.0)
        self.assertEqual(rows[-1]["meter"], "m2")
        ts = [int(r["ts_ms"]) for r in rows if r["meter"] == "m1"]
        self.assertEqual(ts, sorted(ts))

    # -- bad parameters ---------------------------------------------------------------------
    def test_bad_parameters(self):
        m = "/api/v1/meters/m1"
        for path, name in [
                (m + "/usage?period=fortnight", "period"),
                (m + "/usage?from=yesterday", "from"),
                (m + "/usage?from=2026-03-30&to=2026-03-29", "from"),
                (m + "/usage?quantity=power", "quantity"),
                (m + "/usage?quantity=nope", "quantity"),
                (m + "/usage?period=30m&from=2020-01-01&to=2026-01-01", "buckets"),
                (m + "/usage?bogus=1", "bogus"),
                (m + "/kpi?at=noon", "at"),
                (m + "/series?from=2026-03-29", "quantity"),
                (m + "/series?quantity=power&points=0", "points"),
                (m + "/series?quantity=power&points=99999", "points"),
                (m + "/bars?quantity=power&interval=week", "interval"),
                (m + "/bars?quantity=power&interval=5m&from=2020-01-01&to=2026-01-01", "bars"),
                ("/api/v1/readings?meters=m1,bad%20id", "meters"),
                ("/api/v1/readings", "meters"),
                ("/api/v1/readings?meters=m1&limit=0", "limit"),
                ("/api/v1/export?meters=m1&format=xlsx", "format")]:
            self.assert_bad(path, name)
        self.assert_bad("/api/v1/readings?meters=m1,nosuch", "nosuch", 404)
        self.assert_bad("/api/v1/meters/nosuch/usage", "nosuch", 404)
        self.assert_bad("/api/v1/meters/nosuch/kpi", "nosuch", 404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
