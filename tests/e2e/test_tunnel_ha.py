"""Two proxies behind a round-robin balancer, a node behind NAT tunnelled to both.

The node (in a network namespace made by the test, tests/e2e/netns.py) reaches only the
balancer on the veth address; behind it, the web ports of two proxies on 127.0.0.1: the one
of the all-in-one hub and a proxy-only process joined with a token. The node learns both
proxies from the auth server and keeps a tunnel to each. Killing one proxy leaves the node
reachable through the other; a proxy restarted while the balancer cannot send the node to it
forwards users to the node over its peer's tunnel; once the balancer can, the node tunnels to
it again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.balancer import RoundRobin
from tests.e2e.cluster import (
    BIN,
    Cluster,
    make_cluster,
    pin_ports,
    wait_started,
    write_node_config,
    write_proxy_config,
)
from tests.e2e.netns import IsolatedHost, isolated_host, start_node_in

pytestmark = pytest.mark.slow

NODE = "ha-node"
PASSWORD = "correct horse battery"
PROXY_TOKEN = "e2e-proxy-token"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@dataclass
class SecondProxy:
    """The proxy-only process: started, killed and started again on the same ports."""

    root: Path
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] | None = None

    @property
    def config(self) -> Path:
        return self.root / "teleport.yaml"

    @property
    def log(self) -> Path:
        return self.root / "teleport.log"

    def start(self) -> int:
        """Start it; return the log offset its lines start at."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "teleport"), "start", "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.ports = wait_started(self.log, self.proc, offset)
        pin_ports(self.config, self.ports)
        return offset

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(15)

    def text(self, offset: int = 0) -> str:
        return self.log.read_bytes()[offset:].decode(errors="replace")


@dataclass
class HA:
    hub: Cluster
    second: SecondProxy
    via_second: Cluster  # tsh logged in through the second proxy
    lb: RoundRobin
    host: IsolatedHost
    node_uuid: str


def _tunnel_up(text: str, node_uuid: str) -> bool:
    return f"reverse tunnel from node {node_uuid}" in text


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HA]:
    root = tmp_path_factory.mktemp("ha")
    with isolated_host() as host, RoundRobin([], host.host_addr) as lb:
        public = f"{host.host_addr}:{lb.port}"
        (root / "hub").mkdir()
        hub = make_cluster(root / "hub")
        hub.write_config("  ssh_public_addr: 127.0.0.1:0\n")
        text = hub.config.read_text().replace("  public_addr: 127.0.0.1:0",
                                              f"  public_addr: {public}")
        text = text.replace('  - "node:e2e-static-token"',
                            f'  - "node:e2e-static-token"\n  - "proxy:{PROXY_TOKEN}"')
        text = text.replace("ssh_service:\n  enabled: yes", "ssh_service:\n  enabled: no")
        hub.config.write_text(text)
        hub.start()
        second = SecondProxy(root / "second")
        second.root.mkdir()
        write_proxy_config(second.config, "proxy-two", second.root / "data",
                           auth_port=hub.ports["auth"], token=PROXY_TOKEN, public_addr=public,
                           teleport_extra="  log:\n    output: stderr\n    severity: INFO\n",
                           proxy_extra="  ssh_public_addr: 127.0.0.1:0\n")
        node: subprocess.Popen[str] | None = None
        try:
            second.start()
            assert second.ports is not None
            lb.backends = [("127.0.0.1", hub.ports["web"]), ("127.0.0.1", second.ports["web"])]
            pin = re.search(r"sha256:[0-9a-f]{64}", hub.tctl("status").stdout)
            assert pin is not None
            config = write_node_config(root / "node.yaml", NODE, root / "node-data",
                                       teleport_extra="  log:\n    severity: INFO\n")
            node = start_node_in(host, config, root / "node.log", "--token=e2e-static-token",
                                 f"--ca-pin={pin.group(0)}", f"--auth-server={public}")
            wait_started(root / "node.log", node, timeout=60)
            node_uuid = (root / "node-data" / "host_uuid").read_text().strip()
            via_second = Cluster(second.root, {"web": second.ports["web"]})
            via_second.env = {"TELEPORT_HOME": str(second.root / "tsh"),
                              "HOME": str(second.root)}
            totp = hub.signup("ha", "root", PASSWORD)
            hub.login("ha", PASSWORD, totp)
            # A user of its own: each OTP code is accepted once.
            via_second.login("ha2", PASSWORD, hub.signup("ha2", "root", PASSWORD))
            yield HA(hub, second, via_second, lb, host, node_uuid)
        finally:
            if node is not None:
                node.terminate()
                node.wait(15)
            second.kill()
            hub.stop()
            _stop_successor(hub)


