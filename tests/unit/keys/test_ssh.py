"""SSH keys and certificates: issue, parse, verify, and check OpenSSH and asyncssh agree."""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncssh
import pytest
from asyncssh.public_key import CERT_TYPE_HOST, CERT_TYPE_USER, SSHOpenSSHCertificate
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType

from teleport.errors import AccessDenied, BadParameter
from teleport.keys import ssh

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


@pytest.fixture(scope="module", params=["ed25519", "rsa"])
def ca(request: pytest.FixtureRequest) -> bytes:
    return ssh.generate_private_key(request.param)


@pytest.fixture(scope="module")
def rsa_ca() -> bytes:
    return ssh.generate_private_key("rsa")


@pytest.fixture(scope="module")
def user_key() -> str:
    return ssh.public_key_of(ssh.generate_private_key())


def _user_cert(ca: bytes, key: str, **kw: object) -> str:
    args: dict[str, object] = dict(key_id="alice", principals=["root", "alice"],
                                   valid_after=NOW - HOUR, valid_before=NOW + HOUR,
                                   roles=["admin", "dev"], traits={"logins": ["root"], "team": []},
                                   route_to_cluster="leaf.example.com")
    args.update(kw)
    return ssh.sign_user_cert(ca, key, **args)  # type: ignore[arg-type]


def _host_cert(ca: bytes, key: str) -> str:
    return ssh.sign_host_cert(ca, key, host_uuid="5d2c", nodename="luna", cluster="example.com",
                              principals=["5d2c", "5d2c.example.com", "luna"], system_role="Node",
                              valid_before=None)


def _keygen_list(tmp_path: Path, cert: str) -> str:
    path = tmp_path / "id-cert.pub"
    path.write_text(cert + "\n")
    return subprocess.run(["ssh-keygen", "-L", "-f", str(path)], check=True,
                          capture_output=True, text=True).stdout


def test_generate_private_key_is_openssh_format() -> None:
    ed = ssh.generate_private_key()
    assert ed.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert ssh.public_key_of(ed).startswith("ssh-ed25519 AAAA")
    assert len(ssh.public_key_of(ed).split()) == 2
    key = serialization.load_ssh_private_key(ssh.generate_private_key("rsa"), None)
    assert key.key_size == 2048  # type: ignore[union-attr]


def test_user_cert_round_trip(ca: bytes, user_key: str) -> None:
    cert = _user_cert(ca, user_key)
    assert cert.startswith("ssh-ed25519-cert-v01@openssh.com AAAA")
    info = ssh.parse_cert(cert)
    assert info.cert_type == "user"
    assert info.key_id == "alice"
    assert info.principals == ("root", "alice")
    assert (info.valid_after, info.valid_before) == (NOW - HOUR, NOW + HOUR)
    assert info.roles == ("admin", "dev")
    assert info.traits == {"logins": ("root",), "team": ()}
    assert info.route_to_cluster == "leaf.example.com"
    assert info.public_key == user_key
    assert info.signature_key == ssh.public_key_of(ca)
    for ext in ("permit-pty", "permit-port-forwarding", "permit-agent-forwarding",
                "permit-X11-forwarding", "permit-user-rc"):
        assert info.extensions[ext] == b""
    assert 0 <= info.serial < 2**64
    assert ssh.verify_cert(cert, [ssh.public_key_of(ca)], now=NOW, cert_type="user",
                           principal="root") == info


def test_user_cert_permissions_and_defaults(user_key: str, rsa_ca: bytes) -> None:
    cert = ssh.sign_user_cert(rsa_ca, user_key, key_id="bob", principals=["bob"],
                              valid_after=NOW, valid_before=NOW + HOUR, permit_pty=False,
                              permit_port_forwarding=False)
    info = ssh.parse_cert(cert)
    assert "permit-pty" not in info.extensions
    assert "permit-port-forwarding" not in info.extensions
    assert info.roles == () and info.traits == {} and info.route_to_cluster == ""
    assert ssh.parse_cert(_user_cert(rsa_ca, user_key)).serial != ssh.parse_cert(cert).serial


