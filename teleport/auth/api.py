"""The auth API: HTTPS with mutual TLS on 3025, JSON bodies, versioned paths.

Each route declares once which callers may use it; the caller is the identity encoded in its
client certificate, which the TLS layer has already verified against the cluster's TLS CA.
"""

from __future__ import annotations

import dataclasses
import gc
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from teleport.api import httpserver
from teleport.api.auth_models import (
    CompleteSignupRequest,
    ConnectorInfo,
    JoinAnswer,
    JoinCA,
    JoinRequest,
    LoginRequest,
    PingAnswer,
    RotateRequest,
    SignupRequest,
    TokenList,
    TokenRequest,
)
from teleport.api.constants import LISTEN_BACKLOG
from teleport.api.listing_models import ClusterStatus, ServerSummary
from teleport.api.presence_models import ServerKeepAlive
from teleport.api.ratelimit import DEFAULT_JOIN_LIMITS, JoinLimiter, JoinLimits
from teleport.auth import access
from teleport.auth.authority import CA_TYPES
from teleport.auth.server import AuthServer
from teleport.errors import AccessDenied, BadParameter, NotFound, TeleportError, to_wire
from teleport.events import emitter as ev
from teleport.keys.identity import Identity
from teleport.keys.pin import ca_pin
from teleport.keys.tls import identity_from_cert
from teleport.rbac import rules
from teleport.rbac.subject import Caller, Subject
from teleport.types.codec import from_dict, to_dict
from teleport.types.resources import Server, User
from teleport.types.rotation import Mode, Phase
from teleport.utils.duration import parse_duration

ADMIN, PROXY, NODE, USER, ANONYMOUS = (Caller.ADMIN, Caller.PROXY, Caller.NODE, Caller.USER,
                                       Caller.ANONYMOUS)  # for short route declarations
# Joining is the one unauthenticated call: a guesser gets a handful of failures a minute per
# address, a fleet behind one address joins at full speed (`teleport.api.ratelimit`).
JOIN_BURST = DEFAULT_JOIN_LIMITS.failed_per_source.burst  # failures before an address waits
#: Bodies are JSON requests of a few fields, or one piece of a recording upload.
MAX_BODY = 4 * 1024 * 1024

#: The cyclic collector's thresholds (`gc.set_threshold`) once the API serves. With Python's
#: (700, 10, 10) and 5,000 nodes' connections, the requests in flight at each collection of the
#: middle generation were promoted to the old one, whose collection (every few seconds, each a
#: walk of every object the connections hold: 0.3 s at 5,000 nodes) stalled every heartbeat
#: (p99 0.1-0.3 s). Young collections ~14x rarer and middle ones ~70x rarer put those of the
#: old one minutes apart; cyclic garbage waits a little longer for its collection. What still
#: stalls at 10,000 nodes is a per-request design, not a threshold: each idle keep-alive
#: connection holds its last request's objects until the next (aiohttp keeps them in its
#: request loop's locals), some 300,000 objects living one heartbeat interval, and a young or
#: middle collection that finds them walks them all (0.25-0.4 s, every 20-40 s).
GC_THRESHOLDS = (10_000, 50, 10)

Handler = Callable[["Call"], Awaitable[Any]]
Model = TypeVar("Model", bound=BaseModel)


@dataclass
class Call:
    """One authorized request: who is calling, what they sent, and the server to act on."""

    identity: Identity
    request: web.Request
    auth: AuthServer
    #: Who the rules of `teleport.rbac` judge for what is read: the caller, or the user a
    #: proxy acts for (`?user=`, with that user's roles as stored now).
    subject: Subject

    @property
    def caller(self) -> Subject:
        """Who sent the request itself (a proxy stays a proxy even when it names a user)."""
        return Subject.of(self.identity) if self.identity.username else Subject(ANONYMOUS)

    async def json(self) -> dict[str, Any]:
        """Read the JSON object body (declared JSON, within the body deadline, sanely nested)."""
        return await httpserver.read_json(self.request)

    async def body(self, model: type[Model]) -> Model:
        """Read the body as a request model, so a missing or wrong-typed field is a 400."""
        return httpserver.parse_model(model, await self.json())

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    async def check_rule(self, resource: str, verb: str) -> None:
        """Let tctl (Admin) do anything; judge a user by the rules of their roles stored now
        (for routes whose resource is known only from the request, like `/v1/resources/{kind}`)."""
        rules.check_rule(self.subject, resource, verb)


