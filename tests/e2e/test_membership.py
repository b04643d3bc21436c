"""Cluster membership across processes: join tokens, CA pinning, presence, restarts."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cluster import (
    BIN,
    Cluster,
    make_cluster,
    start_node,
    stop_process,
    wait_started,
    write_node_config,
    write_proxy_config,
)

STATIC_TOKEN = "static-join-token-1"


@dataclass
class Node:
    name: str
    root: Path
    proc: subprocess.Popen[str] | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "teleport.log"

    def start(self, auth_port: int, *flags: str, config_extra: str = "") -> subprocess.Popen[str]:
        config = write_node_config(self.root / "teleport.yaml", self.name, self.data_dir,
                                   teleport_extra=config_extra, labels={"role": self.name})
        self.proc = start_node(config, self.log, f"--auth-server=127.0.0.1:{auth_port}", *flags)
        return self.proc

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Auth and proxy in one process, with a static node token and no local node."""
    cluster = make_cluster(tmp_path_factory.mktemp("hub"))
    text = cluster.config.read_text()
    text = text.replace('  - "node:e2e-static-token"', f'  - "node:{STATIC_TOKEN}"')
    text = text.replace("ssh_service:\n  enabled: yes", "ssh_service:\n  enabled: no")
    cluster.config.write_text(text)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def nodes(hub: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    made: dict[str, Node] = {}
    try:
        yield made
    finally:
        for node in made.values():
            node.stop()


def _node(hub: Cluster, nodes: dict[str, Node], name: str, tmp: Path) -> Node:
    node = Node(name, tmp / name)
    node.root.mkdir(parents=True)
    nodes[name] = node
    return node


def _wait_listed(hub: Cluster, name: str, present: bool, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = hub.tctl("nodes", "ls").stdout
        listed = any(line.split()[:1] == [name] for line in out.splitlines()[2:])
        if listed == present or time.monotonic() > deadline:
            assert listed == present, f"{name} {'not ' if present else ''}in:\n{out}"
            return out
        time.sleep(0.5)


def _invite(hub: Cluster, *args: str) -> tuple[str, str]:
    out = hub.tctl("nodes", "add", *args).stdout
    token = next(w.split("=", 1)[1] for w in out.split() if w.startswith("--token="))
    pin = next(w.split("=", 1)[1] for w in out.split() if w.startswith("--ca-pin="))
    assert f"--auth-server=127.0.0.1:{hub.ports['web']}" in out  # the proxy's public address
    return token, pin


def _refused(node: Node, hub: Cluster) -> str:
    assert node.proc is not None
    code = node.proc.wait(30)
    assert code != 0
    assert not (node.data_dir / "identity").exists(), "a refused join must write no identity"
    return node.output()


def test_dynamic_token_with_pin_joins_and_survives_restart(
        hub: Cluster, nodes: dict[str, Node], tmp_path_factory: pytest.TempPathFactory) -> None:
    token, pin = _invite(hub, "--ttl=5m", "--roles=node")
    assert pin == next(line.split()[-1] for line in hub.tctl("status").stdout.splitlines()
                       if line.startswith("CA pin"))
    listed = hub.tctl("tokens", "ls").stdout
    assert any(line.split()[:2] == [token, "Node"] for line in listed.splitlines())
    node = _node(hub, nodes, "alpha", tmp_path_factory.mktemp("alpha"))
    labels = '--labels=env=prod,kernel=[1m:"uname -r"]'
    node.start(hub.ports["auth"], f"--token={token}", f"--ca-pin={pin}", labels)
    out = _wait_listed(hub, "alpha", True)
    assert "env=prod" in out and "role=alpha" in out
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    deadline = time.monotonic() + 20
    while f"kernel={kernel}" not in out and time.monotonic() < deadline:
        time.sleep(0.5)
        out = hub.tctl("nodes", "ls").stdout
    assert f"kernel={kernel}" in out, out
    assert "WARN" not in node.output()
    for path in [node.data_dir / "identity" / "node.json", node.data_dir / "authservers.json"]:
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    # A restart needs no token: the identity on disk is enough.
    node.stop()
    node.start(hub.ports["auth"], labels)
    _wait_listed(hub, "alpha", True)
    assert node.proc is not None and node.proc.poll() is None


def test_static_token_without_pin_warns(hub: Cluster, nodes: dict[str, Node],
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    node = _node(hub, nodes, "beta", tmp_path_factory.mktemp("beta"))
    node.start(hub.ports["auth"], config_extra=f"  auth_token: {STATIC_TOKEN}\n")
    _wait_listed(hub, "beta", True)
    assert "WARN" in node.output() and "CA pin" in node.output()


def test_users_reach_each_node_by_name(hub: Cluster, nodes: dict[str, Node]) -> None:
    _wait_listed(hub, "alpha", True)
    _wait_listed(hub, "beta", True)
    totp = hub.signup("ops", "root", "ops password")
    hub.login("ops", "ops password", totp)
    for name in ("alpha", "beta"):
        uuid = (nodes[name].data_dir / "host_uuid").read_text().strip()
        out = hub.tsh("ssh", f"root@{name}", "echo $SSH_TELEPORT_HOST_UUID").stdout
        assert out.strip() == uuid
    ls = hub.tsh("ls", "env=prod").stdout
    assert "alpha" in ls and "beta" not in ls
    routed = hub.tsh("ssh", "root@env=prod", "echo routed").stdout
    assert routed == "[alpha] routed\n"
    both = sorted(hub.tsh("ssh", "root@role=alpha", "echo a").stdout.splitlines()
                  + hub.tsh("ssh", "root@role=beta", "echo b").stdout.splitlines())
    assert both == ["[alpha] a", "[beta] b"]


def test_wrong_pin_is_refused_and_nothing_written(hub: Cluster, nodes: dict[str, Node],
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    token, _ = _invite(hub, "--ttl=5m")
    node = _node(hub, nodes, "gamma", tmp_path_factory.mktemp("gamma"))
    node.start(hub.ports["auth"], f"--token={token}", "--ca-pin=sha256:" + "0" * 64)
    assert "does not match the CA pin" in _refused(node, hub)


@pytest.mark.parametrize("case", ["expired", "revoked", "wrong-role", "unknown"])
def test_bad_tokens_are_refused_and_audited(hub: Cluster, nodes: dict[str, Node], case: str,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    if case == "expired":
        token, _ = _invite(hub, "--ttl=1s")
        time.sleep(1.5)
    elif case == "revoked":
        token, _ = _invite(hub, "--ttl=5m")
        assert f"Token {token} has been deleted" in hub.tctl("tokens", "rm", token).stdout
    elif case == "wrong-role":
        token, _ = _invite(hub, "--ttl=5m", "--roles=proxy")
    else:
        token = "no-such-token-value"
    node = _node(hub, nodes, f"bad-{case}", tmp_path_factory.mktemp(case))
    node.start(hub.ports["auth"], f"--token={token}")
    output = _refused(node, hub)
    expected = "does not allow the node role" if case == "wrong-role" else "invalid, expired or revoked"
    assert expected in output and "Traceback" not in output
    events = [e for e in hub.audit_events() if e["event"] == "auth" and e.get("method") == "token"
              and e.get("user", "").startswith(f"bad-{case}")]
    assert events and events[-1]["success"] is False
    assert token not in str(events[-1]), "tokens are never logged in full"


def test_killed_node_leaves_the_list(hub: Cluster, nodes: dict[str, Node]) -> None:
    _wait_listed(hub, "beta", True)
    nodes["beta"].stop(signal.SIGKILL)
    _wait_listed(hub, "beta", False, timeout=30)
    _wait_listed(hub, "alpha", True)



def test_proxy_joins_with_a_token_and_serves_users(
        hub: Cluster, nodes: dict[str, Node], tmp_path_factory: pytest.TempPathFactory) -> None:
    token, pin = _invite(hub, "--ttl=5m", "--roles=proxy")
    root = tmp_path_factory.mktemp("proxy2")
    config = write_proxy_config(root / "teleport.yaml", "proxy-two", root / "data",
                                auth_port=hub.ports["auth"], token=token,
                                teleport_extra=f"  ca_pin: {pin}\n")
    with open(root / "teleport.log", "w") as log:
        proc = subprocess.Popen([str(BIN / "teleport"), "start", "-c", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        bound = wait_started(root / "teleport.log", proc)
        second = Cluster(root, {**hub.ports, "web": bound["web"], "proxy_ssh": bound["proxy_ssh"]})
        second.env = {"TELEPORT_HOME": str(root / "tsh"), "HOME": str(root)}
        assert second._web_up(), (root / "teleport.log").read_text()
        assert second.web("GET", "/webapi/ping")["cluster_name"] == hub.web("GET", "/webapi/ping")["cluster_name"]
        totp = hub.signup("via2", "root", "second proxy pw")
        second.login("via2", "second proxy pw", totp)
        _wait_listed(hub, "alpha", True)
        assert second.tsh("ssh", "root@alpha", "echo via-second-proxy").stdout == "via-second-proxy\n"
    finally:
        proc.terminate()
        proc.wait(15)
