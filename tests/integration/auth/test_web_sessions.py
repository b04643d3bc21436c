"""Web sessions through the real auth API over mutual TLS on loopback, as a proxy calls it.

A browser's login runs `tsh login`'s checks and audit; the session holds keys and certificates
the proxy can act with as the user; only proxies may call the routes; deleting or locking the
user ends the sessions; a renewal never outlives the certificates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyotp
import pytest

from teleport.api.auth_models import WebSession
from teleport.auth.client import AuthClient
from teleport.auth.logins import INVALID_LOGIN
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, NotFound
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.services.login_attempts import LOGIN_LOCK_MESSAGE
from teleport.services.web_sessions import IDLE_TIMEOUT
from teleport.types.resources import LoginStatus
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

PASSWORD = "correct horse"
BROWSER = "198.51.100.9:51000"


@dataclass
class Api:
    auth: AuthServer
    clock: FakeClock
    emitter: MemoryEmitter
    addr: HostPort

    async def tls_client(self, cert: str, key: bytes) -> AuthClient:
        cas = (await self.auth.certs.get_ca("tls")).trusted_tls_certs()
        ctx = tlsconfig.ssl_client_context(cert.encode(), key, [c.encode() for c in cas])
        return AuthClient([self.addr], ctx, timeout=60, cluster=self.auth.cluster_name)

    async def client(self, role: str, host_uuid: str) -> AuthClient:
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=host_uuid, system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        return await self.tls_client(certs.tls_cert, tls_key)

    def code(self, totp: pyotp.TOTP) -> str:
        """A code never used before: step the clock one window, so no test fails on a replay."""
        self.clock.advance(timedelta(seconds=30))
        return totp.at(self.clock.now())

    def events(self, user: str) -> list[dict[str, Any]]:
        return [e for e in self.emitter.events if e.get("user") == user]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = FakeClock(datetime.now(timezone.utc))
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock), emitter, clock, AuthSettings(cluster_name="web.test"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield Api(auth, clock, emitter, addr)
    finally:
        await runner.cleanup()


@pytest.fixture
async def admin(api: Api) -> AsyncIterator[AuthClient]:
    async with await api.client("Admin", "admin") as client:
        yield client


@pytest.fixture
async def proxy(api: Api) -> AsyncIterator[AuthClient]:
    async with await api.client("Proxy", "proxy-1") as client:
        yield client


async def _signup(api: Api, admin: AuthClient, proxy: AuthClient, name: str,
                  logins: list[str]) -> pyotp.TOTP:
    token = (await admin.create_user_signup(name, logins, [])).metadata.name
    totp = pyotp.TOTP((await proxy.get_signup(token)).otp_secret)
    await proxy.complete_signup(token, PASSWORD, totp.at(api.clock.now()))
    return totp


async def _session(api: Api, admin: AuthClient, proxy: AuthClient,
                   name: str = "joe") -> WebSession:
    totp = await _signup(api, admin, proxy, name, [name])
    return await proxy.create_web_session(name, PASSWORD, api.code(totp), BROWSER)


async def _stored(api: Api, name: str) -> list[str]:
    return [r.id for r in await api.auth.web.store.list(name, api.clock.now())]


async def test_a_proxy_logs_a_browser_in_and_gets_keys_that_act_as_the_user(
        api: Api, admin: AuthClient, proxy: AuthClient) -> None:
    totp = await _signup(api, admin, proxy, "joe", ["joe", "root"])
    session = await proxy.create_web_session("joe", PASSWORD, api.code(totp), BROWSER)
    now = api.clock.now()
    assert session.user == "joe" and session.logins == ["joe", "root"]
    assert session.roles == (await admin.get_user("joe")).spec.roles
    assert len(session.id) == 64 and len(session.bearer_token) == 64
    assert session.created == now and session.idle_expires == now + IDLE_TIMEOUT
    # The SSH certificate is the user CA's, for the user's logins, for the session's key.
    user_ca = (await api.auth.certs.get_ca("user")).trusted_ssh_public_keys()
    info = sshkeys.verify_cert(session.ssh_cert, user_ca, now=now, cert_type="user")
    assert info.key_id == "joe" and list(info.principals) == ["joe", "root"]
    assert info.valid_before == session.expires  # the default TTL, to the second
    assert timedelta(0) <= now + timedelta(hours=12) - session.expires < timedelta(seconds=1)
    assert info.public_key.split()[:2] == \
        sshkeys.public_key_of(session.ssh_private_key.encode()).split()[:2]
    host_ca = (await api.auth.certs.get_ca("host")).trusted_ssh_public_keys()
    assert session.host_ca_keys == host_ca
    # The TLS pair is a client identity of the user that the auth API itself accepts.
    identity = tlskeys.identity_from_cert(session.tls_cert.encode())
    assert identity.username == "joe" and identity.expires == session.expires
    async with await api.tls_client(session.tls_cert, session.tls_private_key.encode()) as user:
        assert (await user.ping()).cluster_name == "web.test"
    login = [e for e in api.events("joe") if e["event"] == "user.login"]
    assert [(e["method"], e["success"], e["addr.remote"]) for e in login] == \
        [("local", True, BROWSER)]
    # Any proxy serves the session; the answer is the stored session, secrets and all.
    async with await api.client("Proxy", "proxy-2") as other:
        assert await other.get_web_session("joe", session.id) == session


async def test_wrong_password_or_code_is_refused_and_audited_like_tsh_login(
        api: Api, admin: AuthClient, proxy: AuthClient) -> None:
    totp = await _signup(api, admin, proxy, "joe", ["joe"])
    for password, code in [("wrong password", api.code(totp)), (PASSWORD, "000000"),
                           (PASSWORD, "")]:
        with pytest.raises(AccessDenied) as refused:
            await proxy.create_web_session("joe", password, code, BROWSER)
        assert str(refused.value) == INVALID_LOGIN
    with pytest.raises(AccessDenied) as unknown:
        await proxy.create_web_session("nobody", PASSWORD, api.code(totp), BROWSER)
    assert str(unknown.value) == INVALID_LOGIN  # says nothing about who exists
    failures = [e for e in api.events("joe") if e["event"] == "auth"]
    assert [(e["success"], e["error"], e["addr.remote"]) for e in failures] == \
        [(False, INVALID_LOGIN, BROWSER)] * 3
    assert not [e for e in api.emitter.events if e["event"] == "user.login"]
    assert await _stored(api, "joe") == []
    # The same lockout as `tsh login`: two more failures lock the user, the right pair then too.
    for _ in range(2):
        with pytest.raises(AccessDenied):
            await proxy.create_web_session("joe", "wrong password", api.code(totp), BROWSER)
    with pytest.raises(AccessDenied, match="locked"):
        await proxy.create_web_session("joe", PASSWORD, api.code(totp), BROWSER)
    assert await _stored(api, "joe") == []


async def test_only_a_proxy_may_call_the_web_session_routes(
        api: Api, admin: AuthClient, proxy: AuthClient) -> None:
    totp = await _signup(api, admin, proxy, "joe", ["joe"])
    session = await proxy.create_web_session("joe", PASSWORD, api.code(totp), BROWSER)
    async with await api.client("Node", "node-1") as node, \
            await api.tls_client(session.tls_cert, session.tls_private_key.encode()) as user:
        for caller in (node, user, admin):
            with pytest.raises(AccessDenied, match="may not"):
                await caller.create_web_session("joe", PASSWORD, api.code(totp), BROWSER)
            with pytest.raises(AccessDenied, match="may not"):
                await caller.get_web_session("joe", session.id)
            with pytest.raises(AccessDenied, match="may not"):
                await caller.renew_web_session("joe", session.id)
            with pytest.raises(AccessDenied, match="may not"):
                await caller.delete_web_session("joe", session.id)
    assert await proxy.get_web_session("joe", session.id) == session
    refusals = [e for e in api.emitter.events if e["event"] == "auth" and "may not" in e["error"]]
    assert len(refusals) == 12


async def test_logout_ends_the_session_on_every_proxy(
        api: Api, admin: AuthClient, proxy: AuthClient) -> None:
    session = await _session(api, admin, proxy)
    async with await api.client("Proxy", "proxy-2") as other:
        await other.delete_web_session("joe", session.id)
        await other.delete_web_session("joe", session.id)  # idempotent
        await other.delete_web_session("joe", "not-a-session-id")
    for call in (proxy.get_web_session, proxy.renew_web_session):
        with pytest.raises(NotFound):
            await call("joe", session.id)
    assert not [e for e in api.emitter.events if "logout" in e["event"]]


async def test_deleting_the_user_ends_their_sessions_even_if_the_name_comes_back(
        api: Api, admin: AuthClient, proxy: AuthClient) -> None:
    session = await _session(api, admin, proxy)
    await proxy.renew_web_session("joe", session.id)
    api.clock.advance(timedelta(seconds=1))
    await admin.delete_user("joe")
    for call in (proxy.get_web_session, proxy.renew_web_session):
        with pytest.raises(AccessDenied, match="no longer exists"):
            await call("joe", session.id)
    assert await _stored(api, "joe") == []
    api.clock.advance(timedelta(seconds=1))
    again = await _session(api, admin, proxy)  # a new joe: a new session, not the old one
    assert await _stored(api, "joe") == [again.id]
    with pytest.raises(NotFound):
        await proxy.get_web_session("joe", session.id)


async def test_an_admin_lock_ends_the_sessions_but_a_failed_login_lockout_does_not(
        api: Api, admin: AuthClient, proxy: AuthClient) -> None:
    totp = await _signup(api, admin, proxy, "joe", ["joe"])
    session = await proxy.create_web_session("joe", PASSWORD, api.code(totp), BROWSER)
    # Anyone can fail five logins in joe's name: that must not log joe out.
    for _ in range(5):
        with pytest.raises(AccessDenied):
            await proxy.create_web_session("joe", "guess", api.code(totp), BROWSER)
    user = await admin.get_user("joe")
    assert user.spec.status.locked_message == LOGIN_LOCK_MESSAGE
    # Nor must an admin's edit of the locked-out user (`tctl create -f` of its YAML).
    user = await admin.upsert_user(user.model_copy(update={"spec": user.spec.model_copy(
        update={"traits": {"logins": ["joe", "deploy"]}})}))
    assert (await proxy.renew_web_session("joe", session.id)).id == session.id
    await admin.upsert_user(user.model_copy(update={"spec": user.spec.model_copy(update={
        "status": LoginStatus(is_locked=True, locked_message="compromised laptop")})}))
    for call in (proxy.get_web_session, proxy.renew_web_session):
        with pytest.raises(AccessDenied, match="locked"):
            await call("joe", session.id)
    assert await _stored(api, "joe") == []


async def test_a_deletion_during_the_login_takes_the_new_session_back(
        api: Api, admin: AuthClient, proxy: AuthClient, monkeypatch: pytest.MonkeyPatch) -> None:
    totp = await _signup(api, admin, proxy, "joe", ["joe"])
    sign = api.auth.certs.issue_user_certs

    async def sign_while_joe_is_replaced(*args: Any, **kwargs: Any) -> Any:
        certs = await sign(*args, **kwargs)
        # The deletion's cleanup runs before the session is stored; then joe is created again.
        await admin.delete_user("joe")
        await admin.create_user_signup("joe", ["joe"], [])
        return certs

    monkeypatch.setattr(api.auth.certs, "issue_user_certs", sign_while_joe_is_replaced)
    with pytest.raises(AccessDenied, match="deleted"):
        await proxy.create_web_session("joe", PASSWORD, api.code(totp), BROWSER)
    assert await _stored(api, "joe") == []
    assert not [e for e in api.emitter.events if e["event"] == "user.login"]


async def test_an_expired_user_is_refused(api: Api, admin: AuthClient, proxy: AuthClient) -> None:
    session = await _session(api, admin, proxy)
    user = await admin.get_user("joe")
    await admin.upsert_user(user.model_copy(update={"spec": user.spec.model_copy(update={
        "expires": api.clock.now() + timedelta(minutes=1)})}))
    assert await proxy.get_web_session("joe", session.id) == session
    api.clock.advance(timedelta(minutes=2))
    with pytest.raises(AccessDenied, match="expired"):
        await proxy.renew_web_session("joe", session.id)


async def test_renewal_keeps_the_session_alive_but_never_past_expires(
        api: Api, admin: AuthClient, proxy: AuthClient) -> None:
    session = await _session(api, admin, proxy)
    # Renewed more often than its idle timeout, the session lives until its certificates end...
    idle_ends = []
    while api.clock.now() + timedelta(minutes=9) < session.expires:
        api.clock.advance(timedelta(minutes=9))
        renewed = await proxy.renew_web_session("joe", session.id)
        assert renewed.expires == session.expires and renewed.bearer_token == session.bearer_token
        idle_ends.append(renewed.idle_expires - api.clock.now())
    assert len(idle_ends) == 79
    assert idle_ends[:-1] == [IDLE_TIMEOUT] * 78
    assert idle_ends[-1] < IDLE_TIMEOUT  # the last renewal stops at expires
    assert (await proxy.get_web_session("joe", session.id)).idle_expires == session.expires
    # ...and not a moment longer.
    api.clock.advance(session.expires - api.clock.now())
    for call in (proxy.get_web_session, proxy.renew_web_session):
        with pytest.raises(NotFound):
            await call("joe", session.id)
    # Left alone, a session ends after its idle timeout.
    idle = await _session(api, admin, proxy, "ann")
    api.clock.advance(IDLE_TIMEOUT)
    with pytest.raises(NotFound):
        await proxy.renew_web_session("ann", idle.id)
