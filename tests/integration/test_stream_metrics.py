#!/usr/bin/env python3
"""meter-cloud's live stream (GET /api/v1/stream, Server-Sent Events) and its metrics
(GET /metrics, Prometheus text format) on real parts: a real mosquitto and meter-cloud,
fed with mosquitto_pub as gateway gw-01 would publish.

- a reading event with the batch's values after the batch is committed, a status event
  on a gateway status change, the ?meters= filter, keepalive comments' framing;
- 401 without a token on both endpoints;
- /metrics parsed line by line (names, labels, values); the ingest and HTTP counters
  grow after a batch;
- a clean stop of meter-cloud while a stream client is connected exits 0, promptly, and
  ends the stream.
"""
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
GW = "gw-01"
STREAM = "0123456789abcdef"
BASE_TS = 1763800000000


def batch(seqs, meter="m1"):
    return json.dumps({"v": 1, "gw": GW, "stream": STREAM, "readings": [
        {"seq": s, "meter": meter, "ts": BASE_TS + s * 1000, "ok": True,
         "values": {"power": s + 0.25, "energy_import": s / 8}} for s in seqs]}).encode()


def publish(st, kind, payload, user=GW):
    """Publishes payload on <prefix>/gw-01/<kind> with QoS 1; returns after the PUBACK."""
    r = subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(st.broker_port), "-u", user,
                        "-P", st.users[user], "-q", "1", "-t", f"{st.prefix}/{GW}/{kind}", "-s"],
                       input=payload, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"mosquitto_pub failed ({r.returncode}): {r.stderr!r}")


