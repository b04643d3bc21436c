"""Hand an SSH connection's socket one write per event loop turn instead of one per packet.

asyncssh writes every packet to its transport on its own, and an event loop sends each write
at once when nothing is queued: bulk data cost a send() and a TCP segment per 32 KiB packet,
and the peer a wake-up per segment. `BatchingTransport` keeps the packets written during one
turn of the loop and passes them on together at its end (`writelines`, one `writev` under
uvloop), so a 128 KiB read spliced into four packets is one system call. Order is kept, and
nothing waits longer than the rest of the current turn: interactive echo is not delayed.
"""

from __future__ import annotations

import asyncio
from typing import Any


class BatchingTransport:
    """Wrap a transport so that writes made in one loop turn reach it as one `writelines`."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._pending_size = 0

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)
        self._pending_size += len(data)

    def writelines(self, data: Any) -> None:
        for piece in data:
            self.write(piece)

    def flush(self) -> None:
        """Pass what was written on to the transport (a no-op once it is closing)."""
        if not self._pending:
            return
        pending, self._pending, self._pending_size = self._pending, [], 0
        if self.transport.is_closing():
            return
        if len(pending) == 1:
            self.transport.write(pending[0])
        else:
            self.transport.writelines(pending)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self._pending_size

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        # What was written before an abort went out at once before batching (asyncssh's
        # disconnect message, say): it still does.
        self.flush()
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (extra info, reading, buffer limits) is the transport's own.
        return getattr(self.transport, name)


__all__ = ["BatchingTransport"]
