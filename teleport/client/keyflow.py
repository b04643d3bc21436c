"""Security keys for tsh: `tsh login` with a key (after the password, or passwordless) and the
registration of `tsh mfa add`.

A key plugged into this computer (USB HID, CTAP2 or U2F) is used through python-fido2, imported
only when a ceremony runs. Where none is attached, the browser flow: the ceremony has to run
on a page of the proxy's origin (the RP ID is the proxy's host), so tsh listens on 127.0.0.1
(`client.callback`) and prints a link to the proxy's `/web/cli/webauthn` page whose URL
fragment (never sent to any server) carries the options, tsh's callback and a random state.
The page asks the browser's authenticators (a key, a passkey, a phone) and sends the browser
back to `http://127.0.0.1:<port>/callback` with the answer and the state; an answer with another
state is refused and tsh keeps waiting. tsh then finishes with the proxy, which has the auth
server check everything (origin, RP ID, challenge, counter).

Tests: the browser flow runs with Chromium's virtual authenticator; `fido2_ceremony` runs with a
software CTAP2 device (tests/ctap2_softkey.py) handed to it directly. Finding a plugged-in key
(`attached_key`, HID) is not tested: a software key would have to appear as a HID device, which
needs /dev/uhid, absent on the machines the tests run on.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import hmac
import json
import secrets
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Literal, TextIO
from urllib.parse import urlencode

from teleport.api.constants import PROXY_WEB_PORT
from teleport.api.mfa_models import NO_KEY_MESSAGE, WebMFALoginCertsFinish
from teleport.client.callback import LOGIN_TIMEOUT, LocalCallback, NotOurs, one_line
from teleport.client.login import new_keys, save_profile
from teleport.client.profile import Profile
from teleport.client.webapi import WebClient, proxy_certificate
from teleport.errors import AccessDenied, BadParameter
from teleport.utils.addr import HostPort, parse_addr
from teleport.utils.duration import format_duration

Ceremony = Literal["get", "create"]
#: The proxy's page that runs a ceremony for tsh (`proxy.webmfa`).
KEY_PAGE = "/web/cli/webauthn"


class KeyCallback(LocalCallback[dict[str, Any]]):
    """tsh's callback for the browser flow: `?state=` must be this flow's, `?response=` the
    credential's JSON (`PublicKeyCredential.toJSON()`)."""

    done_title = "Done"
    done_message = "tsh has the security key's answer; you may close this window."

    def __init__(self) -> None:
        super().__init__()
        self.state = secrets.token_urlsafe(24)

    def _read(self, query: Mapping[str, str]) -> dict[str, Any]:
        if not hmac.compare_digest(query.get("state", "").encode(), self.state.encode()):
            raise NotOurs("This answer is for another tsh request.")
        try:
            credential = json.loads(query.get("response", ""))
        except ValueError:
            raise BadParameter("the browser's security key answer is not JSON") from None
        if not isinstance(credential, dict):
            raise BadParameter("the browser's security key answer is not a credential")
        return credential


def key_page_link(web_addr: HostPort, kind: Ceremony, options: Mapping[str, Any],
                  server: KeyCallback, what: str) -> str:
    """The proxy page's link; everything it needs rides in the fragment."""
    fragment = urlencode({"kind": kind, "options": json.dumps(options, separators=(",", ":")),
                          "callback": server.callback_url, "state": server.state, "what": what})
    return f"https://{web_addr}{KEY_PAGE}#{fragment}"


async def answer_challenge(kind: Ceremony, options: Mapping[str, Any], *, web_addr: HostPort,
                           what: str, browser: bool, out: TextIO,
                           within: float = LOGIN_TIMEOUT) -> dict[str, Any]:
    """Run a WebAuthn ceremony: with a key attached here, else through the browser."""
    device = await asyncio.to_thread(attached_key)
    if device is not None:
        print("Tap your security key", file=out, flush=True)
        return await asyncio.to_thread(fido2_ceremony, device, kind, options,
                                       f"https://{web_addr}")
    from teleport.client.sso import open_browser

    async with KeyCallback() as server:
        link = key_page_link(web_addr, kind, options, server, what)
        print("No security key is attached to this computer. Open this link in a browser on "
              "this computer to use a security key or passkey:", file=out)
        print(f" {link}", file=out, flush=True)
        if browser:
            open_browser(link)
        return await server.wait(within)