class SSE:
    """One GET /api/v1/stream; a thread reads its lines (each read bounded by the socket
    timeout) and keeps the events, comments and the end of the stream."""

    def __init__(self, st, path="/api/v1/stream", token=stack.ADMIN):
        token = st.token if token is stack.ADMIN else token
        self.conn = http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=30)
        self.conn.request("GET", path, headers={"Authorization": "Bearer " + token,
                                                "Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        self.events, self.comments = [], []
        self.ended = False
        self.lock = threading.Lock()
        if self.resp.status == 200:
            self.t = threading.Thread(target=self._read, daemon=True)
            self.t.start()

    def _read(self):
        ev = {}
        try:
            while True:
                line = self.resp.readline(65536)  # de-chunked
                if not line:
                    break
                line = line.decode().rstrip("\r\n")
                if line == "":
                    if ev:
                        with self.lock:
                            self.events.append(ev)
                    ev = {}
                elif line.startswith(":"):
                    with self.lock:
                        self.comments.append(line)
                else:
                    k, _, v = line.partition(":")
                    ev[k] = v[1:] if v.startswith(" ") else v
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            # AttributeError: closed under us (close())
            pass
        with self.lock:
            self.ended = True

    def wait(self, cond, what, timeout=15):
        def find():
            with self.lock:
                for e in self.events:
                    if cond(e):
                        return e
            return None
        return stack.wait_for(find, timeout, what)

    def of(self, name):
        with self.lock:
            return [json.loads(e["data"]) for e in self.events if e.get("event") == name]

    def close(self):
        self.conn.close()


METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_metrics(text):
    """Prometheus text format 0.0.4 into {(name, ((label, value), ...)): float}; fails on
    any line that is not a comment, a sample or empty."""
    out = {}
    for line in text.split("\n"):
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = METRIC.match(line)
        if not m:
            raise AssertionError(f"not a metrics line: {line!r}")
        labels = ()
        if m.group(3) is not None:
            pos, ls = 0, []
            s = m.group(3)
            while pos < len(s):
                lm = LABEL.match(s, pos)
                if not lm:
                    raise AssertionError(f"bad labels in {line!r}")
                ls.append((lm.group(1), lm.group(2)))
                pos = lm.end()
            labels = tuple(ls)
        v = m.group(4)
        out[(m.group(1), labels)] = float("inf") if v == "+Inf" else float(v)
    return out


class StreamMetrics(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.streams = []
        self.addCleanup(self.cleanup)
        st = self.st
        st.start_broker()
        st.start_cloud()
        stack.wait_for(lambda: st.get("/healthz")[1]["mqtt"] == "connected", 15,
                       "meter-cloud to connect to the broker")

    def cleanup(self):
        for s in self.streams:
            s.close()
        self.st.finish(self)

    def open(self, path="/api/v1/stream"):
        s = SSE(self.st, path)
        self.streams.append(s)
        self.assertEqual(s.resp.status, 200, s.resp.read(4096) if s.resp.status != 200 else "")
        return s

    def metrics(self):
        code, body, hdrs = self.st.request("GET", "/metrics")
        self.assertEqual(code, 200, body)
        self.assertTrue(hdrs["content-type"].startswith("text/plain; version=0.0.4"),
                        hdrs["content-type"])
        return parse_metrics(body)

    def test_stream_events(self):
        s = self.open()
        self.assertEqual(s.resp.getheader("Content-Type"), "text/event-stream")
        self.assertEqual(s.resp.getheader("Cache-Control"), "no-store")
        only_m2 = self.open("/api/v1/stream?meters=m2,m3")
        stack.wait_for(lambda: s.comments and only_m2.comments, 10, "the streams' first comment")

        publish(self.st, "status", b'{"state":"online","ts":1763800000000}')
        e = s.wait(lambda e: e.get("event") == "status", "a status event")
        self.assertEqual(json.loads(e["data"]),
                         {"gw": GW, "state": "online", "ts": "2025-11-22T08:26:40.000Z"})

        publish(self.st, "readings", batch([1, 2, 3]))
        e = s.wait(lambda e: e.get("event") == "reading", "a reading event")
        d = json.loads(e["data"])
        self.assertEqual(d, {"meter": "m1", "gw": GW, "ts": "2025-11-22T08:26:43.000Z",
                             "seq": 3, "values": {"power": 3.25, "energy_import": 0.375}})
        self.assertTrue(e.get("id", "").isdigit(), e)

        publish(self.st, "readings", batch([10], meter="m2"))
        e = only_m2.wait(lambda e: e.get("event") == "reading", "m2's reading event")
        self.assertEqual(json.loads(e["data"])["meter"], "m2")
        s.wait(lambda e: e.get("event") == "reading" and '"m2"' in e["data"], "m2 on the first")
        # the filtered stream saw the status but not m1's readings
        self.assertEqual([r["meter"] for r in only_m2.of("reading")], ["m2"])
        self.assertEqual(len(only_m2.of("status")), 1, only_m2.events)

        # a batch of duplicates stores nothing: no event
        publish(self.st, "readings", batch([1, 2, 3]))
        publish(self.st, "status", b'{"state":"offline"}')
        e = s.wait(lambda e: e.get("event") == "status" and "offline" in e["data"],
                   "the offline status event")
        self.assertEqual(json.loads(e["data"])["state"], "offline")
        # a status that does not change anything is no event
        publish(self.st, "status", b'{"state":"offline"}')
        publish(self.st, "readings", batch([11], meter="m2"))
        only_m2.wait(lambda e: '"seq":11' in e.get("data", ""), "m2's second reading")
        self.assertEqual([r["seq"] for r in s.of("reading")], [3, 10, 11])
        self.assertEqual([r["state"] for r in s.of("status")], ["online", "offline"])
        self.assertFalse(s.ended)
        for e in s.events + only_m2.events:
            self.assertEqual(sorted(e), ["data", "event", "id"], e)

        m = self.metrics()
        self.assertEqual(m[("meterlink_stream_clients", ())], 2)

    def test_unauthorized_and_bad_filter(self):
        for path in ("/api/v1/stream", "/metrics"):
            code, body, hdrs = self.st.request("GET", path, token=None)
            self.assertEqual(code, 401, (path, body))
            self.assertEqual(hdrs.get("www-authenticate"), "Bearer", path)
            code, body, _ = self.st.request("GET", path, token="0" * 40)
            self.assertEqual(code, 401, (path, body))
        code, body, _ = self.st.request("GET", "/api/v1/stream?meters=a,,b")
        self.assertEqual(code, 400, body)
        code, body, _ = self.st.request("GET", "/metrics?x=1")
        self.assertEqual(code, 400, body)

    def test_metrics_counters(self):
        before = self.metrics()
        for name in ("meterlink_ingest_messages_total", "meterlink_ingest_batches_total",
                     "meterlink_ingest_readings_stored_total", "meterlink_ingest_duplicates_total",
                     "meterlink_ingest_acks_total", "meterlink_stream_clients",
                     "meterlink_http_request_duration_seconds_count"):
            self.assertIn((name, ()), before, name)
        self.assertIn(("meterlink_ingest_rejects_total", (("cause", "envelope"),)), before)
        self.assertIn(("meterlink_gateways", (("status", "online"),)), before)
        self.assertIn(("meterlink_http_request_duration_seconds_bucket", (("le", "+Inf"),)),
                      before)
        self.assertGreater(before[("meterlink_http_requests_total", (("class", "2xx"),))], 0)

        publish(self.st, "status", b'{"state":"online"}')
        publish(self.st, "readings", batch([1, 2]))
        publish(self.st, "readings", batch([2]))  # a duplicate
        publish(self.st, "readings", b"not json")
        stack.wait_for(lambda: self.metrics()[("meterlink_ingest_messages_total", ())] >=
                       before[("meterlink_ingest_messages_total", ())] + 4, 15, "4 messages")
        after = self.metrics()

        def grew(name, by, labels=()):
            self.assertEqual(after[(name, labels)] - before[(name, labels)], by,
                             f"{name}{labels}: {before[(name, labels)]} -> {after[(name, labels)]}")
        grew("meterlink_ingest_batches_total", 2)
        grew("meterlink_ingest_readings_stored_total", 2)
        grew("meterlink_ingest_duplicates_total", 1)
        # both batches may land in one group commit, which sends one ack per stream
        acks = (after[("meterlink_ingest_acks_total", ())] -
                before[("meterlink_ingest_acks_total", ())])
        self.assertIn(acks, (1, 2), f"acks grew by {acks}")
        grew("meterlink_ingest_rejects_total", 1, (("cause", "envelope"),))
        self.assertEqual(after[("meterlink_gateways", (("status", "online"),))], 1)
        self.assertGreater(after[("meterlink_http_request_duration_seconds_count", ())],
                           before[("meterlink_http_request_duration_seconds_count", ())])
        # a histogram's buckets are cumulative, +Inf equals the count
        b = sorted((float(k[1][0][1]), v) for k, v in after.items()
                   if k[0] == "meterlink_http_request_duration_seconds_bucket")
        self.assertEqual([v for _, v in b], sorted(v for _, v in b), b)
        self.assertEqual(b[-1][1], after[("meterlink_http_request_duration_seconds_count", ())])

    def test_clean_stop_with_stream_open(self):
        s = self.open()
        stack.wait_for(lambda: s.comments, 10, "the stream's first comment")
        t0 = time.monotonic()
        self.assertEqual(self.st.stop_cloud(), 0, "meter-cloud exit status")
        took = time.monotonic() - t0
        self.assertLess(took, 5, f"meter-cloud took {took:.1f} s to stop")
        stack.wait_for(lambda: s.ended, 5, "the stream to end")
        with open(self.st.path("meter-cloud.log"), errors="replace") as f:
            log = f.read()
        for bad in ("Sanitizer", "runtime error"):
            self.assertNotIn(bad, log)

    def test_client_cap_and_gone(self):
        s = self.open()
        more = [self.open() for _ in range(15)]
        stack.wait_for(lambda: self.metrics()[("meterlink_stream_clients", ())] == 16, 10,
                       "16 stream clients")
        over = SSE(self.st)
        self.streams.append(over)
        self.assertEqual(over.resp.status, 503)
        self.assertEqual(json.loads(over.resp.read())["error"]["code"], "unavailable")
        for m in more:
            m.close()
        s.close()
        stack.wait_for(lambda: self.metrics()[("meterlink_stream_clients", ())] == 0, 10,
                       "the stream client to be gone")


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
