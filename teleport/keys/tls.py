"""X.509 for the auth API and the web listener: the cluster's TLS CA, identity certificates, mTLS.

An issued certificate carries its Identity: CN is the username, O the roles (a host's system
role), and a private extension holds the rest as JSON, so that a server learns who is calling
from the verified client certificate alone.

Only the auth server's certificate may act as a TLS server: it alone carries the serverAuth
usage and the name `auth_server_name(cluster)`, and every client of the auth API checks both, so
a certificate issued to a user, a node or a proxy can never pass for the auth server.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from teleport.errors import BadParameter
from teleport.keys.authname import auth_server_name, is_reserved_name
from teleport.keys.identity import Identity
from teleport.utils.addr import is_ip

TLSKeyAlgo = Literal["ecdsa", "rsa"]

#: Private OID of the extension carrying the Identity fields that have no standard home.
IDENTITY_OID = ObjectIdentifier("1.3.9999.1.7")
RSA_BITS = 2048
CA_TTL = timedelta(days=365 * 10)
WEB_CERT_TTL = timedelta(days=365)
# Certificates start a little in the past so that a peer whose clock lags still accepts them.
CLOCK_SKEW = timedelta(minutes=1)
#: The system role whose certificate serves the auth API.
AUTH_ROLE = "Auth"


# --- keys -------------------------------------------------------------------------------------

def generate_tls_key(algo: TLSKeyAlgo = "ecdsa") -> bytes:
    """Generate a private key (PEM PKCS#8) whose public half a CA will certify."""
    return _private_pem(_new_key(algo))


def tls_public_key_pem(key_pem: bytes) -> bytes:
    """Return the public key of a private key, to send in a certificate request."""
    key = _load_private(key_pem)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_cert(key_pem: bytes, cert_pem: bytes) -> bool:
    """Tell whether a private key is the one a certificate certifies (a restored CA's pair);
    BadParameter when either does not parse."""
    public = _load_private(key_pem).public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return (public.public_bytes(serialization.Encoding.DER, spki)
            == _load_cert(cert_pem).public_key().public_bytes(serialization.Encoding.DER, spki))


# --- certificate authority --------------------------------------------------------------------

def is_rsa_cert(cert_pem: bytes) -> bool:
    """Tell whether a certificate's key is RSA (a CA's signing algorithm follows its key)."""
    return isinstance(_load_cert(cert_pem).public_key(), rsa.RSAPublicKey)


def generate_tls_ca(cluster: str, *, algo: TLSKeyAlgo = "ecdsa", now: datetime,
                    ttl: timedelta = CA_TTL) -> tuple[bytes, bytes]:
    """Create the cluster's self-signed TLS CA, returning (key_pem, cert_pem)."""
    if not cluster:
        raise BadParameter("a TLS CA needs a cluster name")
    key = _new_key(algo)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
                      x509.NameAttribute(NameOID.COMMON_NAME, cluster)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return _private_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def issue_tls_cert(ca_key_pem: bytes, ca_cert_pem: bytes, public_key_pem: bytes,
                   identity: Identity, *, now: datetime, not_after: datetime,
                   dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = ()) -> bytes:
    """Certify a public key for an Identity: a TLS client, and a TLS server only for the auth role.

    Users, nodes, proxies and the admin identity get the clientAuth usage alone; the auth
    server's certificate also gets serverAuth and `auth_server_name(cluster)`.
    """
    ca_key = _load_private(ca_key_pem)
    ca_cert = _load_cert(ca_cert_pem)
    try:
        public_key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as err:
        raise BadParameter(f"invalid TLS public key: {err}") from None
    if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise BadParameter("TLS public keys must be ECDSA or RSA")
    if not identity.username:
        raise BadParameter("a TLS certificate needs a username")
    serves = identity.system_role == AUTH_ROLE
    dns = list(dns_names)
    if identity.system_role and identity.host_uuid:
        dns.append(identity.host_uuid)
    reserved = [n for n in dns if is_reserved_name(n)]
    if reserved:
        raise BadParameter(f"the name {reserved[0]!r} is reserved for the auth server")
    if serves:
        dns.append(auth_server_name(identity.cluster))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if serves \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (x509.CertificateBuilder()
               .subject_name(_subject(identity))
               .issuer_name(ca_cert.subject)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - CLOCK_SKEW)
               # A certificate cannot usefully outlive the CA that vouches for it.
               .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(rsa_key=isinstance(public_key, rsa.RSAPublicKey)),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False)
               .add_extension(x509.UnrecognizedExtension(IDENTITY_OID, _identity_json(identity)),
                              critical=False))
    sans = _sans(dns, ip_addresses)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def identity_from_cert(cert_pem_or_der: bytes) -> Identity:
    """Read back the Identity a certificate was issued for; the caller has verified the chain."""
    cert = _load_cert(cert_pem_or_der)
    try:
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        ext = cert.extensions.get_extension_for_oid(IDENTITY_OID).value
    except x509.ExtensionNotFound:
        raise BadParameter("certificate carries no Teleport identity") from None
    except ValueError as err:
        raise BadParameter(f"invalid certificate: {err}") from None
    if len(cn) != 1 or not isinstance(ext, x509.UnrecognizedExtension):
        raise BadParameter("certificate carries no Teleport identity")
    try:
        doc = json.loads(ext.value)
        return Identity(
            username=_str(cn[0].value),
            roles=tuple(_str(o.value) for o in orgs),
            logins=tuple(_str_list(doc.get("logins", []))),
            traits={_str(k): tuple(_str_list(v)) for k, v in doc.get("traits", {}).items()},
            cluster=_str(doc.get("cluster", "")),
            system_role=_str(doc["system_role"]) if doc.get("system_role") else None,
            host_uuid=_str(doc.get("host_uuid", "")),
            expires=cert.not_valid_after_utc,
            route_to_cluster=_str(doc.get("route_to_cluster", "")),
        )
    except (ValueError, TypeError, AttributeError) as err:  # JSON of the wrong shape
        raise BadParameter(f"malformed Teleport identity in certificate: {err}") from None


