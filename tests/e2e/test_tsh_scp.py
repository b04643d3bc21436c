"""`tsh scp` with the real CLIs through the proxy: both ways, -r, -p, errors, labels, progress."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import (
    BIN,
    NODENAME,
    Cluster,
    start_node,
    stop_process,
    wait_started,
    write_node_config,
)

SECOND_NODE = "scp-node-2"


def _tsh(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.tsh("scp", *args, check=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_file_goes_up_and_comes_back(cluster: Cluster, joe: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(300_000))
    up = _tsh(cluster, str(source), f"root@{NODENAME}:{tmp_path / 'on-node.bin'}")
    assert (up.returncode, up.stdout, up.stderr) == (0, "", "")  # not a terminal: no progress
    assert (tmp_path / "on-node.bin").read_bytes() == source.read_bytes()

    down = _tsh(cluster, f"root@{NODENAME}:{tmp_path / 'on-node.bin'}", str(tmp_path / "back.bin"))
    assert (down.returncode, down.stderr) == (0, "")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()

    spaced = tmp_path / "a name with spaces.txt"
    assert _tsh(cluster, str(source), f"root@{NODENAME}:{spaced}").returncode == 0
    assert spaced.read_bytes() == source.read_bytes()


def test_a_directory_tree_goes_up_and_comes_back_with_r(cluster: Cluster, joe: dict[str, Any],
                                                        tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "top.txt").write_text("top\n")
    (tree / "a" / "mid.txt").write_text("mid\n")
    (tree / "a" / "b" / "deep.bin").write_bytes(os.urandom(70_000))
    (tree / "empty").mkdir()

    refused = _tsh(cluster, str(tree), f"root@{NODENAME}:{tmp_path / 'no-r'}")
    assert refused.returncode != 0
    assert refused.stderr.splitlines() == [f"ERROR: {tree}: not a regular file (use -r to copy a directory)"]

    assert _tsh(cluster, "-r", str(tree), f"root@{NODENAME}:{tmp_path / 'up'}").returncode == 0
    assert _tree(tmp_path / "up") == _tree(tree)
    assert (tmp_path / "up" / "empty").is_dir()

    down = _tsh(cluster, "-r", f"root@{NODENAME}:{tmp_path / 'up'}", str(tmp_path / "down"))
    assert (down.returncode, down.stderr) == (0, "")
    assert _tree(tmp_path / "down") == _tree(tree)


def test_p_preserves_mode_and_mtime_both_ways(cluster: Cluster, joe: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "kept.sh"
    source.write_text("#!/bin/sh\n")
    source.chmod(0o751)
    os.utime(source, (1_000_000_000, 1_000_000_000))
    for args, copied in [(("-p", str(source), f"root@{NODENAME}:{tmp_path / 'up.sh'}"), tmp_path / "up.sh"),
                         (("-p", f"root@{NODENAME}:{source}", str(tmp_path / "down.sh")), tmp_path / "down.sh")]:
        assert _tsh(cluster, *args).returncode == 0
        assert (copied.stat().st_mode & 0o7777, int(copied.stat().st_mtime)) == (0o751, 1_000_000_000)
    assert _tsh(cluster, str(source), f"root@{NODENAME}:{tmp_path / 'plain.sh'}").returncode == 0
    assert int((tmp_path / "plain.sh").stat().st_mtime) != 1_000_000_000


def test_remote_failures_are_one_error_line_and_a_non_zero_exit(cluster: Cluster, joe: dict[str, Any],
                                                                tmp_path: Path) -> None:
    missing = _tsh(cluster, f"root@{NODENAME}:{tmp_path / 'nope'}", str(tmp_path / "x"))
    assert missing.returncode != 0
    assert missing.stderr.splitlines() == [f"ERROR: {tmp_path / 'nope'}: No such file or directory"]
    assert not (tmp_path / "x").exists()

    source = tmp_path / "f"
    source.write_text("x")
    no_dir = _tsh(cluster, str(source), f"root@{NODENAME}:{tmp_path / 'no' / 'such' / 'dir'}")
    assert no_dir.returncode != 0
    assert len(no_dir.stderr.splitlines()) == 1 and no_dir.stderr.startswith("ERROR: ")

    denied = _tsh(cluster, str(source), f"nobody@{NODENAME}:/tmp/x")
    assert denied.returncode != 0
    assert denied.stderr.splitlines() == [
        f"ERROR: access denied to nobody connecting to {NODENAME}: no role allows login 'nobody' "
        f"on node '{NODENAME}' (roles: admin)"]

    local = _tsh(cluster, str(source), str(tmp_path / "g"))
    assert local.returncode == 2 and local.stderr.startswith("ERROR: one side of the copy must be remote")


class _SecondNode:
    """Another node process, joined with the cluster's static token, labelled like the first."""

    def __init__(self, cluster: Cluster, root: Path) -> None:
        config = write_node_config(root / "teleport.yaml", SECOND_NODE, root / "data",
                                   labels={"env": "e2e", "second": "yes"})
        log = root / "teleport.log"
        self.proc = start_node(config, log, "--token=e2e-static-token",
                               f"--auth-server=127.0.0.1:{cluster.ports['auth']}")
        wait_started(log, self.proc)

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def second_node(cluster: Cluster, joe: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    node = _SecondNode(cluster, tmp_path_factory.mktemp("second-node"))
    try:
        deadline = time.monotonic() + 30
        while SECOND_NODE not in cluster.tsh("ls", "env=e2e").stdout:
            assert time.monotonic() < deadline, "the second node was never listed"
            time.sleep(0.5)
        yield
    finally:
        node.stop()


def test_labels_matching_many_nodes_are_refused_unless_asked_and_one_match_is_copied(
        cluster: Cluster, second_node: None, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_text("to one node\n")
    many = _tsh(cluster, str(source), f"root@env=e2e:{tmp_path / 'many'}")
    assert many.returncode != 0
    assert many.stderr.splitlines() == [
        "ERROR: labels env=e2e match 2 nodes: add --all to upload to every one of them, "
        "or add labels or name the node"]
    assert not (tmp_path / "many").exists()

    down = _tsh(cluster, f"root@env=e2e:{source}", str(tmp_path / "down"))
    assert down.returncode != 0 and "downloads from one node at a time" in down.stderr
    assert not (tmp_path / "down").exists()

    both = _tsh(cluster, "--all", str(source), f"root@env=e2e:{tmp_path / 'both'}")
    assert (both.returncode, both.stderr) == (0, "")
    assert (tmp_path / "both").read_text() == "to one node\n"
    # Both nodes run on this machine: each one's audit event says it received the file.
    uploads = {e["server_id"] for e in cluster.audit_events()
               if e.get("event") == "scp" and e.get("path", "").endswith("/both")}
    assert len(uploads) == 2, uploads

    one = _tsh(cluster, str(source), f"root@second=yes:{tmp_path / 'one'}")
    assert (one.returncode, one.stderr) == (0, "")
    assert (tmp_path / "one").read_text() == "to one node\n"


def _with_terminal_stderr(cluster: Cluster, *args: str) -> tuple[int, bytes]:
    """Run tsh scp with stderr on a pty (stdin and stdout are not terminals); return what it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(BIN / "tsh"), "scp", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env={**os.environ, **cluster.env})
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return proc.wait(60), drawn


def test_a_progress_bar_on_a_terminal_and_none_with_q(cluster: Cluster, joe: dict[str, Any],
                                                      tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2_000_000))
    code, drawn = _with_terminal_stderr(cluster, str(source), f"root@{NODENAME}:{tmp_path / 'up.bin'}")
    assert code == 0
    last = drawn.decode().split("\r")[-2]
    assert last.startswith("big.bin 100% |") and "(1.9/1.9 MB, " in last, drawn
    code, drawn = _with_terminal_stderr(cluster, "-q", str(source), f"root@{NODENAME}:{tmp_path / 'q.bin'}")
    assert (code, drawn) == (0, b"")
    assert (tmp_path / "q.bin").read_bytes() == source.read_bytes()
