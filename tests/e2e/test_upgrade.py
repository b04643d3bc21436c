"""The manual's "Upgrading Teleport", with the real CLIs: the new `teleport` starts on the data
dirs the previous version left (`tests/fixtures/upgrade_v0`, made by the old code with
`tests/fixtures/make_upgrade_v0.py`), migrates the stored state, and the old user and both old
nodes still work; a store of a newer schema is refused in one line; every tool prints the same
version, the one the cluster reports."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyotp

from teleport import __version__
from tests.e2e.cluster import (
    BIN,
    Cluster,
    make_cluster,
    start_node,
    stop_process,
    wait_started,
    write_node_config,
)
from tests.e2e.people import Person, login_as, tsh_as

FIXTURE = Path(__file__).parents[1] / "fixtures" / "upgrade_v0"
INFO = json.loads((FIXTURE / "fixture.json").read_text())
SCHEMA_KEY = b"/meta/schema_version"


def _data_dir(src: Path, dst: Path) -> None:
    """Copy a fixture data dir with the modes teleport gives it (git keeps none)."""
    shutil.copytree(src, dst)
    dst.chmod(0o700)
    for path in dst.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)


def _schema(data_dir: Path) -> dict[str, object] | None:
    """The stored schema version record, read from the sqlite file as it is on disk."""
    conn = sqlite3.connect(f"file:{data_dir / 'backend' / 'sqlite.db'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (SCHEMA_KEY,)).fetchone()
    finally:
        conn.close()
    return json.loads(row[0]) if row else None


def _spent(totp: pyotp.TOTP) -> set[int]:
    """The time steps around now whose codes the old cluster already took (each is accepted
    once): only when the fixture was made in the last minutes."""
    conn = sqlite3.connect(f"file:{FIXTURE / 'auth' / 'backend' / 'sqlite.db'}?mode=ro&immutable=1", uri=True)
    try:
        keys = [bytes(k) for (k,) in conn.execute("SELECT key FROM kv")]
        used = {k.rsplit(b"-", 1)[1].decode() for k in keys if b"/otp-used-" in k}
    finally:
        conn.close()
    now = int(time.time()) // 30
    return {step for step in range(now - 3, now + 4) if totp.at(step * 30) in used}


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _old_cluster(root: Path) -> Cluster:
    """The fixture's all-in-one cluster, unstarted, its config as the old one had it."""
    (root / "cluster").mkdir()
    cluster = make_cluster(root / "cluster")
    _data_dir(FIXTURE / "auth", cluster.data_dir)
    return cluster


def _logs_in_and_runs(cluster: Cluster, who: Person, node: str) -> None:
    login = login_as(cluster, who, INFO["password"])
    assert login.returncode == 0, login.stderr
    _runs(cluster, who, node)


def _runs(cluster: Cluster, who: Person, node: str) -> None:
    out = tsh_as(cluster, who, "ssh", f"root@{node}", "echo", "ok")
    assert (out.returncode, out.stdout) == (0, "ok\n"), out.stderr


def test_the_new_version_starts_on_the_previous_versions_state(tmp_path: Path) -> None:
    cluster = _old_cluster(tmp_path)
    assert _schema(cluster.data_dir) is None  # the previous version kept none
    node_data = tmp_path / "node"
    _data_dir(FIXTURE / "node", node_data)
    cluster.start()
    node = None
    try:
        assert _schema(cluster.data_dir) == {"version": 1, "teleport": __version__}
        assert "Migrated the stored state to schema version 1" in cluster.log()
        assert INFO["user"] in cluster.tctl("users", "ls").stdout
        # Their password and OTP app, set up through the old version's signup.
        (tmp_path / "alice").mkdir()
        totp = pyotp.TOTP(INFO["otp_secret"])
        alice = Person(INFO["user"], tmp_path / "alice", totp, _spent(totp))
        _logs_in_and_runs(cluster, alice, INFO["nodename"])
        # The second node restarts from the identity the old auth server issued: no token.
        config = write_node_config(
            tmp_path / "node.yaml", INFO["old_node"], node_data,
            teleport_extra=f"  auth_servers: [\"127.0.0.1:{cluster.ports['auth']}\"]\n")
        assert "auth_token" not in config.read_text()
        log = tmp_path / "node.log"
        node = start_node(config, log)
        wait_started(log, node)
        _wait_for("the old node", lambda: INFO["old_node"] in cluster.tctl("nodes", "ls").stdout)
        _runs(cluster, alice, INFO["old_node"])
        # A second start finds nothing to migrate.
        stop_process(node)
        node = None
        cluster.stop()
        cluster.start()
        assert cluster.log().count("Migrated the stored state") == 1
        assert _schema(cluster.data_dir) == {"version": 1, "teleport": __version__}
        _logs_in_and_runs(cluster, alice, INFO["nodename"])
    finally:
        stop_process(node)
        cluster.stop()


def test_a_store_of_a_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    cluster = _old_cluster(tmp_path)
    cluster.start()  # migrated to the current version
    cluster.stop()
    db = sqlite3.connect(cluster.data_dir / "backend" / "sqlite.db")
    try:
        with db:
            db.execute("UPDATE kv SET value = ? WHERE key = ?",
                       (json.dumps({"version": 2, "teleport": "1.0.0"}).encode(), SCHEMA_KEY))
    finally:
        db.close()
    result = subprocess.run([str(BIN / "teleport"), "start", "-c", str(cluster.config)],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                            env={**os.environ, **cluster.env})
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors == [
        f"ERROR: the backend holds cluster state of schema version 2, newer than this teleport "
        f"{__version__} knows (schema version 1): run the newer teleport, or restore a backup "
        "made for this one"], result.stderr
    assert "started" not in result.stderr


def test_every_tool_prints_the_same_version_as_the_cluster_reports(tmp_path: Path) -> None:
    lines = {}
    for tool in ("teleport", "tctl", "tsh"):
        out = subprocess.run([str(BIN / tool), "version"], capture_output=True, text=True,
                             timeout=30, stdin=subprocess.DEVNULL,
                             env={**os.environ, "HOME": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        lines[tool] = out.stdout
    assert lines["teleport"] == lines["tctl"] == lines["tsh"]
    assert lines["tsh"].startswith(f"Teleport v{__version__} ")
    cluster = _old_cluster(tmp_path)
    cluster.start()
    try:
        assert cluster.web("GET", "/webapi/ping")["server_version"] == __version__
        # The node's heartbeat carries the version the auth server checks it by.
        nodes = json.loads(cluster.tctl("get", "nodes", "--format=json").stdout)
        assert {n["spec"]["version"] for n in nodes} == {__version__}
    finally:
        cluster.stop()