def validity(cert_pem: bytes) -> tuple[datetime, datetime]:
    """Return a certificate's (not before, not after), UTC: when a host must renew it."""
    cert = _load_cert(cert_pem)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def issued_by(cert_pem: bytes, ca_cert_pems: Sequence[bytes]) -> bool:
    """Tell whether one of these CA certificates signed cert_pem (a host follows a rotation by
    which CA signed its own certificate; the subjects of an old and a new CA are alike)."""
    cert = _load_cert(cert_pem)
    for ca_pem in ca_cert_pems:
        try:
            cert.verify_directly_issued_by(_load_cert(ca_pem))
            return True
        except (ValueError, TypeError, InvalidSignature, BadParameter):
            continue
    return False


def self_signed_web_cert(hostnames: Sequence[str], *, now: datetime) -> tuple[bytes, bytes]:
    """Make a (key_pem, cert_pem) so the proxy can serve HTTPS before real certificates exist."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [*hostnames, "localhost", "127.0.0.1", "::1"]
    dns = [n for n in names if not is_ip(n)]
    ips = [n for n in names if is_ip(n)]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns or ["localhost"])[0])])
    cert = (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + WEB_CERT_TTL)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(_sans(dns, ips)), critical=False)
            .sign(key, hashes.SHA256()))
    return _private_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def self_signed_cert_fits(cert_pem: bytes, host: str, *, now: datetime,
                          margin: timedelta = timedelta(days=30)) -> bool:
    """Tell whether a kept self-signed web certificate still names host and is not near expiry."""
    cert = _load_cert(cert_pem)
    if cert.not_valid_after_utc - margin < now:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = [*san.get_values_for_type(x509.DNSName),
             *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    return host in names


# --- helpers ----------------------------------------------------------------------------------

def _new_key(algo: TLSKeyAlgo) -> CertificateIssuerPrivateKeyTypes:
    if algo == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if algo == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise BadParameter(f"unsupported TLS key algorithm {algo!r}")


def _private_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_private(key_pem: bytes) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as err:
        raise BadParameter(f"invalid TLS private key: {err}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise BadParameter("TLS private keys must be ECDSA or RSA")
    return key


def _load_cert(data: bytes) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as err:
        raise BadParameter(f"invalid X.509 certificate: {err}") from None


def _key_usage(*, cert_sign: bool = False, rsa_key: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=rsa_key, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def _subject(identity: Identity) -> x509.Name:
    orgs = (identity.system_role,) if identity.system_role else identity.roles
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.username),
                      *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs)])


def _identity_json(identity: Identity) -> bytes:
    doc = {
        "logins": list(identity.logins),
        "traits": {k: list(v) for k, v in identity.traits.items()},
        "cluster": identity.cluster,
        "system_role": identity.system_role,
        "host_uuid": identity.host_uuid,
        "route_to_cluster": identity.route_to_cluster,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _sans(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    try:
        sans.extend(x509.DNSName(name) for name in dict.fromkeys(dns_names))
        sans.extend(x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(ip_addresses))
    except ValueError as err:
        raise BadParameter(f"invalid certificate name: {err}") from None
    return sans


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _str_list(value: object) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return [_str(v) for v in value]
