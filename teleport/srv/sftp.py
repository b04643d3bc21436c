"""The `sftp` subsystem: OpenSSH's `sftp-server`, run as the login, audited from its packets.

The node starts the system's `sftp-server` exactly like a command (same child, same dropped
uid, gid and groups, same home directory), so every file access is decided by the kernel for
the login, never by the node's own user. What it does is audited here, by reading the SFTP
packets that pass through the session anyway, not from `sftp-server -l`'s log: its log lines
print paths unescaped (a file name holding a quote and a newline could forge a line), say
little about which request failed, and change between releases. The packets name the exact
path and pair each request with its answer by request id.

Events are Teleport's: `sftp` (one per open, setstat, listing, remove, mkdir, rmdir, rename,
symlink and link, `code` ending in `I` on success or `E` with `error` on failure; `action` is
Teleport's numbering) and one `sftp_summary` with the bytes read and written per file.
"""

from __future__ import annotations

import enum
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from teleport.errors import NotFound
from teleport.events.emitter import SFTP, SFTP_SUMMARY
from teleport.srv.process import OSLogin

#: Where distributions install OpenSSH's sftp-server (Debian/Ubuntu, RHEL/Fedora, Arch/Alpine,
#: openSUSE, macOS/BSD, Gentoo), tried in order before the sshd configuration and PATH.
SFTP_SERVER_PATHS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/ssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/misc/sftp-server",
)
SSHD_CONFIG = "/etc/ssh/sshd_config"
#: sftp-server ends the session on a longer message; a longer one here means we lost track.
MAX_MESSAGE = 256 * 1024

# Packet types (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks).
FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_CLOSE, FXP_READ, FXP_WRITE = 1, 2, 3, 4, 5, 6
FXP_SETSTAT, FXP_FSETSTAT, FXP_OPENDIR = 9, 10, 11
FXP_REMOVE, FXP_MKDIR, FXP_RMDIR, FXP_RENAME, FXP_SYMLINK = 13, 14, 15, 18, 20
FXP_STATUS, FXP_HANDLE, FXP_DATA = 101, 102, 103
FXP_EXTENDED = 200
FX_OK = 0
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8


class Action(enum.IntEnum):
    """Teleport's numbering of SFTP operations, which its `sftp` event and codes use."""

    OPEN = 1
    SETSTAT = 7
    FSETSTAT = 8
    READDIR = 10
    REMOVE = 11
    MKDIR = 12
    RMDIR = 13
    RENAME = 16
    SYMLINK = 18
    LINK = 19


def find_sftp_server() -> str:
    """Return the path of OpenSSH's sftp-server on this host, or say how to install it."""
    candidates = list(SFTP_SERVER_PATHS)
    try:
        with open(SSHD_CONFIG, encoding="utf-8", errors="replace") as config:
            for line in config:
                words = line.split()
                if len(words) >= 3 and words[0].lower() == "subsystem" and words[1] == "sftp":
                    candidates.append(words[2])
    except OSError:
        pass
    found = shutil.which("sftp-server")
    if found:
        candidates.append(found)
    for path in candidates:
        if os.path.isabs(path) and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise NotFound("sftp is not available on this node: install OpenSSH's sftp-server "
                   "(Debian: openssh-sftp-server)")


