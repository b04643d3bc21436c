"""Start a real `teleport` process on loopback and drive it with the real CLIs."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp

BIN = Path(sys.executable).parent
CLUSTER = "e2e.test"
NODENAME = "e2e-node"


def free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Cluster:
    root: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "teleport.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def web_addr(self) -> str:
        return f"127.0.0.1:{self.ports['web']}"

    def write_config(self, extra: str = "") -> None:
        p = self.ports
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
  listen_addr: 127.0.0.1:{p['auth']}
  tokens:
  - "node:e2e-static-token"
ssh_service:
  enabled: yes
  listen_addr: 127.0.0.1:{p['node']}
  labels:
    env: e2e
proxy_service:
  enabled: yes
  listen_addr: 127.0.0.1:{p['proxy_ssh']}
  web_listen_addr: 127.0.0.1:{p['web']}
  tunnel_listen_addr: 127.0.0.1:{p['tunnel']}
  public_addr: 127.0.0.1:{p['web']}
{extra}""")

    def start(self) -> None:
        log = open(self.root / "teleport.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [str(BIN / "teleport"), "start", "-c", str(self.config),
             "--pid-file", str(self.root / "teleport.pid")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 60
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
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

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
        req = urllib.request.Request(f"https://{self.web_addr}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return json.loads(resp.read())

    def signup(self, name: str, logins: str, password: str) -> pyotp.TOTP:
        """Add a user with tctl and complete signup through the web endpoint; return its OTP."""
        out = self.tctl("users", "add", name, logins).stdout
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


def make_cluster(root: Path) -> Cluster:
    names = ["auth", "node", "proxy_ssh", "web", "tunnel"]
    cluster = Cluster(root, dict(zip(names, free_ports(len(names)), strict=True)))
    cluster.env = {"TELEPORT_HOME": str(root / "tsh-home"), "HOME": str(root / "home")}
    (root / "home").mkdir()
    cluster.write_config()
    return cluster
