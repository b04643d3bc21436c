"""The SNI of real ClientHellos (made by Python's ssl), and no crash on anything else."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teleport.errors import BadParameter
from teleport.proxy.clienthello import MAX_RECORD_SIZE, record_size, server_name
from teleport.proxy.mux import Protocol, detect_tls


def client_hello(name: str | None, *, tls12: bool = False) -> bytes:
    """The first record a TLS client sends, captured from a handshake over memory BIOs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    data = outgoing.read()
    size = record_size(data)
    assert size is not None and size == len(data)  # one record, nothing else
    return data


AUTH = "auth.example.com.teleport.cluster.local"
HELLOS = {name: client_hello(name) for name in (AUTH, "teleport.cluster.local", "proxy.example.com")}


@pytest.mark.parametrize("name", sorted(HELLOS))
def test_server_name_of_real_client_hellos(name: str) -> None:
    assert server_name(HELLOS[name]) == name
    assert server_name(client_hello(name, tls12=True)) == name


def test_no_server_name() -> None:
    assert server_name(client_hello(None)) is None
    assert server_name(client_hello("127.0.0.1")) is None  # no SNI for an IP address


def test_routing_by_server_name() -> None:
    assert detect_tls(HELLOS[AUTH]) is Protocol.AUTH
    assert detect_tls(HELLOS["teleport.cluster.local"]) is Protocol.AUTH
    assert detect_tls(HELLOS["proxy.example.com"]) is Protocol.TLS
    assert detect_tls(client_hello(None)) is Protocol.TLS
    # Only the domain itself or names under it: a look-alike is not the auth server.
    assert detect_tls(client_hello("evilteleport.cluster.local")) is Protocol.TLS
    assert detect_tls(client_hello("teleport.cluster.local.evil.com")) is Protocol.TLS
    # Partial records wait for more bytes; an oversized record is refused; garbage goes to web.
    hello = HELLOS[AUTH]
    for cut in (2, 4, 5, len(hello) - 1):
        assert detect_tls(hello[:cut]) is None
    oversized = b"\x16\x03\x01" + (MAX_RECORD_SIZE - 4).to_bytes(2, "big")
    assert detect_tls(oversized) is Protocol.UNKNOWN
    assert detect_tls(b"\x16\x03\x01\x00\x03abc") is Protocol.TLS


def test_every_truncation_is_a_clear_error() -> None:
    hello = HELLOS[AUTH]
    header = hello[:3]
    for cut in range(len(hello)):
        # The record header claims the full length: the parser must notice the missing bytes.
        with pytest.raises(BadParameter, match="truncated|not a TLS|ClientHello"):
            server_name(hello[:cut])
        # A header honest about the shorter record: a cut-short ClientHello.
        body = hello[5:cut]
        honest = header + len(body).to_bytes(2, "big") + body
        try:
            name = server_name(honest)
        except BadParameter:
            continue
        assert name in (None, AUTH)


@given(st.binary(max_size=600))
def test_garbage_never_crashes(data: bytes) -> None:
    for record in (data, b"\x16\x03\x01" + len(data).to_bytes(2, "big") + data):
        try:
            name = server_name(record)
        except BadParameter:
            continue
        assert name is None or isinstance(name, str)


@given(st.lists(st.tuples(st.integers(0, len(HELLOS[AUTH]) - 1), st.integers(0, 255)),
                max_size=8))
def test_corrupted_client_hello_never_crashes(flips: list[tuple[int, int]]) -> None:
    record = bytearray(HELLOS[AUTH])
    for pos, value in flips:
        record[pos] = value
    try:
        name = server_name(bytes(record))
    except BadParameter:
        return
    assert name is None or (name.isascii() and name.isprintable())
