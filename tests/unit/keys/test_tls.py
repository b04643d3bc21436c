"""X.509: the cluster CA, identity certificates and the mTLS contexts, handshaking in memory."""

from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from teleport.errors import BadParameter
from teleport.keys import tls, tlsconfig
from teleport.keys.authname import auth_server_name
from teleport.keys.identity import Identity
from tests.unit.keys import memory_tls

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
CLUSTER = "example.com"


@pytest.fixture(scope="module", params=["ecdsa", "rsa"])
def ca(request: pytest.FixtureRequest) -> tuple[bytes, bytes]:
    return tls.generate_tls_ca(CLUSTER, algo=request.param, now=NOW)


@pytest.fixture(scope="module")
def other_ca() -> tuple[bytes, bytes]:
    return tls.generate_tls_ca("other.com", now=NOW)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _user(ca: tuple[bytes, bytes], key: bytes, not_after: datetime = NOW + timedelta(hours=12),
          **kw: object) -> bytes:
    identity = Identity(username="alice", roles=("admin", "dev"), logins=("root", "alice"),
                        traits={"team": ("ops",)}, cluster=CLUSTER, route_to_cluster="leaf")
    return tls.issue_tls_cert(*ca, tls.tls_public_key_pem(key), identity, now=NOW,
                              not_after=not_after, **kw)  # type: ignore[arg-type]


def _host(ca: tuple[bytes, bytes], key: bytes, role: str = "Node") -> bytes:
    identity = Identity(username=f"5d2c.{CLUSTER}", roles=(role,), cluster=CLUSTER,
                        system_role=role, host_uuid="5d2c")
    return tls.issue_tls_cert(*ca, tls.tls_public_key_pem(key), identity, now=NOW,
                              not_after=NOW + timedelta(days=365), dns_names=["luna", "localhost"],
                              ip_addresses=["10.0.0.5", "127.0.0.1"])


