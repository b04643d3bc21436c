r"""Send a node's or proxy's audit events off the critical path: `emit()` returns at once.

A command's exit used to wait for its events' round trip to the auth server, and with the auth
server unreachable for every address's timeout. Here `emit()` queues the event and returns; one
sender task delivers the events in order. When the auth server cannot take them, the queue and
every later event go to a spool file (0600 in a 0700 folder) that is delivered in order when it
returns, also after a restart:

    emit() --(not spooling, queue not full)--> memory queue --+--> sender --> sink (auth API)
          \--(spooling)----------------------> spool file ----/

One invariant keeps the order: while spooling the queue is empty, and the spool is empty
otherwise; the switch (a failed delivery, or a full queue) moves the queue into the spool first.
The spool is bounded: past `max_spool_bytes` events are dropped, counted in
`teleport_audit_events_dropped_total` and logged once per episode; nothing ever waits on it.
The host's `time` travels with the event; the auth server keeps it within bounds
(`emitter.HOST_TIME_MAX_AGE`), so a late event still says when it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from teleport.errors import ConnectionProblem, LimitExceeded, TeleportError
from teleport.events.emitter import Emitter
from teleport.events.filelog import encode_line
from teleport.metrics import AUDIT_DROPPED, AUDIT_FAILURES, AUDIT_PENDING
from teleport.utils.fs import ensure_private_dir
from teleport.utils.waits import wait_event

log = logging.getLogger("teleport.audit")

SPOOL_FILE = "events.jsonl"
#: The spool file's inode and the byte offset of its first undelivered line.
OFFSET_FILE = "events.offset"
_OFFSET_RECORD = "{:20d} {:20d}\n"


class BufferedEmitter:
    """An Emitter that queues and returns; its own task delivers to `sink`, spooling on failure.

    An async context manager (`start()`/`close()`); on close pending events get `close_grace`
    seconds to reach the auth server and the rest stay in the spool for the next start.
    """

    def __init__(self, sink: Emitter, spool_dir: Path, *, component: str = "node",
                 max_queue: int = 1000, max_spool_bytes: int = 64 << 20,
                 close_grace: float = 2.0, min_retry: float = 0.5,
                 max_retry: float = 5.0, target: str = "the auth server") -> None:
        self.sink = sink
        #: Who the sink delivers to, for messages.
        self.target = target
        self.component = component
        self.max_queue = max_queue
        self.close_grace = close_grace
        self.min_retry = min_retry
        self.max_retry = max_retry
        self.spool = Spool(spool_dir, max_spool_bytes)
        self._queue: deque[bytes] = deque()
        # Spooling: the spool holds every pending event; otherwise the queue does.
        self._spooling = self.spool.count > 0
        # Set by emit() when the queue's head, out for delivery, was moved into the spool.
        self._head_spilled = False
        self._wake = asyncio.Event()
        #: Set while nothing is pending, so close() can wait for the last events to go out.
        self._drained = asyncio.Event()
        if not self.pending:
            self._drained.set()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._full = False
        AUDIT_PENDING.labels(component).set_function(lambda: self.pending)

    @property
    def pending(self) -> int:
        """Events not yet delivered: queued in memory or in the spool."""
        return len(self._queue) + self.spool.count

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the sender; events spooled before a restart go first."""
        if self._task is None and not self._closing.is_set():
            self._task = asyncio.create_task(self._run(), name=f"audit-sender-{self.component}")

    async def emit(self, event: Mapping[str, Any]) -> None:
        """Queue the event and return without waiting for the auth server; never raises."""
        line = encode_line(event).encode()
        self._drained.clear()
        if self._closing.is_set():  # after close (a session hung up late): straight to disk
            self._append([line])
            self.spool.close()
        elif self._spooling:
            self._append([line])
        elif len(self._queue) >= self.max_queue:
            # The auth server is slow rather than gone: older events go to the spool first.
            self._head_spilled = self._task is not None and bool(self._queue)
            self._spill([*self._queue, line])
        else:
            self._queue.append(line)
        self._wake.set()

    async def close(self) -> None:
        """Give pending events a short grace to be delivered, then leave the rest spooled."""
        if self._closing.is_set():
            return
        task = self._task
        if task is not None:
            await wait_event(self._drained, self.close_grace)
            self._closing.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._closing.set()
        # An event cancelled mid-delivery is kept: a duplicate is better than a lost event.
        if self._queue:
            self._spill(list(self._queue))
        if self.pending:
            log.info("%d audit events stay in %s until the auth server takes them",
                     self.pending, self.spool.path)
        self.spool.close()

    # --- the sender ----------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.min_retry
        while not self._closing.is_set():
            try:
                delivered = await self._step()
            except Exception:  # a spool I/O error: log it, never let the sender die
                log.exception("audit sender (%s) failed; retrying", self.component)
                delivered = False
            if delivered is None:
                continue
            delay = self.min_retry if delivered else await self._back_off(delay)

    async def _step(self) -> bool | None:
        """Deliver the oldest pending event; None when there was nothing to try."""
        if self._spooling:
            line = self.spool.peek()
            if line is None:
                self.spool.clear()
                self._spooling = False
                log.info("audit events spooled while the auth server was away are delivered")
                return None
            await self.spool.sync()
            if not await self._deliver(line):
                return False
            self.spool.advance(len(line))
            return True
        if not self._queue:
            self._drained.set()
            self._wake.clear()
            await self._wake.wait()
            return None
        line = self._queue[0]
        self._head_spilled = False
        done = await self._deliver(line)
        if self._head_spilled:  # emit() moved it to the head of the spool meanwhile
            if done:
                self.spool.advance(len(line))
            return done
        if not done:
            self._spill(list(self._queue))
            return False
        self._queue.popleft()
        return True

    async def _deliver(self, line: bytes) -> bool:
        """Send one event; False when it should be tried again later (auth server away)."""
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("skipping a damaged line in %s", self.spool.path)
            return True
        try:
            await self.sink.emit(event)
        except (ConnectionProblem, LimitExceeded) as err:
            self._note_failure(err)
            return False
        except TeleportError as err:
            if type(err) is TeleportError:  # an internal error of the auth server: try again
                self._note_failure(err)
                return False
            AUDIT_FAILURES.inc()
            log.warning("%s refused a %s audit event, dropping it: %s",
                        self.target, event.get("event"), err)
            return True
        except Exception as err:  # noqa: BLE001 - a transport failure not mapped yet: try again
            self._note_failure(err)
            return False
        return True

    def _note_failure(self, err: BaseException) -> None:
        if not self._spooling:
            log.warning("cannot send audit events to %s (%s); keeping them in %s",
                        self.target, err or type(err).__name__, self.spool.path)
        else:
            log.debug("audit events still pending: %s", err)

    async def _back_off(self, delay: float) -> float:
        await wait_event(self._closing, delay * random.uniform(0.5, 1.0))
        return min(delay * 2, self.max_retry)

    # --- the spool -----------------------------------------------------------------------------

    def _spill(self, lines: list[bytes]) -> None:
        """Move lines (the whole queue, oldest first) into the spool and spool from now on."""
        self._queue.clear()
        self._spooling = True
        self._append(lines)

    def _append(self, lines: list[bytes]) -> None:
        try:
            dropped = self.spool.append(lines)
        except OSError as err:  # a full or broken disk: count and log, never raise to a session
            log.error("cannot write audit spool %s: %s", self.spool.path, err.strerror or err)
            dropped = len(lines)
        if dropped:
            AUDIT_DROPPED.labels(self.component).inc(dropped)
            if not self._full:
                log.error("audit spool %s is full (%d bytes): dropping new events until the "
                          "auth server takes the spooled ones", self.spool.path, self.spool.max_bytes)
            self._full = True
        else:
            self._full = False


