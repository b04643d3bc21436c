"""The `mfa_device` resource: exactly one kind of device, no secrets, names fit for one line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from teleport.types.codec import to_dict
from teleport.types.mfa import MFADevice

WEBAUTHN = {"credential_id": "q83vEjRWeJA", "public_key_cbor": "pQECAyYgASFYIA==",
            "attestation_type": "none", "aaguid": "00000000-0000-0000-0000-000000000000",
            "signature_counter": 3, "resident_key": True}


def _device(name: str = "yubikey", **spec: object) -> MFADevice:
    return MFADevice.model_validate({"kind": "mfa_device", "version": "v1",
                                     "metadata": {"name": name}, "spec": spec})


def test_round_trip_as_teleport_writes_it() -> None:
    device = _device(id="6e1e4d35-8a32-4c0e-9f5e-1f2a3b4c5d6e", added_at="2026-01-01T00:00:00Z",
                     last_used="2026-01-02T00:00:00Z", webauthn=WEBAUTHN)
    data = to_dict(device)
    assert data["kind"] == "mfa_device" and data["version"] == "v1"
    assert data["spec"]["webauthn"] == WEBAUTHN and "totp" not in data["spec"]
    assert data["spec"]["added_at"] == "2026-01-01T00:00:00Z"
    assert MFADevice.model_validate(data) == device
    assert device.type == "WebAuthn" and device.spec.webauthn is not None
    assert device.spec.webauthn.credential_id_bytes == bytes.fromhex("abcdef1234567890")
    assert _device(totp={}).type == "TOTP"


@pytest.mark.parametrize(("name", "spec", "message"), [
    ("yubikey", {}, "exactly one of totp or webauthn"),
    ("yubikey", {"totp": {}, "webauthn": WEBAUTHN}, "exactly one of totp or webauthn"),
    ("yubikey", {"totp": {"key": "JBSWY3DPEHPK3PXP"}}, "Extra inputs"),  # no secret in a device
    ("yubikey", {"id": "nope", "totp": {}}, "not a uuid"),
    ("yubikey", {"webauthn": {**WEBAUTHN, "credential_id": "a/b+c"}}, "base64url"),
    ("yubikey", {"webauthn": {**WEBAUTHN, "signature_counter": -1}}, "greater than or equal"),
    ("line\nbreak", {"totp": {}}, "control characters"),
    ("   ", {"totp": {}}, "1 to 128 characters"),
])
def test_bad_devices_are_refused(name: str, spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _device(name, **spec)
