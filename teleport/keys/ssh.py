"""OpenSSH keys and certificates: generate, sign for users and hosts, parse and verify.

Certificates are built with cryptography's `SSHCertificateBuilder` because asyncssh cannot add
custom extensions, and they stay OpenSSH-compatible: user certificates carry the stock
`permit-*` extensions beside ours, and no certificate carries a critical option.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateBuilder,
    SSHCertificateType,
    SSHCertPrivateKeyTypes,
    SSHCertPublicKeyTypes,
)

from teleport.errors import AccessDenied, BadParameter

KeyAlgo = Literal["ed25519", "rsa"]
RSAHash = Literal["sha256", "sha512"]
CertType = Literal["user", "host"]

EXT_ROLES = "teleport-roles"
EXT_TRAITS = "teleport-traits"
EXT_ROUTE_TO_CLUSTER = "teleport-route-to-cluster"
# Host certificates name their system role and cluster; OpenSSH ignores unknown extensions
# (it only refuses critical options in host certificates), so stock `ssh` still accepts them.
EXT_HOST_ROLE = "x-teleport-role"
EXT_HOST_AUTHORITY = "x-teleport-authority"

RSA_BITS = 2048
# OpenSSH's "forever": the largest u64 a certificate's valid_before can hold.
FOREVER = 2**64 - 1
_MAX_DATETIME = datetime.max.replace(tzinfo=timezone.utc)
_MAX_TIMESTAMP = int(_MAX_DATETIME.timestamp())
_CERT_TYPES: dict[CertType, SSHCertificateType] = {
    "user": SSHCertificateType.USER,
    "host": SSHCertificateType.HOST,
}


@dataclass(frozen=True)
class SSHCertInfo:
    """What an SSH certificate says, decoded into our terms."""

    cert_type: CertType
    key_id: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    serial: int
    roles: tuple[str, ...]
    traits: dict[str, tuple[str, ...]]
    route_to_cluster: str
    extensions: dict[str, bytes]
    public_key: str
    signature_key: str


# --- keys -------------------------------------------------------------------------------------

def generate_private_key(algo: KeyAlgo = "ed25519") -> bytes:
    """Generate a key in OpenSSH format so that `ssh -i` and asyncssh both read it."""
    key: SSHCertPrivateKeyTypes
    if algo == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif algo == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        raise BadParameter(f"unsupported SSH key algorithm {algo!r}")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def public_key_of(private_key: bytes) -> str:
    """Return the authorized_keys line of a private key, to send to the CA for signing."""
    return _public_line(_load_private(private_key).public_key())


def fingerprint(public_key: str) -> str:
    """Return the SHA256 fingerprint `ssh-keygen -l` prints, for logs and audit events."""
    blob = _key_blob(public_key)
    if blob is None:
        raise BadParameter("invalid SSH public key")
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


# --- signing ----------------------------------------------------------------------------------

def sign_user_cert(ca_private_key: bytes, public_key: str, *, key_id: str,
                   principals: Sequence[str], valid_after: datetime, valid_before: datetime,
                   roles: Sequence[str] = (), traits: Mapping[str, Sequence[str]] | None = None,
                   route_to_cluster: str = "", rsa_hash: RSAHash = "sha512",
                   permit_port_forwarding: bool = True, permit_pty: bool = True,
                   permit_agent_forwarding: bool = True) -> str:
    """Certify a user's key for its logins, carrying roles and traits for our own servers."""
    extensions: dict[str, bytes] = {
        "permit-X11-forwarding": b"",
        "permit-user-rc": b"",
        EXT_ROLES: json.dumps({"version": "v1", "roles": list(roles)}).encode(),
    }
    if permit_port_forwarding:
        extensions["permit-port-forwarding"] = b""
    if permit_agent_forwarding:
        extensions["permit-agent-forwarding"] = b""
    if permit_pty:
        extensions["permit-pty"] = b""
    if traits:
        extensions[EXT_TRAITS] = json.dumps({k: list(v) for k, v in traits.items()}).encode()
    if route_to_cluster:
        extensions[EXT_ROUTE_TO_CLUSTER] = route_to_cluster.encode()
    return _sign(ca_private_key, public_key, SSHCertificateType.USER, key_id, principals,
                 _timestamp(valid_after), _timestamp(valid_before), extensions, rsa_hash)


def sign_host_cert(ca_private_key: bytes, public_key: str, *, host_uuid: str, nodename: str,
                   cluster: str, principals: Sequence[str], system_role: str,
                   valid_before: datetime | None, rsa_hash: RSAHash = "sha512") -> str:
    """Certify a host's key so that clients trusting the host CA accept it under its names."""
    if not host_uuid or not nodename or not cluster or not system_role:
        raise BadParameter("a host certificate needs a host UUID, nodename, cluster and role")
    extensions = {EXT_HOST_ROLE: system_role.encode(), EXT_HOST_AUTHORITY: cluster.encode()}
    before = FOREVER if valid_before is None else _timestamp(valid_before)
    return _sign(ca_private_key, public_key, SSHCertificateType.HOST, host_uuid, principals,
                 0, before, extensions, rsa_hash)


