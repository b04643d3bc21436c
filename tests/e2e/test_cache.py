"""Auth, proxy and node as three processes: ssh through the proxy survives an auth outage."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.cluster import BIN, CLUSTER, Cluster, pin_ports, stop_process, wait_started
from tests.e2e.test_interactive import Terminal

pytestmark = pytest.mark.slow

TOKEN = "cache-e2e-token"
NODE = "cached-node"


@dataclass
class Daemon:
    name: str
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    # Written before each start: the auth daemon's port is known only once it has started.
    render: Callable[[], str] | None = None
    # Set for daemons others must find: start waits for the bound ports and pins them.
    on_started: Callable[[Daemon], None] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / f"{self.name}.yaml"

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def start(self) -> None:
        if self.render is not None:
            self.config.write_text(self.render())
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "teleport"), "start", "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        if self.on_started is not None:
            self.ports = wait_started(self.log, self.proc, offset)
            pin_ports(self.config, self.ports)
            self.on_started(self)

    def stop(self) -> None:
        stop_process(self.proc)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _eventually(check: Callable[[], bool], what: str, daemons: list[Daemon],
                timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for d in daemons:
            assert d.proc is None or d.proc.poll() is None, f"{d.name} exited:\n{d.output()}"
        assert time.monotonic() < deadline, f"{what} timed out:\n" + "\n".join(
            f"--- {d.name}\n{d.output()}" for d in daemons)
        time.sleep(0.3)


@pytest.fixture
def split(tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, Daemon]]]:
    """Auth, proxy and node each in their own process, joined with a static token."""
    daemons = {name: Daemon(name, tmp_path) for name in ("auth", "proxy", "node")}
    services = {
        "auth": f"""\
auth_service:
  cluster_name: {CLUSTER}
  listen_addr: 127.0.0.1:0
  tokens:
  - "proxy,node:{TOKEN}"
proxy_service:
  enabled: no
ssh_service:
  enabled: no
""",
        "proxy": """\
auth_service:
  enabled: no
proxy_service:
  listen_addr: 127.0.0.1:0
  web_listen_addr: 127.0.0.1:0
  tunnel_listen_addr: 127.0.0.1:0
  public_addr: 127.0.0.1:0
ssh_service:
  enabled: no
""",
        "node": """\
auth_service:
  enabled: no
proxy_service:
  enabled: no
ssh_service:
  listen_addr: 127.0.0.1:0
""",
    }
    tools = Cluster(tmp_path, env={"TELEPORT_HOME": str(tmp_path / "tsh-home"),
                                   "HOME": str(tmp_path / "home")})
    (tmp_path / "home").mkdir()

    def config(name: str) -> str:
        # Proxy and node join the auth daemon where its first start bound (kept on restarts).
        joined = "" if name == "auth" else (
            f"  auth_token: {TOKEN}\n  auth_servers: [\"127.0.0.1:{daemons['auth'].ports['auth']}\"]\n")
        return (f"teleport:\n  nodename: {NODE if name == 'node' else name}\n"
                f"  data_dir: {tmp_path / name}\n  log:\n    severity: INFO\n{joined}{services[name]}")

    def auth_started(auth: Daemon) -> None:
        # tctl runs on the auth host: it reads the auth daemon's config.
        tools.config.write_text(auth.config.read_text())
        tools.ports["auth"] = auth.ports["auth"]

    def proxy_started(proxy: Daemon) -> None:
        tools.ports["web"] = proxy.ports["web"]

    daemons["auth"].config.write_text(config("auth"))
    daemons["auth"].on_started = auth_started
    daemons["proxy"].on_started = proxy_started
    for name in ("proxy", "node"):
        daemons[name].render = lambda name=name: config(name)
    try:
        yield tools, daemons
    finally:
        for daemon in daemons.values():
            daemon.stop()


def test_ssh_through_the_proxy_survives_an_auth_outage(
        split: tuple[Cluster, dict[str, Daemon]]) -> None:
    tools, daemons = split
    auth, everyone = daemons["auth"], list(daemons.values())

    def ssh_says(word: str) -> bool:
        out = tools.tsh("ssh", f"root@{NODE}", "echo", word, check=False, timeout=20)
        return out.returncode == 0 and out.stdout == f"{word}\n"

    auth.start()
    _eventually(lambda: tools.tctl("status", check=False).returncode == 0, "auth start", everyone)
    daemons["proxy"].start()
    _eventually(tools._web_up, "proxy start", everyone)
    daemons["node"].start()
    password = "correct horse battery"
    tools.login("joe", password, tools.signup("joe", "joe,root", password))
    # Once tsh ls lists the node, the proxy's copy holds it: routing needs no auth server.
    _eventually(lambda: NODE in tools.tsh("ls", check=False).stdout, "node listed", everyone)
    assert ssh_says("ok")

    auth.stop()
    assert ssh_says("still"), daemons["proxy"].output()
    assert NODE in tools.tsh("ls").stdout
    _eventually(lambda: "cannot refresh the cache" in daemons["proxy"].output(), "outage noticed",
                [daemons["proxy"], daemons["node"]])
    assert ssh_says("still-after-refresh")

    auth.start()
    _eventually(lambda: tools.tctl("status", check=False).returncode == 0, "auth restart", everyone)
    _eventually(lambda: "auth server is back" in daemons["proxy"].output(), "cache refresh", everyone)
    assert ssh_says("again")
    assert "Traceback" not in daemons["proxy"].output() + daemons["node"].output()


def test_node_restarted_during_an_outage_uploads_its_spooled_recording(
        split: tuple[Cluster, dict[str, Daemon]]) -> None:
    tools, daemons = split
    auth, node, everyone = daemons["auth"], daemons["node"], list(daemons.values())
    auth.start()
    _eventually(lambda: tools.tctl("status", check=False).returncode == 0, "auth start", everyone)
    daemons["proxy"].start()
    _eventually(tools._web_up, "proxy start", everyone)
    node.start()
    password = "correct horse battery"
    tools.login("joe", password, tools.signup("joe", "joe,root", password))
    _eventually(lambda: NODE in tools.tsh("ls", check=False).stdout, "node listed", everyone)

    auth.stop()
    env = {**os.environ, **tools.env, "TERM": "xterm"}
    term = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODE}"], env)
    try:
        term.expect("#")
        term.type("echo spooled-$((6*7))\n")
        term.expect("spooled-42")
        term.type("exit\n")
    finally:
        assert term.close() == 0
    spool = tools.root / "node" / "log" / "upload" / "sessions" / "default"
    _eventually(lambda: any(spool.glob("*.events.gz")), "the recording spooled on the node",
                [daemons["proxy"], node])

    node.stop()  # restarted while the auth server is still down
    node.start()
    time.sleep(2)
    assert node.proc is not None and node.proc.poll() is None, node.output()
    auth.start()
    _eventually(lambda: tools.tctl("status", check=False).returncode == 0, "auth restart", everyone)
    _eventually(lambda: not any(spool.glob("*.events.gz")), "the spool to drain", everyone, timeout=40)
    listed = tools.tsh("recordings", "ls").stdout
    sid = next(line.split()[0] for line in listed.splitlines()[2:] if "joe" in line)
    played = tools.tsh("play", "--format=json", sid).stdout
    assert "spooled-42" in played
