"""Copy bytes both ways between an SSH channel and a TCP connection, each side throttling the other.

Used for `-L` forwards on the node and for both ways through the proxy. We do not use
asyncssh's own forwarder because it pauses the channel mid-delivery, which defeats the window
(see `ChannelInput`): a slow node behind the proxy would make the proxy buffer without bound.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import cast

import asyncssh
from asyncssh.channel import SSHChannel

from teleport.sshutils.batchwrite import BatchingTransport
from teleport.sshutils.fdio import ChannelInput

#: How long to wait for the TCP side (a node, a forward target) to accept.
DIAL_TIMEOUT = 15.0
#: Channel bytes held while the TCP connection is still being set up, before we stop reading.
PENDING_LIMIT = 256 * 1024


class ChannelSplice:
    """One channel and one TCP connection; either may come first."""

    def __init__(self) -> None:
        self.chan: SSHChannel[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self._input: ChannelInput | None = None
        self._pending = bytearray()  # channel bytes waiting for TCP
        self._early = bytearray()  # TCP bytes waiting for the channel
        self._eof = False
        self._tcp_eof = False
        self._tcp_closed = False

    def tcp_protocol(self, on_open: Callable[[], None] | None = None) -> asyncio.Protocol:
        """Return the TCP side's protocol for a connection accepted by a listener of ours.

        on_open runs once the connection is attached, to open the channel: until then what the
        TCP peer sends is held (and its reading paused), as for a dialled connection.
        """
        return _TCPSide(self, on_open)

    def abort(self) -> None:
        """Drop the TCP side: the channel for it could not be opened."""
        if self.transport is not None:
            self.transport.close()

    async def connect(self, host: str, port: int) -> None:
        """Open the TCP side; raises OSError or TimeoutError, for the caller to word."""
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: _TCPSide(self), host, port),
                               DIAL_TIMEOUT)

    async def attach(self, sock: socket.socket) -> None:
        """Make a connected socket (a dialled node, one end of a tunnel's pair) the TCP side."""
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _TCPSide(self), sock=sock)
        except BaseException:
            sock.close()
            raise

    # --- channel events -------------------------------------------------------------------------

    def channel_open(self, chan: SSHChannel[bytes]) -> None:
        self.chan = chan
        self._input = ChannelInput(chan)
        if self._early:
            chan.write(bytes(self._early))
            self._early.clear()
        if self._tcp_closed:
            chan.close()
        elif self._tcp_eof:
            chan.write_eof()
        if self.transport is not None:
            self.transport.resume_reading()

    def channel_data(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            return
        self._pending += data
        if len(self._pending) > PENDING_LIMIT and self._input is not None:
            self._input.pause()

    def channel_eof(self) -> None:
        self._eof = True
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        self._close_if_done()

    def channel_pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def channel_resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def channel_closed(self) -> None:
        self.chan = None
        if self.transport is not None:
            self.transport.close()

    # --- TCP events -----------------------------------------------------------------------------

    def tcp_open(self, transport: asyncio.Transport) -> None:
        # The channel hands over one packet at a time, several per read of the SSH socket:
        # batched, they leave in one send() per loop turn, not one each.
        self.transport = transport = cast(asyncio.Transport, BatchingTransport(transport))
        if self._pending:
            transport.write(bytes(self._pending))
            self._pending.clear()
            if self._input is not None and self._input.paused:
                self._input.resume()
        if self._eof and transport.can_write_eof():
            transport.write_eof()

    def tcp_data(self, data: bytes) -> None:
        if self.chan is None:
            # The peer spoke first (an SSH server's banner) before the channel is open. Pausing
            # in connection_made would not do: uvloop only starts reading after it returns.
            self._early += data
            if self.transport is not None:
                self.transport.pause_reading()
            return
        try:
            self.chan.write(data)
        except OSError:  # the SSH side is gone
            self.channel_closed()

    def tcp_eof(self) -> None:
        self._tcp_eof = True
        if self.chan is not None:
            self.chan.write_eof()
        self._close_if_done()

    def _close_if_done(self) -> None:
        # Both directions ended: close TCP (after its buffer drains), which closes the channel.
        if self._eof and self._tcp_eof and self.transport is not None:
            self.transport.close()

    def tcp_pause_writing(self) -> None:
        if self._input is not None:
            self._input.pause()

    def tcp_resume_writing(self) -> None:
        if self._input is not None:
            self._input.resume()

    def tcp_closed(self) -> None:
        self.transport = None
        self._tcp_closed = True
        if self.chan is not None:
            self.chan.close()


class _TCPSide(asyncio.Protocol):
    def __init__(self, splice: ChannelSplice, on_open: Callable[[], None] | None = None) -> None:
        self.splice = splice
        self.on_open = on_open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.splice.tcp_open(cast(asyncio.Transport, transport))
        if self.on_open is not None:
            self.on_open()

    def data_received(self, data: bytes) -> None:
        self.splice.tcp_data(data)

    def eof_received(self) -> bool:
        self.splice.tcp_eof()
        return True  # keep sending the other way until the channel closes too

    def pause_writing(self) -> None:
        self.splice.tcp_pause_writing()

    def resume_writing(self) -> None:
        self.splice.tcp_resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.splice.tcp_closed()


class SpliceChannelEvents:
    """Channel callbacks that hand everything to a ChannelSplice; mix into any session class."""

    splice: ChannelSplice

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.splice.channel_data(data)

    def eof_received(self) -> bool:
        self.splice.channel_eof()
        return True

    def pause_writing(self) -> None:
        self.splice.channel_pause_writing()

    def resume_writing(self) -> None:
        self.splice.channel_resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.splice.channel_closed()


class SpliceTCPSession(SpliceChannelEvents, asyncssh.SSHTCPSession[bytes]):
    """The channel side of a splice for direct-tcpip channels."""

    def __init__(self, splice: ChannelSplice, on_input: Callable[[], None] | None = None) -> None:
        self.splice = splice
        #: Told of every piece the client sends, e.g. to keep its connection from being idle.
        self.on_input = on_input

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.splice.channel_open(chan)

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.on_input is not None:
            self.on_input()
        super().data_received(data, datatype)


async def channel_socket(
        open_channel: Callable[[Callable[[], SpliceTCPSession]], Awaitable[object]]
) -> socket.socket:
    """Return a socket whose far end is an SSH channel: a node over a reverse tunnel looks like
    a dialled one to whoever takes the socket (a splice, asyncssh, the recording proxy).

    open_channel opens the channel with the session factory it is given; one end of a socket
    pair is spliced to it, the other returned. A failure closes both and propagates.
    """
    splice = ChannelSplice()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    try:
        await open_channel(lambda: SpliceTCPSession(splice))
        await splice.attach(theirs)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    return ours


async def forward_over(sock: socket.socket) -> SpliceTCPSession:
    """Splice a direct-tcpip channel to a connected socket (a node the proxy dialled)."""
    splice = ChannelSplice()
    await splice.attach(sock)
    return SpliceTCPSession(splice)


async def forward_to(host: str, port: int,
                     on_input: Callable[[], None] | None = None) -> SpliceTCPSession:
    """Connect a direct-tcpip channel to host:port, or refuse the channel saying why."""
    splice = ChannelSplice()
    try:
        await splice.connect(host, port)
    except TimeoutError:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                        f"timed out connecting to {host}:{port}") from None
    except OSError as err:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED,
            f"cannot connect to {host}:{port}: {err.strerror or err}") from None
    return SpliceTCPSession(splice, on_input)
