#!/usr/bin/env python3
"""The dashboard end to end: a real stack (mosquitto, meter-sim, meter-agent, meter-cloud)
and Debian's chromium driven by playwright-core (cloud/web/tests/dashboard.mjs).

The browser logs in as the stack's admin, checks the overview counts (open alerts
included) and a meter's KPI cards against the API, proves that a reading pushed by the SSE
stream changes the meter's current power before any new KPI request, switches the meter's
periods (and counts the points a 1-year view fetches), lists and acknowledges an alert
(a viewer gets no button), presses "poll now" on the gateway and waits for its reply,
registers a meter (an invalid area first: the API's rejection must be shown), and fails on
any console or page error. It saves phone (375x812) and desktop (1280x800) screenshots of every page into
BUILD/screenshots/. This file also checks the static files' HTTP side: content types,
security headers, gzip, ETag revalidation, and that nothing outside the allow-list is
served.
"""
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
SRC = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
WEB = os.path.join(SRC, "cloud", "web")
NODE = shutil.which("node") or "/usr/bin/node"
CHROMIUM = "/usr/bin/chromium"
METERS = [("house", "tcp", 1, "sdm630"), ("garage", "tcp", 2, "sdm120"),
          ("flat-1", "rtu", 1, "sdm630")]
REGISTRY = {"regions": {"north": ["n1", "n2"], "south": ["s1"]},
            "dwelling_types": ["flat", "house", "shop"]}
SITE = {"id": "home", "title": "Home", "tz": "Europe/Berlin",
        "tariff": {"price_per_kwh": 0.3, "currency": "EUR"}}
HIST_GW, HIST_METER, HIST_DAYS = "gw-hist", "hist", 365
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
# Alert rules that fire here: the history meter stops at its last hourly reading, and
# house's power is always above a very low line. No channels: recorded only.
ALERTS = {"interval_s": 1, "rules": [
    {"name": "hist-silent", "kind": "meter_offline", "meter": HIST_METER, "after_s": 30},
    {"name": "house-power", "kind": "threshold", "meter": "house", "quantity": "power",
     "above": -1e9}]}


