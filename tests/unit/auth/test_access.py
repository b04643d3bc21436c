"""The pure rules of `teleport.auth.access`: when a user is locked or expired, which
certificates a revocation list refuses, and how long deletions are remembered."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teleport.auth.access import (
    CERT_BACKDATE,
    TOMBSTONE_TTL,
    Revocations,
    RevokedUser,
    check_user_active,
    is_user_locked,
    ssh_cert_issued_at,
    tls_cert_issued_at,
)
from teleport.auth.certs import MAX_CERT_TTL
from teleport.errors import AccessDenied
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys.identity import Identity
from teleport.services.login_attempts import LOGIN_LOCK_MESSAGE
from teleport.types.resource import Metadata
from teleport.types.resources import LoginStatus, User, UserSpec

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _user(**spec: object) -> User:
    return User(metadata=Metadata(name="alice"), spec=UserSpec(**spec))  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "locked"), [
    (LoginStatus(), False),
    (LoginStatus(is_locked=True), True),  # no lock_expires: locked until unlocked
    (LoginStatus(is_locked=True, lock_expires=NOW + timedelta(minutes=1)), True),
    (LoginStatus(is_locked=True, lock_expires=NOW - timedelta(minutes=1)), False),
    (LoginStatus(is_locked=False, lock_expires=NOW + timedelta(minutes=1)), False),
])
def test_is_user_locked(status: LoginStatus, locked: bool) -> None:
    assert is_user_locked(_user(status=status), NOW) is locked


def test_check_user_active_refuses_locked_and_expired_users() -> None:
    check_user_active(_user(), NOW)
    check_user_active(_user(expires=NOW + timedelta(seconds=1)), NOW)
    with pytest.raises(AccessDenied, match="expired"):
        check_user_active(_user(expires=NOW), NOW)
    with pytest.raises(AccessDenied, match="locked: on leave"):
        check_user_active(_user(status=LoginStatus(is_locked=True, locked_message="on leave")), NOW)
    # A lockout after failed logins stops logins, not the certificates the user already holds:
    # otherwise failing five logins in someone's name would cut their sessions.
    check_user_active(_user(status=LoginStatus(
        is_locked=True, locked_message=LOGIN_LOCK_MESSAGE,
        lock_expires=NOW + timedelta(minutes=20))), NOW)


def test_revocations_refuse_old_certificates_of_deleted_users_and_all_of_locked_ones() -> None:
    revoked = Revocations(users=[
        RevokedUser(user="alice", reason="user 'alice' was deleted", issued_before=NOW),
        RevokedUser(user="carol", reason="locked", until=NOW + timedelta(minutes=20)),
        RevokedUser(user="dave", reason="locked for good"),
    ])
    earlier, later = NOW - timedelta(hours=1), NOW + timedelta(seconds=1)
    assert revoked.refusal("alice", earlier, NOW) == "user 'alice' was deleted"
    assert revoked.refusal("alice", NOW, NOW) == "user 'alice' was deleted"
    assert revoked.refusal("alice", later, later) is None  # created again and logged in
    assert revoked.refusal("carol", later, NOW) == "locked"
    assert revoked.refusal("carol", earlier, NOW + timedelta(minutes=21)) is None  # lock ran out
    assert revoked.refusal("dave", later, NOW + timedelta(days=30)) == "locked for good"
    assert revoked.refusal("bob", earlier, NOW) is None
    # The wire form round-trips, and fields a newer auth server adds are ignored.
    wire = revoked.model_dump(mode="json")
    wire["users"][0]["lock_kind"] = "future field"
    assert Revocations.model_validate(wire) == revoked


def test_tombstones_outlive_every_certificate_issued_before_the_deletion() -> None:
    assert TOMBSTONE_TTL > MAX_CERT_TTL + CERT_BACKDATE


def test_issue_time_is_read_back_from_both_certificates() -> None:
    ca = sshkeys.generate_private_key()
    ssh_cert = sshkeys.sign_user_cert(
        ca, sshkeys.public_key_of(sshkeys.generate_private_key()), key_id="alice",
        principals=["root"], valid_after=NOW - CERT_BACKDATE, valid_before=NOW + timedelta(hours=1))
    assert ssh_cert_issued_at(sshkeys.parse_cert(ssh_cert)) == NOW
    ca_key, ca_cert = tlskeys.generate_tls_ca("c", now=NOW - timedelta(days=1))
    cert = tlskeys.issue_tls_cert(ca_key, ca_cert,
                                  tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()),
                                  Identity(username="alice", cluster="c"), now=NOW,
                                  not_after=NOW + timedelta(hours=1))
    der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    assert tls_cert_issued_at(der) == NOW
