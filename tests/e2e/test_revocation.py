"""Deleting a user ends their access within seconds, whatever certificate they still hold.

The real daemon (auth + proxy + node), `tctl users rm`, and `tsh` holding a 12-hour certificate:
the live `tsh ssh` session is cut, and SSH, `tsh ls`, `tsh recordings ls` and `tsh sessions ls`
are refused from then on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import BIN, NODENAME, Cluster, make_cluster
from tests.e2e.test_interactive import Terminal

#: The node and proxy poll the revocation list every 3 s; allow for a slow machine.
CUT_WITHIN = 15.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp("revocation"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_deleted_user_is_cut_off_and_refused(cluster: Cluster) -> None:
    password = "correct horse battery"
    totp = cluster.signup("mallory", "root", password)
    cluster.login("mallory", password, totp)
    assert NODENAME in cluster.tsh("ls").stdout

    env = {**os.environ, **cluster.env, "TERM": "xterm"}
    term = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], env)
    try:
        term.expect("#")
        term.type("echo LIVE-$((40+2))\n")
        term.expect("LIVE-42")
        cluster.tctl("users", "rm", "mallory")
        removed = time.monotonic()
        deadline = removed + CUT_WITHIN
        while term.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert term.proc.poll() is not None, "the live session outlived the user's deletion"
    finally:
        term.close()

    ssh = cluster.tsh("ssh", f"root@{NODENAME}", "echo", "should-not-run", check=False)
    assert ssh.returncode != 0 and "should-not-run" not in ssh.stdout
    for command in (("ls",), ("recordings", "ls"), ("sessions", "ls")):
        result = cluster.tsh(*command, check=False)
        assert result.returncode != 0, f"tsh {' '.join(command)} still works: {result.stdout}"
        assert "revoked" in result.stderr or "no longer exists" in result.stderr, result.stderr

    disconnects = [e for e in cluster.audit_events() if e["event"] == "client.disconnect"]
    assert disconnects and all(e["user"] == "mallory" for e in disconnects)
    assert any("deleted" in e["reason"] for e in disconnects)
