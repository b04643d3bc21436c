"""The session recording format: two gzip files per session, written and read as streams.

A recording of session `<sid>` is two files, as the manual lays them out:

- `<sid>.chunks.gz`: gzip of the raw bytes of the session, output and input interleaved in the
  order they happened.
- `<sid>.events.gz`: gzip of JSON lines, one event each, in order. Every event has `event` and
  `ms` (milliseconds since the session started):

  - first `{"event": "session.start", "ms": 0, "version": 1, "sid", "user", "login",
    "server_id", "server_hostname", "namespace", "size": "80:24", "time": ISO-8601 UTC}`
  - `{"event": "print", "ms", "offset", "bytes"}`: terminal output; `offset` and `bytes` place
    it in the chunks stream
  - `{"event": "input", "ms", "offset", "bytes"}`: keystrokes, placed the same way
  - `{"event": "resize", "ms", "size": "120:40"}`
  - last `{"event": "session.end", "ms", "time"}`

The writer compresses with a sync flush every time it is flushed, so a file cut short by a
crash still decompresses up to its last flush. A reader never trusts the files: it yields every
event it could read, then raises `RecordingDamaged` naming where the damage starts.

Replay (`replay()`) merges both files into one stream of events whose `print`/`input` events
carry their bytes in `data`; on the wire `data` is base64 (`to_wire_line`).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from teleport.errors import BadParameter, TeleportError

FORMAT_VERSION = 1
CHUNKS_SUFFIX = ".chunks.gz"
EVENTS_SUFFIX = ".events.gz"
FILE_MODE = 0o640
PRINT = "print"
INPUT = "input"
RESIZE = "resize"
START = "session.start"
END = "session.end"
#: Marker event a replay ends with when the recording is cut short or corrupted.
DAMAGED = "recording.damaged"
READ_SIZE = 64 * 1024
#: One events line is a few dozen bytes; anything this long is corruption, not an event.
MAX_LINE = 64 * 1024
_GZIP = 31  # zlib wbits for a gzip container


class RecordingDamaged(TeleportError):
    """The recording ends early or is corrupted; everything before the damage was replayed."""

    http_status = 422
    code = "recording_damaged"


def check_sid(sid: str) -> str:
    """Accept only a UUID as a session id, so it can never name a path outside the folder."""
    try:
        parsed = uuid.UUID(sid)
    except ValueError:
        raise BadParameter(f"invalid session id {sid!r}") from None
    if str(parsed) != sid:
        raise BadParameter(f"invalid session id {sid!r}")
    return sid


def paths(folder: Path, sid: str) -> tuple[Path, Path]:
    """Return the chunks and events files of a session in folder."""
    check_sid(sid)
    return folder / f"{sid}{CHUNKS_SUFFIX}", folder / f"{sid}{EVENTS_SUFFIX}"


class _GzipOut:
    """Append gzip data to a file, flushable to a readable point without ending the stream."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        os.fchmod(self.fd, FILE_MODE)
        self.zip = zlib.compressobj(6, zlib.DEFLATED, _GZIP)

    def write(self, data: bytes) -> None:
        write_all(self.fd, self.zip.compress(data))

    def flush(self) -> None:
        write_all(self.fd, self.zip.flush(zlib.Z_SYNC_FLUSH))

    def close(self) -> None:
        try:
            write_all(self.fd, self.zip.flush(zlib.Z_FINISH))
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


class _GzipBuffer:
    """The same gzip stream as `_GzipOut`, kept in memory for `take()`: what a sync upload sends."""

    def __init__(self) -> None:
        self.zip = zlib.compressobj(6, zlib.DEFLATED, _GZIP)
        self.pending = bytearray()

    def write(self, data: bytes) -> None:
        self.pending += self.zip.compress(data)

    def flush(self) -> None:
        # A sync flush always emits bytes, even with nothing new: an idle stream stays alive.
        self.pending += self.zip.flush(zlib.Z_SYNC_FLUSH)

    def close(self) -> None:
        self.pending += self.zip.flush(zlib.Z_FINISH)

    def take(self) -> bytes:
        data, self.pending = bytes(self.pending), bytearray()
        return data


