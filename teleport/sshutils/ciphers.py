"""Per-packet AEAD work for asyncssh without its per-packet set-up (issue 20).

asyncssh's shims build a new `AESGCM` for every AES-GCM packet, and for every
chacha20-poly1305@openssh.com packet three ChaCha20 contexts (header, Poly1305 key, payload)
plus a copy of header and payload to compute the tag. At 32 KiB packets (OpenSSH's) that was
most of the cipher cost: 0.8 s of CPU per GiB for ChaCha20-Poly1305 against about 0.3 s of
actual cipher work. These shims keep one `AESGCM` per direction, and take the Poly1305 key and
the payload from one ChaCha20 stream (block 0, then block 1 on, as OpenSSH's PROTOCOL.chacha20poly1305
lays them out), feeding Poly1305 in pieces. Same wire format, same algorithm names: `install()`
registers them through asyncssh's own algorithm registry, once per process, before any
connection is made (listener.py and hop.py call it). docs/architecture.md lists what only an
asyncssh patch can remove.
"""

from __future__ import annotations

from typing import TypeAlias

from asyncssh.encryption import ChachaEncryption, GCMEncryption, register_encryption_alg
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

#: What the cipher calls take: bytes, or memoryviews of a receive buffer (`leanrecv`).
Buffer: TypeAlias = bytes | bytearray | memoryview
#: The tag after every packet of our AEAD shims.
TAG = 16
_COUNTER_0 = bytes(8)
#: Keystream block 0: its first 32 bytes are the packet's Poly1305 key; the payload uses 1 on.
_BLOCK_0 = bytes(64)
_MASK64 = (1 << 64) - 1


class LeanAEAD:
    """A packet shim that also works on whole packets in place (`leansend`, `leanrecv`)."""

    def seal(self, seq: int, header: bytes, packet: bytes) -> tuple[bytes, ...]:
        """The wire form of one packet (length header, padded plaintext), in pieces."""
        raise NotImplementedError

    def packet_length(self, seq: int, header: Buffer) -> int:
        """The length field of the packet whose first four bytes on the wire are header."""
        raise NotImplementedError

    def open(self, seq: int, header: Buffer, body: Buffer) -> bytes | None:
        """The padded plaintext of a packet (body: the rest of it on the wire, tag included);
        None when the tag does not match."""
        raise NotImplementedError

    def rewind(self) -> None:
        """Undo the last `open`'s step of the nonce: asyncssh opens that packet again."""


class _ChachaPoly:
    """chacha20-poly1305@openssh.com with two ChaCha20 contexts a packet instead of three."""

    def __init__(self, key: bytes) -> None:
        self._key = key[:32]
        self._adkey = key[32:]

    def _stream(self, nonce: bytes) -> tuple[CipherContext, Poly1305]:
        stream = Cipher(ChaCha20(self._key, _COUNTER_0 + nonce), mode=None).encryptor()
        return stream, Poly1305(stream.update(_BLOCK_0)[:32])

    def encrypt_and_sign(self, header: bytes, data: bytes, nonce: bytes) -> tuple[bytes, bytes]:
        header, data, tag = self.seal(header, data, nonce)
        return header + data, tag

    def seal(self, header: bytes, data: bytes, nonce: bytes) -> tuple[bytes, bytes, bytes]:
        """The encrypted length header, the encrypted packet and their tag."""
        header = self.decrypt_header(header, nonce)
        stream, mac = self._stream(nonce)
        data = stream.update(data)
        mac.update(header)
        mac.update(data)
        return header, data, mac.finalize()

    def decrypt_header(self, header: bytes, nonce: bytes) -> bytes:
        return Cipher(ChaCha20(self._adkey, _COUNTER_0 + nonce), mode=None).encryptor().update(header)

    def verify_and_decrypt(self, header: Buffer, data: Buffer, nonce: bytes,
                           tag: bytes) -> bytes | None:
        stream, mac = self._stream(nonce)
        mac.update(header)
        mac.update(data)
        try:
            mac.verify(tag)
        except InvalidSignature:
            return None
        return stream.update(data)


