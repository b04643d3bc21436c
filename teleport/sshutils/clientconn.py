"""asyncssh client connections without asyncssh's per-packet extras (issue 20).

Our server connections (`sshutils.auth.CertAuthConnection`) already leave out the empty
MSG_IGNORE asyncssh sends ahead of every packet and hand the socket one write per loop turn;
`tsh` and the web terminal open plain `asyncssh.connect` clients, which still did both on every
packet of an upload: twice the packets, cipher calls and socket writes, on both hops.
`BulkClientConnection` is the client side of the same two changes, and `connect` opens one the
way `asyncssh.connect` does (which takes no connection class): options built for the host,
the connection made over a socket or inside another connection's channel, then waiting for
authentication.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

import asyncssh

from teleport.sshutils.batchwrite import BatchingTransport
from teleport.sshutils.leanrecv import LeanReceive
from teleport.sshutils.leansend import LeanSend


class BulkClientConnection(LeanSend, LeanReceive, asyncssh.SSHClientConnection):
    """asyncssh's client connection with our server side's per-packet savings."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Batch the packets of one loop turn into one write (teleport.sshutils.batchwrite):
        one `writev` on a socket, one channel write (split by the channel) inside a tunnel."""
        batched = BatchingTransport(cast(asyncio.Transport, transport))
        super().connection_made(cast(asyncio.Transport, batched))


class Tunnel(Protocol):
    """What carries a connection inside another one (asyncssh's `tunnel=` objects)."""

    async def create_connection(self, session_factory: Callable[[], Any], remote_host: str,
                                remote_port: int) -> tuple[Any, Any]: ...


async def connect(host: str, port: int, *, options: asyncssh.SSHClientConnectionOptions,
                  sock: socket.socket | None = None, tunnel: Tunnel | None = None,
                  client_factory: Callable[[], asyncssh.SSHClient] | None = None,
                  connection: Callable[..., BulkClientConnection] = BulkClientConnection
                  ) -> BulkClientConnection:
    """Open an authenticated connection to host:port over sock, inside tunnel, or by
    dialling; within the options' `connect_timeout`, as `asyncssh.connect` does.

    host and port name the server for host key checks even over a socket or a tunnel.
    connection makes it from (loop, options, wait="auth"): `BulkClientConnection` or a
    subclass (the tunnel agent's). The connection is an async context manager that closes it,
    as asyncssh's are.
    """
    loop = asyncio.get_running_loop()
    extra: dict[str, object] = {} if client_factory is None else {"client_factory": client_factory}
    opts = await asyncssh.SSHClientConnectionOptions.construct(options, host=host, port=port,
                                                               **extra)
    waiter: asyncio.Future[None] = loop.create_future()
    opts.waiter = waiter  # asyncssh's connection resolves it once authenticated

    def factory() -> BulkClientConnection:
        return connection(loop, opts, wait="auth")

    async def opened() -> BulkClientConnection:
        if tunnel is not None:
            _, session = await tunnel.create_connection(factory, host, port)
        elif sock is not None:
            _, session = await loop.create_connection(factory, sock=sock)
        else:
            _, session = await loop.create_connection(factory, host, port)
        conn = cast(BulkClientConnection, session)
        conn.set_extra_info(host=host, port=port)
        try:
            await waiter
        except BaseException:
            conn.abort()
            await conn.wait_closed()
            raise
        return conn

    try:
        return await asyncio.wait_for(opened(), timeout=opts.connect_timeout)
    except BaseException:
        waiter.cancel()
        raise


__all__ = ["BulkClientConnection", "Tunnel", "connect"]
