"""Logins and admin changes through the real auth API over mutual TLS on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyotp
import pytest

from teleport.api.auth_models import IssuedCerts
from teleport.auth.client import AuthClient
from teleport.auth.logins import INVALID_LOGIN
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, BadParameter
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

PASSWORD = "correct horse"


@dataclass
class Api:
    auth: AuthServer
    clock: FakeClock
    emitter: MemoryEmitter
    addr: HostPort

    async def client(self, role: str, host_uuid: str) -> AuthClient:
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=host_uuid, system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                           [c.encode() for c in certs.tls_ca_certs])
        return AuthClient([self.addr], ctx, timeout=60, cluster=self.auth.cluster_name)

    def fresh_code(self, totp: pyotp.TOTP) -> str:
        """A code never used before: step the clock one window, so no test fails on a replay."""
        self.clock.advance(timedelta(seconds=30))
        return totp.at(self.clock.now())


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = FakeClock(datetime.now(timezone.utc))
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock), emitter, clock, AuthSettings(cluster_name="api.test"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield Api(auth, clock, emitter, addr)
    finally:
        await runner.cleanup()


async def _signup(api: Api, admin: AuthClient, proxy: AuthClient, name: str,
                  password: str = PASSWORD) -> pyotp.TOTP:
    token = (await admin.create_user_signup(name, [name], [])).metadata.name
    totp = pyotp.TOTP((await proxy.get_signup(token)).otp_secret)
    await proxy.complete_signup(token, password, totp.at(api.clock.now()))
    return totp


async def _login(proxy: AuthClient, name: str, password: str, code: str) -> IssuedCerts:
    return await proxy.authenticate_ssh(
        name, password=password, otp_code=code,
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()),
        ttl=None, remote_addr="192.0.2.7:4000")


async def test_hundred_parallel_logins_let_nothing_in_after_five_failures(api: Api) -> None:
    async with await api.client("Admin", "admin") as admin, \
            await api.client("Proxy", "proxy-1") as proxy:
        totp = await _signup(api, admin, proxy, "joe")
        await asyncio.gather(*(proxy.ping() for _ in range(100)))  # open the connections first
        code = api.fresh_code(totp)
        passwords = [PASSWORD if i == 59 else f"wrong password {i}" for i in range(100)]
        results = await asyncio.gather(*(_login(proxy, "joe", pw, code) for pw in passwords),
                                       return_exceptions=True)
        assert all(isinstance(r, IssuedCerts | AccessDenied) for r in results), results
        # The audit log gives the order in which the auth server judged the attempts.
        judged = [("ok" if e["event"] == "user.login" else e["error"])
                  for e in api.emitter.events
                  if e["event"] in ("auth", "user.login") and e.get("user") == "joe"]
        checked = [j for j in judged if j.startswith(INVALID_LOGIN)]
        if "ok" in judged:  # the right password arrived before five failures: fair, not a bypass
            before = judged[:judged.index("ok")]
            assert sum(j.startswith(INVALID_LOGIN) for j in before) < 5
            assert len(checked) < 10
        else:
            assert len(checked) == 5
            assert isinstance(results[59], AccessDenied) and "locked" in str(results[59])
        assert "ok" not in judged[judged.index(checked[-1]):]
        assert sum(isinstance(r, IssuedCerts) for r in results) == judged.count("ok") <= 1
        with pytest.raises(AccessDenied, match="locked"):
            await _login(proxy, "joe", PASSWORD, api.fresh_code(totp))


async def test_admin_changes_are_audited_with_who_made_them(api: Api) -> None:
    async with await api.client("Admin", "ops-host") as admin:
        await admin.create_user_signup("ann", ["ann"], ["admin"])
        ann = await admin.get_user("ann")
        await admin.upsert_user(ann.model_copy(update={"spec": ann.spec.model_copy(
            update={"roles": ["auditor"]})}))
        await admin.upsert_user(User(metadata=Metadata(name="bob"), spec=UserSpec(roles=["admin"])))
        await admin.delete_user("bob")
        token = await admin.create_token(["node"], timedelta(minutes=5), None)
        await admin.delete_token(token.metadata.name)
    changes = [(e["event"], e["user"], e["name"]) for e in api.emitter.events
               if e["event"] not in ("auth", "user.login")]
    assert changes == [
        ("user.create", "ops-host", "ann"),
        ("reset_password_token.create", "ops-host", "ann"),
        ("user.update", "ops-host", "ann"),
        ("user.create", "ops-host", "bob"),
        ("user.delete", "ops-host", "bob"),
        ("join_token.create", "ops-host", token.metadata.name[:4] + "****"),
        ("join_token.delete", "ops-host", token.metadata.name[:4] + "****"),
    ]
    update = next(e for e in api.emitter.events if e["event"] == "user.update")
    assert update["roles"] == ["auditor"]
    # The token itself never reaches the audit log.
    assert all(token.metadata.name not in str(e) for e in api.emitter.events)


async def test_long_passwords_and_lone_surrogates_get_clear_answers(api: Api) -> None:
    async with await api.client("Admin", "admin") as admin, \
            await api.client("Proxy", "proxy-1") as proxy:
        longest = "pässwörd" * 16  # 128 characters, 160 bytes: bcrypt alone refuses past 72
        totp = await _signup(api, admin, proxy, "joe", longest)
        certs = await _login(proxy, "joe", longest, api.fresh_code(totp))
        assert tlskeys.identity_from_cert(certs.tls_cert.encode()).username == "joe"
        token = (await admin.create_user_signup("ann", [], [])).metadata.name
        with pytest.raises(BadParameter, match="between 6 and 128"):
            await proxy.complete_signup(token, "x" * 129, "000000")
        # A lone surrogate (valid JSON, invalid UTF-8) in any field: 400 with one line.
        with pytest.raises(BadParameter, match="not valid Unicode"):
            await proxy.complete_signup(token, "\ud800" * 8, "000000")
        with pytest.raises(BadParameter, match="not valid Unicode"):
            await _login(proxy, "joe", "pass\udc00word", api.fresh_code(totp))
        with pytest.raises(BadParameter, match="not valid Unicode"):
            await admin.create_user_signup("eve\ud800", [], [])
        with pytest.raises(BadParameter, match="not valid Unicode"):
            await admin.call("PUT", "/v1/users", {"kind": "user", "version": "v2",
                                                  "metadata": {"name": "\udfffx"}})
        # None of that counted as a failed login.
        await _login(proxy, "joe", longest, api.fresh_code(totp))
