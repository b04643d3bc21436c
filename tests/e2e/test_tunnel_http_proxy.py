"""A node behind NAT whose only way out is an HTTP CONNECT proxy: a real tinyproxy, `HTTPS_PROXY`.

The node runs in a network namespace (tests/e2e/netns.py) that reaches this host at the veth
address only. The cluster listens on an address of this test's own on the root's `lo` (not
loopback, see test_http_proxy.lo_address), to which the namespace has no route: direct dials
are refused (checked). tinyproxy listens on the veth address and reaches the cluster; the node
is told `HTTPS_PROXY=http://<veth address>:<tinyproxy>` and `--auth-server=<lo address>:<web>`
with a CA pin, so its join, its pings and its reverse tunnel (multiplexed on the web port) all
go through tinyproxy; the auth API calls ride the tunnel. tinyproxy's own log proves it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cluster import BIN, Cluster, make_cluster, wait_started, write_node_config
from tests.e2e.netns import IsolatedHost, isolated_host
from tests.e2e.test_http_proxy import Tinyproxy, lo_address, tinyproxy  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tinyproxy") is None,
                                reason="needs Debian's tinyproxy (scripts/test installs it)")]

NODE = "proxied"
PASSWORD = "correct horse battery"

#: The machine's own proxy settings must not reach the node; the test sets its own.
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


def _node_env(proxy_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    return {**env, "HTTPS_PROXY": proxy_url}


@dataclass
class Site:
    cluster: Cluster
    host: IsolatedHost
    proxy: Tinyproxy
    root: Path
    pin: str


@pytest.fixture(scope="module")
def site(lo_address: str,  # noqa: F811 - the imported fixture
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The cluster on lo_address, a namespace, and tinyproxy on the veth allowing the web port."""
    root = tmp_path_factory.mktemp("tunnel-http-proxy")
    (root / "cluster").mkdir()
    with isolated_host() as host:
        cluster = make_cluster(root / "cluster", host=lo_address)  # tunnel on the web port
        cluster.start()
        try:
            pin = re.search(r"sha256:[0-9a-f]{64}", cluster.tctl("status").stdout)
            assert pin, "tctl status shows no CA pin"
            with tinyproxy(root / "tinyproxy", [cluster.ports["web"]],
                           host=host.host_addr) as proxy:
                yield Site(cluster, host, proxy, root, pin.group(0))
        finally:
            cluster.stop()


def _start_node(site: Site, name: str, proxy_url: str,
                debug: bool = False) -> tuple[subprocess.Popen[str], Path]:
    out = site.cluster.tctl("nodes", "add").stdout
    token = re.search(r"The invite token: (\S+)", out)
    assert token, out
    config = write_node_config(site.root / f"{name}.yaml", name, site.root / f"{name}-data",
                               teleport_extra="  log:\n    severity: DEBUG\n" if debug else "")
    log = site.root / f"{name}.log"
    # As netns.start_node_in, with the environment naming the HTTP proxy.
    with open(log, "a") as out:
        node = site.host.run([str(BIN / "teleport"), "start", "-c", str(config),
                              f"--token={token.group(1)}", f"--ca-pin={site.pin}",
                              f"--auth-server={site.cluster.web_addr}"],
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             text=True, env=_node_env(proxy_url))
    return node, log


@pytest.fixture(scope="module")
def node(site: Site) -> Iterator[Path]:
    """The node, started behind tinyproxy; yield its log."""
    proc, log = _start_node(site, NODE, site.proxy.url(), debug=True)
    try:
        wait_started(log, proc, timeout=60)
        yield log
    finally:
        proc.terminate()
        proc.wait(15)


def _listed(cluster: Cluster) -> str:
    return next((line for line in cluster.tctl("nodes", "ls").stdout.splitlines()
                 if NODE in line), "")


