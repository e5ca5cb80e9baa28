#!/usr/bin/env python3
"""Starts a whole Meterlink stack on this machine: a private mosquitto broker, meter-sim,
meter-agent and meter-cloud, each in one run folder, on free loopback ports.

Used by `tools/dev demo` and by the integration tests (import it: Stack). Every process
it starts is stopped by Stack.stop(), also when a test fails. Standard library only.

meter-cloud's API needs a token: start_cloud() has meter-cloud create an admin with a
random password (MLK_ADMIN_USER/MLK_ADMIN_PASSWORD) and logs in as it, and get() and
request() send that admin's token unless told otherwise (token=None: no token).
"""
import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
ADMIN = object()  # get()/request(): use the stack's admin token


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout, what, interval=0.05):
    """Polls cond() until it returns a true value; raises TimeoutError naming what."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the condition may fail while a process starts
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                       + (f" (last error: {last_exc})" if last_exc else ""))


def test_failed(tc):
    """Whether unittest test case tc has failed so far (usable in its cleanups)."""
    result = getattr(getattr(tc, "_outcome", None), "result", None)
    if result is None:
        return False
    return any(t is tc for t, _ in list(result.errors) + list(result.failures))


class Proc:
    def __init__(self, name, argv, log_path, stdout=None, env=None):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, stdout=stdout if stdout else self.log,
                                  stderr=self.log, stdin=subprocess.DEVNULL, env=env,
                                  start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""


class Stack:
    """A run folder with broker, simulator, agent and cloud."""

    def __init__(self, build, workdir=None, prefix="meterlink"):
        self.build = os.path.abspath(build)
        self.src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.dir = workdir or tempfile.mkdtemp(prefix="meterlink-")
        os.makedirs(self.dir, exist_ok=True)
        self.prefix = prefix
        self.procs = {}
        self.broker_port = None
        self.http_port = None
        self.tcp_endpoint = None
        self.pty = None
        self.users = {}
        self.served_log = os.path.join(self.dir, "served.jsonl")
        # meter-cloud's first admin; no default password anywhere
        self.admin_user = "admin"
        self.admin_password = secrets.token_urlsafe(18)
        self.token = None  # the admin's session token once the cloud is up
        # cheap password hashes for tests (the default, 100000, costs ~50 ms a login);
        # None leaves meter-cloud's default
        self.pbkdf2_iterations = 1000

    def path(self, name):
        return os.path.join(self.dir, name)

    def _start(self, name, argv, stdout=None, env=None):
        p = Proc(name, argv, self.path(name + ".log"), stdout=stdout, env=env)
        self.procs[name] = p
        return p

    # -- broker -------------------------------------------------------------------
    def add_user(self, user):
        """A broker account with a random password (no default passwords anywhere)."""
        pw = secrets.token_urlsafe(18)
        self.users[user] = pw
        return pw

    def start_broker(self, port=None, gateways=("gw-01",)):
        self.broker_port = port or free_port()
        self.add_user("meter-cloud")
        for gw in gateways:
            self.add_user(gw)
        pwfile = self.path("mosquitto.passwd")
        open(pwfile, "w").close()
        for user, pw in self.users.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", pwfile, user, pw], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(pwfile, 0o600)
        acl = self.path("mosquitto.acl")
        with open(acl, "w") as f:
            # The cloud reads everything and alone may write commands and acks; each
            # gateway writes only below its own id and reads only its cmd and ack.
            f.write(f"user meter-cloud\ntopic readwrite {self.prefix}/#\n\n"
                    f"pattern write {self.prefix}/%u/readings\n"
                    f"pattern write {self.prefix}/%u/status\n"
                    f"pattern write {self.prefix}/%u/health\n"
                    f"pattern write {self.prefix}/%u/loss\n"
                    f"pattern write {self.prefix}/%u/reply\n"
                    f"pattern read {self.prefix}/%u/cmd\n"
                    f"pattern read {self.prefix}/%u/ack\n")
        os.chmod(acl, 0o600)
        conf = self.path("mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {self.broker_port} 127.0.0.1\n"
                    "allow_anonymous false\n"
                    f"password_file {pwfile}\n"
                    f"acl_file {acl}\n"
                    # Run as the invoking user: as root, mosquitto would switch to its
                    # own account, which cannot read this private run folder.
                    + ("user root\n" if os.geteuid() == 0 else "")
                    + "persistence false\n"
                    "log_dest stderr\n"
                    "log_type error\nlog_type warning\nlog_type notice\n"
                    "max_packet_size 8388608\n")
        self._start("mosquitto", [MOSQUITTO, "-c", conf])
        wait_for(lambda: self._port_open(self.broker_port), 30, "mosquitto to listen")

    def stop_broker(self):
        p = self.procs.pop("mosquitto", None)
        if p:
            p.stop()

    def restart_broker(self):
        self.stop_broker()
        conf = self.path("mosquitto.conf")
        self._start("mosquitto", [MOSQUITTO, "-c", conf])
        wait_for(lambda: self._port_open(self.broker_port), 30, "mosquitto to listen")

    @staticmethod
    def _port_open(port):
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0

    # -- simulator ----------------------------------------------------------------
    def start_sim(self, meters, extra=()):
        """meters: list of "tcp:1:sdm630" / "rtu:3:sdm120"."""
        argv = [os.path.join(self.build, "tools", "meter-sim", "meter-sim"),
                "--profiles", os.path.join(self.src, "agent", "profiles"),
                "--served-log", self.served_log]
        if any(m.startswith("tcp:") for m in meters):
            argv += ["--tcp", "127.0.0.1:0"]
        if any(m.startswith("rtu:") for m in meters):
            argv += ["--rtu", "--pty-link", self.path("rtu0")]
        for m in meters:
            argv += ["--meter", m]
        argv += list(extra)
        out_path = self.path("meter-sim.out")
        out = open(out_path, "wb")
        self._start("meter-sim", argv, stdout=out)
        out.close()

        def ready():
            with open(out_path) as f:
                lines = f.read().splitlines()
            if not self.procs["meter-sim"].alive():
                raise RuntimeError("meter-sim exited:\n" + self.procs["meter-sim"].tail())
            if "ready" not in lines:
                return False
            for line in lines:
                if line.startswith("tcp "):
                    self.tcp_endpoint = line.split()[1]
                elif line.startswith("rtu "):
                    self.pty = line.split()[1]
            return True

        wait_for(ready, 30, "meter-sim to be ready")

    # -- cloud --------------------------------------------------------------------
    def cloud_config(self):
        cfg = {
            "mqtt": {"host": "127.0.0.1", "port": self.broker_port, "prefix": self.prefix,
                     "client_id": "meter-cloud", "username": "meter-cloud",
                     "password": self.users["meter-cloud"]},
            "http": {"bind": "127.0.0.1", "port": 0, "port_file": self.path("http.port")},
            "store": {"path": self.path("cloud.db")},
        }
        if self.pbkdf2_iterations:
            cfg["auth"] = {"pbkdf2_iterations": self.pbkdf2_iterations}
        return cfg

    def start_cloud(self, config=None, login=True):
        """Starts meter-cloud (creating the admin on a new store) and, with login, logs in
        as the admin: self.token."""
        cfg = config or self.cloud_config()
        path = self.path("cloud.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        os.chmod(path, 0o600)
        portfile = self.path("http.port")
        if os.path.exists(portfile):
            os.unlink(portfile)
        env = dict(os.environ, MLK_ADMIN_USER=self.admin_user,
                   MLK_ADMIN_PASSWORD=self.admin_password)
        self._start("meter-cloud", [os.path.join(self.build, "cloud", "meter-cloud"),
                                    "-d", "-f", path], env=env)

        def listening():
            if not self.procs["meter-cloud"].alive():
                raise RuntimeError("meter-cloud exited:\n" + self.procs["meter-cloud"].tail())
            with open(portfile) as f:
                self.http_port = int(f.read().strip())
            return self.get("/healthz")[0] == 200

        wait_for(listening, 30, "meter-cloud to answer /healthz")
        if login:
            self.token = self.login_token(self.admin_user, self.admin_password)

    def stop_cloud(self, sig=signal.SIGTERM):
        p = self.procs.pop("meter-cloud", None)
        return p.stop(sig) if p else None

    # -- agent --------------------------------------------------------------------
    def agent_config(self, meters, gw="gw-01", interval_ms=1000):
        """meters: list of (id, "tcp"|"rtu", unit, profile)."""
        buses = []
        if any(m[1] == "tcp" for m in meters):
            host, port = self.tcp_endpoint.rsplit(":", 1)
            buses.append({"name": "tcp0", "type": "tcp", "host": host, "port": int(port),
                          "timeout_ms": 1000})
        if any(m[1] == "rtu" for m in meters):
            buses.append({"name": "rtu0", "type": "rtu", "device": self.path("rtu0"),
                          "baud": 9600, "parity": "N", "data_bits": 8, "stop_bits": 1,
                          "timeout_ms": 1000})
        return {
            "gateway": {"id": gw},
            "mqtt": {"host": "127.0.0.1", "port": self.broker_port, "prefix": self.prefix,
                     "username": gw, "password": self.users[gw], "reconnect_max_s": 2},
            "queue": {"path": self.path(f"queue-{gw}.db")},
            "profiles_dir": os.path.join(self.src, "agent", "profiles"),
            "buses": buses,
            "meters": [{"id": m[0], "bus": m[1] + "0", "unit": m[2], "profile": m[3],
                        "interval_ms": interval_ms} for m in meters],
        }

    def start_agent(self, config, name="meter-agent", verbose=False):
        path = self.path(name + ".json")
        with open(path, "w") as f:
            json.dump(config, f, indent=2)
        os.chmod(path, 0o600)
        argv = [os.path.join(self.build, "agent", "meter-agent"), "-d", "-f", path]
        if verbose:
            argv.append("-v")
        return self._start(name, argv)

    def stop_proc(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        return p.stop(sig) if p else None

    # -- HTTP ---------------------------------------------------------------------
    def get(self, path, token=ADMIN):
        """GET path; returns (status, JSON body). token: ADMIN (the stack's admin), None
        (no Authorization header) or a token."""
        code, body, _ = self.request("GET", path, token=token)
        return code, body

    def request(self, method, path, body=None, token=ADMIN, headers=None, timeout=30):
        """One HTTP request; body: a JSON-able value, or bytes sent as they are. Returns
        (status, JSON body or text, {header: value} with lowercase names)."""
        if token is ADMIN:
            token = self.token
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                     method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw, code, hdrs = r.read(), r.status, r.headers
        except urllib.error.HTTPError as e:
            raw, code, hdrs = e.read(), e.code, e.headers
        hdrs = {k.lower(): v for k, v in hdrs.items()}
        try:
            return code, json.loads(raw or b"null"), hdrs
        except ValueError:
            return code, raw.decode("utf-8", "replace"), hdrs

    def login(self, user, password):
        """POST /api/v1/login; returns (status, body, headers)."""
        return self.request("POST", "/api/v1/login", {"username": user, "password": password},
                            token=None)

    def login_token(self, user, password):
        code, body, _ = self.login(user, password)
        if code != 200:
            raise RuntimeError(f"login as {user} failed: {code} {body}")
        return body["token"]

    def add_cloud_user(self, name, role, password=None):
        """Creates a meter-cloud user (as the admin); returns its password."""
        password = password or secrets.token_urlsafe(18)
        code, body, _ = self.request("POST", "/api/v1/users",
                                     {"name": name, "role": role, "password": password})
        if code != 201:
            raise RuntimeError(f"creating user {name} failed: {code} {body}")
        return password

    def make_api_token(self, name, role=None, token=ADMIN):
        """Creates an API token (as the owner of token); returns (id, secret)."""
        body = {"name": name}
        if role:
            body["role"] = role
        code, body, _ = self.request("POST", "/api/v1/tokens", body, token=token)
        if code != 201:
            raise RuntimeError(f"creating token {name} failed: {code} {body}")
        return body["id"], body["token"]

    # -- teardown -----------------------------------------------------------------
    def stop(self):
        """Stops every process in reverse start order; returns {name: returncode}."""
        codes = {}
        for name in reversed(list(self.procs)):
            codes[name] = self.procs[name].stop()
        self.procs.clear()
        return codes

    def remove(self):
        """Deletes the run folder (call after stop(), when the test passed)."""
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)

    def finish(self, tc):
        """Stops everything; prints the logs if test case tc failed, else removes the run
        folder. For addCleanup()."""
        self.stop()
        if test_failed(tc):
            print(self.logs(40), file=sys.stderr)
        else:
            self.remove()

    def logs(self, n=30):
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".log"):
                with open(self.path(name), "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
                out.append(f"--- {name} (last {len(lines)} lines) ---\n" + "\n".join(lines))
        return "\n".join(out)


DEMO_METERS = [("house", "tcp", 1, "sdm630"), ("garage", "tcp", 2, "sdm120"),
               ("flat-1", "rtu", 1, "sdm630"), ("flat-2", "rtu", 2, "sdm120")]


def demo(args):
    workdir = os.path.abspath(args.dir)
    os.makedirs(workdir, exist_ok=True)
    st = Stack(args.build, workdir=workdir)
    st.pbkdf2_iterations = None  # meter-cloud's default: a real password hash
    # The run folder (and its store) outlives a demo: so does the admin's random password.
    pwfile = st.path("admin.password")
    if os.path.exists(pwfile):
        with open(pwfile) as f:
            st.admin_password = f.read().strip()
    else:
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(st.admin_password + "\n")
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        st.start_broker()
        st.start_sim([f"{m[1]}:{m[2]}:{m[3]}" for m in DEMO_METERS])
        st.start_cloud()
        st.start_agent(st.agent_config(DEMO_METERS, interval_ms=2000))
        wait_for(lambda: len(st.get("/api/v1/meters")[1]["meters"]) == len(DEMO_METERS), 20,
                 "readings of every demo meter")
        base = f"http://127.0.0.1:{st.http_port}"
        print(f"""
Meterlink demo is running (run folder {workdir}):
  dashboard:  {base}/
  API:        {base}/api/v1/meters
  readings:   {base}/api/v1/meters/house/readings?limit=5
  health:     {base}/healthz
  login:      user {st.admin_user}, password {st.admin_password} (also in {pwfile})
  token:      {st.token}
              (curl -H "Authorization: Bearer <token>" {base}/api/v1/meters; docs/api.md)
  broker:     127.0.0.1:{st.broker_port} (accounts in {st.path('mosquitto.passwd')})
  meters:     {', '.join(m[0] for m in DEMO_METERS)} (meter-sim: TCP {st.tcp_endpoint}, RTU {st.pty})
Press Ctrl-C to stop everything.""", flush=True)
        while not stop:
            for name, p in st.procs.items():
                if not p.alive():
                    print(f"{name} exited unexpectedly:\n{p.tail()}", file=sys.stderr)
                    stop.append(1)
                    break
            time.sleep(0.2)
    except Exception as e:
        print(f"demo failed: {e}\n{st.logs()}", file=sys.stderr)
        return 1
    finally:
        st.stop()
        print("stopped.", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the demo stack until Ctrl-C")
    d.add_argument("--build", required=True)
    d.add_argument("--dir", default=os.path.join(os.getcwd(), "run", "demo"))
    args = ap.parse_args()
    if args.cmd == "demo":
        return demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
