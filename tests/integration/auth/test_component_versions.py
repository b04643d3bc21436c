"""The manual's component compatibility, through the real auth API: a node or proxy of a newer
major version than its auth server is refused at join and at every heartbeat, naming both
versions; the same major (any minor), an older one, or a host that does not say, pass.

The newer host is the real joining code (`teleport.auth.join.join`) and the real `AuthClient`
saying another version, rather than a second build or a test-only override in the daemon.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

import pytest

from teleport import __version__
from teleport.api.auth_models import JoinAnswer
from teleport.api.http import HTTPClient
from teleport.auth.client import AuthClient
from teleport.auth.join import JoinResult, join
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.config import StaticToken
from teleport.errors import BadParameter, NotSupported
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.authname import auth_server_name
from teleport.keys.pin import ca_pin
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from teleport.utils.versions import parse_version
from tests.integration.auth_api import serve_auth_api

TOKEN = "versions-static-token"
MAJOR = parse_version(__version__).major
NEWER = f"{MAJOR + 1}.0.0"
SAME_MAJOR = f"{MAJOR}.99.7"
Kind = Literal["node", "proxy"]


@dataclass
class Api:
    auth: AuthServer
    addr: HostPort
    emitter: MemoryEmitter
    clock: FakeClock

    async def join(self, host_uuid: str, role: str = "Node", **kw: str) -> JoinResult:
        pin = ca_pin((await self.auth.certs.get_ca("tls")).trusted_tls_certs()[0].encode())
        return await join([self.addr], token=TOKEN, role=role, host_uuid=host_uuid,
                          nodename=host_uuid, addresses=[], ca_pins=[pin],
                          warn=lambda _: None, **kw)

    async def client(self, result: JoinResult) -> AuthClient:
        ident = result.identity
        ctx = tlsconfig.ssl_client_context(ident.tls_cert.encode(), ident.tls_private_key.encode(),
                                           [c.encode() for c in ident.tls_ca_certs])
        return AuthClient([self.addr], ctx, timeout=10, cluster=self.auth.cluster_name)

    def announcement(self, kind: Kind, host_uuid: str, version: str) -> Server:
        return Server(kind=kind, metadata=Metadata(
            name=host_uuid, expires=self.clock.now() + timedelta(seconds=15)),
            spec=ServerSpec(addr="127.0.0.1:3022", hostname=host_uuid, version=version))


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = FakeClock(datetime.now(timezone.utc))
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock), emitter, clock, AuthSettings(
        cluster_name="versions.test",
        static_tokens=(StaticToken(roles=frozenset({"node", "proxy"}), token=TOKEN),)))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield Api(auth, addr, emitter, clock)
    finally:
        await runner.cleanup()


def _names_both(message: str, kind: str) -> None:
    assert message == (f"this {kind} runs teleport {NEWER}, newer than its auth server's "
                       f"{__version__}: upgrade the auth server first (it must be the same "
                       "major version or newer)")


@pytest.mark.parametrize("role", ["Node", "Proxy"])
async def test_a_host_of_a_newer_major_version_cannot_join(api: Api, role: str) -> None:
    with pytest.raises(NotSupported) as err:
        await api.join("newer-host", role, version=NEWER)
    _names_both(str(err.value), role.lower())
    refused = [e for e in api.emitter.of_type("auth") if e.get("method") == "token"]
    assert len(refused) == 1 and refused[0]["success"] is False
    assert refused[0]["error"] == str(err.value)
    assert not api.emitter.of_type("join")


async def test_the_same_major_an_older_one_and_a_host_that_does_not_say_join(api: Api) -> None:
    for n, version in enumerate([SAME_MAJOR, __version__, "0.0.1"]):
        result = await api.join(f"host-{n}", version=version)
        assert result.cluster_name == "versions.test"
    await api.join("default")  # the joining code says its own version
    # A host from before the version field: its request has none, and still parses.
    ca = [c.encode() for c in (await api.auth.certs.get_ca("tls")).trusted_tls_certs()]
    http = HTTPClient([api.addr], tlsconfig.ssl_client_context(None, None, ca), peer="auth server",
                      server_hostname=auth_server_name("versions.test"), unreachable="")
    tls_key = tlskeys.generate_tls_key()
    try:
        answer = await http.call("POST", "/v1/join", {
            "token": TOKEN, "host_uuid": "old-host", "nodename": "old-host", "role": "Node",
            "ssh_public_key": sshkeys.public_key_of(sshkeys.generate_private_key()),
            "tls_public_key": tlskeys.tls_public_key_pem(tls_key).decode()}, answer=JoinAnswer)
    finally:
        await http.close()
    assert answer.ssh_cert
    assert len(api.emitter.of_type("join")) == 5


async def test_a_version_that_is_not_one_is_refused_naming_it(api: Api) -> None:
    with pytest.raises(BadParameter, match=r"^node version: 'banana' is not a version"):
        await api.join("odd-host", version="banana")


@pytest.mark.parametrize(("role", "kind"), [("Node", "node"), ("Proxy", "proxy")])
async def test_a_host_that_became_newer_is_refused_at_every_heartbeat(
        api: Api, role: str, kind: Kind) -> None:
    """Joined while it was the same version; upgraded before its auth server was."""
    joined = await api.join("host-a", role)
    async with await api.client(joined) as host:
        await host.upsert_server(api.announcement(kind, "host-a", __version__))
        assert [s.metadata.name for s in await api.auth.hosts.list_servers(kind)] == ["host-a"]
        api.clock.advance(timedelta(seconds=16))  # its announcement expired
        with pytest.raises(NotSupported) as err:
            await host.upsert_server(api.announcement(kind, "host-a", NEWER))
        _names_both(str(err.value), kind)
        assert await api.auth.hosts.list_servers(kind) == []  # not listed, not routed to
        await host.upsert_server(api.announcement(kind, "host-a", SAME_MAJOR))
        assert [s.spec.version for s in await api.auth.hosts.list_servers(kind)] == [SAME_MAJOR]
