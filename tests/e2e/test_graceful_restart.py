"""HUP: a new daemon takes over the sockets while sessions open before it keep working."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN, NODENAME, Cluster, make_cluster
from tests.e2e.test_interactive import Terminal

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Cluster]:
    cluster = make_cluster(tmp_path)
    cluster.start()
    pid_file = tmp_path / "teleport.pid"
    try:
        yield cluster
    finally:
        cluster.stop()
        if pid_file.exists():
            pid = int(pid_file.read_text())
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
                _wait(lambda: not _alive(pid), 15, "the successor to stop")


def test_hup_hands_over_and_old_sessions_finish(restartable: Cluster) -> None:
    cluster = restartable
    totp = cluster.signup("joe", "root", "restart password")
    cluster.login("joe", "restart password", totp)
    pid_file = cluster.root / "teleport.pid"
    old_pid = int(pid_file.read_text())
    assert cluster.process is not None and cluster.process.pid == old_pid

    env = {**os.environ, **cluster.env, "TERM": "xterm"}
    term = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], env)
    try:
        term.expect("#")
        term.type("echo served-by-$PPID\n")
        term.expect(f"served-by-{old_pid}")

        os.kill(old_pid, signal.SIGHUP)
        _wait(lambda: pid_file.exists() and int(pid_file.read_text() or 0) != old_pid, 30,
              "the successor to write the pid file")
        new_pid = int(pid_file.read_text())
        assert _alive(new_pid)
        _wait(lambda: cluster.tsh("ssh", f"root@{NODENAME}", "echo $PPID", check=False).stdout.strip()
              == str(new_pid), 30, "new connections to reach the successor")

        # The session opened before HUP still runs commands on the old process.
        term.type("echo still-$((40+2))\n")
        term.expect("still-42")
        assert _alive(old_pid), "the old daemon must wait for its sessions"
        term.type("exit\n")
    finally:
        term.close()
    cluster.process.wait(30)
    assert not _alive(old_pid)
    assert int(pid_file.read_text()) == new_pid, "the old daemon leaves the successor's pid file"
    assert cluster.tsh("ssh", f"root@{NODENAME}", "echo", "after").stdout == "after\n"


def test_usr2_starts_a_second_daemon_on_the_same_ports(restartable: Cluster) -> None:
    cluster = restartable
    old_pid = int((cluster.root / "teleport.pid").read_text())
    os.kill(old_pid, signal.SIGUSR2)
    _wait(lambda: int((cluster.root / "teleport.pid").read_text() or 0) != old_pid, 30,
          "the second daemon to start")
    new_pid = int((cluster.root / "teleport.pid").read_text())
    assert _alive(old_pid) and _alive(new_pid)
    assert "Cluster" in cluster.tctl("status").stdout


def test_pid_file_never_goes_missing_across_hup(restartable: Cluster) -> None:
    """systemd's PIDFile= loses the service if the file is missing or names a dead process."""
    pid_file = restartable.root / "teleport.pid"
    old_pid = int(pid_file.read_text())
    os.kill(old_pid, signal.SIGHUP)
    seen: list[str] = []
    missing = 0
    deadline = time.monotonic() + 60
    while _alive(old_pid):
        assert time.monotonic() < deadline, "timed out waiting for the old daemon to exit"
        try:
            seen.append(pid_file.read_text())
        except FileNotFoundError:
            missing += 1
        time.sleep(0.003)
    # The old daemon is gone: by now the file already names its running successor.
    new_pid = int(pid_file.read_text())
    assert new_pid != old_pid and _alive(new_pid)
    for _ in range(100):  # and it stays there while the old one's exit settles
        seen.append(pid_file.read_text())
        time.sleep(0.003)
    assert missing == 0, f"the pid file was missing {missing} times out of {len(seen) + missing}"
    assert set(seen) == {f"{old_pid}\n", f"{new_pid}\n"}, set(seen)
    assert seen[-1] == f"{new_pid}\n"
