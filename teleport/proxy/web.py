"""The proxy's HTTPS server on 3080: the web API `tsh` logs in through, and the signup page.

Every answer is JSON (errors as `{"error": {"code", "message"}}` with the error kind's status)
except the HTML pages. Client certificates are optional at the TLS layer: anonymous callers
may ping, sign up and log in; the calls that act as a user need the certificate of a login.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web

from teleport import __version__
from teleport.api import httpserver
from teleport.api.constants import LISTEN_BACKLOG
from teleport.api.mfa_models import MFASignupComplete
from teleport.api.ratelimit import RateLimiter
from teleport.api.web_models import (
    AuthSettingsAnswer,
    LoginRequest,
    LoginResponse,
    NodeInfo,
    ProxySettings,
    SignupDone,
    SignupInfoAnswer,
    SignupRequest,
    SSHProxySettings,
    SSOConnectorInfo,
    WebauthnSettings,
    WebContext,
    WebLoginAnswer,
    WebLoginRequest,
    WebPing,
    WebRenewAnswer,
)
from teleport.auth.client import AuthClient
from teleport.config import sshalgos
from teleport.config.sshalgos import SSHAlgorithms
from teleport.errors import AccessDenied, BadParameter, NotFound, TeleportError
from teleport.events.recording import check_sid
from teleport.keys.identity import Identity
from teleport.keys.tls import identity_from_cert
from teleport.proxy import (
    web_pages,
    webadmin,
    webclusters,
    webmfa,
    websso,
    webterminal,
    webtls,
    webtrust,
)
from teleport.proxy.websession import (
    WebSessions,
    check_origin,
    check_token,
    clear_cookie,
    set_cookie,
)
from teleport.rbac.roles import RoleSet
from teleport.types.roles import Role
from teleport.utils.addr import HostPort
from teleport.utils.clock import Clock
from teleport.utils.duration import parse_duration

log = logging.getLogger(__name__)

#: Every request body here is a handful of short fields; anything bigger is refused unread.
MAX_BODY = 64 * 1024
# Signup tokens are hex; refusing anything else keeps odd input out of auth API paths.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_BAD_NAME_CHARS = frozenset("/\\?#%") | {chr(c) for c in range(33)} | {"\x7f"}
_JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
#: Sent only with a configured certificate: pinning browsers to HTTPS with a self-signed one
#: would leave users no way past its warning.
HSTS = "max-age=31536000; includeSubDomains"
# Logins (and signups, which check a password and a code) per client address, as Teleport's
# defaults for its unauthenticated web routes: 10 a minute, bursts of 20.
LOGIN_RATE_PER_MINUTE = 10
LOGIN_BURST = 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The browser UI's files (`teleport/web/static`), served at /web/app/.
STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
STATIC_PREFIX = "/web/app"


class WebProxy:
    """Serve the web API and pages, calling the auth server as the proxy for everything."""

    def __init__(self, *, auth: AuthClient, cluster_name: str,
                 keypairs: Sequence[webtls.KeyPair],
                 client_ca_pems: Callable[[], Sequence[bytes]], public_addr: str,
                 ssh_public_addr: str, clock: Clock, hsts: bool = False,
                 deadlines: httpserver.Deadlines = httpserver.DEFAULT_DEADLINES,
                 revoked: Callable[[str, bytes], str | None] | None = None,
                 serve_ssh: webterminal.ServeSSH | None = None,
                 trusted_host_cas: Callable[[], Sequence[str]] = lambda: (),
                 plain_http: bool = False,
                 roles: Callable[[], Mapping[str, Role] | None] = lambda: None,
                 leaves: Callable[[], Collection[str]] = tuple,
                 leaf_host_cas: Callable[[], Mapping[str, Sequence[str]]] = dict,
                 ssh_algorithms: SSHAlgorithms = sshalgos.DEFAULT) -> None:
        self.auth = auth
        #: The leaf clusters whose tunnels this proxy holds now, and their host CAs: a browser
        #: session reaches their nodes as `tsh --cluster` does (`teleport.proxy.webclusters`).
        self.leaves = leaves
        self.leaf_host_cas = leaf_host_cas
        #: Where this proxy's own web port answers on this host (set once it listens): a browser
        #: session's calls to a leaf's auth server go through it, relayed like tsh's.
        self.self_addr: HostPort | None = None
        #: What web terminals' SSH hops offer (teleport.yaml's `kex_algos`, `ciphers`, ...).
        self.ssh_algorithms = ssh_algorithms
        #: The browser sessions: cookie plus bearer token, stored by the auth server.
        self.sessions = WebSessions(auth, clock, revoked)
        #: The proxy's own SSH server, which web terminals go through like `tsh ssh`.
        self._serve_ssh = serve_ssh
        self._host_cas = trusted_host_cas
        #: The cluster's roles as last fetched, for what the pages offer (the auth server
        #: decides every call itself).
        self._roles = roles
        #: Open web terminals per web session, each ended by setting its event (logout).
        self._terminals: dict[str, set[asyncio.Event]] = {}
        #: Why a user's certificate (name, DER) no longer grants access: deleted or locked users.
        self._revoked = revoked
        self.hsts = hsts
        self.deadlines = deadlines
        self.login_limiter = RateLimiter(LOGIN_RATE_PER_MINUTE, LOGIN_BURST, clock)
        self.cluster_name = cluster_name
        self.public_addr = public_addr
        #: Announced in the ping for nodes behind NAT; set by the process once it listens.
        self.tunnel_public_addr = ""
        self.ssh_public_addr = ssh_public_addr
        self.clock = clock
        #: (key, certificate) PEMs: the first is the default, others are picked by SNI.
        self._keypairs: list[webtls.KeyPair] = list(keypairs)
        #: `--insecure-no-tls`: plain HTTP, TLS ended by a load balancer in front.
        self.plain_http = plain_http
        self._client_ca_pems = client_ca_pems
        self._runner: web.AppRunner | None = None
        self._ssl: ssl.SSLContext | None = None
        self._port = 0

    async def __aenter__(self) -> WebProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        """Return the bound port, which differs from the asked one when that was 0."""
        return self._port

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build the listener's TLS context (None: plain HTTP); client certificates optional."""
        if self.plain_http:
            return None
        return webtls.server_context(self._keypairs, self._client_ca_pems())

    def set_keypairs(self, pairs: Sequence[webtls.KeyPair]) -> None:
        """Serve new certificates to new connections (their files changed); open ones keep theirs.

        Checked first: a pair that does not load raises BadParameter and changes nothing.
        """
        context = webtls.server_context(pairs, self._client_ca_pems())
        self._keypairs = list(pairs)
        if not self.plain_http:
            self._ssl = context

    def refresh_client_cas(self) -> None:
        """Check client certificates of new connections against the cluster's TLS CAs as they
        are now (a CA rotation trusts a new one, then drops the old one); connections taken
        through the multiplexer (`serve_socket`), as the process serves the web port."""
        if not self.plain_http and self._ssl is not None:
            self._ssl = webtls.server_context(self._keypairs, self._client_ca_pems())

    async def start(self, host: str, port: int, sock: socket.socket | None = None, *,
                    bind: bool = True) -> None:
        """Listen on host:port (0 picks a free port), or on a socket handed down by a restart.

        With bind=False nothing is bound: connections come from the port's multiplexer
        through `serve_socket` (teleport.proxy.mux), and `port` is the multiplexer's.
        """
        runner = httpserver.make_runner(self.make_app())
        await runner.setup()
        if not bind:
            self._runner, self._ssl = runner, self.ssl_context()
            return
        try:
            site: web.BaseSite
            if sock is not None:
                # SockSite listens again: without the backlog the queue would drop to 128.
                site = web.SockSite(runner, sock, ssl_context=self.ssl_context(),
                                    backlog=LISTEN_BACKLOG)
            else:
                site = web.TCPSite(runner, host, port, ssl_context=self.ssl_context(),
                                   backlog=LISTEN_BACKLOG)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def serve_socket(self, sock: socket.socket) -> bool:
        """Serve HTTPS on a connection accepted elsewhere (the multiplexer), TLS handshake first;
        whether the peer's client certificate (tsh's) was verified.

        The runner's server tracks it like its own, so close() ends it with the others.
        """
        if self._runner is None:
            sock.close()
            return False
        return await httpserver.serve_accepted(self._runner, sock, self._ssl,
                                               self.deadlines.headers)

    async def stop_accepting(self) -> None:
        """Stop taking new connections (graceful restart); close() ends the open ones."""
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self.sessions.close()  # the users' auth API clients

    def make_app(self) -> web.Application:
        """Build the routes behind one error middleware, so no route can leak a traceback."""
        app = httpserver.make_app(component="proxy", max_body=MAX_BODY, deadlines=self.deadlines)
        app.middlewares.append(_json_only)
        app.on_response_prepare.append(self._security_headers)
        app.router.add_get("/", self.landing)
        app.router.add_get("/web/newuser/{token}", self.signup_page)
        app.router.add_get("/web/reset/{token}", self.signup_page)  # `tctl users reset`'s link
        app.router.add_static(STATIC_PREFIX, STATIC_DIR, append_version=False)
        app.router.add_get("/web/cli/webauthn", webmfa.cli_webauthn_page)  # tsh's key page
        app.router.add_get("/web", self.app_shell)
        app.router.add_get("/web/{tail:.*}", self.app_shell)
        app.router.add_post("/webapi/sessions/web", self.web_login)
        app.router.add_delete("/webapi/sessions/web", self.web_logout)
        app.router.add_post("/webapi/sessions/web/renew", self.web_renew)
        app.router.add_get("/webapi/sites/{cluster}/context", self.web_context)
        app.router.add_get("/webapi/sites/{cluster}/connect", self.web_terminal)
        app.router.add_get("/webapi/ping", self.ping)
        app.router.add_get("/webapi/users/password/token/{token}", self.signup_info)
        app.router.add_put("/webapi/users/password/token", self.complete_signup)
        app.router.add_post("/webapi/ssh/certs", self.ssh_certs)
        app.router.add_get("/webapi/sites/{cluster}/nodes", self.list_nodes)
        app.router.add_get("/webapi/sites/{cluster}/sessions", self.list_recordings)
        app.router.add_get("/webapi/sites/{cluster}/sessions/{sid}/stream", self.stream_recording)
        app.router.add_get("/webapi/sites/{cluster}/active_sessions", self.list_active_sessions)
        webadmin.WebAdmin(self).add_routes(app)  # admin pages and the audit log
        webtrust.WebTrust(self).add_routes(app)  # the CAs' public keys, for tsh and sshd
        websso.WebSSO(self).add_routes(app)  # GitHub and OIDC logins
        webmfa.WebMFA(self).add_routes(app)  # security keys: signup, login, account page
        webclusters.WebClusters(self).add_routes(app)  # trusted clusters: validation, picker
        return app

    # --- pages -----------------------------------------------------------------------------

    async def landing(self, request: web.Request) -> web.Response:
        """Send browsers to the web UI, as Teleport does."""
        raise web.HTTPFound("/web")

    async def app_shell(self, request: web.Request) -> web.Response:
        """Serve the UI's one page for every /web path; the page's script draws the route.

        A logged-in browser gets its session's bearer token in the page, which only this
        origin can read; without a session every page but the login page sends it to log in.
        """
        session = await self.sessions.from_cookie(request)
        if session is None and request.path not in ("/web/login", "/web/login/"):
            raise web.HTTPFound("/web/login?" + urlencode({"redirect": request.path_qs}))
        page = web_pages.app_shell(cluster_name=self.cluster_name,
                                   bearer=session.bearer_token if session else "",
                                   user=session.user if session else "")
        return _html(page, 200, web_pages.APP_CSP)

    async def signup_page(self, request: web.Request) -> web.Response:
        """Serve the page a `tctl users add` or `tctl users reset` link opens (the token's usage
        words it); errors are pages too, for browsers."""
        link = "password reset" if request.path.startswith("/web/reset/") else "signup"
        try:
            token = _token(request.match_info["token"])
            info = await self.auth.get_signup(token)
        except NotFound:
            return _html(web_pages.error_page(
                404, f"This {link} link is invalid or has expired. Ask your administrator "
                     "for a new one."), 404, web_pages.PAGE_CSP)
        except TeleportError as err:
            return _html(web_pages.error_page(err.http_status, str(err)), err.http_status,
                         web_pages.PAGE_CSP)
        page = web_pages.signup_page(
            cluster_name=self.cluster_name, user=info.user, token=token,
            public_addr=self.public_addr, second_factor=info.second_factor,
            otp_secret=info.otp_secret, otp_uri=info.otp_uri, usage=info.usage,
            webauthn=bool((await self.auth.ping()).webauthn_rp_id))
        return _html(page, 200, web_pages.SIGNUP_CSP)

    # --- web API ---------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        """Tell tsh, before any credentials, which cluster and second factor to expect."""
        auth = await self.auth.ping()
        return httpserver.json_answer(WebPing(
            cluster_name=self.cluster_name, server_version=__version__,
            auth=AuthSettingsAnswer(
                type=auth.auth_type, second_factor=auth.second_factor,
                connector_name=auth.connector_name,
                connectors=[SSOConnectorInfo(kind=c.kind, name=c.name, display=c.display)
                            for c in auth.connectors],
                webauthn=WebauthnSettings(rp_id=auth.webauthn_rp_id) if auth.webauthn_rp_id
                else None, allow_passwordless=auth.allow_passwordless),
            proxy=ProxySettings(ssh=SSHProxySettings(public_addr=self.ssh_public_addr,
                                                     tunnel_public_addr=self.tunnel_public_addr))))

    async def signup_info(self, request: web.Request) -> web.Response:
        """Return what a signup client needs to enroll the authenticator app."""
        info = await self.auth.get_signup(_token(request.match_info["token"]))
        with_otp = info.second_factor in web_pages.OTP_FACTORS
        return httpserver.json_answer(SignupInfoAnswer(
            user=info.user, otp_secret=info.otp_secret if with_otp else "",
            otp_uri=info.otp_uri if with_otp else "",
            qr_svg=web_pages.qr_svg(info.otp_uri) if with_otp else "",
            second_factor=info.second_factor, expires=info.expires, usage=info.usage))

    async def complete_signup(self, request: web.Request) -> web.Response:
        """Set the new user's password (and OTP device) through the auth server."""
        self.login_limiter.check(request.remote or "")
        body = httpserver.parse_model(SignupRequest, await httpserver.read_json(request))
        user = await self.auth.mfa_complete_signup(_token(body.token), MFASignupComplete(
            password=body.password, otp_code=body.second_factor_token or "",
            webauthn_response=body.webauthn_creation_response, device_name=body.device_name,
            remote_addr=_remote_addr(request)))
        return httpserver.json_answer(SignupDone(user=user.metadata.name))

    async def ssh_certs(self, request: web.Request) -> web.Response:
        """Log a user in and return certificates, the way `tsh login` expects them."""
        self.login_limiter.check(request.remote or "")
        body = httpserver.parse_model(LoginRequest, await httpserver.read_json(request))
        ttl = parse_duration(body.ttl) if body.ttl else None
        if ttl is not None and ttl <= timedelta(0):
            raise BadParameter(f"ttl must be positive, got {body.ttl!r}")
        certs = await self.auth.authenticate_ssh(
            _user_name(body.user), password=body.password, otp_code=body.otp_token or "",
            ssh_public_key=body.pub_key, tls_public_key=body.tls_pub_key.encode(), ttl=ttl,
            remote_addr=_remote_addr(request))
        return httpserver.json_answer(LoginResponse(
            cert=certs.ssh_cert, tls_cert=certs.tls_cert, host_signers=certs.host_ca_keys,
            user_ca_keys=certs.user_ca_keys, trusted_ca=certs.tls_ca_certs,
            cluster_name=self.cluster_name))

    # --- browser sessions ------------------------------------------------------------------

    async def web_login(self, request: web.Request) -> web.Response:
        """Log a browser in with password and code; answer the bearer token, set the cookie."""
        self.login_limiter.check(request.remote or "")
        check_origin(request, required=False)
        body = httpserver.parse_model(WebLoginRequest, await httpserver.read_json(request))
        session = await self.auth.create_web_session(
            _user_name(body.user), password=body.password, otp_code=body.second_factor_token,
            remote_addr=_remote_addr(request))
        self.sessions.remember(session)
        response = httpserver.json_answer(WebLoginAnswer(
            token=session.bearer_token, user=session.user, expires=session.idle_expires))
        set_cookie(response, session)
        return response

    async def web_logout(self, request: web.Request) -> web.Response:
        """End the browser's session everywhere, and its open terminals here."""
        check_origin(request, required=False)
        session = await self.sessions.authenticate(request)
        await self.auth.delete_web_session(session.user, session.id)
        self.sessions.forget(session.id)
        for ended in self._terminals.pop(session.id, ()):
            ended.set()
        response = web.json_response({})
        clear_cookie(response)
        return response

    async def web_renew(self, request: web.Request) -> web.Response:
        """Keep an open page's session alive, never past its certificates' expiry."""
        check_origin(request, required=False)
        session = await self.sessions.authenticate(request)
        session = await self.auth.renew_web_session(session.user, session.id)
        self.sessions.remember(session)
        return httpserver.json_answer(WebRenewAnswer(expires=session.idle_expires))

    async def web_context(self, request: web.Request) -> web.Response:
        """Tell the page who is logged in, the logins they may use and whether they administer
        (in a leaf cluster: its nodes only, the leaf's admin pages are the leaf's)."""
        leaf = self.site(request)
        session = await self.sessions.authenticate(request)
        access = RoleSet.of(session.roles, self._roles() or {})
        return httpserver.json_answer(WebContext(
            user=session.user, cluster=leaf or self.cluster_name, logins=session.logins,
            roles=session.roles, admin=not leaf and access.allows("user", "list"),
            audit=not leaf and access.allows("event", "list")))

    async def web_terminal(self, request: web.Request) -> web.StreamResponse:
        """Serve a terminal on a node (or a live session) over a websocket; a leaf's node is
        reached as `<node>.<leaf>` and checked against the leaf's host CA."""
        leaf = self.site(request)
        check_origin(request, required=True)
        session = await self.sessions.from_cookie(request)
        if session is None:
            raise AccessDenied("not logged in: log in again")
        target = _terminal_target(request)
        if not target.login:  # joining: any login of the user's reaches the node
            target = dataclasses.replace(target, login=session.logins[0])
        host_cas = self._host_cas() if not leaf else self.leaf_host_cas().get(leaf, ())
        if leaf:
            target = dataclasses.replace(target, node=f"{target.node}.{leaf}")
        if self._serve_ssh is None:
            raise NotFound("this proxy serves no terminals")
        ws = web.WebSocketResponse(max_msg_size=webterminal.MAX_MESSAGE, heartbeat=30.0)
        await ws.prepare(request)
        token = await webterminal.read_token(ws)
        try:
            check_token(session, token)
        except AccessDenied:
            await ws.close(code=webterminal.CLOSE_UNAUTHORIZED, message=b"not logged in")
            return ws
        ended = asyncio.Event()
        terminals = self._terminals.setdefault(session.id, set())
        terminals.add(ended)
        try:
            async with webterminal.connect(self._serve_ssh, session, target,
                                           _peer(request), host_cas,
                                           self.ssh_algorithms) as conn:
                await webterminal.serve(ws, conn, target, ended)
        except TeleportError as err:
            if not ws.closed:
                await ws.send_str(json.dumps({"type": "error", "message": str(err)}))
                await ws.close(code=webterminal.CLOSE_FAILED)
        finally:
            terminals.discard(ended)
            if not terminals:
                self._terminals.pop(session.id, None)
        return ws

    # --- tsh and the page ------------------------------------------------------------------

    async def list_nodes(self, request: web.Request) -> web.Response:
        """List the cluster's nodes for a logged-in user (`tsh ls`, the nodes page); a leaf's as
        its auth server lists them to the browser session's user."""
        if leaf := self.site(request):
            session = await self.sessions.authenticate(request)
            nodes = await webclusters.leaf_nodes(self, session, leaf)
            return httpserver.json_answer([NodeInfo.of(s) for s in nodes])
        user, roles, traits = await self.caller(request)
        defined = self._roles()
        if defined is None:  # the roles are not fetched yet: the auth server judges
            listed = await self.auth.list_servers("node", user=user)
        else:
            # As the nodes judge logins: the roles the user logged in with, as defined now. The
            # proxy's copy of the nodes answers during an auth outage too.
            access = RoleSet.of(roles, defined, traits)
            listed = [s for s in await self.auth.list_servers("node")
                      if access.can_see_node(s.all_labels())]
        nodes = sorted(listed,
                       key=lambda s: (s.spec.hostname, s.metadata.name))
        return httpserver.json_answer([NodeInfo.of(s) for s in nodes])

    async def list_recordings(self, request: web.Request) -> web.Response:
        """List the recorded sessions this user may play (`tsh recordings ls`)."""
        user = await self._user(request)
        self.check_cluster(request)
        return httpserver.json_answer(await self.auth.list_recordings(user))

    async def stream_recording(self, request: web.Request) -> web.StreamResponse:
        """Relay a recording's replay stream from the auth server as it arrives (`tsh play`)."""
        user = await self._user(request)
        self.check_cluster(request)
        pieces = self.auth.stream_recording(request.match_info["sid"], user)
        first = await anext(pieces, b"")  # refusals and missing sessions are still JSON errors
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(first)
        async for piece in pieces:
            await response.write(piece)
        await response.write_eof()
        return response

    async def list_active_sessions(self, request: web.Request) -> web.Response:
        """List the live sessions this user may join (`tsh sessions ls`, `tsh join`)."""
        user = await self._user(request)
        self.check_cluster(request)
        return httpserver.json_answer(await self.auth.list_active_sessions(user))

    def site(self, request: web.Request) -> str:
        """Read `/webapi/sites/{cluster}/...`: "" for ours, the name of a leaf whose tunnel is
        up here, or NotFound."""
        cluster = request.match_info["cluster"]
        if cluster == self.cluster_name:
            return ""
        if cluster in self.leaves():
            return cluster
        raise NotFound(f"cluster {cluster!r} not found")

    def check_cluster(self, request: web.Request) -> None:
        """Refuse a `/webapi/sites/{cluster}/...` path naming a cluster other than ours."""
        cluster = request.match_info["cluster"]
        if cluster != self.cluster_name:
            raise NotFound(f"cluster {cluster!r} not found")

    async def _user(self, request: web.Request) -> str:
        """Return the user a call speaks for: tsh's client certificate, else the web session."""
        return (await self.caller(request))[0]

    async def caller(self, request: web.Request
                      ) -> tuple[str, Sequence[str], Mapping[str, Sequence[str]]]:
        """Return the user a call speaks for and the roles and traits they logged in with."""
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            identity = self._user_identity(der)
            return identity.username, identity.roles, identity.traits
        if request.method in httpserver.STATE_CHANGING:
            check_origin(request, required=False)
        try:
            session = await self.sessions.authenticate(request)
        except AccessDenied:
            raise AccessDenied("a client certificate is required: run 'tsh login', "
                               "or log in to the web UI") from None
        return session.user, session.roles, {}

    def _user_identity(self, der: bytes) -> Identity:
        """Return the user in a verified client certificate, refusing hosts and stale certs."""
        identity = identity_from_cert(der)
        if identity.system_role:
            raise AccessDenied("this call is for users, not hosts")
        if identity.cluster != self.cluster_name:
            raise AccessDenied("the client certificate is for another cluster")
        if identity.expires is None or identity.expires <= self.clock.now():
            raise AccessDenied("the client certificate has expired: run 'tsh login'")
        reason = self._revoked(identity.username, der) if self._revoked is not None else None
        if reason is not None:
            raise AccessDenied(f"access revoked: {reason}")
        return identity

    async def _security_headers(self, request: web.Request,
                                response: web.StreamResponse) -> None:
        """Keep tokens and certificates out of caches, referrers and frames; and on HTTPS."""
        response.headers.setdefault("Content-Security-Policy", _JSON_CSP)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        if self.hsts:
            response.headers["Strict-Transport-Security"] = HSTS


