"""The web API of second factors: security keys at signup, at login, and on the account page.

Routes follow Teleport's web UI where they can:
    POST   /webapi/mfa/token/{token}/registerchallenge   a signup (or reset) link's key challenge
    POST   /webapi/mfa/login/begin                       password checked, then a key challenge
                                                         (`passwordless: true`: no user, no password)
    POST   /webapi/mfa/login/finishsession               the key's answer -> web session + cookie
    POST   /webapi/mfa/login/finish                      the key's answer and tsh's public keys
                                                         -> certificates (`tsh login`)
    GET    /web/cli/webauthn                             the page tsh's browser flow opens
    GET    /webapi/mfa/devices                           the logged-in user's devices
    POST   /webapi/mfa/devices/registerchallenge         a challenge for another key
    POST   /webapi/mfa/devices                           that key, named
    DELETE /webapi/mfa/devices/{name}                    remove a key
The proxy relays; the auth server checks every ceremony (origin, RP ID, challenge, counter)
and decides. Device routes act with the browser session's own certificate, so a user reaches
only their own keys. Login routes share the password login's per-address rate limit.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from aiohttp import web

from teleport.api import httpserver
from teleport.api.mfa_models import (
    MFALoginCerts,
    WebMFADeviceAdd,
    WebMFALoginBegin,
    WebMFALoginCertsFinish,
    WebMFALoginFinish,
    WebMFARegisterBegin,
)
from teleport.api.web_models import SSOLoginResponse, WebLoginAnswer
from teleport.auth.client import AuthClient
from teleport.errors import BadParameter
from teleport.proxy.web_pages import APP_CSP
from teleport.proxy.websession import check_origin, set_cookie
from teleport.utils.duration import parse_duration

if TYPE_CHECKING:
    from teleport.proxy.web import WebProxy


class WebMFA:
    """Serve the second-factor routes of one web proxy."""

    def __init__(self, proxy: WebProxy) -> None:
        self.proxy = proxy

    def add_routes(self, app: web.Application) -> None:
        router = app.router
        router.add_post("/webapi/mfa/token/{token}/registerchallenge", self.signup_challenge)
        router.add_post("/webapi/mfa/login/begin", self.login_begin)
        router.add_post("/webapi/mfa/login/finishsession", self.login_finish)
        router.add_post("/webapi/mfa/login/finish", self.login_certs)
        router.add_get("/webapi/mfa/devices", self.list_devices)
        router.add_post("/webapi/mfa/devices/registerchallenge", self.register_challenge)
        router.add_post("/webapi/mfa/devices", self.add_device)
        router.add_delete("/webapi/mfa/devices/{name}", self.delete_device)

    # --- signup ----------------------------------------------------------------------------

    async def signup_challenge(self, request: web.Request) -> web.Response:
        from teleport.proxy.web import _token

        self.proxy.login_limiter.check(request.remote or "")
        check_origin(request, required=False)
        token = _token(request.match_info["token"])
        return httpserver.json_answer(await self.proxy.auth.mfa_signup_challenge(token))

    # --- login -----------------------------------------------------------------------------

    async def login_begin(self, request: web.Request) -> web.Response:
        """Answer a key challenge: the user's keys after their password, or any passkey."""
        from teleport.proxy.web import _remote_addr, _user_name

        self.proxy.login_limiter.check(request.remote or "")
        check_origin(request, required=False)
        body = httpserver.parse_model(WebMFALoginBegin, await httpserver.read_json(request))
        if body.passwordless:
            answer = await self.proxy.auth.passwordless_begin()
        else:
            if not body.password:
                raise BadParameter("enter your password")
            answer = await self.proxy.auth.mfa_login_begin(
                _user_name(body.user), body.password, _remote_addr(request))
        return httpserver.json_answer(answer)

    async def login_finish(self, request: web.Request) -> web.Response:
        """Turn the key's answer into a web session, as a password login does."""
        from teleport.proxy.web import _remote_addr, _user_name

        self.proxy.login_limiter.check(request.remote or "")
        check_origin(request, required=False)
        body = httpserver.parse_model(WebMFALoginFinish, await httpserver.read_json(request))
        response = body.webauthn_challenge_response
        if body.user:
            session = await self.proxy.auth.mfa_login_finish(
                _user_name(body.user), response, _remote_addr(request))
        else:
            session = await self.proxy.auth.passwordless_finish(response,
                                                                _remote_addr(request))
        self.proxy.sessions.remember(session)
        answer = httpserver.json_answer(WebLoginAnswer(
            token=session.bearer_token, user=session.user, expires=session.idle_expires))
        set_cookie(answer, session)
        return answer

    async def login_certs(self, request: web.Request) -> web.Response:
        """`tsh login` with a key: the answer and tsh's public keys -> certificates, answered
        as `/webapi/ssh/certs` answers (plus the user, whom a passwordless key names)."""
        from teleport.proxy.web import _remote_addr, _user_name

        self.proxy.login_limiter.check(request.remote or "")
        body = httpserver.parse_model(WebMFALoginCertsFinish, await httpserver.read_json(request))
        ttl = parse_duration(body.ttl) if body.ttl else None
        if ttl is not None and ttl <= timedelta(0):
            raise BadParameter(f"ttl must be positive, got {body.ttl!r}")
        wanted = MFALoginCerts(webauthn_response=body.webauthn_challenge_response,
                               ssh_public_key=body.pub_key, tls_public_key=body.tls_pub_key,
                               ttl=body.ttl or "", remote_addr=_remote_addr(request))
        if body.user:
            answer = await self.proxy.auth.mfa_login_certs(_user_name(body.user), wanted)
        else:
            answer = await self.proxy.auth.passwordless_certs(wanted)
        certs = answer.certs
        return httpserver.json_answer(SSOLoginResponse(
            username=answer.username, cert=certs.ssh_cert, tls_cert=certs.tls_cert,
            host_signers=certs.host_ca_keys, user_ca_keys=certs.user_ca_keys,
            trusted_ca=certs.tls_ca_certs, cluster_name=self.proxy.cluster_name))

    # --- the account page ------------------------------------------------------------------

    async def _as_user(self, request: web.Request) -> tuple[AuthClient, str]:
        if request.method in httpserver.STATE_CHANGING:
            check_origin(request, required=False)
        session = await self.proxy.sessions.authenticate(request)
        return self.proxy.sessions.client(session), session.user

    async def list_devices(self, request: web.Request) -> web.Response:
        client, user = await self._as_user(request)
        return httpserver.json_answer(await client.list_mfa_devices(user))

    async def register_challenge(self, request: web.Request) -> web.Response:
        client, user = await self._as_user(request)
        body = httpserver.parse_model(WebMFARegisterBegin, await httpserver.read_json(request))
        return httpserver.json_answer(
            await client.mfa_register_challenge(user, body.passwordless))

    async def add_device(self, request: web.Request) -> web.Response:
        from teleport.proxy.web import _remote_addr

        client, user = await self._as_user(request)
        body = httpserver.parse_model(WebMFADeviceAdd, await httpserver.read_json(request))
        return httpserver.json_answer(await client.add_mfa_device(
            user, body.device_name, body.webauthn_creation_response,
            _remote_addr(request)))

    async def delete_device(self, request: web.Request) -> web.Response:
        from teleport.proxy.web import _remote_addr

        client, user = await self._as_user(request)
        await client.delete_mfa_device(user, request.match_info["name"], _remote_addr(request))
        return web.json_response({})


