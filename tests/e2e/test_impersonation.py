"""Finding 1, end to end: a user who intercepts traffic to the auth address and answers with his
`tsh login` certificate, relaying to the real auth server, is refused by a real node process.

Before the fix he received a pinned host's join token and fed a joined node his own user CA.
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from teleport.keys import tlsconfig
from tests.e2e.cluster import Cluster, start_node, stop_process, write_node_config


class Interceptor:
    """Terminate TLS with a stolen certificate, record the plaintext, relay to the real server."""

    def __init__(self, cert: bytes, key: bytes, upstream: tuple[str, int]) -> None:
        self.server_ctx = tlsconfig.ssl_server_context(cert, key, None, require_client_cert=False)
        self.upstream_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.upstream_ctx.check_hostname = False
        self.upstream_ctx.verify_mode = ssl.CERT_NONE
        tlsconfig.load_cert_chain(self.upstream_ctx, cert, key)
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.plaintext = bytearray()
        self.refused = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def close(self) -> None:
        """Stop every thread: none may still block on a socket when the interpreter exits."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self.threads:
            thread.join(5)

    def _thread(self, target: Any, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self.threads.append(thread)
        thread.start()
        return thread

    def _track(self, sock: socket.socket) -> socket.socket:
        with self.lock:
            self.sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._thread(self._serve, self._track(conn))

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            victim = self._track(self.server_ctx.wrap_socket(conn, server_side=True))
        except (ssl.SSLError, OSError):
            with self.lock:
                self.refused += 1  # the victim hung up on our certificate
            conn.close()
            return
        try:
            raw = socket.create_connection(self.upstream, timeout=30)
            up = self._track(self.upstream_ctx.wrap_socket(raw))
        except OSError:
            victim.close()
            return
        with victim, up:
            self._relay(victim, up)

    def _relay(self, victim: ssl.SSLSocket, up: ssl.SSLSocket) -> None:
        """Both directions in this one thread: an SSL socket read in one thread while another
        writes to it could hang a relay now and then (the node's join then timed out)."""
        other = {victim: up, up: victim}
        with selectors.DefaultSelector() as ready:
            for sock in other:
                ready.register(sock, selectors.EVENT_READ)
            try:
                while events := ready.select(timeout=30):
                    for key, _ in events:
                        src = cast(ssl.SSLSocket, key.fileobj)
                        while True:  # and what TLS already decrypted, which select cannot see
                            data = src.recv(65536)
                            if not data:
                                return
                            if src is victim:
                                with self.lock:
                                    self.plaintext += data
                            other[src].sendall(data)
                            if not src.pending():
                                break
            except OSError:
                pass


@pytest.fixture
def interceptor(cluster: Cluster, joe: dict[str, object]) -> Iterator[Interceptor]:
    """An interceptor holding joe's certificate from `tsh login`."""
    home = Path(cluster.env["TELEPORT_HOME"])
    cert = next(home.rglob("joe-x509.pem")).read_bytes()
    key = next(home.rglob("joe.tls.key")).read_bytes()
    spy = Interceptor(cert, key, ("127.0.0.1", cluster.ports["auth"]))
    try:
        yield spy
    finally:
        spy.close()


def _start_node(root: Path, auth_port: int, *flags: str) -> subprocess.Popen[str]:
    root.mkdir(parents=True, exist_ok=True)
    config = write_node_config(root / "teleport.yaml", "victim", root / "data")
    return start_node(config, root / "teleport.log", f"--auth-server=127.0.0.1:{auth_port}",
                      *flags)




def _pin(cluster: Cluster) -> str:
    match = re.search(r"sha256:[0-9a-f]{64}", cluster.tctl("status").stdout)
    assert match, "tctl status shows the CA pin"
    return match.group(0)


def test_pinned_join_through_a_user_certificate_interceptor_is_refused(
        cluster: Cluster, interceptor: Interceptor, tmp_path: Path) -> None:
    proc = _start_node(tmp_path / "node", interceptor.port, "--token=e2e-static-token",
                       f"--ca-pin={_pin(cluster)}")
    try:
        assert proc.wait(60) != 0
    finally:
        stop_process(proc)
    log = (tmp_path / "node" / "teleport.log").read_text()
    # He relayed the public CA (so the pin matched); the node then hung up on his certificate
    # (the message is checked in tests/integration/auth/test_impersonation.py) and he never
    # saw the token.
    assert interceptor.refused >= 1, log
    assert b"e2e-static-token" not in interceptor.plaintext
    assert not (tmp_path / "node" / "data" / "identity").exists()


def test_joined_node_refuses_an_interceptor_on_its_auth_address(
        cluster: Cluster, interceptor: Interceptor, tmp_path: Path) -> None:
    root = tmp_path / "node"
    proc = _start_node(root, cluster.ports["auth"], "--token=e2e-static-token",
                       f"--ca-pin={_pin(cluster)}")
    try:
        deadline = time.monotonic() + 60
        while "victim" not in cluster.tctl("nodes", "ls").stdout:
            assert time.monotonic() < deadline and proc.poll() is None, root.joinpath(
                "teleport.log").read_text()
            time.sleep(0.5)
    finally:
        stop_process(proc)
    # The attacker now owns the route to the auth server (as with ARP or DNS spoofing).
    (root / "data" / "authservers.json").write_text(json.dumps([f"127.0.0.1:{interceptor.port}"]))
    proc = _start_node(root, interceptor.port)
    try:
        deadline = time.monotonic() + 30
        while interceptor.refused < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop_process(proc)
    assert interceptor.refused >= 2, "the node kept calling its auth server"
    assert bytes(interceptor.plaintext) == b"", "not one byte of a request reached him"
