#!/usr/bin/env python3
"""meter-sim's fault injection and line-speed emulation, seen by independent Modbus masters.

pymodbus 3.0.0 (Debian's python3-pymodbus) is the master over TCP and over RTU on the
pseudo-terminal; a few lines of raw Modbus below check the bytes themselves (a broken CRC, a
broken MBAP header, the order of replies on the RTU line) and time replies without any
master's own delays. Faults are set at start (--fault) and changed at run time through the
control socket (--control); the served log must say what was injected.
"""
import json
import logging
import math
import os
import select
import shutil
import socket
import statistics
import struct
import sys
import termios
import threading
import time
import tty
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

from pymodbus.client import ModbusSerialClient, ModbusTcpClient  # noqa: E402
from pymodbus.exceptions import ModbusException  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
METERS = ["tcp:1:sdm630", "tcp:2:sdm120", "rtu:3:sdm630", "rtu:4:sdm120"]
TIMEOUT = 1  # the masters' response timeout, s (pymodbus 3.0.0 cannot connect with < 1)

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # failed reads are expected here


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_frame(unit, fc, addr, count):
    pdu = struct.pack(">BBHH", unit, fc, addr, count)
    return pdu + struct.pack("<H", crc16(pdu))


def crc_ok(frame):
    return len(frame) >= 4 and struct.unpack("<H", frame[-2:])[0] == crc16(frame[:-2])


def line_time_s(baud, bits, req_chars, rep_chars, turnaround_ms=0):
    """docs/development.md: (req + rep + 3.5 chars) * bits/char / baud + turnaround."""
    return math.ceil((2 * (req_chars + rep_chars) + 7) * bits * 1e6 / (2 * baud)) / 1e6 \
        + turnaround_ms / 1000


class RawRtu:
    """The master side of the pseudo-terminal, raw: write frames, read bytes with times."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIOFLUSH)

    def close(self):
        os.close(self.fd)

    def read(self, want, timeout):
        """Reads until want bytes came or timeout (s) passed; returns [(t, bytes), ...]."""
        got, n = [], 0
        deadline = time.monotonic() + timeout
        while n < want:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                break
            b = os.read(self.fd, 1024)
            got.append((time.monotonic(), b))
            n += len(b)
        return got

    def transact(self, frame, want, timeout=2.0):
        """Sends frame; returns (seconds until want bytes had arrived or None, the bytes)."""
        termios.tcflush(self.fd, termios.TCIFLUSH)
        t0 = time.monotonic()
        os.write(self.fd, frame)
        chunks = self.read(want, timeout)
        data = b"".join(c[1] for c in chunks)
        return (chunks[-1][0] - t0 if len(data) >= want else None), data


def raw_tcp(endpoint, tid, unit, fc, addr, count, timeout=0.5):
    """One MBAP request on a new connection; returns what came back within timeout."""
    host, port = endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack(">HHHBBHH", tid, 0, 6, unit, fc, addr, count))
        s.settimeout(timeout)
        data = b""
        try:
            while len(data) < 9 + 2 * count:
                b = s.recv(1024)
                if not b:
                    break
                data += b
        except socket.timeout:
            pass
        return data


class Control:
    """A client of meter-sim's control socket."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")

    def send(self, raw):
        self.f.write(raw)
        self.f.flush()

    def answer(self):
        return self.f.readline().decode().rstrip("\n")

    def cmd(self, line):
        self.send(line.encode() + b"\n")
        return self.answer()

    def close(self):
        self.f.close()
        self.s.close()


