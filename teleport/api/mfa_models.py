"""Wire models of second factors (WebAuthn keys), on the auth API and the proxy's web API.

WebAuthn options travel as the JSON `PublicKeyCredential*Options` the browser takes (binary
fields base64url), and the browser's answers as `PublicKeyCredential.toJSON()` gives them; the
server library checks every byte, so these models only bound their shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from teleport.api.auth_models import IssuedCerts
from teleport.api.wire import Answer, Request

#: The refusal of a key login for a user who has no key but an authenticator app (`on`): tsh
#: then asks the app's code. One constant for both sides, so the wording cannot drift apart.
NO_KEY_MESSAGE = ("no security key is registered for this user: log in with the "
                  "authenticator app's code")

#: A device name: what `tsh mfa ls` and the account page show.
DeviceName = str


class WebauthnChallenge(Answer):
    """Options for `navigator.credentials.create()` or `.get()`; None: no key is needed
    (`second_factor: optional` and the user registered none)."""

    webauthn_public_key: dict[str, Any] | None = None


# --- auth API (3025) ----------------------------------------------------------------------------

class MFALoginBegin(Request):
    """The first step of a login with a key: the password, checked before any challenge."""

    password: str
    remote_addr: str = ""


class MFALoginFinish(Request):
    """The browser's answer to the challenge (`PublicKeyCredential.toJSON()`)."""

    webauthn_response: dict[str, Any]
    remote_addr: str = ""


class MFALoginCerts(Request):
    """A key's answer and the public keys `tsh login` asks to have signed (`ttl` a duration)."""

    webauthn_response: dict[str, Any]
    ssh_public_key: str = Field(min_length=1)
    tls_public_key: str = Field(min_length=1)
    ttl: str = ""
    remote_addr: str = ""


class MFALoginCertsAnswer(Answer):
    """The certificates, and whom they are for (a passwordless key names its user)."""

    username: str
    certs: IssuedCerts


class MFARegisterBegin(Request):
    #: A resident key that verifies its user (PIN, biometrics): usable without a password.
    passwordless: bool = False


class MFARegisterFinish(Request):
    name: DeviceName = Field(min_length=1)
    webauthn_response: dict[str, Any]
    remote_addr: str = ""


class MFASignupComplete(Request):
    """A signup (or reset) completed: the password and an OTP code or a new key."""

    password: str
    otp_code: str | None = None
    webauthn_response: dict[str, Any] | None = None
    device_name: str = ""
    remote_addr: str = ""


class MFADeviceInfo(Answer):
    """A device as `tsh mfa ls` and the account page list it: no key material."""

    id: str
    name: str
    type: str
    added_at: datetime
    last_used: datetime
    #: A resident key: it logs in alone (passwordless).
    passwordless: bool = False


class MFADeviceList(Answer):
    devices: list[MFADeviceInfo]
    #: The user has an authenticator app (OTP) enrolled at signup.
    otp: bool = False


# --- proxy web API (3080) -----------------------------------------------------------------------

class WebMFALoginBegin(Request):
    """`POST /webapi/mfa/login/begin`: user and password, or `passwordless` and neither."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", populate_by_name=True)

    user: str = ""
    password: str = Field(default="", alias="pass")
    passwordless: bool = False


class WebMFALoginFinish(Request):
    """`POST /webapi/mfa/login/finishsession`: no user for a passwordless login."""

    user: str = ""
    webauthn_challenge_response: dict[str, Any]


class WebMFALoginCertsFinish(Request):
    """`POST /webapi/mfa/login/finish`: `tsh login`'s key answer and public keys, as
    `/webapi/ssh/certs` takes them; no user for a passwordless login."""

    user: str = ""
    webauthn_challenge_response: dict[str, Any]
    pub_key: str = Field(min_length=1)
    tls_pub_key: str = Field(min_length=1)
    ttl: str | None = None


class WebMFARegisterBegin(Request):
    passwordless: bool = False


class WebMFADeviceAdd(Request):
    device_name: DeviceName = Field(min_length=1)
    webauthn_creation_response: dict[str, Any]
