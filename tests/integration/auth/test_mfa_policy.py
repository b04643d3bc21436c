"""Second factors as the auth API enforces them, per `second_factor`, over real mTLS.

The key is the software authenticator (tests/webauthn_softkey.py); the proxy and the user are
real certificates of the cluster. What is checked here is the policy around the ceremonies:
which factor signup and login ask for under `webauthn`, `on` and `optional`, that a failed
signup leaves no key, that deleting or resetting a user forgets their keys, and that devices
are one's own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyotp
import pytest

from teleport.api.mfa_models import MFASignupComplete
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, BadParameter, NotFound
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api
from tests.webauthn_softkey import SoftAuthenticator

PASSWORD = "correct horse"
ORIGIN = "https://proxy.example.com:3080"
RP_ID = "example.com"


@dataclass
class Rig:
    auth: AuthServer
    clock: FakeClock
    emitter: MemoryEmitter
    addr: HostPort
    admin: AuthClient
    proxy: AuthClient

    async def client(self, role: str, name: str) -> AuthClient:
        tls_key = tlskeys.generate_tls_key()
        cas = (await self.auth.certs.get_ca("tls")).trusted_tls_certs()
        if role == "User":
            user = await self.auth.accounts.get_user(name)
            certs = await self.auth.certs.issue_user_certs(
                user, sshkeys.public_key_of(sshkeys.generate_private_key()),
                tlskeys.tls_public_key_pem(tls_key), timedelta(hours=1))
        else:
            certs = await self.auth.certs.issue_host_certs(
                host_uuid=name, nodename=name, system_role=role,
                ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
                tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                           [c.encode() for c in cas])
        return AuthClient([self.addr], ctx, timeout=60, cluster=self.auth.cluster_name)

    async def token(self, name: str) -> str:
        return (await self.admin.create_user_signup(name, [name], [])).metadata.name

    async def signup_with_key(self, name: str, key: SoftAuthenticator, token: str = "") -> None:
        token = token or await self.token(name)
        options = await self.proxy.mfa_signup_challenge(token)
        credential = key.create(json.dumps(options.webauthn_public_key), ORIGIN)
        await self.proxy.mfa_complete_signup(token, MFASignupComplete(
            password=PASSWORD, webauthn_response=credential, device_name="key"))

    async def key_login(self, name: str, key: SoftAuthenticator) -> str:
        options = await self.proxy.mfa_login_begin(name, PASSWORD, "")
        assertion = key.get(json.dumps(options.webauthn_public_key), ORIGIN)
        return (await self.proxy.mfa_login_finish(name, assertion, "")).user


def _rig(second_factor: str):  # type: ignore[no-untyped-def]
    @pytest.fixture
    async def rig() -> AsyncIterator[Rig]:
        clock = FakeClock(datetime.now(timezone.utc))
        emitter = MemoryEmitter()
        auth = AuthServer(MemoryBackend(clock), emitter, clock, AuthSettings(
            cluster_name="mfa.test", second_factor=second_factor, webauthn_rp_id=RP_ID,
            passwordless=True))
        await auth.init()
        runner, addr = await serve_auth_api(auth)
        rig = Rig(auth, clock, emitter, addr, None, None)  # type: ignore[arg-type]
        rig.admin = await rig.client("Admin", "admin")
        rig.proxy = await rig.client("Proxy", "proxy-1")
        try:
            yield rig
        finally:
            await rig.admin.close()
            await rig.proxy.close()
            await runner.cleanup()
    return rig


keys = _rig("webauthn")
either = _rig("on")
optional = _rig("optional")


async def test_webauthn_signup_needs_a_key_and_otp_logins_are_refused(keys: Rig) -> None:
    token = await keys.token("ann")
    with pytest.raises(BadParameter, match="register one"):
        await keys.proxy.complete_signup(token, PASSWORD, "")
    key = SoftAuthenticator()
    await keys.signup_with_key("ann", key, token)
    assert await keys.key_login("ann", key) == "ann"
    with pytest.raises(AccessDenied, match="invalid username, password or second factor"):
        await keys.proxy.create_web_session("ann", PASSWORD, "123456", "")


async def test_a_failed_signup_leaves_no_key(keys: Rig) -> None:
    token = await keys.token("ben")
    key = SoftAuthenticator()
    options = await keys.proxy.mfa_signup_challenge(token)
    credential = key.create(json.dumps(options.webauthn_public_key), ORIGIN)
    with pytest.raises(BadParameter):  # too short a password: refused before the key is kept
        await keys.proxy.mfa_complete_signup(token, MFASignupComplete(
            password="x", webauthn_response=credential))
    assert await keys.auth.mfa.devices.list("ben") == []
    await keys.admin.delete_user("ben")
    with pytest.raises(NotFound):
        await keys.auth.mfa.devices.user_handle("ben", create=False)


async def test_deleting_or_resetting_a_user_forgets_their_keys(keys: Rig) -> None:
    key = SoftAuthenticator()
    await keys.signup_with_key("cid", key)
    assert len(await keys.auth.mfa.devices.list("cid")) == 1
    await keys.admin.reset_user("cid")
    assert await keys.auth.mfa.devices.list("cid") == []
    await keys.signup_with_key("dee", key)
    await keys.admin.delete_user("dee")
    assert await keys.auth.mfa.devices.list("dee") == []


async def test_devices_are_ones_own(keys: Rig) -> None:
    await keys.signup_with_key("eve", SoftAuthenticator())
    await keys.signup_with_key("fay", SoftAuthenticator())
    async with await keys.client("User", "eve") as eve:
        assert [d.name for d in (await eve.list_mfa_devices("eve")).devices] == ["key"]
        with pytest.raises(AccessDenied, match="may not manage the MFA devices of 'fay'"):
            await eve.list_mfa_devices("fay")
        with pytest.raises(AccessDenied, match="may not manage"):
            await eve.delete_mfa_device("fay", "key")
        with pytest.raises(AccessDenied, match="last MFA device while second_factor is webauthn"):
            await eve.delete_mfa_device("eve", "key")
    assert len(await keys.auth.mfa.devices.list("fay")) == 1


async def test_on_takes_an_otp_app_or_a_key(either: Rig) -> None:
    token = await either.token("gus")
    totp = pyotp.TOTP((await either.proxy.get_signup(token)).otp_secret)
    await either.proxy.mfa_complete_signup(token, MFASignupComplete(
        password=PASSWORD, otp_code=totp.at(either.clock.now())))
    either.clock.advance(timedelta(seconds=60))
    assert (await either.proxy.create_web_session("gus", PASSWORD,
                                                  totp.at(either.clock.now()), "")).user == "gus"
    with pytest.raises(AccessDenied, match="no security key is registered"):
        await either.proxy.mfa_login_begin("gus", PASSWORD, "")
    key = SoftAuthenticator()
    await either.signup_with_key("hal", key)
    assert await either.key_login("hal", key) == "hal"
    # Only an app or a key remains: with the app gone the key is the last second factor.
    async with await either.client("User", "gus") as gus:
        assert (await gus.list_mfa_devices("gus")).otp is True


async def test_optional_asks_only_for_what_is_registered(optional: Rig) -> None:
    token = await optional.token("ivy")
    await optional.proxy.mfa_complete_signup(token, MFASignupComplete(password=PASSWORD))
    assert (await optional.proxy.create_web_session("ivy", PASSWORD, "", "")).user == "ivy"
    assert (await optional.proxy.mfa_login_begin("ivy", PASSWORD, "")).webauthn_public_key \
        is None
    key = SoftAuthenticator()
    await optional.signup_with_key("jon", key)
    with pytest.raises(AccessDenied):  # registered a key: the password alone is not enough
        await optional.proxy.create_web_session("jon", PASSWORD, "", "")
    assert await optional.key_login("jon", key) == "jon"
