"""Chromium's virtual WebAuthn authenticator, for browser tests of registration and login.

The DevTools protocol's `WebAuthn` domain puts a software CTAP2 authenticator behind the
browser's real `navigator.credentials` code, so a page's WebAuthn calls, the origin the browser
writes into the client data and the RP ID checks are all Chromium's own; only the key is
simulated, answering at once (presence simulated) instead of waiting for a touch.
Authenticators belong to the tab (they survive navigation) and die with the driver.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from selenium import webdriver

Transport = Literal["usb", "nfc", "ble", "internal"]

# navigator.credentials.create/get with the options JSON the server sends, answering the JSON
# form of the credential (`toJSON()`), or {"error": "<name>: <message>"} when the browser refuses.
_CEREMONY = """
const [kind, optionsJson, done] = arguments;
(async () => {
  const json = JSON.parse(optionsJson);
  const publicKey = kind === "create"
    ? PublicKeyCredential.parseCreationOptionsFromJSON(json)
    : PublicKeyCredential.parseRequestOptionsFromJSON(json);
  const credential = await navigator.credentials[kind]({publicKey});
  return credential.toJSON();
})().then((c) => done(c), (e) => done({error: `${e.name}: ${e.message}`}));
"""


@dataclass(frozen=True)
class VirtualCredential:
    """A credential as the virtual authenticator holds it (from `WebAuthn.getCredentials`)."""

    credential_id: bytes
    rp_id: str
    resident: bool
    user_handle: bytes
    sign_count: int


def enable(driver: webdriver.Chrome) -> None:
    """Turn the tab's WebAuthn over to virtual authenticators (no OS dialogs, no real keys)."""
    driver.execute_cdp_cmd("WebAuthn.enable", {"enableUI": False})


def add(driver: webdriver.Chrome, *, transport: Transport = "usb", resident_key: bool = False,
        user_verification: bool = False, user_verified: bool = False) -> str:
    """Attach a CTAP2 authenticator to the tab; return its id.

    `resident_key` lets it keep discoverable credentials (passwordless); `user_verification`
    gives it a PIN or biometrics, and `user_verified` says whether the user passes them.
    """
    enable(driver)
    answer = driver.execute_cdp_cmd("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": transport, "hasResidentKey": resident_key,
        "hasUserVerification": user_verification, "isUserVerified": user_verified,
        "automaticPresenceSimulation": True}})
    return str(answer["authenticatorId"])


def credentials(driver: webdriver.Chrome, authenticator_id: str) -> list[VirtualCredential]:
    """Return the credentials the authenticator holds, with their signature counters."""
    answer = driver.execute_cdp_cmd("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    return [VirtualCredential(
        credential_id=base64.b64decode(c["credentialId"]), rp_id=c.get("rpId", ""),
        resident=bool(c.get("isResidentCredential")),
        user_handle=base64.b64decode(c.get("userHandle") or ""),
        sign_count=int(c.get("signCount", 0))) for c in answer["credentials"]]


def remove(driver: webdriver.Chrome, authenticator_id: str) -> None:
    """Detach the authenticator: as if the key were unplugged; its credentials are gone."""
    driver.execute_cdp_cmd("WebAuthn.removeVirtualAuthenticator",
                           {"authenticatorId": authenticator_id})


def set_user_verified(driver: webdriver.Chrome, authenticator_id: str, verified: bool) -> None:
    """Make the authenticator's next user verification pass or fail (a wrong PIN)."""
    driver.execute_cdp_cmd("WebAuthn.setUserVerified",
                           {"authenticatorId": authenticator_id, "isUserVerified": verified})


@contextmanager
def virtual_authenticator(driver: webdriver.Chrome, **options: Any) -> Iterator[str]:
    """Attach an authenticator (options as for `add`) for the block, and detach it after."""
    authenticator_id = add(driver, **options)
    try:
        yield authenticator_id
    finally:
        remove(driver, authenticator_id)


def create(driver: webdriver.Chrome, options_json: str) -> dict[str, Any]:
    """Run navigator.credentials.create on the current page; return the credential's JSON.

    Raises RuntimeError naming the browser's DOMException when it refuses.
    """
    return _ceremony(driver, "create", options_json)


def get(driver: webdriver.Chrome, options_json: str) -> dict[str, Any]:
    """Run navigator.credentials.get on the current page; return the assertion's JSON."""
    return _ceremony(driver, "get", options_json)


def _ceremony(driver: webdriver.Chrome, kind: str, options_json: str) -> dict[str, Any]:
    answer: dict[str, Any] = driver.execute_async_script(_CEREMONY, kind, options_json)
    if "error" in answer:
        raise RuntimeError(f"navigator.credentials.{kind} failed: {answer['error']}")
    return json.loads(json.dumps(answer))
