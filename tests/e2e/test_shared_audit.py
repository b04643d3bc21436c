"""Audit and recordings on shared storage, with two auth servers, a proxy and a node, each its
own `teleport` process: recordings in S3 (moto's server) with events in DynamoDB (another moto
server), and recordings in GCS (gcp-storage-emulator) with events in PostgreSQL.

`tsh play` and `tctl audit events` answer the same through either auth server; the object store
stopped during a session and restarted later still gets the recording, whole; a node killed with
SIGKILL in the middle of its upload sends the recording again after its restart, whole.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from teleport.events import recording as rec
from tests.cloud_servers import GcsEmulator, MotoServer, aws_env, gcs_env
from tests.e2e.cluster import BIN, Cluster
from tests.e2e.ha import HA, login, make_ha, signup
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.slow

TOKEN = "shared-audit-static-token"
BUCKET = "recordings"
ROLE = """\
kind: role
version: v5
metadata:
  name: ops
spec:
  allow:
    logins: [root]
    node_labels: {"*": "*"}
"""


@dataclass
class Shared:
    ha: HA
    #: Tells whether the store holds a recording's events object (the recording is whole).
    stored: Callable[[str], bool]
    #: The object store's server, to stop and start.
    objects: MotoServer | GcsEmulator


def _cluster(tmp_path: Path, storage: str, env: dict[str, str]) -> HA:
    return make_ha(tmp_path, storage, TOKEN, {"proxy": ["auth-a", "auth-b"],
                                              "node-1": ["auth-a", "auth-b"]}, env)


@pytest.fixture
def s3_dynamodb(tmp_path: Path) -> Iterator[Shared]:
    """State and events in DynamoDB (two tables), a copy of the events in files, recordings
    in S3 (another server, to be stopped alone)."""
    with MotoServer(tmp_path / "s3.log") as s3, MotoServer(tmp_path / "dynamodb.log") as dynamodb:
        s3.make_bucket(BUCKET)
        storage = f"""\
  storage:
    type: dynamodb
    region: us-east-1
    table_name: teleport-state
    endpoint: {dynamodb.url}
    audit_events_uri:
    - "dynamodb://teleport-events?endpoint={dynamodb.url}"
    - "file://{tmp_path}/events-copy"
    audit_sessions_uri: "s3://{BUCKET}/records?endpoint={s3.url}"
"""
        ha = _cluster(tmp_path, storage, aws_env())

        def stored(sid: str) -> bool:
            found = s3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"records/{sid}")
            return any(o["Key"].endswith(rec.EVENTS_SUFFIX) for o in found.get("Contents", []))
        try:
            yield Shared(ha, stored, s3)
        finally:
            ha.stop_all()


@pytest.fixture
def gcs_postgres(tmp_path: Path) -> Iterator[Shared]:
    """State and events on PostgreSQL (one server, two databases), recordings in GCS."""
    with PostgresServer() as postgres, GcsEmulator(tmp_path / "gcs.log") as gcs:
        gcs.make_bucket(BUCKET)
        state, events = (postgres.dsn(postgres.create_database()) for _ in range(2))
        storage = f"""\
  storage:
    type: postgresql
    conn_string: "{state}"
    audit_events_uri: ["{events}"]
    audit_sessions_uri: "gs://{BUCKET}/records"
"""
        ha = _cluster(tmp_path, storage, gcs_env(gcs))

        def stored(sid: str) -> bool:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage as gcs_storage

            client = gcs_storage.Client(project="test-project", credentials=AnonymousCredentials(),
                                        client_options={"api_endpoint": gcs.url})
            return client.bucket(BUCKET).blob(f"records/{sid}{rec.EVENTS_SUFFIX}").exists()
        try:
            yield Shared(ha, stored, gcs)
        finally:
            ha.stop_all()


def _recorded(tools: Cluster, command: str, timeout: float = 60) -> tuple[str, str]:
    """Run a command in a session with a terminal (so it is recorded); return (sid, output)."""
    out = tools.tsh("ssh", "-t", "root@node-1",
                    f"echo SID=$SSH_SESSION_ID; {command}", timeout=timeout).stdout
    match = re.search(r"SID=([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1), out


def _play(tools: Cluster, sid: str) -> list[dict[str, object]]:
    return json.loads(tools.tsh("play", "--format=json", sid, timeout=120).stdout)


def _printed(events: list[dict[str, object]]) -> bytes:
    return "".join(str(e["data"]) for e in events if e["event"] == "print").encode()


def _staged(ha: HA, sid: str) -> list[Path]:
    return [p for name in ("auth-a", "auth-b")
            for p in (ha.daemons[name].data_dir / "log" / "sessions" / "default").glob(f"*{sid}*")]


def _receiving(ha: HA, sid: str) -> bool:
    """Tell whether an auth server has some of a recording's output, not yet committed."""
    for path in _staged(ha, sid):
        if path.name.startswith(f".{sid}{rec.CHUNKS_SUFFIX}") and path.name.endswith(".upload"):
            try:
                return path.stat().st_size > 0
            except FileNotFoundError:
                pass
    return False


def _audit(tools: Cluster) -> list[dict[str, object]]:
    return json.loads(tools.tctl("audit", "events", "--since=1h", "--format=json").stdout)


def _through_each_auth_server(ha: HA, check: Callable[[Cluster], object]) -> list[object]:
    """Run check with only auth A up, then with only auth B up: whichever the proxy and tsh
    reach, the answer comes from that one."""
    answers = []
    for down, up in (("auth-b", "auth-a"), ("auth-a", "auth-b")):
        ha.daemons[down].stop()
        try:
            tools = ha.tools[up]
            ha.eventually(lambda tools=tools: tools.tsh("ls", check=False).returncode == 0,
                          f"the proxy reaching {up}")
            answers.append(check(tools))
        finally:
            ha.start(down)
    return answers