def _sign(ca_private_key: bytes, public_key: str, cert_type: SSHCertificateType, key_id: str,
          principals: Sequence[str], valid_after: int, valid_before: int,
          extensions: Mapping[str, bytes], rsa_hash: RSAHash) -> str:
    if not principals:
        # An empty list would mean "any principal" to OpenSSH; never issue that by accident.
        raise BadParameter("a certificate needs at least one principal")
    if valid_after >= valid_before:
        raise BadParameter("certificate validity window is empty")
    if rsa_hash not in ("sha256", "sha512"):
        raise BadParameter(f"unsupported RSA signature hash {rsa_hash!r}")
    ca_key = _load_private(ca_private_key)
    builder = (SSHCertificateBuilder()
               .public_key(_load_public(public_key))
               .serial(secrets.randbits(64))
               .type(cert_type)
               .key_id(key_id.encode())
               .valid_after(valid_after)
               .valid_before(valid_before))
    for name, value in extensions.items():
        builder = builder.add_extension(name.encode(), value)
    try:
        builder = builder.valid_principals([p.encode() for p in principals])
        cert = builder.sign(ca_key)
    except ValueError as err:
        raise BadParameter(f"cannot sign certificate: {err}") from None
    line = cert.public_bytes()
    if isinstance(ca_key, rsa.RSAPrivateKey) and rsa_hash == "sha256":
        line = _resign_rsa_sha256(line, ca_key)
    return line.decode()


def _resign_rsa_sha256(line: bytes, ca_key: rsa.RSAPrivateKey) -> bytes:
    """Swap the rsa-sha2-512 signature cryptography always makes for rsa-sha2-256.

    The signature is the certificate's last field: string(string(alg) string(sig)), and an
    RSA PKCS#1 v1.5 signature is exactly the modulus length, so its size is known up front.
    """
    key_type, b64 = line.split(b" ", 1)
    blob = base64.b64decode(b64)
    sig_len = (ca_key.key_size + 7) // 8
    alg = _ssh_string(b"rsa-sha2-512")
    inner_len = len(alg) + 4 + sig_len
    field_len = 4 + inner_len
    header = struct.pack(">I", inner_len) + alg + struct.pack(">I", sig_len)
    if blob[-field_len:-sig_len] != header:
        raise BadParameter("unexpected RSA certificate signature layout")
    tbs = blob[:-field_len]
    sig = ca_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    new_blob = tbs + _ssh_string(_ssh_string(b"rsa-sha2-256") + _ssh_string(sig))
    return key_type + b" " + base64.b64encode(new_blob)


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


# --- parsing and verification -----------------------------------------------------------------

def host_role(info: SSHCertInfo) -> tuple[str, str]:
    """Return the system role and cluster a host certificate was issued for."""
    role = info.extensions.get(EXT_HOST_ROLE, b"").decode(errors="replace")
    authority = info.extensions.get(EXT_HOST_AUTHORITY, b"").decode(errors="replace")
    return role, authority


def signed_by(info: SSHCertInfo, ca_keys: Sequence[str]) -> bool:
    """Tell whether one of these CA keys signed the certificate: which cluster's CA vouches for
    it, whatever the certificate itself claims (trusted clusters hold several CAs)."""
    signer = _key_blob(info.signature_key)
    return signer is not None and any(
        hmac.compare_digest(signer, blob) for blob in map(_key_blob, ca_keys) if blob is not None)


def parse_cert(cert: str | bytes) -> SSHCertInfo:
    """Decode a certificate without trusting it, to show or route on what it claims."""
    return _decode(_load_cert(cert))


def verify_cert(cert: str | bytes, trusted_cas: Sequence[str], *, now: datetime,
                cert_type: CertType, principal: str | None = None) -> SSHCertInfo:
    """Accept a certificate only if a trusted CA signed it for this use, time and principal."""
    if cert_type not in _CERT_TYPES:
        raise BadParameter(f"unknown certificate type {cert_type!r}")
    loaded = _load_cert(cert)
    info = _decode(loaded)
    signer = _key_blob(info.signature_key)
    trusted = [_key_blob(ca) for ca in trusted_cas]
    # Check every CA without stopping early so that timing says nothing about which matched.
    matches = [hmac.compare_digest(signer or b"", ca) for ca in trusted if ca is not None]
    if signer is None or not any(matches):
        raise AccessDenied("certificate not signed by a trusted authority")
    try:
        loaded.verify_cert_signature()
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise AccessDenied("certificate signature is invalid") from None
    if info.cert_type != cert_type:
        raise AccessDenied(f"expected a {cert_type} certificate, got a {info.cert_type} certificate")
    if loaded.critical_options:
        names = ", ".join(sorted(k.decode(errors="replace") for k in loaded.critical_options))
        raise AccessDenied(f"certificate has unsupported critical options: {names}")
    ts = _timestamp(now)
    if ts < loaded.valid_after:
        raise AccessDenied("certificate is not yet valid")
    if ts >= loaded.valid_before:
        raise AccessDenied("certificate expired")
    if principal is not None and principal not in info.principals:
        what = "login" if cert_type == "user" else "host name"
        raise AccessDenied(f"{what} {principal!r} is not in the certificate's principals")
    return info


