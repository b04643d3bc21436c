"""HTTP/1.1 over asyncio streams, with h11 for the protocol and a pool of kept-alive connections.

The transport under `teleport.api.http`. It was aiohttp's client, whose import alone (with the
system CA bundle it loads at import) cost a `tsh ls` more than its whole budget of 150 ms; h11
is a small, well-kept state machine of the protocol and leaves sockets, TLS and timeouts to us.

Every failure is an `OSError` (TLS errors are ones too) or a `TimeoutError`, typed enough for a
caller to say what went wrong: `ConnectFailed` (no TCP connection), `ssl.SSLError` (the TLS
handshake), `ServerDisconnected` (the peer hung up, or TLS broke, after the handshake),
`ProtocolError` (the answer is not HTTP/1.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import h11

#: How long an idle connection is kept for the next request (the servers keep theirs longer).
IDLE_SECONDS = 15.0
#: At most this many idle connections per destination.
MAX_IDLE = 32
#: The size of one read from a socket.
READ_SIZE = 256 * 1024


class ConnectFailed(OSError):
    """No TCP connection could be made; `os_error` is what the OS said."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(os_error.errno, os_error.strerror or str(os_error))
        self.os_error = os_error


class ServerDisconnected(ConnectionError):
    """The server hung up (or TLS broke) before its answer was complete."""


class ProtocolError(OSError):
    """The bytes the server sent are not an HTTP/1.1 answer."""


@dataclass(frozen=True)
class Timeouts:
    """`total` bounds a whole request and answer, `connect` the TCP and TLS set-up, `read` each
    wait for bytes from the server (None: no bound)."""

    total: float | None
    connect: float
    read: float | None


