"""The auth server's session policy reaches the node: idle and expired sessions are cut, audited;
a config key that is not supported yet stops `teleport start` with one line (exit 2)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster, make_cluster
from tests.e2e.test_interactive import Terminal

IDLE = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp("session-policy"))
    c.config.write_text(c.config.read_text().replace(
        f"  cluster_name: {CLUSTER}\n",
        f"  cluster_name: {CLUSTER}\n  disconnect_expired_cert: yes\n"
        f"  client_idle_timeout: {IDLE}s\n", 1))
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _disconnects(cluster: Cluster, reason: str) -> list[dict[str, Any]]:
    return [e for e in cluster.audit_events()
            if e["event"] == "client.disconnect" and reason in e.get("reason", "")]


def _wait_audited(cluster: Cluster, reason: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while not (found := _disconnects(cluster, reason)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert found, cluster.log()[-3000:]
    return found[-1]


def test_idle_session_is_closed_and_audited(cluster: Cluster, joe: dict[str, Any]) -> None:
    started = time.monotonic()
    out = cluster.tsh("ssh", f"root@{NODENAME}", "sleep 60", check=False, timeout=40)
    assert out.returncode != 0
    assert IDLE <= time.monotonic() - started < 20
    event = _wait_audited(cluster, "idle")
    assert event["user"] == "joe" and event["login"] == "root"
    assert "exceeded idle timeout of 3s" in event["reason"]


def test_expired_certificate_cuts_a_live_session(cluster: Cluster, tmp_path: Path) -> None:
    # Its own user and profile, with the shortest certificate the auth server issues: 1 minute.
    password = "kim's long password"
    totp = cluster.signup("kim", "root", password)
    env = {**os.environ, **cluster.env, "TERM": "xterm", "TELEPORT_HOME": str(tmp_path / "tsh")}
    home = cluster.env["TELEPORT_HOME"]
    cluster.env["TELEPORT_HOME"] = env["TELEPORT_HOME"]
    try:
        cluster.login("kim", password, totp, "--ttl=1")
    finally:
        cluster.env["TELEPORT_HOME"] = home
    term = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], env)
    try:
        term.expect("#")
        deadline = time.monotonic() + 90
        while term.proc.poll() is None and time.monotonic() < deadline:
            term.type(":\n")  # typing keeps it from being idle: only the expiry can end it
            time.sleep(1)
        assert term.proc.poll() is not None, "the session outlived its certificate"
    finally:
        term.close()
    event = _wait_audited(cluster, "certificate expired")
    assert event["user"] == "kim"


def test_unsupported_key_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "teleport.yaml"
    config.write_text(f"teleport:\n  data_dir: {tmp_path / 'data'}\n"
                      "auth_service:\n  authentication:\n    type: saml\n")
    out = subprocess.run([str(BIN / "teleport"), "start", "-c", str(config)], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"ERROR: {config}:5: auth_service.authentication.type: saml is not supported "
        "yet (use local, github or oidc)"]
    # A second factor that needs a setting it was not given: one line naming the setting.
    config.write_text(f"teleport:\n  data_dir: {tmp_path / 'data'}\n"
                      "auth_service:\n  authentication:\n    second_factor: u2f\n")
    out = subprocess.run([str(BIN / "teleport"), "start", "-c", str(config)], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"ERROR: {config}:4: auth_service.authentication: second_factor u2f needs "
        "webauthn.rp_id (the proxy's DNS name) or u2f.app_id (the proxy's URL)"]
