"""The auth API: HTTPS with mutual TLS on 3025, JSON bodies, versioned paths.

Each route declares once which callers may use it; the caller is the identity encoded in its
client certificate, which the TLS layer has already verified against the cluster's TLS CA.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from teleport.auth.ratelimit import RateLimiter
from teleport.auth.server import AuthServer, IssuedCerts
from teleport.errors import AccessDenied, BadParameter, TeleportError, to_wire
from teleport.events import emitter as ev
from teleport.keys.identity import Identity
from teleport.keys.tls import identity_from_cert
from teleport.types.codec import from_dict, to_dict
from teleport.types.resources import Server, User
from teleport.utils.duration import parse_duration

ADMIN = "Admin"
PROXY = "Proxy"
NODE = "Node"
USER = "User"  # any end user holding a certificate from `tsh login`
ANONYMOUS = "Anonymous"  # no client certificate: only joining with a token
# Joining is the one unauthenticated call; a brute-forcer gets a handful of guesses a minute.
JOIN_RATE_PER_MINUTE = 30
JOIN_BURST = 10

Handler = Callable[["Call"], Awaitable[Any]]


@dataclass
class Call:
    """One authorized request: who is calling, what they sent, and the server to act on."""

    identity: Identity
    request: web.Request
    auth: AuthServer

    async def json(self) -> dict[str, Any]:
        try:
            body = await self.request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadParameter("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadParameter("request body must be a JSON object")
        return body

    def param(self, name: str) -> str:
        return self.request.match_info[name]


ROUTES: list[tuple[str, str, frozenset[str], Handler]] = []


def route(method: str, path: str, allow: Iterable[str]) -> Callable[[Handler], Handler]:
    """Register a handler and the caller roles allowed to reach it."""

    def register(handler: Handler) -> Handler:
        ROUTES.append((method, path, frozenset(allow), handler))
        return handler

    return register


def caller_role(identity: Identity) -> str:
    return identity.system_role or USER


def _certs_json(certs: IssuedCerts) -> dict[str, Any]:
    return asdict(certs)


def _field(body: dict[str, Any], name: str, kind: type = str) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise BadParameter(f"missing or invalid field {name!r}")
    return value


# --- handlers --------------------------------------------------------------------------------

@route("GET", "/v1/ping", [ADMIN, PROXY, NODE, USER])
async def ping(call: Call) -> Any:
    return {"cluster_name": call.auth.cluster_name, "server_version": _version(),
            "second_factor": call.auth.settings.second_factor,
            "session_recording": call.auth.settings.session_recording}


@route("GET", "/v1/authorities/{type}", [ADMIN, PROXY, NODE, USER])
async def get_authority(call: Call) -> Any:
    ca_type = call.param("type")
    if ca_type not in ("user", "host", "tls"):
        raise BadParameter(f"unknown certificate authority type {ca_type!r}")
    return to_dict(await call.auth.get_ca(ca_type))


@route("GET", "/v1/users", [ADMIN])
async def list_users(call: Call) -> Any:
    return [to_dict(u) for u in await call.auth.list_users()]


@route("GET", "/v1/users/{name}", [ADMIN])
async def get_user(call: Call) -> Any:
    return to_dict(await call.auth.get_user(call.param("name")))


@route("PUT", "/v1/users", [ADMIN])
async def upsert_user(call: Call) -> Any:
    user = from_dict(await call.json())
    if not isinstance(user, User):
        raise BadParameter("expected a user resource")
    return to_dict(await call.auth.upsert_user(user))


@route("DELETE", "/v1/users/{name}", [ADMIN])
async def delete_user(call: Call) -> Any:
    await call.auth.delete_user(call.param("name"))
    return {}


@route("POST", "/v1/users/signup", [ADMIN])
async def create_user_signup(call: Call) -> Any:
    body = await call.json()
    token = await call.auth.create_user_signup(
        _field(body, "name"), list(body.get("logins") or []), list(body.get("roles") or []),
        created_by=call.identity.username)
    return to_dict(token)


@route("GET", "/v1/signup/{token}", [PROXY])
async def get_signup(call: Call) -> Any:
    return asdict(await call.auth.get_signup_info(call.param("token")))


@route("POST", "/v1/signup/{token}/complete", [PROXY])
async def complete_signup(call: Call) -> Any:
    body = await call.json()
    user = await call.auth.complete_signup(call.param("token"), _field(body, "password"),
                                           str(body.get("otp_code") or ""))
    return to_dict(user)


@route("POST", "/v1/users/{name}/ssh/authenticate", [PROXY])
async def authenticate_ssh(call: Call) -> Any:
    body = await call.json()
    ttl = parse_duration(body["ttl"]) if body.get("ttl") else None
    certs = await call.auth.login(
        username=call.param("name"), password=_field(body, "password"),
        otp_code=str(body.get("otp_code") or ""), ssh_public_key=_field(body, "ssh_public_key"),
        tls_public_key=_field(body, "tls_public_key").encode(), ttl=ttl,
        remote_addr=str(body.get("remote_addr") or ""))
    return _certs_json(certs)


@route("GET", "/v1/tokens", [ADMIN])
async def list_tokens(call: Call) -> Any:
    provision, signup = await call.auth.list_tokens()
    return {"provision": [to_dict(t) for t in provision], "signup": [to_dict(t) for t in signup]}


@route("DELETE", "/v1/tokens/{token}", [ADMIN])
async def delete_token(call: Call) -> Any:
    await call.auth.delete_token(call.param("token"))
    return {}


@route("PUT", "/v1/servers", [NODE, PROXY])
async def upsert_server(call: Call) -> Any:
    server = from_dict(await call.json())
    if not isinstance(server, Server):
        raise BadParameter("expected a node or proxy resource")
    # A host may only announce itself, under its own role.
    if server.metadata.name != call.identity.host_uuid or \
            server.kind != caller_role(call.identity).lower():
        raise AccessDenied("a host may only announce itself")
    await call.auth.upsert_server(server)
    return {}


@route("GET", "/v1/servers/{kind}", [ADMIN, PROXY, NODE, USER])
async def list_servers(call: Call) -> Any:
    kind = call.param("kind")
    return [to_dict(s) for s in await call.auth.list_servers(kind)]


@route("POST", "/v1/events", [NODE, PROXY])
async def emit_event(call: Call) -> Any:
    event = await call.json()
    if not isinstance(event.get("event"), str):
        raise BadParameter("event needs an 'event' type")
    event.setdefault("server_id", call.identity.host_uuid)
    await call.auth.emitter.emit(event)
    return {}


@route("POST", "/v1/tokens", [ADMIN])
async def create_token(call: Call) -> Any:
    body = await call.json()
    roles = body.get("roles") or ["node"]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise BadParameter("roles must be a list of strings")
    token = await call.auth.create_provision_token(
        roles, parse_duration(str(body.get("ttl") or "30m")), body.get("token") or None)
    return to_dict(token)


@route("GET", "/v1/join/ca", [ANONYMOUS])
async def join_ca(call: Call) -> Any:
    """Hand out the TLS CA so a joining host can check it against its CA pin."""
    tls = await call.auth.get_ca("tls")
    return {"cluster_name": call.auth.cluster_name, "tls_ca_certs": tls.trusted_tls_certs()}


@route("POST", "/v1/join", [ANONYMOUS])
async def join(call: Call) -> Any:
    body = await call.json()
    certs = await call.auth.register_host(
        token=_field(body, "token"), host_uuid=_field(body, "host_uuid"),
        nodename=_field(body, "nodename"), role=_field(body, "role"),
        ssh_public_key=_field(body, "ssh_public_key"),
        tls_public_key=_field(body, "tls_public_key").encode(),
        addresses=[str(a) for a in body.get("addresses") or []],
        remote_addr=call.request.remote or "")
    auth_servers = [s.spec.addr for s in await call.auth.list_servers("auth_server")]
    return {**_certs_json(certs), "auth_servers": auth_servers,
            "cluster_name": call.auth.cluster_name}


# --- plumbing --------------------------------------------------------------------------------

def _version() -> str:
    from teleport import __version__

    return __version__


def peer_identity(request: web.Request) -> Identity:
    """Return the identity in the verified client certificate, or refuse.

    The TLS layer has already checked any certificate against the cluster CA (CERT_OPTIONAL),
    so a request without one can only reach the anonymous join routes.
    """
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise AccessDenied("a client certificate is required")
    return identity_from_cert(der)


def make_app(auth: AuthServer) -> web.Application:
    """Build the aiohttp application serving every registered route."""
    app = web.Application(client_max_size=4 * 1024 * 1024)

    limiter = RateLimiter(JOIN_RATE_PER_MINUTE, JOIN_BURST, auth.clock)

    def wrap(allow: frozenset[str], handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            try:
                identity = await authorize(request, allow)
                result = await handler(Call(identity, request, auth))
            except TeleportError as err:
                if isinstance(err, AccessDenied):
                    await auth.emitter.emit(ev.make_event(
                        ev.AUTH, auth.clock, user=_who(request), success=False,
                        error=str(err), addr_remote=request.remote or ""))
                return web.json_response(to_wire(err), status=err.http_status)
            if isinstance(result, web.StreamResponse):  # a handler that streamed its answer
                return result
            return web.json_response(result)

        return serve

    async def authorize(request: web.Request, allow: frozenset[str]) -> Identity:
        if ANONYMOUS in allow:
            limiter.check(request.remote or "")
            return Identity(username="", system_role=ANONYMOUS)
        identity = peer_identity(request)
        if identity.cluster != auth.cluster_name:
            raise AccessDenied("certificate is for another cluster")
        if caller_role(identity) not in allow:
            raise AccessDenied(
                f"{caller_role(identity).lower()} {identity.username!r} may not "
                f"{request.method} {request.path}")
        return identity

    for method, path, allow, handler in ROUTES:
        app.router.add_route(method, path, wrap(allow, handler))
    return app


def _who(request: web.Request) -> str:
    try:
        return peer_identity(request).username
    except TeleportError:
        return ""


async def serve(auth: AuthServer, ssl_context: ssl.SSLContext, host: str, port: int,
                sock: socket.socket | None = None) -> web.AppRunner:
    """Start the API on host:port or sock; the caller owns the returned runner and cleans it up."""
    runner = web.AppRunner(make_app(auth), access_log=None)
    await runner.setup()
    site: web.BaseSite
    if sock is not None:
        site = web.SockSite(runner, sock, ssl_context=ssl_context)
    else:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
    await site.start()
    return runner



# Route modules register their handlers with @route on import; keep them after ROUTES exists.
from teleport.auth import api_events, api_proxy, api_sessions  # noqa: E402, F401