class Spool:
    """An append-only file of JSON lines and the offset of its first undelivered line.

    The offset file names the spool file's inode, so a compaction that crashes halfway can
    neither skip events nor send the delivered ones again.
    """

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = ensure_private_dir(folder)
        self.path = self.folder / SPOOL_FILE
        self.max_bytes = max_bytes
        self.count = 0
        self.offset = 0
        self._fd: int | None = None
        self._ofd: int | None = None
        self._dirty = False
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self._ofd = os.open(self.folder / OFFSET_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(self._ofd, 0o600)
        inode, offset = _read_offset(os.pread(self._ofd, 64, 0))
        size = os.fstat(self._fd).st_size
        self.offset = offset if inode == os.fstat(self._fd).st_ino and offset <= size else 0
        # Count the pending lines; a line cut short by a crash is removed.
        end, self.count, pos = self.offset, 0, self.offset
        while chunk := os.pread(self._fd, 1 << 20, pos):
            self.count += chunk.count(b"\n")
            if b"\n" in chunk:
                end = pos + chunk.rindex(b"\n") + 1
            pos += len(chunk)
        if end < size:
            os.ftruncate(self._fd, end)

    @property
    def size(self) -> int:
        """Bytes in the spool file, delivered ones included until the next compaction."""
        return os.fstat(self._fd_()).st_size

    def _fd_(self) -> int:
        if self._fd is None:  # emit() after close(): reopen so late events are kept too
            self._open()
        assert self._fd is not None
        return self._fd

    def append(self, lines: list[bytes]) -> int:
        """Write lines after the last; return how many did not fit."""
        fd = self._fd_()
        room = self.max_bytes - (self.size - self.offset)
        taken = []
        for line in lines:
            if len(line) > room:
                break
            taken.append(line)
            room -= len(line)
        if taken:
            os.write(fd, b"".join(taken))
            self.count += len(taken)
            self._dirty = True
        return len(lines) - len(taken)

    def peek(self) -> bytes | None:
        """Return the first undelivered line, or None when everything was delivered."""
        fd, parts, pos = self._fd_(), [], self.offset
        while chunk := os.pread(fd, 1 << 16, pos):
            cut = chunk.find(b"\n")
            if cut >= 0:
                parts.append(chunk[:cut + 1])
                return b"".join(parts)
            parts.append(chunk)
            pos += len(chunk)
        return None

    def advance(self, length: int) -> None:
        """Mark the first undelivered line (of length bytes) delivered."""
        self.offset += length
        self.count = max(0, self.count - 1)
        self._save_offset()
        if self.offset >= self.max_bytes // 4:
            self._compact()

    def clear(self) -> None:
        """Empty the spool once everything in it was delivered."""
        os.ftruncate(self._fd_(), 0)
        self.offset, self.count = 0, 0
        self._save_offset()

    async def sync(self) -> None:
        """Make what was appended durable, off the event loop."""
        if self._dirty and self._fd is not None:
            self._dirty = False
            await asyncio.to_thread(os.fsync, self._fd)

    def close(self) -> None:
        for fd in (self._fd, self._ofd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                os.close(fd)
        self._fd = self._ofd = None

    def _save_offset(self) -> None:
        assert self._ofd is not None
        record = _OFFSET_RECORD.format(os.fstat(self._fd_()).st_ino, self.offset).encode()
        os.pwrite(self._ofd, record, 0)

    def _compact(self) -> None:
        """Drop the delivered lines: copy the rest to a new file that replaces the old one."""
        tmp = self.folder / f".{SPOOL_FILE}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        pos = self.offset
        while chunk := os.pread(self._fd_(), 1 << 20, pos):
            os.write(fd, chunk)
            pos += len(chunk)
        os.fsync(fd)
        os.replace(tmp, self.path)
        old, self._fd, self.offset = self._fd, fd, 0
        if old is not None:
            os.close(old)
        self._save_offset()


def _read_offset(raw: bytes) -> tuple[int, int]:
    """Parse the offset file; anything unreadable means start from the beginning."""
    try:
        inode, offset = (int(v) for v in raw.split())
    except ValueError:
        return -1, 0
    return inode, max(0, offset)
