"""A real interactive `tsh ssh` session is recorded, listed, and replayed with the real CLIs."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from tests.e2e.cluster import BIN, NODENAME, Cluster, make_cluster
from tests.e2e.people import login_as, sign_up, tsh_as
from tests.e2e.test_interactive import Terminal


def _recorded_session(cluster: Cluster) -> str:
    env = {**os.environ, **cluster.env, "TERM": "xterm"}
    term = Terminal([str(BIN / "tsh"), "ssh", f"root@{NODENAME}"], env, rows=24, cols=80)
    try:
        term.expect("#")
        term.type("echo SID=$SSH_SESSION_ID; echo first-$((40+2))\n")
        out = term.expect("first-42")
        term.resize(30, 100)
        time.sleep(0.3)
        term.type("echo second-$((50+5))\n")
        term.expect("second-55")
        term.type("exit\n")
    finally:
        assert term.close() == 0
    match = re.search(r"SID=([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


def _wait_listed(cluster: Cluster, sid: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listing = cluster.tsh("recordings", "ls").stdout
        if sid in listing:
            return listing
        time.sleep(0.3)
    raise AssertionError(f"session {sid} was never listed:\n{listing}\n{cluster.log()[-3000:]}")


def test_session_is_recorded_listed_and_replayed(cluster: Cluster, joe: dict[str, Any]) -> None:
    sid = _recorded_session(cluster)
    listing = _wait_listed(cluster, sid)
    row = next(line for line in listing.splitlines() if sid in line)
    assert "joe" in row and NODENAME in row

    folder = cluster.data_dir / "log" / "sessions" / "default"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for suffix in (".chunks.gz", ".events.gz"):
        assert stat.S_IMODE((folder / f"{sid}{suffix}").stat().st_mode) == 0o640
    spool = cluster.data_dir / "log" / "upload" / "sessions" / "default"
    assert list(spool.glob(f"{sid}*")) == []

    events = json.loads(cluster.tsh("play", "--format=json", sid).stdout)
    assert events[0]["event"] == "session.start" and events[0]["user"] == "joe"
    assert events[-1]["event"] == "session.end"
    output = "".join(e["data"] for e in events if e["event"] == "print")
    assert output.index("first-42") < output.index("second-55")
    typed = "".join(e["data"] for e in events if e["event"] == "input")
    assert "echo second-$((50+5))" in typed
    assert any(e["event"] == "resize" and e["size"] == "100:30" for e in events)

    replay = cluster.tsh("play", "--speed=20", sid)
    assert "first-42" in replay.stdout and "second-55" in replay.stdout


def test_only_the_owner_and_roles_allowing_session_read_may_play(
        cluster: Cluster, joe: dict[str, Any], tmp_path: Path) -> None:
    """joe's recording: eve (`access`, no session rule) may neither play nor see it; amy
    (`auditor`, session read) may do both."""
    sid = _recorded_session(cluster)
    _wait_listed(cluster, sid)
    eve = sign_up(cluster, "eve", "eve", "access", tmp_path, "eve's password")
    amy = sign_up(cluster, "amy", "amy", "auditor", tmp_path, "amy's password")
    for who, password in ((eve, "eve's password"), (amy, "amy's password")):
        out = login_as(cluster, who, password)
        assert out.returncode == 0, out.stderr

    refused = tsh_as(cluster, eve, "play", "--format=json", sid, timeout=60)
    assert refused.returncode != 0
    assert (f"only 'joe' and roles allowing session read may play session {sid}"
            in refused.stderr), refused.stderr
    assert "Traceback" not in refused.stderr
    listed = tsh_as(cluster, eve, "recordings", "ls", timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sid not in listed.stdout

    played = tsh_as(cluster, amy, "play", "--format=json", sid, timeout=60)
    assert played.returncode == 0, played.stderr
    events = json.loads(played.stdout)
    assert events[0]["event"] == "session.start" and events[0]["user"] == "joe"
    listed = tsh_as(cluster, amy, "recordings", "ls", timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sid in listed.stdout


def test_a_damaged_recording_replays_up_to_the_damage(cluster: Cluster, joe: dict[str, Any]) -> None:
    sid = _recorded_session(cluster)
    _wait_listed(cluster, sid)
    chunks = cluster.data_dir / "log" / "sessions" / "default" / f"{sid}.chunks.gz"
    chunks.write_bytes(chunks.read_bytes()[:-30])
    result = cluster.tsh("play", "--speed=50", sid, check=False)
    assert result.returncode == 1
    assert "damaged" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_audit_sessions_uri_chooses_where_recordings_are_kept(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    store = tmp_path / "recordings"
    text = cluster.config.read_text().replace(
        "teleport:\n", f"teleport:\n  storage:\n    audit_sessions_uri: file://{store}\n", 1)
    cluster.config.write_text(text)
    cluster.start()
    try:
        totp = cluster.signup("rita", "root", "recorded password")
        cluster.login("rita", "recorded password", totp)
        assert "in-a-pty" in cluster.tsh("ssh", "-t", f"root@{NODENAME}", "echo in-a-pty").stdout
        deadline = time.monotonic() + 20
        while not list((store / "default").glob("*.events.gz")) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert list((store / "default").glob("*.chunks.gz"))
        assert not list((cluster.data_dir / "log" / "sessions").rglob("*.gz"))
    finally:
        cluster.stop()
