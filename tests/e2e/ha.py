"""Several `teleport` processes of one cluster, each with its own config, log and data dir:
started at once, killed and restarted, waited on (the high-availability and shared-storage
tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.cluster import BIN, CLUSTER, Cluster, pin_ports, stop_process, wait_started

PASSWORD = "correct horse battery"


@dataclass
class Daemon:
    name: str
    root: Path
    render: Callable[[], str]
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    #: Added to the test's environment (a cloud store's endpoint credentials).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / f"{self.name}.yaml"

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    @property
    def data_dir(self) -> Path:
        return self.root / self.name

    def launch(self) -> int:
        """Start the process (the config written on the first start only); return the log
        offset its start line comes after."""
        if not self.config.exists():
            self.config.write_text(self.render())
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "teleport"), "start", "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         env={**os.environ, **self.env})
        return offset

    def wait(self, offset: int) -> None:
        assert self.proc is not None
        self.ports = wait_started(self.log, self.proc, offset)
        pin_ports(self.config, self.ports)  # a restart comes back where the others expect it

    def start(self) -> None:
        self.wait(self.launch())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def learned(self) -> list[str]:
        path = self.data_dir / "authservers.json"
        return json.loads(path.read_text()) if path.exists() else []


@dataclass
class HA:
    daemons: dict[str, Daemon]
    #: tctl on auth host A or B (its config, its admin identity); tsh through the proxy.
    tools: dict[str, Cluster]

    def eventually(self, check: Callable[[], bool], what: str, timeout: float = 30,
                   detail: Callable[[], str] = str) -> float:
        """Wait for check; return how long it took. A daemon that exits fails the test, except
        the ones killed on purpose."""
        started = time.monotonic()
        while not check():
            for d in self.daemons.values():
                if d.proc is not None and d.proc.returncode is None:
                    assert d.proc.poll() is None, f"{d.name} exited:\n{d.output()}"
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{what} timed out: {detail()}\n" + "\n".join(
                    f"--- {d.name}\n{d.output()[-4000:]}" for d in self.daemons.values()))
            time.sleep(0.2)
        return time.monotonic() - started

    def stop_all(self) -> None:
        for daemon in self.daemons.values():
            daemon.stop()

    def start(self, *names: str) -> None:
        """Start daemons at the same time and wait until each has started."""
        offsets = {name: self.daemons[name].launch() for name in names}
        for name, offset in offsets.items():
            self.daemons[name].wait(offset)
            if name in self.tools:  # tctl on that auth host reads its config
                self.tools[name].config.write_text(self.daemons[name].config.read_text())
            if name == "proxy":
                for cluster in self.tools.values():
                    cluster.ports["web"] = self.daemons[name].ports["web"]


def signup(tools: Cluster, name: str, logins: str, roles: str) -> None:
    """Add a user with tctl and set the password through the proxy's signup page (no second
    factor here: logins come faster than one-time codes may)."""
    out = tools.tctl("users", "add", name, logins, f"--roles={roles}").stdout
    token = next(w for w in out.split() if "/web/newuser/" in w).rsplit("/", 1)[1]
    tools.web("PUT", "/webapi/users/password/token", {"token": token, "password": PASSWORD})


def login(tools: Cluster, user: str) -> subprocess.CompletedProcess[str]:
    return tools.tsh("login", f"--proxy={tools.web_addr}", f"--user={user}", "--insecure",
                     input=f"{PASSWORD}\n", check=False)


_PROXY = """\
auth_service:
  enabled: no
ssh_service:
  enabled: no
proxy_service:
  listen_addr: 127.0.0.1:0
  web_listen_addr: 127.0.0.1:0
  tunnel_listen_addr: 127.0.0.1:0
  public_addr: 127.0.0.1:0
"""
_NODE = """\
auth_service:
  enabled: no
proxy_service:
  enabled: no
ssh_service:
  listen_addr: 127.0.0.1:0
"""


def make_ha(root: Path, storage: str, token: str, joins: dict[str, list[str]],
            env: dict[str, str] | None = None) -> HA:
    """Two auth servers `auth-a` and `auth-b` on the store `storage` (the `storage:` lines of
    the teleport section), identical but for their names and data dirs, and the proxies and
    nodes of joins (a name starting with `proxy` is a proxy), each configured with the auth
    servers listed for it. env goes to the auth servers and the tools (a store's credentials);
    tctl runs on either auth host (`tools`), tsh through the proxy."""
    daemons: dict[str, Daemon] = {}

    def auth(name: str) -> str:
        return f"""\
teleport:
  nodename: {name}
  data_dir: {root / name}
  log:
    severity: INFO
{storage}auth_service:
  cluster_name: {CLUSTER}
  listen_addr: 127.0.0.1:0
  tokens:
  - "proxy,node:{token}"
  authentication:
    type: local
    second_factor: "off"
proxy_service:
  enabled: no
ssh_service:
  enabled: no
"""

    def joining(name: str, auth_names: list[str]) -> Callable[[], str]:
        def render() -> str:
            addrs = ", ".join(f'"127.0.0.1:{daemons[a].ports["auth"]}"' for a in auth_names)
            services = _PROXY if name.startswith("proxy") else _NODE
            return (f"teleport:\n  nodename: {name}\n  data_dir: {root / name}\n"
                    f"  log:\n    severity: INFO\n  auth_token: {token}\n"
                    f"  auth_servers: [{addrs}]\n{services}")
        return render

    for name in ("auth-a", "auth-b"):
        daemons[name] = Daemon(name, root, lambda name=name: auth(name), env=dict(env or {}))
    for name, auth_names in joins.items():
        daemons[name] = Daemon(name, root, joining(name, auth_names))
    (root / "home").mkdir()
    tools_env = {"TELEPORT_HOME": str(root / "tsh-home"), "HOME": str(root / "home"),
                 **(env or {})}
    tools = {name: Cluster(root / f"tools-{name}", env=tools_env)
             for name in ("auth-a", "auth-b")}
    for cluster in tools.values():
        cluster.root.mkdir()
    return HA(daemons, tools)
