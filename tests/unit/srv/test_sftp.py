"""What the SFTP audit reads from the packets, however the stream is cut."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from teleport.srv import sftp
from teleport.srv.sftp import SFTPAudit


def _s(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


def _pkt(kind: int, *parts: bytes) -> bytes:
    body = bytes([kind]) + b"".join(parts)
    return struct.pack(">I", len(body)) + body


def _id(n: int) -> bytes:
    return struct.pack(">I", n)


def _status(rid: int, code: int, message: str = "") -> bytes:
    return _pkt(sftp.FXP_STATUS, _id(rid), _id(code), _s(message), _s(""))


def _session(requests: bytes, answers: bytes, chunk: int) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    audit = SFTPAudit(lambda kind, fields: events.append((kind, fields)))
    audit.workdir = "/home/joe"
    for i in range(0, len(requests), chunk):
        audit.from_client(requests[i:i + chunk])
    for i in range(0, len(answers), chunk):
        audit.from_server(answers[i:i + chunk])
    audit.finish()
    return events


DATA = bytes(range(256)) * 40  # 10,240 bytes


def _upload_download() -> tuple[bytes, bytes]:
    no_attrs = _id(0)
    requests = b"".join([
        _pkt(sftp.FXP_INIT, _id(3)),
        _pkt(sftp.FXP_OPEN, _id(1), _s("up.bin"), _id(0x1A), _id(sftp.ATTR_PERMISSIONS), _id(0o644)),
        _pkt(sftp.FXP_WRITE, _id(2), _s(b"h1"), struct.pack(">Q", 0), _s(DATA)),
        _pkt(sftp.FXP_CLOSE, _id(3), _s(b"h1")),
        _pkt(sftp.FXP_OPEN, _id(4), _s("up.bin"), _id(1), no_attrs),
        _pkt(sftp.FXP_READ, _id(5), _s(b"h2"), struct.pack(">Q", 0), _id(32768)),
        _pkt(sftp.FXP_READ, _id(6), _s(b"h2"), struct.pack(">Q", len(DATA)), _id(32768)),
        _pkt(sftp.FXP_CLOSE, _id(7), _s(b"h2")),
        _pkt(sftp.FXP_SYMLINK, _id(8), _s("up.bin"), _s("link")),
        _pkt(sftp.FXP_EXTENDED, _id(9), _s("posix-rename@openssh.com"), _s("a"), _s("b")),
        _pkt(sftp.FXP_REMOVE, _id(10), _s(b"/root/\xff\n\"x")),
    ])
    answers = b"".join([
        _pkt(sftp.FXP_VERSION, _id(3)),
        _pkt(sftp.FXP_HANDLE, _id(1), _s(b"h1")),
        _status(2, 0), _status(3, 0),
        _pkt(sftp.FXP_HANDLE, _id(4), _s(b"h2")),
        _pkt(sftp.FXP_DATA, _id(5), _s(DATA)),
        _status(6, 1, "End of file"), _status(7, 0), _status(8, 0), _status(9, 0),
        _status(10, 3, "Permission denied"),
    ])
    return requests, answers


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_operations_and_bytes_whatever_the_chunking(chunk: int) -> None:
    events = _session(*_upload_download(), chunk=chunk)
    ops = [(f["action"], f["path"], f.get("target_path"), f["code"]) for kind, f in events
           if kind == "sftp"]
    assert ops == [(1, "up.bin", None, "TS001I"), (1, "up.bin", None, "TS001I"),
                   (18, "link", "up.bin", "TS018I"), (16, "a", "b", "TS016I"),
                   (11, "/root/\\xff\n\"x", None, "TS011E")]
    first = events[0][1]
    assert first["flags"] == 0x1A and first["attributes"] == {"permissions": 0o644}
    assert first["working_directory"] == "/home/joe"
    assert events[4][1]["error"] == "Permission denied"
    kind, summary = events[-1]
    assert kind == "sftp_summary"
    assert summary["file_transfer_stats"] == [
        {"path": "up.bin", "bytes_read": len(DATA), "bytes_written": len(DATA)}]


def test_an_oversized_message_is_reported_not_followed() -> None:
    events = _session(struct.pack(">I", sftp.MAX_MESSAGE + 1) + b"\x03" + b"x" * 100, b"", 50)
    assert events == [("sftp_summary", {"file_transfer_stats": [], "error": events[0][1]["error"]})]
    assert "could not be followed" in events[0][1]["error"]


def test_a_truncated_request_is_ignored() -> None:
    requests = _pkt(sftp.FXP_OPEN, _id(1), _id(99)) + _pkt(sftp.FXP_REMOVE, _id(2), _s("x"))
    events = _session(requests, _status(1, 4, "bad") + _status(2, 0), 3)
    assert [(k, f["path"]) for k, f in events] == [("sftp", "x")]


def test_no_sftp_server_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp, "SFTP_SERVER_PATHS", ("/nonexistent/sftp-server",))
    monkeypatch.setattr(sftp, "SSHD_CONFIG", "/nonexistent/sshd_config")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(sftp.NotFound, match="openssh-sftp-server"):
        sftp.find_sftp_server()
