"""The web API of second factors: security keys at signup, at login, and on the account page.

Routes follow Teleport's web UI where they can:
    POST   /webapi/mfa/token/{token}/registerchallenge   a signup (or reset) link's key challenge
    POST   /webapi/mfa/login/begin                       password checked, then a key challenge
                                                         (`passwordless: true`: no user, no password)
    POST   /webapi/mfa/login/finishsession               the key's answer -> web session + cookie
    GET    /webapi/mfa/devices                           the logged-in user's devices
    POST   /webapi/mfa/devices/registerchallenge         a challenge for another key
    POST   /webapi/mfa/devices                           that key, named
    DELETE /webapi/mfa/devices/{name}                    remove a key
The proxy relays; the auth server checks every ceremony (origin, RP ID, challenge, counter)
and decides. Device routes act with the browser session's own certificate, so a user reaches
only their own keys. Login routes share the password login's per-address rate limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from teleport.api import httpserver
from teleport.api.mfa_models import (
    WebMFADeviceAdd,
    WebMFALoginBegin,
    WebMFALoginFinish,
    WebMFARegisterBegin,
)
from teleport.api.web_models import WebLoginAnswer
from teleport.auth.client import AuthClient
from teleport.errors import BadParameter
from teleport.proxy.websession import check_origin, set_cookie

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
