"""A node behind NAT: it reaches only the proxy's web port, joins through it with a CA pin, and
is reached over its reverse tunnel by `tsh ssh`, stock `ssh -J` and `scp`.

The node runs in a network namespace made by the test (tests/e2e/netns.py) whose only way out
is a veth pair to this host. The cluster listens on 127.0.0.1, which the namespace cannot
reach; the one thing it can reach is a TCP balancer on the veth address in front of the web
port (the proxy's public address). So the auth server and the proxy's SSH port are out of the
node's reach, and the proxy cannot dial the node either: the namespace's node opens no port.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest

from tests.e2e.balancer import RoundRobin
from tests.e2e.cluster import Cluster, make_cluster, wait_started, write_node_config
from tests.e2e.netns import IsolatedHost, isolated_host, start_node_in

TUNNEL_NODE = "natted"
PASSWORD = "correct horse battery"


@dataclass
class Site:
    cluster: Cluster
    lb: RoundRobin
    host: IsolatedHost
    node: subprocess.Popen[str]
    node_log: Path
    totp: pyotp.TOTP


def _ca_pin(cluster: Cluster) -> str:
    found = re.search(r"sha256:[0-9a-f]{64}", cluster.tctl("status").stdout)
    assert found, "tctl status shows no CA pin"
    return found.group(0)


def wait_for(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("tunnel")
    with isolated_host() as host, RoundRobin([], host.host_addr) as lb:
        (root / "cluster").mkdir()
        cluster = make_cluster(root / "cluster")
        # The tunnel is multiplexed on the web port; the public address is the balancer's.
        cluster.write_config("  tunnel_listen_addr: 127.0.0.1:0\n  ssh_public_addr: 127.0.0.1:0\n")
        text = cluster.config.read_text().replace(
            "  public_addr: 127.0.0.1:0", f"  public_addr: {host.host_addr}:{lb.port}")
        cluster.config.write_text(text)
        cluster.start()
        try:
            lb.backends = [("127.0.0.1", cluster.ports["web"])]
            out = cluster.tctl("nodes", "add").stdout
            token = re.search(r"The invite token: (\S+)", out).group(1)  # type: ignore[union-attr]
            config = write_node_config(root / "node.yaml", TUNNEL_NODE, root / "node-data",
                                       teleport_extra="  log:\n    severity: DEBUG\n")
            log = root / "node.log"
            node = start_node_in(host, config, log, f"--token={token}",
                                 f"--ca-pin={_ca_pin(cluster)}",
                                 f"--auth-server={host.host_addr}:{lb.port}")
            try:
                wait_started(log, node, timeout=60)
                totp = cluster.signup("nat", "root", PASSWORD)
                cluster.login("nat", PASSWORD, totp)
                yield Site(cluster, lb, host, node, log, totp)
            finally:
                node.terminate()
                node.wait(15)
        finally:
            cluster.stop()


def _listed(cluster: Cluster) -> str:
    return next((line for line in cluster.tctl("nodes", "ls").stdout.splitlines()
                 if TUNNEL_NODE in line), "")


def test_the_node_joins_through_the_web_port_and_is_listed_as_tunnelled(site: Site) -> None:
    try:
        wait_for(lambda: "⟵ Tunnel" in _listed(site.cluster), "the node in tctl nodes ls")
    except AssertionError:
        raise AssertionError(site.cluster.tctl("nodes", "ls").stdout + site.node_log.read_text()
                             + site.cluster.log()[-3000:]) from None
    assert TUNNEL_NODE in site.cluster.tsh("ls").stdout
    # It joined through the proxy: the auth servers it was told of are not where it goes.
    data = site.node_log.parent / "node-data"
    assert (data / "tunnel.json").exists()
    assert "127.0.0.1" not in (data / "authservers.json").read_text()


def test_tsh_ssh_reaches_the_node_over_its_tunnel(site: Site) -> None:
    wait_for(lambda: "⟵ Tunnel" in _listed(site.cluster), "the node in tctl nodes ls")
    out = site.cluster.tsh("ssh", f"root@{TUNNEL_NODE}", "echo", "behind-nat")
    assert out.stdout == "behind-nat\n"
    status = site.cluster.tsh("ssh", f"root@{TUNNEL_NODE}", "exit", "7", check=False)
    assert status.returncode == 7