ROUTES: list[tuple[str, str, frozenset[Caller], rules.RouteRule | None, Handler]] = []
#: (method, path) of the routes whose body is raw bytes, not JSON (recording uploads).
RAW_BODY: set[tuple[str, str]] = set()
#: Run as the API shuts down, before aiohttp waits for handlers: long-lived streams end here.
ON_SHUTDOWN: list[Callable[[web.Application], Awaitable[None]]] = []


def route(method: str, path: str, allow: Iterable[Caller], *, rule: rules.RouteRule | None = None,
          raw_body: bool = False) -> Callable[[Handler], Handler]:
    """Register a handler, the kinds of caller allowed to reach it and, for users, the rule of
    their roles it needs, e.g. `("user", "list")` (`rbac.rules.check_route`).

    A state-changing route takes only a JSON body (or none) unless it declares `raw_body`.
    """

    def register(handler: Handler) -> Handler:
        ROUTES.append((method, path, frozenset(allow), rule, handler))
        if raw_body:
            RAW_BODY.add((method, path))
        return handler

    return register


# Request and answer bodies are the models of `teleport.api.auth_models`, shared with the client.

# --- handlers --------------------------------------------------------------------------------

@route("GET", "/v1/ping", [ADMIN, PROXY, NODE, USER])
async def ping(call: Call) -> Any:
    return PingAnswer(cluster_name=call.auth.cluster_name, server_version=_version(),
                      second_factor=call.auth.settings.second_factor,
                      session_recording=call.auth.settings.session_recording,
                      disconnect_expired_cert=call.auth.settings.disconnect_expired_cert,
                      client_idle_timeout_seconds=call.auth.settings.client_idle_seconds,
                      auth_type=call.auth.settings.auth_type,
                      connector_name=call.auth.settings.connector_name,
                      webauthn_rp_id=call.auth.settings.webauthn_rp_id,
                      allow_passwordless=call.auth.settings.passwordless,
                      connectors=[ConnectorInfo(kind=k, name=n, display=d)
                                  for k, n, d in await call.auth.sso.public_connectors()])


@route("GET", "/v1/status", [ADMIN, USER], rule=("cluster_name", "read"))
async def cluster_status(call: Call) -> Any:
    """Tell an admin the cluster's name, version, CA pin and who is online (the status page)."""
    tls = await call.auth.certs.get_ca("tls")
    hosts = call.auth.hosts

    def summary(server: Server) -> ServerSummary:
        return ServerSummary(id=server.metadata.name, hostname=server.spec.hostname,
                             addr=server.spec.addr, public_addr=server.spec.public_addr)

    return ClusterStatus(
        cluster=call.auth.cluster_name, version=_version(),
        ca_pin=ca_pin(tls.trusted_tls_certs()[0].encode()),
        auth_servers=[summary(s) for s in await hosts.list_servers("auth_server")],
        proxies=[summary(s) for s in await hosts.list_servers("proxy")],
        nodes_online=len(await hosts.list_servers("node")))


@route("GET", "/v1/authorities/{type}", [ADMIN, PROXY, NODE, USER])
async def get_authority(call: Call) -> Any:
    ca_type = call.param("type")
    if ca_type not in ("user", "host", "tls"):
        raise BadParameter(f"unknown certificate authority type {ca_type!r}")
    return to_dict(await call.auth.certs.get_ca(ca_type))


@route("POST", "/v1/authorities/rotate", [ADMIN, USER], rule=("cert_authority", "update"))
async def rotate_authorities(call: Call) -> Any:
    """Start, step or roll back a CA rotation (`tctl auth rotate`); answers the changed CAs."""
    body = await call.body(RotateRequest)
    types = list(CA_TYPES) if body.type == "all" else [body.type]
    grace = parse_duration(body.grace_period) if body.grace_period is not None else None
    changed = await call.auth.rotations.rotate(
        call.identity.username, types, Mode(body.mode), Phase(body.phase) if body.phase else None, grace)
    return [to_dict(ca) for ca in changed]


