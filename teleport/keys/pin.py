"""The CA pin: lets a joining host trust an auth server it has never seen before."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teleport.errors import AccessDenied, BadParameter

_PIN_RE = re.compile(r"sha256:[0-9a-f]{64}")


def ca_pin(ca_cert_pem: bytes) -> str:
    """Return `sha256:` + hex SHA-256 of the CA's SubjectPublicKeyInfo, which survives re-issue."""
    try:
        cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as err:
        raise BadParameter(f"invalid CA certificate: {err}") from None
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def check_pins(ca_cert_pem: bytes, pins: Sequence[str]) -> None:
    """Refuse a CA that matches none of the pins the operator gave, before trusting it."""
    wanted = [p.strip().lower() for p in pins]
    for pin in wanted:
        if not _PIN_RE.fullmatch(pin):
            raise BadParameter(f"invalid CA pin {pin!r}: expected sha256: and 64 hex digits")
    actual = ca_pin(ca_cert_pem)
    # Compare against every pin without stopping early, so timing reveals nothing.
    matches = [hmac.compare_digest(actual.encode(), pin.encode()) for pin in wanted]
    if not any(matches):
        raise AccessDenied(f"CA pin mismatch: the auth server presented {actual}, "
                           f"which matches none of the {len(wanted)} configured pin(s)")
