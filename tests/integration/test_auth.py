#!/usr/bin/env python3
"""meter-cloud's authentication over real HTTP: every protected endpoint answers 401
without a valid token and 403 without the role; login, logout and revocation; expired
sessions; API tokens made, used and deleted; failed logins slowed down (429 with a doubling
Retry-After) per user name and per client address; --create-admin and the first admin from
the environment; strict, bounded request bodies. After each test, no password or token
used in it may appear in any log.
"""
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import stack  # noqa: E402

BUILD = os.environ.get("MLK_BUILD") or sys.argv.pop(1)
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CLOUD = os.path.join(BUILD, "cloud", "meter-cloud")

# Every endpoint that needs a token, as (method, path, least role). Kept here on purpose: a
# new endpoint must be added (test_route_list_matches_sources fails until it is).
PROTECTED = [
    ("GET", "/api/v1/meters", "viewer"),
    ("GET", "/api/v1/meters/m1/readings", "viewer"),
    ("GET", "/api/v1/gateways", "viewer"),
    ("GET", "/api/v1/gateways/gw-01", "viewer"),
    ("POST", "/api/v1/gateways/gw-01/commands", "operator"),
    ("POST", "/api/v1/logout", "viewer"),
    ("GET", "/api/v1/me", "viewer"),
    ("GET", "/api/v1/tokens", "viewer"),
    ("POST", "/api/v1/tokens", "viewer"),
    ("DELETE", "/api/v1/tokens/1", "viewer"),
    ("GET", "/api/v1/users", "admin"),
    ("POST", "/api/v1/users", "admin"),
    ("PATCH", "/api/v1/users/nobody", "admin"),
    ("DELETE", "/api/v1/users/nobody", "admin"),
    # api_usage.c
    ("GET", "/api/v1/meters/m1/usage", "viewer"),
    ("GET", "/api/v1/meters/m1/kpi", "viewer"),
    ("GET", "/api/v1/meters/m1/series", "viewer"),
    ("GET", "/api/v1/meters/m1/bars", "viewer"),
    ("GET", "/api/v1/readings", "viewer"),
    ("GET", "/api/v1/export", "viewer"),
    # api_registry.c
    ("POST", "/api/v1/meters", "operator"),
    ("GET", "/api/v1/meters/m1", "viewer"),
    ("PATCH", "/api/v1/meters/m1", "operator"),
    ("DELETE", "/api/v1/meters/m1", "operator"),
    ("GET", "/api/v1/registry/options", "viewer"),
    ("GET", "/api/v1/sites", "viewer"),
    ("POST", "/api/v1/sites", "operator"),
    ("GET", "/api/v1/sites/x1", "viewer"),
    ("PATCH", "/api/v1/sites/x1", "operator"),
    ("DELETE", "/api/v1/sites/x1", "operator"),
    # api_stream.c
    ("GET", "/api/v1/stream", "viewer"),
    ("GET", "/metrics", "viewer"),
    # api_admin.c
    ("POST", "/api/v1/admin/backups", "admin"),
    ("GET", "/api/v1/admin/backups", "admin"),
    ("GET", "/api/v1/admin/backups/x1", "admin"),
    ("GET", "/api/v1/admin/maintenance", "admin"),
    ("POST", "/api/v1/admin/maintenance", "admin"),
    # api_alerts.c
    ("GET", "/api/v1/alerts", "viewer"),
    ("GET", "/api/v1/alerts/rules", "viewer"),
    ("GET", "/api/v1/alerts/x1", "viewer"),
    ("POST", "/api/v1/alerts/x1/ack", "operator"),
]
PUBLIC = [("POST", "/api/v1/login"), ("GET", "/healthz")]
SAMPLE = {"meter": "m1", "gateway": "gw-01", "user": "nobody", "token": "1", "id": "x1"}
ROLES = ["viewer", "operator", "admin"]