class SimCase(unittest.TestCase):
    extra = ()

    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.addCleanup(self.cleanup)
        self.ctl_path = self.st.path("ctl.sock")
        self.st.start_sim(METERS, extra=["--control", self.ctl_path] + list(self.extra))
        self.ctl = Control(self.ctl_path)
        self.addCleanup(self.ctl.close)

    def cleanup(self):
        codes = self.st.stop()
        if self._outcome_failed():
            print(self.st.logs(), file=sys.stderr)
        shutil.rmtree(self.st.dir, ignore_errors=True)
        self.assertEqual(codes.get("meter-sim"), 0, "meter-sim exit status")

    def _outcome_failed(self):
        # Inside a cleanup, _outcome.success is always True (Python 3.11 resets it for each
        # cleanup); the result's lists are what tell.
        res = getattr(getattr(self, "_outcome", None), "result", None)
        return res is not None and any(t is self for t, _ in res.errors + res.failures)

    def served(self):
        with open(self.st.served_log) as f:
            return [json.loads(line) for line in f]

    def read(self, bus, unit, addr=0, count=4):
        """One FC 4 read by pymodbus on a new connection: (response or exception, seconds)."""
        if bus == "tcp":
            host, port = self.st.tcp_endpoint.rsplit(":", 1)
            c = ModbusTcpClient(host, port=int(port), timeout=TIMEOUT, retries=0)
        else:
            # Bytes a broken reply left on the line must not be taken for the next reply.
            raw = RawRtu(self.st.path("rtu0"))
            raw.close()
            c = ModbusSerialClient(self.st.path("rtu0"), baudrate=9600, timeout=TIMEOUT,
                                   retries=0)
        self.assertTrue(c.connect(), f"pymodbus connects to {bus}")
        t0 = time.monotonic()
        try:
            r = c.read_input_registers(addr, count, slave=unit)
        except ModbusException as e:
            r = e
        dt = time.monotonic() - t0
        c.close()
        return r, dt

    def assert_good(self, bus, unit, r, what):
        self.assertFalse(isinstance(r, Exception) or r.isError(), f"{what}: {bus}:{unit}: {r}")
        self.assertEqual(len(r.registers), 4, f"{what}: {r}")

    def assert_failed(self, bus, unit, r, what):
        self.assertTrue(isinstance(r, Exception) or r.isError(),
                        f"{what}: {bus}:{unit}: the master took a reply: {r}")
        self.assertFalse(hasattr(r, "exception_code"),
                         f"{what}: {bus}:{unit}: an exception reply, not a failure: {r}")

    def last_served(self, bus, unit, n_before):
        """The newest served-log line for bus:unit after the first n_before lines."""
        def newer():
            lines = [e for e in self.served()[n_before:] if e["bus"] == bus and e["unit"] == unit]
            return lines[-1] if lines else None
        return stack.wait_for(newer, 10, f"a served-log line for {bus}:{unit}")


