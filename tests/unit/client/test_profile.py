"""The profile notes when the login's certificate expires, so a command refuses an expired login
with one line before it reaches the proxy, without loading the certificate parser."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from teleport.client.profile import Profile, current_profile, save_login
from teleport.errors import AccessDenied
from teleport.keys import ssh as sshkeys


def _login(home: Path, monkeypatch: pytest.MonkeyPatch, valid_before: datetime) -> Profile:
    monkeypatch.setenv("TELEPORT_HOME", str(home))
    ca, key = sshkeys.generate_private_key(), sshkeys.generate_private_key()
    pub = sshkeys.public_key_of(key)
    cert = sshkeys.sign_user_cert(ca, pub, key_id="alice", principals=["alice"],
                                  valid_after=valid_before - timedelta(hours=12),
                                  valid_before=valid_before)
    profile = Profile(web_proxy_addr="proxy.example:3080", ssh_proxy_addr="proxy.example:3023",
                      user="alice", cluster="example")
    save_login(profile, ssh_key=key, ssh_pub=pub, ssh_cert=cert, tls_key=b"", tls_cert="",
               tls_cas=[], host_ca_keys=[])
    return current_profile()


def test_the_login_notes_when_its_certificate_expires(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    profile = _login(tmp_path, monkeypatch, expires)
    assert profile.valid_before == expires.isoformat()
    profile.cert_path.unlink()  # the noted time is enough: the certificate is not read
    assert profile.check_valid() == expires
    with pytest.raises(AccessDenied, match="your certificate has expired, run 'tsh login'"):
        profile.check_valid(now=expires + timedelta(seconds=1))


def test_a_profile_of_an_older_tsh_asks_the_certificate(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    expired = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    profile = _login(tmp_path, monkeypatch, expired)
    older = Profile(profile.web_proxy_addr, profile.ssh_proxy_addr, profile.user, profile.cluster)
    with pytest.raises(AccessDenied, match="your certificate has expired"):
        older.check_valid()
