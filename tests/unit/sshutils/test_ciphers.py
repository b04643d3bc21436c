"""Our AEAD shims speak asyncssh's wire format exactly, refuse a forged tag, and are installed."""

from __future__ import annotations

import os

import pytest
from asyncssh.encryption import (
    ChachaEncryption,
    Encryption,
    GCMEncryption,
    get_encryption,
    get_encryption_algs,
)

from teleport.sshutils import ciphers

CASES = [("chacha20-poly1305", ChachaEncryption, ciphers.ChachaPolyEncryption, 64, 0),
         ("aes128-gcm", GCMEncryption, ciphers.AESGCMEncryption, 16, 12),
         ("aes256-gcm", GCMEncryption, ciphers.AESGCMEncryption, 32, 12)]


def _roundtrip(sender: Encryption, receiver: Encryption, seq: int, header: bytes,
               packet: bytes) -> bytes | None:
    sealed, tag = sender.encrypt_packet(seq, header, packet)
    first, _ = receiver.decrypt_header(seq, sealed[:16], len(header))
    return receiver.decrypt_packet(seq, first, sealed[16:], len(header), tag)


@pytest.mark.parametrize(("name", "theirs", "ours", "key_size", "iv_size"), CASES)
@pytest.mark.parametrize("size", [12, 32768 + 12])
def test_same_bytes_as_asyncssh_both_ways(name: str, theirs: type[Encryption],
                                          ours: type[Encryption], key_size: int, iv_size: int,
                                          size: int) -> None:
    key, iv = os.urandom(key_size), os.urandom(iv_size)
    their_tx, our_tx = theirs.new(name, key, iv), ours.new(name, key, iv)
    header = size.to_bytes(4, "big")
    for seq in (0, 1, 0xFFFFFFFF):
        packet = os.urandom(size)
        assert their_tx.encrypt_packet(seq, header, packet) == our_tx.encrypt_packet(
            seq, header, packet)
    # Fresh pairs: a GCM shim counts its packets, so sender and receiver must start together.
    for sender, receiver in ((theirs.new(name, key, iv), ours.new(name, key, iv)),
                             (ours.new(name, key, iv), theirs.new(name, key, iv))):
        for seq in (0, 1, 0xFFFFFFFF):
            packet = os.urandom(size)
            assert _roundtrip(sender, receiver, seq, header, packet) == packet


@pytest.mark.parametrize(("name", "theirs", "ours", "key_size", "iv_size"), CASES)
def test_forged_tag_or_data_is_refused(name: str, theirs: type[Encryption],
                                       ours: type[Encryption], key_size: int,
                                       iv_size: int) -> None:
    key, iv = os.urandom(key_size), os.urandom(iv_size)
    header, packet = b"\0\0\0\x20", os.urandom(32)
    for forge in ("tag", "data"):
        sender, receiver = ours.new(name, key, iv), ours.new(name, key, iv)
        sealed, tag = sender.encrypt_packet(0, header, packet)
        if forge == "tag":
            tag = bytes(len(tag))
        else:
            sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
        first, _ = receiver.decrypt_header(0, sealed[:16], len(header))
        assert receiver.decrypt_packet(0, first, sealed[16:], len(header), tag) is None


def test_install_points_the_names_at_our_shims_once() -> None:
    ciphers.install()
    ciphers.install()
    algs = get_encryption_algs()
    for name, shim in ((b"chacha20-poly1305@openssh.com", ciphers.ChachaPolyEncryption),
                       (b"aes128-gcm@openssh.com", ciphers.AESGCMEncryption),
                       (b"aes256-gcm@openssh.com", ciphers.AESGCMEncryption)):
        assert algs.count(name) == 1
        key = os.urandom(32 if b"aes256" in name else 16 if b"aes" in name else 64)
        assert type(get_encryption(name, key, os.urandom(12))) is shim
