"""Where the proxy records (`session_recording: proxy`) it terminates SSH, and `-R` and `-A` are
not relayed yet: both are refused with a message in the session and a `port` audit event."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster, make_cluster

PROXY_RECORDS = "is not available while sessions are recorded at the proxy"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp("forwarding-proxy-recording"))
    text = c.config.read_text().replace(
        f"  cluster_name: {CLUSTER}\n", f"  cluster_name: {CLUSTER}\n  session_recording: proxy\n", 1)
    c.config.write_text(text)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_remote_and_agent_forwarding_refused_with_reason(cluster: Cluster, joe: dict[str, Any],
                                                        tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(cluster.tsh("config").stdout)
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(tmp_path / "agent.sock")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _refused(cluster, config, {**os.environ, **cluster.env,
                                   "SSH_AUTH_SOCK": str(tmp_path / "agent.sock")})
    finally:
        agent.terminate()
        agent.wait(10)


def _refused(cluster: Cluster, config: Path, env: dict[str, str]) -> None:
    deadline = time.monotonic() + 10
    while not Path(env["SSH_AUTH_SOCK"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    out = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "-A",
                          "-R", "0:127.0.0.1:9", f"root@{NODENAME}.{CLUSTER}", "echo ran"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ran\n"
    assert f"agent forwarding {PROXY_RECORDS}" in out.stderr
    out = subprocess.run([str(BIN / "tsh"), "ssh", "-A", f"root@{NODENAME}", "echo ran"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                         env=env)
    assert out.stdout == "ran\n" and f"agent forwarding {PROXY_RECORDS}" in out.stderr
    out = cluster.tsh("ssh", "-R", "0:127.0.0.1:9", f"root@{NODENAME}", "echo ran", check=False)
    assert out.returncode != 0 and "the node refused -R localhost:0" in out.stderr
    events = [e for e in cluster.audit_events() if e["event"] == "port"]
    assert {e["error"] for e in events} >= {f"agent forwarding {PROXY_RECORDS}",
                                            f"remote port forwarding {PROXY_RECORDS}"}
    assert all(e["success"] is False and e["user"] == "joe" for e in events)
