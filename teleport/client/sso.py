"""`tsh login --auth=<connector>`: single sign-on through the user's browser and a local callback.

tsh listens on 127.0.0.1 (port 0), asks the proxy for the provider's URL naming its callback,
and has the browser open a random path here that redirects to the provider. The proxy sends the
browser back to `/callback?response=...` with the login answer sealed (AES-256-GCM) with a key
only tsh knows, so neither the browser, its history nor another local process can read or forge
the certificates; an answer that does not open is refused and tsh keeps waiting. `?error=` ends
the login with the proxy's message. Only the first answer counts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import os
import sys
import threading
import uuid
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
from teleport.client.login import new_keys, save_profile
from teleport.client.profile import Profile
from teleport.client.webapi import WebClient, proxy_certificate
from teleport.errors import AccessDenied, BadParameter, ConnectionProblem, NotFound
from teleport.types.resources import check_user_name
from teleport.utils.addr import parse_addr
from teleport.utils.duration import format_duration

#: How long tsh waits for the browser to come back, as Teleport's tsh.
LOGIN_TIMEOUT = 180.0
#: The kinds of connector tsh logs in through.
SSO_KINDS = ("github", "oidc")
#: The longest `?error=` message shown; the rest is cut.
_MAX_ERROR = 300
#: The sealed answer carries certificates and CAs in the URL, longer than aiohttp's 8 KiB line.
_MAX_LINE = 64 * 1024
_NONCE = 12
_CSP = "default-src 'none'"


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


def _page(title: str, message: str) -> str:
    """The small page the browser shows at the callback: text only, escaped, no script."""
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(message)}</p></body></html>")


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line[:_MAX_ERROR] + ("..." if len(line) > _MAX_ERROR else "")


class _NotOurs(Exception):
    """A callback whose answer is not sealed with this login's key."""


class CallbackServer:
    """tsh's HTTP server on 127.0.0.1 that sends the browser to the provider and takes the answer.

    Use as an async context manager: `callback_url` and `secret_key_b64` go to the proxy,
    `redirect_to()` the provider URL it answers, then `wait()` for the login.
    """

    def __init__(self) -> None:
        self.secret_key = os.urandom(32)
        self._path = "/" + uuid.uuid4().hex
        self._provider_url = ""
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._done: asyncio.Future[SSOLoginResponse] | None = None

    async def __aenter__(self) -> CallbackServer:
        self._done = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get(self._path, self._login_page)
        app.router.add_get("/callback", self._callback)
        self._runner = web.AppRunner(app, access_log=None, max_line_size=_MAX_LINE,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening; a wait still pending fails."""
        if self._done is not None and not self._done.done():
            self._done.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def login_url(self) -> str:
        """The link the user opens: it redirects to the provider."""
        return f"http://127.0.0.1:{self._port}{self._path}"

    @property
    def callback_url(self) -> str:
        """Where the proxy sends the browser back with the answer."""
        return f"http://127.0.0.1:{self._port}/callback"

    @property
    def secret_key_b64(self) -> str:
        return base64.urlsafe_b64encode(self.secret_key).rstrip(b"=").decode()

    def redirect_to(self, provider_url: str) -> None:
        """Set the provider URL the login link leads to (only http or https)."""
        if urlsplit(provider_url).scheme not in ("http", "https"):
            raise ConnectionProblem("the proxy answered a login URL that is not http(s)")
        self._provider_url = provider_url

    async def wait(self, within: float = LOGIN_TIMEOUT) -> SSOLoginResponse:
        """Wait for the first valid answer; AccessDenied with the proxy's error, or on timeout."""
        assert self._done is not None, "use CallbackServer as an async context manager"
        try:
            async with asyncio.timeout(within):
                return await asyncio.shield(self._done)
        except TimeoutError:
            raise AccessDenied(f"timed out after {format_duration(timedelta(seconds=within))} "
                               "waiting for the browser to finish the login; run 'tsh login' "
                               "again") from None

    def _answer(self, status: int, title: str, message: str) -> web.Response:
        return web.Response(status=status, text=_page(title, message), content_type="text/html",
                            charset="utf-8",
                            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store",
                                     "Referrer-Policy": "no-referrer"})

    def _refuse_host(self, request: web.Request) -> web.Response | None:
        # A page on another site that resolves its name to 127.0.0.1 (DNS rebinding) sends
        # its own Host: only the address tsh printed is served.
        if request.host != f"127.0.0.1:{self._port}":
            return self._answer(400, "Wrong address", "Open the link tsh printed.")
        return None

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refuse_host(request)) is not None:
            return refused
        if not self._provider_url:
            return self._answer(503, "Not ready", "tsh is still starting the login; reload.")
        raise web.HTTPFound(self._provider_url, headers={"Cache-Control": "no-store",
                                                         "Referrer-Policy": "no-referrer"})

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refuse_host(request)) is not None:
            return refused
        done = self._done
        assert done is not None
        if done.done():
            return self._answer(409, "Login already finished",
                                "This login has already finished; you may close this window.")
        if "error" in request.query:
            message = _one_line(request.query["error"]) or "the login failed"
            done.set_exception(AccessDenied(message))
            return self._answer(403, "Login failed", message)
        try:
            answer = self._open(request.query.get("response", ""))
        except _NotOurs:
            return self._answer(400, "Login refused",
                                "The login answer could not be decrypted: it was not meant for "
                                "this tsh. tsh is still waiting for its own.")
        except (ValidationError, BadParameter):
            error = ConnectionProblem("the proxy's login answer is not valid")
            done.set_exception(error)
            return self._answer(502, "Login failed", str(error))
        done.set_result(answer)
        return self._answer(200, "Login successful", "Login successful, you may close this window.")

    def _open(self, sealed: str) -> SSOLoginResponse:
        """Decrypt the answer (_NotOurs when it is not sealed with our key) and check it."""
        try:
            data = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            if len(data) <= _NONCE:
                raise _NotOurs
            plain = AESGCM(self.secret_key).decrypt(data[:_NONCE], data[_NONCE:], None)
        except (ValueError, InvalidTag) as err:  # binascii.Error is a ValueError
            raise _NotOurs from err
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
