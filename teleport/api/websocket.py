"""A websocket client over one of `h1`'s connections, with wsproto for the protocol.

For the auth API's streams where the client speaks and the server answers each message in turn
(a host's keep-alives, `teleport.auth.client.KeepAlives`): one connection and one exchange of
small frames per message, instead of an HTTP request whose objects an idle keep-alive
connection holds on the server until the next one. wsproto is h11's sibling: a state machine
of the protocol that leaves sockets, TLS and timeouts to us, as h11 does for `h1`.

Every failure is an `OSError` or a `TimeoutError`, as `h1`'s: `Rejected` (the server answered
the upgrade with an HTTP error), `h1.ServerDisconnected` (it closed or hung up),
`h1.ProtocolError` (what came is not the protocol).
"""

from __future__ import annotations

import asyncio

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from teleport.api.h1 import READ_SIZE, ProtocolError, ServerDisconnected

#: The largest answer accepted (an error's message at most).
MAX_MESSAGE = 64 * 1024


class Rejected(OSError):
    """The server answered the upgrade with an HTTP status instead: `body` says why."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class WebSocket:
    """One client websocket; `open` it, then `send` and `receive` text messages in turn."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._pending: list[Event] = []

    @classmethod
    async def open(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   authority: str, target: str) -> WebSocket:
        """Ask the server at authority to upgrade target to a websocket; raise Rejected when
        it answers with anything but the switch."""
        ws = cls(reader, writer)
        try:
            await ws._write(ws._ws.send(Request(host=authority, target=target)))
            status, body = 0, b""
            while True:
                event = await ws._next_event()
                if isinstance(event, AcceptConnection):
                    return ws
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise Rejected(status, body)
                elif isinstance(event, RejectData):
                    body += event.data
                    if len(body) > MAX_MESSAGE:
                        raise ProtocolError("the server's refusal is too long")
                    if event.body_finished:
                        raise Rejected(status, body)
        except BaseException:
            ws.abort()
            raise

    async def send(self, text: str) -> None:
        try:
            data = self._ws.send(Message(data=text))
        except LocalProtocolError:  # its close came with the last answer
            raise ServerDisconnected("the server closed the stream") from None
        await self._write(data)

    async def receive(self) -> str:
        """Return the next text message (answering pings meanwhile)."""
        parts: list[str] = []
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, TextMessage):
                parts.append(event.data)
                size += len(event.data)
                if size > MAX_MESSAGE:
                    raise ProtocolError("the server's message is too long")
                if event.message_finished:
                    return "".join(parts)
            elif isinstance(event, Ping):
                await self._write(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                raise ServerDisconnected(f"the server closed the stream ({event.code}"
                                         f"{': ' + event.reason if event.reason else ''})")
            elif isinstance(event, BytesMessage):
                raise ProtocolError("the server sent binary data")

    def abort(self) -> None:
        """Close the connection without a closing handshake (the server sees it end)."""
        self._writer.close()

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def _next_event(self) -> Event:
        while not self._pending:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise ServerDisconnected("the server hung up")
            try:
                self._ws.receive_data(data)
                self._pending.extend(self._ws.events())
            except (LocalProtocolError, RemoteProtocolError) as err:
                raise ProtocolError(f"not a websocket: {err}") from None
        return self._pending.pop(0)