def test_host_cert_is_forever_and_names_its_role(ca: bytes, user_key: str) -> None:
    info = ssh.verify_cert(_host_cert(ca, user_key), [ssh.public_key_of(ca)], now=NOW,
                           cert_type="host", principal="luna")
    assert info.cert_type == "host" and info.key_id == "5d2c"
    assert info.principals == ("5d2c", "5d2c.example.com", "luna")
    assert info.valid_after == datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert info.valid_before.year == 9999
    assert info.extensions == {"x-teleport-role": b"Node", "x-teleport-authority": b"example.com"}
    ssh.verify_cert(_host_cert(ca, user_key), [ssh.public_key_of(ca)],
                    now=datetime(2999, 1, 1, tzinfo=timezone.utc), cert_type="host")


def test_verify_refuses_another_ca(ca: bytes, user_key: str) -> None:
    other = ssh.public_key_of(ssh.generate_private_key())
    with pytest.raises(AccessDenied, match="not signed by a trusted authority"):
        ssh.verify_cert(_user_cert(ca, user_key), [other], now=NOW, cert_type="user")
    with pytest.raises(AccessDenied, match="not signed by a trusted authority"):
        ssh.verify_cert(_user_cert(ca, user_key), [], now=NOW, cert_type="user")


def test_verify_accepts_any_of_several_cas_in_authorized_keys_form(ca: bytes,
                                                                   user_key: str) -> None:
    other = ssh.public_key_of(ssh.generate_private_key())
    trusted = [other, f"cert-authority {ssh.public_key_of(ca)} user-ca@example.com"]
    ssh.verify_cert(_user_cert(ca, user_key), trusted, now=NOW, cert_type="user")


@pytest.mark.parametrize(("now", "reason"), [
    (NOW + HOUR, "certificate expired"),
    (NOW + 2 * HOUR, "certificate expired"),
    (NOW - HOUR - timedelta(seconds=1), "not yet valid"),
])
def test_verify_refuses_outside_validity_window(ca: bytes, user_key: str, now: datetime,
                                                reason: str) -> None:
    with pytest.raises(AccessDenied, match=reason):
        ssh.verify_cert(_user_cert(ca, user_key), [ssh.public_key_of(ca)], now=now,
                        cert_type="user")


def test_verify_refuses_wrong_principal(ca: bytes, user_key: str) -> None:
    with pytest.raises(AccessDenied, match="login 'bob' is not in the certificate's principals"):
        ssh.verify_cert(_user_cert(ca, user_key), [ssh.public_key_of(ca)], now=NOW,
                        cert_type="user", principal="bob")


def test_verify_refuses_host_cert_as_user_cert_and_back(ca: bytes, user_key: str) -> None:
    trusted = [ssh.public_key_of(ca)]
    with pytest.raises(AccessDenied, match="expected a user certificate, got a host"):
        ssh.verify_cert(_host_cert(ca, user_key), trusted, now=NOW, cert_type="user")
    with pytest.raises(AccessDenied, match="expected a host certificate, got a user"):
        ssh.verify_cert(_user_cert(ca, user_key), trusted, now=NOW, cert_type="host")


def test_verify_refuses_tampered_signature(ca: bytes, user_key: str) -> None:
    key_type, b64 = _user_cert(ca, user_key).split()
    blob = bytearray(base64.b64decode(b64))
    blob[-1] ^= 1
    tampered = f"{key_type} {base64.b64encode(bytes(blob)).decode()}"
    with pytest.raises(AccessDenied, match="signature is invalid"):
        ssh.verify_cert(tampered, [ssh.public_key_of(ca)], now=NOW, cert_type="user")


def test_verify_refuses_critical_options(ca: bytes, user_key: str) -> None:
    ca_key = serialization.load_ssh_private_key(ca, None)
    cert = (SSHCertificateBuilder()
            .public_key(serialization.load_ssh_public_key(user_key.encode()))  # type: ignore[arg-type]
            .type(SSHCertificateType.USER).valid_principals([b"root"])
            .valid_after(0).valid_before(2**63)
            .add_critical_option(b"force-command", b"/bin/true")
            .sign(ca_key))  # type: ignore[arg-type]
    with pytest.raises(AccessDenied, match="critical options: force-command"):
        ssh.verify_cert(cert.public_bytes(), [ssh.public_key_of(ca)], now=NOW, cert_type="user")


@pytest.mark.parametrize("garbage", [
    "", "garbage", "ssh-ed25519-cert-v01@openssh.com AAAA", "ssh-ed25519-cert-v01@openssh.com !!",
    b"\x00\xff\xfe", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJzGAcXJUDw05QMKcQkfRkbcKs1Ttsuypacxw9wv4Td8",
])
def test_parse_refuses_garbage(garbage: str | bytes) -> None:
    with pytest.raises(BadParameter):
        ssh.parse_cert(garbage)


