"""The manual's "Migrating Backends" example with the real CLIs: `tctl get all --with-secrets >
state.yaml` on a live sqlite cluster, stop it, `teleport start --config fresh.yaml --bootstrap
state.yaml` on a fresh data dir with its state on etcd (a private server, Debian's etcd-server),
and the same users, state and node certificates work on the new one."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import (
    BIN,
    Cluster,
    make_cluster,
    start_node,
    wait_started,
    write_node_config,
)
from tests.e2e.people import Person, login_as, sign_up, tsh_as
from tests.etcd_server import EtcdServer

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
ROLE = """\
kind: role
version: v5
metadata:
  name: dev
spec:
  allow:
    logins: [dev]
"""
TOKEN = """\
kind: token
version: v2
metadata:
  name: dynamic-join-token-1
  expires: "2099-01-01T00:00:00Z"
spec:
  roles: [node]
"""
#: What the new cluster must show as the old one did (nodes announce themselves afresh).
RESTORED = ("role", "user", "token", "lock", "cert_authority")


def _state(text: str) -> list[dict[str, Any]]:
    """The restored kinds of `tctl get all` output, in a stable order."""
    docs = yaml.safe_load_all(text)
    return sorted((d for d in docs if d["kind"] in RESTORED),
                  key=lambda d: (d["kind"], d["metadata"]["name"], d["spec"].get("type", "")))


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _node_listed(cluster: Cluster, name: str) -> bool:
    return name in cluster.tctl("nodes", "ls").stdout


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_the_manuals_backup_and_bootstrap_moves_a_live_cluster(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = make_cluster(tmp_path / "old")
    old.start()
    node_root = tmp_path / "node"
    node_root.mkdir()
    node_config = write_node_config(node_root / "teleport.yaml", "migrated-node",
                                    node_root / "data")
    node: subprocess.Popen[str] | None = None
    try:
        old.tctl("create", input=ROLE + "---\n" + TOKEN)
        old.tctl("lock", "--user=mallory", "--message=left the company")
        alice = sign_up(old, "alice", "dev", "dev", tmp_path, PASSWORD)  # password and OTP app
        boss = sign_up(old, "boss", "root", "admin", tmp_path, PASSWORD)
        node = start_node(node_config, node_root / "teleport.log",
                          f"--auth-server=127.0.0.1:{old.ports['auth']}",
                          "--token=e2e-static-token")
        wait_started(node_root / "teleport.log", node)
        _wait_for("the node on the old cluster", lambda: _node_listed(old, "migrated-node"))

        # A user's profile, even with the admin role, never gets the CA keys.
        assert login_as(old, boss, PASSWORD).returncode == 0
        no_admin = tmp_path / "no-admin-data"
        no_admin.mkdir()
        refused = old._run("tctl", ("--data-dir", str(no_admin), "get", "all",
                                    "--with-secrets"), None, False, 30, env=boss.env)
        line = _one_error_line(refused)
        assert "CA private keys" in line and "only to tctl with the auth server's admin " \
            "identity, on the auth host" in line, line
        assert "PRIVATE KEY" not in refused.stdout

        # The manual's example: export, stop the old one, bootstrap a fresh one.
        plain = old.tctl("get", "all").stdout
        assert "PRIVATE KEY" not in plain and "password_hash" not in plain
        backup = old.tctl("get", "all", "--with-secrets").stdout
        assert "PRIVATE KEY" in backup and "password_hash" in backup and "totp_key" in backup
        # Credentials go back only through --bootstrap, never through tctl create.
        line = _one_error_line(old.tctl("create", "-f", input=backup, check=False))
        assert line.endswith("carries secrets (spec.local_auth): they are restored only by "
                             "`teleport start --bootstrap` into a new backend"), line
    finally:
        if node is not None:
            node.terminate()
            node.wait(15)
        old.stop()
    state = tmp_path / "state.yaml"
    state.write_text(backup)

    # A state.yaml of cluster e2e.test cannot bootstrap a config naming another cluster.
    (tmp_path / "other").mkdir()
    other = make_cluster(tmp_path / "other")
    other.config.write_text(other.config.read_text().replace("cluster_name: e2e.test",
                                                             "cluster_name: other.test"))
    line = _refused_start(other, state)
    assert line.startswith(f"ERROR: --bootstrap: {state} (document ") and line.endswith(
        "is for cluster 'e2e.test', but the config's cluster_name is 'other.test'"), line
    assert not _stored(other.data_dir, b"alice")

    with EtcdServer(tmp_path / "etcd") as etcd:
        _on_the_new_backend(tmp_path, etcd, state, plain, alice, node_config, node_root)


def _on_the_new_backend(tmp_path: Path, etcd: EtcdServer, state: Path, plain: str, alice: Person,
                        node_config: Path, node_root: Path) -> None:
    """`teleport start --config fresh.yaml --bootstrap state.yaml` with the state on etcd; the
    old cluster's users, state and node identity work there."""
    new = make_cluster(tmp_path / "new")
    new.config.write_text(new.config.read_text().replace(
        f"  data_dir: {new.data_dir}\n",
        f"  data_dir: {new.data_dir}\n  storage:\n    type: etcd\n    peers: [\"{etcd.url}\"]\n"
        "    prefix: /migrated/\n"))
    new.start_args = ["--bootstrap", str(state)]
    new.start()
    node: subprocess.Popen[str] | None = None
    try:
        assert _state(new.tctl("get", "all").stdout) == _state(plain)
        # The same password and a fresh code of the same app.
        assert login_as(new, alice, PASSWORD).returncode == 0
        assert f"127.0.0.1:{new.ports['web']}" in tsh_as(new, alice, "status").stdout
        # The node's identity from the old cluster is trusted: same CAs, no new token.
        node = start_node(node_config, node_root / "teleport.log",
                          f"--auth-server=127.0.0.1:{new.ports['auth']}")
        _wait_for("the old node on the new cluster", lambda: _node_listed(new, "migrated-node"))
    finally:
        if node is not None and node.poll() is None:
            node.terminate()
            node.wait(15)
        new.stop()