def publish_history(st):
    """A year of hourly readings of a prepaid meter (energy, power, balance with top-ups),
    published as gateway gw-hist would: the 1-year view then has a year of data to
    downsample. Returns the number of readings."""
    now = int(time.time() * 1000)
    stream = secrets.token_hex(8)
    energy, balance, readings = 5000.0, 80.0, []
    n = HIST_DAYS * 24
    for i in range(n):
        ts = now - (n - 1 - i) * 3600_000 - 60_000
        hour = (ts // 3600_000) % 24
        power = 350 + 300 * math.sin((hour - 6) / 24 * 2 * math.pi) + 40 * math.sin(i * 0.7)
        use = power / 1000.0
        energy += use
        balance -= use * 0.3
        if balance < 10:
            balance += 60.0  # a top-up
        readings.append({"seq": i + 1, "meter": HIST_METER, "ts": ts, "ok": True,
                         "values": {"energy_import": round(energy, 3), "power": round(power, 1),
                                    "balance": round(balance, 2)}})
    auth = ["-h", "127.0.0.1", "-p", str(st.broker_port), "-u", HIST_GW, "-P", st.users[HIST_GW],
            "-q", "1"]
    subprocess.run([MOSQUITTO_PUB, *auth, "-r", "-t", f"{st.prefix}/{HIST_GW}/status",
                    "-m", json.dumps({"state": "online", "ts": now})], check=True)
    for k in range(0, n, 1000):
        path = st.path("history.json")
        with open(path, "w") as f:
            json.dump({"v": 1, "gw": HIST_GW, "stream": stream, "readings": readings[k:k + 1000]}, f)
        subprocess.run([MOSQUITTO_PUB, *auth, "-t", f"{st.prefix}/{HIST_GW}/readings", "-f", path],
                       check=True)
    return n


def raw_get(port, path, headers=None):
    """GET without any token; returns (status, headers with lowercase names, body bytes)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class Dashboard(unittest.TestCase):
    def setUp(self):
        missing = [p for p in (os.path.join(WEB, "node_modules", "playwright-core"),
                               os.path.join(WEB, "node_modules", "echarts"), CHROMIUM, NODE)
                   if not os.path.exists(p)]
        if missing:
            self.fail("missing: " + ", ".join(missing) + " (tools/dev deps installs nodejs, npm "
                      "and chromium, and runs `npm ci` in cloud/web)")
        self.st = stack.Stack(BUILD)
        self.addCleanup(self.st.finish, self)
        st = self.st
        st.start_broker(gateways=("gw-01", HIST_GW))
        st.start_sim([f"{m[1]}:{m[2]}:{m[3]}" for m in METERS])
        cfg = st.cloud_config()
        cfg["registry"] = REGISTRY
        cfg["rollup"] = {"raw_days": 0, "m5_days": 0}  # keep and roll up the year of history
        cfg["alerts"] = ALERTS
        st.start_cloud(cfg)
        self.viewer_password = st.add_cloud_user("vera", "viewer")
        self.auth = st.token is not None
        code, body, _ = st.request("POST", "/api/v1/sites", SITE)
        self.assertEqual(code, 201, body)
        code, body, _ = st.request("POST", "/api/v1/meters",
                                   {"id": "house", "gateway": "gw-01", "site": "home",
                                    "region": "north", "area": "n1", "dwelling_type": "house"})
        self.assertEqual(code, 201, body)
        code, body, _ = st.request("POST", "/api/v1/meters",
                                   {"id": HIST_METER, "gateway": HIST_GW, "site": "home",
                                    "region": "south", "area": "s1", "dwelling_type": "flat",
                                    "prepaid": True})
        self.assertEqual(code, 201, body)
        self.hist = publish_history(st)
        acfg = st.agent_config(METERS, interval_ms=1000)
        acfg["health"] = {"interval_ms": 2000}
        st.start_agent(acfg)

        def ready():
            code, body = st.get("/api/v1/meters")
            seen = {m["id"] for m in body["meters"] if m.get("last_reading")}
            code, gw = st.get("/api/v1/gateways/gw-01")
            code2, hist = st.get(f"/api/v1/meters/{HIST_METER}/readings?limit=10000")
            code3, al = st.get("/api/v1/alerts?state=firing")
            return (all(m[0] in seen for m in METERS) and code == 200 and gw["health"]
                    and gw["health"].get("meters") and code2 == 200
                    and len(hist["readings"]) == self.hist
                    and code3 == 200 and {a["rule"] for a in al["alerts"]} == {"hist-silent",
                                                                                "house-power"})

        stack.wait_for(ready, 60, "readings of every meter, a health message and two alerts")

    def test_static_files(self):
        port = self.st.http_port
        code, h, body = raw_get(port, "/")
        self.assertEqual(code, 200)
        self.assertEqual(h["content-type"], "text/html; charset=utf-8")
        self.assertIn(b'<script type="module" src="/static/app.js">', body)
        self.assertNotIn(b"<script>", body, "no inline scripts")
        self.assertEqual(h["cache-control"], "no-cache")
        csp = h["content-security-policy"]
        for part in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
            self.assertIn(part, csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertEqual(h["x-content-type-options"], "nosniff")
        self.assertEqual(h["referrer-policy"], "no-referrer")
        self.assertEqual(h["vary"], "Accept-Encoding")

        code, h, body = raw_get(port, "/static/echarts.min.js", {"Accept-Encoding": "gzip, br"})
        self.assertEqual(code, 200)
        self.assertEqual(h["content-encoding"], "gzip")
        self.assertEqual(h["content-type"], "text/javascript; charset=utf-8")
        self.assertEqual(body[:2], b"\x1f\x8b", "a gzip stream")
        self.assertLess(len(body), 600_000)
        code, h2, plain = raw_get(port, "/static/echarts.min.js", {"Accept-Encoding": "gzip;q=0"})
        self.assertNotIn("content-encoding", h2, "gzip;q=0 refuses gzip")
        self.assertGreater(len(plain), len(body))
        self.assertNotEqual(h["etag"], h2["etag"], "each encoding has its own ETag")
        code, h3, body = raw_get(port, "/static/echarts.min.js",
                                 {"Accept-Encoding": "gzip", "If-None-Match": h["etag"]})
        self.assertEqual((code, body), (304, b""))
        self.assertEqual(h3["etag"], h["etag"])
        code, h, _ = raw_get(port, "/static/style.css")
        self.assertEqual((code, h["content-type"]), (200, "text/css; charset=utf-8"))
        code, h, _ = raw_get(port, "/static/favicon.svg")
        self.assertEqual((code, h["content-type"]), (200, "image/svg+xml"))

        # only names of the allow-list: nothing else of the folder or the disk
        for path in ("/static/", "/static/../cloud.db", "/static/%2e%2e/index.html",
                     "/static/index.html.gz", "/static/CMakeLists.txt", "/index.html",
                     "/static//app.js", "/static/app.js/", "/static/APP.JS", "/etc/passwd",
                     "/static/..%2f..%2fetc%2fpasswd"):
            code, h, body = raw_get(port, path)
            self.assertEqual(code, 404, path)
            self.assertEqual(h["content-type"], "application/json", path)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"{}", method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
            self.fail("POST / must fail")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 405)
            self.assertEqual(e.headers["Allow"], "GET, HEAD")
        # the API is not touched by the static routes: still 401 without a token
        if self.auth:
            code, _, _ = raw_get(port, "/api/v1/meters")
            self.assertEqual(code, 401)

    def test_browser(self):
        st = self.st
        shots = os.path.join(os.path.abspath(BUILD), "screenshots")
        shutil.rmtree(shots, ignore_errors=True)
        os.makedirs(shots)
        report_path = st.path("dashboard-report.json")
        env = dict(os.environ, MLK_BASE=f"http://127.0.0.1:{st.http_port}",
                   MLK_USER=st.admin_user if self.auth else "",
                   MLK_PASSWORD=st.admin_password if self.auth else "",
                   MLK_SHOTS=shots, MLK_REPORT=report_path, MLK_METER="house",
                   MLK_GATEWAY="gw-01", MLK_PREPAID=HIST_METER, MLK_SITE=SITE["id"], MLK_REGION="north",
                   MLK_AREAS=",".join(REGISTRY["regions"]["north"]),
                   MLK_ALERTS="1", MLK_ACK_RULE="hist-silent", MLK_VIEWER="vera",
                   MLK_VIEWER_PASSWORD=self.viewer_password,
                   PLAYWRIGHT_BROWSERS_PATH="0", PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
        if not self.auth:
            print("meter-cloud has no login: the browser skips the login steps", file=sys.stderr)
        p = subprocess.run([NODE, os.path.join(WEB, "tests", "dashboard.mjs")], cwd=WEB, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=400)
        out = p.stdout.decode("utf-8", "replace")
        print(out, file=sys.stderr)
        self.assertTrue(os.path.exists(report_path), "the browser script wrote no report:\n" + out)
        with open(report_path) as f:
            report = json.load(f)
        failed = [c for c in report["checks"] if not c["ok"]]
        self.assertEqual(failed, [], "browser checks failed")
        self.assertEqual(p.returncode, 0, out)
        self.assertEqual(report["console"], [], "console or page errors")
        for note in report["allowed"]:
            print(f"expected console error ({note['why']}): {note['text']} {note['url']}",
                  file=sys.stderr)
        # the 1-year view: a few thousand points at most (counted in the responses)
        self.assertLessEqual(report["yearPoints"]["total"], 3000, report["yearPoints"])
        names = sorted(os.path.basename(s) for s in report["screenshots"])
        for want in ("login", "overview", "meter", "gateways", "gateway", "registry", "alerts",
                     "alert"):
            for kind in ("phone", "desktop"):
                self.assertIn(f"{kind}-{want}.png", names)
        for s in report["screenshots"]:
            with open(s, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", s)
        # what the browser acknowledged is in the API; the overview's count is the API's
        code, body = st.get("/api/v1/alerts?state=acknowledged")
        self.assertEqual([a["rule"] for a in body["alerts"]], ["hist-silent"], body)
        self.assertEqual(body["alerts"][0]["acknowledged_by"], st.admin_user)
        # what the browser registered is in the API
        code, body = st.get("/api/v1/meters/dash-new-1")
        self.assertEqual(code, 200, body)
        self.assertEqual((body["region"], body["area"], body["site"]), ("north", "n1", "home"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