@route("GET", "/v1/users", [ADMIN, USER], rule=("user", "list"))
async def list_users(call: Call) -> Any:
    return [to_dict(u) for u in await call.auth.accounts.list_users()]


@route("GET", "/v1/users/{name}", [ADMIN, USER], rule=("user", "read"))
async def get_user(call: Call) -> Any:
    return to_dict(await call.auth.accounts.get_user(call.param("name")))


@route("PUT", "/v1/users", [ADMIN, USER], rule=("user", "update"))
async def upsert_user(call: Call) -> Any:
    user = from_dict(await call.json())
    if not isinstance(user, User):
        raise BadParameter("expected a user resource")
    return to_dict(await call.auth.accounts.upsert_user(user, actor=call.identity.username))


@route("DELETE", "/v1/users/{name}", [ADMIN, USER], rule=("user", "delete"))
async def delete_user(call: Call) -> Any:
    await call.auth.accounts.delete_user(call.param("name"), actor=call.identity.username)
    return {}


@route("POST", "/v1/users/{name}/unlock", [ADMIN, USER], rule=("user", "update"))
async def unlock_user(call: Call) -> Any:
    """Clear a lock (a failed-login lockout too) and the failed-login count (the web UI's)."""
    await call.auth.accounts.unlock_user(call.param("name"), actor=call.identity.username)
    return {}


@route("POST", "/v1/users/{name}/reset", [ADMIN, USER], rule=("user", "update"))
async def reset_user(call: Call) -> Any:
    """Clear a user's password and OTP device at once and answer the reset link's token."""
    token = await call.auth.accounts.reset_user(call.param("name"), actor=call.identity.username)
    return to_dict(token)


@route("POST", "/v1/users/signup", [ADMIN, USER], rule=("user", "create"))
async def create_user_signup(call: Call) -> Any:
    body = await call.body(SignupRequest)
    token = await call.auth.accounts.create_user_signup(
        body.name, list(body.logins or []), list(body.roles or []),
        created_by=call.identity.username, ttl=parse_duration(body.ttl) if body.ttl else None)
    return to_dict(token)


@route("GET", "/v1/signup/{token}", [PROXY])
async def get_signup(call: Call) -> Any:
    return await call.auth.accounts.get_signup_info(call.param("token"))


@route("POST", "/v1/signup/{token}/complete", [PROXY])
async def complete_signup(call: Call) -> Any:
    body = await call.body(CompleteSignupRequest)
    user = await call.auth.accounts.complete_signup(call.param("token"), body.password,
                                                    body.otp_code or "")
    return to_dict(user)


@route("POST", "/v1/users/{name}/ssh/authenticate", [PROXY])
async def authenticate_ssh(call: Call) -> Any:
    body = await call.body(LoginRequest)
    ttl = parse_duration(body.ttl) if body.ttl else None
    certs = await call.auth.logins.login(
        username=call.param("name"), password=body.password, otp_code=body.otp_code or "",
        ssh_public_key=body.ssh_public_key, tls_public_key=body.tls_public_key.encode(),
        ttl=ttl, remote_addr=body.remote_addr or "")
    return certs


@route("GET", "/v1/tokens", [ADMIN, USER], rule=("token", "list"))
async def list_tokens(call: Call) -> Any:
    provision, signup = await call.auth.hosts.list_tokens()
    return TokenList(provision=[to_dict(t) for t in provision],
                     signup=[to_dict(t) for t in signup])


@route("DELETE", "/v1/tokens/{token}", [ADMIN, USER], rule=("token", "delete"))
async def delete_token(call: Call) -> Any:
    await call.auth.hosts.delete_token(call.param("token"), actor=call.identity.username)
    return {}


