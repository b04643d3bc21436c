"""Read the server name (SNI) out of a TLS ClientHello record, and nothing else.

The multiplexer routes TLS by this name before any byte is consumed: a name under
`teleport.cluster.local` is relayed, still encrypted, to the auth server, so TLS ends there and
its name check and CA pin work unchanged through the proxy. Only the first record is read; it
comes from anyone on the network, so every length is checked against the bytes actually there
and a malformed record raises `BadParameter` (never IndexError or a bogus name).

Wire layout (RFC 8446 §4.1.2, RFC 6066 §3): record header (type 22, version, length), handshake
header (type 1, 24-bit length), legacy version, 32 random bytes, session id <0..32>, cipher
suites <2..2^16-2>, compression methods <1..2^8-1>, extensions <0..2^16-1>; extension 0 is
server_name: a list of (name type, name) where type 0 is a DNS host name.
"""

from __future__ import annotations

from teleport.errors import BadParameter

#: Record type (1), version (2), length (2).
RECORD_HEADER = 5
#: The largest record payload TLS allows (2^14); a longer one is not a ClientHello we serve.
MAX_RECORD_PAYLOAD = 16384
#: The most the multiplexer peeks: one whole record of the largest size.
MAX_RECORD_SIZE = RECORD_HEADER + MAX_RECORD_PAYLOAD

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_HOST_NAME = 0


def record_size(data: bytes) -> int | None:
    """Return the size of the TLS record that data starts (header included); None until known."""
    if len(data) < RECORD_HEADER:
        return None
    return RECORD_HEADER + int.from_bytes(data[3:5], "big")


def server_name(record: bytes) -> str | None:
    """Return the host name a ClientHello record asks for; None when it names none.

    Raises BadParameter when the record is not a well-formed ClientHello, or is cut short
    before its extensions end (a ClientHello split over several records is not followed).
    """
    reader = _Reader(record)
    if reader.byte() != _HANDSHAKE:
        raise BadParameter("not a TLS handshake record")
    reader.skip(2)  # record version
    body = reader.sub(reader.uint(2), "record")
    if body.byte() != _CLIENT_HELLO:
        raise BadParameter("the first TLS handshake message is not a ClientHello")
    hello = body.sub(min(body.uint(3), body.left), "ClientHello")
    hello.skip(2 + 32)  # legacy version, random
    hello.skip(hello.uint(1))  # session id
    hello.skip(hello.uint(2))  # cipher suites
    hello.skip(hello.uint(1))  # compression methods
    if hello.left == 0:
        return None  # no extensions at all (SSL 3.0 style)
    extensions = hello.sub(hello.uint(2), "extensions")
    while extensions.left:
        kind = extensions.uint(2)
        data = extensions.sub(extensions.uint(2), "extension")
        if kind == _SERVER_NAME:
            return _host_name(data)
    return None


def _host_name(ext: _Reader) -> str | None:
    names = ext.sub(ext.uint(2), "server name list")
    while names.left:
        kind = names.byte()
        raw = names.take(names.uint(2))
        if kind != _HOST_NAME:
            continue
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            raise BadParameter("the TLS server name is not ASCII") from None
        if not name or not name.isprintable():
            raise BadParameter("the TLS server name is empty or has control characters")
        return name
    return None


class _Reader:
    """A cursor over bytes whose every read is bounds-checked."""

    def __init__(self, data: bytes, what: str = "record") -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    @property
    def left(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n > self.left:
            raise BadParameter(f"the TLS ClientHello is truncated (in its {self._what})")
        chunk = bytes(self._data[self._pos:self._pos + n])
        self._pos += n
        return chunk

    def skip(self, n: int) -> None:
        self.take(n)

    def byte(self) -> int:
        return self.take(1)[0]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def sub(self, n: int, what: str) -> _Reader:
        """Split off the next n bytes as their own reader (a length-prefixed field)."""
        return _Reader(self.take(n), what)


__all__ = ["MAX_RECORD_SIZE", "RECORD_HEADER", "record_size", "server_name"]
