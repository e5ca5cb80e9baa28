#!/usr/bin/env python3
"""meter-agent's commands over a real broker: real mosquitto (with the stack's ACL: only the
cloud's account may write cmd), real meter-sim, the real agent (and meter-cloud where acks
matter). Commands are published as the "meter-cloud" user with mosquitto_pub; every message
of the gateway is read with mosquitto_sub.

Every command round-trips (docs/protocol.md, "Commands"): ping, poll_now (values equal to
what the simulator served), get_config (password hidden), set_config (an invalid one is
refused with every error and changes nothing; a valid one is written and applied, same
stream, no reading lost; a changed broker setting reconnects), read_registers (raw words
that decode to the served value; exceptions and timeouts as errors), maintenance (nothing
published while polling goes on and the queue grows, then drained), reboot (the sim board
only logs). Malformed commands get error replies when they carry an id and never stop the
agent. SIGHUP with a broken file keeps the running configuration, with a good one applies
it. Home Assistant discovery: retained configs per meter quantity, state per meter, configs
removed with the meter.
"""
import copy
import json
import os
import signal
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
METERS = [("m1", "tcp", 1, "sdm630"), ("m2", "rtu", 2, "sdm120")]
PREFIX = "meterlink/gw-01"


class Tap:
    """mosquitto_sub as the cloud's account on some topics; messages as (topic, payload)."""

    def __init__(self, st, topics, name="tap"):
        self.path = st.path(name + ".out")
        out = open(self.path, "wb")
        argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(st.broker_port), "-u", "meter-cloud",
                "-P", st.users["meter-cloud"], "-v", "-q", "1"]
        for t in topics:
            argv += ["-t", t]
        st._start(name, argv, stdout=out)
        out.close()
        self.off = 0
        self.msgs = []

    def poll(self):
        with open(self.path, "rb") as f:
            f.seek(self.off)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return self.msgs
        self.off += end + 1
        for line in data[:end].decode("utf-8", "replace").split("\n"):
            topic, _, payload = line.partition(" ")
            try:
                payload = json.loads(payload)
            except ValueError:
                pass
            self.msgs.append((topic, payload))
        return self.msgs

    def of(self, suffix, start=0):
        return [p for t, p in self.poll()[start:] if t.endswith(suffix)]

    def reply(self, cid):
        for p in self.of("/reply"):
            if isinstance(p, dict) and p.get("id") == cid:
                return p
        return None