def _wait_listed(cluster: Cluster, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while "⟵ Tunnel" not in _listed(cluster):
        if time.monotonic() > deadline:
            raise AssertionError(cluster.tctl("nodes", "ls").stdout + log.read_text())
        time.sleep(0.3)


_DIAL = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)"


def test_the_namespace_has_no_direct_route_to_the_cluster(site: Site) -> None:
    dial = subprocess.run(["ip", "netns", "exec", site.host.name, sys.executable, "-c", _DIAL,
                           site.cluster.host, str(site.cluster.ports["web"])],
                          capture_output=True, text=True, timeout=30)
    assert dial.returncode != 0 and "unreachable" in dial.stderr, dial.stderr


def test_the_node_joins_and_tunnels_through_tinyproxy(site: Site, node: Path) -> None:
    _wait_listed(site.cluster, node)
    web = f"{site.cluster.host}:{site.cluster.ports['web']}"
    connects = site.proxy.connects()
    # Join, ping and tunnel: every one a CONNECT to the web port (the auth API rides the tunnel).
    assert len(connects) >= 2 and set(connects) == {web}, connects
    assert (site.root / f"{NODE}-data" / "tunnel.json").exists()
    password_user = site.cluster.signup("pia", "root", PASSWORD)
    site.cluster.login("pia", PASSWORD, password_user)
    out = site.cluster.tsh("ssh", f"root@{NODE}", "echo", "through-tinyproxy")
    assert out.stdout == "through-tinyproxy\n"


@pytest.mark.parametrize(("name", "ports", "basic_auth", "answer"), [
    ("refused", [1], "", "403 Access violation"),  # the web port is not allowed
    ("no-credentials", None, "alice s3cret", "407"),  # credentials wanted, none given
])
def test_a_proxy_that_refuses_connect_fails_the_start_with_one_clear_line(
        site: Site, name: str, ports: list[int] | None, basic_auth: str, answer: str) -> None:
    web = f"{site.cluster.host}:{site.cluster.ports['web']}"
    with tinyproxy(site.root / name, ports or [site.cluster.ports["web"]], basic_auth=basic_auth,
                   host=site.host.host_addr) as refusing:
        proc, log = _start_node(site, name, refusing.url())
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(15)
            raise AssertionError("the node kept running:\n" + log.read_text()) from None
        text = log.read_text()
        assert proc.returncode != 0, text
        # All it prints: one line naming the proxy, the target and the proxy's answer.
        lines = text.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ERROR: "), text
        assert f"HTTP proxy {refusing.url()} refused CONNECT {web}" in lines[0], text
        assert answer in lines[0], text
        assert refusing.connects() == [web]
        assert not (site.root / f"{name}-data" / "tunnel.json").exists()


def test_a_joined_node_behind_a_refusing_proxy_says_why_its_tunnel_fails(site: Site) -> None:
    """After the join, the tunnel's dials retry; each warning names the proxy and its answer."""
    proc, log = _start_node(site, "rejoined", site.proxy.url(), debug=True)
    try:
        wait_started(log, proc, timeout=60)
    finally:
        proc.terminate()
        proc.wait(15)
    offset = log.stat().st_size
    web = f"{site.cluster.host}:{site.cluster.ports['web']}"
    with tinyproxy(site.root / "refusing-later", [1], host=site.host.host_addr) as refusing:
        with open(log, "a") as out:  # joined: no token this time
            proc = site.host.run([str(BIN / "teleport"), "start", "-c",
                                  str(site.root / "rejoined.yaml"), f"--auth-server={web}"],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 text=True, env=_node_env(refusing.url()))
        try:
            deadline = time.monotonic() + 30
            while not (warned := [line for line in log.read_text()[offset:].splitlines()
                                  if "cannot open a reverse tunnel" in line]):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(15)
    assert f"HTTP proxy {refusing.url()} refused CONNECT {web}" in warned[0], warned
    assert "403 Access violation" in warned[0], warned
