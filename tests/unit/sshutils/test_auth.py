"""CertChecker decides on a raw key blob with the injected clock, without any connection."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest

from teleport.errors import AccessDenied
from teleport.events.emitter import AUTH, MemoryEmitter
from teleport.keys.ssh import generate_private_key, public_key_of, sign_user_cert
from teleport.sshutils.auth import CertChecker
from teleport.utils.clock import FakeClock

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _blob(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


def _cert(ca: bytes, logins: list[str], *, pty: bool = True) -> bytes:
    key = generate_private_key()
    return _blob(sign_user_cert(ca, public_key_of(key), key_id="alice", principals=logins,
                                valid_after=START, valid_before=START + timedelta(hours=1),
                                roles=["access"], permit_pty=pty))


@pytest.fixture
def ca() -> bytes:
    return generate_private_key()


def _checker(ca: bytes, clock: FakeClock, *, check_login: bool = True) -> CertChecker:
    return CertChecker(trusted_cas=lambda: [public_key_of(ca)], emitter=MemoryEmitter(),
                       clock=clock, check_login=check_login)


def test_accepts_a_trusted_cert_and_reads_permissions(ca: bytes) -> None:
    clock = FakeClock(START + timedelta(minutes=1))
    identity, _ = _checker(ca, clock).check("root", _cert(ca, ["root"], pty=False))
    assert identity.user == "alice" and identity.login == "root"
    assert identity.cert.roles == ("access",)
    assert "port-forwarding" in identity.permissions and "pty" not in identity.permissions


def test_expiry_follows_the_injected_clock(ca: bytes) -> None:
    clock = FakeClock(START + timedelta(minutes=59))
    checker = _checker(ca, clock)
    blob = _cert(ca, ["root"])
    checker.check("root", blob)
    clock.advance(timedelta(minutes=2))
    with pytest.raises(AccessDenied, match="certificate expired"):
        checker.check("root", blob)


def test_login_must_be_a_principal_only_where_asked(ca: bytes) -> None:
    clock = FakeClock(START + timedelta(minutes=1))
    blob = _cert(ca, ["root"])
    with pytest.raises(AccessDenied, match="login 'alice' is not in the certificate's principals"):
        _checker(ca, clock).check("alice", blob)
    assert _checker(ca, clock, check_login=False).check("alice", blob)[0].login == "alice"


def test_plain_keys_and_garbage_are_refused(ca: bytes) -> None:
    checker = _checker(ca, FakeClock(START))
    with pytest.raises(AccessDenied, match="a certificate is required"):
        checker.check("root", _blob(public_key_of(generate_private_key())))
    with pytest.raises(AccessDenied, match="a certificate is required"):
        checker.check("root", b"\x00")
    with pytest.raises(AccessDenied, match="invalid SSH certificate"):
        algorithm = b"ssh-ed25519-cert-v01@openssh.com"
        checker.check("root", len(algorithm).to_bytes(4, "big") + algorithm + b"junk")


async def test_failures_are_audited_with_the_cert_owner(ca: bytes) -> None:
    emitter = MemoryEmitter()
    checker = CertChecker(trusted_cas=list, emitter=emitter, clock=FakeClock(START),
                          check_login=True)
    await checker.audit_failure("root", _cert(ca, ["root"]), "certificate expired", "10.0.0.1:5")
    event, = emitter.of_type(AUTH)
    assert (event["user"], event["login"], event["success"], event["error"],
            event["addr.remote"]) == ("alice", "root", False, "certificate expired", "10.0.0.1:5")