def write_all(fd: int, data: bytes) -> None:
    """Write every byte: os.write may write less than asked."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class RecordingWriter:
    """Write one session's two files; blocking, so callers run it in a thread."""

    def __init__(self, folder: Path | None, sid: str, start: Mapping[str, Any]) -> None:
        self._chunks: _GzipOut | _GzipBuffer
        self._events: _GzipOut | _GzipBuffer
        if folder is None:  # kept in memory and sent as it is written (`take`)
            check_sid(sid)
            self._chunks, self._events = _GzipBuffer(), _GzipBuffer()
        else:
            chunks, events = paths(folder, sid)
            self._chunks = _GzipOut(chunks)
            self._events = _GzipOut(events)
        self.offset = 0
        self._event({**start, "event": START, "ms": 0, "version": FORMAT_VERSION, "sid": sid})

    def _event(self, event: Mapping[str, Any]) -> None:
        self._events.write(json.dumps(dict(event), separators=(",", ":")).encode() + b"\n")

    def data(self, kind: str, ms: int, data: bytes) -> None:
        """Append output (`print`) or keystrokes (`input`) that happened at ms."""
        self._chunks.write(data)
        self._event({"event": kind, "ms": ms, "offset": self.offset, "bytes": len(data)})
        self.offset += len(data)

    def resize(self, ms: int, cols: int, rows: int) -> None:
        self._event({"event": RESIZE, "ms": ms, "size": f"{cols}:{rows}"})

    def flush(self) -> None:
        """Make everything written so far readable, even if the process dies next."""
        self._chunks.flush()
        self._events.flush()

    def close(self, ms: int, time: str) -> None:
        """End both streams with the session's end; the files are complete afterwards."""
        self._event({"event": END, "ms": ms, "time": time})
        try:
            self._chunks.close()
        finally:
            self._events.close()

    def take(self) -> tuple[bytes, bytes]:
        """Return the compressed chunks and events written since the last take (in memory only)."""
        assert isinstance(self._chunks, _GzipBuffer) and isinstance(self._events, _GzipBuffer)
        return self._chunks.take(), self._events.take()


def gunzip(pieces: Iterable[bytes], what: str) -> Iterator[bytes]:
    """Decompress a gzip stream, yielding what is intact, then raise if it is damaged."""
    unzip = zlib.decompressobj(_GZIP)
    for piece in pieces:
        try:
            out = unzip.decompress(piece)
        except zlib.error as err:
            raise RecordingDamaged(f"{what} is corrupted ({err})") from None
        if out:
            yield out
        if unzip.eof:
            return
    try:
        tail = unzip.flush()
    except zlib.error as err:
        raise RecordingDamaged(f"{what} is corrupted ({err})") from None
    if tail:
        yield tail
    if not unzip.eof:
        raise RecordingDamaged(f"{what} is truncated")


def read_file(path: Path) -> Iterator[bytes]:
    """Yield a file in READ_SIZE pieces."""
    with open(path, "rb") as f:
        while piece := f.read(READ_SIZE):
            yield piece


def events(pieces: Iterable[bytes], what: str = "events file") -> Iterator[dict[str, Any]]:
    """Yield the events of a compressed events stream, raising at the first damage."""
    pending = b""
    for data in gunzip(pieces, what):
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield _parse(line, what)
        if len(pending) > MAX_LINE:
            raise RecordingDamaged(f"{what} is corrupted (a line is too long)")
    if pending.strip():
        raise RecordingDamaged(f"{what} is truncated (last line incomplete)")


def _parse(line: bytes, what: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RecordingDamaged(f"{what} is corrupted (not JSON)") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str) \
            or not isinstance(event.get("ms", 0), int):
        raise RecordingDamaged(f"{what} is corrupted (not an event)")
    return event


class _ByteStream:
    """Read exact byte counts from a decompressed stream without holding more than a piece."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buf = b""
        self.offset = 0

    def read(self, size: int) -> bytes:
        while len(self._buf) < size:
            piece = next(self._pieces, None)
            if piece is None:
                raise RecordingDamaged(f"chunks file is truncated at byte {self.offset + len(self._buf)}")
            self._buf += piece
        data, self._buf = self._buf[:size], self._buf[size:]
        self.offset += size
        return data


def replay(events_pieces: Iterable[bytes], chunks_pieces: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Yield the session's events in order, `print`/`input` ones with their bytes in `data`."""
    chunks = _ByteStream(gunzip(chunks_pieces, "chunks file"))
    for event in events(events_pieces):
        if event["event"] in (PRINT, INPUT):
            size, offset = event.get("bytes"), event.get("offset")
            if not isinstance(size, int) or size < 0 or offset != chunks.offset:
                raise RecordingDamaged(f"events file is corrupted (bad offset at {event['ms']} ms)")
            event = {**event, "data": chunks.read(size)}
        yield event


def to_wire_line(event: Mapping[str, Any]) -> bytes:
    """Encode a replayed event as one JSON line, its bytes as base64."""
    wire = dict(event)
    if isinstance(wire.get("data"), bytes):
        wire["data"] = base64.b64encode(wire["data"]).decode()
    return json.dumps(wire, separators=(",", ":")).encode() + b"\n"


def from_wire_line(line: bytes) -> dict[str, Any]:
    """Decode one line of a replay stream; `data` back to bytes."""
    event = _parse(line, "replay stream")
    if isinstance(event.get("data"), str):
        event["data"] = base64.b64decode(event["data"])
    return event