# --- plumbing ------------------------------------------------------------------------------

@web.middleware
async def _json_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve a state-changing call only with a JSON body: a cross-site form cannot send one."""
    if request.method in httpserver.STATE_CHANGING and request.match_info.http_exception is None:
        httpserver.require_json(request)
    return await handler(request)


def _html(text: str, status: int, csp: str) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": csp})


def _token(token: str) -> str:
    if not _TOKEN_RE.fullmatch(token):
        raise NotFound("signup token not found or expired")
    return token


def _is_name(name: str) -> bool:
    """Tell whether a name (user, login, node) is safe in auth API paths and audit lines."""
    return bool(name) and name not in (".", "..") and len(name) <= 255 and \
        not any(c in _BAD_NAME_CHARS for c in name)


def _user_name(name: str) -> str:
    if not _is_name(name):
        raise BadParameter(f"invalid user name {name!r}")
    return name


def _peer(request: web.Request) -> tuple[str, int]:
    """Return the client's address and port ("", 0 when the transport has none)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return ("", 0)


def _remote_addr(request: web.Request) -> str:
    host, port = _peer(request)
    return str(HostPort(host, port)) if host else request.remote or ""


def _terminal_target(request: web.Request) -> webterminal.Target:
    """Read where a terminal goes from its query: node and login, or node and live session."""
    query = request.query
    node, login, sid = query.get("node", ""), query.get("login", ""), query.get("sid", "")
    if not _is_name(node):
        raise BadParameter("the terminal needs a node (its id or name)")
    if sid:
        check_sid(sid)
    elif not _is_name(login):
        raise BadParameter("the terminal needs a login")

    def size(name: str, default: int) -> int:
        value = query.get(name, "")
        return int(value) if value.isdigit() and len(value) <= 5 else default

    return webterminal.Target(node=node, login=login, cols=size("cols", 80),
                              rows=size("rows", 24), sid=sid)




__all__ = ["MAX_BODY", "WebProxy"]
