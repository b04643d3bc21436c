"""The web UI's admin pages and audit log: users, join tokens, cluster status, event search.

Every call is made to the auth API with the browser session's own certificate
(`WebSessions.client`), never the proxy's: the auth server alone decides, as for `tctl`, that
only users holding the `admin` role may use them, and audits each refusal. So a user demoted
or deleted loses these pages at their next click, and the proxy grants nothing by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from aiohttp import web

from teleport.api import httpserver
from teleport.api.web_models import (
    WebEventPage,
    WebInvite,
    WebToken,
    WebTokenCreate,
    WebTokenCreated,
    WebUser,
    WebUserCreate,
)
from teleport.auth.client import AuthClient
from teleport.errors import BadParameter
from teleport.keys.pin import ca_pin
from teleport.proxy.websession import check_origin
from teleport.types.resource import ZERO_TIME
from teleport.types.resources import ProvisionToken, User
from teleport.utils.clock import parse_time
from teleport.utils.duration import parse_duration

if TYPE_CHECKING:
    from teleport.proxy.web import WebProxy

#: The audit page's defaults: the last day, 50 events a page (at most 500).
DEFAULT_RANGE = timedelta(hours=24)
DEFAULT_EVENTS = 50
MAX_EVENTS = 500
#: The roles a join token made on the web may grant (as `tctl nodes add --roles`).
TOKEN_ROLES = frozenset({"node", "proxy"})


class WebAdmin:
    """Serve the admin and audit routes of one web proxy."""

    def __init__(self, proxy: WebProxy) -> None:
        self.proxy = proxy

    def add_routes(self, app: web.Application) -> None:
        router = app.router
        router.add_get("/webapi/sites/{cluster}/events/search", self.search_events)
        router.add_get("/webapi/sites/{cluster}/status", self.status)
        router.add_get("/webapi/users", self.list_users)
        router.add_post("/webapi/users", self.invite_user)
        router.add_delete("/webapi/users/{name}", self.delete_user)
        router.add_post("/webapi/users/{name}/unlock", self.unlock_user)
        router.add_post("/webapi/users/{name}/reset", self.reset_user)
        router.add_get("/webapi/tokens", self.list_tokens)
        router.add_post("/webapi/tokens", self.create_token)
        router.add_delete("/webapi/tokens/{token}", self.delete_token)

    async def _as_user(self, request: web.Request) -> AuthClient:
        """Return the auth API client of the browser's session (cookie + bearer; Origin)."""
        if request.method in httpserver.STATE_CHANGING:
            check_origin(request, required=False)
        session = await self.proxy.sessions.authenticate(request)
        return self.proxy.sessions.client(session)

    # --- audit log -------------------------------------------------------------------------

    async def search_events(self, request: web.Request) -> web.Response:
        """Answer one page of the audit log, newest first, filtered by range, type and text."""
        self.proxy.check_cluster(request)
        client = await self._as_user(request)
        query = request.query
        until = parse_time(query["to"], "to") if query.get("to") else self.proxy.clock.now()
        since = parse_time(query["from"], "from") if query.get("from") else until - DEFAULT_RANGE
        limit_text = query.get("limit", str(DEFAULT_EVENTS))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_EVENTS:
            raise BadParameter(f"limit must be a number from 1 to {MAX_EVENTS}")
        types = [t for t in query.get("type", "").split(",") if t]
        events, next_key = await client.search_events(
            since, until, types, "", int(limit_text), query.get("start_key", ""),
            text=query.get("q", ""), newest_first=True)
        return httpserver.json_answer(WebEventPage(events=events, next_key=next_key))

    # --- cluster status --------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        """Answer the cluster's name, version, CA pin, auth servers, proxies and nodes online."""
        self.proxy.check_cluster(request)
        client = await self._as_user(request)
        return httpserver.json_answer(await client.cluster_status())

    # --- users -----------------------------------------------------------------------------

    async def list_users(self, request: web.Request) -> web.Response:
        client = await self._as_user(request)
        now = self.proxy.clock.now()
        users = sorted(await client.list_users(), key=lambda u: u.metadata.name)
        return httpserver.json_answer([_web_user(user, now) for user in users])

    async def invite_user(self, request: web.Request) -> web.Response:
        """Create a user without a password and answer the signup link, as `tctl users add`."""
        client = await self._as_user(request)
        body = httpserver.parse_model(WebUserCreate, await httpserver.read_json(request))
        token = await client.create_user_signup(body.name, _unique(body.logins) or [body.name],
                                                _unique(body.roles))
        url = f"https://{self.proxy.public_addr}/web/newuser/{token.metadata.name}"
        return httpserver.json_answer(WebInvite(name=body.name, signup_url=url,
                                                expires=token.metadata.expires))

    async def delete_user(self, request: web.Request) -> web.Response:
        client = await self._as_user(request)
        await client.delete_user(request.match_info["name"])
        return web.json_response({})

    async def unlock_user(self, request: web.Request) -> web.Response:
        """Clear a lock (a failed-login lockout too) and the failed-login count."""
        client = await self._as_user(request)
        await httpserver.read_json(request)  # `{}`: a JSON body, as every state change here
        await client.unlock_user(request.match_info["name"])
        return web.json_response({})

    async def reset_user(self, request: web.Request) -> web.Response:
        """Clear a user's password and second factor now and answer the reset link (8 h), as
        `tctl users reset`."""
        client = await self._as_user(request)
        await httpserver.read_json(request)
        token = await client.reset_user(request.match_info["name"])
        url = f"https://{self.proxy.public_addr}/web/reset/{token.metadata.name}"
        return httpserver.json_answer(WebInvite(name=token.spec.user, signup_url=url,
                                                expires=token.metadata.expires))

    # --- join tokens -----------------------------------------------------------------------

    async def list_tokens(self, request: web.Request) -> web.Response:
        """List the join tokens (signup tokens are the users page's business)."""
        client = await self._as_user(request)
        provision, _ = await client.list_tokens()
        return httpserver.json_answer([_web_token(t) for t in provision])

    async def create_token(self, request: web.Request) -> web.Response:
        """Create a join token for nodes or proxies; answer what `teleport start` needs."""
        client = await self._as_user(request)
        body = httpserver.parse_model(WebTokenCreate, await httpserver.read_json(request))
        roles = _unique(body.roles)
        if not set(roles) <= TOKEN_ROLES:
            raise BadParameter("a join token's roles are node, proxy or both")
        ttl = parse_duration(body.ttl)
        if ttl <= timedelta(0):
            raise BadParameter(f"ttl must be positive, got {body.ttl!r}")
        token = await client.create_token(roles, ttl, None)
        tls = await client.get_ca("tls")
        created = _web_token(token)
        return httpserver.json_answer(WebTokenCreated(
            **created.model_dump(), ca_pin=ca_pin(tls.trusted_tls_certs()[0].encode()),
            auth_server=self.proxy.public_addr))

    async def delete_token(self, request: web.Request) -> web.Response:
        client = await self._as_user(request)
        await client.delete_token(request.match_info["token"])
        return web.json_response({})


def _web_user(user: User, now: datetime) -> WebUser:
    status = user.spec.status
    locked = status.locked_at(now)
    created = user.spec.created_by.time
    return WebUser(name=user.metadata.name, roles=list(user.spec.roles), logins=list(user.logins),
                   locked=locked, locked_message=status.locked_message if locked else "",
                   created=created if created > ZERO_TIME else None)


def _web_token(token: ProvisionToken) -> WebToken:
    return WebToken(token=token.metadata.name, roles=list(token.spec.roles),
                    expires=token.metadata.expires)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(item.strip() for item in items if item.strip()))



__all__ = ["WebAdmin"]