def _load_cert(cert: str | bytes) -> SSHCertificate:
    raw = cert.encode() if isinstance(cert, str) else bytes(cert)
    try:
        loaded = serialization.load_ssh_public_identity(raw.strip())
    except (ValueError, UnsupportedAlgorithm, binascii.Error) as err:
        raise BadParameter(f"invalid SSH certificate: {err}") from None
    if not isinstance(loaded, SSHCertificate):
        raise BadParameter("invalid SSH certificate: this is a plain public key")
    return loaded


def _decode(cert: SSHCertificate) -> SSHCertInfo:
    try:
        extensions = {k.decode(): v for k, v in cert.extensions.items()}
        roles = _decode_roles(extensions.get(EXT_ROLES))
        traits = _decode_traits(extensions.get(EXT_TRAITS))
        return SSHCertInfo(
            cert_type="user" if cert.type is SSHCertificateType.USER else "host",
            key_id=cert.key_id.decode(),
            principals=tuple(p.decode() for p in cert.valid_principals),
            valid_after=_datetime(cert.valid_after),
            valid_before=_datetime(cert.valid_before),
            serial=cert.serial,
            roles=roles,
            traits=traits,
            route_to_cluster=extensions.get(EXT_ROUTE_TO_CLUSTER, b"").decode(),
            extensions=extensions,
            public_key=_public_line(cert.public_key()),
            signature_key=_public_line(cert.signature_key()),
        )
    except (ValueError, UnsupportedAlgorithm) as err:  # UnicodeDecodeError and JSON errors too
        raise BadParameter(f"invalid SSH certificate: {err}") from None


def _decode_roles(raw: bytes | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    doc = json.loads(raw)
    roles = doc.get("roles") if isinstance(doc, dict) else None
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise ValueError(f"malformed {EXT_ROLES} extension")
    return tuple(roles)


def _decode_traits(raw: bytes | None) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in doc.values()):
        raise ValueError(f"malformed {EXT_TRAITS} extension")
    return {k: tuple(v) for k, v in doc.items()}


# --- helpers ----------------------------------------------------------------------------------

def _load_private(private_key: bytes) -> SSHCertPrivateKeyTypes:
    try:
        key = serialization.load_ssh_private_key(private_key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise BadParameter(f"invalid SSH private key: {err}") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey,
                            ec.EllipticCurvePrivateKey)):
        raise BadParameter("unsupported SSH private key type")
    return key


def _load_public(public_key: str) -> SSHCertPublicKeyTypes:
    try:
        key = serialization.load_ssh_public_identity(public_key.strip().encode())
    except (ValueError, UnsupportedAlgorithm, binascii.Error) as err:
        raise BadParameter(f"invalid SSH public key: {err}") from None
    if isinstance(key, SSHCertificate):
        raise BadParameter("invalid SSH public key: got a certificate")
    if not isinstance(key, (ed25519.Ed25519PublicKey, rsa.RSAPublicKey,
                            ec.EllipticCurvePublicKey)):
        raise BadParameter("unsupported SSH public key type")
    return key


def _key_blob(line: str) -> bytes | None:
    """Return the wire encoding of the key on an authorized_keys line, or None if there is none.

    The key may follow options or a marker (`cert-authority`, `@cert-authority *.example.com`),
    so take the first "type base64" pair that loads.
    """
    words = line.split()
    for key_type, b64 in zip(words, words[1:], strict=False):
        try:
            key = serialization.load_ssh_public_identity(f"{key_type} {b64}".encode())
        except (ValueError, UnsupportedAlgorithm, binascii.Error):
            continue
        if not isinstance(key, SSHCertificate):
            return base64.b64decode(b64)
    return None


def _public_line(key: SSHCertPublicKeyTypes) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode()


def _timestamp(when: datetime) -> int:
    if when.tzinfo is None:
        raise BadParameter("certificate times must be timezone-aware")
    return max(0, int(when.timestamp()))


def _datetime(ts: int) -> datetime:
    # Certificates valid "forever" hold 2**64-1, far past what a datetime can represent.
    if ts >= _MAX_TIMESTAMP:
        return _MAX_DATETIME
    return datetime.fromtimestamp(ts, timezone.utc)
