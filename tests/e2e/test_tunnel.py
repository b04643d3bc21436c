"""A node behind NAT: it reaches only the proxy's web port, joins through it with a CA pin, and
is reached over its reverse tunnel by `tsh ssh`, stock `ssh -J` and `scp`.

The node runs in a network namespace made by the test (tests/e2e/netns.py) whose only way out
is a veth pair to this host. The cluster listens on 127.0.0.1, which the namespace cannot
reach; the one thing it can reach is a TCP balancer on the veth address in front of the web
port (the proxy's public address). So the auth server and the proxy's SSH port are out of the
node's reach, and the proxy cannot dial the node either: the namespace's node opens no port.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from cryptography import x509

from teleport.service.heartbeat import SERVER_TTL
from teleport.service.tunnels import BACKOFF_CAP
from tests.e2e.balancer import RoundRobin
from tests.e2e.cluster import BIN, CLUSTER, Cluster, make_cluster, wait_started, write_node_config
from tests.e2e.netns import IsolatedHost, isolated_host, start_node_in
from tests.ports import wait_listening

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


#: Where the proxy takes tunnels: on the web port (multiplexed, the default of these tests), or
#: on a port of its own, bound on the veth address the node reaches (Teleport's 3024).
MULTIPLEXED, OWN_PORT = "multiplexed", "own-port"
#: The tests that run both ways; the others run multiplexed only.
both_ways = pytest.mark.parametrize("site", [MULTIPLEXED, OWN_PORT], indirect=True)
multiplexed = pytest.mark.parametrize("site", [MULTIPLEXED], indirect=True)


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    mode = getattr(request, "param", MULTIPLEXED)
    root = tmp_path_factory.mktemp("tunnel")
    with isolated_host() as host, RoundRobin([], host.host_addr) as lb:
        (root / "cluster").mkdir()
        cluster = make_cluster(root / "cluster")
        # The public address is the balancer's; the tunnel is on the web port behind it, or
        # on its own port on the veth address (announced by the proxy's ping).
        tunnel = "127.0.0.1:0" if mode == MULTIPLEXED else f"{host.host_addr}:0"
        cluster.write_config(f"  tunnel_listen_addr: {tunnel}\n  ssh_public_addr: 127.0.0.1:0\n")
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
                assert (cluster.ports["tunnel"] == cluster.ports["web"]) == (mode == MULTIPLEXED)
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


@both_ways
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


@both_ways
def test_tsh_ssh_reaches_the_node_over_its_tunnel(site: Site) -> None:
    wait_for(lambda: "⟵ Tunnel" in _listed(site.cluster), "the node in tctl nodes ls")
    out = site.cluster.tsh("ssh", f"root@{TUNNEL_NODE}", "echo", "behind-nat")
    assert out.stdout == "behind-nat\n"
    status = site.cluster.tsh("ssh", f"root@{TUNNEL_NODE}", "exit", "7", check=False)
    assert status.returncode == 7


# --- stock OpenSSH, scp and port forwarding over the tunnel -------------------------------------

NODE_FQDN = f"{TUNNEL_NODE}.{CLUSTER}"


@pytest.fixture(scope="module")
def ssh_config(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `tsh config` writes, for stock ssh and scp (`-F`)."""
    wait_for(lambda: "⟵ Tunnel" in _listed(site.cluster), "the node in tctl nodes ls")
    path = tmp_path_factory.mktemp("ssh") / "config"
    path.write_text(site.cluster.tsh("config").stdout)
    return path


