"""`tsh login --auth=<connector>`: single sign-on through the user's browser and a local callback.

tsh listens on 127.0.0.1 (port 0), asks the proxy for the provider's URL naming its callback,
and has the browser open a random path here that redirects to the provider. The proxy sends the
browser back to `/callback?response=...` with the login answer sealed (AES-256-GCM) with a key
only tsh knows, so neither the browser, its history nor another local process can read or forge
the certificates; an answer that does not open is refused and tsh keeps waiting. `?error=` ends
the login with the proxy's message. Only the first answer counts.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
import threading
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import TextIO
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from teleport.api.constants import PROXY_WEB_PORT
from teleport.api.web_models import (
    AuthSettingsAnswer,
    SSOConnectorInfo,
    SSOConsoleRequest,
    SSOLoginResponse,
)
from teleport.client.callback import LOGIN_TIMEOUT, LocalCallback, NotOurs, one_line
from teleport.client.login import new_keys, save_profile
from teleport.client.profile import Profile
from teleport.client.webapi import WebClient, proxy_certificate
from teleport.errors import AccessDenied, BadParameter, ConnectionProblem, NotFound
from teleport.types.resources import check_user_name
from teleport.utils.addr import parse_addr
from teleport.utils.duration import format_duration

#: The kinds of connector tsh logs in through.
SSO_KINDS = ("github", "oidc")
_NONCE = 12
_UNSEALED = ("The login answer could not be decrypted: it was not meant for this tsh.")


def choose_connector(auth: str | None, settings: AuthSettingsAnswer) -> SSOConnectorInfo | None:
    """Pick the connector `--auth` (or, without it, the cluster) names; None means a password.

    `--auth=github|oidc` takes the cluster's `connector_name` when it is of that kind, else the
    first connector of that kind; any other value names a connector.
    """
    connectors = settings.connectors
    if auth == "local":
        return None
    if auth is None:
        kind = settings.type or "local"
        if kind == "local":
            return None
        if kind not in SSO_KINDS:
            raise BadParameter(f"the cluster uses {kind} logins, which tsh does not support")
        if settings.connector_name:
            return next((c for c in connectors if c.name == settings.connector_name),
                        SSOConnectorInfo(kind=kind, name=settings.connector_name))
        of_kind = [c for c in connectors if c.kind == kind]
        if len(of_kind) != 1:
            raise BadParameter(f"the cluster uses {kind} logins but names no connector: "
                               f"pass --auth=<name> ({_available(connectors)})")
        return of_kind[0]
    if auth in SSO_KINDS:
        of_kind = [c for c in connectors if c.kind == auth]
        named = [c for c in of_kind if c.name == settings.connector_name]
        if named or of_kind:
            return (named or of_kind)[0]
        raise BadParameter(f"the cluster has no {auth} connector ({_available(connectors)})")
    for connector in connectors:
        if connector.name == auth:
            return connector
    raise BadParameter(f"unknown --auth {auth!r} ({_available(connectors)})")


def _available(connectors: list[SSOConnectorInfo]) -> str:
    names = ", ".join(f"{c.name} ({c.kind})" for c in connectors)
    return f"use local or one of: {names}" if names else "the cluster has only local logins"


class CallbackServer(LocalCallback[SSOLoginResponse]):
    """tsh's HTTP server on 127.0.0.1 that sends the browser to the provider and takes the answer.

    Use as an async context manager: `callback_url` and `secret_key_b64` go to the proxy,
    `redirect_to()` the provider URL it answers, then `wait()` for the login.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secret_key = os.urandom(32)
        self._path = "/" + uuid.uuid4().hex
        self._provider_url = ""

    def _routes(self, app: web.Application) -> None:
        app.router.add_get(self._path, self._login_page)

    @property
    def login_url(self) -> str:
        """The link the user opens: it redirects to the provider."""
        return f"http://127.0.0.1:{self._port}{self._path}"

    @property
    def secret_key_b64(self) -> str:
        return base64.urlsafe_b64encode(self.secret_key).rstrip(b"=").decode()

    def redirect_to(self, provider_url: str) -> None:
        """Set the provider URL the login link leads to (only http or https)."""
        if urlsplit(provider_url).scheme not in ("http", "https"):
            raise ConnectionProblem("the proxy answered a login URL that is not http(s)")
        self._provider_url = provider_url

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refuse_host(request)) is not None:
            return refused
        if not self._provider_url:
            return self._answer(503, "Not ready", "tsh is still starting the login; reload.")
        raise web.HTTPFound(self._provider_url, headers={"Cache-Control": "no-store",
                                                         "Referrer-Policy": "no-referrer"})

    def _read(self, query: Mapping[str, str]) -> SSOLoginResponse:
        """`?error=` ends the login with the proxy's message; `?response=` must open."""
        if "error" in query:
            raise AccessDenied(one_line(query["error"]) or "the login failed")
        try:
            return self._open(query.get("response", ""))
        except (ValidationError, BadParameter):
            raise ConnectionProblem("the proxy's login answer is not valid") from None

    def _open(self, sealed: str) -> SSOLoginResponse:
        """Decrypt the answer (NotOurs when it is not sealed with our key) and check it."""
        try:
            data = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            if len(data) <= _NONCE:
                raise NotOurs(_UNSEALED)
            plain = AESGCM(self.secret_key).decrypt(data[:_NONCE], data[_NONCE:], None)
        except (ValueError, InvalidTag) as err:  # binascii.Error is a ValueError
            raise NotOurs(_UNSEALED) from err
        answer = SSOLoginResponse.model_validate_json(plain)
        check_user_name(answer.username)
        if answer.username in (".", ".."):
            raise BadParameter("invalid user name")
        return answer


