#!/usr/bin/env python3
"""Alerts end to end on the real stack (mosquitto, meter-sim, meter-agent, meter-cloud).

A meter's polls are made to fail through meter-sim's control socket: the meter_offline rule
fires, and a webhook receiver (python http.server on a free port, started here) gets the
POST with a valid HMAC-SHA256 signature; it answers 500 the first time, so the delivery is
retried after the backoff and both attempts are recorded on the alert. A viewer may read
alerts but not acknowledge them (403), no token gets 401, an operator acknowledges it;
when the polls work again the alert resolves and the receiver is told. Stopping the agent
fires the gateway_offline rule, starting it again resolves it. No secret reaches the log
or the API. A second rule mails a small SMTP server (here too) when another meter fails; a channel
that requires STARTTLS, which that server does not offer, fails every attempt and sends
nothing.
"""
import hashlib
import hmac
import http.server
import json
import os
import secrets
import socket
import socketserver
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
METERS = [("house", "tcp", 1, "sdm630"), ("garage", "tcp", 2, "sdm120")]
GW = "gw-01"


class Control:
    """A client of meter-sim's control socket (as in test_sim_faults.py)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")

    def cmd(self, line):
        self.f.write(line.encode() + b"\n")
        self.f.flush()
        return self.f.readline().decode().rstrip("\n")

    def close(self):
        self.f.close()
        self.s.close()


class Receiver:
    """A webhook receiver: records every POST; answers the codes in self.codes first (then
    200)."""

    def __init__(self):
        self.posts = []
        self.codes = []
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if 0 < n <= 1 << 20 else b""
                with rec.lock:
                    code = rec.codes.pop(0) if rec.codes else 200
                    rec.posts.append({"t": time.time(), "path": self.path, "code": code,
                                      "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body": body})
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"busy, try later" if code >= 300 else b"ok")

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def of(self, alert_id, event):
        with self.lock:
            return [p for p in self.posts
                    if json.loads(p["body"] or b"{}").get("alert", {}).get("id") == alert_id
                    and json.loads(p["body"])["event"] == event]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class Smtp:
    """A minimal SMTP server (plain, no AUTH): records each message's envelope and text."""

    def __init__(self):
        self.mails = []
        rec = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                mail = {"from": None, "to": [], "data": b""}
                self.wfile.write(b"220 localhost test SMTP\r\n")
                while True:
                    line = self.rfile.readline(4096)
                    if not line:
                        return
                    cmd = line.strip().decode("ascii", "replace")
                    up = cmd.upper()
                    if up.startswith("EHLO") or up.startswith("HELO"):
                        self.wfile.write(b"250-localhost\r\n250 8BITMIME\r\n")
                    elif up.startswith("MAIL FROM:"):
                        mail["from"] = cmd[10:].strip()
                        self.wfile.write(b"250 OK\r\n")
                    elif up.startswith("RCPT TO:"):
                        mail["to"].append(cmd[8:].strip())
                        self.wfile.write(b"250 OK\r\n")
                    elif up == "DATA":
                        self.wfile.write(b"354 go on\r\n")
                        data = b""
                        while not data.endswith(b"\r\n.\r\n"):
                            chunk = self.rfile.readline(65536)
                            if not chunk:
                                return
                            data += chunk
                        mail["data"] = data
                        rec.mails.append(dict(mail))
                        self.wfile.write(b"250 queued\r\n")
                    elif up == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 OK\r\n")

        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def valid_signature(post, secret):
    h = post["headers"]
    ts = h.get("x-meterlink-timestamp", "")
    sig = h.get("x-meterlink-signature", "")
    want = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + post["body"],
                                hashlib.sha256).hexdigest()
    return hmac.compare_digest(sig, want) and abs(time.time() - int(ts)) < 300


