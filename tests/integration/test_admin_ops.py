#!/usr/bin/env python3
"""meter-cloud's admin operations on real parts (mosquitto, meter-cloud, mosquitto_pub/sub):

- online backups: one made on demand, listed, downloaded (a SQLite file holding the readings
  stored), names checked (no path traversal), the files private; a restore round trip: the
  cloud stopped, its store replaced by the backup, the cloud started, the API showing the
  readings of the backup;
- maintenance mode: batches published while it is on are kept pending, not visible and not
  acked, also across a restart; when it ends they are stored in order and acked, none lost,
  none stored twice;
- only admins: 401 without a token, 403 for a viewer and an operator.
"""
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"
GW = "gw-01"
STREAM = "0123456789abcdef"
BASE_TS = 1763800000000
NAME_RE = re.compile(r"^cloud-\d{8}T\d{6}Z\.db$")


def batch(seqs, meter="m1"):
    return json.dumps({"v": 1, "gw": GW, "stream": STREAM, "readings": [
        {"seq": s, "meter": meter, "ts": BASE_TS + s * 1000, "ok": True,
         "values": {"power": float(s), "energy_import": s / 8}} for s in seqs]}).encode()


def publish(st, topic, payload, user=GW):
    r = subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(st.broker_port), "-u", user,
                        "-P", st.users[user], "-q", "1", "-t", topic, "-s"], input=payload,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"mosquitto_pub {topic}: {r.returncode} {r.stderr!r}")


class Acks:
    """mosquitto_sub -W on <prefix>/gw-01/ack as meter-cloud; every message kept in order.
    fence() publishes a probe and waits for it: what the broker had before is then here."""

    def __init__(self, st):
        self.st = st
        self.topic = f"{st.prefix}/{GW}/ack"
        self.msgs = []
        self.lock = threading.Lock()
        self.p = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(st.broker_port), "-u", "meter-cloud",
             "-P", st.users["meter-cloud"], "-q", "1", "-t", self.topic, "-W", "300"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.probes = 0
        for _ in range(20):
            try:
                self.fence(timeout=1)
                return
            except TimeoutError:
                continue
        raise TimeoutError("mosquitto_sub never received its probe")

    def _read(self):
        for line in self.p.stdout:
            text = line.decode("utf-8", "replace").rstrip("\n")
            try:
                msg = json.loads(text)
            except ValueError:
                msg = text
            with self.lock:
                self.msgs.append(msg)

    def fence(self, timeout=20):
        self.probes += 1
        probe = f"probe-{self.probes}"
        publish(self.st, self.topic, probe.encode(), user="meter-cloud")
        stack.wait_for(lambda: probe in self.raw(), timeout, "the ack listener's probe")
        return len(self.acks())

    def raw(self):
        with self.lock:
            return list(self.msgs)

    def acks(self):
        return [m for m in self.raw() if isinstance(m, dict) and m.get("stream") == STREAM]

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p.stdout.close()


