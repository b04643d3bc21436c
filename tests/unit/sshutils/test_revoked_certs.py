"""A valid certificate of a revoked user is refused at authentication, with the reason."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest

from teleport.errors import AccessDenied
from teleport.events.emitter import MemoryEmitter
from teleport.keys.ssh import SSHCertInfo, generate_private_key, public_key_of, sign_user_cert
from teleport.sshutils.auth import CertChecker
from teleport.utils.clock import FakeClock

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _cert(ca: bytes, user: str) -> bytes:
    key = generate_private_key()
    line = sign_user_cert(ca, public_key_of(key), key_id=user, principals=["root"],
                          valid_after=START, valid_before=START + timedelta(hours=1),
                          roles=["access"], permit_pty=True)
    return base64.b64decode(line.split()[1])


def test_a_revoked_users_certificate_is_refused_and_others_pass() -> None:
    ca = generate_private_key()

    def revoked(cert: SSHCertInfo) -> str | None:
        return "user alice was deleted" if cert.key_id == "alice" else None

    checker = CertChecker(trusted_cas=lambda: [public_key_of(ca)], emitter=MemoryEmitter(),
                          clock=FakeClock(START + timedelta(minutes=1)), check_login=True,
                          revoked=revoked)
    with pytest.raises(AccessDenied, match="access revoked: user alice was deleted"):
        checker.check("root", _cert(ca, "alice"))
    identity, _ = checker.check("root", _cert(ca, "bob"))
    assert identity.user == "bob"