def open_browser(url: str) -> bool:
    """Open `url` in the user's browser without waiting; False when there is none to open.

    Without a display (an SSH session on a server) Python's `webbrowser` would start a text
    browser in this terminal, so tsh only prints the link there, unless `BROWSER` says which.
    """
    gui = sys.platform in ("darwin", "win32") or any(
        os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"))
    if not gui:
        return False

    def _open() -> None:
        import webbrowser

        with contextlib.suppress(Exception):  # the printed link is the fallback
            webbrowser.open(url)

    # A daemon thread: a browser that blocks never keeps tsh from exiting.
    threading.Thread(target=_open, name="open-browser", daemon=True).start()
    return True


async def sso_login(proxy: str, connector: SSOConnectorInfo, *, ttl: timedelta | None,
                    insecure: bool, browser: bool, within: float = LOGIN_TIMEOUT,
                    out: TextIO | None = None) -> Profile:
    """Log in through a connector in the browser and store the certificates as the profile.

    The user is whoever the provider says (the answer's `username`), not `--user`.
    """
    if connector.kind not in SSO_KINDS:
        raise NotFound(f"connector {connector.name!r} is of kind {connector.kind!r}, which tsh "
                       "cannot log in through")
    out = out or sys.stdout
    web_addr = parse_addr(proxy, PROXY_WEB_PORT)
    keys = await new_keys()
    accepted = await proxy_certificate(web_addr) if insecure else None
    async with CallbackServer() as server:
        async with WebClient(str(web_addr), insecure=False, pinned_cert=accepted) as client:
            ping = await client.ping()
            provider_url = await client.sso_console_login(connector.kind, SSOConsoleRequest(
                connector_id=connector.name, redirect_url=server.callback_url,
                secret_key=server.secret_key_b64, ssh_pub_key=keys.ssh_pub,
                tls_pub_key=keys.tls_pub, cert_ttl=format_duration(ttl) if ttl else ""))
        server.redirect_to(provider_url)
        print("If browser window does not open automatically, open it by clicking on the link:",
              file=out)
        print(f" {server.login_url}", file=out, flush=True)
        if browser:
            open_browser(server.login_url)
        resp = await server.wait(within)
    return save_profile(web_addr, ping, resp, resp.username, keys, accepted)
