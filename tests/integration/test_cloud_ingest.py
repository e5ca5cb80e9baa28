#!/usr/bin/env python3
"""meter-cloud's ingest on real parts: a real mosquitto (with the stack's accounts and ACL)
and a real meter-cloud, fed with mosquitto_pub as a gateway would publish, the acks read
back with mosquitto_sub, the results checked through the HTTP API and the store file.

- acks: upto and missing ranges after out-of-order batches, duplicates counted, the ack
  repeated when the gateway's status says online, a data gap event after the grace time;
- loss reports: the range counted as lost, upto moving past it, the report listed once;
- a corpus of malformed payloads: every one rejected and counted by cause, the cloud still
  serving and ingesting afterwards;
- kill -9 of meter-cloud around the commit of a batch: after a restart on the same store
  the ack state never goes back behind an ack already published, nothing is stored twice.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"
GW = "gw-01"
STREAM = "0123456789abcdef"
BASE_TS = 1763800000000
WIRE_MAX_PAYLOAD = 4 * 1024 * 1024


def reading(seq, meter="m1", **over):
    r = {"seq": seq, "meter": meter, "ts": BASE_TS + seq * 1000, "ok": True,
         "values": {"power": float(seq), "energy_import": seq / 8}}
    r.update(over)
    return r


def batch(seqs, gw=GW, stream=STREAM, meters=("m1",)):
    return json.dumps({"v": 1, "gw": gw, "stream": stream,
                       "readings": [reading(s, meters[s % len(meters)]) for s in seqs]}).encode()


def loss(entries, gw=GW, stream=STREAM):
    return json.dumps({"v": 1, "gw": gw, "stream": stream, "losses": entries}).encode()


def loss_entry(first, last, count=None, reason="queue_full", ts=BASE_TS):
    return {"first": first, "last": last,
            "count": last - first + 1 if count is None else count, "reason": reason, "ts": ts}


class Acks:
    """mosquitto_sub on <prefix>/<gw>/ack in the background; every message kept in order."""

    def __init__(self, st, gw=GW):
        self.st = st
        self.topic = f"{st.prefix}/{gw}/ack"
        self.msgs = []
        self.lock = threading.Lock()
        self.p = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(st.broker_port), "-u", "meter-cloud",
             "-P", st.users["meter-cloud"], "-q", "1", "-t", self.topic],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.probes = 0
        # subscribed once a probe of ours comes back through the broker
        for _ in range(20):
            try:
                self.fence(timeout=1)
                return
            except TimeoutError:
                continue
        raise TimeoutError("mosquitto_sub never received its probe")

    def fence(self, timeout=20):
        """Publishes a probe on the ack topic and waits for it: whatever the broker had
        taken in before is then in self.msgs. Returns how many acks that is."""
        self.probes += 1
        probe = f"probe-{self.probes}"
        publish(self.st, self.topic, probe.encode(), user="meter-cloud")
        stack.wait_for(lambda: probe in self.raw(), timeout, "the ack listener's probe")
        return len(self.acks())

    def _read(self):
        # one line per message: acks are one-line JSON, probes plain words
        for line in self.p.stdout:
            text = line.decode("utf-8", "replace").rstrip("\n")
            try:
                msg = json.loads(text)
            except ValueError:
                msg = text
            with self.lock:
                self.msgs.append(msg)

    def raw(self):
        with self.lock:
            return list(self.msgs)

    def acks(self, stream=STREAM):
        return [m for m in self.raw() if isinstance(m, dict) and m.get("stream") == stream]

    def wait(self, cond, what, timeout=20, stream=STREAM, after=0):
        """Waits for an ack (of stream, beyond the first `after` of them) for which cond is
        true; returns it."""
        def find():
            for a in self.acks(stream)[after:]:
                if cond(a):
                    return a
            return None
        return stack.wait_for(find, timeout, what)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p.stdout.close()


def publish(st, topic, payload, user=GW, retain=False, timeout=30):
    """Publishes payload (bytes) on topic with QoS 1 as user; returns once the broker has
    acknowledged it (mosquitto_pub waits for the PUBACK)."""
    argv = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(st.broker_port), "-u", user,
            "-P", st.users[user], "-q", "1", "-t", topic]
    if retain:
        argv.append("-r")
    if payload:
        argv.append("-s")
    else:
        argv.append("-n")
    r = subprocess.run(argv, input=payload if payload else None, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"mosquitto_pub {topic} failed ({r.returncode}): "
                           f"{r.stderr.decode('utf-8', 'replace')}")


def topic(st, kind, gw=GW):
    return f"{st.prefix}/{gw}/{kind}"


class CloudIngest(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.acks = None
        self.addCleanup(self.cleanup)

    def cleanup(self):
        if self.acks:
            self.acks.stop()
        self.st.stop()
        if not getattr(getattr(self, "_outcome", None), "success", True):
            print(self.st.logs(60), file=sys.stderr)

    def start(self, grace_ms=None):
        st = self.st
        st.start_broker()
        cfg = st.cloud_config()
        if grace_ms is not None:
            cfg["ingest"] = {"gap_grace_ms": grace_ms}
        self.cfg = cfg
        st.start_cloud(cfg)
        stack.wait_for(lambda: st.get("/healthz")[1]["mqtt"] == "connected", 15,
                       "meter-cloud to connect to the broker")
        self.acks = Acks(st)

    def stop_cloud_cleanly(self):
        """A clean stop must exit 0 (under ASan, a leak report makes it fail) and must not
        have logged a sanitizer report."""
        self.assertEqual(self.st.stop_cloud(), 0, "meter-cloud exit status")
        with open(self.st.path("meter-cloud.log"), errors="replace") as f:
            log = f.read()
        for bad in ("Sanitizer", "runtime error"):
            self.assertNotIn(bad, log)

    def gateway(self, gw=GW):
        code, body = self.st.get(f"/api/v1/gateways/{gw}")
        self.assertEqual(code, 200, body)
        return body

    def stream_of(self, body, stream=STREAM):
        for s in body["streams"]:
            if s["stream"] == stream:
                return s
        self.fail(f"stream {stream} not in {body['streams']}")

    def seqs_stored(self, meter="m1"):
        code, body = self.st.get(f"/api/v1/meters/{meter}/readings?limit=10000")
        self.assertEqual(code, 200, body)
        return sorted(r["seq"] for r in body["readings"])

    # -- (a) -----------------------------------------------------------------------
    def test_acks_gaps_and_duplicates(self):
        st = self.st
        self.start(grace_ms=1000)
        publish(st, topic(st, "readings"), batch(range(1, 11)))
        self.acks.wait(lambda a: a["upto"] == 10 and a["missing"] == [], "ack upto 10")
        publish(st, topic(st, "readings"), batch(range(21, 31)))
        a = self.acks.wait(lambda a: a["missing"] != [], "ack with a missing range")
        self.assertEqual(a, {"v": 1, "stream": STREAM, "upto": 10, "missing": [[11, 20]]})

        # the gap stays open past the 1 s grace: one data gap event, logged once
        stack.wait_for(lambda: self.gateway()["gaps"] == 1, 20, "a data gap event")
        g = self.gateway()
        s = self.stream_of(g)
        self.assertEqual(s["gaps_open"], 1)
        self.assertEqual(s["missing"], [[11, 20]])
        self.assertEqual(s["upto"], 10)

        n = len(self.acks.acks())
        publish(st, topic(st, "readings"), batch(range(11, 21)))
        a = self.acks.wait(lambda a: True, "ack after 11..20", after=n)
        self.assertEqual(a, {"v": 1, "stream": STREAM, "upto": 30, "missing": []})
        g = self.gateway()
        s = self.stream_of(g)
        self.assertEqual((s["upto"], s["received"], s["duplicates"], s["lost"], s["missing"],
                          s["gaps_open"]), (30, 30, 0, 0, [], 0))
        self.assertEqual((g["received"], g["duplicates"], g["lost"], g["gaps"]), (30, 0, 0, 1))
        self.assertEqual(self.seqs_stored(), list(range(1, 31)))
        with open(st.path("meter-cloud.log")) as f:
            gap_lines = [ln for ln in f if "data gap" in ln]
        self.assertEqual(len(gap_lines), 1, gap_lines)
        self.assertIn(f"gateway {GW} stream {STREAM}: seqs 11..20", gap_lines[0])

        # resending 5..8: four duplicates, nothing new, and still an ack
        n = len(self.acks.acks())
        publish(st, topic(st, "readings"), batch(range(5, 9)))
        a = self.acks.wait(lambda a: True, "ack after resending 5..8", after=n)
        self.assertEqual((a["upto"], a["missing"]), (30, []))
        g = self.gateway()
        self.assertEqual((g["received"], g["duplicates"]), (30, 4))
        self.assertEqual(self.stream_of(g)["duplicates"], 4)
        self.assertEqual(self.seqs_stored(), list(range(1, 31)))

        # the gateway comes online (retained status): the cloud repeats where it stands
        n = len(self.acks.acks())
        publish(st, topic(st, "status"),
                json.dumps({"state": "online", "ts": BASE_TS, "version": "0.1.0"}).encode(),
                retain=True)
        a = self.acks.wait(lambda a: True, "ack on online", after=n)
        self.assertEqual((a["upto"], a["missing"]), (30, []))
        g = self.gateway()
        self.assertEqual(g["status"], "online")
        self.assertIsNotNone(g["status_since"])

        # health: kept and shown, gauges taken from it
        health = {"v": 1, "gw": GW, "ts": BASE_TS + 5, "uptime_s": 3600, "stream": STREAM,
                  "queue": {"depth": 12, "oldest_age_s": 3, "bytes": 40960},
                  "meters": [{"id": "m1", "online": True, "polls": 10, "name": "K\u00fcche"}]}
        publish(st, topic(st, "health"), json.dumps(health, ensure_ascii=False).encode())
        stack.wait_for(lambda: self.gateway()["health"] == health, 15, "the health message")
        g = self.gateway()
        self.assertEqual((g["queue_depth"], g["oldest_unsent_age_s"]), (12, 3))
        self.assertEqual(g["health_ts"], "2025-11-22T08:26:40.005Z")
        code, body = st.get("/api/v1/gateways")
        self.assertEqual(code, 200, body)
        listed = body["gateways"]
        self.assertEqual([x["id"] for x in listed], [GW])
        self.assertNotIn("health", listed[0])
        self.assertEqual(listed[0]["streams"], g["streams"])

        # the API's errors
        self.assertEqual(st.get("/api/v1/gateways/nosuch")[0], 404)
        code, body = st.get("/api/v1/gateways/bad$id")
        self.assertEqual(code, 400, body)
        self.assertEqual(body["error"]["code"], "bad_parameter")
        self.assertEqual(st.get("/api/v1/gateways/" + "a" * 64)[0], 400)
        self.assertEqual(st.get("/api/v1/gateways?x=1")[0], 400)
        self.stop_cloud_cleanly()

    # -- (b) -----------------------------------------------------------------------
    def test_loss_reports(self):
        st = self.st
        self.start()
        publish(st, topic(st, "readings"), batch(range(1, 31)))
        self.acks.wait(lambda a: a["upto"] == 30, "ack upto 30")
        report = loss([loss_entry(31, 40, reason="queue_full", ts=BASE_TS + 40000)])
        publish(st, topic(st, "loss"), report)
        a = self.acks.wait(lambda a: a["upto"] == 40, "ack upto 40 after the loss report")
        self.assertEqual(a["missing"], [])
        g = self.gateway()
        s = self.stream_of(g)
        self.assertEqual((s["upto"], s["received"], s["lost"], s["missing"]), (40, 30, 10, []))
        self.assertEqual(g["lost"], 10)
        self.assertEqual(g["losses"], [{"stream": STREAM, "first": 31, "last": 40, "count": 10,
                                        "reason": "queue_full",
                                        "ts": "2025-11-22T08:27:20.000Z",
                                        "received_at": g["losses"][0]["received_at"]}])

        # the gateway repeats the report until acked: one report, counted once
        n = len(self.acks.acks())
        publish(st, topic(st, "loss"), report)
        self.acks.wait(lambda a: a["upto"] == 40, "ack after the repeated report", after=n)
        g = self.gateway()
        self.assertEqual((g["lost"], len(g["losses"])), (10, 1))

        # a range overlapping received seqs counts only the seqs not yet counted
        n = len(self.acks.acks())
        publish(st, topic(st, "loss"), loss([loss_entry(25, 45, count=5, reason="disk_error")]))
        self.acks.wait(lambda a: a["upto"] == 45, "ack upto 45", after=n)
        self.assertEqual(self.gateway()["lost"], 15)

        # a loss above the highest seq leaves a gap below it
        n = len(self.acks.acks())
        publish(st, topic(st, "loss"),
                loss([loss_entry(61, 70, reason="not_queued"),
                      loss_entry(80, 80, count=0, reason="queue_corrupt")]))
        a = self.acks.wait(lambda a: True, "ack after a loss above the top", after=n)
        self.assertEqual((a["upto"], a["missing"]), (45, [[46, 60], [71, 79]]))

        # a reading for a seq already reported lost is stored (new data); the loss count
        # is not corrected, and the reading counts no new seq
        n = len(self.acks.acks())
        publish(st, topic(st, "readings"), batch([35]))
        self.acks.wait(lambda a: True, "ack after a late reading", after=n)
        g = self.gateway()
        s = self.stream_of(g)
        self.assertEqual((s["received"], s["lost"], s["duplicates"]), (30, 26, 1))
        self.assertIn(35, self.seqs_stored())

        # readings fill the rest; the ack becomes complete
        n = len(self.acks.acks())
        publish(st, topic(st, "readings"), batch(list(range(46, 61)) + list(range(71, 80))))
        a = self.acks.wait(lambda a: a["upto"] == 80, "ack upto 80", after=n)
        self.assertEqual(a["missing"], [])
        s = self.stream_of(self.gateway())
        self.assertEqual((s["upto"], s["received"] + s["lost"]), (80, 80))
        self.stop_cloud_cleanly()

    # -- (c) -----------------------------------------------------------------------
    def malformed_corpus(self):
        """[(topic kind, user, payload, {cause: count})]: every entry must be rejected."""
        rnd = random.Random(20261202)
        good = json.loads(batch(range(1, 4)))
        c = []

        def env(payload, cause="envelope", kind="readings", n=1, user=GW):
            c.append((kind, user, payload, {cause: n}))

        def with_fields(base, **kw):
            d = json.loads(json.dumps(base))
            for k, v in kw.items():
                if v is KeyError:
                    d.pop(k, None)
                else:
                    d[k] = v
            return json.dumps(d).encode()

        # readings: not JSON, binary garbage, NUL bytes, truncated JSON, not an object
        for p in [b"", b"hello", b"{", b"}", b"[", b"nul", b"tru", b'{"v":1,', b"\x00\x01\x02",
                  b"\x00" + batch([1]), b"\x00" * 64, b"{'v':1}", b'{"v":1 "gw":"gw-01"}']:
            env(p)
        for _ in range(40):
            env(b"\xff" + bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))))
        text = batch(range(1, 4))
        for cut in sorted(rnd.sample(range(1, len(text) - 1), 30)):
            env(text[:cut])
        for p in [b"1", b'"s"', b"[]", b"null", b"true", b"[" + text + b"]"]:
            env(p)
        # readings: wrong types and values for every envelope field, unknown version
        for v in ["1", 1.5, -1, 2, 0, None, [], {}, True, 1e300, KeyError]:
            env(with_fields(good, v=v))
        for gw in [1, None, "", "bad id", "a" * 64, [], {}, KeyError]:
            env(with_fields(good, gw=gw))
        for stream in [1, None, "", "ABCDEF01", "0123456", "0" * 33, "xyz12345", [], KeyError]:
            env(with_fields(good, stream=stream))
        for rs in [{}, "x", 1, None, True, KeyError]:
            env(with_fields(good, readings=rs))
        # readings: too many, too large, too deep, invalid UTF-8, NUL inside a field
        env(batch(range(1, 5002)))
        env(b'{"v":1,"gw":"gw-01","stream":"0123456789abcdef","readings":['
            + b" " * WIRE_MAX_PAYLOAD + b"]}")
        env(b'{"v":1,"gw":"gw-01","stream":"0123456789abcdef","readings":['
            + b"[" * 5000 + b"]" * 5000 + b"]}")
        env(b"[" * 100000)
        env(b'{"v":1,"gw":"gw\xff01","stream":"0123456789abcdef","readings":[]}')
        env(b'{"v":1,"gw":"gw-01","stream":"0123\x00456789abcdef","readings":[]}')
        # readings of another gateway on gw-01's topic
        for gw in ["gw-02", "GW-01", "gw-01x"]:
            env(with_fields(good, gw=gw), cause="gw_mismatch")

        # single readings rejected alone, counted by cause (one per batch here)
        def bad_reading(cause, **kw):
            r = reading(1)
            for k, v in kw.items():
                if v is KeyError:
                    r.pop(k, None)
                else:
                    r[k] = v
            env(with_fields(good, readings=[r]), cause=cause)

        for r in [1, "x", None, [], True]:
            env(with_fields(good, readings=[r]), cause="not_object")
        for v in [KeyError, "1", -1, 1.5, 2 ** 53, 1e300, None, True, []]:
            bad_reading("bad_seq", seq=v)
        for v in [KeyError, "", "bad id", "a" * 64, 5, None, []]:
            bad_reading("bad_meter", meter=v)
        env(b'{"v":1,"gw":"gw-01","stream":"0123456789abcdef","readings":[{"seq":1,'
            b'"meter":"m\xff","ts":1763800000000,"ok":true,"values":{}}]}', cause="bad_meter")
        for v in [KeyError, "x", -1, 1.5, 253402300800000, None, True]:
            bad_reading("bad_ts", ts=v)
        for v in [KeyError, "true", 1, None, []]:
            bad_reading("bad_ok", ok=v)
        for v in [KeyError, "x", [], 1, {"power": "x"}, {"power": None}, {"power": 1e16},
                  {"power": [1]}, {"power": True}]:
            bad_reading("bad_values", values=v)
        # several causes in one batch
        rs = [dict(reading(1), seq="x"), dict(reading(2), seq=-5), dict(reading(3), seq=None),
              dict(reading(4), ts="x"), dict(reading(5), ts=-1)]
        c.append(("readings", GW, with_fields(good, readings=rs), {"bad_seq": 3, "bad_ts": 2}))

        # loss reports
        good_loss = json.loads(loss([loss_entry(1, 10)]))

        def bad_loss_fields(**kw):
            env(with_fields(good_loss, **kw), cause="bad_loss", kind="loss")

        def bad_entry(**kw):
            e = loss_entry(1, 10)
            for k, v in kw.items():
                if v is KeyError:
                    e.pop(k, None)
                else:
                    e[k] = v
            bad_loss_fields(losses=[e])

        for p in [b"", b"x", b"{", b"[]", b"null", b"\xff\xfe", loss([loss_entry(1, 2)])[:-1],
                  loss([loss_entry(1, 2)]) + b" x", b"\x00" + loss([loss_entry(1, 2)]),
                  b'{"v":1,"gw":"gw-01","stream":"0123456789abcdef","losses":['
                  + b"[" * 1100 + b"]" * 1100 + b"]}",
                  loss([loss_entry(1, 2)]) + b" " * 65536]:
            env(p, cause="bad_loss", kind="loss")
        for v in [KeyError, 2, "1", 1.5, None]:
            bad_loss_fields(v=v)
        for gw in [KeyError, "", "bad id", 7]:
            bad_loss_fields(gw=gw)
        for stream in [KeyError, "XYZ", "0123456", 5]:
            bad_loss_fields(stream=stream)
        for ls in [KeyError, {}, "x", [], [loss_entry(i, i) for i in range(1, 66)]]:
            bad_loss_fields(losses=ls)
        bad_loss_fields(losses=[1])
        bad_loss_fields(losses=[loss_entry(1, 2), "x"])
        for v in [KeyError, 0, -1, "1", 1.5, 2 ** 53, None]:
            bad_entry(first=v)
        for v in [KeyError, 0, "10", 2 ** 53, 10.5]:
            bad_entry(last=v)
        bad_entry(first=5, last=4, count=0)
        for v in [KeyError, -1, 11, "3", 1.5]:
            bad_entry(count=v)
        for v in [KeyError, "other", "", 1, None, "QUEUE_FULL"]:
            bad_entry(reason=v)
        for v in [KeyError, "x", -1, 1.5, 253402300800000]:
            bad_entry(ts=v)
        env(b'{"v":1,"gw":"gw-01","stream":"0123456789abcdef","losses":[{"first":1,"last":2,'
            b'"count":2,"reason":"queue_f\xffull","ts":1}]}', cause="bad_loss", kind="loss")
        env(loss([loss_entry(1, 10)], gw="gw-02"), cause="gw_mismatch", kind="loss")

        # health messages
        good_health = {"v": 1, "gw": GW, "ts": BASE_TS, "queue": {"depth": 1}}
        for p in [b"", b"x", b"{", b"[]", b'"s"', b"\xff", b'{"v":1,"gw":"gw-01","x":"\xff"}',
                  b'{"v":1,"gw":"gw-01","x":"a\x00b"}', b'{"v":1,"gw":"gw-01","x":"\xc0\xaf"}',
                  b'{"v":1,"gw":"gw-01","x":"\xed\xa0\x80"}',
                  json.dumps(good_health).encode() + b" x",
                  json.dumps(good_health).encode()[:-1],
                  b'{"v":1,"gw":"gw-01","deep":' + b"[" * 1100 + b"]" * 1100 + b"}",
                  b'{"v":1,"gw":"gw-01","pad":"' + b"p" * 65536 + b'"}']:
            env(p, cause="bad_health", kind="health")
        for v in [KeyError, 2, "1", None, 1.5]:
            env(with_fields(good_health, v=v), cause="bad_health", kind="health")
        for gw in [KeyError, "", "bad id", 3]:
            env(with_fields(good_health, gw=gw), cause="bad_health", kind="health")
        env(with_fields(good_health, gw="gw-02"), cause="gw_mismatch", kind="health")

        # status (not retained here, so that nothing stays behind in the broker)
        for p in [b"x", b"{}", b'{"state":"maybe"}', b"[]", b'{"state":1}']:
            env(p, cause="bad_status", kind="status")
        # topics that are not <prefix>/<gw>/<kind> with a valid id (only the cloud's
        # account may write there)
        for bad_gw in ["bad$id", "a" * 64]:
            c.append((f"!{bad_gw}/readings", "meter-cloud", batch([1]), {"bad_topic": 1}))
        return c

    def test_malformed_payloads(self):
        st = self.st
        self.start()
        corpus = self.malformed_corpus()
        self.assertGreaterEqual(len(corpus), 200)
        print(f"{len(corpus)} malformed messages", file=sys.stderr)
        expected = {}
        for _, _, _, causes in corpus:
            for k, v in causes.items():
                expected[k] = expected.get(k, 0) + v
        before = st.get("/healthz")[1]["ingest"]

        def send(entry):
            kind, user, payload, _ = entry
            t = f"{st.prefix}/{kind[1:]}" if kind.startswith("!") else topic(st, kind)
            publish(st, t, payload, user=user)

        with ThreadPoolExecutor(max_workers=6) as ex:
            list(ex.map(send, corpus))
        stack.wait_for(
            lambda: st.get("/healthz")[1]["ingest"]["messages"] == before["messages"] + len(corpus),
            60, f"meter-cloud to receive all {len(corpus)} malformed messages")
        code, body = st.get("/healthz")
        self.assertEqual(code, 200, body)
        after = body["ingest"]
        got = {k: after["rejects"][k] - before["rejects"].get(k, 0) for k in after["rejects"]}
        got = {k: v for k, v in got.items() if v}
        self.assertEqual(got, expected)
        self.assertEqual(after["stored"], before["stored"], "a malformed message stored a reading")
        self.assertTrue(st.procs["meter-cloud"].alive(), "meter-cloud died")
        # the reasons are logged at most once per minute per cause
        with open(st.path("meter-cloud.log")) as f:
            dropped = [ln for ln in f if "dropped" in ln]
        self.assertLessEqual(len(dropped), len(expected) + 1, "\n".join(dropped))
        # nothing of it reached the gateways' view
        code, body = st.get("/api/v1/gateways/gw-02")
        self.assertEqual(code, 404, body)

        # still ingesting
        n = len(self.acks.acks())
        publish(st, topic(st, "readings"), batch(range(1, 6)))
        a = self.acks.wait(lambda a: a["upto"] == 5, "ack of a good batch after the corpus",
                           after=n)
        self.assertEqual(a["missing"], [])
        self.assertEqual(self.seqs_stored(), [1, 2, 3, 4, 5])
        publish(st, topic(st, "loss"), loss([loss_entry(6, 8)]))
        self.acks.wait(lambda a: a["upto"] == 8, "ack of a good loss report", after=n)
        self.assertEqual(self.stream_of(self.gateway())["lost"], 3)
        self.stop_cloud_cleanly()

    # -- (d) -----------------------------------------------------------------------
    def test_kill_9_around_commit(self):
        st = self.st
        self.start()
        seed = int(os.environ.get("MLK_TEST_SEED", time.time_ns() % 1000000))
        rnd = random.Random(seed)
        print(f"kill -9 test seed {seed} (MLK_TEST_SEED)", file=sys.stderr)
        meters = ("m1", "m2", "m3", "m4")
        # Retained online: every (re)start of the cloud answers it with the stream's ack.
        publish(st, topic(st, "status"), b'{"state":"online","ts":1763800000000}', retain=True)
        publish(st, topic(st, "readings"), batch(range(1, 201), meters=meters))
        self.acks.wait(lambda a: a["upto"] == 200, "ack upto 200")
        top = 200
        committed_before_kill = 0
        size = 1000
        for it in range(6):
            lo, hi = top + 1, top + size
            n_before = len(self.acks.acks())
            publish(st, topic(st, "readings"), batch(range(lo, hi + 1), meters=meters))
            time.sleep(rnd.uniform(0, 0.03))  # the moment of the kill, not a wait for anything
            st.stop_cloud(signal.SIGKILL)
            # every ack the killed cloud got out is in before the fence
            n_restart = self.acks.fence()
            seen = self.acks.acks()[n_before:n_restart]
            acked_new = any(a["upto"] == hi for a in seen)

            st.start_cloud(self.cfg)
            a = self.acks.wait(lambda a: True, f"iteration {it}: the ack after the restart",
                               after=n_restart)
            self.assertEqual(a["missing"], [], a)
            self.assertIn(a["upto"], (top, hi), f"iteration {it}: ack after restart {a}")
            if acked_new:
                self.assertEqual(a["upto"], hi, "an ack published before the kill was undone")
            if a["upto"] == hi:
                committed_before_kill += 1
            # the gateway resends what was not confirmed; the cloud takes it (again)
            n = len(self.acks.acks())
            publish(st, topic(st, "readings"), batch(range(lo, hi + 1), meters=meters))
            self.acks.wait(lambda a: a["upto"] == hi and a["missing"] == [],
                           f"iteration {it}: ack upto {hi} after the resend", after=n)
            top = hi
        print(f"kill -9: {committed_before_kill} of 6 batches were committed before the kill",
              file=sys.stderr)

        g = self.gateway()
        s = self.stream_of(g)
        self.assertEqual((s["upto"], s["received"], s["lost"], s["missing"]), (top, top, 0, []))
        self.assertEqual(s["duplicates"], committed_before_kill * size)
        seqs = []
        for m in meters:
            seqs += self.seqs_stored(m)
        self.assertEqual(sorted(seqs), list(range(1, top + 1)), "stored seqs")
        # the store file itself: sound, one row per reading, the set one range, no gap rows
        db = sqlite3.connect(f"file:{st.path('cloud.db')}?mode=ro", uri=True)
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            self.assertEqual(db.execute("SELECT count(*), count(DISTINCT seq) FROM readings")
                             .fetchone(), (top, top))
            self.assertEqual(db.execute("SELECT lo, hi FROM stream_seqs").fetchall(),
                             [(1, top)])
            self.assertEqual(db.execute("SELECT count(*) FROM stream_gaps").fetchone()[0], 0)
        finally:
            db.close()
        self.stop_cloud_cleanly()


if __name__ == "__main__":
    unittest.main(verbosity=2)
