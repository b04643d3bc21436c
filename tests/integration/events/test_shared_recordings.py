"""Recordings in a shared object store: S3 (moto's server) and GCS (gcp-storage-emulator), reached
through the `endpoint` settings a user of a compatible store would use, with the official clients.

An upload is taken into the auth server's staging folder as with the `dir` store, then shipped
to the store; reads stream from wherever the recording is.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from teleport.events import recording as rec
from teleport.events.objectstore import ObjectStore, open_object_store
from teleport.events.shared_recordings import SharedSessionStore
from tests.cloud_servers import GcsEmulator, MotoServer, aws_env, gcs_env

BUCKET = "recordings"
NODE = "node-1"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    with GcsEmulator(tmp_path_factory.mktemp("gcs") / "gcs.log") as server:
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture(params=["s3", "gs"])
def store_uri(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh prefix in the bucket of one kind of store, its credentials in the environment."""
    prefix = f"records-{uuid.uuid4().hex[:8]}"
    if request.param == "s3":
        server: MotoServer = request.getfixturevalue("moto")
        for name, value in aws_env().items():
            monkeypatch.setenv(name, value)
        return f"s3://{BUCKET}/{prefix}?endpoint={server.url}"
    emulator: GcsEmulator = request.getfixturevalue("gcs")
    for name, value in gcs_env(emulator).items():
        monkeypatch.setenv(name, value)
    return f"gs://{BUCKET}/{prefix}"


def _record(folder: Path, sid: str, outputs: int = 3, payload: bytes = b"") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    writer = rec.RecordingWriter(folder, sid, {"user": "alice", "login": "root", "sid": sid,
                                               "server_id": NODE, "server_hostname": "node1",
                                               "time": "2026-01-01T00:00:00Z"})
    for i in range(outputs):
        writer.data(rec.PRINT, 10 * i, f"line {i}\r\n".encode() + payload)
    writer.close(200, "2026-01-01T00:00:01Z")


async def _pieces(path: Path) -> AsyncIterator[bytes]:
    for piece in rec.read_file(path):
        yield piece


async def _upload(store: SharedSessionStore, sid: str, source: Path) -> bool:
    """Send a recording the way a node does: both parts, then the commit."""
    chunks, events = rec.paths(source, sid)
    await store.receive(sid, "chunks", NODE, _pieces(chunks))
    await store.receive(sid, "events", NODE, _pieces(events))
    return await store.commit(sid, NODE, NODE)


async def _replay(store: SharedSessionStore, sid: str) -> list[dict[str, object]]:
    lines = b"".join([batch async for batch in store.replay(sid)]).splitlines()
    return [rec.from_wire_line(line) for line in lines]


def _expected(folder: Path, sid: str) -> list[dict[str, object]]:
    chunks, events = rec.paths(folder, sid)
    return [rec.from_wire_line(rec.to_wire_line(e))
            for e in rec.replay(rec.read_file(events), rec.read_file(chunks))]


async def _wait(condition: object, seconds: float = 20) -> None:
    for _ in range(int(seconds * 10)):
        if await asyncio.to_thread(condition):  # type: ignore[arg-type]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_a_recording_is_shipped_to_the_store_and_streamed_back(
        store_uri: str, tmp_path: Path) -> None:
    remote = open_object_store(store_uri, region="us-east-1")
    store = SharedSessionStore(tmp_path / "staging", remote)
    sid = str(uuid.uuid4())
    _record(tmp_path / "node", sid)
    assert await _upload(store, sid, tmp_path / "node") is True
    assert store.staged() == [sid]
    assert store.ship_one(sid) is True
    # Gone from this server's disk, whole in the store: a second auth server reads it there.
    assert store.staged() == [] and not store.exists(sid)
    other = SharedSessionStore(tmp_path / "other-staging", open_object_store(
        store_uri, region="us-east-1"))
    assert await other.stored(sid)
    assert await _replay(other, sid) == _expected(tmp_path / "node", sid)
    summary = await other.summary(sid)
    assert (summary.user, summary.server_id, summary.complete) == ("alice", NODE, True)
    assert [s.sid for s in await other.list()] == [sid]


async def test_the_store_keeps_the_first_copy_of_a_recording(store_uri: str,
                                                            tmp_path: Path) -> None:
    """A host that uploads again (it never heard the answer) cannot replace what is stored."""
    store = SharedSessionStore(tmp_path / "staging", open_object_store(store_uri,
                                                                       region="us-east-1"))
    sid = str(uuid.uuid4())
    _record(tmp_path / "first", sid, outputs=2)
    await _upload(store, sid, tmp_path / "first")
    store.ship_one(sid)
    _record(tmp_path / "second", sid, outputs=5)
    await _upload(store, sid, tmp_path / "second")
    assert store.ship_one(sid) is False and store.staged() == []
    assert await _replay(store, sid) == _expected(tmp_path / "first", sid)