class _Reader:
    """Pull SFTP fields out of one packet body; a short body raises ValueError."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def u32(self) -> int:
        if self.pos + 4 > len(self.body):
            raise ValueError("short packet")
        (value,) = struct.unpack_from(">I", self.body, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        if self.pos + 8 > len(self.body):
            raise ValueError("short packet")
        (value,) = struct.unpack_from(">Q", self.body, self.pos)
        self.pos += 8
        return int(value)

    def raw(self) -> bytes:
        size = self.u32()
        if self.pos + size > len(self.body):
            raise ValueError("short packet")
        value = self.body[self.pos:self.pos + size]
        self.pos += size
        return value

    def text(self) -> str:
        # Names are bytes on Unix; keep what is not UTF-8 visible and JSON-safe.
        return self.raw().decode("utf-8", errors="backslashreplace")

    def attrs(self) -> dict[str, int]:
        flags = self.u32()
        found: dict[str, int] = {}
        if flags & ATTR_SIZE:
            found["file_size"] = self.u64()
        if flags & ATTR_UIDGID:
            found["uid"], found["gid"] = self.u32(), self.u32()
        if flags & ATTR_PERMISSIONS:
            found["permissions"] = self.u32()
        if flags & ATTR_ACMODTIME:
            found["access_time"], found["modification_time"] = self.u32(), self.u32()
        return found


class _Framer:
    """Cut one direction of the stream into packets, keeping only the head of bulk ones.

    Data packets (WRITE to the server, DATA from it) carry the file's bytes; only the fields
    before the bytes are kept, so a large transfer costs a few dozen bytes of parsing per
    packet, never a copy of the data.
    """

    def __init__(self, bulk: int, on_packet: Callable[[int, bytes, int], None]) -> None:
        self.bulk = bulk
        self.on_packet = on_packet
        self.head = bytearray()
        self.skip = 0
        self.lost = False

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.lost:
            if self.skip:
                step = min(self.skip, end - pos)
                self.skip -= step
                pos += step
                continue
            need, final = self._need()
            take = min(need - len(self.head), end - pos)
            self.head += data[pos:pos + take]
            pos += take
            if len(self.head) < need:
                continue
            if final:
                total = 4 + int.from_bytes(self.head[:4], "big")
                head, self.head = bytes(self.head), bytearray()
                self.skip = total - len(head)
                self.on_packet(head[4], head[5:], total - 5)

    def _need(self) -> tuple[int, bool]:
        """Return how many bytes of the packet to hold, and whether that is all it takes."""
        head = self.head
        if len(head) < 5:
            return 5, False
        length = int.from_bytes(head[:4], "big")
        if length < 1 or length > MAX_MESSAGE:
            self.lost = True
            return len(head), False
        total = 4 + length
        if head[4] != self.bulk:
            return total, True
        # type, id, then for WRITE: handle, offset, data length; for DATA: data length.
        if self.bulk == FXP_DATA:
            return min(13, total), True
        if len(head) < 13:
            return min(13, total), total <= 13
        handle = int.from_bytes(head[9:13], "big")
        return min(13 + handle + 12, total), True


@dataclass
class _File:
    path: str
    read: int = 0
    written: int = 0


class SFTPAudit:
    """Follow one SFTP session's requests and answers and report what was done to which file."""

    def __init__(self, emit: Callable[[str, dict[str, Any]], None]) -> None:
        #: Called with (event type, fields) for every event, in order.
        self.emit = emit
        #: Where relative paths start: the login's home, as the server runs there.
        self.workdir = "/"
        self._requests = _Framer(FXP_WRITE, self._request)
        self._answers = _Framer(FXP_DATA, self._answer)
        self._pending: dict[int, tuple[Any, ...]] = {}
        self._handles: dict[bytes, _File] = {}
        self._totals: dict[str, _File] = {}

    def start(self, login: OSLogin) -> str:
        """Return the sftp-server to run as `login` (in its home, as `Child` does)."""
        self.workdir = login.home if os.path.isdir(login.home) else "/"
        return find_sftp_server()

    def from_client(self, data: bytes) -> None:
        self._requests.feed(data)

    def from_server(self, data: bytes) -> None:
        self._answers.feed(data)

    def finish(self) -> None:
        """Report the bytes moved per file: call once, when the server has exited."""
        for handle in list(self._handles):
            self._closed(handle)
        fields: dict[str, Any] = {"file_transfer_stats": [
            {"path": f.path, "bytes_read": f.read, "bytes_written": f.written}
            for f in self._totals.values() if f.read or f.written]}
        if self._requests.lost or self._answers.lost:
            # Only a broken client or server gets here: sftp-server ends the session itself.
            fields["error"] = "the SFTP stream could not be followed past an oversized message"
        if fields["file_transfer_stats"] or "error" in fields:
            self.emit(SFTP_SUMMARY, fields)

    # --- the client's requests ---------------------------------------------------------------

    def _request(self, kind: int, body: bytes, size: int) -> None:
        try:
            self._parse_request(kind, _Reader(body), size)
        except ValueError:
            pass  # a malformed request: sftp-server refuses it as well

    def _parse_request(self, kind: int, r: _Reader, size: int) -> None:
        if kind == FXP_INIT:
            return
        rid = r.u32()
        if kind == FXP_WRITE:
            handle = r.raw()
            r.u64()
            self._pending[rid] = ("write", handle, r.u32())
        elif kind == FXP_READ:
            self._pending[rid] = ("read", r.raw())
        elif kind == FXP_CLOSE:
            self._pending[rid] = ("close", r.raw())
        elif kind == FXP_OPEN:
            path = r.text()
            flags = r.u32()
            self._op(rid, Action.OPEN, path=path, flags=flags, attrs=r.attrs())
        elif kind == FXP_OPENDIR:
            self._op(rid, Action.READDIR, path=r.text())
        elif kind == FXP_SETSTAT:
            self._op(rid, Action.SETSTAT, path=r.text(), attrs=r.attrs())
        elif kind == FXP_FSETSTAT:
            handle = r.raw()
            known = self._handles.get(handle)
            self._op(rid, Action.FSETSTAT, path=known.path if known else "", attrs=r.attrs())
        elif kind == FXP_REMOVE:
            self._op(rid, Action.REMOVE, path=r.text())
        elif kind == FXP_MKDIR:
            self._op(rid, Action.MKDIR, path=r.text(), attrs=r.attrs())
        elif kind == FXP_RMDIR:
            self._op(rid, Action.RMDIR, path=r.text())
        elif kind == FXP_RENAME:
            self._op(rid, Action.RENAME, path=r.text(), target=r.text())
        elif kind == FXP_SYMLINK:
            # OpenSSH sends the link's target first (PROTOCOL, "SSH2_FXP_SYMLINK").
            target = r.text()
            self._op(rid, Action.SYMLINK, path=r.text(), target=target)
        elif kind == FXP_EXTENDED:
            name = r.raw()
            if name == b"posix-rename@openssh.com":
                self._op(rid, Action.RENAME, path=r.text(), target=r.text())
            elif name == b"hardlink@openssh.com":
                self._op(rid, Action.LINK, path=r.text(), target=r.text())
            elif name == b"lsetstat@openssh.com":
                self._op(rid, Action.SETSTAT, path=r.text(), attrs=r.attrs())

    def _op(self, rid: int, action: Action, *, path: str, target: str | None = None,
            flags: int | None = None, attrs: dict[str, int] | None = None) -> None:
        fields: dict[str, Any] = {"action": int(action), "path": path}
        if target is not None:
            fields["target_path"] = target
        if flags is not None:
            fields["flags"] = flags
        if attrs:
            fields["attributes"] = attrs
        fields["working_directory"] = self.workdir
        self._pending[rid] = ("op", action, fields)

    # --- the server's answers ----------------------------------------------------------------

    def _answer(self, kind: int, body: bytes, size: int) -> None:
        try:
            self._parse_answer(kind, _Reader(body), size)
        except ValueError:
            pass

    def _parse_answer(self, kind: int, r: _Reader, size: int) -> None:
        if kind == FXP_VERSION:
            return
        pending = self._pending.pop(r.u32(), None)
        if pending is None:
            return
        status, error = FX_OK, ""
        if kind == FXP_STATUS:
            status = r.u32()
            error = r.text() or f"status {status}"
        what = pending[0]
        if what == "write":
            if status == FX_OK and pending[1] in self._handles:
                self._handles[pending[1]].written += pending[2]
        elif what == "read":
            if kind == FXP_DATA and pending[1] in self._handles:
                self._handles[pending[1]].read += r.u32()
        elif what == "close":
            self._closed(pending[1])
        else:
            action, fields = pending[1], pending[2]
            if kind == FXP_HANDLE and action == Action.OPEN:
                self._handles[r.raw()] = _File(fields["path"])
            ok = status == FX_OK
            fields["code"] = f"TS{int(action):03d}{'I' if ok else 'E'}"
            if not ok:
                fields["error"] = error
            self.emit(SFTP, fields)

    def _closed(self, handle: bytes) -> None:
        done = self._handles.pop(handle, None)
        if done is None:
            return
        total = self._totals.setdefault(done.path, _File(done.path))
        total.read += done.read
        total.written += done.written