class AdminOps(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.acks = None
        self.addCleanup(self.cleanup)
        st = self.st
        st.start_broker()
        st.start_cloud(st.cloud_config())
        stack.wait_for(lambda: st.get("/healthz")[1]["mqtt"] == "connected", 15,
                       "meter-cloud to connect to the broker")
        self.acks = Acks(st)

    def cleanup(self):
        if self.acks:
            self.acks.stop()
        self.st.finish(self)

    def seqs(self, meter="m1"):
        code, body = self.st.get(f"/api/v1/meters/{meter}/readings?limit=10000")
        if code == 404:
            return []
        self.assertEqual(code, 200, body)
        return sorted(r["seq"] for r in body["readings"])

    def wait_seqs(self, want, what):
        stack.wait_for(lambda: self.seqs() == want, 20, what)

    def wait_upto(self, upto):
        return stack.wait_for(lambda: any(a.get("upto") == upto for a in self.acks.acks()), 20,
                              f"an ack with upto {upto}")

    def readings_topic(self):
        return f"{self.st.prefix}/{GW}/readings"

    def download(self, name, token=stack.ADMIN):
        token = self.st.token if token is stack.ADMIN else token
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.st.http_port}/api/v1/admin/backups/{name}")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            return e.code, e.read(), {}

    def test_backup_download_restore(self):
        st = self.st
        publish(st, self.readings_topic(), batch(range(1, 6)))
        self.wait_seqs([1, 2, 3, 4, 5], "five readings stored")

        code, made, _ = st.request("POST", "/api/v1/admin/backups")
        self.assertEqual(code, 201, made)
        self.assertRegex(made["name"], NAME_RE)
        self.assertGreater(made["size"], 0, made)
        self.assertIn("created", made)
        code, listed = st.get("/api/v1/admin/backups")
        self.assertEqual(code, 200, listed)
        self.assertIn(made["name"], [b["name"] for b in listed["backups"]], listed)

        bdir = st.path("backups")
        path = os.path.join(bdir, made["name"])
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o600, oct(mode))
        self.assertEqual([n for n in os.listdir(bdir) if not NAME_RE.match(n)], [],
                         "no temporary files left")

        code, data, hdrs = self.download(made["name"])
        self.assertEqual(code, 200, data[:200])
        self.assertEqual(hdrs.get("content-type"), "application/vnd.sqlite3", hdrs)
        self.assertEqual(len(data), made["size"])
        self.assertTrue(data.startswith(b"SQLite format 3\0"), data[:16])
        copy = st.path("download.db")
        with open(copy, "wb") as f:
            f.write(data)
        db = sqlite3.connect(copy)
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            got = sorted(r[0] for r in db.execute("SELECT seq FROM readings"))
        finally:
            db.close()
        self.assertEqual(got, [1, 2, 3, 4, 5])

        # names are checked against the pattern: never a path
        for bad in ("cloud.db", "..", "..%2Fcloud.db", "cloud-20260101T000000Z.db",
                    "cloud-2026010XT000000Z.db"):
            code, body, _ = self.download(bad)
            self.assertIn(code, (400, 404), (bad, body))

        # readings after the backup are not in it: the restore goes back to the backup
        publish(st, self.readings_topic(), batch(range(6, 9)))
        self.wait_seqs(list(range(1, 9)), "eight readings stored")
        st.stop_cloud()
        store = st.path("cloud.db")
        for suffix in ("-wal", "-shm"):
            if os.path.exists(store + suffix):
                os.unlink(store + suffix)
        shutil.copyfile(copy, store)
        st.start_cloud(st.cloud_config())
        self.assertEqual(self.seqs(), [1, 2, 3, 4, 5])
        code, listed = st.get("/api/v1/admin/backups")
        self.assertEqual(code, 200, listed)
        self.assertIn(made["name"], [b["name"] for b in listed["backups"]], listed)

    def test_maintenance_pending_then_applied(self):
        st = self.st
        topic = self.readings_topic()
        publish(st, topic, batch([1, 2, 3]))
        self.wait_upto(3)
        self.wait_seqs([1, 2, 3], "three readings stored")

        code, body, _ = st.request("POST", "/api/v1/admin/maintenance", {"on": True})
        self.assertEqual(code, 200, body)
        self.assertTrue(body["on"], body)
        before = self.acks.fence()
        publish(st, topic, batch([4, 5, 6]))
        publish(st, topic, batch([7, 8, 9]))
        publish(st, topic, batch([4, 5, 6]))  # the gateway sending again: no ack came
        stack.wait_for(lambda: st.get("/api/v1/admin/maintenance")[1]["pending"] == 3, 20,
                       "three pending batches")
        self.assertEqual(self.acks.fence(), before, self.acks.acks()[before:])
        self.assertEqual(self.seqs(), [1, 2, 3])

        # the flag and the pending batches survive a restart
        st.stop_cloud()
        st.start_cloud(st.cloud_config())
        stack.wait_for(lambda: st.get("/healthz")[1]["mqtt"] == "connected", 15,
                       "meter-cloud to reconnect")
        code, body = st.get("/api/v1/admin/maintenance")
        self.assertEqual((code, body["on"], body["pending"]), (200, True, 3), body)
        publish(st, topic, batch([10]))
        stack.wait_for(lambda: st.get("/api/v1/admin/maintenance")[1]["pending"] == 4, 20,
                       "four pending batches")
        self.assertEqual(self.acks.fence(), before, self.acks.acks()[before:])
        self.assertEqual(self.seqs(), [1, 2, 3])

        code, body, _ = st.request("POST", "/api/v1/admin/maintenance", {"on": False})
        self.assertEqual(code, 200, body)
        self.assertEqual((body["on"], body["pending"], body["applied"]), (False, 0, 4), body)
        self.assertEqual(self.seqs(), list(range(1, 11)))  # none lost, none twice
        self.wait_upto(10)
        code, body = st.get("/api/v1/admin/maintenance")
        self.assertEqual((code, body["on"], body["pending"]), (200, False, 0), body)

        # off again: batches are stored and acked at once
        publish(st, topic, batch([11]))
        self.wait_upto(11)
        self.assertEqual(self.seqs(), list(range(1, 12)))

    def test_admin_only(self):
        st = self.st
        st.add_cloud_user("vera", "viewer", "vera-password-123")
        st.add_cloud_user("otto", "operator", "otto-password-123")
        vera = st.login_token("vera", "vera-password-123")
        otto = st.login_token("otto", "otto-password-123")
        calls = [("GET", "/api/v1/admin/backups", None), ("POST", "/api/v1/admin/backups", None),
                 ("GET", "/api/v1/admin/maintenance", None),
                 ("POST", "/api/v1/admin/maintenance", {"on": True})]
        for method, path, body in calls:
            code, got, _ = st.request(method, path, body, token=None)
            self.assertEqual(code, 401, (method, path, got))
            for who in (vera, otto):
                code, got, _ = st.request(method, path, body, token=who)
                self.assertEqual(code, 403, (method, path, got))
        code, _, _ = self.download("cloud-20260101T000000Z.db", token=vera)
        self.assertEqual(code, 403)
        code, body = st.get("/api/v1/admin/maintenance")
        self.assertEqual((code, body["on"]), (200, False), body)
        code, body, _ = st.request("POST", "/api/v1/admin/maintenance", {"on": "yes"})
        self.assertEqual(code, 400, body)


if __name__ == "__main__":
    unittest.main()
