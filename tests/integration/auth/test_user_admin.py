"""User administration through the real auth API over mutual TLS: reset links, signup TTLs and
a failed-login lockout that tells nobody which names exist."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pyotp
import pytest

from teleport.api.auth_models import IssuedCerts
from teleport.auth.client import AuthClient
from teleport.auth.logins import INVALID_LOGIN
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.base import Item
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, BadParameter, NotFound
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.types.resource import ZERO_TIME
from teleport.types.resources import LoginStatus
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

PASSWORD = "correct horse"
NEW_PASSWORD = "battery staple"
WRONG = "wrong password"


class RecordingBackend(MemoryBackend):
    """The memory backend, noting which operation touched which key (the steps of a login)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.ops: list[tuple[str, bytes]] = []

    async def get(self, key: bytes) -> Item:
        self.ops.append(("get", key))
        return await super().get(key)

    async def create(self, item: Item) -> Item:
        self.ops.append(("create", item.key))
        return await super().create(item)

    async def put(self, item: Item) -> Item:
        self.ops.append(("put", item.key))
        return await super().put(item)

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        self.ops.append(("cas", replace.key))
        return await super().compare_and_swap(expected, replace)


@dataclass
class Api:
    auth: AuthServer
    clock: FakeClock
    emitter: MemoryEmitter
    backend: RecordingBackend
    clients: list[AuthClient] = field(default_factory=list)

    async def fresh_code(self, totp: pyotp.TOTP) -> str:
        """A code never used before: step the clock one window, so no test fails on a replay."""
        self.clock.advance(timedelta(seconds=30))
        return totp.at(self.clock.now())


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, AuthClient, AuthClient]]:
    """A real auth API on loopback, with an admin (tctl) and a proxy client."""
    clock = FakeClock(datetime.now(timezone.utc))
    emitter = MemoryEmitter()
    backend = RecordingBackend(clock)
    auth = AuthServer(backend, emitter, clock, AuthSettings(cluster_name="users.test"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    state = Api(auth, clock, emitter, backend)

    async def client(role: str, host_uuid: str) -> AuthClient:
        tls_key = tlskeys.generate_tls_key()
        certs = await auth.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=host_uuid, system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                           [c.encode() for c in certs.tls_ca_certs])
        return AuthClient([addr], ctx, timeout=60, cluster=auth.cluster_name)

    admin, proxy = await client("Admin", "ops-host"), await client("Proxy", "proxy-1")
    try:
        yield state, admin, proxy
    finally:
        await admin.close()
        await proxy.close()
        await runner.cleanup()


async def _signup(api: Api, admin: AuthClient, proxy: AuthClient, name: str) -> pyotp.TOTP:
    token = (await admin.create_user_signup(name, [name, "ubuntu"], [])).metadata.name
    totp = pyotp.TOTP((await proxy.get_signup(token)).otp_secret)
    await proxy.complete_signup(token, PASSWORD, totp.at(api.clock.now()))
    return totp


async def _login(proxy: AuthClient, name: str, password: str, code: str) -> IssuedCerts:
    return await proxy.authenticate_ssh(
        name, password=password, otp_code=code,
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()),
        ttl=None, remote_addr="192.0.2.7:4000")


async def _refusal(proxy: AuthClient, name: str, password: str, code: str) -> str:
    with pytest.raises(AccessDenied) as info:
        await _login(proxy, name, password, code)
    return str(info.value)


# --- tctl users reset ----------------------------------------------------------------------------

async def test_reset_stops_the_old_password_at_once_and_the_link_sets_new_ones(
        api: tuple[Api, AuthClient, AuthClient]) -> None:
    state, admin, proxy = api
    old_totp = await _signup(state, admin, proxy, "joe")
    await _login(proxy, "joe", PASSWORD, await state.fresh_code(old_totp))
    web = await proxy.create_web_session("joe", PASSWORD, await state.fresh_code(old_totp), "")

    token = await admin.reset_user("joe")
    assert token.spec.usage == "reset" and token.spec.user == "joe"
    assert token.metadata.expires == state.clock.now() + timedelta(hours=8)
    # The old credentials stop at once, the browser session with them too.
    assert await _refusal(proxy, "joe", PASSWORD, await state.fresh_code(old_totp)) == INVALID_LOGIN
    with pytest.raises((NotFound, AccessDenied)):
        await proxy.get_web_session("joe", web.id)

    info = await proxy.get_signup(token.metadata.name)
    assert (info.user, info.usage) == ("joe", "reset")
    new_totp = pyotp.TOTP(info.otp_secret)
    assert info.otp_secret != old_totp.secret
    user = await proxy.complete_signup(token.metadata.name, NEW_PASSWORD,
                                       new_totp.at(state.clock.now()))
    assert user.logins == ["joe", "ubuntu"]  # roles, logins and traits are kept
    certs = await _login(proxy, "joe", NEW_PASSWORD, await state.fresh_code(new_totp))
    assert tlskeys.identity_from_cert(certs.tls_cert.encode()).username == "joe"
    # Neither the old password nor the old authenticator opens anything any more.
    assert await _refusal(proxy, "joe", PASSWORD, await state.fresh_code(new_totp)) == INVALID_LOGIN
    assert await _refusal(proxy, "joe", NEW_PASSWORD,
                          await state.fresh_code(old_totp)) == INVALID_LOGIN
    created = state.emitter.of_type("reset_password_token.create")[-1]
    assert (created["user"], created["name"], created["usage"], created["ttl"]) == \
        ("ops-host", "joe", "reset", "8h0m0s")
    assert token.metadata.name not in str(state.emitter.events)