class Commands(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.addCleanup(self.cleanup)
        self.n = 0

    def cleanup(self):
        self.st.stop()
        if self.failed():
            print(self.st.logs(60), file=sys.stderr)

    def finish(self, name="meter-agent"):
        """A clean stop: exit status 0 and no sanitizer report in the log."""
        proc = self.st.procs[name]
        self.assertEqual(self.st.stop_proc(name), 0, f"{name} exit status")
        with open(proc.log_path, errors="replace") as f:
            log = f.read()
        for bad in ("Sanitizer", "runtime error"):
            self.assertNotIn(bad, log, f"{name}: {bad}")

    def failed(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        if hasattr(outcome, "errors"):  # Python < 3.11
            return any(exc for _, exc in outcome.errors)
        result = outcome.result  # 3.11: failures are recorded at once
        return any(t is self for t, _ in result.errors + result.failures)

    # -- helpers --------------------------------------------------------------------------
    def start(self, interval_ms=500, cloud=False, extra_acl=False, **over):
        st = self.st
        st.start_broker()
        if extra_acl:
            # Home Assistant topics; the lines tools/stack.py should carry (see the report)
            with open(st.path("mosquitto.acl"), "a") as f:
                f.write(f"\nuser meter-cloud\ntopic read homeassistant/#\n\n"
                        f"pattern write {st.prefix}/%u/state/#\n"
                        f"pattern write homeassistant/sensor/%u/#\n")
            st.restart_broker()
        st.start_sim([f"{m[1]}:{m[2]}:{m[3]}" for m in METERS])
        if cloud:
            st.start_cloud()
        self.cfg = st.agent_config(METERS, interval_ms=interval_ms)
        self.cfg["health"] = {"interval_ms": 1000}
        for b in self.cfg["buses"]:
            b["timeout_ms"] = 300
        self.cfg.update(over)
        self.tap = Tap(st, [PREFIX + "/#"])
        self.agent = st.start_agent(self.cfg)
        self.cfg_path = st.path("meter-agent.json")
        stack.wait_for(lambda: any(p.get("state") == "online" for p in self.tap.of("/status")
                                   if isinstance(p, dict)), 20, "the agent online")
        stack.wait_for(lambda: self.tap.of("/readings"), 20, "the first readings")

    def publish(self, payload, user="meter-cloud"):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.st.broker_port),
                        "-u", user, "-P", self.st.users[user], "-t", PREFIX + "/cmd", "-q", "1"]
                       + (["-s"] if data else ["-n"]), input=data, check=True, timeout=10)

    def cmd(self, cmd, args=None, cid=None, timeout=20):
        self.n += 1
        cid = cid if cid is not None else f"c-{self.n}"
        msg = {"id": cid, "cmd": cmd}
        if args is not None:
            msg["args"] = args
        self.publish(msg)
        return stack.wait_for(lambda: self.tap.reply(cid), timeout, f"the reply to {cmd} {cid}")

    def ok(self, cmd, args=None, **kw):
        r = self.cmd(cmd, args, **kw)
        self.assertTrue(r["ok"], f"{cmd}: {r}")
        self.assertEqual(r["cmd"], cmd)
        return r["result"]

    def err(self, cmd, args, code, **kw):
        r = self.cmd(cmd, args, **kw)
        self.assertFalse(r["ok"], f"{cmd} {args}: {r}")
        self.assertEqual(r["error"]["code"], code, r)
        self.assertTrue(r["error"]["message"], r)
        return r["error"]

    def seqs_published(self):
        seqs, streams = set(), set()
        for b in self.tap.of("/readings"):
            streams.add(b["stream"])
            seqs.update(r["seq"] for r in b["readings"])
        return seqs, streams

    def served(self):
        with open(self.st.served_log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def poll_gaps(self, bus, unit, since_ms):
        """Gaps between polls of a meter since since_ms, from the served log (its first
        request of every poll)."""
        log = [e for e in self.served() if e["bus"] == bus and e["unit"] == unit]
        first = min(e["addr"] for e in log)
        ts = [e["t"] for e in log if e["addr"] == first and e["t"] >= since_ms]
        return [b - a for a, b in zip(ts, ts[1:])]

    def assert_no_reading_lost(self):
        def contiguous():
            seqs, _ = self.seqs_published()
            return seqs and seqs == set(range(1, max(seqs) + 1))
        stack.wait_for(contiguous, 15, "every seq 1..max published")
        _, streams = self.seqs_published()
        self.assertEqual(len(streams), 1, f"streams {streams}")

    # -- tests ----------------------------------------------------------------------------
    def test_ping_and_malformed_commands(self):
        self.start()
        res = self.ok("ping")
        version = subprocess.run([os.path.join(BUILD, "agent", "meter-agent"), "--version"],
                                 capture_output=True, text=True).stdout.split()[-1]
        self.assertEqual(res["version"], version)
        self.assertIsInstance(res["uptime_s"], int)
        self.assertGreaterEqual(res["uptime_s"], 0)
        self.assertEqual(res["stream"], self.tap.of("/readings")[0]["stream"])
        self.assertEqual((res["gateway"], res["board"], res["maintenance"], res["meters"]),
                         ("gw-01", "sim", False, 2))
        self.assertEqual(self.cmd("ping", cid=42)["id"], 42, "a numeric id is echoed as a number")

        no_reply = [b"not json at all", b"", json.dumps({"cmd": "ping"}).encode(),
                    json.dumps({"id": {"a": 1}, "cmd": "ping"}).encode(),
                    json.dumps({"id": 1.5, "cmd": "ping"}).encode(),
                    json.dumps({"id": "", "cmd": "ping"}).encode(),
                    json.dumps({"id": "x" * 200, "cmd": "ping"}).encode(),
                    json.dumps({"id": "too-big", "cmd": "ping", "args": {"pad": "y" * 70000}}).encode(),
                    b"[1, 2, 3]", b"{\"id\": \"unterminated"]
        for p in no_reply:
            self.publish(p)
        bad_req = self.cmd(None, cid="m-1")  # "cmd": null
        self.assertEqual(bad_req["error"]["code"], "bad_request")
        self.publish({"id": "m-2"})
        self.assertEqual(stack.wait_for(lambda: self.tap.reply("m-2"), 20, "m-2")["error"]["code"],
                         "bad_request")
        self.err("selfdestruct", None, "unknown_command")
        self.err("ping", [1], "bad_args")
        e = self.err("ping", {"x": 1}, "bad_args")
        self.assertEqual(e["errors"], ["args.x: unknown argument"])
        e = self.err("read_registers", {"bus": "tcp0", "unit": 300, "function": 5, "count": 0},
                     "bad_args")
        self.assertEqual(len(e["errors"]), 4, e)
        for key in ("args.unit: 300 is out of range (1..247)", "args.function: 5 is out of range",
                    "args.address: required", "args.count: 0 is out of range (1..125)"):
            self.assertTrue(any(key in m for m in e["errors"]), f"{key} in {e['errors']}")
        self.err("read_registers", {"bus": "tcp0", "unit": 1, "address": 65500, "count": 100},
                 "bad_args")
        self.err("read_registers", {"bus": "nobus", "unit": 1, "address": 0, "count": 1},
                 "not_found")
        self.err("maintenance", {"on": "yes"}, "bad_args")
        self.err("maintenance", {}, "bad_args")
        self.err("poll_now", {"meter": "nope"}, "not_found")
        self.err("poll_now", {"meter": 7}, "bad_args")
        self.err("set_config", {}, "bad_args")
        self.err("set_config", {"config": [1]}, "bad_args")
        self.err("reboot", {"now": True}, "bad_args")
        last = self.ok("ping")
        # commands run in order: by now every message above has been handled
        replies = self.tap.of("/reply")
        ids = [r["id"] for r in replies]
        self.assertNotIn(None, ids, "a reply without an id")
        self.assertNotIn("too-big", ids)
        self.assertEqual(len(ids), len(set(ids)), f"one reply per command: {ids}")
        self.assertTrue(self.agent.alive(), "the agent died on malformed commands")
        self.assertEqual(last["stream"], res["stream"])
        log = self.agent.tail(200)
        self.assertIn("no reply possible", log)
        self.finish()

    def test_get_config_hides_the_password(self):
        self.start()
        r = self.cmd("get_config")
        raw = json.dumps(r)
        self.assertTrue(r["ok"], r)
        c = r["result"]["config"]
        self.assertEqual(c["mqtt"]["password"], "***")
        self.assertNotIn(self.st.users["gw-01"], raw, "the password leaked")
        self.assertEqual(r["result"]["path"], self.cfg_path)
        self.assertEqual(c["gateway"]["id"], "gw-01")
        self.assertEqual([m["id"] for m in c["meters"]], ["m1", "m2"])
        self.assertEqual([(m["ct"], m["pt"]) for m in c["meters"]], [(1, 1), (1, 1)])
        self.assertEqual(c["meters"][0]["interval_ms"], 500)
        self.assertEqual(c["buses"][1]["type"], "rtu")
        self.assertEqual(c["queue"]["durability"], "durable")
        self.finish()

    def test_poll_now_values_match_the_served_log(self):
        self.start(interval_ms=1000)
        res = self.ok("poll_now")
        rs = {r["meter"]: r for r in res["readings"]}
        self.assertEqual(sorted(rs), ["m1", "m2"])
        one = self.ok("poll_now", {"meter": "m2"})
        self.assertEqual([r["meter"] for r in one["readings"]], ["m2"])
        rs["m2b"] = one["readings"][0]
        log = self.served()
        for key, bus, unit in (("m1", "tcp", 1), ("m2", "rtu", 2), ("m2b", "rtu", 2)):
            r = rs[key]
            self.assertTrue(r["ok"], r)
            self.assertGreater(len(r["values"]), 5, r)
            near = [e for e in log if e["bus"] == bus and e["unit"] == unit and
                    r["ts"] - 2000 <= e["t"] <= r["ts"] + 50]
            for q, v in r["values"].items():
                cands = [e["values"][q] for e in near if q in e["values"]]
                self.assertTrue(any(abs(c - v) <= 1e-9 * max(1.0, abs(v)) for c in cands),
                                f"{key} {q}={v} not among the values served then: {cands}")
        # the readings were queued and published like any other
        def published():
            got = {}
            for b in self.tap.of("/readings"):
                for x in b["readings"]:
                    got[x["seq"]] = x
            return got
        for key in ("m1", "m2", "m2b"):
            r = rs[key]
            p = stack.wait_for(lambda: published().get(r["seq"]), 15, f"seq {r['seq']} published")
            self.assertEqual((p["meter"], p["ts"], p["values"]),
                             (r["meter"], r["ts"], r["values"]))
        self.finish()

    def test_read_registers(self):
        self.start()
        for bus, unit in (("tcp0", 1), ("rtu0", 2)):
            t0 = int(time.time() * 1000)
            res = self.ok("read_registers", {"bus": bus, "unit": unit, "function": 4,
                                             "address": 0, "count": 2})
            self.assertEqual((res["bus"], res["unit"], res["function"], res["address"],
                              res["count"]), (bus, unit, 4, 0, 2))
            self.assertEqual(len(res["words"]), 2)
            self.assertGreaterEqual(res["rtt_ms"], 0)
            volts = struct.unpack(">f", struct.pack(">HH", *res["words"]))[0]
            entry = [e for e in self.served() if e["bus"] == bus[:3] and e["unit"] == unit and
                     e["fc"] == 4 and e["addr"] == 0 and e["count"] == 2 and e["t"] >= t0 - 10]
            self.assertEqual(len(entry), 1, f"the served log's entry of this read: {entry}")
            self.assertEqual(volts, entry[0]["values"]["voltage_l1"])
            self.assertTrue(200 < volts < 260, volts)
        e = self.err("read_registers", {"bus": "tcp0", "unit": 1, "function": 4,
                                        "address": 60000, "count": 2}, "modbus")
        self.assertIn("exception 2", e["message"])
        e = self.err("read_registers", {"bus": "rtu0", "unit": 9, "function": 3, "address": 0,
                                        "count": 1}, "modbus")
        self.assertIn("timeout", e["message"])
        # the bus goes on polling
        n = len(self.tap.of("/readings"))
        stack.wait_for(lambda: len(self.tap.of("/readings")) > n + 2, 20, "more readings")
        self.finish()

    def test_set_config_invalid_then_valid(self):
        self.start()
        before = self.ok("get_config")["config"]
        stream = self.ok("ping")["stream"]
        with open(self.cfg_path, "rb") as f:
            file_before = f.read()

        bad = copy.deepcopy(before)
        bad["meters"][0]["unit"] = 300
        bad["buses"][1]["baud"] = 9601
        bad["bogus"] = 1
        e = self.err("set_config", {"config": bad}, "invalid_config")
        self.assertEqual(len(e["errors"]), 3, e)
        for want in ("set_config: bogus: unknown key",
                     "set_config: buses[1].baud: 9601 is not a standard rate",
                     "set_config: meters[0].unit: 300 is out of range (1..247)"):
            self.assertTrue(any(m.startswith(want) for m in e["errors"]), f"{want}: {e}")
        with open(self.cfg_path, "rb") as f:
            self.assertEqual(f.read(), file_before, "an invalid config changed the file")
        self.assertEqual(self.ok("get_config")["config"], before, "the running config changed")

        # valid: m1 every 200 ms; the password comes back as "***" and stays what it was
        good = copy.deepcopy(before)
        good["meters"][0]["interval_ms"] = 200
        t_apply = int(time.time() * 1000)
        res = self.ok("set_config", {"config": good})
        self.assertEqual((res["applied"], res["reconnected"], res["stream"]), (True, False, stream))
        self.assertEqual(self.ok("get_config")["config"], good)
        with open(self.cfg_path) as f:
            written = json.load(f)
        self.assertEqual(written["meters"][0]["interval_ms"], 200)
        self.assertEqual(written["mqtt"]["password"], self.st.users["gw-01"])
        self.assertEqual(oct(os.stat(self.cfg_path).st_mode & 0o777), "0o600")
        self.assertFalse([n for n in os.listdir(self.st.dir) if ".tmp-" in n], "temporary files")
        time.sleep(2.5)
        gaps = self.poll_gaps("tcp", 1, t_apply + 300)
        self.assertGreater(len(gaps), 5)
        self.assertLess(sorted(gaps)[len(gaps) // 2], 300, f"m1 polls every 200 ms now: {gaps}")
        gaps2 = self.poll_gaps("rtu", 2, t_apply + 300)
        self.assertGreater(sorted(gaps2)[len(gaps2) // 2], 400, f"m2 still every 500 ms: {gaps2}")

        # a broker setting changes: the uplink reconnects, same stream
        good2 = copy.deepcopy(good)
        good2["mqtt"]["keepalive"] = 20
        n_status = len(self.tap.of("/status"))
        res = self.ok("set_config", {"config": good2})
        self.assertEqual((res["reconnected"], res["stream"]), (True, stream))
        stack.wait_for(lambda: any(p.get("state") == "online"
                                   for p in self.tap.of("/status")[n_status:]), 20, "online again")
        self.assertEqual(self.ok("ping")["stream"], stream)
        n = len(self.tap.of("/readings"))
        stack.wait_for(lambda: len(self.tap.of("/readings")) > n + 3, 20, "readings after")
        self.assert_no_reading_lost()
        self.finish()

    def test_maintenance_queues_then_drains(self):
        self.start(interval_ms=300, cloud=True)

        def health():
            h = self.tap.of("/health")
            return h[-1] if h else None
        stack.wait_for(lambda: (health() or {}).get("uplink", {}).get("acked_upto", 0) > 0, 30,
                       "the cloud's acks")
        mark = len(self.tap.poll())
        res = self.ok("maintenance", {"on": True})
        self.assertTrue(res["maintenance"])
        stack.wait_for(lambda: any(p.get("maintenance") for p in self.tap.of("/status", mark)), 10,
                       "status with maintenance")
        stack.wait_for(lambda: any(p.get("maintenance") for p in self.tap.of("/health", mark)), 10,
                       "health with maintenance")
        # from the first health that says so on: nothing published, the queue grows
        start = next(i for i, (t, p) in enumerate(self.tap.poll())
                     if i >= mark and t.endswith("/health") and p.get("maintenance"))
        depth0 = self.tap.msgs[start][1]["queue"]["depth"]
        served0 = len(self.served())
        time.sleep(4)
        self.assertEqual([t for t, p in self.tap.poll()[start:] if t.endswith("/readings")], [],
                         "readings published in maintenance mode")
        h = health()
        self.assertTrue(h["maintenance"])
        self.assertGreater(h["queue"]["depth"], depth0 + 15, "the queue must grow")
        self.assertGreater(len(self.served()) - served0, 20, "polling must go on")
        self.assertTrue(self.ok("ping")["maintenance"])

        mark = len(self.tap.poll())
        res = self.ok("maintenance", {"on": False})
        self.assertFalse(res["maintenance"])
        self.assertGreater(res["queue_depth"], 15)
        stack.wait_for(lambda: self.tap.of("/readings", mark), 10, "publishing again")

        def drained():
            hs = [p for p in self.tap.of("/health", mark) if not p["maintenance"]]
            return hs and hs[-1]["queue"]["depth"] <= 4
        stack.wait_for(drained, 30, "the queue drained")
        self.assertFalse(any(p.get("maintenance") for p in self.tap.of("/status", mark)))
        self.assert_no_reading_lost()
        self.finish()

    def test_reboot_on_the_sim_board(self):
        self.start()
        stream = self.ok("ping")["stream"]
        mark = len(self.tap.poll())
        res = self.ok("reboot")
        self.assertEqual((res["reboot"], res["board"]), ("scheduled", "sim"))
        stack.wait_for(lambda: "does not reboot" in self.agent.tail(100), 20, "the reboot logged")
        stack.wait_for(lambda: "carrying on" in self.agent.tail(100), 20, "carrying on")
        # everything restarted: offline, then online again (subscribed to cmd by then)
        stack.wait_for(lambda: [p.get("state") for p in self.tap.of("/status", mark)][-2:] ==
                       ["offline", "online"], 20, "status offline, then online")
        self.assertEqual(self.ok("ping")["stream"], stream)
        self.assertTrue(self.agent.alive())
        n = len(self.tap.of("/readings"))
        stack.wait_for(lambda: len(self.tap.of("/readings")) > n + 2, 20, "readings again")
        self.assert_no_reading_lost()
        self.finish()

    def test_sighup_reload(self):
        self.start()
        stream = self.ok("ping")["stream"]
        with open(self.cfg_path) as f:
            good = json.load(f)
        broken = copy.deepcopy(good)
        broken["meters"][1]["unit"] = 0
        broken["buses"][0]["port"] = "x"
        with open(self.cfg_path, "w") as f:
            json.dump(broken, f)
        self.agent.p.send_signal(signal.SIGHUP)
        stack.wait_for(lambda: "keeping the running configuration" in self.agent.tail(50), 20,
                       "the reload refused")
        log = self.agent.tail(50)
        self.assertIn("buses[0].port: must be an integer", log)
        self.assertIn("meters[1].unit: 0 is out of range", log)
        self.assertTrue(self.agent.alive())
        n = len(self.tap.of("/readings"))
        stack.wait_for(lambda: len(self.tap.of("/readings")) > n + 3, 20, "still polling")
        self.assertEqual(self.ok("get_config")["config"]["meters"][0]["interval_ms"], 500)

        good["meters"][1]["interval_ms"] = 200
        with open(self.cfg_path, "w") as f:
            json.dump(good, f)
        t_apply = int(time.time() * 1000)
        self.agent.p.send_signal(signal.SIGHUP)
        stack.wait_for(lambda: "configuration applied" in self.agent.tail(20), 20, "applied")
        self.assertEqual(self.ok("get_config")["config"]["meters"][1]["interval_ms"], 200)
        self.assertEqual(self.ok("ping")["stream"], stream)
        time.sleep(2)
        gaps = self.poll_gaps("rtu", 2, t_apply + 500)
        self.assertLess(sorted(gaps)[len(gaps) // 2], 300, f"m2 every 200 ms now: {gaps}")
        self.assert_no_reading_lost()
        self.finish()

    def test_home_assistant_discovery(self):
        self.start(extra_acl=True, homeassistant={"enabled": True})
        ha = Tap(self.st, ["homeassistant/#"], name="tap-ha")
        qty = {}
        for m in METERS:
            with open(os.path.join(self.st.src, "agent", "profiles", m[3] + ".json")) as f:
                qty[m[0]] = {r["quantity"] for r in json.load(f)["registers"]}
        want = {f"homeassistant/sensor/gw-01/{m}_{q}/config" for m, qs in qty.items() for q in qs}

        def configs():
            return {t: p for t, p in ha.poll() if isinstance(p, dict)}
        stack.wait_for(lambda: want <= set(configs()), 20, "every discovery config")
        c = configs()
        e = c["homeassistant/sensor/gw-01/m1_energy_import/config"]
        self.assertEqual((e["device_class"], e["state_class"], e["unit_of_measurement"]),
                         ("energy", "total_increasing", "kWh"))
        self.assertEqual(e["state_topic"], PREFIX + "/state/m1")
        self.assertEqual(e["value_template"], "{{ value_json.energy_import }}")
        self.assertEqual(e["unique_id"], "meterlink_gw-01_m1_energy_import")
        self.assertEqual(e["device"]["identifiers"], ["meterlink_gw-01_m1"])
        v = c["homeassistant/sensor/gw-01/m2_voltage_l1/config"]
        self.assertEqual((v["device_class"], v["state_class"], v["unit_of_measurement"]),
                         ("voltage", "measurement", "V"))
        self.assertEqual(v["name"], "Voltage L1")
        self.assertEqual(c["homeassistant/sensor/gw-01/m2_power/config"]["device_class"], "power")
        # the state the templates read
        st = stack.wait_for(lambda: self.tap.of("/state/m1"), 20, "m1's state")[-1]
        self.assertTrue(st["online"])
        self.assertEqual(set(st) - {"ts", "online", "ok", "last_ok_ts"}, qty["m1"])
        retained = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.st.broker_port), "-u",
             "meter-cloud", "-P", self.st.users["meter-cloud"], "-v", "-t", "homeassistant/#",
             "-t", PREFIX + "/state/#", "--retained-only", "-W", "2"],
            capture_output=True, text=True).stdout
        self.assertIn(PREFIX + "/state/m2 ", retained)
        self.assertIn("m2_energy_import/config", retained)

        # a meter removed: its discovery configs go away
        conf = self.ok("get_config")["config"]
        conf["meters"] = conf["meters"][:1]
        self.ok("set_config", {"config": conf})

        def retained_configs():
            out = subprocess.run(
                ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.st.broker_port), "-u",
                 "meter-cloud", "-P", self.st.users["meter-cloud"], "-v", "-t", "homeassistant/#",
                 "--retained-only", "-W", "2"], capture_output=True, text=True).stdout
            return {ln.split(" ", 1)[0] for ln in out.splitlines() if ln.strip()}
        stack.wait_for(lambda: retained_configs() == {t for t in want if "/m1_" in t}, 20,
                       "only m1's configs retained")
        self.finish()


if __name__ == "__main__":
    unittest.main(verbosity=2)
