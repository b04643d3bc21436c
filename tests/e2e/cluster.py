"""Start a real `teleport` process on loopback and drive it with the real CLIs."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import yaml

BIN = Path(sys.executable).parent
CLUSTER = "e2e.test"
NODENAME = "e2e-node"


# The daemon prints this line once every service listens (teleport/cli/teleport_cmd.py):
# "Teleport <version> started: cluster '<name>', data_dir <dir>, ports auth=N, node=N, ...".
STARTED = re.compile(r"^Teleport \S+ started: .*, ports (?P<ports>.*)$", re.MULTILINE)
# Where a service's bound port goes in teleport.yaml, to pin it after the first start.
PORT_KEYS = {("auth_service", "listen_addr"): "auth", ("ssh_service", "listen_addr"): "node",
             ("proxy_service", "listen_addr"): "proxy_ssh",
             ("proxy_service", "web_listen_addr"): "web", ("proxy_service", "public_addr"): "web",
             ("proxy_service", "tunnel_listen_addr"): "tunnel",  # the web port when multiplexed
             ("teleport", "diag_addr"): "diag"}


def started_ports(text: str) -> dict[str, int] | None:
    """Return the ports of the last start line in a daemon's output (`web` is the proxy's web).

    Tests start the daemon on port 0 and read the bound ports back: choosing a free port
    beforehand (bind, close, pass it on) races with every other process on the machine.
    """
    found = list(STARTED.finditer(text))
    if not found:
        return None
    ports = {}
    for pair in filter(None, found[-1]["ports"].split(", ")):  # none: a node behind NAT
        name, _, port = pair.partition("=")
        ports["web" if name == "proxy_web" else name] = int(port)
    return ports


def wait_started(log: Path, proc: subprocess.Popen[Any], offset: int = 0,
                 timeout: float = 60) -> dict[str, int]:
    """Wait until the daemon writing log (from byte offset) says it started; return its ports."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""
        ports = started_ports(text)
        if ports is not None:
            return ports
        if proc.poll() is not None:
            raise RuntimeError(f"teleport exited {proc.returncode}:\n{text}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"teleport did not start within {timeout}s:\n{text}")
        time.sleep(0.2)


def pin_ports(config: Path, ports: dict[str, int]) -> None:
    """Write the bound ports over the port-0 addresses of config.

    tctl finds the auth server through the config's listen_addr, and a restarted daemon must come
    back where tsh profiles and joined hosts expect it, so after the first start the ports stay.
    """
    data = yaml.safe_load(config.read_text())
    changed = False
    for (section, key), name in PORT_KEYS.items():
        value = (data.get(section) or {}).get(key)
        if isinstance(value, str) and value.endswith(":0") and name in ports:
            data[section][key] = f"{value[:-2]}:{ports[name]}"
            changed = True
    if changed:
        config.write_text(yaml.safe_dump(data, sort_keys=False))


def stop_process(process: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM,
                 grace: float = 15) -> None:
    """Stop a process the way a supervisor would: sig, then SIGKILL after grace seconds."""
    if process is not None and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Cluster:
    root: Path
    # Filled from the daemon's start line; empty before the first start (every port is 0).
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: More `teleport start` flags (`-d`).
    start_args: list[str] = field(default_factory=list)
    #: The address every service binds and advertises (see make_cluster).
    host: str = "127.0.0.1"
    #: "http" for a proxy started with --insecure-no-tls.
    web_scheme: str = "https"

    @property
    def config(self) -> Path:
        return self.root / "teleport.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def web_addr(self) -> str:
        return f"{self.host}:{self.ports['web']}"

    def write_config(self, extra: str = "") -> None:
        p = {name: self.ports.get(name, 0) for name in ("auth", "node", "proxy_ssh", "web")}
        # Reverse tunnels multiplexed on the web port unless extra says otherwise: a cluster
        # of its own never takes the machine's 3024.
        tunnel = ("" if "tunnel_listen_addr" in extra
                  else f"  tunnel_listen_addr: {self.host}:{p['web']}\n")
        self.config.write_text(f"""\
teleport:
  nodename: {NODENAME}
  data_dir: {self.data_dir}
  log:
    output: stderr
    severity: INFO
auth_service:
  enabled: yes
  cluster_name: {CLUSTER}
  listen_addr: {self.host}:{p['auth']}
  tokens:
  - "node:e2e-static-token"
ssh_service:
  enabled: yes
  listen_addr: {self.host}:{p['node']}
  labels:
    env: e2e
proxy_service:
  enabled: yes
  listen_addr: {self.host}:{p['proxy_ssh']}
  web_listen_addr: {self.host}:{p['web']}
  public_addr: {self.host}:{p['web']}
{tunnel}{extra}""")

    def set_authentication(self, settings: dict[str, Any]) -> None:
        """Set `auth_service.authentication` in the config (before a start or a restart)."""
        data = yaml.safe_load(self.config.read_text())
        data["auth_service"]["authentication"] = settings
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def start(self) -> None:
        """Start the daemon, read back the ports it bound and pin them into the config."""
        path = self.root / "teleport.log"
        offset = path.stat().st_size if path.exists() else 0
        log = open(path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [str(BIN / "teleport"), "start", "-c", str(self.config),
             "--pid-file", str(self.root / "teleport.pid"), *self.start_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.ports = {**self.ports, **wait_started(path, self.process, offset)}
        pin_ports(self.config, self.ports)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("teleport exited:\n" + self.log())
            if self.tctl("status", check=False).returncode == 0 and self._web_up():
                return
            time.sleep(0.3)
        raise RuntimeError("teleport did not become ready:\n" + self.log())

    def _web_up(self) -> bool:
        try:
            self.web("GET", "/webapi/ping")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        path = self.root / "teleport.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, tool: str, args: tuple[str, ...], input: str | None, check: bool,
             timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **self.env, **(env or {})}
        result = subprocess.run([str(BIN / tool), *args], input=input, capture_output=True,
                                text=True, timeout=timeout, env=full_env,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def tctl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run("tctl", ("-c", str(self.config), *args), input, check, 30)

    def tsh(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self._run("tsh", args, input, check, timeout)

    def web(self, method: str, path: str, body: Any = None) -> Any:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.web_scheme}://{self.web_addr}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return json.loads(resp.read())

    def signup(self, name: str, logins: str, password: str, roles: str = "admin") -> pyotp.TOTP:
        """Add a user with tctl and complete signup through the web endpoint; return its OTP.

        The user gets role `admin` unless the test names others (`tctl users add` alone gives
        `access`)."""
        out = self.tctl("users", "add", name, logins, f"--roles={roles}").stdout
        url = next(w for w in out.split() if "/web/newuser/" in w)
        token = url.rsplit("/", 1)[1]
        info = self.web("GET", f"/webapi/users/password/token/{token}")
        totp = pyotp.TOTP(info["otp_secret"])
        self.web("PUT", "/webapi/users/password/token",
                 {"token": token, "password": password, "second_factor_token": totp.now()})
        return totp

    def login(self, user: str, password: str, totp: pyotp.TOTP, *extra: str,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        # Each code is accepted once (signup used the current one): step a window per login.
        logins = getattr(totp, "_logins", 0) + 1
        totp._logins = logins  # type: ignore[attr-defined]
        code = totp.at(time.time() + 30 * logins)
        return self.tsh("login", f"--proxy={self.web_addr}", f"--user={user}", "--insecure",
                        *extra, input=f"{password}\n{code}\n", check=check)

    def audit_events(self) -> list[dict[str, Any]]:
        events = []
        for path in sorted((self.data_dir / "log").glob("*.log")):
            events += [json.loads(line) for line in path.read_text().splitlines() if line]
        return events


def make_cluster(root: Path, host: str = "127.0.0.1") -> Cluster:
    """Return an unstarted all-in-one cluster in root whose config listens on host, port 0.

    host: another local address than loopback, for tests that loopback rules would skew.
    """
    cluster = Cluster(root, host=host)
    cluster.env = {"TELEPORT_HOME": str(root / "tsh-home"), "HOME": str(root / "home")}
    (root / "home").mkdir()
    cluster.write_config()
    return cluster


def write_node_config(path: Path, nodename: str, data_dir: Path, *, teleport_extra: str = "",
                      labels: dict[str, str] | None = None) -> Path:
    """Write a node-only teleport.yaml (SSH on loopback port 0) and return its path.

    teleport_extra: more lines of the `teleport:` section, each indented by two spaces.
    """
    label_lines = "".join(f'    {k}: "{v}"\n' for k, v in (labels or {}).items())
    path.write_text(f"""\
teleport:
  nodename: {nodename}
  data_dir: {data_dir}
{teleport_extra}auth_service:
  enabled: no
proxy_service:
  enabled: no
ssh_service:
  listen_addr: 127.0.0.1:0
""" + (f"  labels:\n{label_lines}" if label_lines else ""))
    return path


def write_proxy_config(path: Path, nodename: str, data_dir: Path, *, auth_port: int,
                       token: str, teleport_extra: str = "", proxy_extra: str = "",
                       public_addr: str = "127.0.0.1:0") -> Path:
    """Write a proxy-only teleport.yaml that joins the auth server on 127.0.0.1:auth_port.

    Every port is 0 on loopback, the tunnel multiplexed on the web port. teleport_extra and
    proxy_extra: more lines of those sections, each indented by two spaces.
    """
    path.write_text(f"""\
teleport:
  nodename: {nodename}
  data_dir: {data_dir}
  auth_token: {token}
  auth_servers: ["127.0.0.1:{auth_port}"]
{teleport_extra}auth_service:
  enabled: no
ssh_service:
  enabled: no
proxy_service:
  listen_addr: 127.0.0.1:0
  web_listen_addr: 127.0.0.1:0
  tunnel_listen_addr: 127.0.0.1:0
  public_addr: {public_addr}
{proxy_extra}""")
    return path


def start_node(config: Path, log: Path, *args: str) -> subprocess.Popen[str]:
    """Start `teleport start -c config` with more arguments, appending its output to log."""
    with open(log, "a") as out:
        return subprocess.Popen([str(BIN / "teleport"), "start", "-c", str(config), *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True)