@route("PUT", "/v1/servers", [NODE, PROXY])
async def upsert_server(call: Call) -> Any:
    server = from_dict(await call.json())
    if not isinstance(server, Server):
        raise BadParameter("expected a node or proxy resource")
    # The subject, not `call.caller`: the same for a host, and already built (building a
    # subject per heartbeat was a noticeable share of a busy auth server's CPU).
    rules.check_announces_itself(call.subject, server.kind, server.metadata.name)
    await call.auth.hosts.upsert_server(server)
    return {}


@route("PUT", "/v1/servers/keepalive", [NODE, PROXY])
async def keep_alive_server(call: Call) -> Any:
    """Extend an unchanged announcement: a few fields instead of the whole record, and no
    record written or announced to watchers; 404 when it is gone (the host sends it whole)."""
    beat = await call.body(ServerKeepAlive)
    rules.check_announces_itself(call.subject, beat.kind, beat.name)
    await call.auth.hosts.keep_alive_server(beat.kind, beat.name, beat.expires)
    return {}


@route("GET", "/v1/servers/{kind}", [ADMIN, PROXY, NODE, USER])
async def list_servers(call: Call) -> Any:
    kind = call.param("kind")
    if kind == "node" and call.subject.kind == USER:
        # A user (tctl through their own identity) sees only the nodes their roles reach.
        servers = await call.auth.hosts.list_servers(kind)
        return [to_dict(s) for s in servers if call.subject.access.can_see_node(s.all_labels())]
    # Everyone else sees every record: relayed as stored, not decoded and encoded again.
    return web.Response(body=await call.auth.hosts.list_servers_json(kind),
                        content_type="application/json")


@route("POST", "/v1/events", [NODE, PROXY])
async def emit_event(call: Call) -> Any:
    # The auth server, not the host, sets the event's id and server, and bounds its time.
    event = ev.from_host(await call.json(), call.identity.host_uuid, call.auth.clock)
    await call.auth.emitter.emit(event)
    return {}


@route("POST", "/v1/tokens", [ADMIN, USER], rule=("token", "create"))
async def create_token(call: Call) -> Any:
    body = await call.body(TokenRequest)
    token = await call.auth.hosts.create_provision_token(
        list(body.roles or ["node"]), parse_duration(body.ttl or "30m"), body.token or None,
        actor=call.identity.username)
    return to_dict(token)


@route("GET", "/v1/join/ca", [ANONYMOUS])
async def join_ca(call: Call) -> Any:
    """Hand out the TLS CA so a joining host can check it against its CA pin."""
    tls = await call.auth.certs.get_ca("tls")
    return JoinCA(cluster_name=call.auth.cluster_name, tls_ca_certs=tls.trusted_tls_certs())


@route("POST", "/v1/join", [ANONYMOUS])
async def join(call: Call) -> Any:
    # The body is checked whole before the token is: wrong types are a 400, not a guess.
    body = await call.body(JoinRequest)
    certs = await call.auth.hosts.register_host(
        token=body.token, host_uuid=body.host_uuid, nodename=body.nodename, role=body.role,
        ssh_public_key=body.ssh_public_key, tls_public_key=body.tls_public_key.encode(),
        addresses=list(body.addresses or []), remote_addr=call.request.remote or "",
        version=body.version)
    auth_servers = [s.spec.addr for s in await call.auth.hosts.list_servers("auth_server")]
    return JoinAnswer(**certs.model_dump(), auth_servers=auth_servers,
                      cluster_name=call.auth.cluster_name)


# --- plumbing --------------------------------------------------------------------------------

def _version() -> str:
    from teleport import __version__

    return __version__


@dataclass(eq=False, slots=True)
class _Peer:
    """What a connection's verified client certificate says: the identity in it, when it was
    issued and the certificate itself (DER)."""

    identity: Identity
    issued_at: datetime
    der: bytes
    #: Who a host's or tctl's certificate makes it, a function of the certificate alone: built
    #: by the connection's first request that our own CA's certificate passed with.
    system_subject: Subject | None = None


#: What each open TLS connection's client certificate says, read once per connection: a
#: certificate cannot change within a connection, and parsing it was a fifth of a busy auth
#: server's CPU. Entries go with their connection.
_peers: weakref.WeakKeyDictionary[Any, _Peer] = weakref.WeakKeyDictionary()


