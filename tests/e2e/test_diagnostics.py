"""`--diag-addr`: /healthz, /readyz that follows the auth server, and Prometheus /metrics."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import (
    Cluster,
    make_cluster,
    start_node,
    wait_started,
    write_node_config,
)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _wait_ready(port: int, ready: bool, timeout: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = _get(port, "/readyz")
        except urllib.error.URLError:  # not listening yet
            status, body = 0, "{}"
        if (status == 200) == ready or time.monotonic() > deadline:
            assert (status == 200) == ready, body
            return dict(json.loads(body))
        time.sleep(0.5)


@pytest.fixture(scope="module")
def diag_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, int]]:
    cluster = make_cluster(tmp_path_factory.mktemp("diag"))
    text = cluster.config.read_text()
    cluster.config.write_text(text.replace("teleport:\n", "teleport:\n  diag_addr: 127.0.0.1:0\n", 1))
    cluster.start()
    port = cluster.ports["diag"]
    try:
        yield cluster, port
    finally:
        cluster.stop()


def test_healthz_readyz_and_metrics_count_logins(diag_cluster: tuple[Cluster, int]) -> None:
    cluster, port = diag_cluster
    assert _get(port, "/healthz") == (200, '{"status": "ok"}')
    assert _wait_ready(port, True) == {"status": "ok"}
    totp = cluster.signup("mia", "root", "metrics password")
    cluster.login("mia", "metrics password", totp)
    status, text = _get(port, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    logins = {s.labels["result"]: s.value for s in families["teleport_logins"].samples
              if s.name == "teleport_logins_total"}
    assert logins.get("success", 0) >= 1
    beats = [s for s in families["teleport_heartbeats"].samples
             if s.name == "teleport_heartbeats_total" and s.labels["result"] == "ok"]
    assert beats and all(s.value >= 1 for s in beats)
    backend = [s for s in families["teleport_backend_operation_seconds"].samples
               if s.name == "teleport_backend_operation_seconds_count"]
    assert backend and sum(s.value for s in backend) > 0
    assert families["teleport_sessions_active"].samples[0].value == 0
    assert families["teleport_audit_write_failures"].samples[0].value == 0
    connections = {s.labels["service"] for s in families["teleport_connections"].samples}
    assert {"node", "proxy"} <= connections


def test_node_readiness_follows_its_auth_server(tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    hub = make_cluster(tmp_path / "hub")
    hub.config.write_text(hub.config.read_text().replace("ssh_service:\n  enabled: yes",
                                                         "ssh_service:\n  enabled: no"))
    hub.start()
    config = write_node_config(
        tmp_path / "node.yaml", "watched", tmp_path / "node-data",
        teleport_extra=f"  auth_token: e2e-static-token\n"
                       f"  auth_servers: [\"127.0.0.1:{hub.ports['auth']}\"]\n"
                       f"  diag_addr: 127.0.0.1:0\n")
    node = start_node(config, tmp_path / "node.log")
    try:
        diag_port = wait_started(tmp_path / "node.log", node)["diag"]
        _wait_ready(diag_port, True)
        assert node.poll() is None, (tmp_path / "node.log").read_text()
        hub.stop()
        reason = _wait_ready(diag_port, False)["reason"]
        assert "node" in reason and "auth server" in reason
        assert _get(diag_port, "/healthz")[0] == 200
        hub.start()
        _wait_ready(diag_port, True)
    finally:
        node.terminate()
        node.wait(15)
        hub.stop()


def test_usr1_writes_a_diagnostics_dump_to_the_log(diag_cluster: tuple[Cluster, int]) -> None:
    cluster, _ = diag_cluster
    assert cluster.process is not None
    cluster.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "diagnostics (USR1)" not in cluster.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    dump = cluster.log().split("diagnostics (USR1)", 1)[1]
    for expected in ("memory: rss", "tasks:", "SSH connections", "session processes"):
        assert expected in dump
    assert cluster.process.poll() is None, "USR1 must not stop the daemon"
