#!/usr/bin/env python3
"""The "alerts" section of meter-cloud's configuration, through `meter-cloud --check-config`:
a full valid section is accepted, each mistake is reported with its key path and reason,
and a secret is never echoed in an error. (A unit test cannot link cloud/config.c next to
the agent's config.c: both define cfg_load.)
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
CLOUD = os.path.join(BUILD, "cloud", "meter-cloud")

VALID = {"alerts": {
    "interval_s": 5, "repeat_s": 600, "retry_max": 3, "retry_base_ms": 500, "retry_max_ms": 8000,
    "channels": {
        "ops": {"type": "webhook", "url": "https://hooks.example.net/x", "secret": "s3cret-value",
                "timeout_ms": 3000},
        "mail": {"type": "email", "url": "smtp://mail.example.net:587", "from": "cloud@example.net",
                 "to": ["a@example.net", "b@example.net"], "username": "cloud", "password": "pw",
                 "starttls": True}},
    "rules": [
        {"name": "silent", "kind": "meter_offline", "after_s": 600, "channels": ["ops", "mail"]},
        {"name": "gw", "kind": "gateway_offline", "gateway": "gw-01", "after_s": 60},
        {"name": "gaps", "kind": "data_gap"},
        {"name": "low-v", "kind": "threshold", "meter": "house", "quantity": "voltage_l1",
         "below": 207, "for_s": 30},
        {"name": "daily", "kind": "daily_usage", "limit_kwh": 30},
        {"name": "balance", "kind": "balance_days", "days": 3, "channels": ["mail"]}]}}

BAD = {"alerts": {
    "interval_s": 0, "retry_base_ms": 5000, "retry_max_ms": 1000, "bogus": 1,
    "channels": {
        "q": {"type": "mqtt", "url": "x"},
        "w": {"type": "webhook", "url": "ftp://x", "secret": "\u0001hidden-secret"},
        "m": {"type": "email", "url": "smtps://mail", "from": "nobody", "to": [],
              "starttls": True, "password": "pw"},
        "bad name": {"type": "webhook", "url": "http://x"}},
    "rules": [
        {"name": "a", "kind": "meter_offline", "for_s": 3, "channels": ["nope"]},
        {"name": "a", "kind": "threshold", "quantity": "powr", "above": 1, "below": 2},
        {"name": "c", "kind": "melt"},
        {"kind": "daily_usage", "meter": "bad id!"},
        {"name": "e", "kind": "balance_days", "days": 0}]}}

WANT = [
    "alerts.interval_s: 0 is not a time in s (1..3600)",
    "alerts.bogus: unknown key",
    "alerts.retry_max_ms: 1000 is less than alerts.retry_base_ms (5000)",
    "alerts.channels.q.type: \"mqtt\" channels are not supported yet",
    "alerts.channels.w.url: \"ftp://x\" is not an http:// or https:// URL",
    "alerts.channels.w.secret: the value is not null or a secret",
    "alerts.channels.m.from: \"nobody\" is not an e-mail address",
    "alerts.channels.m.to: an array is not an array of 1..8 e-mail addresses",
    "alerts.channels.m.password: set without alerts.channels.m.username",
    "alerts.channels.m.starttls: true, but alerts.channels.m.url is smtps://",
    "alerts.channels: \"bad name\" is not a name",
    "alerts.rules[0].for_s: unknown key (for a meter_offline rule)",
    "alerts.rules[0].channels[0]: \"nope\" is not a channel of alerts.channels",
    "alerts.rules[1].name: \"a\" is the name of rules[0] too",
    "alerts.rules[1].quantity: \"powr\" is not a quantity",
    "alerts.rules[1].below: a threshold rule has either above or below, not both",
    "alerts.rules[2].kind: \"melt\" is not meter_offline, gateway_offline",
    "alerts.rules[3].meter: \"bad id!\" is not a meter id",
    "alerts.rules[3].name: missing",
    "alerts.rules[3].limit_kwh: missing",
    "alerts.rules[4].days: 0 is not a number of days (0.1..3650)",
]


def check(cfg):
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="mlk-alerts-", delete=False) as f:
        json.dump(cfg, f)
        path = f.name
    try:
        p = subprocess.run([CLOUD, "--check-config", "-f", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
    finally:
        os.unlink(path)
    return p.returncode, p.stderr.decode()


class AlertsConfig(unittest.TestCase):
    def test_valid(self):
        code, err = check(VALID)
        self.assertEqual((code, err.strip()), (0, "configuration OK"))

    def test_errors_name_the_key(self):
        code, err = check(BAD)
        self.assertEqual(code, 1, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        for w in WANT:
            self.assertTrue(any(w in ln for ln in lines), f"missing error {w!r} in:\n{err}")
        self.assertEqual(len(lines), len(WANT), err)
        self.assertNotIn("hidden-secret", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
