"""Relay TLS meant for the auth server, unopened, from the proxy's web port to the auth server.

A node behind NAT reaches only the proxy's web port. The multiplexer hands this relay every TLS
connection whose ClientHello names `teleport.cluster.local` (joining, the auth client), and the
relay splices its bytes to the auth server: TLS ends at the auth server, so the node's CA pin
and name check see the auth server's own certificate, and the proxy holds no key that could
stand in for it. Nothing is parsed or terminated here; the auth API authenticates every caller
itself, as on its own port.

A ClientHello naming a leaf cluster's auth server (`auth.<leaf>.teleport.cluster.local`, a leaf
of ours whose tunnel is up) goes to that leaf's auth server the same way, over the leaf's
tunnel (`leaf_auth`): a root's user calls the leaf's auth API with their own certificate, which
the leaf judges with its role map; nothing here reads it either.

Each relay is a task of this component: `close()` ends the live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from teleport.errors import BadParameter, ConnectionProblem, TeleportError
from teleport.proxy import clienthello
from teleport.utils.addr import HostPort
from teleport.utils.supervisor import Supervisor

log = logging.getLogger("teleport.proxy.authrelay")

#: How long one auth address may take to accept before the next is tried.
DIAL_TIMEOUT = 15.0
#: Given a ClientHello's server name: a connection to a leaf cluster's auth server when the name
#: is one (over the leaf's tunnel), else None.
LeafAuth = Callable[[str], "Awaitable[socket.socket] | None"]
#: Bytes moved per read; each write is drained before the next read (backpressure).
CHUNK = 64 * 1024


class AuthRelay:
    """Splice connections to the first auth address that accepts (the one that accepted last
    first); an async context manager.

    `auth_addrs` is asked on every connection, so a changed list of auth servers applies at once.
    """

    def __init__(self, auth_addrs: Callable[[], Sequence[HostPort]], *,
                 dial_timeout: float = DIAL_TIMEOUT, leaf_auth: LeafAuth | None = None) -> None:
        self.auth_addrs = auth_addrs
        self.leaf_auth = leaf_auth
        self.dial_timeout = dial_timeout
        self.tasks = Supervisor("auth relay")
        #: Relays open now, relays ever opened, and connections no auth server took (the dump).
        self.active = 0
        self.relayed = 0
        self.failed = 0
        #: The auth server that accepted last: tried first, so a dead one costs one dial only.
        self.preferred: HostPort | None = None

    async def start(self) -> None:
        await self.tasks.start()

    async def __aenter__(self) -> AuthRelay:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """End every live relay (both sides are closed) and take no more."""
        await self.tasks.close()

    async def serve_socket(self, sock: socket.socket) -> None:
        """Take ownership of a connection and relay it in the background."""
        if not self.tasks.running or self.tasks.spawn(self._relay(sock), "auth relay") is None:
            sock.close()

    async def dial(self) -> tuple[HostPort, asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the first auth address that accepts; ConnectionProblem names every failure."""
        problems: list[str] = []
        addrs = list(self.auth_addrs())
        if self.preferred in addrs:
            addrs.remove(self.preferred)
            addrs.insert(0, self.preferred)
        for addr in addrs:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(addr.host, addr.port), self.dial_timeout)
            except TimeoutError:
                problems.append(f"{addr}: no answer within {self.dial_timeout:g}s")
                continue
            except OSError as err:
                problems.append(f"{addr}: {err.strerror or err}")
                continue
            self.preferred = addr
            return addr, reader, writer
        raise ConnectionProblem("cannot reach the auth server: "
                                + ("; ".join(problems) or "no auth server address known"))

    async def _dial_for(self, sock: socket.socket
                        ) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the auth server the ClientHello names: a leaf's, else ours."""
        leaf = self.leaf_auth(_server_name(sock)) if self.leaf_auth is not None else None
        if leaf is None:
            addr, reader, writer = await self.dial()
            return str(addr), reader, writer
        try:
            up = await leaf
        except TeleportError as err:
            raise ConnectionProblem(f"cannot reach the leaf cluster's auth server: {err}") from None
        reader, writer = await asyncio.open_connection(sock=up)
        return "a leaf cluster's auth server", reader, writer

    async def _relay(self, sock: socket.socket) -> None:
        peer = _peer(sock)
        try:
            addr, up_reader, up_writer = await self._dial_for(sock)
        except ConnectionProblem as err:
            self.failed += 1
            log.warning("relaying %s to the auth server: %s", peer, err)
            sock.close()
            return
        try:
            down_reader, down_writer = await asyncio.open_connection(sock=sock)
        except OSError as err:
            log.debug("relaying %s to the auth server: %s", peer, err)
            sock.close()
            up_writer.transport.abort()
            return
        self.active += 1
        self.relayed += 1
        log.debug("relaying %s to the auth server %s", peer, addr)
        sent = [0, 0]
        ended = False
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_copy(down_reader, up_writer, sent, 0))
                group.create_task(_copy(up_reader, down_writer, sent, 1))
            ended = True
        except* OSError as errs:
            # A reset on one side ends both; nothing to report beyond the log.
            log.debug("relay of %s to %s broke: %s", peer, addr, errs.exceptions[0])
        finally:
            self.active -= 1
            for writer in (down_writer, up_writer):
                # Both ends said EOF: let what is still buffered go out. Otherwise (a reset,
                # close()) nobody waits for it.
                if ended:
                    writer.close()
                else:
                    writer.transport.abort()
            log.debug("relay of %s to %s ended (%d bytes up, %d down)", peer, addr, *sent)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sent: list[int],
                slot: int) -> None:
    """Move bytes one way until EOF, then half-close the other side (its answer may follow)."""
    while chunk := await reader.read(CHUNK):
        writer.write(chunk)
        await writer.drain()
        sent[slot] += len(chunk)
    if writer.can_write_eof() and not writer.is_closing():
        with contextlib.suppress(OSError):
            writer.write_eof()


def _server_name(sock: socket.socket) -> str:
    """The server name of the ClientHello waiting unread in sock (the multiplexer peeked the
    whole record before handing it over), or ""."""
    try:
        data = sock.recv(clienthello.MAX_RECORD_SIZE, socket.MSG_PEEK)
        size = clienthello.record_size(data)
        return (clienthello.server_name(data[:size]) or "") if size else ""
    except (OSError, BadParameter):
        return ""


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "a client"
    return str(HostPort(host, port))


__all__ = ["AuthRelay", "DIAL_TIMEOUT"]