class Faults(SimCase):
    extra = ("--fault", "tcp:2:noreply", "--fault", "rtu:4:exception:2")

    def test_each_fault_set_and_cleared_at_run_time(self):
        for bus, unit in (("tcp", 1), ("rtu", 3)):
            target = f"{bus}:{unit}"
            for kind in ("noreply", "crc", "exception 4", "exception 11", "slow 300", "garbage",
                         "none"):
                what = f"fault {kind}"
                self.assertEqual(self.ctl.cmd(f"fault {target} {kind}"), "ok", what)
                n = len(self.served())
                r, dt = self.read(bus, unit)
                log = self.last_served(bus, unit, n)
                name = kind.split()[0]
                if name == "none":
                    self.assert_good(bus, unit, r, what)
                    self.assertNotIn("fault", log, what)
                    self.assertEqual(log["count"], 4)
                    self.assertEqual(len(log["values"]), 2, f"{what}: {log}")
                    continue
                self.assertEqual(log.get("fault"), name, f"{what}: served log {log}")
                if name == "slow":
                    self.assert_good(bus, unit, r, what)
                    self.assertGreaterEqual(dt, 0.3, f"{what}: reply after {dt:.3f} s")
                    self.assertLess(dt, 0.3 + 0.4, f"{what}: reply after {dt:.3f} s")
                    self.assertEqual(log["delay_ms"], 300)
                    self.assertEqual(len(log["values"]), 2, f"{what}: {log}")
                elif name == "exception":
                    code = int(kind.split()[1])
                    self.assertTrue(hasattr(r, "exception_code"), f"{what}: {r}")
                    self.assertEqual(r.exception_code, code, f"{what}: {r}")
                    self.assertEqual(r.function_code, 0x84, f"{what}: {r}")
                    self.assertEqual(log["code"], code)
                    self.assertEqual(log["values"], {})
                else:
                    self.assert_failed(bus, unit, r, what)
                    self.assertEqual(log["values"], {}, what)
                    if name == "noreply":
                        self.assertGreaterEqual(dt, TIMEOUT * 0.9, f"{what}: failed at once")

    def test_faults_from_the_command_line(self):
        r, _ = self.read("tcp", 2)
        self.assert_failed("tcp", 2, r, "--fault tcp:2:noreply")
        r, _ = self.read("rtu", 4)
        self.assertEqual(getattr(r, "exception_code", None), 2, f"--fault rtu:4:exception:2: {r}")
        stats = json.loads(self.ctl.cmd("stats"))
        faults = {f"{m['bus']}:{m['unit']}": m["fault"] for m in stats["meters"]}
        self.assertEqual(faults, {"tcp:1": "none", "tcp:2": "noreply", "rtu:3": "none",
                                  "rtu:4": "exception 2"})
        for target in ("tcp:2", "rtu:4"):
            self.assertEqual(self.ctl.cmd(f"fault {target} none"), "ok")
        for bus, unit in (("tcp", 2), ("rtu", 4)):
            r, _ = self.read(bus, unit)
            self.assert_good(bus, unit, r, "after fault none")

    def test_broken_replies_on_the_wire(self):
        rtu = RawRtu(self.st.path("rtu0"))
        self.addCleanup(rtu.close)
        count = 10
        good_len = 5 + 2 * count
        _, good = rtu.transact(rtu_frame(3, 4, 0, count), good_len)
        self.assertTrue(crc_ok(good) and len(good) == good_len, good.hex())

        self.assertEqual(self.ctl.cmd("fault rtu:3 crc"), "ok")
        _, bad = rtu.transact(rtu_frame(3, 4, 0, count), good_len)
        self.assertEqual(len(bad), good_len, f"crc: a whole reply, {bad.hex()}")
        self.assertEqual(bad[:3], bytes([3, 4, 2 * count]), f"crc: header {bad.hex()}")
        self.assertFalse(crc_ok(bad), f"crc: the CRC checks: {bad.hex()}")

        self.assertEqual(self.ctl.cmd("fault rtu:3 garbage"), "ok")
        for _ in range(5):
            _, junk = rtu.transact(rtu_frame(3, 4, 0, count), 1000, timeout=0.3)
            self.assertGreaterEqual(len(junk), 8, f"garbage: {junk.hex()}")
            self.assertFalse(crc_ok(junk), f"garbage: a valid frame {junk.hex()}")

        good = raw_tcp(self.st.tcp_endpoint, 0x1234, 1, 4, 0, count)
        self.assertEqual(good[:9], struct.pack(">HHHBBB", 0x1234, 0, 3 + 2 * count, 1, 4,
                                               2 * count), good.hex())
        self.assertEqual(self.ctl.cmd("fault tcp:1 crc"), "ok")
        bad = raw_tcp(self.st.tcp_endpoint, 0x1234, 1, 4, 0, count)
        self.assertEqual(len(bad), len(good), f"crc: a whole reply, {bad.hex()}")
        tid, pid, length, unit = struct.unpack(">HHHB", bad[:7])
        self.assertNotEqual(tid, 0x1234, f"crc: transaction id intact {bad.hex()}")
        self.assertNotEqual(unit, 1, f"crc: unit id intact {bad.hex()}")
        self.assertTrue(pid >> 8 and pid & 0xFF, f"crc: protocol id {pid:#x}")
        self.assertEqual(length, 3 + 2 * count)
        self.assertEqual(bad[7:9], bytes([4, 2 * count]), f"crc: PDU {bad.hex()}")
        self.assertEqual(self.ctl.cmd("fault tcp:1 garbage"), "ok")
        for i in range(5):
            junk = raw_tcp(self.st.tcp_endpoint, 0x1234, 1, 4, 0, count, timeout=0.3)
            self.assertGreaterEqual(len(junk), 8, f"garbage: {junk.hex()}")
            self.assertNotEqual(junk[:2], b"\x12\x34", f"garbage: transaction id {junk.hex()}")

    def test_slow_meter_holds_its_line_only(self):
        # rtu:3 answers after 1 s. A request for rtu:4 sent right behind it waits for the
        # line (a real bus carries one reply at a time); TCP meters answer meanwhile.
        self.assertEqual(self.ctl.cmd("fault rtu:4 none"), "ok")
        self.assertEqual(self.ctl.cmd("fault rtu:3 slow 1000"), "ok")
        rtu = RawRtu(self.st.path("rtu0"))
        self.addCleanup(rtu.close)
        t0 = time.monotonic()
        os.write(rtu.fd, rtu_frame(3, 4, 0, 2) + rtu_frame(4, 4, 0, 2))
        r, dt = self.read("tcp", 1)
        self.assert_good("tcp", 1, r, "tcp read while rtu:3 is slow")
        self.assertLess(dt, 0.5, f"tcp read took {dt:.3f} s while rtu:3 is slow")
        chunks = rtu.read(2 * 9, 5)
        data = b"".join(c[1] for c in chunks)
        self.assertEqual(len(data), 18, f"two replies: {data.hex()}")
        first, second = data[:9], data[9:]
        self.assertEqual((first[0], second[0]), (3, 4), f"reply order: {data.hex()}")
        self.assertTrue(crc_ok(first) and crc_ok(second), data.hex())
        self.assertGreaterEqual(chunks[0][0] - t0, 1.0, "rtu:3 replied early")
        self.assertLess(chunks[-1][0] - t0, 1.5, "rtu:4 replied late")

        # On TCP a slow meter holds back nobody, not even another meter of the same server.
        self.assertEqual(self.ctl.cmd("fault tcp:1 slow 1000"), "ok")
        self.assertEqual(self.ctl.cmd("fault tcp:2 none"), "ok")
        slow = {}
        th = threading.Thread(target=lambda: slow.update(r=raw_tcp(
            self.st.tcp_endpoint, 7, 1, 4, 0, 2, timeout=3)))
        th.start()
        time.sleep(0.05)  # only so that the slow request is likely the first one
        r, dt = self.read("tcp", 2)
        th.join()
        self.assert_good("tcp", 2, r, "tcp:2 while tcp:1 is slow")
        self.assertLess(dt, 0.5, f"tcp:2 read took {dt:.3f} s while tcp:1 is slow")
        self.assertEqual(len(slow["r"]), 13, f"tcp:1 slow reply {slow['r'].hex()}")

    def test_control_protocol(self):
        c = self.ctl
        for line, want in [
            ("", "error: empty command"),
            ("bogus", "error: unknown command \"bogus\""),
            ("fault", "error: usage: fault BUS:UNIT KIND [ARG]"),
            ("fault rtu:3", "error: usage: fault BUS:UNIT KIND [ARG]"),
            ("fault rtu:3 slow 1 2", "error: usage: fault BUS:UNIT KIND [ARG]"),
            ("fault xyz:3 crc", "error: \"xyz:3\" is not tcp:UNIT or rtu:UNIT"),
            ("fault rtu:0 crc", "error: unit id \"0\" is not a number in 1..247"),
            ("fault rtu:9 crc", "error: no meter rtu:9"),
            ("fault rtu:3 melt", "error: unknown fault \"melt\""),
            ("fault rtu:3 slow", "error: slow needs a delay in ms"),
            ("fault rtu:3 slow -5", "error: slow \"-5\": not a number"),
            ("fault rtu:3 exception 0", "error: exception \"0\": not a number in 1..255"),
            ("fault rtu:3 exception 256", "error: exception \"256\": not a number in 1..255"),
            ("fault rtu:3 crc 1", "error: crc takes no argument"),
            ("stats now", "error: unknown command \"stats\""),
        ]:
            got = c.cmd(line)
            self.assertTrue(got.startswith(want), f"{line!r}: {got!r}, want {want!r}...")
        self.assertEqual(c.cmd("fault rtu:3 none\r"), "ok", "CRLF line")
        c.send(b"x" * 5000 + b"\n")
        self.assertEqual(c.answer(), "error: line too long")
        self.assertEqual(c.cmd("fault rtu:3 none"), "ok", "a command after a long line")

        # Several clients at once, commands split across writes.
        others = [Control(self.ctl_path) for _ in range(3)]
        for o in others:
            self.addCleanup(o.close)
        others[0].send(b"fault tcp:1 ")
        others[1].send(b"fault tcp:2 slow 5\nfa")
        self.assertEqual(others[1].answer(), "ok")
        others[0].send(b"crc\n")
        self.assertEqual(others[0].answer(), "ok")
        others[1].send(b"ult tcp:2 none\n")
        self.assertEqual(others[1].answer(), "ok")
        stats = json.loads(others[2].cmd("stats"))
        faults = {f"{m['bus']}:{m['unit']}": m["fault"] for m in stats["meters"]}
        self.assertEqual(faults["tcp:1"], "crc")
        self.assertEqual(faults["tcp:2"], "none")

        # Request counts: exactly the reads made, faulted or not.
        before = {f"{m['bus']}:{m['unit']}": m for m in json.loads(c.cmd("stats"))["meters"]}
        for _ in range(3):
            self.read("tcp", 1)
        self.read("rtu", 3)
        self.read("rtu", 3)
        after = {f"{m['bus']}:{m['unit']}": m for m in json.loads(c.cmd("stats"))["meters"]}
        self.assertEqual(after["tcp:1"]["requests"] - before["tcp:1"]["requests"], 3)
        self.assertEqual(after["tcp:1"]["faulted"] - before["tcp:1"]["faulted"], 3)
        self.assertEqual(after["rtu:3"]["requests"] - before["rtu:3"]["requests"], 2)
        self.assertEqual(after["rtu:3"]["replies"] - before["rtu:3"]["replies"], 2)
        self.assertEqual(after["tcp:2"]["requests"], before["tcp:2"]["requests"])