async def test_a_missing_recording_is_not_found(store_uri: str, tmp_path: Path) -> None:
    from teleport.errors import NotFound

    store = SharedSessionStore(tmp_path / "staging", open_object_store(store_uri,
                                                                       region="us-east-1"))
    sid = str(uuid.uuid4())
    assert not await store.stored(sid)
    with pytest.raises(NotFound, match=f"session recording {sid} not found"):
        await _replay(store, sid)


async def test_s3_uploads_large_recordings_in_parts_encrypted(moto: MotoServer, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    for name, value in aws_env().items():
        monkeypatch.setenv(name, value)
    uri = f"s3://{BUCKET}/big?endpoint={moto.url}"
    store = SharedSessionStore(tmp_path / "staging", open_object_store(uri, region="us-east-1"))
    sid = str(uuid.uuid4())
    # Incompressible output, so the chunks object spans several 8 MiB parts.
    _record(tmp_path / "node", sid, outputs=20, payload=os.urandom(1 << 20))
    await _upload(store, sid, tmp_path / "node")
    store.ship_one(sid)
    head = moto.client("s3").head_object(Bucket=BUCKET, Key=f"big/{sid}{rec.CHUNKS_SUFFIX}")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    assert head["ServerSideEncryption"] == "AES256"
    assert await _replay(store, sid) == _expected(tmp_path / "node", sid)


async def test_recordings_wait_while_the_store_is_down_and_arrive_when_it_returns(
        moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aws_env().items():
        monkeypatch.setenv(name, value)
    uri = f"s3://{BUCKET}/outage?endpoint={moto.url}"
    store = SharedSessionStore(tmp_path / "staging", open_object_store(uri, region="us-east-1"))
    shipper = asyncio.create_task(store.ship())
    try:
        moto.stop()
        sid = str(uuid.uuid4())
        _record(tmp_path / "node", sid)
        assert await _upload(store, sid, tmp_path / "node") is True  # taken although down
        await asyncio.sleep(3)
        assert store.staged() == [sid]
        assert await _replay(store, sid) == _expected(tmp_path / "node", sid)  # from staging
        moto.start()  # the same port; the bucket is made again, empty
        remote: ObjectStore = store.remote
        await _wait(lambda: remote.exists(f"{sid}{rec.EVENTS_SUFFIX}"), 40)
        await _wait(lambda: store.staged() == [])
        assert await _replay(store, sid) == _expected(tmp_path / "node", sid)
    finally:
        shipper.cancel()
        if moto.process is None:
            moto.start()


async def test_recordings_staged_before_a_restart_are_shipped_after_it(
        store_uri: str, tmp_path: Path) -> None:
    """An auth server killed after taking a recording and before shipping it: its next start
    finds the staged copy and ships it."""
    sids = [str(uuid.uuid4()) for _ in range(2)]
    before = SharedSessionStore(tmp_path / "staging", open_object_store(store_uri,
                                                                        region="us-east-1"))
    for sid in sids:
        _record(tmp_path / "node", sid)
        await _upload(before, sid, tmp_path / "node")
    after = SharedSessionStore(tmp_path / "staging", open_object_store(store_uri,
                                                                       region="us-east-1"))
    shipper = asyncio.create_task(after.ship())
    try:
        await _wait(lambda: after.staged() == [])
    finally:
        shipper.cancel()
    for sid in sids:
        assert await asyncio.to_thread(after.remote.exists, f"{sid}{rec.EVENTS_SUFFIX}")
        assert await _replay(after, sid) == _expected(tmp_path / "node", sid)


async def test_s3_multipart_uploads_left_by_a_dead_server_are_aborted(
        moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aws_env().items():
        monkeypatch.setenv(name, value)
    s3 = moto.client("s3")
    left = s3.create_multipart_upload(Bucket=BUCKET, Key="dead/x.chunks.gz")["UploadId"]
    other = s3.create_multipart_upload(Bucket=BUCKET, Key="elsewhere/y")["UploadId"]
    store = open_object_store(f"s3://{BUCKET}/dead?endpoint={moto.url}", region="us-east-1")
    # moto says every upload began in 2010: an age longer than that stands for "too young"
    # (it may be another server's, still uploading).
    store.abandoned_after = timedelta(days=365 * 50)  # type: ignore[attr-defined]
    store.ensure_bucket()
    assert left in _uploads(s3)
    store.abandoned_after = timedelta(0)  # type: ignore[attr-defined]
    store.ensure_bucket()
    assert left not in _uploads(s3) and other in _uploads(s3)  # only under our prefix
    s3.abort_multipart_upload(Bucket=BUCKET, Key="elsewhere/y", UploadId=other)


def _uploads(s3: object) -> list[str]:
    found = s3.list_multipart_uploads(Bucket=BUCKET)  # type: ignore[attr-defined]
    return [u["UploadId"] for u in found.get("Uploads", [])]
