"""`session_recording: node-sync | proxy-sync`: the recording reaches the auth server while the
session runs (nothing is spooled), and `tsh play` replays it afterwards."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster, make_cluster
from tests.e2e.test_interactive import Terminal


@pytest.fixture(scope="module", params=["node-sync", "proxy-sync"])
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp(request.param))
    c.config.write_text(c.config.read_text().replace(
        f"  cluster_name: {CLUSTER}\n",
        f"  cluster_name: {CLUSTER}\n  session_recording: {request.param}\n", 1))
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _streaming(cluster: Cluster) -> int:
    """Bytes of recordings the auth server is receiving right now (uncommitted uploads)."""
    folder = cluster.data_dir / "log" / "sessions" / "default"
    return sum(p.stat().st_size for p in folder.glob(".*.gz.*.upload"))


def _spooled(cluster: Cluster) -> list[str]:
    return [p.name for p in (cluster.data_dir / "log" / "upload").rglob("*.gz")]


def _listed(cluster: Cluster) -> list[str]:
    lines = cluster.tsh("recordings", "ls").stdout.splitlines()
    return [line.split()[0] for line in lines if line.split() and len(line.split()[0]) == 36]


def test_recording_streams_during_the_session_and_plays(cluster: Cluster,
                                                        joe: dict[str, Any]) -> None:
    env = {**os.environ, **cluster.env, "TERM": "xterm"}
    term = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], env, rows=24, cols=80)
    try:
        term.expect("#")
        term.type("echo live-$((40+2))\n")
        term.expect("live-42")
        deadline = time.monotonic() + 10
        while _streaming(cluster) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        # Mid-session: the auth server has the output already and no host spools anything.
        assert _streaming(cluster) > 0, cluster.log()[-3000:]
        assert _spooled(cluster) == [] and _listed(cluster) == []
        term.type("echo after-$((50+5)); exit\n")
        term.expect("after-55")
    finally:
        assert term.close() == 0
    deadline = time.monotonic() + 30
    while not (sids := _listed(cluster)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len(sids) == 1, cluster.log()[-3000:]
    events = json.loads(cluster.tsh("play", "--format=json", sids[0]).stdout)
    assert events[0]["event"] == "session.start" and events[0]["user"] == "joe"
    assert events[-1]["event"] == "session.end"
    output = "".join(e["data"] for e in events if e["event"] == "print")
    assert output.index("live-42") < output.index("after-55")
    assert "live-42" in cluster.tsh("play", "--speed=20", sids[0]).stdout
    assert _spooled(cluster) == [] and _streaming(cluster) == 0