def test_a_bad_bootstrap_file_is_refused_in_one_line_and_nothing_is_stored(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    state = tmp_path / "state.yaml"
    state.write_text("kind: role\nversion: v5\nmetadata:\n  name: dev\nspec: {}\n---\n"
                     "kind: user\nversion: v2\nmetadata:\n  name: bob\nspec:\n"
                     "  roles: [ghost]\n")
    assert _refused_start(cluster, state) == (
        f"ERROR: --bootstrap: {state} (document 2): user 'bob' has role 'ghost', which the "
        "file does not define")
    assert not _stored(cluster.data_dir, b"bob")


def _refused_start(cluster: Cluster, state: Path) -> str:
    """Start the daemon with --bootstrap state, expecting exit 2; return its error line."""
    result = cluster._run("teleport", ("start", "-c", str(cluster.config), "--bootstrap",
                                       str(state)), None, False, 60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _stored(data_dir: Path, needle: bytes) -> bool:
    """Tell whether any backend file under data_dir holds needle (sqlite, its WAL)."""
    return any(needle in f.read_bytes() for f in data_dir.rglob("*") if f.is_file())


def test_bootstrap_without_the_auth_service_is_refused(tmp_path: Path) -> None:
    config = write_node_config(tmp_path / "node.yaml", "lonely", tmp_path / "data")
    result = subprocess.run([str(BIN / "teleport"), "start", "-c", str(config), "--bootstrap",
                             str(tmp_path / "state.yaml"), "--auth-server=127.0.0.1:1",
                             "--token=abcdefgh1234"], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr.strip()) == (
        2, "ERROR: --bootstrap initialises the auth service's backend, which this config does "
           "not enable (auth_service.enabled)")
