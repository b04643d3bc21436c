"""Serve several protocols on one port, told apart by the first bytes the client sends.

When `tunnel_listen_addr` equals `web_listen_addr` the proxy's web port also speaks SSH, so a
user (or, later, a node's reverse tunnel) needs one open port. Both protocols have the client
speak first: a TLS client opens with a ClientHello record (`0x16 0x03 ...`), an SSH client with
its `SSH-2.0-...` identification line. The multiplexer peeks at those bytes without reading
them (MSG_PEEK), so the server it hands the socket to sees the connection from its first byte.

With a `Protocol.AUTH` handler, TLS is told apart once more by the server name (SNI) of its
ClientHello: a name under `teleport.cluster.local` (what joining nodes and auth clients send)
goes to that handler, which relays it unopened to the auth server (`authrelay`), so TLS ends
there and a node behind NAT needs only this port; any other name, or none, goes to the web
server. The multiplexer then peeks until the whole first record is there (at most one 16 KiB
record, within the same wait); a longer record is refused, and a ClientHello it cannot parse
goes to the web server, whose TLS refuses it as before. Likewise, with a `Protocol.TUNNEL`
handler, SSH whose identification line is a reverse tunnel agent's (`SSH-2.0-Teleport-Tunnel`)
goes there and other SSH (users' `ssh -J`) to the SSH handler; the line proves nothing, the
tunnel server still accepts only node certificates.

A peer that sends nothing within the wait (`DETECT_TIMEOUT`), or bytes of another protocol,
is closed; a PROXY protocol header is refused too (no load balancer support yet). Sockets
still waiting for their first bytes belong to the multiplexer and are closed by `close()`;
once handed over they belong to the server that took them (aiohttp's runner, the SSH
listener), whose own close ends them.

The auth API's port (3025) is accepted here too, with a TLS handler only, so its new
connections are paced per source (`throttle`) before any TLS handshake; other bytes are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType

from teleport.api.throttle import Slot, Throttle
from teleport.errors import BadParameter
from teleport.keys.authname import is_reserved_name
from teleport.proxy import clienthello
from teleport.sshutils.gate import ACCEPTED_SLOT
from teleport.sshutils.reversetunnel import TUNNEL_BANNER
from teleport.utils.supervisor import Supervisor

log = logging.getLogger("teleport.proxy.mux")

#: How long a new connection may take to send its first bytes. Clients send them at once
#: (a ClientHello, an SSH banner), so only an idle or hostile peer is cut by this.
DETECT_TIMEOUT = 5.0
#: Enough to tell every protocol below apart.
PEEK_BYTES = 8
#: Between peeks that saw too few bytes to decide: the rest of the first segment is on its way.
REPEEK_DELAY = 0.01
#: Connections still waiting for their first bytes; past this a new one is closed at once, so
#: a flood of silent peers cannot hold unbounded sockets for the whole wait.
MAX_PENDING = 4096


class Protocol(enum.Enum):
    TLS = "TLS"
    #: TLS whose ClientHello names the auth server (SNI under `teleport.cluster.local`).
    AUTH = "TLS for the auth server"
    SSH = "SSH"
    #: SSH from a node's reverse tunnel agent, told by its identification line.
    TUNNEL = "SSH from a reverse tunnel agent"
    PROXY = "PROXY protocol"
    #: Plain HTTP: only served with `teleport start --insecure-no-tls`, behind a balancer that
    #: terminates TLS.
    HTTP = "plain HTTP"
    UNKNOWN = "unknown"


_PROXY_V1 = b"PROXY "
_PROXY_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
#: The request lines a browser or a balancer's health check starts with.
_HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ", b"OPTIONS ")


def detect(data: bytes) -> Protocol | None:
    """Name the protocol these first bytes start; None while more bytes are needed to tell."""
    # A TLS record: type handshake (22), then the major version 3 of SSL 3.0 / TLS 1.x.
    candidates = [(Protocol.TLS, b"\x16\x03"), (Protocol.SSH, b"SSH-"),
                  (Protocol.PROXY, _PROXY_V1)] + [(Protocol.HTTP, m) for m in _HTTP_METHODS]
    for proto, prefix in candidates:
        if data.startswith(prefix):
            return proto
        if prefix.startswith(data):
            return None
    if data.startswith(_PROXY_V2[:len(data)]):
        return Protocol.PROXY if len(data) >= len(_PROXY_V2) else None
    return Protocol.UNKNOWN


def detect_tls(data: bytes) -> Protocol | None:
    """Tell TLS for the auth server from other TLS by the first record; None while it is partial.

    A record longer than TLS allows is UNKNOWN; one that is not a ClientHello we can read is
    plain TLS, left for the web server's TLS to refuse.
    """
    size = clienthello.record_size(data)
    if size is None:
        return None
    if size > clienthello.MAX_RECORD_SIZE:
        return Protocol.UNKNOWN
    if len(data) < size:
        return None
    try:
        name = clienthello.server_name(data[:size])
    except BadParameter:
        return Protocol.TLS
    return Protocol.AUTH if name is not None and is_reserved_name(name) else Protocol.TLS


def detect_ssh(data: bytes) -> Protocol | None:
    """Tell a tunnel agent's SSH from a user's by the identification line; None while partial."""
    if data.startswith(TUNNEL_BANNER):
        return Protocol.TUNNEL
    if TUNNEL_BANNER.startswith(data) and b"\n" not in data:
        return None
    return Protocol.SSH


#: Takes the socket; a TLS handler returns once TLS is up, True when the peer presented a
#: client certificate the server verified (its throttle token is given back), else False/None.
Handler = Callable[[socket.socket], Awaitable[bool | None]]


class Multiplexer:
    """Accept on one socket and hand each connection to the server its first bytes name.

    `handlers` maps a protocol to a coroutine that takes ownership of the socket; a protocol
    without a handler is refused like unknown bytes. An async context manager.
    """

    def __init__(self, handlers: dict[Protocol, Handler], *, name: str = "proxy web",
                 wait: float = DETECT_TIMEOUT, max_pending: int = MAX_PENDING,
                 throttle: Throttle | None = None) -> None:
        self.handlers = handlers
        self.name = name
        self.wait = wait
        self.max_pending = max_pending
        #: Per-source limits (`teleport.api.throttle`): a connection is counted from accept,
        #: and handed over only on its turn. An SSH connection carries its slot on (given up
        #: when its user authenticates); TLS gives it up once its handshake is done, with
        #: its token back when the peer's client certificate was verified.
        self.throttle = throttle
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._pending: set[socket.socket] = set()
        self.tasks = Supervisor(f"{name} multiplexer")
        #: Refused connections by reason (silent, unknown, PROXY protocol, full, throttled),
        #: for tests and the dump.
        self.refused: dict[str, int] = {}

    async def __aenter__(self) -> Multiplexer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1]) if self._sock is not None else 0

    @property
    def pending(self) -> int:
        """Connections accepted and still waiting for their first bytes."""
        return len(self._pending)

    async def start(self, sock: socket.socket) -> None:
        """Accept on a listening socket (bound by the caller, or handed down by a restart)."""
        sock.setblocking(False)
        self._sock = sock
        await self.tasks.start()
        self._accepting = asyncio.get_running_loop().create_task(
            self._accept_forever(sock), name=f"{self.name} accept")

    async def _accept_forever(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(lsock)
            except OSError as err:
                # Out of descriptors or a peer that reset before accept: keep listening.
                log.warning("%s: accept failed: %s", self.name, err)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            if len(self._pending) >= self.max_pending:
                self._refuse(conn, "full", f"{self.max_pending} connections are already "
                             "waiting for their first bytes")
                continue
            slot = None
            if self.throttle is not None:
                try:
                    slot = self.throttle.enter(conn.getpeername()[0])
                except OSError:
                    conn.close()  # reset before we looked
                    continue
                if slot is None:
                    self._refuse(conn, "throttled", "has too many unauthenticated connections")
                    continue
            self._pending.add(conn)
            if self.tasks.spawn(self._route(conn, slot), f"{self.name} detect") is None:
                self._pending.discard(conn)
                conn.close()
                if slot is not None:
                    slot.release()

    async def _route(self, conn: socket.socket, slot: Slot | None = None) -> None:
        handed = False
        try:
            proto = await self._sniff(conn)
            if proto is None:
                self._refuse(conn, "silent", f"sent too little to route within {self.wait:g}s")
                return
            handler = self.handlers.get(proto)
            if handler is None:
                self._refuse(conn, proto.name.lower(), f"speaks {proto.value}, which this port "
                             "does not serve")
                return
            if slot is not None:
                await slot.ready()  # its turn: nothing is said to it before
            self._pending.discard(conn)
            handed = True
            if proto in (Protocol.SSH, Protocol.TUNNEL):
                token = ACCEPTED_SLOT.set(slot)  # the SSH connection ends it when it logs in
                try:
                    await handler(conn)
                finally:
                    ACCEPTED_SLOT.reset(token)
                slot = None
            else:
                verified = await handler(conn)  # once TLS is up (the relay's: at once)
                if slot is not None:
                    (slot.authenticated if verified else slot.handshake_done)()
        finally:
            self._pending.discard(conn)
            if not handed:
                conn.close()
            if slot is not None:
                slot.release()

    async def _sniff(self, conn: socket.socket) -> Protocol | None:
        """Peek until the first bytes name a protocol; None if they do not come in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        want = PEEK_BYTES
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(_readable(loop, conn), remaining)
            except TimeoutError:
                return None
            asked = want
            try:
                data = conn.recv(asked, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return Protocol.UNKNOWN  # reset before it said anything
            if not data:
                return Protocol.UNKNOWN  # closed before it said anything
            proto = detect(data)
            if proto is Protocol.TLS and Protocol.AUTH in self.handlers:
                want = clienthello.MAX_RECORD_SIZE
                proto = detect_tls(data)
            elif proto is Protocol.SSH and Protocol.TUNNEL in self.handlers:
                want = len(TUNNEL_BANNER)
                proto = detect_ssh(data)
            if proto is not None:
                return proto
            if len(data) == asked < want:
                continue  # this peek asked for too few (8 bytes): the rest may be here already
            # Too few bytes to decide; they stay readable, so wait a moment instead of spinning.
            await asyncio.sleep(min(REPEEK_DELAY, max(0.0, deadline - loop.time())))

    def _refuse(self, conn: socket.socket, reason: str, why: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        with contextlib.suppress(OSError):
            peer = conn.getpeername()
            log.debug("%s: closed a connection from %s:%s that %s", self.name, peer[0], peer[1], why)
        conn.close()

    def stop_accepting(self) -> None:
        """Stop taking new connections (graceful restart: the successor has the socket)."""
        if self._accepting is not None:
            self._accepting.cancel()
        if self._sock is not None:
            self._sock.close()

    async def close(self) -> None:
        """Stop accepting and close every connection that was not handed over yet."""
        self.stop_accepting()
        if self._accepting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        await self.tasks.close()
        for conn in list(self._pending):
            conn.close()
        self._pending.clear()


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    """Wait until conn has bytes (or EOF) to read, reading none of them."""
    ready = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


__all__ = ["DETECT_TIMEOUT", "Handler", "Multiplexer", "Protocol", "detect", "detect_ssh", "detect_tls"]
