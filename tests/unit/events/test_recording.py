"""The recording format: round trip, and replay up to the damage of cut or corrupted files."""

from __future__ import annotations

import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from teleport.errors import BadParameter
from teleport.events import recording as rec
from teleport.events.sessions_store import SessionStore, format_duration_ms


def _write(folder: Path, sid: str, outputs: int = 3, finish: bool = True) -> rec.RecordingWriter:
    writer = rec.RecordingWriter(folder, sid, {"user": "alice", "login": "root",
                                               "server_hostname": "node1", "time": "2026-01-01T00:00:00Z"})
    for i in range(outputs):
        writer.data(rec.PRINT, 10 * i, f"line {i}\r\n".encode())
        writer.data(rec.INPUT, 10 * i + 5, b"k")
    writer.resize(100, 120, 40)
    writer.flush()
    if finish:
        writer.close(200, "2026-01-01T00:00:01Z")
    return writer


def _replay(folder: Path, sid: str) -> list[dict[str, object]]:
    chunks, events = rec.paths(folder, sid)
    return list(rec.replay(rec.read_file(events), rec.read_file(chunks)))


def test_round_trip_keeps_order_timing_and_bytes(tmp_path: Path) -> None:
    sid = str(uuid.uuid4())
    _write(tmp_path, sid)
    got = _replay(tmp_path, sid)
    assert [e["event"] for e in got] == ["session.start"] + ["print", "input"] * 3 + ["resize", "session.end"]
    assert got[0]["user"] == "alice" and got[0]["sid"] == sid and got[0]["version"] == 1
    assert [e["data"] for e in got if e["event"] == "print"] == [b"line 0\r\n", b"line 1\r\n", b"line 2\r\n"]
    assert [e["ms"] for e in got if e["event"] == "print"] == [0, 10, 20]
    assert got[-2]["size"] == "120:40" and got[-1]["ms"] == 200
    for path in rec.paths(tmp_path, sid):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_wire_lines_round_trip_binary_data() -> None:
    event = {"event": "print", "ms": 3, "data": b"\x00\xff\x1b[0m"}
    assert rec.from_wire_line(rec.to_wire_line(event)) == event


def test_a_recording_cut_by_a_crash_replays_up_to_its_last_flush(tmp_path: Path) -> None:
    sid = str(uuid.uuid4())
    _write(tmp_path, sid, finish=False)  # flushed but never closed: what a crash leaves
    chunks, events = rec.paths(tmp_path, sid)
    got = []
    with pytest.raises(rec.RecordingDamaged, match="truncated"):
        for event in rec.replay(rec.read_file(events), rec.read_file(chunks)):
            got.append(event)
    assert [e["data"] for e in got if e["event"] == "print"][-1] == b"line 2\r\n"


def test_truncated_chunks_stop_at_the_missing_bytes(tmp_path: Path) -> None:
    sid = str(uuid.uuid4())
    _write(tmp_path, sid, outputs=200)
    chunks, events = rec.paths(tmp_path, sid)
    chunks.write_bytes(chunks.read_bytes()[:40])
    got = []
    with pytest.raises(rec.RecordingDamaged, match="chunks file is truncated"):
        for event in rec.replay(rec.read_file(events), rec.read_file(chunks)):
            got.append(event)
    assert got[0]["event"] == "session.start"


def test_corrupted_events_are_reported(tmp_path: Path) -> None:
    sid = str(uuid.uuid4())
    _write(tmp_path, sid, outputs=50)
    chunks, events = rec.paths(tmp_path, sid)
    raw = bytearray(events.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0x5A
    events.write_bytes(bytes(raw))
    with pytest.raises(rec.RecordingDamaged, match="corrupted|truncated"):
        list(rec.replay(rec.read_file(events), rec.read_file(chunks)))


def test_session_ids_cannot_name_other_paths(tmp_path: Path) -> None:
    for bad in ("../etc/passwd", "", "x" * 36, str(uuid.uuid4()).upper()):
        with pytest.raises(BadParameter):
            rec.paths(tmp_path, bad)


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_store_commits_once_and_marks_damage(tmp_path: Path) -> None:
    spool, store = tmp_path / "spool", SessionStore(tmp_path / "sessions")
    spool.mkdir()
    sid = str(uuid.uuid4())
    _write(spool, sid, finish=False)
    for _ in range(2):  # the second upload of the same session stores nothing new
        for part, path in zip(("chunks", "events"), rec.paths(spool, sid), strict=True):
            await store.receive(sid, part, "node-1", _pieces(path.read_bytes()))
        await store.commit(sid, "node-1")
    assert [p.name for p in store.folder.iterdir() if p.name.startswith(".")] == []
    summary, = await store.list()
    assert (summary.sid, summary.user, summary.complete) == (sid, "alice", False)
    lines = b"".join([b async for b in store.replay(sid)]).splitlines()
    last = rec.from_wire_line(lines[-1])
    assert last["event"] == rec.DAMAGED and "truncated" in str(last["error"])
    assert stat.S_IMODE(store.folder.stat().st_mode) == 0o700


def test_durations_read_like_tsh() -> None:
    assert [format_duration_ms(ms) for ms in (900, 61_000, 3_723_000)] == ["0s", "1m1s", "1h2m3s"]