async def test_used_expired_or_replaced_reset_links_are_refused(
        api: tuple[Api, AuthClient, AuthClient]) -> None:
    state, admin, proxy = api
    await _signup(state, admin, proxy, "joe")
    used = await admin.reset_user("joe")
    secret = (await proxy.get_signup(used.metadata.name)).otp_secret
    await proxy.complete_signup(used.metadata.name, NEW_PASSWORD,
                                pyotp.TOTP(secret).at(state.clock.now()))
    with pytest.raises(NotFound, match="not found or expired"):
        await proxy.get_signup(used.metadata.name)
    with pytest.raises(NotFound, match="not found or expired"):
        await proxy.complete_signup(used.metadata.name, "a third password", "000000")

    replaced = await admin.reset_user("joe")
    latest = await admin.reset_user("joe")  # a lost link: the new one replaces it
    with pytest.raises(NotFound):
        await proxy.get_signup(replaced.metadata.name)
    assert [t.metadata.name for t in (await admin.list_tokens())[1]] == [latest.metadata.name]

    state.clock.advance(timedelta(hours=8, seconds=1))
    with pytest.raises(NotFound, match="not found or expired"):
        await proxy.get_signup(latest.metadata.name)
    with pytest.raises(NotFound, match="not found or expired"):
        await proxy.complete_signup(latest.metadata.name, "a third password", "000000")
    with pytest.raises(NotFound, match="user 'nobody' not found"):
        await admin.reset_user("nobody")


async def test_reset_of_an_unfinished_signup_replaces_its_link(
        api: tuple[Api, AuthClient, AuthClient]) -> None:
    state, admin, proxy = api
    signup = await admin.create_user_signup("ann", ["ann"], [])
    reset = await admin.reset_user("ann")
    with pytest.raises(NotFound):
        await proxy.get_signup(signup.metadata.name)
    secret = (await proxy.get_signup(reset.metadata.name)).otp_secret
    await proxy.complete_signup(reset.metadata.name, NEW_PASSWORD,
                                pyotp.TOTP(secret).at(state.clock.now()))
    await _login(proxy, "ann", NEW_PASSWORD, await state.fresh_code(pyotp.TOTP(secret)))


async def test_reset_unlocks_a_locked_out_user_but_not_an_administrators_lock(
        api: tuple[Api, AuthClient, AuthClient]) -> None:
    state, admin, proxy = api
    totp = await _signup(state, admin, proxy, "joe")
    for _ in range(5):
        await _refusal(proxy, "joe", WRONG, await state.fresh_code(totp))
    assert "locked" in await _refusal(proxy, "joe", PASSWORD, await state.fresh_code(totp))
    assert (await admin.get_user("joe")).spec.status.is_locked

    token = await admin.reset_user("joe")
    assert not (await admin.get_user("joe")).spec.status.is_locked
    secret = (await proxy.get_signup(token.metadata.name)).otp_secret
    new_totp = pyotp.TOTP(secret)
    await proxy.complete_signup(token.metadata.name, NEW_PASSWORD, new_totp.at(state.clock.now()))
    await _login(proxy, "joe", NEW_PASSWORD, await state.fresh_code(new_totp))

    # An administrator's lock is a decision, not a forgotten password: the reset keeps it.
    user = await admin.get_user("joe")
    await admin.upsert_user(user.model_copy(update={"spec": user.spec.model_copy(update={
        "status": LoginStatus(is_locked=True, locked_message="on leave",
                              lock_expires=ZERO_TIME)})}))
    token = await admin.reset_user("joe")
    secret = (await proxy.get_signup(token.metadata.name)).otp_secret
    await proxy.complete_signup(token.metadata.name, PASSWORD,
                                pyotp.TOTP(secret).at(state.clock.now()))
    assert "on leave" in await _refusal(proxy, "joe", PASSWORD,
                                        await state.fresh_code(pyotp.TOTP(secret)))


