"""The auth API over real mutual TLS on loopback: who may call what, and joining."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from teleport.auth import api as auth_api
from teleport.auth.client import AuthClient
from teleport.auth.join import JoinResult, join
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.config import StaticToken
from teleport.errors import AccessDenied, ConnectionProblem, LimitExceeded
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.pin import ca_pin
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec, User, UserSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api
from tests.ports import refused_port


@dataclass
class Api:
    auth: AuthServer
    addr: HostPort
    emitter: MemoryEmitter

    async def client(self, role: str, host_uuid: str = "host-1", cluster: AuthServer | None = None,
                     addrs: list[HostPort] | None = None) -> AuthClient:
        """Return a client holding a fresh identity of role, issued by cluster (default ours)."""
        issuer = cluster or self.auth
        tls_key = tlskeys.generate_tls_key()
        certs = await issuer.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=host_uuid, system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        ours = (await self.auth.certs.get_ca("tls")).trusted_tls_certs()
        ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key, [c.encode() for c in ours])
        return AuthClient(addrs or [self.addr], ctx, timeout=10, cluster=self.auth.cluster_name)


async def _auth(name: str, clock: FakeClock, tokens: tuple[StaticToken, ...] = ()) -> AuthServer:
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name=name, static_tokens=tokens))
    await auth.init()
    return auth


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = FakeClock(datetime.now(timezone.utc))
    auth = await _auth("api.test", clock, (StaticToken(roles=frozenset({"node"}), token="static-tok-1"),))
    runner, addr = await serve_auth_api(auth)
    assert isinstance(auth.emitter, MemoryEmitter)
    try:
        yield Api(auth, addr, auth.emitter)
    finally:
        await runner.cleanup()


def _server(kind: str, uuid: str) -> Server:
    return Server(kind=kind, metadata=Metadata(name=uuid), spec=ServerSpec(addr="127.0.0.1:3022", hostname=uuid))


async def test_node_may_announce_only_itself(api: Api) -> None:
    async with await api.client("Node", "node-1") as node:
        await node.upsert_server(_server("node", "node-1"))
        assert [s.metadata.name for s in await node.list_servers("node")] == ["node-1"]
        with pytest.raises(AccessDenied, match="only announce itself"):
            await node.upsert_server(_server("node", "node-2"))
        with pytest.raises(AccessDenied, match="only announce itself"):
            await node.upsert_server(_server("proxy", "node-1"))
    # A refusal decided inside a handler is audited too, once, under the caller.
    refusals = [e for e in api.emitter.of_type("auth") if "only announce itself" in e["error"]]
    assert [(e["user"], e["success"]) for e in refusals] == [("node-1", False)] * 2


async def test_hosts_cannot_use_admin_calls_and_refusals_are_audited(api: Api) -> None:
    async with await api.client("Node", "node-1") as node:
        with pytest.raises(AccessDenied, match="may not GET /v1/users"):
            await node.list_users()
        with pytest.raises(AccessDenied):
            await node.create_token(["node"], timedelta(minutes=5), None)
    refusals = [e for e in api.emitter.of_type("auth") if "may not" in e["error"]]
    assert len(refusals) == 2 and all(e["success"] is False for e in refusals)
    async with await api.client("Admin", "admin") as admin:
        token = await admin.create_token(["node", "proxy"], timedelta(minutes=5), None)
        assert token.spec.roles == ["node", "proxy"]


async def test_each_connection_is_judged_by_its_own_certificate(api: Api) -> None:
    """The auth API reads a connection's certificate once and keeps it for that connection only:
    an admin's open connection lends nothing to a node's, in either order."""
    async with await api.client("Admin", "admin") as admin, \
            await api.client("Node", "node-1") as node:
        for _ in range(3):
            assert await admin.list_users() is not None
            with pytest.raises(AccessDenied, match="may not GET /v1/users"):
                await node.list_users()


async def test_a_hosts_every_request_on_its_connection_is_judged_as_its_first(api: Api) -> None:
    """A host's subject is built once per connection (a heartbeat's keep-alive each 5 s): its
    later requests are judged as the first, and a host still extends only its own record."""
    async with await api.client("Node", "node-1") as node, \
            await api.client("Node", "node-2") as other:
        await node.upsert_server(_server("node", "node-1"))
        await other.upsert_server(_server("node", "node-2"))
        expires = datetime.now(timezone.utc) + timedelta(minutes=1)
        for _ in range(3):
            await node.keep_alive_server("node", "node-1", expires)
            with pytest.raises(AccessDenied, match="only announce itself"):
                await node.keep_alive_server("node", "node-2", expires)
            with pytest.raises(AccessDenied, match="only announce itself"):
                await other.keep_alive_server("node", "node-1", expires)
            with pytest.raises(AccessDenied, match="may not GET /v1/users"):
                await node.list_users()


async def _user_client(api: Api, name: str, roles: list[str]) -> AuthClient:
    """Store user name with roles and return a client holding their certificate (tsh login's)."""
    user = await api.auth.accounts.upsert_user(
        User(metadata=Metadata(name=name), spec=UserSpec(roles=roles)), actor="admin")
    tls_key = tlskeys.generate_tls_key()
    certs = await api.auth.certs.issue_user_certs(
        user, sshkeys.public_key_of(sshkeys.generate_private_key()),
        tlskeys.tls_public_key_pem(tls_key), None)
    ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                       [c.encode() for c in certs.tls_ca_certs])
    return AuthClient([api.addr], ctx, timeout=10, cluster=api.auth.cluster_name)