def _ssh(cluster: Cluster, word: str) -> str:
    return cluster.tsh("ssh", f"root@{NODE}", "echo", word).stdout


def test_the_node_keeps_a_tunnel_to_every_proxy(ha: HA) -> None:
    wait_for(lambda: _tunnel_up(ha.hub.log(), ha.node_uuid), "a tunnel to the hub's proxy")
    wait_for(lambda: _tunnel_up(ha.second.text(), ha.node_uuid), "a tunnel to the second proxy")
    assert _ssh(ha.hub, "via-hub") == "via-hub\n"
    assert _ssh(ha.via_second, "via-second") == "via-second\n"


def test_one_proxy_down_another_forwards_then_the_node_tunnels_back(ha: HA) -> None:
    wait_for(lambda: _tunnel_up(ha.second.text(), ha.node_uuid), "a tunnel to the second proxy")
    ha.second.kill()
    assert _ssh(ha.hub, "still-there") == "still-there\n"
    # Restarted where the balancer cannot send the node: it has no tunnel from the node,
    # and forwards users over the hub's tunnel (its peer).
    hub_web = ha.hub.ports["web"]
    ha.lb.backends = [("127.0.0.1", hub_web)]
    offset = ha.second.start()
    assert _ssh(ha.via_second, "forwarded") == "forwarded\n"
    assert not _tunnel_up(ha.second.text(offset), ha.node_uuid)
    # Back behind the balancer: the node's pool dials until it has the second proxy again.
    assert ha.second.ports is not None
    ha.lb.backends = [("127.0.0.1", hub_web), ("127.0.0.1", ha.second.ports["web"])]
    wait_for(lambda: _tunnel_up(ha.second.text(offset), ha.node_uuid),
             "the node to tunnel to the restarted proxy", timeout=60)


def test_a_gracefully_restarted_proxy_gets_the_node_back(ha: HA) -> None:
    """HUP: the successor takes new tunnels; the node redials it once the old process exits."""
    pid_file = ha.hub.root / "teleport.pid"
    old_pid = int(pid_file.read_text())
    offset = len(ha.hub.log().encode())
    os.kill(old_pid, signal.SIGHUP)
    wait_for(lambda: int(pid_file.read_text() or 0) != old_pid, "the successor's pid file")
    assert ha.hub.process is not None  # our child: poll() reaps it, kill(pid, 0) would not
    wait_for(lambda: ha.hub.process.poll() is not None, "the old process to exit")  # type: ignore[union-attr]
    wait_for(lambda: _tunnel_up(ha.hub.log().encode()[offset:].decode(errors="replace"),
                                ha.node_uuid), "the node to tunnel to the successor", timeout=60)
    assert _ssh(ha.hub, "after-hup") == "after-hup\n"


def _stop_successor(hub: Cluster) -> None:
    """Stop the process a HUP started (not our child: found by the pid file)."""
    pid = int((hub.root / "teleport.pid").read_text() or 0) if (hub.root / "teleport.pid").exists() else 0
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not _alive(pid), "the successor to stop", timeout=15)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