class ChachaPolyEncryption(ChachaEncryption, LeanAEAD):
    """asyncssh's chacha20-poly1305 packet shim over `_ChachaPoly`."""

    _cipher: _ChachaPoly  # type: ignore[assignment]

    def seal(self, seq: int, header: bytes, packet: bytes) -> tuple[bytes, ...]:
        return self._cipher.seal(header, packet, seq.to_bytes(8, "big"))

    def packet_length(self, seq: int, header: Buffer) -> int:
        return int.from_bytes(self._cipher.decrypt_header(bytes(header), seq.to_bytes(8, "big")),
                              "big")

    def open(self, seq: int, header: Buffer, body: Buffer) -> bytes | None:
        view = memoryview(body)
        return self._cipher.verify_and_decrypt(header, view[:-TAG], seq.to_bytes(8, "big"),
                                               bytes(view[-TAG:]))

    @classmethod
    def new(cls, cipher_name: str, key: bytes, iv: bytes, mac_alg: bytes = b"",
            mac_key: bytes = b"", etm: bool = False) -> ChachaPolyEncryption:
        return cls(_ChachaPoly(key))  # type: ignore[arg-type]


class _GCM:
    """AES-GCM with one `AESGCM` per direction and the RFC 5647 invocation counter."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:], "big")

    def _next_iv(self) -> bytes:
        iv = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & _MASK64
        return iv

    def encrypt_and_sign(self, header: bytes, data: bytes) -> tuple[bytes, bytes]:
        sealed = self.seal(header, data)
        return header + sealed[:-TAG], sealed[-TAG:]

    def seal(self, header: bytes, data: bytes) -> bytes:
        """The encrypted packet followed by its tag (the length header stays clear)."""
        return self._aead.encrypt(self._next_iv(), data, header)

    def verify_and_decrypt(self, header: bytes, data: bytes, mac: bytes) -> bytes | None:
        return self.open(header, data + mac)

    def open(self, header: Buffer, sealed: Buffer) -> bytes | None:
        """The packet of sealed (ciphertext and tag); None if the tag does not match."""
        iv = self._next_iv()
        try:
            return self._aead.decrypt(iv, sealed, header)
        except InvalidTag:
            return None

    def rewind(self) -> None:
        self._counter = (self._counter - 1) & _MASK64


class AESGCMEncryption(GCMEncryption, LeanAEAD):
    """asyncssh's AES-GCM packet shim over `_GCM`."""

    _cipher: _GCM  # type: ignore[assignment]

    def seal(self, seq: int, header: bytes, packet: bytes) -> tuple[bytes, ...]:
        return header, self._cipher.seal(header, packet)

    def packet_length(self, seq: int, header: Buffer) -> int:
        return int.from_bytes(header, "big")  # in the clear: it is the AEAD's associated data

    def open(self, seq: int, header: Buffer, body: Buffer) -> bytes | None:
        return self._cipher.open(header, body)

    def rewind(self) -> None:
        self._cipher.rewind()

    @classmethod
    def new(cls, cipher_name: str, key: bytes, iv: bytes, mac_alg: bytes = b"",
            mac_key: bytes = b"", etm: bool = False) -> AESGCMEncryption:
        return cls(_GCM(key, iv))  # type: ignore[arg-type]


_SHIMS = ((b"chacha20-poly1305@openssh.com", ChachaPolyEncryption, "chacha20-poly1305"),
          (b"aes256-gcm@openssh.com", AESGCMEncryption, "aes256-gcm"),
          (b"aes128-gcm@openssh.com", AESGCMEncryption, "aes128-gcm"))
_installed = False


def install() -> None:
    """Register the shims for their algorithm names (idempotent; the names stay listed once)."""
    global _installed
    if _installed:
        return
    from asyncssh.encryption import get_encryption_algs

    algs = get_encryption_algs()
    for name, shim, cipher_name in _SHIMS:
        if name not in algs:
            continue  # this cryptography build lacks it: asyncssh did not offer it either
        # Registering again points the name at our shim; drop the repeated list entry it adds.
        register_encryption_alg(name, shim, cipher_name, False)
        del algs[len(algs) - 1 - algs[::-1].index(name)]
    _installed = True


__all__ = ["AESGCMEncryption", "ChachaPolyEncryption", "LeanAEAD", "TAG", "install"]