async def test_a_user_with_the_admin_role_may_use_admin_calls(api: Api) -> None:
    async with await _user_client(api, "root", ["admin"]) as root:
        assert "root" in [u.metadata.name for u in await root.list_users()]
        token = await root.create_token(["node"], timedelta(minutes=5), None)
        await root.delete_token(token.metadata.name)
        with pytest.raises(AccessDenied, match="may not POST /v1/events"):
            await root.emit({"event": "exec"})  # the role opens admin routes, not hosts' routes
    token_events = api.emitter.of_type("join_token.create")
    assert token_events and token_events[-1]["user"] == "root"


async def test_a_user_whose_roles_do_not_allow_a_route_is_refused_and_audited(api: Api) -> None:
    async with await _user_client(api, "bob", ["access"]) as bob:
        with pytest.raises(AccessDenied, match=r"no role allows list on 'user' \(roles: access\)"):
            await bob.list_users()
    refusals = [e for e in api.emitter.of_type("auth")
                if "no role allows list on 'user'" in e["error"]]
    assert [(e["user"], e["success"]) for e in refusals] == [("bob", False)]


async def test_a_demoted_or_deleted_admin_loses_admin_calls_at_once(api: Api) -> None:
    async with await _user_client(api, "root", ["admin"]) as root:
        await root.list_users()
        user = await api.auth.accounts.get_user("root")
        await api.auth.accounts.upsert_user(user.model_copy(update={"spec": user.spec.model_copy(
            update={"roles": ["access"]})}), actor="admin")
        with pytest.raises(AccessDenied, match="no role allows list on 'user'"):
            await root.list_users()  # the certificate still says admin; the stored user does not
        await api.auth.accounts.delete_user("root", actor="admin")
        with pytest.raises(AccessDenied, match="no longer exists"):
            await root.list_users()


async def test_callers_without_a_certificate_reach_only_join(api: Api) -> None:
    ours = [c.encode() for c in (await api.auth.certs.get_ca("tls")).trusted_tls_certs()]
    anonymous = AuthClient([api.addr], tlsconfig.ssl_client_context(None, None, ours), timeout=10,
                           cluster=api.auth.cluster_name)
    async with anonymous:
        with pytest.raises(AccessDenied, match="client certificate is required"):
            await anonymous.list_users()
        with pytest.raises(AccessDenied):
            await anonymous.ping()


async def test_certificate_of_another_cluster_is_refused(api: Api) -> None:
    other = await _auth("other.test", FakeClock(datetime.now(timezone.utc)))
    async with await api.client("Admin", "admin", cluster=other) as stranger:
        with pytest.raises(ConnectionProblem):
            await stranger.list_users()


async def _join(api: Api, token: str, pins: list[str], role: str = "Node",
                warnings: list[str] | None = None) -> JoinResult:
    return await join([api.addr], token=token, role=role, host_uuid="new-node", nodename="new",
                      addresses=["127.0.0.1"], ca_pins=pins,
                      warn=(warnings if warnings is not None else []).append)


async def test_join_checks_pin_and_token(api: Api) -> None:
    pin = ca_pin((await api.auth.certs.get_ca("tls")).trusted_tls_certs()[0].encode())
    warnings: list[str] = []
    result = await _join(api, "static-tok-1", [pin], warnings=warnings)
    assert result.cluster_name == "api.test" and not warnings
    info = sshkeys.parse_cert(result.identity.ssh_cert)
    assert info.cert_type == "host" and "new" in info.principals
    await _join(api, "static-tok-1", [], warnings=warnings)
    assert warnings and "CA pin" in warnings[0]
    with pytest.raises(AccessDenied, match="does not match the CA pin"):
        await _join(api, "static-tok-1", ["sha256:" + "ab" * 32])
    with pytest.raises(AccessDenied, match="invalid, expired or revoked"):
        await _join(api, "wrong-token", [pin])
    with pytest.raises(AccessDenied, match="does not allow the proxy role"):
        await _join(api, "static-tok-1", [pin], role="Proxy")


async def test_join_is_rate_limited(api: Api) -> None:
    outcomes = []
    for _ in range(auth_api.JOIN_BURST + 2):
        try:
            await _join(api, "guess-guess", [])
        except (AccessDenied, LimitExceeded) as err:
            outcomes.append(type(err))
    assert AccessDenied in outcomes and LimitExceeded in outcomes


async def test_auth_servers_are_tried_in_order(api: Api) -> None:
    with refused_port() as dead:
        result = await join([HostPort("127.0.0.1", dead), api.addr], token="static-tok-1",
                            role="Node", host_uuid="n", nodename="n", addresses=[], ca_pins=[],
                            warn=lambda _: None)
        assert result.cluster_name == "api.test"
        async with await api.client("Node", "n", addrs=[HostPort("127.0.0.1", dead), api.addr]) as client:
            assert (await client.ping()).cluster_name == "api.test"
