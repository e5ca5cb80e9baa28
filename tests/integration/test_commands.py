#!/usr/bin/env python3
"""Commands to gateways: POST /api/v1/gateways/{id}/commands through a real mosquitto.

The cloud publishes {"id","cmd","args"} on <prefix>/<gw>/cmd and waits for the reply on
<prefix>/<gw>/reply with the same id. A small responder (mosquitto_sub/mosquitto_pub with
the gateway's own broker account) stands in for the gateway, so that every answer, a wrong
answer and no answer can be tested; then the real meter-agent answers a ping. Also: 504
after the timeout (and the API keeps serving meanwhile), 400s for bad commands and
bodies, 404 for an unknown gateway, 403 for viewers, and replies from the wrong gateway or
with bad payloads ignored.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
GW, SILENT = "gw-01", "gw-02"  # SILENT never answers
TIMEOUT_MS = 1500
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def agent_has_ping():
    agent = os.path.join(SRC, "agent")
    for name in os.listdir(agent):
        if name.endswith(".c"):
            with open(os.path.join(agent, name)) as f:
                if '"ping"' in f.read():
                    return True
    return False


def publish(st, topic, payload, user):
    r = subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(st.broker_port), "-u", user,
                        "-P", st.users[user], "-q", "1", "-t", topic, "-s"], input=payload,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"mosquitto_pub {topic}: {r.stderr.decode('utf-8', 'replace')}")


class Listener:
    """mosquitto_sub on one topic as user; every message kept (parsed when JSON). With
    answer, replies as the gateway: answer(msg) returns a payload (bytes or a JSON-able
    value) to publish on reply_topic, or None for no answer."""

    def __init__(self, st, user, topic, answer=None, reply_topic=None, reply_user=None):
        self.st, self.topic, self.answer = st, topic, answer
        self.reply_topic, self.reply_user = reply_topic, reply_user or user
        self.msgs, self.lock = [], threading.Lock()
        self.p = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(st.broker_port), "-u", user,
             "-P", st.users[user], "-q", "1", "-t", topic],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        # subscribed once a probe (the cloud's account may write anywhere) comes back
        for i in range(40):
            publish(st, topic, f"probe-{i}".encode(), "meter-cloud")
            try:
                stack.wait_for(lambda: f"probe-{i}" in self.raw(), 0.5, "probe")
                return
            except TimeoutError:
                continue
        raise TimeoutError(f"mosquitto_sub on {topic} never got its probe")

    def _read(self):
        for line in self.p.stdout:
            text = line.decode("utf-8", "replace").rstrip("\n")
            try:
                msg = json.loads(text)
            except ValueError:
                msg = text
            with self.lock:
                self.msgs.append(msg)
            if self.answer and isinstance(msg, dict):
                out = self.answer(msg)
                if out is not None:
                    payload = out if isinstance(out, bytes) else json.dumps(out).encode()
                    publish(self.st, self.reply_topic, payload, self.reply_user)

    def raw(self):
        with self.lock:
            return list(self.msgs)

    def commands(self):
        return [m for m in self.raw() if isinstance(m, dict)]

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p.stdout.close()


def gateway_answer(msg):
    """What the stand-in gateway says: ping -> pong, read_registers -> its args back,
    get_config -> an error, reboot -> nothing at all."""
    cmd = msg.get("cmd")
    if cmd == "ping":
        return {"id": msg["id"], "ok": True, "result": {"pong": True, "uptime_s": 12}}
    if cmd == "read_registers":
        return {"id": msg["id"], "ok": True, "result": {"echo": msg.get("args")}}
    if cmd == "get_config":
        return {"id": msg["id"], "ok": False,
                "error": {"code": "unsupported", "message": "not today"}}
    if cmd == "maintenance":  # a reply without result: null
        return {"id": msg["id"], "ok": True}
    return None


class Commands(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.listeners = []
        self.addCleanup(self.st.finish, self)
        self.addCleanup(self.cleanup)

    def cleanup(self):
        for li in self.listeners:
            li.stop()
        self.st.stop()
        for name in os.listdir(self.st.dir):
            if name.endswith(".log"):
                with open(self.st.path(name), errors="replace") as f:
                    text = f.read()
                for s in (self.st.admin_password, self.st.token):
                    if s:
                        self.assertNotIn(s, text, name)
                for bad in ("Sanitizer", "runtime error"):
                    self.assertNotIn(bad, text, name)

    def start(self, timeout_ms=TIMEOUT_MS, responder=True):
        st = self.st
        st.start_broker(gateways=(GW, SILENT))
        cfg = st.cloud_config()
        cfg["http"]["command_timeout_ms"] = timeout_ms
        st.start_cloud(cfg)
        stack.wait_for(lambda: st.get("/healthz")[1]["mqtt"] == "connected", 15,
                       "meter-cloud to connect to the broker")
        # both gateways known to the cloud (a status is enough)
        for gw in (GW, SILENT):
            publish(st, f"{st.prefix}/{gw}/status", b'{"state":"online"}', gw)
            stack.wait_for(lambda: st.get(f"/api/v1/gateways/{gw}")[0] == 200, 15,
                           f"{gw} in the API")
        if responder:
            self.gw = self.listen(GW, f"{st.prefix}/{GW}/cmd", gateway_answer,
                                  f"{st.prefix}/{GW}/reply")
        # the silent one's commands, seen from the cloud's account
        self.silent = self.listen("meter-cloud", f"{st.prefix}/{SILENT}/cmd")

    def listen(self, user, topic, answer=None, reply_topic=None, reply_user=None):
        li = Listener(self.st, user, topic, answer, reply_topic, reply_user)
        self.listeners.append(li)
        return li

    def command(self, gw, body, token=stack.ADMIN):
        return self.st.request("POST", f"/api/v1/gateways/{gw}/commands", body, token=token)

    def assert_error(self, got, status, code, what=""):
        self.assertEqual(got[0], status, f"{what}: {got[1]}")
        self.assertEqual(got[1]["error"]["code"], code, f"{what}: {got[1]}")

    # -----------------------------------------------------------------------------
    def test_round_trip(self):
        st = self.st
        self.start()
        code, body, _ = self.command(GW, {"cmd": "ping"})
        self.assertEqual(code, 200, body)
        self.assertEqual(set(body), {"id", "ok", "result"})
        self.assertRegex(body["id"], UUID)
        self.assertEqual((body["ok"], body["result"]), (True, {"pong": True, "uptime_s": 12}))
        # what the gateway got: exactly id, cmd, args ({} when none were given)
        sent = [m for m in self.gw.commands() if m.get("id") == body["id"]]
        self.assertEqual(sent, [{"id": body["id"], "cmd": "ping", "args": {}}])
        # args travel as given
        args = {"meter": "m1", "address": 30001, "count": 2, "nested": {"a": [1, 2.5, None]}}
        code, body, _ = self.command(GW, {"cmd": "read_registers", "args": args})
        self.assertEqual((code, body["ok"], body["result"]), (200, True, {"echo": args}), body)
        # a failed command is still a 200: the gateway answered
        code, body, _ = self.command(GW, {"cmd": "get_config", "args": {}})
        self.assertEqual(code, 200, body)
        self.assertEqual(set(body), {"id", "ok", "error"})
        self.assertEqual((body["ok"], body["error"]),
                         (False, {"code": "unsupported", "message": "not today"}))
        code, body, _ = self.command(GW, {"cmd": "maintenance", "args": {"on": True}})
        self.assertEqual((code, body["ok"], body["result"]), (200, True, None), body)
        # each command has its own id; the counters saw them
        ids = [m["id"] for m in self.gw.commands()]
        self.assertEqual(len(ids), 4)
        self.assertEqual(len(set(ids)), 4)
        ing = st.get("/healthz")[1]["ingest"]
        self.assertEqual((ing["commands"], ing["replies"]), (4, 4))
        # an operator may, a viewer may not
        pw = st.add_cloud_user("op", "operator")
        op = st.login_token("op", pw)
        self.assertEqual(self.command(GW, {"cmd": "ping"}, token=op)[0], 200)
        pw = st.add_cloud_user("view", "viewer")
        viewer = st.login_token("view", pw)
        self.assert_error(self.command(GW, {"cmd": "ping"}, token=viewer), 403, "forbidden",
                          "viewer")
        self.assert_error(self.command(GW, {"cmd": "ping"}, token=None), 401, "unauthorized",
                          "no token")
        self.assertEqual(len(self.gw.commands()), 5, "a refused command reached the gateway")
        with open(st.path("meter-cloud.log")) as f:
            log = f.read()
        self.assertIn(f"ping to {GW} by op: replied", log)
        self.assertNotIn("30001", log, "args are not logged")

    def test_timeout(self):
        st = self.st
        self.start()
        results = {}

        def slow():
            t0 = time.monotonic()
            results["got"] = self.command(SILENT, {"cmd": "ping"})
            results["took"] = time.monotonic() - t0

        t = threading.Thread(target=slow)
        t.start()
        # while it waits, the API keeps serving (no thread is held but the command's)
        time.sleep(0.3)
        for _ in range(5):
            t0 = time.monotonic()
            self.assertEqual(st.get("/healthz", token=None)[0], 200)
            self.assertEqual(st.get("/api/v1/gateways")[0], 200)
            self.assertLess(time.monotonic() - t0, 0.5, "the API stalled behind a command")
        t.join(30)
        got = results["got"]
        self.assert_error(got, 504, "gateway_timeout", "silent gateway")
        self.assertGreaterEqual(results["took"], TIMEOUT_MS / 1000 - 0.05)
        self.assertLess(results["took"], TIMEOUT_MS / 1000 + 2)
        # the command did go out; its id is in the message
        sent = self.silent.commands()
        self.assertEqual(len(sent), 1)
        self.assertIn(sent[0]["id"], got[1]["error"]["message"])
        # a reply after the timeout is dropped quietly, and nothing is confused by it
        publish(st, f"{st.prefix}/{SILENT}/reply",
                json.dumps({"id": sent[0]["id"], "ok": True}).encode(), SILENT)
        code, body, _ = self.command(GW, {"cmd": "ping"})
        self.assertEqual((code, body["ok"]), (200, True), body)
        # a gateway that has never been seen is a 404 at once, and nothing is published
        t0 = time.monotonic()
        self.assert_error(self.command("gw-99", {"cmd": "ping"}), 404, "not_found", "unknown")
        self.assertLess(time.monotonic() - t0, 1)
        # several at once, on both gateways: each gets its own answer
        with ThreadPoolExecutor(max_workers=8) as ex:
            futs = [ex.submit(self.command, GW if i % 2 == 0 else SILENT, {"cmd": "ping"})
                    for i in range(8)]
            got = [f.result() for f in futs]
        for i, (code, body, _) in enumerate(got):
            self.assertEqual(code, 200 if i % 2 == 0 else 504, body)
        ids = {b["id"] for c, b, _ in got if c == 200}
        self.assertEqual(len(ids), 4)

    def test_wrong_and_bad_replies(self):
        st = self.st
        self.start(responder=False)
        # the silent gateway's listener is the cloud's account: it sees gw-02's commands.
        # Someone answers them from another gateway's topic, or with a bad payload: ignored.
        evil = self.listen("meter-cloud", f"{st.prefix}/{GW}/cmd",
                           lambda m: {"id": m["id"], "ok": True, "result": "forged"},
                           f"{st.prefix}/{SILENT}/reply", reply_user=SILENT)
        self.assert_error(self.command(GW, {"cmd": "ping"}), 504, "gateway_timeout",
                          "a reply on another gateway's topic")
        self.assertEqual(len(evil.commands()), 1)
        before = st.get("/healthz")[1]["ingest"]["rejects"]["bad_reply"]
        bad = [b"not json", b"[]", b'{"ok":true}', b'{"id":"short","ok":true}',
               b'{"id":"00000000-0000-4000-8000-000000000000","ok":"yes"}',
               b'{"id":"00000000-0000-4000-8000-000000000000"}', b"\xff\xfe"]
        for p in bad:
            publish(st, f"{st.prefix}/{GW}/reply", p, GW)
        stack.wait_for(lambda: st.get("/healthz")[1]["ingest"]["rejects"]["bad_reply"]
                       == before + len(bad), 15, "the bad replies counted")
        self.assertTrue(st.procs["meter-cloud"].alive())

    def test_bad_requests(self):
        st = self.st
        self.start()
        cases = [
            ({"cmd": "format_disk"}, "cmd"),
            ({"cmd": "PING"}, "cmd"),
            ({"cmd": 5}, "cmd"),
            ({}, "cmd"),
            ({"cmd": "ping", "args": []}, "args"),
            ({"cmd": "ping", "args": "x"}, "args"),
            ({"cmd": "ping", "args": {"blob": "x" * 9000}}, "args"),
            ({"cmd": "ping", "id": "mine"}, "id"),
            ({"cmd": "ping", "args": {}, "cmd2": 1}, "cmd2"),
        ]
        for body, word in cases:
            got = self.command(GW, body)
            self.assert_error(got, 400, "bad_request", str(body)[:60])
            self.assertIn(word, got[1]["error"]["message"], str(body)[:60])
        for raw in (b"", b"{", b'{"cmd":"ping"} x', b'{"cmd":"ping","cmd":"reboot"}', b"null"):
            self.assert_error(self.command(GW, raw), 400, "bad_request", repr(raw))
        self.assert_error(self.command(GW, b'{"cmd":"ping","args":{"x":"' + b"y" * 70000 + b'"}}'),
                          413, "too_large", "70 KB")
        self.assert_error(st.request("POST", f"/api/v1/gateways/{GW}/commands",
                                     b'{"cmd":"ping"}', headers={"Content-Type": "text/plain"}),
                          415, "unsupported_media_type", "text/plain")
        self.assert_error(self.command("bad$gw", {"cmd": "ping"}), 400, "bad_parameter", "id")
        self.assert_error(self.command("a" * 64, {"cmd": "ping"}), 400, "bad_parameter", "long")
        self.assert_error(st.request("GET", f"/api/v1/gateways/{GW}/commands"), 405,
                          "method_not_allowed", "GET")
        self.assertEqual(self.gw.commands(), [], "a bad request reached the gateway")
        # the limit is on the args as JSON: 8 KiB fits
        code, body, _ = self.command(GW, {"cmd": "read_registers",
                                          "args": {"blob": "x" * 8000}})
        self.assertEqual(code, 200, body)

    def test_broker_down(self):
        st = self.st
        self.start()
        st.stop_broker()
        stack.wait_for(lambda: st.get("/healthz")[1]["mqtt"] == "disconnected", 15,
                       "meter-cloud to notice")
        t0 = time.monotonic()
        self.assert_error(self.command(GW, {"cmd": "ping"}), 503, "unavailable", "no broker")
        self.assertLess(time.monotonic() - t0, 1)

    @unittest.skipUnless(agent_has_ping(), "meter-agent does not answer commands yet")
    def test_real_agent_ping(self):
        st = self.st
        self.start(timeout_ms=8000, responder=False)
        st.start_sim(["tcp:1:sdm120"])
        st.start_agent(st.agent_config([("m1", "tcp", 1, "sdm120")], gw=GW, interval_ms=500))
        stack.wait_for(lambda: (st.get(f"/api/v1/gateways/{GW}")[1].get("last_seen")), 30,
                       "readings from the agent")
        code, body, _ = self.command(GW, {"cmd": "ping"})
        self.assertEqual(code, 200, body)
        self.assertRegex(body["id"], UUID)
        self.assertIs(body["ok"], True, body)
        self.assertIsInstance(body["result"], dict)
        # an argument the agent does not take: it says so, and the cloud passes that on
        code, body, _ = self.command(GW, {"cmd": "ping", "args": {"bogus": 1}})
        self.assertEqual(code, 200, body)
        self.assertIs(body["ok"], False, body)
        self.assertIn("bogus", json.dumps(body["error"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