# --- python-fido2 -------------------------------------------------------------------------------

def attached_key() -> Any | None:
    """The first FIDO HID device plugged in, or None (none, or python-fido2 cannot look)."""
    try:
        from fido2.hid import CtapHidDevice
    except ImportError:
        return None
    try:
        return next(iter(CtapHidDevice.list_devices()), None)
    except OSError:
        return None


def fido2_ceremony(device: Any, kind: Ceremony, options: Mapping[str, Any],
                   origin: str) -> dict[str, Any]:
    """Register or assert with a plugged-in key; the answer as the browser's JSON form."""
    from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
    from fido2.webauthn import (
        PublicKeyCredentialCreationOptions,
        PublicKeyCredentialRequestOptions,
    )

    class Prompt(UserInteraction):
        def prompt_up(self) -> None:
            print("Tap your security key", file=sys.stderr, flush=True)

        def request_pin(self, permissions: Any, rp_id: str | None) -> str | None:
            if not sys.stdin.isatty():
                return None
            return getpass.getpass("Enter your security key's PIN: ")

        def request_uv(self, permissions: Any, rp_id: str | None) -> bool:
            return True

    client = Fido2Client(device, DefaultClientDataCollector(origin), Prompt())
    try:
        if kind == "create":
            response: Any = client.make_credential(
                PublicKeyCredentialCreationOptions.from_dict(dict(options)))
        else:
            response = client.get_assertion(
                PublicKeyCredentialRequestOptions.from_dict(dict(options))).get_response(0)
    except ClientError as err:
        raise AccessDenied(f"the security key refused: {one_line(str(err))}") from None
    plain: dict[str, Any] = json.loads(json.dumps(response, default=_plain))
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, bytes):
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()
    return str(value)


# --- tsh login ----------------------------------------------------------------------------------

async def key_login(proxy: str, user: str, password: str | None, *, ttl: timedelta | None,
                    insecure: bool, browser: bool,
                    otp_prompt: Callable[[], str] | None = None,
                    out: TextIO | None = None, within: float = LOGIN_TIMEOUT) -> Profile:
    """Log in with a security key: after `password` for `user`, or (password None) with a
    passkey that names its user. `otp_prompt()` asks for a code when the user has no key and
    the cluster's second factor takes an authenticator app instead (`on`, `optional`)."""
    out = out or sys.stdout
    web_addr = parse_addr(proxy, PROXY_WEB_PORT)
    keys = await new_keys()
    accepted = await proxy_certificate(web_addr) if insecure else None
    async with WebClient(str(web_addr), insecure=False, pinned_cert=accepted) as client:
        ping = await client.ping()
        try:
            challenge = await client.mfa_login_begin(user if password is not None else "",
                                                     password or "")
        except AccessDenied as err:
            if password is None or otp_prompt is None or str(err) != NO_KEY_MESSAGE:
                raise
            code = otp_prompt()
            resp = await client.ssh_login(user, password, code, keys.ssh_pub, keys.tls_pub, ttl)
            return save_profile(web_addr, ping, resp, user, keys, accepted)
        options = challenge.webauthn_public_key
        if options is None:  # `optional`, and this user registered no second factor
            assert password is not None
            resp = await client.ssh_login(user, password, "", keys.ssh_pub, keys.tls_pub, ttl)
            return save_profile(web_addr, ping, resp, user, keys, accepted)
        what = (f"log in to {ping.cluster_name} as {user}" if password is not None
                else f"log in to {ping.cluster_name} with a passkey")
        credential = await answer_challenge("get", options, web_addr=web_addr, what=what,
                                            browser=browser, out=out, within=within)
        answer = await client.mfa_login_finish(WebMFALoginCertsFinish(
            user=user if password is not None else "", webauthn_challenge_response=credential,
            pub_key=keys.ssh_pub, tls_pub_key=keys.tls_pub,
            ttl=format_duration(ttl) if ttl else None))
    return save_profile(web_addr, ping, answer, answer.username, keys, accepted)