def _openssh(tool: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, "-F", str(config), "-o", "BatchMode=yes", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@both_ways
def test_stock_ssh_reaches_the_node_with_tsh_config_and_with_J(site: Site, ssh_config: Path) -> None:
    out = _openssh("ssh", ssh_config, f"root@{NODE_FQDN}", "echo", "via-openssh")
    assert (out.returncode, out.stdout) == (0, "via-openssh\n"), out.stderr
    # `ssh -J` proper: a direct-tcpip channel to <node>:3022 through the proxy's SSH port (the
    # jump hop takes its key and known hosts from the proxy's block of the same config).
    jump = re.search(r"-p (\d+) (\S+)@(\S+) -s proxy:", ssh_config.read_text())
    assert jump, ssh_config.read_text()
    port, user, proxy = jump.groups()
    out = _openssh("ssh", ssh_config, "-J", f"{user}@{proxy}:{port}", f"root@{NODE_FQDN}",
                   "echo", "jumped")
    assert (out.returncode, out.stdout) == (0, "jumped\n"), out.stderr


@both_ways
def test_scp_both_ways_with_tsh_config_and_tsh_scp(site: Site, ssh_config: Path,
                                                  tmp_path: Path) -> None:
    # The node shares this machine's file system (only its network is apart).
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(200_000))
    for i, mode in enumerate(([], ["-O"])):  # SFTP (scp's default) and the legacy scp protocol
        up, back = tmp_path / f"up{i}.bin", tmp_path / f"back{i}.bin"
        out = _openssh("scp", ssh_config, *mode, str(source), f"root@{NODE_FQDN}:{up}")
        assert out.returncode == 0, out.stderr
        assert up.read_bytes() == source.read_bytes()
        out = _openssh("scp", ssh_config, *mode, f"root@{NODE_FQDN}:{up}", str(back))
        assert out.returncode == 0, out.stderr
        assert back.read_bytes() == source.read_bytes()
    up, back = tmp_path / "tsh-up.bin", tmp_path / "tsh-back.bin"
    out = site.cluster.tsh("scp", str(source), f"root@{TUNNEL_NODE}:{up}", check=False)
    assert (out.returncode, out.stderr) == (0, "")
    assert up.read_bytes() == source.read_bytes()
    out = site.cluster.tsh("scp", f"root@{TUNNEL_NODE}:{up}", str(back), check=False)
    assert (out.returncode, out.stderr) == (0, "")
    assert back.read_bytes() == source.read_bytes()