async def test_reset_is_for_administrators(api: tuple[Api, AuthClient, AuthClient]) -> None:
    state, admin, proxy = api
    totp = await _signup(state, admin, proxy, "joe")
    with pytest.raises(AccessDenied):
        await proxy.reset_user("joe")
    await _login(proxy, "joe", PASSWORD, await state.fresh_code(totp))  # nothing was reset


# --- tctl users add --ttl ------------------------------------------------------------------------

async def test_signup_ttl_defaults_to_an_hour_and_is_at_most_48h(
        api: tuple[Api, AuthClient, AuthClient]) -> None:
    state, admin, proxy = api
    now = state.clock.now()
    assert (await admin.create_user_signup("a1", [], [])).metadata.expires == \
        now + timedelta(hours=1)
    longest = await admin.create_user_signup("a2", [], [], ttl=timedelta(hours=48))
    assert longest.metadata.expires == now + timedelta(hours=48)
    for ttl in (timedelta(hours=48, seconds=1), timedelta(days=30)):
        with pytest.raises(BadParameter, match=r"^--ttl must be at most 48h$"):
            await admin.create_user_signup("a3", [], [], ttl=ttl)
    with pytest.raises(BadParameter, match="--ttl must be positive"):
        await admin.create_user_signup("a3", [], [], ttl=timedelta(hours=-1))
    with pytest.raises(BadParameter, match="invalid duration"):
        await admin.call("POST", "/v1/users/signup", {"name": "a3", "ttl": "two days"})
    with pytest.raises(NotFound):
        await admin.get_user("a3")  # a refused TTL creates no user
    state.clock.advance(timedelta(hours=47))
    info = await proxy.get_signup(longest.metadata.name)
    await proxy.complete_signup(longest.metadata.name, PASSWORD,
                                pyotp.TOTP(info.otp_secret).at(state.clock.now()))
    created = [e for e in state.emitter.of_type("reset_password_token.create")]
    assert [e["ttl"] for e in created] == ["1h0m0s", "48h0m0s"]


# --- the failed-login lockout --------------------------------------------------------------------

async def test_an_unknown_name_is_locked_out_exactly_like_a_real_user(
        api: tuple[Api, AuthClient, AuthClient]) -> None:
    """Every name gets the same answers, audit lines and backend steps, so a lockout (or its
    absence) says nothing about which names exist: a real user, one who never set a password,
    an expired one and one that never existed."""
    state, admin, proxy = api
    totp = await _signup(state, admin, proxy, "joe")
    await admin.create_user_signup("ann", [], [])  # never set a password
    await _signup(state, admin, proxy, "old")
    old = await admin.get_user("old")
    await admin.upsert_user(old.model_copy(update={"spec": old.spec.model_copy(
        update={"expires": state.clock.now()})}))
    names = ["joe", "ann", "old", "ghost"]
    answers: dict[str, list[str]] = {n: [] for n in names}
    steps: dict[str, list[list[tuple[str, bytes]]]] = {n: [] for n in names}
    for _ in range(6):
        code = await state.fresh_code(totp)
        for name in names:
            state.backend.ops.clear()
            answers[name].append(await _refusal(proxy, name, WRONG, code))
            steps[name].append([(op, k.replace(name.encode(), b"<name>"))
                                for op, k in state.backend.ops])
    assert answers["joe"][:5] == [INVALID_LOGIN] * 5
    assert answers["joe"][5].startswith("5 failed login attempts, user is locked: try again after")
    assert answers["ann"] == answers["old"] == answers["ghost"] == answers["joe"]
    # The same reads and writes, in the same order, up to the attempt that locks (where a real
    # user's status also shows the lock) and from then on.
    for name in ("ann", "old", "ghost"):
        assert steps[name][:4] == steps["joe"][:4], name
        assert steps[name][5:] == steps["joe"][5:], name
    errors = {name: [e["error"] for e in state.emitter.of_type("auth") if e["user"] == name]
              for name in names}
    assert errors["ghost"] == errors["ann"] == errors["old"] == errors["joe"]
    # Even the right password of a locked real user gets the locked answer, as a guess would.
    locked = await _refusal(proxy, "joe", PASSWORD, await state.fresh_code(totp))
    assert locked == await _refusal(proxy, "ghost", PASSWORD, totp.at(state.clock.now()))
    # Browser logins share the lock and its answer.
    with pytest.raises(AccessDenied) as web_joe:
        await proxy.create_web_session("joe", PASSWORD, await state.fresh_code(totp), "")
    with pytest.raises(AccessDenied) as web_ghost:
        await proxy.create_web_session("ghost", PASSWORD, totp.at(state.clock.now()), "")
    assert str(web_joe.value) == str(web_ghost.value) == locked
