"""Receive an SSH connection's channel data without asyncssh's per-packet parsing (issue 20).

asyncssh keeps what arrives in one `bytes` buffer and, for every packet, copies the rest of the
buffer twice (once past the length header, once past the packet), joins the packet's pieces
again for the cipher, slices the payload out of the plaintext, then walks a chain of checks to
find the packet's handler and logs it. At bulk rates that is most of a receiver's Python work.
Once a connection is keyed and authenticated with one of our AEAD shims, `LeanReceive` opens
each packet in place (memoryviews of what arrived) and hands channel data to its channel as
asyncssh would (`process_packet`, so the channel's own checks and window accounting hold), and
passes over the empty MSG_IGNORE a stock asyncssh peer sends ahead of every packet.

Anything else goes to asyncssh, which then goes on from that packet with its own code: a
packet of another type is opened again by asyncssh (the cipher's nonce is stepped back first),
and a packet that has only partly arrived is left in asyncssh's buffer; the next read takes
back whatever asyncssh holds then (a packet's first block it has read included). A tag that
does not match ends the connection as asyncssh's `MACError` does. The sequence numbers stay
asyncssh's.
"""

from __future__ import annotations

from typing import Any, cast

from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE
from asyncssh.misc import DisconnectError, MACError
from asyncssh.packet import SSHPacket

from teleport.sshutils.ciphers import TAG, LeanAEAD
from teleport.sshutils.leansend import packets_logged

_LENGTH = 4
#: padding length, type, recipient channel, data length: the bytes ahead of channel data.
_DATA_OFFSET = 10
_IGNORE = bytes((MSG_IGNORE,))


class _Payload(SSHPacket):
    """A packet's payload read in place from its plaintext, between start and end."""

    def __init__(self, plaintext: bytes, start: int, end: int) -> None:
        self._packet, self._idx, self._len = plaintext, start, end


class LeanReceive:
    """`data_received` for asyncssh connection classes; mix in ahead of the asyncssh class."""

    # asyncssh's connection state, read and kept up to date here as its own code does.
    _recv_encryption: Any
    _recv_handler: Any
    _recv_seq: int
    _inpbuf: bytes
    _packet: bytes
    _auth_complete: bool
    _auth_final: bool
    _decompressor: Any
    _max_recv_pktlen: int
    _channels: dict[int, Any]
    _transport: Any

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        """Take channel data the lean way while the connection is in the state it needs."""
        this = cast(Any, self)
        encryption = self._recv_encryption
        handler = self._recv_handler
        if (not isinstance(encryption, LeanAEAD) or not self._auth_complete
                or self._decompressor is not None
                or (handler != this._recv_pkthdr and handler != this._recv_packet)):
            super().data_received(data, datatype)  # type: ignore[misc]
            return
        if handler == this._recv_packet:
            # asyncssh has read the first block of a packet (our shims leave it as it came,
            # and reading its length moved no nonce): put it back in front.
            data = self._packet + self._inpbuf + data
            self._packet = self._inpbuf = b""
            self._recv_handler = this._recv_pkthdr
        elif self._inpbuf:  # the start of a packet asyncssh kept: ours again
            data = self._inpbuf + data
            self._inpbuf = b""
        this._reset_keepalive_timer()
        try:
            taken, handed_over = self._take_channel_data(encryption, data)
        except DisconnectError as exc:
            this._send_disconnect(exc.code, exc.reason, exc.lang)
            this._force_close(exc)
            return
        except Exception:
            this.internal_error()
            return
        if taken < len(data) and self._transport:
            self._inpbuf = data[taken:]
            if handed_over:
                this._recv_data()

    def _take_channel_data(self, encryption: LeanAEAD, data: bytes) -> tuple[int, bool]:
        """Deliver the channel data packets at the start of data; return how many bytes they
        took and whether asyncssh should go on (a packet of another kind, a length it refuses)."""
        view = memoryview(data)
        end = len(data)
        pos = 0
        logging = packets_logged()
        while end - pos >= _LENGTH + TAG and self._transport:
            seq = self._recv_seq
            header = view[pos:pos + _LENGTH]
            length = encryption.packet_length(seq, header)
            if length > self._max_recv_pktlen:
                return pos, True  # asyncssh refuses it with its own error
            stop = pos + _LENGTH + length + TAG
            if stop > end:
                return pos, False
            plaintext = encryption.open(seq, header, view[pos + _LENGTH:stop])
            if plaintext is None:
                raise MACError("MAC verification failed")
            if plaintext[1:2] == _IGNORE:  # asyncssh's peers send one ahead of every packet
                if logging:
                    cast(Any, self).log_received_packet(MSG_IGNORE, seq, plaintext[1:2])
            else:
                channel = self._channel_of(plaintext)
                if channel is None:
                    encryption.rewind()
                    return pos, True
                payload = _Payload(plaintext, 1 + 1 + 4, len(plaintext) - plaintext[0])
                if logging:
                    channel.log_received_packet(MSG_CHANNEL_DATA, seq,
                                                plaintext[1:payload._len])
                channel.process_packet(MSG_CHANNEL_DATA, seq, payload)
            self._auth_final = True
            self._recv_seq = (seq + 1) & 0xFFFFFFFF
            pos = stop
        return pos, False

    def _channel_of(self, plaintext: bytes) -> Any:
        """The open channel a well-formed channel data packet is for; None for anything else
        (another type, an unknown channel, padding that does not fit: asyncssh's to judge)."""
        size = len(plaintext)
        if size < _DATA_OFFSET or plaintext[1] != MSG_CHANNEL_DATA:
            return None
        padding = plaintext[0]
        if int.from_bytes(plaintext[6:10], "big") != size - padding - _DATA_OFFSET:
            return None
        return self._channels.get(int.from_bytes(plaintext[2:6], "big"))


__all__ = ["LeanReceive"]