@dataclass(frozen=True)
class Destination:
    """Where a connection goes: the address dialled, the TLS context and the name it proves.

    `tunnel` opens the TCP connection through an HTTP CONNECT proxy (None: directly).
    """

    host: str
    port: int
    ssl: ssl.SSLContext
    server_hostname: str | None
    tunnel: Callable[[], Awaitable[object]] | None = None

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Response:
    """An answer whose head has arrived; read its body with `read` or `iter_any`, then close
    it (or use it as an async context manager) to give the connection back."""

    def __init__(self, conn: _Connection, head: h11.Response, deadline: float | None,
                 read_timeout: float | None) -> None:
        self.status = head.status_code
        self.reason = head.reason.decode("latin-1", "replace")
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers}
        self._conn: _Connection | None = conn
        self._deadline = deadline
        self._read_timeout = read_timeout

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Yield the body in pieces as they arrive."""
        conn = self._conn
        if conn is None:
            return
        while True:
            event = await conn.next_event(self._deadline, self._read_timeout)
            if isinstance(event, h11.Data):
                if event.data:
                    yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._conn = None
                conn.release()
                return
            else:
                raise ServerDisconnected("the server hung up before the end of its answer")

    async def read(self) -> bytes:
        """Return the whole body."""
        return b"".join([piece async for piece in self.iter_any()])

    def close(self) -> None:
        """Give the connection back; an answer not read to its end closes it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _Connection:
    def __init__(self, pool: Pool, dest: Destination, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.pool = pool
        self.dest = dest
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        return (not self.writer.is_closing() and not self.reader.at_eof()
                and time.monotonic() - self.idle_since < IDLE_SECONDS)

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def next_event(self, deadline: float | None, read_timeout: float | None) -> h11.Event:
        eof = False
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as err:
                if eof:  # cut off mid-head or mid-body
                    raise ServerDisconnected(
                        "the server hung up before the end of its answer") from None
                raise ProtocolError(f"not an HTTP/1.1 answer: {err}") from None
            if isinstance(event, h11.Event):
                return event
            try:
                async with asyncio.timeout(_bound(deadline, read_timeout)):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                raise
            except OSError as err:  # ssl.SSLError included: TLS broke after the handshake
                raise ServerDisconnected(str(err) or type(err).__name__) from None
            if not data and self.h11.their_state is h11.SEND_RESPONSE:
                raise ServerDisconnected("the server hung up without answering")
            eof = not data
            try:
                self.h11.receive_data(data)
            except h11.RemoteProtocolError as err:
                raise ProtocolError(f"not an HTTP/1.1 answer: {err}") from None

    def release(self) -> None:
        """The answer was read to its end: keep the connection if both sides may go on."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.idle_since = time.monotonic()
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        self.writer.close()


def _drop_stale(idle: list[_Connection]) -> None:
    """Close the idle connections that are no longer usable, oldest (first put) first."""
    while idle and not idle[0].usable():
        idle.pop(0).close()


class Pool:
    """Kept-alive connections per destination; one request at a time on each connection."""

    def __init__(self) -> None:
        self._idle: dict[Destination, list[_Connection]] = {}
        self._closed = False
        self._prune_timer: asyncio.TimerHandle | None = None

    def put(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.dest, [])
        _drop_stale(idle)
        if self._closed or len(idle) >= MAX_IDLE:
            conn.close()
        else:
            idle.append(conn)
            self._schedule_prune()

    def _schedule_prune(self) -> None:
        """Close what outlived IDLE_SECONDS even if no request comes: `_take` reuses the newest
        connection, so after a burst (sessions ending together, each with its audit and
        unlisting calls) the others would stay open for good, ~0.5 MiB of TLS buffers each
        counting both ends."""
        if self._prune_timer is None and not self._closed:
            self._prune_timer = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._prune)

    def _prune(self) -> None:
        self._prune_timer = None
        for idle in self._idle.values():
            _drop_stale(idle)
        if any(self._idle.values()):
            self._schedule_prune()

    def _take(self, dest: Destination) -> _Connection | None:
        idle = self._idle.get(dest)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def drop_idle(self) -> None:
        """Close every idle connection (new ones use the current settings)."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def close(self) -> None:
        self._closed = True
        if self._prune_timer is not None:
            self._prune_timer.cancel()
            self._prune_timer = None
        self.drop_idle()

    async def request(self, dest: Destination, method: str, target: str, *,
                      headers: list[tuple[str, str]], body: bytes | AsyncIterable[bytes] | None,
                      timeouts: Timeouts) -> Response:
        """Send one request; return the answer once its head has arrived."""
        deadline = None if timeouts.total is None else time.monotonic() + timeouts.total
        conn = self._take(dest)
        if conn is None:
            conn = await self._connect(dest, timeouts.connect, deadline)
        try:
            head = await _exchange(conn, method, target, headers, body, deadline, timeouts.read)
        except BaseException:
            conn.close()
            raise
        return Response(conn, head, deadline, timeouts.read)

    async def _connect(self, dest: Destination, connect: float,
                       deadline: float | None) -> _Connection:
        async with asyncio.timeout(_bound(deadline, connect)):
            sock = await dest.tunnel() if dest.tunnel is not None else None
            try:
                if sock is not None:
                    reader, writer = await asyncio.open_connection(
                        sock=sock, ssl=dest.ssl, server_hostname=dest.server_hostname or dest.host,
                        limit=READ_SIZE)
                else:
                    reader, writer = await asyncio.open_connection(
                        dest.host, dest.port, ssl=dest.ssl, limit=READ_SIZE,
                        server_hostname=dest.server_hostname or dest.host)
            except ssl.SSLError:
                raise
            except OSError as err:
                raise ConnectFailed(err) from None
        return _Connection(self, dest, reader, writer)


async def _exchange(conn: _Connection, method: str, target: str,
                    headers: list[tuple[str, str]], body: bytes | AsyncIterable[bytes] | None,
                    deadline: float | None, read_timeout: float | None) -> h11.Response:
    head = [("Host", conn.dest.authority), *headers]
    if isinstance(body, bytes):
        head.append(("Content-Length", str(len(body))))
    elif body is not None:
        head.append(("Transfer-Encoding", "chunked"))
    elif method in ("POST", "PUT", "PATCH"):
        head.append(("Content-Length", "0"))
    try:
        async with asyncio.timeout(_bound(deadline, None)):
            await conn.send(h11.Request(method=method, target=target, headers=head))
            if isinstance(body, bytes):
                if body:
                    await conn.send(h11.Data(data=body))
            elif body is not None:
                async for piece in body:
                    if piece:
                        await conn.send(h11.Data(data=piece))
            await conn.send(h11.EndOfMessage())
    except OSError as err:
        # The server may have answered early (a body too big) and closed: read its answer.
        with contextlib.suppress(OSError, TimeoutError):
            event = await conn.next_event(deadline, read_timeout)
            if isinstance(event, h11.Response):
                return event
        raise ServerDisconnected(str(err) or type(err).__name__) from None
    while True:
        event = await conn.next_event(deadline, read_timeout)
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            raise ServerDisconnected("the server hung up without answering")
        if not isinstance(event, h11.InformationalResponse):
            raise ProtocolError(f"unexpected {type(event).__name__} before the answer")


def _bound(deadline: float | None, wait: float | None) -> float | None:
    """The relative time left for one step: the shorter of `wait` and what the deadline allows."""
    if deadline is None:
        return wait
    left = max(0.0, deadline - time.monotonic())
    return left if wait is None else min(left, wait)


__all__ = ["ConnectFailed", "Destination", "Pool", "ProtocolError", "Response",
           "ServerDisconnected", "Timeouts"]