def source_routes():
    """Every route in the route tables of cloud/api*.c: [(method, path, role)], with the
    path parameters replaced by sample values; role "none" for public ones."""
    out = []
    pat = re.compile(r'\{\s*"(GET|POST|PATCH|DELETE)",\s*"([^"]+)",\s*AUTH_ROLE_([A-Z]+)')
    cloud = os.path.join(SRC, "cloud")
    for name in sorted(os.listdir(cloud)):
        if name.startswith("api") and name.endswith(".c"):
            with open(os.path.join(cloud, name)) as f:
                for m in pat.finditer(f.read()):
                    path = re.sub(r"\{(\w+)\}", lambda g: SAMPLE.get(g.group(1), "x1"),
                                  m.group(2))
                    out.append((m.group(1), path, m.group(3).lower()))
    return out


class Auth(unittest.TestCase):
    def setUp(self):
        self.st = stack.Stack(BUILD)
        self.secrets = []
        self.addCleanup(self.st.finish, self)
        self.addCleanup(self.check_logs)

    def check_logs(self):
        """No password or token of this test in any log (runs before the stack is
        removed, after it is stopped)."""
        self.st.stop()
        used = [s for s in self.secrets + [self.st.admin_password, self.st.token] if s]
        for name in os.listdir(self.st.dir):
            if name.endswith(".log") or name.endswith(".out"):
                with open(self.st.path(name), errors="replace") as f:
                    text = f.read()
                for s in used:
                    self.assertNotIn(s, text, f"a secret in {name}")
                for bad in ("Sanitizer", "runtime error"):
                    self.assertNotIn(bad, text, name)

    def start(self, **auth):
        st = self.st
        st.start_broker()
        cfg = st.cloud_config()
        cfg["auth"].update(auth)
        st.start_cloud(cfg)
        self.secrets.append(st.token)

    def user(self, name, role):
        """A user of that role, logged in: its token."""
        pw = self.st.add_cloud_user(name, role)
        tok = self.st.login_token(name, pw)
        self.secrets += [pw, tok]
        return tok

    def req(self, method, path, body=None, token=stack.ADMIN, headers=None):
        if body is None and method in ("POST", "PATCH"):
            body = {}
        return self.st.request(method, path, body, token=token, headers=headers)

    def assert_error(self, got, status, code, what=""):
        st, body, _ = got
        self.assertEqual(st, status, f"{what}: {body}")
        self.assertIsInstance(body, dict, what)
        self.assertEqual(body.get("error", {}).get("code"), code, f"{what}: {body}")

    # -----------------------------------------------------------------------------
    def test_route_list_matches_sources(self):
        """The list above is every protected route of the sources, with the same roles."""
        src = source_routes()
        self.assertGreaterEqual(len(src), len(PROTECTED) + len(PUBLIC))
        protected = {(m, p): r for m, p, r in src if r != "none"}
        public = {(m, p) for m, p, r in src if r == "none"}
        listed = {(m, p): r for m, p, r in PROTECTED}
        for k, r in listed.items():
            self.assertEqual(protected.get(k), r, f"{k} in the sources")
        for k, r in protected.items():
            self.assertIn(k, listed, f"protected route {k} ({r}) is not in PROTECTED")
        for k in PUBLIC:
            self.assertIn(k, public)

    def test_401_without_a_valid_token(self):
        st = self.st
        self.start()
        # every protected route of the sources too (also those of other files)
        routes = {(m, p) for m, p, _ in PROTECTED}
        routes |= {(m, p) for m, p, r in source_routes() if r != "none"}
        self.assertGreaterEqual(len(routes), len(PROTECTED))
        # a real session token of a user that no longer exists, and a tampered one
        bob = self.user("bob", "viewer")
        self.assertEqual(self.req("DELETE", "/api/v1/users/bob")[0], 200)
        good = st.token
        tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
        bad_tokens = [None, "", "garbage", "s1.1.x", bob, tampered, "mlk_" + "A" * 43,
                      "mlk_short"]
        for method, path in sorted(routes):
            for tok in bad_tokens:
                what = f"{method} {path} token {tok!r:.20}"
                got = self.req(method, path, token=tok)
                self.assert_error(got, 401, "unauthorized", what)
                self.assertEqual(got[2].get("www-authenticate"), "Bearer", what)
            # another scheme, or the token without its scheme
            for h in ("Basic YWRtaW46YWRtaW4=", good, "Bearer"):
                got = self.req(method, path, token=None, headers={"Authorization": h})
                self.assert_error(got, 401, "unauthorized", f"{method} {path} {h:.12}")
        # the public ones need none
        self.assertEqual(st.get("/healthz", token=None)[0], 200)
        self.assert_error(st.login("admin", "not the password"), 401, "unauthorized", "login")
        # the scheme is case-insensitive; the valid token still works everywhere
        self.assertEqual(self.req("GET", "/api/v1/meters", token=None,
                                  headers={"Authorization": "bearer " + good})[0], 200)
        for method, path in sorted(routes):
            # the stream never ends (test_stream_metrics.py reads it)
            if method == "GET" and path != "/api/v1/stream":
                self.assertNotEqual(self.req(method, path)[0], 401, path)

    def test_403_for_weaker_roles(self):
        st = self.st
        self.start()
        pws = {r: st.add_cloud_user(f"u-{r}", r) for r in ROLES}
        self.secrets += list(pws.values())

        def login(role):
            tok = st.login_token(f"u-{role}", pws[role])
            self.secrets.append(tok)
            return tok

        tokens = {r: login(r) for r in ROLES}
        for method, path, need in PROTECTED:
            for role in ROLES:
                # HEAD: the stream's GET never ends (same route, same role check)
                m = "HEAD" if path == "/api/v1/stream" else method
                got = self.req(m, path, token=tokens[role])
                what = f"{role}: {method} {path} (needs {need})"
                if ROLES.index(role) < ROLES.index(need):
                    self.assert_error(got, 403, "forbidden", what)
                    self.assertIn(need, got[1]["error"]["message"], what)
                else:
                    self.assertNotIn(got[0], (401, 403), f"{what}: {got[1]}")
                if path == "/api/v1/logout":
                    tokens[role] = login(role)  # that ended the session
        # viewers read
        self.assertEqual(self.req("GET", "/api/v1/meters", token=tokens["viewer"])[0], 200)

    def test_role_checks_in_detail(self):
        st = self.st
        self.start()
        viewer = self.user("vera", "viewer")
        operator = self.user("otto", "operator")
        # a viewer may not command, manage users, or make tokens above its role or for others
        self.assert_error(self.req("POST", "/api/v1/gateways/gw-01/commands", {"cmd": "ping"},
                                   token=viewer), 403, "forbidden", "viewer command")
        for method, path in (("GET", "/api/v1/users"), ("POST", "/api/v1/users"),
                             ("PATCH", "/api/v1/users/otto"), ("DELETE", "/api/v1/users/otto")):
            self.assert_error(self.req(method, path, token=viewer), 403, "forbidden", path)
            self.assert_error(self.req(method, path, token=operator), 403, "forbidden", path)
        self.assert_error(self.req("POST", "/api/v1/tokens", {"name": "x", "role": "operator"},
                                   token=viewer), 403, "forbidden", "viewer token above role")
        self.assert_error(self.req("POST", "/api/v1/tokens", {"name": "x", "user": "otto"},
                                   token=viewer), 403, "forbidden", "viewer token for otto")
        # an operator passes the role check for commands (the gateway is unknown: 404)
        self.assert_error(self.req("POST", "/api/v1/gateways/gw-01/commands", {"cmd": "ping"},
                                   token=operator), 404, "not_found", "operator command")
        # a demotion counts at once, for sessions and API tokens alike
        tid, otok = st.make_api_token("ops", token=operator)
        self.secrets.append(otok)
        code, body, _ = self.req("PATCH", "/api/v1/users/otto", {"role": "viewer"})
        self.assertEqual((code, body["user"]["role"]), (200, "viewer"), body)
        for tok in (operator, otok):
            self.assert_error(self.req("POST", "/api/v1/gateways/gw-01/commands",
                                       {"cmd": "ping"}, token=tok), 403, "forbidden", "demoted")
            code, body, _ = self.req("GET", "/api/v1/me", token=tok)
            self.assertEqual((code, body["user"]["role"]), (200, "viewer"))
        # the last admin cannot be demoted or deleted
        self.assert_error(self.req("PATCH", "/api/v1/users/admin", {"role": "operator"}), 409,
                          "last_admin", "demote last admin")
        self.assert_error(self.req("DELETE", "/api/v1/users/admin"), 409, "last_admin",
                          "delete last admin")
        code, body, _ = self.req("GET", "/api/v1/users")
        self.assertEqual(code, 200)
        self.assertEqual({u["name"]: u["role"] for u in body["users"]},
                         {"admin": "admin", "otto": "viewer", "vera": "viewer"})
        for u in body["users"]:
            self.assertEqual(set(u), {"name", "role", "created", "updated"}, u)

    def test_login_logout_revocation(self):
        st = self.st
        self.start()
        code, body, _ = st.login("admin", st.admin_password)
        self.assertEqual(code, 200, body)
        self.assertEqual(set(body), {"token", "expires", "user"})
        self.assertEqual(body["user"], {"name": "admin", "role": "admin"})
        self.assertRegex(body["token"], r"^s1\.\d+\.[0-9a-f]{32}\.\d+\.[A-Za-z0-9_-]{43}$")
        self.assertRegex(body["expires"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        t1 = body["token"]
        t2 = st.login_token("admin", st.admin_password)
        self.secrets += [t1, t2]
        self.assertNotEqual(t1, t2)
        code, body, _ = self.req("GET", "/api/v1/me", token=t1)
        self.assertEqual((code, body), (200, {"user": {"name": "admin", "role": "admin"},
                                              "auth": "session"}))
        # logout ends that session only
        self.assertEqual(self.req("POST", "/api/v1/logout", token=t1)[:2], (200, {"ok": True}))
        self.assert_error(self.req("GET", "/api/v1/me", token=t1), 401, "unauthorized", "t1")
        self.assert_error(self.req("POST", "/api/v1/logout", token=t1), 401, "unauthorized", "")
        self.assertEqual(self.req("GET", "/api/v1/me", token=t2)[0], 200)
        # sessions survive a restart of the cloud (the secret and sessions are in the store)
        st.stop_cloud()
        st.start_cloud(st.cloud_config())
        self.secrets.append(st.token)
        self.assertEqual(self.req("GET", "/api/v1/me", token=t2)[0], 200)
        # a new password ends every session of the user; wrong passwords are one answer
        bob = self.user("bob", "operator")
        newpw = secrets.token_urlsafe(16)
        self.secrets.append(newpw)
        self.assertEqual(self.req("PATCH", "/api/v1/users/bob", {"password": newpw})[0], 200)
        self.assert_error(self.req("GET", "/api/v1/me", token=bob), 401, "unauthorized", "bob")
        b1 = st.login("bob", "wrong password!")
        b2 = st.login("nosuchuser", "wrong password!")
        self.assert_error(b1, 401, "unauthorized", "wrong password")
        self.assertEqual(b1[1], b2[1], "unknown user and wrong password answer alike")
        bob2 = st.login_token("bob", newpw)
        self.secrets.append(bob2)
        # deleting a user ends their sessions
        self.assertEqual(self.req("DELETE", "/api/v1/users/bob")[:2], (200, {"deleted": "bob"}))
        self.assert_error(self.req("GET", "/api/v1/me", token=bob2), 401, "unauthorized", "gone")
        self.assert_error(self.req("DELETE", "/api/v1/users/bob"), 404, "not_found", "again")
        self.assert_error(self.req("PATCH", "/api/v1/users/bob", {"role": "viewer"}), 404,
                          "not_found", "patch gone")
        with open(st.path("meter-cloud.log")) as f:
            log = f.read()
        self.assertIn("auth: admin logged in from 127.0.0.1", log)
        self.assertIn("auth: failed login of bob from 127.0.0.1", log)

    def test_expired_session(self):
        st = self.st
        self.start(session_ttl_s=2)
        tok = st.login_token("admin", st.admin_password)
        self.secrets.append(tok)
        t0 = time.time()
        self.assertEqual(self.req("GET", "/api/v1/me", token=tok)[0], 200)
        # the expiry is whole seconds: wait until it has passed for sure
        time.sleep(max(0, t0 + 3.1 - time.time()))
        got = self.req("GET", "/api/v1/me", token=tok)
        self.assert_error(got, 401, "unauthorized", "expired")
        self.assertIn("expired", got[1]["error"]["message"])
        # a fresh login works again
        tok = st.login_token("admin", st.admin_password)
        self.secrets.append(tok)
        self.assertEqual(self.req("GET", "/api/v1/me", token=tok)[0], 200)

    def test_api_tokens(self):
        st = self.st
        self.start()
        code, made, _ = self.req("POST", "/api/v1/tokens", {"name": "ci", "role": "operator"})
        self.assertEqual(code, 201, made)
        self.assertEqual(set(made), {"id", "name", "role", "user", "created", "last_used",
                                     "token"})
        self.assertEqual((made["name"], made["role"], made["user"]), ("ci", "operator", "admin"))
        self.assertRegex(made["token"], r"^mlk_[A-Za-z0-9_-]{43}$")
        tok = made["token"]
        self.secrets.append(tok)
        # shown once: never again in a listing, never stored in plain text
        code, body, _ = self.req("GET", "/api/v1/tokens")
        self.assertEqual(code, 200)
        self.assertEqual([t["id"] for t in body["tokens"]], [made["id"]])
        self.assertNotIn(tok, json.dumps(body))
        self.assertNotIn("token", body["tokens"][0])
        with open(st.path("cloud.db"), "rb") as f:
            self.assertNotIn(tok.encode(), f.read())
        # it works, with its role: an operator reads, may command, may not manage users
        code, body, _ = self.req("GET", "/api/v1/meters", token=tok)
        self.assertEqual(code, 200, body)
        self.assert_error(self.req("GET", "/api/v1/users", token=tok), 403, "forbidden", "op")
        code, body, _ = self.req("GET", "/api/v1/me", token=tok)
        self.assertEqual(body, {"user": {"name": "admin", "role": "operator"}, "auth": "token",
                                "token_id": made["id"]})
        self.assert_error(self.req("POST", "/api/v1/logout", token=tok), 400, "bad_request",
                          "logout with an API token")
        code, body, _ = self.req("GET", "/api/v1/tokens")
        self.assertIsNotNone(body["tokens"][0]["last_used"], "last_used noted")
        # duplicate names are refused; another user's tokens are their own business
        self.assert_error(self.req("POST", "/api/v1/tokens", {"name": "ci"}), 409, "conflict",
                          "duplicate")
        vera = self.user("vera", "viewer")
        vid, vtok = st.make_api_token("mine", token=vera)
        self.secrets.append(vtok)
        code, body, _ = self.req("GET", "/api/v1/tokens", token=vera)
        self.assertEqual([(t["id"], t["role"]) for t in body["tokens"]], [(vid, "viewer")])
        self.assert_error(self.req("DELETE", f"/api/v1/tokens/{made['id']}", token=vera), 404,
                          "not_found", "someone else's token")
        # an admin may make one for another user, not above that user's role
        self.assert_error(self.req("POST", "/api/v1/tokens",
                                   {"name": "x", "user": "vera", "role": "operator"}),
                          400, "bad_request", "above the owner's role")
        code, body, _ = self.req("POST", "/api/v1/tokens", {"name": "for-vera", "user": "vera"})
        self.assertEqual((code, body.get("user"), body.get("role")), (201, "vera", "viewer"))
        self.secrets.append(body["token"])
        code, body, _ = self.req("GET", "/api/v1/tokens")
        self.assertEqual(len(body["tokens"]), 3, "an admin lists every token")
        # deleted: refused at once
        self.assertEqual(self.req("DELETE", f"/api/v1/tokens/{made['id']}")[:2],
                         (200, {"deleted": made["id"]}))
        self.assert_error(self.req("GET", "/api/v1/meters", token=tok), 401, "unauthorized",
                          "deleted token")
        self.assert_error(self.req("DELETE", f"/api/v1/tokens/{made['id']}"), 404, "not_found",
                          "deleted twice")
        for bad in ("0", "abc", "-1", "1" * 19):
            self.assert_error(self.req("DELETE", f"/api/v1/tokens/{bad}"), 400, "bad_parameter",
                              bad)
        # deleting a user deletes their tokens
        self.assertEqual(self.req("DELETE", "/api/v1/users/vera")[0], 200)
        self.assert_error(self.req("GET", "/api/v1/meters", token=vtok), 401, "unauthorized",
                          "token of a deleted user")
        for body in ({}, {"name": ""}, {"name": 5}, {"name": "a\tb"}, {"name": "x" * 65},
                     {"name": "x", "role": "root"}, {"name": "x", "extra": 1}):
            self.assert_error(self.req("POST", "/api/v1/tokens", body), 400, "bad_request",
                              str(body))

    def test_failed_logins_per_user(self):
        st = self.st
        self.start(lockout_s=1, lockout_max_s=4)
        for i in range(5):
            self.assert_error(st.login("admin", f"wrong password {i}"), 401, "unauthorized",
                              f"failure {i + 1}")
        # locked: even the right password is refused until Retry-After has passed
        for pw in ("wrong password 6", st.admin_password):
            got = st.login("admin", pw)
            self.assert_error(got, 429, "too_many_requests", "locked")
            self.assertEqual(got[2].get("retry-after"), "1")
        time.sleep(1.1)
        # one more failure locks it again, for twice as long
        self.assert_error(st.login("admin", "wrong again!"), 401, "unauthorized", "after lock")
        got = st.login("admin", st.admin_password)
        self.assert_error(got, 429, "too_many_requests", "second lock")
        self.assertEqual(got[2].get("retry-after"), "2")
        time.sleep(2.1)
        self.assert_error(st.login("admin", "and again!!"), 401, "unauthorized", "third")
        got = st.login("admin", st.admin_password)
        self.assertEqual(got[2].get("retry-after"), "4")
        time.sleep(4.1)
        self.assert_error(st.login("admin", "wrong, at the cap"), 401, "unauthorized", "cap")
        got = st.login("admin", st.admin_password)
        self.assertEqual(got[2].get("retry-after"), "4", "capped at lockout_max_s")
        time.sleep(4.1)
        code, body, _ = st.login("admin", st.admin_password)
        self.assertEqual(code, 200, body)
        self.secrets.append(body["token"])
        with open(st.path("meter-cloud.log")) as f:
            log = f.read()
        self.assertIn("login of admin from 127.0.0.1 refused: too many failures", log)

    def test_failed_logins_per_address(self):
        st = self.st
        self.start(lockout_s=2, lockout_max_s=4)
        # one failure each for five user names: no name is locked, the address is
        for i in range(5):
            self.assert_error(st.login(f"user{i}", "wrong password!"), 401, "unauthorized",
                              f"user{i}")
        got = st.login("user5", "wrong password!")
        self.assert_error(got, 429, "too_many_requests", "address locked")
        self.assertIn(got[2].get("retry-after"), ("1", "2"))
        got = st.login("admin", st.admin_password)
        self.assert_error(got, 429, "too_many_requests", "address locked for everyone")
        time.sleep(2.1)
        code, body, _ = st.login("admin", st.admin_password)
        self.assertEqual(code, 200, body)
        self.secrets.append(body["token"])
        # the success forgave the user name, not the address: its next failure locks again
        self.assert_error(st.login("user6", "wrong password!"), 401, "unauthorized", "user6")
        got = st.login("admin", st.admin_password)
        self.assert_error(got, 429, "too_many_requests", "address locked again")
        self.assertEqual(got[2].get("retry-after"), "4")

    def test_create_admin(self):
        st = self.st
        st.start_broker()
        cfg = st.cloud_config()
        cfg.pop("mqtt")
        path = st.path("admin-cfg.json")
        with open(path, "w") as f:
            json.dump(cfg, f)

        def create(name, pw, via="stdin"):
            env = {k: v for k, v in os.environ.items() if not k.startswith("MLK_ADMIN")}
            if via == "env":
                env["MLK_ADMIN_PASSWORD"] = pw
            r = subprocess.run([CLOUD, "-f", path, "--create-admin", name], env=env,
                               input=(pw + "\n").encode() if via == "stdin" else b"",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            out = (r.stdout + r.stderr).decode("utf-8", "replace")
            if pw:
                self.assertNotIn(pw, out, "the password was echoed")
            return r.returncode, out

        short = "short-pw-11"  # 11 characters
        for via in ("stdin", "env"):
            code, out = create("root", short, via)
            self.assertEqual(code, 1, out)
            self.assertIn("shorter than 12 characters", out)
        code, out = create("root", "", "stdin")
        self.assertEqual(code, 1, out)
        code, out = create("bad name", "a good long password", "stdin")
        self.assertEqual(code, 1, out)
        self.assertIn("not a user name", out)
        good = secrets.token_urlsafe(15)
        self.secrets += [short, good]
        code, out = create("root", good, "stdin")
        self.assertEqual((code, out.strip()), (0, "admin root created"))
        code, out = create("root", good, "env")
        self.assertEqual(code, 1, out)
        self.assertIn("exists", out)
        env_pw = secrets.token_urlsafe(15)
        self.secrets.append(env_pw)
        code, out = create("root2", env_pw, "env")
        self.assertEqual(code, 0, out)
        # the store is private to its owner
        self.assertEqual(os.stat(st.path("cloud.db")).st_mode & 0o777, 0o600)
        # both can log in; the cloud's own first-admin variables are ignored (users exist)
        st.start_cloud(login=False)
        for name, pw in (("root", good), ("root2", env_pw)):
            code, body, _ = st.login(name, pw)
            self.assertEqual((code, body.get("user")), (200, {"name": name, "role": "admin"}))
            self.secrets.append(body["token"])
        self.assert_error(st.login("admin", st.admin_password), 401, "unauthorized",
                          "MLK_ADMIN_USER with users present")

    def test_first_admin_from_env_must_be_valid(self):
        st = self.st
        st.start_broker()
        cfg = st.cloud_config()
        path = st.path("cloud.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLK_ADMIN")}
        short = "tooshort"
        self.secrets.append(short)
        r = subprocess.run([CLOUD, "-d", "-f", path],
                           env=dict(env, MLK_ADMIN_USER="admin", MLK_ADMIN_PASSWORD=short),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 1, out)
        self.assertIn("MLK_ADMIN_USER admin: password: shorter than 12 characters", out)
        self.assertNotIn(short, out.replace("MLK_ADMIN_USER admin", ""))
        # no user, no variables: it starts, and nobody can log in (no default password)
        st._start("meter-cloud", [CLOUD, "-d", "-f", path], env=env)
        stack.wait_for(lambda: os.path.exists(st.path("http.port")), 30, "meter-cloud")
        with open(st.path("http.port")) as f:
            st.http_port = int(f.read())
        for user, pw in (("admin", "admin"), ("admin", ""), ("root", "root"), ("admin", short)):
            self.assertEqual(st.login(user, pw)[0], 401, user)

    def test_request_bodies(self):
        st = self.st
        self.start()
        login = {"username": "admin", "password": st.admin_password}
        cases = [
            (b"", 400, "bad_request"),
            (b"not json", 400, "bad_request"),
            (b"[]", 400, "bad_request"),
            (b'"text"', 400, "bad_request"),
            (json.dumps(login).encode() + b" {}", 400, "bad_request"),
            (b'{"username":"admin","username":"admin","password":"x"}', 400, "bad_request"),
            (b'{"username":"admin","password":"x","remember":true}', 400, "bad_request"),
            (b'{"username":"admin","password":5}', 400, "bad_request"),
            (b'{"username":"admin"}', 400, "bad_request"),
            (b'{"username":"adm\xffin","password":"x"}', 400, "bad_request"),
            (b'{"username":"admin","password":"' + b"x" * (70 * 1024) + b'"}', 413, "too_large"),
        ]
        for raw, status, code in cases:
            got = st.request("POST", "/api/v1/login", raw, token=None)
            self.assert_error(got, status, code, repr(raw[:40]))
        got = st.request("POST", "/api/v1/login", json.dumps(login).encode(), token=None,
                         headers={"Content-Type": "text/plain"})
        self.assert_error(got, 415, "unsupported_media_type", "text/plain")
        got = st.request("POST", "/api/v1/login", json.dumps(login).encode(), token=None,
                         headers={"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(got[0], 200, got[1])
        self.secrets.append(got[1]["token"])
        # a chunked body larger than the cap, with no Content-Length
        big = b'{"username":"admin","password":"' + b"y" * (80 * 1024) + b'"}'
        with socket.create_connection(("127.0.0.1", st.http_port), timeout=10) as s:
            s.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for i in range(0, len(big), 4096):
                    part = big[i:i + 4096]
                    s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server may close once it has answered
            reply = b""
            try:
                while chunk := s.recv(4096):
                    reply += chunk
            except OSError:
                pass
        self.assertTrue(reply.startswith(b"HTTP/1.1 413"), reply[:80])
        # a GET with a body is refused, and the server is fine afterwards
        got = st.request("GET", "/api/v1/meters", b"{}")
        self.assert_error(got, 400, "bad_request", "GET with a body")
        got = st.request("GET", "/api/v1/meters?x=1")
        self.assert_error(got, 400, "bad_parameter", "GET with a parameter")
        self.assertEqual(st.get("/api/v1/meters")[0], 200)
        self.assert_error(st.request("PUT", "/api/v1/users"), 405, "method_not_allowed", "PUT")
        self.assertEqual(st.request("PUT", "/api/v1/users")[2].get("allow"), "GET, HEAD, POST")
        for body in ({"name": "n1", "role": "viewer"}, {"name": "n1", "password": "x" * 12},
                     {"name": "n1", "role": "god", "password": "x" * 12},
                     {"name": "bad name", "role": "viewer", "password": "x" * 12},
                     {"name": "n1", "role": "viewer", "password": "x" * 11},
                     {"name": "n1", "role": "viewer", "password": "x" * 12, "admin": True}):
            got = self.req("POST", "/api/v1/users", body)
            self.assert_error(got, 400, "bad_request", str(body))
            self.assertNotIn("x" * 11, json.dumps(got[1]), "a password quoted in an error")
        self.assertEqual(self.req("POST", "/api/v1/users",
                                  {"name": "n1", "role": "viewer", "password": "x" * 12})[0],
                         201)
        self.assert_error(self.req("POST", "/api/v1/users",
                                   {"name": "n1", "role": "viewer", "password": "x" * 12}),
                          409, "conflict", "user exists")
        self.assert_error(self.req("PATCH", "/api/v1/users/n1", {}), 400, "bad_request", "empty")
        self.assert_error(self.req("PATCH", "/api/v1/users/bad$name", {"role": "viewer"}), 400,
                          "bad_parameter", "bad user name")


if __name__ == "__main__":
    unittest.main(verbosity=2)