@pytest.fixture
def http_server_in_namespace(site: Site, tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    """A python http.server on the namespace's own 127.0.0.1; yield its port and a file's body."""
    body = os.urandom(16).hex().encode()
    (tmp_path / "marker.txt").write_bytes(body)
    proc = site.host.run([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
                          "--directory", str(tmp_path), "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"port (\d+)", proc.stdout.readline())
        assert found, "http.server printed no port"
        yield int(found.group(1)), body
    finally:
        proc.terminate()
        proc.wait(10)


def _get(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/marker.txt", timeout=10) as resp:
        return resp.read()  # type: ignore[no-any-return]


@multiplexed
def test_tsh_L_forwards_to_a_server_inside_the_namespace(
        site: Site, http_server_in_namespace: tuple[int, bytes]) -> None:
    port, body = http_server_in_namespace
    # This host's own 127.0.0.1:port is not that server (it is the namespace's loopback).
    try:
        assert _get(port) != body
    except OSError:
        pass
    proc = subprocess.Popen(
        [str(BIN / "tsh"), "ssh", "-N", "-L", f"0:127.0.0.1:{port}", f"root@{TUNNEL_NODE}"],
        env={**os.environ, **site.cluster.env}, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        local = wait_listening(proc.pid)
        assert _get(local) == body
        assert _get(local) == body  # a second connection over the same session
    finally:
        proc.terminate()
        proc.wait(10)


# --- the node opens no port ---------------------------------------------------------------------

def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the LISTEN TCP sockets process pid holds, from its namespace's tables.

    /proc/<pid>/net/tcp* is the table of pid's network namespace (every socket in it); the
    process's own are those whose inode is among its open file descriptors.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for row in rows:
            fields = row.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = fields[1].rsplit(":", 1)
            raw = bytes.fromhex(addr_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            addr = ".".join(str(b) for b in words) if len(words) == 4 else words.hex()
            found.append((addr, int(port_hex, 16)))
    return sorted(found)


_PEER_CERT = """\
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 10) as raw:
    with ctx.wrap_socket(raw, server_hostname="auth.teleport.cluster.local") as tls:
        sys.stdout.write(tls.getpeercert(binary_form=True).hex())
"""


@multiplexed
def test_the_node_listens_only_on_loopback_for_its_auth_relay(site: Site) -> None:
    """The node in tunnel mode opens no port that anything outside it could dial.

    Its one listening socket is the auth API's loopback relay (teleport.service.tunnels.
    AuthLoopback, 127.0.0.1:0 in the namespace): its own auth client dials it, and each
    connection is spliced to the auth server over the tunnel. ssh_service.listen_addr is unused.
    """
    wait_for(lambda: "⟵ Tunnel" in _listed(site.cluster), "the node in tctl nodes ls")
    listening = _listening(site.node.pid)
    assert [addr for addr, _ in listening] == ["127.0.0.1"], listening
    # That socket is the relay: TLS on it is answered by the auth server, over the tunnel.
    relay = listening[0][1]
    out = subprocess.run(["ip", "netns", "exec", site.host.name, sys.executable, "-c",
                          _PEER_CERT, str(relay)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    cert = x509.load_der_x509_certificate(bytes.fromhex(out.stdout))
    assert CLUSTER in cert.issuer.rfc4514_string()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert any(name.endswith("teleport.cluster.local")
               for name in names.get_values_for_type(x509.DNSName)), names


# --- presence over the tunnel (last: it takes the tunnel down) ----------------------------------

@multiplexed
def test_the_node_goes_offline_when_its_tunnel_drops_and_comes_back(site: Site) -> None:
    """Heartbeats ride the tunnel: cut it and the record expires; restore it and the node returns.

    The balancer stops forwarding and its connections to the web port are killed (`ss -K`), so
    the node's tunnel drops and its dials fail; it has no other way to the cluster.
    """
    wait_for(lambda: "⟵ Tunnel" in _listed(site.cluster), "the node in tctl nodes ls")
    backends = site.lb.backends
    site.lb.backends = []
    try:
        killed = subprocess.run(["ss", "-K", "-t", "dst", "127.0.0.1", "dport", "=",
                                 f":{site.cluster.ports['web']}"],
                                capture_output=True, text=True, timeout=30)
        if killed.returncode != 0 or len(killed.stdout.splitlines()) < 2:
            pytest.skip(f"`ss -K` cannot kill sockets here: {killed.stderr.strip()}")
        cut = time.monotonic()
        wait_for(lambda: not _listed(site.cluster), "the node to drop out of tctl nodes ls",
                 timeout=SERVER_TTL.total_seconds() + 10)
        offline_after = time.monotonic() - cut
        # tctl asks the auth server, tsh the proxy, whose copy drops an expired record
        # within a second of the auth server's expiry sweep.
        wait_for(lambda: "⟵ Tunnel" not in site.cluster.tsh("ls").stdout,
                 "the node to drop out of tsh ls", timeout=5)
        failed = site.cluster.tsh("ssh", f"root@{TUNNEL_NODE}", "true", check=False)
        assert failed.returncode != 0 and "Traceback" not in failed.stderr
    finally:
        site.lb.backends = backends
    # Full-jitter backoff is capped at BACKOFF_CAP; then a heartbeat and the listing's slack.
    wait_for(lambda: "⟵ Tunnel" in _listed(site.cluster), "the node back in tctl nodes ls",
             timeout=BACKOFF_CAP + 25)
    out = site.cluster.tsh("ssh", f"root@{TUNNEL_NODE}", "echo", "back")
    assert out.stdout == "back\n", (offline_after, site.node_log.read_text()[-3000:])