def test_parse_never_tracebacks_on_corrupted_certs(rsa_ca: bytes, user_key: str) -> None:
    key_type, b64 = _user_cert(rsa_ca, user_key).split()
    blob = base64.b64decode(b64)
    for i in range(0, len(blob), 7):
        for mutated in (blob[:i], blob[:i] + bytes([blob[i] ^ 0xFF]) + blob[i + 1:]):
            try:
                ssh.parse_cert(f"{key_type} {base64.b64encode(mutated).decode()}")
            except BadParameter:
                pass


def test_signing_refuses_bad_input(rsa_ca: bytes, user_key: str) -> None:
    with pytest.raises(BadParameter, match="at least one principal"):
        _user_cert(rsa_ca, user_key, principals=[])
    with pytest.raises(BadParameter, match="invalid SSH public key"):
        _user_cert(rsa_ca, "ssh-ed25519 nonsense")
    with pytest.raises(BadParameter, match="got a certificate"):
        _user_cert(rsa_ca, _user_cert(rsa_ca, user_key))
    with pytest.raises(BadParameter, match="invalid SSH private key"):
        _user_cert(b"not a key", user_key)
    with pytest.raises(BadParameter, match="timezone-aware"):
        _user_cert(rsa_ca, user_key, valid_after=datetime(2026, 1, 1))
    with pytest.raises(BadParameter, match="validity window is empty"):
        _user_cert(rsa_ca, user_key, valid_before=NOW - HOUR)


@ssh_keygen
def test_ssh_keygen_reads_user_cert_signed_rsa_sha2_512(tmp_path: Path, rsa_ca: bytes,
                                                        user_key: str) -> None:
    out = _keygen_list(tmp_path, _user_cert(rsa_ca, user_key))
    assert "user certificate" in out
    assert "(using rsa-sha2-512)" in out
    assert 'Key ID: "alice"' in out
    principals = out.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == ["root", "alice"]
    assert "Critical Options: (none)" in out
    assert "permit-pty" in out and "teleport-roles" in out


@ssh_keygen
def test_rsa_sha256_on_request(tmp_path: Path, rsa_ca: bytes, user_key: str) -> None:
    cert = _user_cert(rsa_ca, user_key, rsa_hash="sha256")
    assert "(using rsa-sha2-256)" in _keygen_list(tmp_path, cert)
    info = ssh.verify_cert(cert, [ssh.public_key_of(rsa_ca)], now=NOW, cert_type="user")
    assert info.roles == ("admin", "dev")


@ssh_keygen
def test_ssh_keygen_reads_host_cert(tmp_path: Path, rsa_ca: bytes, user_key: str) -> None:
    out = _keygen_list(tmp_path, _host_cert(rsa_ca, user_key))
    assert "host certificate" in out and "Valid: forever" in out
    assert "Critical Options: (none)" in out


@ssh_keygen
def test_fingerprint_matches_ssh_keygen(tmp_path: Path, user_key: str, rsa_ca: bytes) -> None:
    for key in (user_key, ssh.public_key_of(rsa_ca)):
        path = tmp_path / "key.pub"
        path.write_text(key + "\n")
        out = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], check=True,
                             capture_output=True, text=True).stdout
        assert out.split()[1] == ssh.fingerprint(key)
    with pytest.raises(BadParameter):
        ssh.fingerprint("nonsense")


def _asyncssh_cert(cert: str) -> SSHOpenSSHCertificate:
    loaded = asyncssh.import_certificate(cert)
    assert isinstance(loaded, SSHOpenSSHCertificate)
    return loaded


def test_asyncssh_loads_and_validates_certs(ca: bytes, user_key: str) -> None:
    # asyncssh validates against the real time, so issue around it.
    now = datetime.now(timezone.utc)
    user = _asyncssh_cert(_user_cert(ca, user_key, valid_after=now - HOUR, valid_before=now + HOUR))
    user.validate(CERT_TYPE_USER, "root")
    assert user.principals == ["root", "alice"]
    assert user.options["permit-pty"] is True
    host = _asyncssh_cert(_host_cert(ca, user_key))
    host.validate(CERT_TYPE_HOST, "luna")
    assert host.signing_key.export_public_key().decode().strip() == ssh.public_key_of(ca)