def _start(shared: Shared) -> Cluster:
    ha = shared.ha
    ha.start("auth-a", "auth-b")
    ha.start("proxy", "node-1")
    a = ha.tools["auth-a"]
    a.tctl("create", input=ROLE)
    signup(a, "joe", "root", roles="ops")
    assert login(a, "joe").returncode == 0
    ha.eventually(lambda: "node-1" in a.tsh("ls", check=False).stdout, "node-1 listed")
    return a


def _shared_recording_and_audit(shared: Shared) -> None:
    ha = shared.ha
    a = _start(shared)
    sid, out = _recorded(a, "echo shared-$((6*7))")
    assert "shared-42" in out
    ha.eventually(lambda: shared.stored(sid), "the recording stored in the object store")
    ha.eventually(lambda: _staged(ha, sid) == [], "the staged copy removed")
    # A command run with a terminal is recorded, and audited as one `exec` event.
    ha.eventually(lambda: any(e.get("event") == "exec" and e.get("sid") == sid
                              for e in _audit(a)), "the command in the audit log",
                  detail=lambda: json.dumps(_audit(a))[-3000:])

    plays = _through_each_auth_server(ha, lambda tools: _play(tools, sid))
    assert plays[0] == plays[1] and b"shared-42" in _printed(plays[0])  # type: ignore[arg-type]
    assert plays[0][-1]["event"] == "session.end"  # type: ignore[index]
    audits = [json.dumps(_audit(ha.tools[name]), sort_keys=True)
              for name in ("auth-a", "auth-b")]
    assert audits[0] == audits[1]
    session_events = [e for e in json.loads(audits[0]) if e.get("sid") == sid]
    assert [(e["event"], e["user"], e["exitCode"]) for e in session_events] == \
        [("exec", "joe", 0)]
    assert [e["event"] for e in json.loads(audits[0])][:2] == ["join", "join"]

    # The store goes away during a session and comes back later: the recording waits on the
    # auth server that took it, then arrives whole.
    shared.objects.stop()
    sid2, out = _recorded(a, "echo during-$((1+1)); sleep 1; echo after-$((2+2))")
    assert "after-4" in out
    ha.eventually(lambda: len(_staged(ha, sid2)) == 2, "the recording staged on an auth server")
    time.sleep(2)
    assert len(_staged(ha, sid2)) == 2
    shared.objects.start()
    ha.eventually(lambda: shared.stored(sid2), "the recording stored once the store is back",
                  timeout=60)
    ha.eventually(lambda: _staged(ha, sid2) == [], "the staged copy removed")
    played = _play(a, sid2)
    assert b"after-4" in _printed(played) and played[-1]["event"] == "session.end"
    logs = "".join(ha.daemons[n].output() for n in ha.daemons)
    assert "Traceback" not in logs


def test_recordings_in_s3_and_events_in_dynamodb_shared_by_two_auth_servers(
        s3_dynamodb: Shared) -> None:
    _shared_recording_and_audit(s3_dynamodb)


def test_recordings_in_gcs_and_events_in_postgresql_shared_by_two_auth_servers(
        gcs_postgres: Shared) -> None:
    _shared_recording_and_audit(gcs_postgres)


def test_a_node_killed_mid_upload_sends_the_whole_recording_after_its_restart(
        s3_dynamodb: Shared, tmp_path: Path) -> None:
    ha = s3_dynamodb.ha
    a = _start(s3_dynamodb)
    # Incompressible output, so that the upload takes long enough to be cut in the middle.
    command = ("head -c 24000000 /dev/urandom | base64 -w 0 | fold -w 4000; "
               "echo; echo END-$((3*3))")
    output = tmp_path / "session.out"
    node = ha.daemons["node-1"]
    spool = node.data_dir / "log" / "upload" / "sessions" / "default"
    with open(output, "wb") as out:
        session = subprocess.Popen(
            [str(BIN / "tsh"), "ssh", "-t", "root@node-1", f"echo SID=$SSH_SESSION_ID; {command}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **a.env})
        ha.eventually(lambda: re.search(rb"SID=([0-9a-f-]{36})", output.read_bytes()[:200])
                      is not None, "the session's id")
        match = re.search(rb"SID=([0-9a-f-]{36})", output.read_bytes()[:200])
        assert match is not None
        sid = match.group(1).decode()
        # Kill the node as soon as an auth server has part of the upload, which starts when
        # the session ends: watch from now on.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _receiving(ha, sid):
                node.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                node.proc.wait()  # type: ignore[union-attr]
                break
            time.sleep(0.002)
        else:
            raise AssertionError("the upload never started")
        assert session.wait(120) == 0
    assert b"END-9" in output.read_bytes()[-100:]
    assert not s3_dynamodb.stored(sid) and not any(
        p.name.endswith(rec.EVENTS_SUFFIX) and not p.name.startswith(".")
        for p in _staged(ha, sid)), "the upload ended before the node was killed"
    assert sorted(p.name for p in spool.glob(f"{sid}*")) == [f"{sid}{rec.CHUNKS_SUFFIX}",
                                                             f"{sid}{rec.EVENTS_SUFFIX}"]
    node.start()
    ha.eventually(lambda: s3_dynamodb.stored(sid), "the recording stored after the restart",
                  timeout=90)
    ha.eventually(lambda: list(spool.glob(f"{sid}*")) == [], "the node's spool emptied")
    played = _play(a, sid)
    printed = _printed(played).replace(b"\r\n", b"\n")
    assert played[-1]["event"] == "session.end"
    assert printed.count(b"\n") >= 24_000_000 * 4 // 3 // 4000 and b"END-9" in printed
