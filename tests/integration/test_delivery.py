#!/usr/bin/env python3
"""Never lose a reading: end-to-end delivery under faults, on real processes.

meter-sim -> meter-agent -> mosquitto -> meter-cloud, with the broker stopped, the agent
and the cloud killed with SIGKILL, the queue bounded, the disk full and the queue file
corrupt. After each, every seq of the agent's stream is either stored in the cloud or
covered by a loss report the cloud received, and nothing is stored twice.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)


def meters(n, bus="tcp", profile="sdm120"):
    return [(f"m{i:02d}", bus, i + 1, profile) for i in range(n)]


class Delivery(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.addCleanup(self.cleanup)

    def cleanup(self):
        self.st.stop()
        for m in getattr(self, "mounts", []):
            subprocess.run(["umount", "-l", m], check=False)
        self.st.finish(self)

    # -- helpers ----------------------------------------------------------------------
    def start(self, n_meters=8, interval_ms=200, **agent_over):
        st = self.st
        st.start_broker()
        self.meters = meters(n_meters)
        st.start_sim([f"{m[1]}:{m[2]}:{m[3]}" for m in self.meters])
        st.start_cloud()
        self.cfg = st.agent_config(self.meters, interval_ms=interval_ms)
        self.cfg["uplink"] = {"batch_max": 50, "inflight_max": 8, "ack_timeout_ms": 2000}
        self.cfg["health"] = {"interval_ms": 1000}
        for k, v in agent_over.items():
            self.cfg[k] = v
        return self.start_agent()

    def start_agent(self):
        """Starts the agent and waits until it runs (its signal handlers are set when it logs
        its gateway line): a SIGTERM during start-up must not be what a test measures."""
        log = self.st.path("meter-agent.log")

        def started_count():
            try:
                with open(log, errors="replace") as f:
                    return sum(1 for line in f if "info: gateway " in line)
            except OSError:
                return 0
        before = started_count()
        p = self.st.start_agent(self.cfg)
        stack.wait_for(lambda: started_count() > before, 60, "meter-agent to start")
        return p

    def queue_db(self):
        return self.cfg["queue"]["path"]

    def queue_state(self):
        """(stream, next_seq, rows left) of the agent's queue file, agent stopped."""
        db = sqlite3.connect(self.queue_db())
        try:
            meta = dict(db.execute("SELECT key, value FROM meta"))
            left = db.execute("SELECT count(*) FROM q").fetchone()[0]
        finally:
            db.close()
        return meta["stream"], int(meta["next_seq"]), left

    def cloud_seqs(self, stream):
        """seq -> count of stored readings of that stream, read from the cloud's store."""
        db = sqlite3.connect(f"file:{self.st.path('cloud.db')}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT r.seq, count(*) FROM readings r JOIN streams s"
                              " ON s.id = r.stream_id WHERE s.name = ? GROUP BY r.seq",
                              (stream,)).fetchall()
        finally:
            db.close()
        return dict(rows)

    def gateway(self):
        code, body = self.st.get("/api/v1/gateways/gw-01")
        self.assertEqual(code, 200, body)
        return body

    def stream_info(self, stream):
        for s in self.gateway()["streams"]:
            if s["stream"] == stream:
                return s
        return None

    def wait_complete(self, stream, next_seq, timeout=60):
        """Waits until the cloud's upto for stream reaches next_seq - 1."""
        def done():
            s = self.stream_info(stream)
            return s is not None and s["upto"] >= next_seq - 1 and not s["missing"]
        stack.wait_for(done, timeout, f"the cloud to confirm seq 1..{next_seq - 1} of {stream}")
        return self.stream_info(stream)

    def queued_seqs(self):
        db = sqlite3.connect(self.queue_db())
        try:
            return {r[0] for r in db.execute("SELECT seq FROM q")}
        finally:
            db.close()

    def assert_accounted(self, stream, next_seq, allow_loss):
        """Every seq 1..next_seq-1 stored once, or still in the agent's queue (a clean stop
        waits a little for the last acks; on a busy machine a tail may remain, and it is
        not lost), or (if allowed) in a reported loss."""
        queued = self.queued_seqs()
        if queued:
            # what is still queued is the newest tail, contiguous up to next_seq - 1
            self.assertEqual(sorted(queued), list(range(min(queued), next_seq)),
                             "the queue holds something other than the undelivered tail")
        confirmed_to = min(queued) if queued else next_seq
        info = self.wait_complete(stream, confirmed_to)
        seqs = self.cloud_seqs(stream)
        dup = {s: c for s, c in seqs.items() if c > 1}
        self.assertEqual(dup, {}, "seqs stored more than once")
        missing = [s for s in range(1, next_seq) if s not in seqs and s not in queued]
        if not allow_loss:
            self.assertEqual(missing, [], "readings neither stored nor reported lost")
            self.assertEqual(info["lost"], 0, "durable mode reported losses")
        else:
            self.assertEqual(len(missing), info["lost"],
                             "seqs not stored must be exactly those reported lost")
        self.assertEqual(info["received"], len(seqs))
        return seqs, missing

    # -- tests ------------------------------------------------------------------------
    def test_broker_outage_backlog_then_live(self):
        st = self.st
        self.start(n_meters=16, interval_ms=100)
        stack.wait_for(lambda: self.stream_info_any(), 30, "first readings in the cloud")
        st.stop_broker()
        t_down = time.time()
        # 16 meters at 10/s: thousands of readings queue while the broker is away
        stack.wait_for(lambda: self.agent_queued() >= 2000, 90, "2000 readings queued")
        st.restart_broker()
        t_up_ms = int(time.time() * 1000)
        self.assertGreater(time.time() - t_down, 1)
        stream = self.stream_info_any()["stream"]
        self.catch_up(timeout=120)
        self.assertEqual(st.stop_proc("meter-agent"), 0)
        stream2, next_seq, left = self.queue_state()
        self.assertEqual(stream2, stream)
        self.assertGreaterEqual(next_seq, 2000)
        self.assert_accounted(stream, next_seq, allow_loss=False)
        # Live readings reached the cloud before the backlog had drained: a strictly
        # oldest-first drain stores readings in seq order; interleaving stores some newer
        # reading (by more than two batches) before an older one of the backlog.
        db = sqlite3.connect(f"file:{st.path('cloud.db')}?mode=ro", uri=True)
        rows = db.execute("SELECT seq, received FROM readings WHERE ts > ? AND received >= ?"
                          " ORDER BY seq", (int(t_down * 1000), t_up_ms)).fetchall()
        db.close()
        gap = 2 * self.cfg["uplink"]["batch_max"]
        suffix_min = [0] * len(rows)
        m = float("inf")
        for i in range(len(rows) - 1, -1, -1):
            m = min(m, rows[i][1])
            suffix_min[i] = m
        by_seq = {seq: i for i, (seq, _) in enumerate(rows)}
        overtaken = sum(1 for i, (seq, recv) in enumerate(rows)
                        if seq + gap in by_seq and suffix_min[by_seq[seq + gap]] < recv)
        self.assertGreater(overtaken, 0, "live readings waited for the whole backlog")

    def test_kill9_agent_rounds(self):
        st = self.st
        self.start(n_meters=4, interval_ms=100)
        rnd = random.Random(int(os.environ.get("MLK_SEED", "4242")))
        rounds = int(os.environ.get("MLK_KILL_ROUNDS", "20"))
        for i in range(rounds):
            time.sleep(rnd.uniform(0.1, 0.8))  # a random moment to kill at, not a wait
            st.procs["meter-agent"].stop(signal.SIGKILL)
            st.procs.pop("meter-agent")
            self.start_agent()
        self.catch_up()
        self.assertEqual(st.stop_proc("meter-agent"), 0)
        stream, next_seq, _ = self.queue_state()
        seqs, missing = self.assert_accounted(stream, next_seq, allow_loss=False)
        self.assertGreater(len(seqs), rounds)

    def test_cloud_kill9_and_broker_without_persistence(self):
        st = self.st
        self.start(n_meters=8, interval_ms=100)
        stack.wait_for(lambda: self.stream_info_any(), 30, "readings in the cloud")
        for _ in range(3):
            st.stop_cloud(signal.SIGKILL)
            before = self.agent_next_seq_hint()
            stack.wait_for(lambda: self.agent_next_seq_hint() > before + 50, 30,
                           "readings taken while the cloud is down")
            st.start_cloud()
            # a broker restart (it keeps no persistence) while readings are in flight
            st.restart_broker()
        self.catch_up()
        stream = self.stream_info_any()["stream"]
        self.assertEqual(st.stop_proc("meter-agent"), 0)
        _, next_seq, left = self.queue_state()
        self.assert_accounted(stream, next_seq, allow_loss=False)

    def test_queue_bound_losses_are_reported(self):
        st = self.st
        self.start(n_meters=8, interval_ms=100,
                   queue={"path": st.path("queue-gw-01.db"), "max_rows": 200})
        stack.wait_for(lambda: self.stream_info_any(), 30, "readings in the cloud")
        st.stop_broker()
        stack.wait_for(lambda: self.agent_next_seq_hint() > 800, 60, "600 readings more")
        st.restart_broker()
        self.catch_up()
        stream = self.stream_info_any()["stream"]
        stack.wait_for(lambda: (self.stream_info(stream) or {}).get("lost", 0) > 0, 60,
                       "the loss report")
        self.assertEqual(st.stop_proc("meter-agent"), 0)
        _, next_seq, _ = self.queue_state()
        seqs, missing = self.assert_accounted(stream, next_seq, allow_loss=True)
        self.assertGreaterEqual(len(missing), 300, "the bound should have dropped readings")
        # what was dropped is one contiguous run of the oldest queued readings per outage
        info = self.stream_info(stream)
        self.assertEqual(info["missing"], [])

    def test_disk_full_then_recovers(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a small tmpfs")
        st = self.st
        mnt = st.path("smalldisk")
        os.makedirs(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], check=True)
        self.mounts = [mnt]
        self.start(n_meters=4, interval_ms=100,
                   queue={"path": os.path.join(mnt, "queue.db")})
        stack.wait_for(lambda: self.stream_info_any(), 30, "readings in the cloud")
        st.stop_broker()  # readings must stay on the gateway now
        filler = os.path.join(mnt, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:  # unbuffered: ENOSPC shows up here, not in a later flush
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        finally:
            os.close(fd)
        before = self.agent_next_seq_hint()
        stack.wait_for(lambda: self.agent_next_seq_hint() > before + 100, 60,
                       "polling to go on with a full disk")
        self.assertTrue(st.procs["meter-agent"].alive(), "the agent died on a full disk")
        os.unlink(filler)
        st.restart_broker()
        self.catch_up()
        stream = self.stream_info_any()["stream"]
        self.assertEqual(st.stop_proc("meter-agent"), 0)
        _, next_seq, _ = self.queue_state()
        self.assert_accounted(stream, next_seq, allow_loss=False)

    def test_corrupt_queue_file(self):
        st = self.st
        self.start(n_meters=4, interval_ms=100)
        stack.wait_for(lambda: self.stream_info_any(), 30, "readings in the cloud")
        st.stop_broker()
        # packed readings: about 400 make a file of more than 8 pages
        stack.wait_for(lambda: self.agent_next_seq_hint() > 400, 60, "readings queued")
        st.procs["meter-agent"].stop(signal.SIGKILL)
        st.procs.pop("meter-agent")
        db = sqlite3.connect(self.queue_db())
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
        db.close()
        old_stream, old_next, left = self.queue_state()
        self.assertGreater(left, 0)
        # a torn write: the second half of the file is garbage, the first pages survive
        size = os.path.getsize(self.queue_db())
        self.assertGreater(size, 8 * 4096)
        with open(self.queue_db(), "r+b") as f:
            f.seek(size // 2)
            f.write(os.urandom(size - size // 2))
        st.restart_broker()
        self.start_agent()
        stack.wait_for(lambda: any(name.startswith("queue-gw-01.db.corrupt-")
                                   for name in os.listdir(st.dir)), 30, "the file set aside")
        stack.wait_for(lambda: len(self.gateway()["streams"]) >= 2, 30, "the new stream")
        # the old stream: everything not delivered is reported lost, nothing left open
        info = self.wait_complete(old_stream, old_next)
        self.assertGreater(info["lost"], 0)
        self.assertEqual(st.stop_proc("meter-agent"), 0)
        new_stream, next_seq, _ = self.queue_state()
        self.assertNotEqual(new_stream, old_stream)
        self.assert_accounted(new_stream, next_seq, allow_loss=False)

    def catch_up(self, timeout=60):
        """Waits until the cloud has confirmed at least as many readings as the simulator
        had answered polls when this was called (the agent is connected and draining)."""
        target = self.agent_next_seq_hint()

        def ok():
            s = self.stream_info_any()
            return s is not None and s["upto"] + s["lost"] >= target
        stack.wait_for(ok, timeout, f"the cloud to confirm {target} readings")

    # -- small probes -------------------------------------------------------------------
    def stream_info_any(self):
        code, body = self.st.get("/api/v1/gateways/gw-01")
        if code != 200 or not body.get("streams"):
            return None
        return body["streams"][-1]

    def last_health(self):
        code, body = self.st.get("/api/v1/gateways/gw-01")
        return (body or {}).get("health") if code == 200 else None

    def agent_queued(self):
        """Readings queued on the gateway, from the agent's queue file (WAL: readable while
        the agent writes)."""
        db = sqlite3.connect(f"file:{self.queue_db()}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM q").fetchone()[0]
        finally:
            db.close()

    def agent_next_seq_hint(self):
        """Polls answered so far: every poll of an SDM120 has one request at address 0."""
        with open(self.st.served_log) as f:
            return sum(1 for line in f if json.loads(line)["addr"] == 0)

    def max_seq_stored(self, stream):
        s = self.cloud_seqs(stream)
        return max(s) if s else 0

    def max_ts_stored(self):
        db = sqlite3.connect(f"file:{self.st.path('cloud.db')}?mode=ro", uri=True)
        try:
            return db.execute("SELECT max(ts) FROM readings").fetchone()[0] or 0
        finally:
            db.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
