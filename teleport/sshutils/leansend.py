"""Send an SSH connection's packets with two copies of the data instead of seven (issue 20).

asyncssh builds every packet by concatenation: the payload from its type and fields, then the
padding length, payload and padding, then the cipher's output behind the length header, then
the tag behind that. At bulk rates each step is a copy of the whole packet, and `tsh` pays them
twice (its hop to the node runs inside its hop to the proxy). Once a connection is keyed and
authenticated, `LeanSend` assembles the plaintext in one join and hands the cipher's pieces
(length header, ciphertext, tag) to the transport as they are: the batching transport below it
passes them on in one `writev`. Everything else (key exchange, authentication, rekeying,
compression, any cipher but our AEAD shims) goes through asyncssh's own `send_packet`.

It also drops the empty MSG_IGNORE asyncssh sends ahead of every packet: the old countermeasure
to chosen-plaintext attacks on CBC's chained IVs (RFC 4251 9.3.1), which counter modes and AEADs
(what we and OpenSSH negotiate) do not need, and which doubled the per-packet work of bulk data.
"""

from __future__ import annotations

import os
import time
from typing import Any, cast

from asyncssh.constants import MSG_IGNORE, MSG_USERAUTH_LAST
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketLogger, String

from teleport.sshutils.ciphers import LeanAEAD

#: The payload of the MSG_IGNORE asyncssh inserts: an empty string.
_EMPTY_STRING = (String(b""),)


def is_cbc_padding(pkttype: int, args: tuple[bytes, ...], cipher: bytes) -> bool:
    """Tell asyncssh's empty MSG_IGNORE ahead of a packet that a non-CBC cipher does not need.

    cipher: the negotiated name for the direction being sent (data packets wait while a key
    exchange changes it).
    """
    return pkttype == MSG_IGNORE and args == _EMPTY_STRING and not cipher.endswith(b"-cbc")


def packets_logged() -> bool:
    """Whether asyncssh logs packets (from debug level 3): only then are they worth naming."""
    return getattr(SSHLogger, "_debug_level", 3) >= 3


class LeanSend:
    """`send_packet` for asyncssh connection classes; mix in ahead of the asyncssh class."""

    # asyncssh's connection state, read and kept up to date here as its send_packet does.
    _send_encryption: Any
    _send_blocksize: int
    _send_enchdrlen: int
    _send_seq: int
    _kex_complete: bool
    _auth_complete: bool
    _compressor: Any
    _rekey_bytes_sent: int
    _rekey_bytes: int
    _rekey_seconds: float
    _rekey_time: float
    _transport: Any
    _enc_alg_cs: bytes
    _enc_alg_sc: bytes

    def _send_cipher_name(self) -> bytes:
        """The negotiated cipher of the direction this side sends."""
        return self._enc_alg_cs if cast(Any, self).is_client() else self._enc_alg_sc

    def send_packet(self, pkttype: int, *args: bytes,
                    handler: SSHPacketLogger | None = None) -> None:
        """Send a packet; connection-layer packets of a keyed AEAD connection take the lean way."""
        encryption = self._send_encryption
        if (pkttype <= MSG_USERAUTH_LAST or not isinstance(encryption, LeanAEAD)
                or not (self._kex_complete and self._auth_complete)
                or self._compressor is not None
                or self._rekey_bytes_sent >= self._rekey_bytes
                or (self._rekey_seconds and time.monotonic() >= self._rekey_time)):
            if not is_cbc_padding(pkttype, args, self._send_cipher_name()):
                super().send_packet(pkttype, *args, handler=handler)  # type: ignore[misc]
            return
        size = 1 + sum(map(len, args))
        padlen = -(self._send_enchdrlen + size) % self._send_blocksize
        if padlen < 4:
            padlen += self._send_blocksize
        packet = b"".join((bytes((padlen, pkttype)), *args, os.urandom(padlen)))
        seq = self._send_seq
        pieces = encryption.seal(seq, len(packet).to_bytes(4, "big"), packet)
        transport = self._transport
        if transport:
            try:
                for piece in pieces:
                    transport.write(piece)
            except ConnectionError:  # as asyncssh's _send: connection_lost follows
                pass
        self._send_seq = (seq + 1) & 0xFFFFFFFF
        self._rekey_bytes_sent += len(packet)
        if packets_logged():
            logger = handler if handler is not None else cast(SSHPacketLogger, self)
            logger.log_sent_packet(pkttype, seq, packet[1:len(packet) - padlen])


__all__ = ["LeanSend", "is_cbc_padding", "packets_logged"]
