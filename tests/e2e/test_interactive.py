"""An interactive `tsh ssh` under a real pseudo-terminal, and `-L` port forwarding."""

from __future__ import annotations

import fcntl
import os
import re
import select
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import BIN, NODENAME, Cluster
from tests.ports import wait_listening


class Terminal:
    """A child process on the slave side of a pty; the test types and reads on the master."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols, fd=slave)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.output = b""

    def resize(self, rows: int, cols: int, fd: int | None = None) -> None:
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ,
                    struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not see {needle!r} in {self.output[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    raise AssertionError(f"terminal closed before {needle!r}: {self.output[-2000:]!r}") from None
        return self.output.decode(errors="replace")

    def close(self) -> int:
        try:
            code = self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.master)
        return code


def open_session(argv: list[str], env: dict[str, str]) -> tuple[Terminal, str]:
    """Start an interactive `tsh ssh` (argv) in a terminal; return it and its session id."""
    term = Terminal(argv, env)
    try:
        term.expect("#")
        term.type("echo SID=$SSH_SESSION_ID; echo sid-$((1+1))\n")
        match = re.search(r"SID=([0-9a-f-]{36})", term.expect("sid-2"))
        assert match, term.output
    except BaseException:
        term.proc.kill()
        term.close()
        raise
    return term, match.group(1)


def session_url(term: Terminal) -> tuple[str, ...]:
    """Run `teleport status` in the session; return its Session URL and the URL's parts.

    (url, cluster, node, login, sid): the URL the web UI opens to join this session.
    """
    term.type(f"{BIN / 'teleport'} status; echo status-$((2+2))\n")
    out = term.expect("status-4")
    match = re.search(r"Session URL\s*: (https://\S+/web/cluster/([^/]+)/node/([^/]+)/([^/]+)/"
                      r"([0-9a-f-]{36}))", out)
    assert match, out
    return match.groups()


def test_interactive_shell_with_resize_and_exit_code(cluster: Cluster, joe: dict[str, Any]) -> None:
    env = {**os.environ, **cluster.env, "TERM": "xterm"}
    term = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], env, rows=24, cols=80)
    try:
        term.expect("#")  # root's prompt: the shell is ready for input
        term.type("stty size; echo SIZE-DONE\n")
        term.expect("24 80")
        term.resize(40, 120)
        time.sleep(0.5)
        term.type("stty size; tty; echo $TERM-term\n")
        term.expect("40 120")
        out = term.expect("xterm-term")
        assert "/dev/pts/" in out
        term.type("exit 3\n")
    finally:
        code = term.close()
    assert code == 3


@pytest.fixture
def echo_server() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_local_port_forwarding(cluster: Cluster, joe: dict[str, Any], echo_server: int) -> None:
    proc = subprocess.Popen(
        [str(BIN / "tsh"), "ssh", "-N", "-L", f"0:127.0.0.1:{echo_server}", f"root@{NODENAME}"],
        env={**os.environ, **cluster.env}, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        local = wait_listening(proc.pid)
        with socket.create_connection(("127.0.0.1", local), 5) as conn:
            conn.sendall(b"ping through the tunnel")
            assert conn.recv(100) == b"ping through the tunnel"
    finally:
        proc.terminate()
        proc.wait(10)