def _peer(request: web.Request) -> _Peer:
    """Return what the verified client certificate says, or refuse.

    The TLS layer has already checked any certificate against the cluster CA (CERT_OPTIONAL),
    so a request without one can only reach the anonymous join routes.
    """
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if ssl_object is None:
        raise AccessDenied("a client certificate is required")
    known = _peers.get(ssl_object)
    if known is None:
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            raise AccessDenied("a client certificate is required")
        known = _peers[ssl_object] = _Peer(identity_from_cert(der),
                                           access.tls_cert_issued_at(der), der)
    return known


def peer_identity(request: web.Request) -> Identity:
    """Return the identity in the verified client certificate, or refuse."""
    return _peer(request).identity


def make_app(auth: AuthServer,
             deadlines: httpserver.Deadlines = httpserver.DEFAULT_DEADLINES,
             join_limits: JoinLimits = DEFAULT_JOIN_LIMITS) -> web.Application:
    """Build the aiohttp application serving every registered route."""
    app = httpserver.make_app(component="auth server", max_body=MAX_BODY, deadlines=deadlines)

    limiter = JoinLimiter(join_limits, auth.clock)

    def limited(serve: Callable[[web.Request], Awaitable[web.StreamResponse]],
                ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Admit an anonymous request past the join limits; charge its address if refused."""
        async def serve_anonymous(request: web.Request) -> web.StreamResponse:
            attempt = limiter.admit(request.remote or "")
            try:
                return await serve(request)
            except Exception as err:
                if _is_failed_attempt(err):
                    attempt.failed()
                raise
            finally:
                attempt.close()

        return serve_anonymous

    def wrap(method: str, path: str, allow: frozenset[Caller], rule: rules.RouteRule | None,
             handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        json_only = method in httpserver.STATE_CHANGING and (method, path) not in RAW_BODY

        async def serve(request: web.Request) -> web.StreamResponse:
            try:
                identity, subject = await authorize(request, allow, rule)
            except AccessDenied as err:
                await auth.emitter.emit(ev.make_event(
                    ev.AUTH, auth.clock, user=_who(request), success=False,
                    error=str(err), addr_remote=request.remote or ""))
                return web.json_response(to_wire(err), status=err.http_status)
            if json_only and request.body_exists:
                httpserver.require_json(request)
            try:
                result = await handler(Call(identity, request, auth, subject))
            except AccessDenied as err:
                # Every refusal is audited once: a handler's, unless the auth server already
                # wrote it (a wrong password, under the user's name).
                if not err.audited:
                    await auth.emitter.emit(ev.make_event(
                        ev.AUTH, auth.clock, user=identity.username or _who(request),
                        success=False, error=str(err), addr_remote=request.remote or ""))
                raise
            if isinstance(result, web.StreamResponse):  # a handler that streamed its answer
                return result
            if type(result) is dict and not result:  # most state changes (a keep-alive's)
                return web.Response(text="{}", content_type="application/json")
            # Answers are models of teleport.api.auth_models (or lists of them, or resources).
            return web.json_response(to_jsonable_python(result))

        return limited(serve) if ANONYMOUS in allow else serve

    async def authorize(request: web.Request, allow: frozenset[Caller],
                        rule: rules.RouteRule | None) -> tuple[Identity, Subject]:
        if ANONYMOUS in allow:  # limited by `limited`
            return Identity(username=""), Subject(ANONYMOUS)
        peer = _peer(request)
        identity = peer.identity
        # Which CA issued it decides, never what it claims: a trusted root's CA makes only that
        # root's users, with the roles our role map gives them (`teleport.auth.trustedclusters`).
        root = await auth.trusted_clusters.issuing_root(peer.der)
        if root is not None:
            identity, roleset = await auth.trusted_clusters.remote_user(identity, root)
            subject = Subject.of(identity, roleset)
        elif identity.cluster != auth.cluster_name:
            raise AccessDenied("certificate is for another cluster")
        elif identity.system_role:
            # The same for every request of the connection (a heartbeat's each): built once.
            subject = peer.system_subject or Subject.of(identity)
            peer.system_subject = subject
        else:
            subject = Subject.of(identity)
        if subject.kind == USER and root is None:
            # Decide with the user and roles as stored now: deleted, locked or demoted users
            # lose access at once, not when the certificate expires.
            identity = await access.check_caller(auth.accounts, identity, peer.issued_at)
            roleset = await auth.resources.roleset(identity.roles, identity.traits)
            identity = dataclasses.replace(identity, logins=tuple(roleset.logins()))
            subject = Subject.of(identity, roleset)
        rules.check_route(subject, allow, request.method, request.path, rule)
        if subject.kind == PROXY and request.query.get("user"):
            user = await access.check_named_user(auth.accounts, request.query["user"])
            subject = Subject.user(user.metadata.name, user.spec.roles,
                                   await auth.resources.roleset(user.spec.roles, user.spec.traits))
        return identity, subject

    for method, path, allow, rule, handler in ROUTES:
        app.router.add_route(method, path, wrap(method, path, allow, rule, handler))
    app.on_shutdown.extend(ON_SHUTDOWN)
    return app


def _is_failed_attempt(err: Exception) -> bool:
    """Whether a refused anonymous call counts against its address: a wrong, expired or
    misused token (AccessDenied) or a malformed request. A name conflict (AlreadyExists) or a
    too-new version (NotSupported) is refused only after the token was accepted: no guess."""
    return isinstance(err, (AccessDenied, BadParameter, NotFound, web.HTTPClientError))


def _who(request: web.Request) -> str:
    try:
        return peer_identity(request).username
    except TeleportError:
        return ""


async def serve(auth: AuthServer, ssl_context: ssl.SSLContext, host: str, port: int,
                sock: socket.socket | None = None,
                deadlines: httpserver.Deadlines = httpserver.DEFAULT_DEADLINES, *,
                bind: bool = True, join_limits: JoinLimits = DEFAULT_JOIN_LIMITS) -> web.AppRunner:
    """Start the API on host:port or sock; the caller owns the returned runner and cleans it up.

    With bind=False nothing listens: connections come from the port's multiplexer, which paces
    them per source, through `serve_socket` (the process serves 3025 so).
    """
    collect_less_often()
    runner = httpserver.make_runner(make_app(auth, deadlines, join_limits))
    await runner.setup()
    if not bind:
        return runner
    site: web.BaseSite
    if sock is not None:
        # SockSite listens again: without the backlog the socket's queue would drop to 128.
        site = web.SockSite(runner, sock, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
    else:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
    await site.start()
    return runner


def collect_less_often() -> None:
    """Raise the cyclic collector's thresholds to at least GC_THRESHOLDS (for the whole
    process: an auth server's connections are most of its objects); a disabled collector
    stays disabled."""
    current = gc.get_threshold()
    wanted = tuple(max(have, want) for have, want in zip(current, GC_THRESHOLDS, strict=True))
    if current[0] > 0 and wanted != current:
        # The imports' collections leave the old generation's turn near: without a collection
        # now, the first collection of the middle one under load (0.3 s after a ramp to 10,000
        # nodes) was followed at once by a walk of every object (0.4 s).
        gc.collect()
        gc.set_threshold(*wanted)


async def serve_socket(runner: web.AppRunner, ssl_context: ssl.SSLContext,
                       sock: socket.socket) -> bool:
    """Serve the API on a connection accepted elsewhere, TLS handshake first (in the request
    head's deadline); whether the caller's client certificate was verified: nodes, proxies,
    tctl and users get their throttle token back, anonymous callers (joins) do not."""
    return await httpserver.serve_accepted(runner, sock, ssl_context,
                                           runner.app[httpserver.DEADLINES].headers)



# Route modules register their handlers with @route on import; keep them after ROUTES exists.
from teleport.auth import (  # noqa: E402, F401
    api_access,
    api_events,
    api_hosts,
    api_mfa,
    api_proxy,
    api_resources,
    api_sessions,
    api_sso,
    api_trust,
    api_watch,
    api_web,
)
