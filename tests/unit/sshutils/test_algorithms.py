"""A server built with `server_options` offers only the chosen algorithms: a real asyncssh
client on loopback that insists on SHA-1 is refused, one that speaks the defaults gets in as
far as authentication."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncssh
import pytest

from teleport.config import sshalgos
from teleport.sshutils.listener import server_options


def _host(alg: str) -> tuple[bytes, str]:
    ca = asyncssh.generate_private_key(alg)
    key = asyncssh.generate_private_key(alg)
    cert = ca.generate_host_certificate(key, "node", principals=["node"])
    return key.export_private_key(), cert.export_certificate().decode()


async def _serve(alg: str, algorithms: sshalgos.SSHAlgorithms) -> asyncssh.SSHAcceptor:
    private, cert = _host(alg)
    options = server_options(host_private_key=private, host_cert=cert,
                             server_factory=asyncssh.SSHServer,  # type: ignore[arg-type]
                             algorithms=algorithms)
    return await asyncssh.listen("127.0.0.1", 0, options=options)


@pytest.fixture
async def server() -> AsyncIterator[int]:
    acceptor = await _serve("ssh-rsa", sshalgos.DEFAULT)
    yield acceptor.get_port()
    acceptor.close()
    await acceptor.wait_closed()


async def _handshake(port: int, **options: Any) -> str:
    """Connect without credentials; return how far it got ("auth": the key exchange passed)."""
    try:
        async with asyncssh.connect("127.0.0.1", port, known_hosts=None, username="nobody",
                                    client_keys=[], agent_path=None, config=None,
                                    preferred_auth=["publickey"], **options):
            return "connected"
    except asyncssh.PermissionDenied:
        return "auth"
    except asyncssh.KeyExchangeFailed as err:
        return f"kex: {err.reason}"


async def test_defaults_pass_the_key_exchange(server: int) -> None:
    assert await _handshake(server) == "auth"
    assert await _handshake(
        server, **sshalgos.asyncssh_kwargs(sshalgos.DEFAULT, "client")) == "auth"


@pytest.mark.parametrize("option, sha1", [
    ("kex_algs", "diffie-hellman-group14-sha1"),
    ("mac_algs", "hmac-sha1"),
    ("encryption_algs", "aes128-ctr"),  # no AEAD cipher: the MAC decides
    ("server_host_key_algs", "ssh-rsa-cert-v01@openssh.com"),
    ("server_host_key_algs", "ssh-rsa"),
])
async def test_sha1_and_other_algorithms_outside_the_set_are_refused(server: int, option: str,
                                                                     sha1: str) -> None:
    options: dict[str, Any] = {option: [sha1]}
    if option == "mac_algs":
        options["encryption_algs"] = ["aes128-ctr"]  # a MAC is chosen only without AEAD
    outcome = await _handshake(server, **options)
    assert outcome.startswith("kex: "), outcome  # "No matching ...", or no compatible host key


async def test_an_admin_may_let_sha1_key_exchange_in() -> None:
    chosen = sshalgos.SSHAlgorithms(kex_algos=(*sshalgos.KEX_ALGOS, "diffie-hellman-group14-sha1"))
    acceptor = await _serve("ssh-ed25519", chosen)
    try:
        assert await _handshake(acceptor.get_port(),
                                kex_algs=["diffie-hellman-group14-sha1"]) == "auth"
    finally:
        acceptor.close()
        await acceptor.wait_closed()
