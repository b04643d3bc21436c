"""The audit log with the real CLIs: events with the manual's fields, search, several sinks."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster, make_cluster

#: The manual's fields every node event carries, plus what `exec` adds.
NODE_FIELDS = {"event", "uid", "time", "user", "login", "namespace", "server_id", "server_labels",
               "sid", "addr.local", "addr.remote"}
EXEC_FIELDS = NODE_FIELDS | {"command", "exitCode", "exitError"}
FORGED = 'echo forged; : \'\n{"event":"user.login","user":"mallory","method":"local"}\''


def _events(cluster: Cluster, *flags: str) -> list[dict[str, Any]]:
    out = cluster.tctl("audit", "events", "--since=1h", "--format=json", *flags).stdout
    events: list[dict[str, Any]] = json.loads(out)
    return events


def test_exec_events_are_found_with_the_manuals_fields(cluster: Cluster, joe: dict[str, Any]) -> None:
    assert cluster.tsh("ssh", f"root@{NODENAME}", "echo", "audited-e2e").stdout == "audited-e2e\n"
    assert cluster.tsh("ssh", f"root@{NODENAME}", "exit 3", check=False).returncode == 3
    execs = _events(cluster, "--type=exec", "--user=joe")
    ours = next(e for e in execs if e["command"] == "echo audited-e2e")
    assert EXEC_FIELDS <= ours.keys()
    assert (ours["user"], ours["login"], ours["namespace"], ours["exitCode"]) == ("joe", "root", "default", 0)
    assert ours["server_labels"]["env"] == "e2e"
    assert ours["server_id"] == (cluster.data_dir / "host_uuid").read_text().strip()
    failed = next(e for e in execs if e["command"] == "exit 3")
    assert (failed["exitCode"], failed["exitError"]) == (3, "exit status 3")
    assert all(e["event"] == "exec" and e["user"] == "joe" for e in execs)
    assert [e["time"] for e in execs] == sorted(e["time"] for e in execs)
    logins = _events(cluster, "--type=user.login")
    assert any(e["user"] == "joe" and e["method"] == "local" for e in logins)


def test_a_command_cannot_forge_an_event(cluster: Cluster, joe: dict[str, Any]) -> None:
    assert cluster.tsh("ssh", f"root@{NODENAME}", FORGED).stdout == "forged\n"
    assert [e["command"] for e in _events(cluster, "--type=exec") if "forged" in e["command"]] == [FORGED]
    assert not [e for e in _events(cluster) if e.get("user") == "mallory"]
    for event in cluster.audit_events():  # every line of every day file parses on its own
        assert event.get("user") != "mallory"
    table = cluster.tctl("audit", "events", "--since=1h", "--type=exec", "--user=joe").stdout
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["Time", "Type", "User", "Login", "Server"]
    assert not any(line.startswith("{") for line in lines)
    forged = [line for line in lines if "forged" in line]
    assert len(forged) == 1 and '\\n{\\"event\\":\\"user.login\\"' in forged[0]


def test_limit_pages_and_bad_flags(cluster: Cluster, joe: dict[str, Any]) -> None:
    for _ in range(3):
        cluster.tsh("ssh", f"root@{NODENAME}", "true")
    everything = _events(cluster)
    assert len(everything) > 2
    assert _events(cluster, "--limit=2") == everything[:2]
    for flag, message in [("--since=yesterday", "--since: 'yesterday' is neither a duration"),
                          ("--until=later", "--until: 'later' is neither"),
                          ("--limit=lots", "--limit must be a positive number"),
                          ("--format=xml", "--format must be text or json")]:
        out = cluster.tctl("audit", "events", flag, check=False)
        assert out.returncode == 2, out
        assert out.stderr.strip().splitlines() == [f"ERROR: {message}" + out.stderr.split(message, 1)[1].rstrip()]
    assert _events(cluster, "--since=2000-01-01T00:00:00Z", "--until=2000-01-02T00:00:00Z") == []


@pytest.fixture
def two_sinks(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster that writes its events to a file:// folder and to its stdout."""
    cluster = make_cluster(tmp_path)
    text = cluster.config.read_text()
    cluster.config.write_text(text.replace(
        f"  data_dir: {cluster.data_dir}\n",
        f"  data_dir: {cluster.data_dir}\n  storage:\n"
        f"    audit_events_uri: ['file://{tmp_path}/events', 'stdout://']\n"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_events_go_to_every_sink_and_the_first_is_searched(two_sinks: Cluster) -> None:
    password = "correct horse battery"
    two_sinks.login("ann", password, two_sinks.signup("ann", "root", password))
    two_sinks.tsh("ssh", f"root@{NODENAME}", "echo", "two-sinks")
    found = _events(two_sinks, "--type=exec", "--user=ann")
    assert [e["command"] for e in found] == ["echo two-sinks"]
    in_file = [json.loads(line) for path in (two_sinks.root / "events").glob("*.00:00:00.log")
               for line in path.read_text().splitlines()]
    assert found[0] in in_file
    on_stdout = [json.loads(line) for line in two_sinks.log().splitlines() if line.startswith("{\"")]
    assert found[0] in on_stdout
    assert not list((two_sinks.data_dir / "log").glob("*.log"))


def test_unknown_sink_scheme_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "teleport.yaml"
    config.write_text(f"teleport:\n  data_dir: {tmp_path / 'data'}\n  storage:\n"
                      "    audit_events_uri: ['file:///tmp/ok', 'kafka://events']\n"
                      "auth_service:\n  listen_addr: 127.0.0.1:0\n"
                      "ssh_service:\n  enabled: no\nproxy_service:\n  enabled: no\n")
    out = subprocess.run([str(BIN / "teleport"), "start", "-c", str(config)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "'kafka://events': unsupported scheme" in lines[0], out.stderr


def test_scp_transfers_are_audited_with_path_length_and_action(
        cluster: Cluster, joe: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(cluster.tsh("config").stdout)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(123_457))
    remote = f"/tmp/scp-audit-{os.getpid()}.bin"
    env = {**os.environ, **cluster.env}
    base = ["scp", "-O", "-F", str(config), "-o", "BatchMode=yes"]
    try:
        subprocess.run([*base, str(payload), f"root@{NODENAME}.{CLUSTER}:{remote}"], check=True,
                       capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        back = tmp_path / "back.bin"
        subprocess.run([*base, f"root@{NODENAME}.{CLUSTER}:{remote}", str(back)], check=True,
                       capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        assert back.read_bytes() == payload.read_bytes()
    finally:
        cluster.tsh("ssh", f"root@{NODENAME}", "rm", "-f", remote, check=False)
    scps = [e for e in cluster.audit_events() if e["event"] == "scp" and e.get("path") == remote]
    assert [e["action"] for e in scps] == ["write", "read"]
    # The protocol adds a header line and acknowledgement bytes around the file's own bytes.
    assert all(123_457 <= e["len"] < 123_457 + 200 for e in scps)
    assert all(e["user"] == "joe" and e["login"] == "root" for e in scps)