class LineSpeed(SimCase):
    """FC 4 reads of 40 registers: request 8 bytes, reply 3 + 80 + 2 = 85 bytes."""

    def median_read(self, n=7):
        rtu = RawRtu(self.st.path("rtu0"))
        try:
            times = []
            for _ in range(n):
                dt, data = rtu.transact(rtu_frame(3, 4, 0, 40), 85)
                self.assertIsNotNone(dt, f"no whole reply: {data.hex()}")
                self.assertTrue(crc_ok(data), data.hex())
                times.append(dt)
        finally:
            rtu.close()
        return min(times), statistics.median(times)

    def check(self, want):
        lo, med = self.median_read()
        self.assertGreaterEqual(lo, want, f"fastest reply {lo * 1000:.2f} ms < formula "
                                          f"{want * 1000:.2f} ms")
        self.assertLess(med, want + 0.050, f"median reply {med * 1000:.2f} ms vs formula "
                                           f"{want * 1000:.2f} ms")


class LineSpeed9600(LineSpeed):
    extra = ("--line-speed", "--baud", "9600")

    def test_40_registers_at_9600_8n1(self):
        want = line_time_s(9600, 10, 8, 85)
        self.assertAlmostEqual(want, 0.100521, places=6)
        self.check(want)


    def test_silence_after_a_reply_before_the_next_request(self):
        """Two requests written at once: the second starts on the line only 3.5 characters
        after the first reply ended, so both replies take 2 x formula + one silence."""
        want = 2 * line_time_s(9600, 10, 8, 85) + math.ceil(3.5 * 10 * 1e6 / 9600) / 1e6
        rtu = RawRtu(self.st.path("rtu0"))
        try:
            times = []
            for _ in range(5):
                dt, data = rtu.transact(rtu_frame(3, 4, 0, 40) * 2, 2 * 85)
                self.assertIsNotNone(dt, f"no two whole replies: {data.hex()}")
                self.assertTrue(crc_ok(data[:85]) and crc_ok(data[85:]), data.hex())
                times.append(dt)
        finally:
            rtu.close()
        self.assertGreaterEqual(min(times), want, f"fastest pair {min(times) * 1000:.2f} ms < "
                                                  f"{want * 1000:.2f} ms")
        self.assertLess(statistics.median(times), want + 0.050)
        # The served log: each pair's second request arrived with the first reply still
        # queued (no reaction time), the next pair's first one after the reply went out.
        rtu = [e for e in self.served() if e["bus"] == "rtu"]
        self.assertEqual(len(rtu), 10, rtu)
        for i, e in enumerate(rtu):
            if i % 2 == 1 or i == 0:
                self.assertNotIn("after_reply_us", e, f"request {i}: {e}")
            else:
                self.assertGreaterEqual(e["after_reply_us"], 0, f"request {i}: {e}")
                self.assertLess(e["after_reply_us"], 2_000_000, f"request {i}: {e}")
            self.assertGreaterEqual(e["late_us"], 0, f"request {i}: {e}")


class LineSpeed19200E(LineSpeed):
    extra = ("--line-speed", "--baud", "19200", "--parity", "E", "--turnaround", "20")

    def test_40_registers_at_19200_8e1_with_turnaround(self):
        self.check(line_time_s(19200, 11, 8, 85, turnaround_ms=20))


class NoLineSpeed(LineSpeed):
    def test_replies_at_once_without_line_speed(self):
        _, med = self.median_read()
        self.assertLess(med, line_time_s(9600, 10, 8, 85) / 2,
                        f"median {med * 1000:.2f} ms without --line-speed")


if __name__ == "__main__":
    unittest.main(verbosity=2)
