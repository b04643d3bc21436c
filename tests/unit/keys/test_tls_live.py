"""A TLS server context whose certificate and client CAs change while it serves (CA rotation):
new handshakes get the new ones, open connections keep theirs; and `issued_by` tells which CA
signed a certificate even when two CAs have the same subject."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.authname import auth_server_name
from teleport.keys.identity import Identity

CLUSTER = "live.test"
NOW = datetime.now(timezone.utc)


def _issue(ca: tuple[bytes, bytes], role: str) -> tuple[bytes, bytes]:
    key = tlskeys.generate_tls_key()
    identity = Identity(username=f"{role}-1", roles=(role,), cluster=CLUSTER, system_role=role,
                        host_uuid=f"{role}-1")
    cert = tlskeys.issue_tls_cert(ca[0], ca[1], tlskeys.tls_public_key_pem(key), identity,
                                  now=NOW, not_after=NOW.replace(year=NOW.year + 1))
    return cert, key


@dataclass
class Served:
    live: tlsconfig.LiveServerContext
    port: int
    old_ca: tuple[bytes, bytes]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """An echo server over TLS whose context is live, started with the old CA's certificate."""
    old_ca = tlskeys.generate_tls_ca(CLUSTER, now=NOW)
    cert, key = _issue(old_ca, "Auth")
    live = tlsconfig.LiveServerContext(cert, key, [old_ca[1]], require_client_cert=False)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(100):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=live.context)
    try:
        yield Served(live, server.sockets[0].getsockname()[1], old_ca)
    finally:
        server.close()


async def _connect(port: int, client: tuple[bytes, bytes], cas: list[bytes]
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = tlsconfig.ssl_client_context(client[0], client[1], cas)
    return await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                         server_hostname=auth_server_name(CLUSTER))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: bytes) -> bytes:
    writer.write(text)
    await writer.drain()
    return await asyncio.wait_for(reader.read(100), 5)


async def test_new_connections_get_the_new_certificate_and_client_cas(served: Served) -> None:
    live, port, old_ca = served.live, served.port, served.old_ca
    new_ca = tlskeys.generate_tls_ca(CLUSTER, now=NOW)
    old_client = _issue(old_ca, "Node")
    open_r, open_w = await _connect(port, old_client, [old_ca[1]])
    assert await _echo(open_r, open_w, b"one") == b"one"

    # init: the new CA is trusted too; update_servers: the new certificate is served.
    live.update(client_ca_pems=[old_ca[1], new_ca[1]])
    new_cert, new_key = _issue(new_ca, "Auth")
    live.update(cert_pem=new_cert, key_pem=new_key)
    r, w = await _connect(port, _issue(new_ca, "Node"), [new_ca[1]])
    assert tlskeys.issued_by(w.get_extra_info("ssl_object").getpeercert(binary_form=True),
                             [new_ca[1]])
    assert await _echo(r, w, b"two") == b"two"
    w.close()
    # A client that trusts only the old CA no longer accepts the server.
    with pytest.raises(ssl.SSLError):
        await _connect(port, old_client, [old_ca[1]])

    # standby: the old CA is dropped; its client certificate is refused on a new connection...
    live.update(client_ca_pems=[new_ca[1]])
    r, w = await _connect(port, old_client, [new_ca[1]])
    try:  # TLS 1.3: the client's certificate is judged after the handshake, then it hangs up
        answer = await _echo(r, w, b"three")
    except (ConnectionError, ssl.SSLError):
        answer = b""
    assert answer == b""
    # ...while the connection opened before the rotation still works.
    assert await _echo(open_r, open_w, b"four") == b"four"
    open_w.close()


async def test_a_bad_pair_changes_nothing(served: Served) -> None:
    live = served.live
    before = live.cert_pem
    other_ca = tlskeys.generate_tls_ca(CLUSTER, now=NOW)
    cert, _ = _issue(other_ca, "Auth")
    with pytest.raises(tlskeys.BadParameter):
        live.update(cert_pem=cert, key_pem=tlskeys.generate_tls_key())
    assert live.cert_pem == before


def test_issued_by_tells_two_cas_of_one_subject_apart() -> None:
    first = tlskeys.generate_tls_ca(CLUSTER, now=NOW)
    second = tlskeys.generate_tls_ca(CLUSTER, now=NOW)
    cert, _ = _issue(first, "Node")
    assert tlskeys.issued_by(cert, [second[1], first[1]])
    assert not tlskeys.issued_by(cert, [second[1]])
    assert not tlskeys.issued_by(cert, [])
