"""Hold a new SSH connection silent until its source's throttle gives it a turn.

asyncssh writes its banner as soon as it has a transport, so the gate is the first protocol
of an accepted connection: it asks `teleport.api.throttle` for a token, keeps what the client
sends meanwhile, and then hands the transport to the SSH connection. A source with too many
unauthenticated connections gets OpenSSH's `Exceeded MaxStartups` line and is closed at once.
The SSH connection (`CertAuthConnection`) carries the slot on: it ends the slot's pending
count when the peer authenticates or the connection closes.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

from teleport.api.throttle import Slot, Throttle

#: What OpenSSH writes before closing a connection over MaxStartups; scanners count it.
EXCEEDED = b"Exceeded MaxStartups\r\n"
#: What a waiting client may send before we stop reading it (its banner and first KEXINIT).
MAX_BUFFER = 64 * 1024

#: The slot of a connection an acceptor (the port multiplexer) already throttled, for the SSH
#: connection made in its task by `serve_socket`.
ACCEPTED_SLOT: contextvars.ContextVar[Slot | None] = contextvars.ContextVar(
    "accepted_slot", default=None)

Make = Callable[[Slot | None], asyncio.Protocol]


def refuse(transport: asyncio.BaseTransport) -> None:
    """Say `Exceeded MaxStartups` and close, as OpenSSH does."""
    transport.write(EXCEEDED)  # type: ignore[attr-defined]
    transport.close()


class Gate(asyncio.Protocol):
    """Wait for a token of the peer's source, then hand the connection to `make(slot)`.

    slot: already counted (the node's address line named the source); else the transport's
    peer is counted at `connection_made`.
    """

    def __init__(self, throttle: Throttle, make: Make, slot: Slot | None = None) -> None:
        self._throttle = throttle
        self._make = make
        self._slot = slot
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._paused = False
        self._closed = False
        #: The SSH connection once handed: bytes a wrapper still delivers to us go on to it.
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self._slot is None:
            peer = transport.get_extra_info("peername")
            self._slot = self._throttle.enter(peer[0] if peer else "")
            if self._slot is None:
                self._closed = True
                refuse(transport)
                return
        waiter = self._slot.take()
        if waiter is None:
            self._hand()
        else:
            waiter.add_done_callback(lambda w: None if w.cancelled() else self._hand())

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
            return
        self._buffer += data
        if len(self._buffer) > MAX_BUFFER and not self._paused and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool | None:
        return None  # closes; connection_lost releases the slot

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._slot is not None:
            self._slot.release()

    def _hand(self) -> None:
        if self._closed or self._transport is None:
            return
        conn = self._inner = self._make(self._slot)
        self._transport.set_protocol(conn)
        conn.connection_made(self._transport)
        if self._buffer:
            conn.data_received(bytes(self._buffer))
            self._buffer.clear()
        if self._paused:
            self._transport.resume_reading()


__all__ = ["ACCEPTED_SLOT", "EXCEEDED", "Gate", "refuse"]
