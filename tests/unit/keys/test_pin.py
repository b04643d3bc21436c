"""The CA pin agrees with the openssl recipe operators use, and mismatches are refused."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teleport.errors import AccessDenied, BadParameter
from teleport.keys import tls
from teleport.keys.pin import ca_pin, check_pins

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ca_cert() -> bytes:
    return tls.generate_tls_ca("example.com", now=NOW)[1]


def _independent_pin(cert_pem: bytes) -> str:
    if shutil.which("openssl"):
        pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=cert_pem,
                             check=True, capture_output=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                             check=True, capture_output=True).stdout
    else:
        der = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def test_pin_matches_openssl(ca_cert: bytes) -> None:
    pin = ca_pin(ca_cert)
    assert pin == _independent_pin(ca_cert)
    assert len(pin) == len("sha256:") + 64


def test_check_pins_accepts_any_matching_pin(ca_cert: bytes) -> None:
    other = ca_pin(tls.generate_tls_ca("other.com", now=NOW)[1])
    check_pins(ca_cert, [other, ca_pin(ca_cert)])
    check_pins(ca_cert, [ca_pin(ca_cert).upper().replace("SHA256:", "sha256:")])


def test_check_pins_refuses_mismatch(ca_cert: bytes) -> None:
    with pytest.raises(AccessDenied, match="CA pin mismatch"):
        check_pins(ca_cert, ["sha256:" + "0" * 64])
    with pytest.raises(AccessDenied, match="CA pin mismatch"):
        check_pins(ca_cert, [])


@pytest.mark.parametrize("pin", ["", "sha256:", "sha256:abc", "md5:" + "0" * 64,
                                 "sha256:" + "g" * 64, "0" * 64, "sha256:" + "0" * 65])
def test_malformed_pins_are_bad_parameters(ca_cert: bytes, pin: str) -> None:
    with pytest.raises(BadParameter, match="invalid CA pin"):
        check_pins(ca_cert, [ca_pin(ca_cert), pin])


def test_pin_of_garbage_is_a_bad_parameter() -> None:
    with pytest.raises(BadParameter):
        ca_pin(b"not a certificate")
