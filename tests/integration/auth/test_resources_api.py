"""Roles and locks through the auth API's resource routes, over real mutual TLS on loopback.

tctl's Admin identity and users' own certificates call the same routes; a user is judged by
the rules of their roles as stored now. Locks refuse logins, certificates, API calls, and
reach nodes and proxies through the revocation list.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from teleport.auth import passwords
from teleport.auth.access import fetch_revocations
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, AlreadyExists, BadParameter, NotFound
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.types.locks import Lock
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec, User, UserSpec
from teleport.types.roles import Role
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

PASSWORD = "correct horse battery"


@dataclass
class Api:
    auth: AuthServer
    addr: HostPort
    clock: FakeClock
    emitter: MemoryEmitter

    async def _client(self, cert: str, tls_key: bytes) -> AuthClient:
        ours = (await self.auth.certs.get_ca("tls")).trusted_tls_certs()
        ctx = tlsconfig.ssl_client_context(cert.encode(), tls_key, [c.encode() for c in ours])
        return AuthClient([self.addr], ctx, timeout=10, cluster=self.auth.cluster_name)

    async def host(self, role: str, host_uuid: str) -> AuthClient:
        """A client with a host identity: `Admin` is tctl's, `Node` and `Proxy` the daemons'."""
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=host_uuid, system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        return await self._client(certs.tls_cert, tls_key)

    async def user(self, name: str, roles: list[str]) -> AuthClient:
        """Store user name with roles and a password; return a client with a fresh certificate."""
        user = await self.auth.accounts.upsert_user(User(metadata=Metadata(name=name), spec=UserSpec(
            roles=roles, traits={"logins": [name]})))
        await self.auth.accounts.users.set_password_hash(name, passwords.hash_password(PASSWORD))
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_user_certs(
            user, sshkeys.public_key_of(sshkeys.generate_private_key()),
            tlskeys.tls_public_key_pem(tls_key), timedelta(hours=1))
        return await self._client(certs.tls_cert, tls_key)

    async def login(self, name: str) -> None:
        """Log in with the password, as `tsh login` does through the proxy."""
        await self.auth.logins.login(
            username=name, password=PASSWORD, otp_code="",
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()), ttl=None)

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [dict(e) for e in self.emitter.of_type(event_type)]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = FakeClock(datetime.now(timezone.utc))
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock), emitter, clock,
                      AuthSettings(cluster_name="resources.test", second_factor="off"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield Api(auth, addr, clock, emitter)
    finally:
        await runner.cleanup()


def _role(name: str, **allow: Any) -> Role:
    return Role.model_validate({"kind": "role", "version": "v5", "metadata": {"name": name},
                                "spec": {"allow": allow or {"logins": ["ubuntu"]}}})


def _lock(**target: str) -> dict[str, Any]:
    """A lock as tctl sends it: no name (the server picks a UUID)."""
    return {"kind": "lock", "version": "v2", "metadata": {},
            "spec": {"target": target, "message": "security review"}}


async def test_roles_are_created_read_listed_replaced_and_deleted_and_audited(api: Api) -> None:
    async with await api.host("Admin", "admin") as tctl:
        names = [r.metadata.name for r in await tctl.list_resources("roles")]
        assert {"access", "editor", "auditor", "admin"} <= set(names)  # presets at init
        created = await tctl.put_resource(_role("dev", logins=["ubuntu"]), overwrite=False)
        assert isinstance(created, Role)
        with pytest.raises(AlreadyExists, match='^role "dev" already exists$'):
            await tctl.put_resource(_role("dev", logins=["root"]), overwrite=False)
        stored = await tctl.get_resource("role", "dev")
        assert isinstance(stored, Role) and stored.spec.allow.logins == ["ubuntu"]
        await tctl.put_resource(_role("dev", logins=["postgres"]), overwrite=True)
        stored = await tctl.get_resource("role", "dev")
        assert isinstance(stored, Role) and stored.spec.allow.logins == ["postgres"]
        await tctl.delete_resource("role", "dev")
        with pytest.raises(NotFound):
            await tctl.get_resource("role", "dev")
    assert [e["name"] for e in api.events("role.created")] == ["dev", "dev"]
    assert [(e["name"], e["user"]) for e in api.events("role.deleted")] == [("dev", "admin")]


async def test_a_role_in_use_stays_and_a_user_cannot_hold_a_missing_role(api: Api) -> None:
    async with await api.host("Admin", "admin") as tctl:
        await tctl.put_resource(_role("dev"), overwrite=False)
        joe = User(metadata=Metadata(name="joe"), spec=UserSpec(roles=["dev"]))
        await tctl.put_resource(joe, overwrite=False)
        with pytest.raises(AlreadyExists, match='^user "joe" already exists$'):
            await tctl.put_resource(joe, overwrite=False)
        with pytest.raises(BadParameter, match='^role "dev" is in use by user "joe"$'):
            await tctl.delete_resource("role", "dev")
        with pytest.raises(BadParameter, match='^role "access" is in use by user "amy"$'):
            await tctl.create_user_signup("amy", [], ["access"])  # a preset, held now
            await tctl.delete_resource("role", "access")
        assert isinstance(await tctl.get_resource("role", "dev"), Role)
        ghost = User(metadata=Metadata(name="sam"), spec=UserSpec(roles=["dev", "ghost"]))
        with pytest.raises(BadParameter, match='role "ghost" does not exist'):
            await tctl.put_resource(ghost, overwrite=False)
        with pytest.raises(BadParameter, match='role "ghost" does not exist'):
            await tctl.create_user_signup("sam", [], ["ghost"])
        with pytest.raises(NotFound):
            await tctl.get_resource("user", "sam")
        # Once nobody holds it, it goes.
        await tctl.put_resource(joe.model_copy(update={"spec": UserSpec(roles=["access"])}),
                                overwrite=True)
        await tctl.delete_resource("role", "dev")


@pytest.mark.parametrize(("change", "field"), [
    ({"rules": [{"resources": ["role"], "verbs": ["fly"]}]}, "spec.allow.rules.0.verbs"),
    ({"node_labels": {"env": "^(prod$"}}, "spec.allow.node_labels"),
    ({"logins": ["{{secret.logins}}"]}, "spec.allow.logins"),
    ({"colour": "blue"}, "spec.allow.colour"),
])
async def test_a_bad_role_is_one_line_naming_the_field_and_the_stored_role_stays(
        api: Api, change: dict[str, Any], field: str) -> None:
    async with await api.host("Admin", "admin") as tctl:
        await tctl.put_resource(_role("dev"), overwrite=False)
        bad = {"kind": "role", "version": "v5", "metadata": {"name": "dev"},
               "spec": {"allow": {"logins": ["root"], **change}}}
        with pytest.raises(BadParameter) as err:
            await tctl.call("PUT", "/v1/resources/role?overwrite=true", bad)
        assert field in str(err.value) and "\n" not in str(err.value)
        stored = await tctl.get_resource("role", "dev")
        assert isinstance(stored, Role) and stored.spec.allow.logins == ["ubuntu"]
        with pytest.raises(BadParameter, match="expected a role resource, not 'lock'"):
            await tctl.call("PUT", "/v1/resources/role?overwrite=true", _lock(user="joe"))


async def test_certificate_authorities_are_listed_without_private_keys(api: Api) -> None:
    async with await api.host("Admin", "admin") as tctl:
        cas = await tctl.list_resources("cert_authorities")
        assert sorted(ca.spec.type for ca in cas) == ["host", "tls", "user"]  # type: ignore[attr-defined]
        one = await tctl.call("GET", "/v1/resources/cas/host")
        raw = json.dumps(await tctl.call("GET", "/v1/resources/cert_authority")) + json.dumps(one)
        assert "PRIVATE KEY" not in raw and "ssh-" in raw and "CERTIFICATE" in raw
        with pytest.raises(BadParameter, match="made by the cluster"):
            await tctl.put_resource(cas[0], overwrite=True)
        with pytest.raises(BadParameter, match="unsupported resource 'widgets'"):
            await tctl.list_resources("widgets")


async def test_users_are_judged_by_their_roles_rules(api: Api) -> None:
    async with await api.user("ed", ["editor"]) as ed, await api.user("al", ["access"]) as al:
        assert "access" in [r.metadata.name for r in await ed.list_resources("role")]
        await ed.put_resource(_role("dev"), overwrite=False)
        with pytest.raises(AccessDenied, match="role"):
            await al.list_resources("role")
        with pytest.raises(AccessDenied):
            await al.put_resource(_role("mine"), overwrite=False)
        with pytest.raises(AccessDenied):
            await al.list_roles()  # the role cache route is for nodes and proxies
    refusals = [e for e in api.events("auth") if e["user"] == "al" and not e["success"]]
    assert len(refusals) == 3
    async with await api.host("Node", "node-1") as node:
        assert "dev" in [r.metadata.name for r in await node.list_roles()]


async def test_users_and_the_proxy_acting_for_them_list_only_nodes_their_roles_reach(
        api: Api) -> None:
    for name, env in (("web1", "staging"), ("db1", "prod")):
        await api.auth.hosts.upsert_server(Server(
            kind="node", metadata=Metadata(name=f"uuid-{name}", labels={"env": env},
                                           expires=api.clock.now() + timedelta(minutes=5)),
            spec=ServerSpec(hostname=name, addr=f"{name}:3022")))
    await api.auth.resources.save_role(_role("dev", logins=["ubuntu"],
                                             node_labels={"env": "staging"}),
                                       actor="admin", overwrite=False)
    async with await api.user("joe", ["dev"]) as joe, await api.user("ada", ["access"]) as ada, \
            await api.host("Proxy", "proxy-1") as proxy, await api.host("Admin", "tctl") as tctl:
        assert [n.spec.hostname for n in await joe.list_servers("node")] == ["web1"]
        assert [n.spec.hostname for n in await proxy.list_servers("node", user="joe")] == ["web1"]
        assert sorted(n.spec.hostname for n in await ada.list_servers("node")) == ["db1", "web1"]
        assert len(await tctl.list_servers("node")) == len(await proxy.list_servers("node")) == 2


async def test_a_user_lock_refuses_logins_calls_and_reaches_the_revocation_list(api: Api) -> None:
    async with await api.host("Admin", "admin") as tctl, await api.user("joe", ["access"]) as joe, \
            await api.host("Node", "node-1") as node:
        await joe.ping()
        lock = await tctl.put_resource(Lock.model_validate(
            {**_lock(user="joe"), "metadata": {"name": "x"}}), overwrite=False)
        assert isinstance(lock, Lock) and lock.spec.created_by == "admin"
        named = await tctl.call("PUT", "/v1/resources/lock?overwrite=false", _lock(user="joe"))
        assert len(named["metadata"]["name"]) == 36  # a UUID, as Teleport names locks
        reason = "lock targeting user=joe is in force: security review"
        with pytest.raises(AccessDenied, match=reason):
            await joe.ping()
        with pytest.raises(AccessDenied, match=reason):
            await api.login("joe")
        api.clock.advance(timedelta(seconds=2))  # past the list's one-second reuse
        revoked = await fetch_revocations(node)
        assert len(revoked.locks) == 2
        now = api.clock.now()
        assert revoked.refusal("joe", now, now) == reason
        assert revoked.refusal("amy", now, now) is None
        assert {lk.metadata.name for lk in await tctl.list_resources("locks")} == \
            {"x", named["metadata"]["name"]}
        for name in ("x", named["metadata"]["name"]):
            await tctl.delete_resource("lock", name)
        await joe.ping()
        await api.login("joe")
    assert len(api.events("lock.created")) == 2
    assert api.events("lock.created")[0]["target"] == {"user": "joe"}
    assert [e["user"] for e in api.events("lock.deleted")] == ["admin", "admin"]
    # Both refusals audited under joe: the API call's by the API edge, the login's by the login.
    refusals = [e for e in api.events("auth") if reason in e.get("error", "")]
    assert [e["user"] for e in refusals] == ["joe", "joe"]


async def test_role_and_node_locks_and_lock_expiry(api: Api) -> None:
    async with await api.host("Admin", "admin") as tctl, await api.user("ed", ["editor"]) as ed, \
            await api.host("Node", "node-1") as node:
        await tctl.call("PUT", "/v1/resources/lock", _lock(role="editor"))
        with pytest.raises(AccessDenied, match="lock targeting role=editor"):
            await ed.list_resources("role")
        with pytest.raises(AccessDenied, match="lock targeting role=editor"):
            await api.login("ed")
        with pytest.raises(AccessDenied, match="lock targeting role=editor"):
            await api.user("eve", ["editor"])  # no new certificate for anyone holding the role
        expires = (api.clock.now() + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        await tctl.call("PUT", "/v1/resources/lock",
                        {**_lock(node="node-7"), "spec": {"target": {"node": "node-7"},
                                                          "expires": expires}})
        past = (api.clock.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        with pytest.raises(BadParameter, match="in the past"):
            await tctl.call("PUT", "/v1/resources/lock",
                            {**_lock(user="x"), "spec": {"target": {"user": "x"}, "expires": past}})
        revoked = await fetch_revocations(node)
        now = api.clock.now()
        assert "role=editor" in (revoked.refusal("ed", now, now, ["editor"]) or "")
        assert revoked.refusal("ed", now, now, ["access"]) is None
        assert "node=node-7" in (revoked.node_refusal("node-7", now) or "")
        assert revoked.node_refusal("node-1", now) is None
        # The node lock runs out by itself.
        assert revoked.node_refusal("node-7", now + timedelta(minutes=11)) is None
        api.clock.advance(timedelta(minutes=11))
        assert [lk.spec.target.role for lk in await tctl.list_resources("lock")] == ["editor"]
