"""The auth server's logic over the memory backend with a fake clock: no network."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest

from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, AlreadyExists, BadParameter, NotFound
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.utils.clock import FakeClock

PASSWORD = "correct horse"


async def _signup(auth: AuthServer, name: str = "joe", logins: list[str] | None = None) -> pyotp.TOTP:
    token = await auth.accounts.create_user_signup(name, logins if logins is not None else ["joe", "root"],
                                          [], created_by="admin")
    info = await auth.accounts.get_signup_info(token.metadata.name)
    totp = pyotp.TOTP(info.otp_secret)
    await auth.accounts.complete_signup(token.metadata.name, PASSWORD, totp.at(auth.clock.now()))
    return totp


def _emitted(auth: AuthServer) -> MemoryEmitter:
    assert isinstance(auth.emitter, MemoryEmitter)
    return auth.emitter


async def test_init_is_idempotent_and_keeps_keys(auth: AuthServer) -> None:
    before = (await auth.certs.get_ca("user")).trusted_ssh_public_keys()
    await auth.init()
    assert (await auth.certs.get_ca("user")).trusted_ssh_public_keys() == before
    assert auth.cluster_name == "example.com"
    assert all(not k.private_key for k in (await auth.certs.get_ca("user")).spec.active_keys.ssh)


async def test_renaming_cluster_is_refused(auth: AuthServer) -> None:
    other = AuthServer(auth.backend, MemoryEmitter(), auth.clock, AuthSettings(cluster_name="other"))
    with pytest.raises(BadParameter, match="renaming"):
        await other.init()


async def test_signup_then_login_issues_certificates(auth: AuthServer) -> None:
    totp = await _signup(auth)
    key = sshkeys.generate_private_key()
    tls_key = tlskeys.generate_tls_key()
    auth.clock.advance(timedelta(seconds=31))  # type: ignore[attr-defined]
    certs = await auth.logins.login(username="joe", password=PASSWORD, otp_code=totp.at(auth.clock.now()),
                             ssh_public_key=sshkeys.public_key_of(key),
                             tls_public_key=tlskeys.tls_public_key_pem(tls_key), ttl=None)
    info = sshkeys.verify_cert(certs.ssh_cert, certs.user_ca_keys, now=auth.clock.now(),
                               cert_type="user", principal="root")
    assert info.key_id == "joe"
    assert set(info.principals) == {"joe", "root"}
    assert info.valid_before - auth.clock.now() == timedelta(hours=12)
    identity = tlskeys.identity_from_cert(certs.tls_cert.encode())
    assert identity.username == "joe" and identity.cluster == "example.com"
    assert [e["event"] for e in _emitted(auth).events][-1] == "user.login"


async def test_signup_token_is_single_use_and_expires(auth: AuthServer) -> None:
    token = await auth.accounts.create_user_signup("ann", [], [], created_by="admin")
    secret = (await auth.accounts.get_signup_info(token.metadata.name)).otp_secret
    auth.clock.advance(timedelta(hours=1, seconds=1))  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        await auth.accounts.complete_signup(token.metadata.name, PASSWORD, pyotp.TOTP(secret).now())
    token = await auth.accounts.create_signup_token("ann")
    info = await auth.accounts.get_signup_info(token.metadata.name)
    await auth.accounts.complete_signup(token.metadata.name, PASSWORD,
                               pyotp.TOTP(info.otp_secret).at(auth.clock.now()))
    with pytest.raises(NotFound):
        await auth.accounts.get_signup_info(token.metadata.name)
    assert (await auth.accounts.get_user("ann")).logins == ["ann"]


async def test_duplicate_user_and_bad_input(auth: AuthServer) -> None:
    await auth.accounts.create_user_signup("bob", [], [], created_by="admin")
    with pytest.raises(AlreadyExists):
        await auth.accounts.create_user_signup("bob", [], [], created_by="admin")
    with pytest.raises(BadParameter):
        await auth.accounts.create_user_signup("bad/name", [], [], created_by="admin")
    token = await auth.accounts.create_signup_token("bob")
    with pytest.raises(BadParameter, match="password"):
        await auth.accounts.complete_signup(token.metadata.name, "short", "000000")


async def test_wrong_password_otp_and_replay_are_refused_and_audited(auth: AuthServer) -> None:
    totp = await _signup(auth)
    key = sshkeys.public_key_of(sshkeys.generate_private_key())
    tls_pub = tlskeys.tls_public_key_pem(tlskeys.generate_tls_key())
    signup_code = totp.at(auth.clock.now())
    auth.clock.advance(timedelta(seconds=30))  # type: ignore[attr-defined]
    fresh = totp.at(auth.clock.now())
    with pytest.raises(AccessDenied):  # a valid, unused code: only the password is wrong
        await auth.logins.login(username="joe", password="nope", otp_code=fresh,
                         ssh_public_key=key, tls_public_key=tls_pub, ttl=None)
    # The same code with the right password passes: the refusal above was the password's.
    await auth.logins.login(username="joe", password=PASSWORD, otp_code=fresh,
                     ssh_public_key=key, tls_public_key=tls_pub, ttl=None)
    with pytest.raises(AccessDenied):
        await auth.logins.login(username="joe", password=PASSWORD, otp_code="000000",
                         ssh_public_key=key, tls_public_key=tls_pub, ttl=None)
    with pytest.raises(AccessDenied):
        await auth.logins.login(username="ghost", password=PASSWORD, otp_code="000000",
                         ssh_public_key=key, tls_public_key=tls_pub, ttl=None)
    with pytest.raises(AccessDenied):  # the code used to enroll, still in the window, is spent
        await auth.logins.login(username="joe", password=PASSWORD, otp_code=signup_code,
                         ssh_public_key=key, tls_public_key=tls_pub, ttl=None)
    auth.clock.advance(timedelta(seconds=30))  # type: ignore[attr-defined]
    code = totp.at(auth.clock.now())
    await auth.logins.login(username="joe", password=PASSWORD, otp_code=code, ssh_public_key=key,
                     tls_public_key=tls_pub, ttl=None)
    with pytest.raises(AccessDenied):
        await auth.logins.login(username="joe", password=PASSWORD, otp_code=code, ssh_public_key=key,
                         tls_public_key=tls_pub, ttl=None)
    failures = _emitted(auth).of_type("auth")
    assert len(failures) == 5
    assert all(f["success"] is False and f["error"] for f in failures)
    assert {f["user"] for f in failures} == {"joe", "ghost"}


async def test_five_failures_lock_the_account_for_twenty_minutes(auth: AuthServer) -> None:
    totp = await _signup(auth)
    key = sshkeys.public_key_of(sshkeys.generate_private_key())
    tls_pub = tlskeys.tls_public_key_pem(tlskeys.generate_tls_key())
    for _ in range(5):
        with pytest.raises(AccessDenied):
            await auth.logins.authenticate("joe", "wrong", "000000")
    assert (await auth.accounts.get_user("joe")).spec.status.is_locked
    with pytest.raises(AccessDenied, match="locked"):
        await auth.logins.login(username="joe", password=PASSWORD, otp_code=totp.at(auth.clock.now()),
                         ssh_public_key=key, tls_public_key=tls_pub, ttl=None)
    auth.clock.advance(timedelta(minutes=20, seconds=1))  # type: ignore[attr-defined]
    await auth.logins.login(username="joe", password=PASSWORD, otp_code=totp.at(auth.clock.now()),
                     ssh_public_key=key, tls_public_key=tls_pub, ttl=timedelta(hours=100))


async def test_failures_outside_the_window_do_not_lock(auth: AuthServer) -> None:
    await _signup(auth)
    for _ in range(4):
        with pytest.raises(AccessDenied):
            await auth.logins.authenticate("joe", "wrong", "000000")
    auth.clock.advance(timedelta(minutes=31))  # type: ignore[attr-defined]
    with pytest.raises(AccessDenied):
        await auth.logins.authenticate("joe", "wrong", "000000")
    assert not (await auth.accounts.get_user("joe")).spec.status.is_locked


async def test_ttl_is_capped(auth: AuthServer) -> None:
    await _signup(auth)
    user = await auth.accounts.get_user("joe")
    key = sshkeys.public_key_of(sshkeys.generate_private_key())
    tls_pub = tlskeys.tls_public_key_pem(tlskeys.generate_tls_key())
    certs = await auth.certs.issue_user_certs(user, key, tls_pub, timedelta(days=30))
    info = sshkeys.parse_cert(certs.ssh_cert)
    assert info.valid_before - auth.clock.now() == timedelta(hours=30)


async def test_host_certs_carry_names_and_role(auth: AuthServer) -> None:
    key = sshkeys.generate_private_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="5d2c", nodename="luna", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(key),
        tls_public_key=tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()),
        addresses=["10.0.0.5"])
    info = sshkeys.verify_cert(certs.ssh_cert, certs.host_ca_keys, now=auth.clock.now(),
                               cert_type="host", principal="luna.example.com")
    assert {"5d2c", "5d2c.example.com", "luna", "10.0.0.5"} <= set(info.principals)
    identity = tlskeys.identity_from_cert(certs.tls_cert.encode())
    assert identity.system_role == "Node" and identity.host_uuid == "5d2c"
    with pytest.raises(BadParameter):
        await auth.certs.issue_host_certs(host_uuid="x", nodename="x", system_role="Wizard",
                                    ssh_public_key=sshkeys.public_key_of(key),
                                    tls_public_key=b"", addresses=[])


async def test_rsa_signature_algo_makes_rsa_cas(auth: AuthServer) -> None:
    clock = FakeClock()
    server = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                        AuthSettings(cluster_name="rsa.example.com", ca_signature_algo="rsa-sha2-512"))
    await server.init()
    ca = await server.certs.get_ca("user")
    assert ca.trusted_ssh_public_keys()[0].startswith("ssh-rsa ")
    assert ca.spec.signing_alg == "rsa-sha2-512"
