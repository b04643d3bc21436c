"""The proxy's half of single sign-on: start a GitHub or OIDC login, take the provider's answer.

`tsh login --auth=<connector>` posts to `/webapi/{kind}/login/console` with its keys and its
local callback; a browser opens `/webapi/{kind}/login/web`. Both get the provider's URL from the
auth server, which keeps every secret of the login. The provider sends the browser back to
`/v1/webapi/{kind}/callback` (the connector's `redirect_url`, as the manual writes it): the proxy
relays the query to the auth server and, for tsh, redirects to its local callback with the
sealed certificates (or the error); for a browser, sets the session cookie and opens the UI.

A browser's login is tied to it by a random cookie (`__Host-teleport-sso`, SameSite=Lax so it
comes back with the provider's top-level redirect) whose hash the auth server keeps: a callback
carried to another browser (login CSRF) is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

from aiohttp import web

from teleport.api import httpserver
from teleport.api.auth_models import SSOCallback, SSOLoginStart
from teleport.api.web_models import SSOConsoleAnswer, SSOConsoleRequest
from teleport.errors import BadParameter, NotFound, TeleportError
from teleport.proxy import web_pages
from teleport.proxy.websession import set_cookie
from teleport.types.connectors import CONNECTOR_KINDS

if TYPE_CHECKING:
    from teleport.proxy.web import WebProxy

SSO_COOKIE = "__Host-teleport-sso"
#: As long as the auth server keeps the login request.
SSO_COOKIE_SECONDS = 600
_MAX_QUERY_VALUE = 4096


class WebSSO:
    """Serve the single sign-on routes of one web proxy."""

    def __init__(self, proxy: WebProxy) -> None:
        self.proxy = proxy

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/webapi/{kind}/login/console", self.console_login)
        app.router.add_get("/webapi/{kind}/login/web", self.web_login)
        app.router.add_get("/v1/webapi/{kind}/callback", self.callback)

    async def console_login(self, request: web.Request) -> web.Response:
        """Start tsh's login: answer the provider URL its browser must open."""
        kind = _kind(request)
        self.proxy.login_limiter.check(request.remote or "")
        body = httpserver.parse_model(SSOConsoleRequest, await httpserver.read_json(request))
        started = await self.proxy.auth.start_sso_login(kind, SSOLoginStart(
            connector_id=body.connector_id, flow="console", proxy_host=request.host,
            client_redirect_url=body.redirect_url, secret_key=body.secret_key,
            ssh_pub_key=body.ssh_pub_key, tls_pub_key=body.tls_pub_key,
            cert_ttl=body.cert_ttl))
        return httpserver.json_answer(SSOConsoleAnswer(redirect_url=started.redirect_url))

    async def web_login(self, request: web.Request) -> web.StreamResponse:
        """Start a browser's login: tie it to this browser with a cookie, go to the provider."""
        try:
            kind = _kind(request)
            self.proxy.login_limiter.check(request.remote or "")
            connector = request.query.get("connector_id", "")
            if not connector:
                raise BadParameter("connector_id is required")
            csrf = secrets.token_urlsafe(32)
            started = await self.proxy.auth.start_sso_login(kind, SSOLoginStart(
                connector_id=connector, flow="web", proxy_host=request.host,
                csrf_hash=hashlib.sha256(csrf.encode()).hexdigest()))
        except TeleportError as err:
            return _error_page(err)
        response = web.HTTPFound(started.redirect_url)
        response.set_cookie(SSO_COOKIE, csrf, path="/", secure=True, httponly=True,
                            samesite="Lax", max_age=SSO_COOKIE_SECONDS)
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """Take the provider's answer to the connector's redirect URL."""
        try:
            kind = _kind(request)
            query = {k: v[:_MAX_QUERY_VALUE] for k, v in request.query.items()}
            done = await self.proxy.auth.complete_sso_login(kind, SSOCallback(
                query=query, callback_url=f"https://{request.host}{request.path}",
                csrf=request.cookies.get(SSO_COOKIE, ""),
                remote_addr=request.remote or ""))
        except TeleportError as err:
            return _error_page(err)
        if done.flow == "console":
            return web.HTTPFound(done.client_redirect_url)
        if done.web_session is None:
            return _error_page(NotFound("the auth server made no web session"))
        self.proxy.sessions.remember(done.web_session)
        # A page, not a redirect: the session cookie is SameSite=Strict, and a navigation the
        # provider started would not carry it even after a redirect to this origin.
        response = web.Response(
            text=web_pages.sso_done_page(done.username), content_type="text/html",
            charset="utf-8", headers={"Content-Security-Policy": web_pages.PAGE_CSP,
                                      "Cache-Control": "no-store"})
        set_cookie(response, done.web_session)
        response.del_cookie(SSO_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
        return response


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in CONNECTOR_KINDS:
        raise NotFound(f"no single sign-on of kind {kind!r}: use github or oidc")
    return kind


def _error_page(err: TeleportError) -> web.Response:
    return web.Response(text=web_pages.error_page(err.http_status, f"Login failed: {err}"),
                        status=err.http_status, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": web_pages.PAGE_CSP,
                                 "Cache-Control": "no-store"})