# --- tsh's browser flow ------------------------------------------------------------------------

#: The page `tsh login` and `tsh mfa add` link to when no key is attached to the computer: the
#: ceremony has to run on the proxy's origin (the RP ID is its host). What to do (the options,
#: tsh's callback, a state) rides in the URL fragment, which the browser never sends anywhere;
#: the script (`web/static/cli_webauthn.js`) only sends the answer to http://127.0.0.1:<port>.
_CLI_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>Security key for tsh · Teleport</title>"
    '<link rel="icon" href="/web/app/favicon.svg" type="image/svg+xml">'
    '<link rel="stylesheet" href="/web/app/app.css">'
    '<script type="module" src="/web/app/cli_webauthn.js"></script></head>'
    '<body><main class="center"><section id="cli-webauthn" class="card" aria-live="polite">'
    '<h1 id="cli-title">Security key for tsh</h1>'
    '<p id="cli-what" class="muted">Reading the request from tsh...</p>'
    '<button id="cli-go" class="btn btn-primary" type="button" hidden>Use security key</button>'
    '<p id="cli-status" class="help" role="status"></p>'
    '<p id="cli-error" class="error" role="alert" hidden></p>'
    "</section></main></body></html>\n")


async def cli_webauthn_page(request: web.Request) -> web.Response:
    """Serve the browser flow's page: static, no session needed, the app's strict policy."""
    return web.Response(text=_CLI_PAGE, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": APP_CSP})
