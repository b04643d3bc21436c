"""`auth_service.session_recording: proxy`: the proxy terminates SSH and records; nodes do not."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN, CLUSTER, NODENAME, Cluster, make_cluster
from tests.e2e.test_interactive import Terminal


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp("proxy-recording"))
    text = c.config.read_text().replace(
        f"  cluster_name: {CLUSTER}\n", f"  cluster_name: {CLUSTER}\n  session_recording: proxy\n", 1)
    c.config.write_text(text)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _recordings(cluster: Cluster) -> list[str]:
    lines = cluster.tsh("recordings", "ls").stdout.splitlines()
    return [line.split()[0] for line in lines if line[:8].strip("0123456789abcdef-") == ""
            and len(line.split()[0]) == 36]


def test_interactive_session_is_recorded_once_at_the_proxy(cluster: Cluster, joe: dict[str, Any]) -> None:
    env = {**os.environ, **cluster.env, "TERM": "xterm"}
    term = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], env, rows=24, cols=80)
    try:
        term.expect("#")
        term.type("stty size; echo $TERM-term; echo typed-$((40+2))\n")
        out = term.expect("typed-42")
        assert "24 80" in out and "xterm-term" in out
        term.resize(30, 100)
        time.sleep(0.5)
        term.type("stty size; echo more-$((50+5))\n")
        term.expect("30 100")
        term.expect("more-55")
        term.type("exit 4\n")
    finally:
        code = term.close()
    assert code == 4

    deadline = time.monotonic() + 30
    while not (sids := _recordings(cluster)) and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(1)  # a second (node) recording would have been uploaded by now too
    sids = _recordings(cluster)
    assert len(sids) == 1, cluster.tsh("recordings", "ls").stdout
    events = json.loads(cluster.tsh("play", "--format=json", sids[0]).stdout)
    assert events[0]["event"] == "session.start" and events[0]["user"] == "joe"
    output = "".join(e["data"] for e in events if e["event"] == "print")
    assert output.index("typed-42") < output.index("more-55")
    typed = "".join(e["data"] for e in events if e["event"] == "input")
    assert "echo more-$((50+5))" in typed
    assert any(e["event"] == "resize" and e["size"] == "100:30" for e in events)
    # The node recorded nothing, so nothing waits in its spool either.
    spool = cluster.data_dir / "log" / "upload" / "sessions" / "default"
    assert not list(spool.glob("*.gz"))
    # The node still audits the session.
    assert any(e["event"] == "session.start" and e.get("user") == "joe"
               for e in cluster.audit_events())


def test_exec_through_the_recording_proxy(cluster: Cluster, joe: dict[str, Any]) -> None:
    assert cluster.tsh("ssh", f"root@{NODENAME}", "echo hi").stdout == "hi\n"
    failed = cluster.tsh("ssh", f"root@{NODENAME}", "echo oops >&2; exit 7", check=False)
    assert failed.returncode == 7 and "oops" in failed.stderr
    denied = cluster.tsh("ssh", f"nobody@{NODENAME}", "true", check=False)
    assert denied.returncode != 0


def test_stock_openssh_through_the_recording_proxy(cluster: Cluster, joe: dict[str, Any],
                                                   tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(cluster.tsh("config").stdout)
    out = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", f"root@{NODENAME}.{CLUSTER}", "echo", "via-openssh"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, **cluster.env})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "via-openssh\n"


def test_sftp_through_the_recording_proxy_is_audited_not_recorded(
        cluster: Cluster, joe: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(cluster.tsh("config").stdout)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(50_000))
    before = set(_recordings(cluster))
    env = {**os.environ, **cluster.env}
    # OpenSSH 9's scp speaks SFTP: the proxy relays the subsystem to the node.
    for src, dst in ((str(payload), f"root@{NODENAME}.{CLUSTER}:{tmp_path}/up.bin"),
                     (f"root@{NODENAME}.{CLUSTER}:{tmp_path}/up.bin", str(tmp_path / "back.bin"))):
        out = subprocess.run(["scp", "-F", str(config), "-o", "BatchMode=yes", src, dst],
                             capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, env=env)
        assert out.returncode == 0, out.stderr
    assert (tmp_path / "back.bin").read_bytes() == payload.read_bytes()
    opened = [e for e in cluster.audit_events()
              if e["event"] == "sftp" and e.get("path") == f"{tmp_path}/up.bin" and e["action"] == 1]
    assert [e["code"] for e in opened] == ["TS001I", "TS001I"]
    time.sleep(1)  # a recording of the transfer would be listed by now
    assert set(_recordings(cluster)) == before


# Where the proxy records it terminates SSH, and `-R` and `-A` are not relayed yet: both are
# refused with a message in the session and a `port` audit event.
PROXY_RECORDS = "is not available while sessions are recorded at the proxy"


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