class Alerts(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.addCleanup(self.st.finish, self)
        self.rx = Receiver()
        self.addCleanup(self.rx.stop)
        self.smtp = Smtp()
        self.addCleanup(self.smtp.stop)
        self.secret = secrets.token_urlsafe(24)
        st = self.st
        st.start_broker(gateways=(GW,))
        self.ctl_path = st.path("sim.ctl")
        st.start_sim([f"{m[1]}:{m[2]}:{m[3]}" for m in METERS], extra=["--control", self.ctl_path])
        cfg = st.cloud_config()
        cfg["alerts"] = {
            "interval_s": 1, "repeat_s": 3600, "retry_max": 3, "retry_base_ms": 700,
            "retry_max_ms": 5000,
            "channels": {"hook": {"type": "webhook",
                                  "url": f"http://127.0.0.1:{self.rx.port}/meterlink",
                                  "secret": self.secret, "timeout_ms": 5000},
                         "mail": {"type": "email", "url": f"smtp://127.0.0.1:{self.smtp.port}",
                                  "from": "meter-cloud@example.net",
                                  "to": ["ops@example.net", "oncall@example.net"]},
                         # STARTTLS required, but this server does not offer it: must fail
                         "mail-tls": {"type": "email", "starttls": True,
                                      "url": f"smtp://127.0.0.1:{self.smtp.port}",
                                      "from": "meter-cloud@example.net",
                                      "to": ["ops@example.net"]}},
            "rules": [
                {"name": "house-silent", "kind": "meter_offline", "meter": "house", "after_s": 3,
                 "channels": ["hook"]},
                {"name": "gw-offline", "kind": "gateway_offline", "gateway": GW, "after_s": 1,
                 "channels": ["hook"]},
                {"name": "garage-silent", "kind": "meter_offline", "meter": "garage",
                 "after_s": 3, "channels": ["mail", "mail-tls"]},
                {"name": "power-high", "kind": "threshold", "quantity": "power",
                 "above": 1e9, "for_s": 5},
            ]}
        st.start_cloud(cfg)
        self.agent_cfg = st.agent_config(METERS, interval_ms=500)
        self.agent_cfg["buses"][0]["timeout_ms"] = 300
        st.start_agent(self.agent_cfg)
        self.ctl = Control(self.ctl_path)
        self.addCleanup(self.ctl.close)

        def ready():
            code, body = st.get("/api/v1/meters")
            have = {m["id"] for m in body["meters"] if (m.get("last_reading") or {}).get("ok")}
            return code == 200 and {"house", "garage"} <= have

        stack.wait_for(ready, 60, "good readings of both meters")
        # tokens of a viewer and an operator
        self.viewer = st.login_token("vera", st.add_cloud_user("vera", "viewer"))
        self.operator = st.login_token("otto", st.add_cloud_user("otto", "operator"))

    def alerts(self, query="", token=stack.ADMIN):
        code, body = self.st.get("/api/v1/alerts" + query, token=token)
        self.assertEqual(code, 200, body)
        return body

    def test_meter_silent_webhook_retry_ack_resolve(self):
        st = self.st
        self.assertEqual(self.alerts("?state=open")["alerts"], [], "nothing fires while all is well")

        # -- the meter stops answering: the rule fires
        self.rx.codes = [500]  # the receiver is busy the first time
        self.assertEqual(self.ctl.cmd("fault tcp:1 noreply"), "ok")
        t_fault = time.time()

        def firing():
            a = self.alerts("?state=firing&meter=house")["alerts"]
            return a[0] if a else None

        al = stack.wait_for(firing, 60, "the house-silent alert to fire")
        self.assertEqual((al["rule"], al["kind"], al["meter"], al["gateway"]),
                         ("house-silent", "meter_offline", "house", GW))
        self.assertGreaterEqual(time.time() - t_fault, 2.0, "not before after_s")
        self.assertIsNone(al["acknowledged_at"])
        self.assertIsNone(al["resolved_at"])
        self.assertIn("house", al["message"])
        # garage still answers: no alert about it
        self.assertEqual(self.alerts("?meter=garage")["alerts"], [])

        # -- the webhook: 500 first, then retried; both signed; both recorded
        posts = stack.wait_for(lambda: (lambda p: p if len(p) >= 2 else None)(
            self.rx.of(al["id"], "firing")), 30, "the firing webhook to be retried")
        self.assertEqual([p["code"] for p in posts[:2]], [500, 200])
        self.assertGreaterEqual(posts[1]["t"] - posts[0]["t"], 0.4, "the retry waits the backoff")
        for p in posts:
            self.assertEqual(p["path"], "/meterlink")
            self.assertEqual(p["headers"]["content-type"], "application/json")
            self.assertEqual(p["headers"]["x-meterlink-event"], "firing")
            self.assertTrue(valid_signature(p, self.secret), p["headers"])
            self.assertFalse(valid_signature(p, self.secret + "x"), "a wrong secret fails")
            body = json.loads(p["body"])
            self.assertEqual((body["event"], body["alert"]["rule"], body["alert"]["state"]),
                             ("firing", "house-silent", "firing"))
        code, one = st.get(f"/api/v1/alerts/{al['id']}")
        self.assertEqual(code, 200, one)
        d = [x for x in one["deliveries"] if x["event"] == "firing"]
        self.assertEqual([(x["attempt"], x["status"], x["code"]) for x in d[:2]],
                         [(1, "failed", 500), (2, "delivered", 200)], one["deliveries"])
        self.assertIn("500", d[0]["error"])
        self.assertIsNotNone(d[0]["retry_at"])
        self.assertIsNone(d[1]["retry_at"])
        self.assertEqual(d[1]["channel"], "hook")

        # -- auth: 401 without a token, viewers read, only operators acknowledge
        for method, path in (("GET", "/api/v1/alerts"), ("GET", f"/api/v1/alerts/{al['id']}"),
                             ("GET", "/api/v1/alerts/rules"),
                             ("POST", f"/api/v1/alerts/{al['id']}/ack")):
            code, body, hdrs = st.request(method, path, token=None)
            self.assertEqual(code, 401, (method, path, body))
            self.assertEqual(hdrs.get("www-authenticate"), "Bearer")
            self.assertEqual(body["error"]["code"], "unauthorized")
        code, body, _ = st.request("POST", f"/api/v1/alerts/{al['id']}/ack", token="bogus.token")
        self.assertEqual(code, 401, body)
        self.assertEqual(len(self.alerts("?state=firing", token=self.viewer)["alerts"]), 1)
        code, body = st.get(f"/api/v1/alerts/{al['id']}", token=self.viewer)
        self.assertEqual(code, 200, body)
        code, body, _ = st.request("POST", f"/api/v1/alerts/{al['id']}/ack", token=self.viewer)
        self.assertEqual(code, 403, body)
        self.assertEqual(body["error"]["code"], "forbidden")
        # bad input
        for q in ("?state=bogus", "?limit=0", "?limit=x", "?meter=bad%20id", "?color=red"):
            code, body = st.get("/api/v1/alerts" + q)
            self.assertEqual(code, 400, (q, body))
            self.assertEqual(body["error"]["code"], "bad_parameter")
        code, body = st.get("/api/v1/alerts/abc")
        self.assertEqual(code, 400, body)
        code, body = st.get("/api/v1/alerts/999999")
        self.assertEqual(code, 404, body)
        code, body, _ = st.request("POST", "/api/v1/alerts/999999/ack", token=self.operator)
        self.assertEqual(code, 404, body)
        code, body, _ = st.request("POST", f"/api/v1/alerts/{al['id']}/ack", {"x": 1},
                                   token=self.operator)
        self.assertEqual(code, 400, body)

        code, body, _ = st.request("POST", f"/api/v1/alerts/{al['id']}/ack", token=self.operator)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["state"], body["acknowledged_by"]), ("acknowledged", "otto"))
        self.assertIsNotNone(body["acknowledged_at"])
        code, again, _ = st.request("POST", f"/api/v1/alerts/{al['id']}/ack", {},
                                    token=self.operator)
        self.assertEqual((code, again["acknowledged_at"]), (200, body["acknowledged_at"]))
        self.assertEqual([a["id"] for a in self.alerts("?state=acknowledged")["alerts"]], [al["id"]])
        self.assertEqual(self.alerts("?state=firing")["alerts"], [])

        # -- the meter answers again: resolved, and the receiver is told
        self.assertEqual(self.ctl.cmd("fault tcp:1 none"), "ok")

        def resolved():
            code, a = st.get(f"/api/v1/alerts/{al['id']}")
            return a if a["state"] == "resolved" else None

        done = stack.wait_for(resolved, 90, "the house-silent alert to resolve")
        self.assertIsNotNone(done["resolved_at"])
        self.assertEqual(done["acknowledged_by"], "otto")
        post = stack.wait_for(lambda: self.rx.of(al["id"], "resolved"), 30,
                              "the resolved webhook")[0]
        self.assertTrue(valid_signature(post, self.secret))
        self.assertEqual(json.loads(post["body"])["alert"]["state"], "resolved")
        code, body, _ = st.request("POST", f"/api/v1/alerts/{al['id']}/ack", token=self.operator)
        self.assertEqual(code, 409, body)
        self.assertEqual(self.alerts("?state=open&meter=house")["alerts"], [])
        self.assertEqual(len(self.alerts("?state=resolved")["alerts"]), 1)

        # -- the agent stops: the gateway goes offline (its status), then comes back
        st.stop_proc("meter-agent")

        def gw_firing():
            a = self.alerts(f"?state=firing&gateway={GW}")["alerts"]
            a = [x for x in a if x["rule"] == "gw-offline"]
            return a[0] if a else None

        gal = stack.wait_for(gw_firing, 60, "the gw-offline alert to fire")
        self.assertEqual((gal["kind"], gal["gateway"], gal["meter"]), ("gateway_offline", GW, None))
        stack.wait_for(lambda: self.rx.of(gal["id"], "firing"), 30, "the gateway's webhook")
        agent = st.start_agent(self.agent_cfg)
        stack.wait_for(lambda: agent.alive() and st.get(f"/api/v1/alerts/{gal['id']}")[1]["state"]
                       == "resolved", 60, "the gw-offline alert to resolve")

        # -- the rules, without secrets or URLs; no secret anywhere in the log
        code, rules = st.get("/api/v1/alerts/rules", token=self.viewer)
        self.assertEqual(code, 200, rules)
        self.assertEqual([r["name"] for r in rules["rules"]],
                         ["house-silent", "gw-offline", "garage-silent", "power-high"])
        self.assertEqual(rules["rules"][3], {"name": "power-high", "kind": "threshold",
                                             "channels": [], "meter": None, "gateway": None,
                                             "quantity": "power", "above": 1e9, "unit": "W",
                                             "for_s": 5})
        self.assertEqual(rules["channels"], [{"name": "hook", "type": "webhook", "signed": True},
                                             {"name": "mail", "type": "email", "recipients": 2},
                                             {"name": "mail-tls", "type": "email",
                                              "recipients": 1}])
        text = json.dumps(rules)
        self.assertNotIn(self.secret, text)
        self.assertNotIn(str(self.rx.port), text)
        with open(st.path("meter-cloud.log"), "rb") as f:
            log = f.read().decode("utf-8", "replace")
        self.assertNotIn(self.secret, log)
        self.assertIn("alerts: house-silent house: firing", log)

    def test_email_over_smtp(self):
        st = self.st
        self.assertEqual(self.ctl.cmd("fault tcp:2 noreply"), "ok")

        def firing():
            a = self.alerts("?state=firing&meter=garage")["alerts"]
            return a[0] if a else None

        al = stack.wait_for(firing, 60, "the garage-silent alert to fire")
        mail = stack.wait_for(lambda: self.smtp.mails and self.smtp.mails[0], 30, "an e-mail")
        self.assertEqual(mail["from"], "<meter-cloud@example.net>")
        self.assertEqual(sorted(mail["to"]), ["<oncall@example.net>", "<ops@example.net>"])
        text = mail["data"].decode("utf-8", "replace")
        head, _, body = text.partition("\r\n\r\n")
        self.assertIn("Subject: [Meterlink] firing: meter garage: ", head)
        self.assertIn("To: <ops@example.net>, <oncall@example.net>", head)
        self.assertIn('"rule":"garage-silent"', body)
        d = stack.wait_for(lambda: [x for x in st.get(f"/api/v1/alerts/{al['id']}")[1]["deliveries"]
                                    if x["status"] == "delivered"], 20, "the delivery record")
        self.assertEqual((d[0]["channel"], d[0]["code"]), ("mail", 250))
        # starttls: true never falls back to plain text: every attempt fails, none is sent
        tls = stack.wait_for(lambda: (lambda x: x if len(x) == 4 else None)(
            [x for x in st.get(f"/api/v1/alerts/{al['id']}")[1]["deliveries"]
             if x["channel"] == "mail-tls"]), 30, "1 + retry_max failed STARTTLS attempts")
        self.assertEqual([x["status"] for x in tls], ["failed"] * 4, tls)
        self.assertIsNone(tls[-1]["retry_at"], "given up after retry_max")
        self.assertRegex(tls[0]["error"], "(?i)tls|ssl", tls[0])
        self.assertEqual(len(self.smtp.mails), 1, "only the plain channel's mail was sent")


if __name__ == "__main__":
    unittest.main(verbosity=2)