def test_ca_is_a_self_signed_ca_named_after_the_cluster(ca: tuple[bytes, bytes]) -> None:
    key_pem, cert_pem = ca
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    cert = _cert(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CLUSTER
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == CLUSTER
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert cert.not_valid_after_utc - NOW == timedelta(days=3650)
    cert.verify_directly_issued_by(cert)


def test_user_identity_round_trip(ca: tuple[bytes, bytes]) -> None:
    pem = _user(ca, tls.generate_tls_key())
    cert = _cert(pem)
    cert.verify_directly_issued_by(_cert(ca[1]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "admin", "dev"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH}  # a user's certificate serves nothing
    assert not cert.extensions.get_extension_for_oid(tls.IDENTITY_OID).critical
    identity = tls.identity_from_cert(pem)
    assert identity == Identity(username="alice", roles=("admin", "dev"), logins=("root", "alice"),
                                traits={"team": ("ops",)}, cluster=CLUSTER, system_role=None,
                                expires=NOW + timedelta(hours=12), route_to_cluster="leaf")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert tls.identity_from_cert(der) == identity


def test_host_identity_round_trip(ca: tuple[bytes, bytes]) -> None:
    pem = _host(ca, tls.generate_tls_key())
    cert = _cert(pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "5d2c.example.com"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["luna", "localhost", "5d2c"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"),
                                                       ipaddress.ip_address("127.0.0.1")]
    identity = tls.identity_from_cert(pem)
    assert identity.system_role == "Node" and identity.host_uuid == "5d2c"
    assert identity.roles == ("Node",) and identity.cluster == CLUSTER


def test_cert_from_another_ca_fails_chain_verification(ca: tuple[bytes, bytes],
                                                       other_ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError):  # the issuer name differs
        _cert(_user(other_ca, tls.generate_tls_key())).verify_directly_issued_by(_cert(ca[1]))
    # A CA impersonating ours by name is caught by the signature.
    algo: tls.TLSKeyAlgo = "rsa" if isinstance(_cert(ca[1]).public_key(), rsa.RSAPublicKey) else "ecdsa"
    impostor = tls.generate_tls_ca(CLUSTER, algo=algo, now=NOW)
    forged = _cert(_user(impostor, tls.generate_tls_key()))
    assert forged.issuer == _cert(ca[1]).subject
    with pytest.raises(InvalidSignature):
        forged.verify_directly_issued_by(_cert(ca[1]))


def test_cert_does_not_outlive_its_ca(ca: tuple[bytes, bytes]) -> None:
    pem = _user(ca, tls.generate_tls_key(), not_after=NOW + timedelta(days=365 * 20))
    assert _cert(pem).not_valid_after_utc == _cert(ca[1]).not_valid_after_utc


def test_rsa_keys_are_certified_too(ca: tuple[bytes, bytes]) -> None:
    key = tls.generate_tls_key("rsa")
    assert tls.identity_from_cert(_user(ca, key)).username == "alice"


def test_bad_input_is_a_bad_parameter(ca: tuple[bytes, bytes]) -> None:
    key = tls.generate_tls_key()
    for garbage in (b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(BadParameter):
            tls.identity_from_cert(garbage)
    with pytest.raises(BadParameter, match="no Teleport identity"):
        tls.identity_from_cert(ca[1])
    with pytest.raises(BadParameter, match="invalid TLS public key"):
        tls.issue_tls_cert(*ca, b"", Identity("x"), now=NOW, not_after=NOW)
    with pytest.raises(BadParameter, match="invalid certificate name"):
        _user(ca, key, ip_addresses=["not-an-ip"])
    with pytest.raises(BadParameter, match="invalid TLS private key"):
        tls.tls_public_key_pem(b"nope")


def test_self_signed_web_cert_names() -> None:
    key_pem, cert_pem = tls.self_signed_web_cert(["proxy.example.com", "10.1.2.3"], now=NOW)
    cert = _cert(cert_pem)
    cert.verify_directly_issued_by(cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["proxy.example.com", "localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "10.1.2.3", "127.0.0.1", "::1"}
    tlsconfig.ssl_server_context(cert_pem, key_pem, None, require_client_cert=False)


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
               server_hostname: str = auth_server_name(CLUSTER)) -> bytes | None:
    """Run a TLS handshake through memory buffers and return the client cert the server saw."""
    return memory_tls.handshake(server_ctx, client_ctx, server_hostname).server.getpeercert(
        binary_form=True)


@pytest.fixture(scope="module")
def mtls(ca: tuple[bytes, bytes]) -> dict[str, tuple[bytes, bytes]]:
    server_key, client_key = tls.generate_tls_key(), tls.generate_tls_key()
    return {"server": (_host(ca, server_key, "Auth"), server_key),
            "client": (_user(ca, client_key, not_after=datetime.now(timezone.utc) + timedelta(
                hours=1)), client_key)}


def test_mtls_handshake_carries_the_client_identity(ca: tuple[bytes, bytes],
                                                    mtls: dict[str, tuple[bytes, bytes]]) -> None:
    server = tlsconfig.ssl_server_context(*mtls["server"], [ca[1]], require_client_cert=True)
    client = tlsconfig.ssl_client_context(*mtls["client"], [ca[1]])
    assert server.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_2
    der = _handshake(server, client)
    assert der is not None and tls.identity_from_cert(der).username == "alice"
    # Names are always checked: the auth server answers to its own name, not to another.
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(server, client, server_hostname=auth_server_name("other.com"))


@pytest.mark.parametrize("role", ["Node", "Proxy", "Admin", None])
def test_only_the_auth_server_can_serve_tls(ca: tuple[bytes, bytes], role: str | None) -> None:
    """A user's, node's, proxy's or admin's certificate of the cluster CA never passes for auth."""
    key = tls.generate_tls_key()
    cert = _host(ca, key, role) if role else _user(ca, key)
    assert auth_server_name(CLUSTER) not in _dns_names(_cert(cert))
    impostor = tlsconfig.ssl_server_context(cert, key, [ca[1]], require_client_cert=False)
    client_key = tls.generate_tls_key()
    client = tlsconfig.ssl_client_context(_host(ca, client_key, "Node"), client_key, [ca[1]])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(impostor, client)
    # Even when the impostor's certificate names the address the client dials.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(impostor, client, server_hostname="localhost")


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def test_auth_server_certificate_carries_its_name_and_server_usage(
        ca: tuple[bytes, bytes]) -> None:
    cert = _cert(_host(ca, tls.generate_tls_key(), "Auth"))
    assert auth_server_name(CLUSTER) in _dns_names(cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_reserved_names_are_refused_for_other_hosts(ca: tuple[bytes, bytes]) -> None:
    identity = Identity(username="evil", roles=("Node",), cluster=CLUSTER, system_role="Node",
                        host_uuid="evil")
    for name in (auth_server_name(CLUSTER), "teleport.cluster.local", "X.Teleport.Cluster.Local."):
        with pytest.raises(BadParameter, match="reserved for the auth server"):
            tls.issue_tls_cert(*ca, tls.tls_public_key_pem(tls.generate_tls_key()), identity,
                               now=NOW, not_after=NOW + timedelta(days=1), dns_names=[name])


def test_auth_server_name_is_a_valid_dns_name_for_any_cluster() -> None:
    assert auth_server_name("Example.COM") == "auth.example.com.teleport.cluster.local"
    odd = auth_server_name("my_cluster with spaces/" + "x" * 300)
    assert odd.startswith("auth.h") and len(odd) < 100
    odd.encode("idna")  # what the ssl module does with server_hostname
    assert auth_server_name("a") != auth_server_name("b")


def test_mtls_refuses_peers_of_another_ca(ca: tuple[bytes, bytes], other_ca: tuple[bytes, bytes],
                                          mtls: dict[str, tuple[bytes, bytes]]) -> None:
    server = tlsconfig.ssl_server_context(*mtls["server"], [ca[1]], require_client_cert=True)
    stranger_key = tls.generate_tls_key()
    stranger = (_user(other_ca, stranger_key), stranger_key)
    with pytest.raises(ssl.SSLError):
        _handshake(server, tlsconfig.ssl_client_context(*stranger, [ca[1]]))
    with pytest.raises(ssl.SSLError):  # the client does not trust the server either
        _handshake(server, tlsconfig.ssl_client_context(*mtls["client"], [other_ca[1]]))


def test_tls_contexts_leave_no_key_on_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           ca: tuple[bytes, bytes],
                                           mtls: dict[str, tuple[bytes, bytes]]) -> None:
    """The key goes to ssl through a memory file of this process, closed at once."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    open_before = sorted(os.listdir("/proc/self/fd"))
    tlsconfig.ssl_client_context(*mtls["client"], [ca[1]])
    tlsconfig.ssl_server_context(*mtls["server"], [ca[1]], require_client_cert=False)
    with pytest.raises(BadParameter, match="invalid TLS certificate or key"):
        tlsconfig.ssl_client_context(mtls["client"][0], mtls["server"][1], [ca[1]])
    assert list(tmp_path.iterdir()) == []
    assert sorted(os.listdir("/proc/self/fd")) == open_before
    with pytest.raises(BadParameter):
        tlsconfig.ssl_server_context(*mtls["server"], None, require_client_cert=True)
