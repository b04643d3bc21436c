"""Self-tests of the harness for nodes behind NAT: the namespace's reach and the TCP balancer.

Seconds in all. The namespace tests skip without root or where `ip netns add` is refused.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.balancer import RoundRobin
from tests.e2e.cluster import make_cluster, wait_started, write_node_config
from tests.e2e.netns import IsolatedHost, isolated_host, start_node_in
from tests.ports import refused_port

pytestmark = pytest.mark.slow

#: Run inside the namespace: connect to argv[1]:argv[2], send a line, print the answer or the
#: error's name (ConnectionRefusedError, OSError errno for "network unreachable"...).
_PROBE = """\
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        s.sendall(b"ping\\n")
        s.shutdown(socket.SHUT_WR)
        print(s.makefile("rb").read().decode(), end="")
except OSError as e:
    print(f"{type(e).__name__} errno={e.errno}", end="")
"""


class EchoServer:
    """A TCP server that answers each connection with its name and what it read, until EOF."""

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.sock = socket.create_server((host, 0))
        self.port: int = self.sock.getsockname()[1]
        self.addr = (host, self.port)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b"".join(iter(lambda: conn.recv(4096), b""))
            conn.sendall(f"{self.name}:".encode() + data)

    def stop(self) -> None:
        # shutdown() wakes the accept() blocked in the thread; close() alone may not.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)


@contextmanager
def echo_servers(*names: str, host: str = "127.0.0.1") -> Iterator[list[EchoServer]]:
    servers = [EchoServer(name, host) for name in names]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def ask(host: str, port: int) -> str:
    """Send one line through host:port and return the whole answer."""
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"ping\n")
        s.shutdown(socket.SHUT_WR)
        return s.makefile("rb").read().decode()


@pytest.fixture
def netns_host() -> Iterator[IsolatedHost]:
    with isolated_host() as host:
        yield host


def probe_from(ns: IsolatedHost, host: str, port: int) -> str:
    proc = ns.run([sys.executable, "-c", _PROBE, host, str(port)], stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return str(out)


def test_namespace_reaches_host_addr_only(netns_host: IsolatedHost) -> None:
    with echo_servers("root-side", host=netns_host.host_addr) as (reachable,), \
            echo_servers("loopback") as (hidden,):
        assert probe_from(netns_host, netns_host.host_addr, reachable.port) == "root-side:ping\n"
        # 127.0.0.1 inside is the namespace's own loopback: nothing listens there.
        assert probe_from(netns_host, "127.0.0.1", hidden.port).startswith(
            "ConnectionRefusedError")
        # No default route: any other address is unreachable at once (ENETUNREACH = 101).
        assert probe_from(netns_host, "203.0.113.1", 443) == "OSError errno=101"
        # The root namespace still reaches both of its servers.
        assert ask(*reachable.addr) == "root-side:ping\n"
        assert ask(*hidden.addr) == "loopback:ping\n"


def test_cleanup_stops_what_ran_inside_and_removes_the_namespace() -> None:
    with isolated_host() as first, isolated_host() as second:
        assert first.name != second.name and first.host_addr != second.host_addr
        sleeper = first.run(["sleep", "60"])
        # `ip netns exec` execs in place: the Popen's pid becomes the command's own.
        comm = Path(f"/proc/{sleeper.pid}/comm")
        deadline = time.monotonic() + 5
        while comm.read_text().strip() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert comm.read_text().strip() == "sleep"
    assert sleeper.returncode is not None
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert first.name not in names.split() and second.name not in names.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert first.host_link not in links and second.host_link not in links


def test_round_robin_alternates_between_backends() -> None:
    with echo_servers("a", "b") as servers, \
            RoundRobin([s.addr for s in servers]) as balancer:
        answers = [ask("127.0.0.1", balancer.port) for _ in range(4)]
    assert answers == ["a:ping\n", "b:ping\n", "a:ping\n", "b:ping\n"]


def test_round_robin_passes_over_a_backend_that_refuses() -> None:
    with echo_servers("a", "b") as (a, b), RoundRobin([a.addr, b.addr]) as balancer:
        assert ask("127.0.0.1", balancer.port) == "a:ping\n"
        b.stop()
        assert [ask("127.0.0.1", balancer.port) for _ in range(3)] == ["a:ping\n"] * 3
    with refused_port() as dead, echo_servers("only") as (only,), \
            RoundRobin([("127.0.0.1", dead), only.addr]) as balancer:
        assert [ask("127.0.0.1", balancer.port) for _ in range(2)] == ["only:ping\n"] * 2
        assert balancer.chosen == [only.addr, only.addr]


def test_round_robin_with_every_backend_down_closes_the_connection() -> None:
    with refused_port() as dead, RoundRobin([("127.0.0.1", dead)]) as balancer, \
            socket.create_connection(("127.0.0.1", balancer.port), timeout=5) as s:
        # Nothing is sent: bytes arriving after the balancer's close would draw a reset (ENOTCONN
        # or ECONNRESET at random) instead of the end of stream this test is about.
        assert s.recv(64) == b""


def test_namespace_reaches_loopback_servers_through_a_balancer_on_host_addr(
        netns_host: IsolatedHost) -> None:
    """The arrangement for proxies: they stay on 127.0.0.1, the node sees only the balancer."""
    with echo_servers("proxy1", "proxy2") as servers, \
            RoundRobin([s.addr for s in servers], netns_host.host_addr) as balancer:
        answers = [probe_from(netns_host, netns_host.host_addr, balancer.port) for _ in range(2)]
        assert answers == ["proxy1:ping\n", "proxy2:ping\n"]
        assert probe_from(netns_host, "127.0.0.1", servers[0].port).startswith(
            "ConnectionRefusedError")


def test_a_node_started_inside_joins_an_auth_server_on_host_addr(
        netns_host: IsolatedHost, tmp_path: Path) -> None:
    """start_node_in runs the real daemon inside; it needs nothing of the root's loopback."""
    (tmp_path / "hub").mkdir()
    hub = make_cluster(tmp_path / "hub", host=netns_host.host_addr)
    hub.start()
    try:
        config = write_node_config(tmp_path / "node.yaml", "inside", tmp_path / "node-data")
        log = tmp_path / "node.log"
        node = start_node_in(netns_host, config, log, "--token=e2e-static-token",
                             f"--auth-server={netns_host.host_addr}:{hub.ports['auth']}")
        wait_started(log, node, timeout=30)
        deadline = time.monotonic() + 20
        while "inside" not in hub.tctl("nodes", "ls").stdout:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
    finally:
        hub.stop()
