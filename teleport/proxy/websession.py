"""Browser sessions on the proxy: the cookie, the bearer token, the Origin check and a short cache.

A web session lives on the auth server (any proxy serves it; a logout or a user's deletion ends it
everywhere). The browser holds two halves: an `HttpOnly`, `SameSite=Strict` cookie naming the
session, and the session's bearer token, which the page reads from the shell the proxy renders
and sends as `Authorization: Bearer` on every API call. A cross-site page can make the browser
send neither: the cookie stays home and the token is unreadable across origins. So requiring
both is the CSRF protection; state-changing calls also check `Origin` when the browser sends it.

Admin pages and the audit log call the auth API as the user, with the session's own certificate
(`WebSessions.client`), so the auth server decides what the user may do, as for `tctl`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from teleport.api.auth_models import WebSession
from teleport.auth.client import AuthClient
from teleport.errors import AccessDenied, NotFound
from teleport.services.web_sessions import bearer_matches
from teleport.utils.clock import Clock

#: `__Host-`: the browser keeps it only if Secure, Path=/ and without Domain (no subdomain sets it).
COOKIE = "__Host-teleport-session"
#: How long a session read from the auth server is trusted before reading it again: a logout on
#: another proxy, or a user's deletion, reaches this one within this time (revocations sooner).
CACHE_SECONDS = 5.0
_NOT_LOGGED_IN = "not logged in: log in again"


def cookie_value(session: WebSession) -> str:
    """Return what the cookie holds: the user (base64url, as names may hold any character) and id."""
    name = base64.urlsafe_b64encode(session.user.encode()).decode().rstrip("=")
    return f"{name}.{session.id}"


def parse_cookie(value: str) -> tuple[str, str]:
    """Return (user, session id) from a cookie value, or raise AccessDenied."""
    name, _, sid = value.partition(".")
    try:
        user = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AccessDenied(_NOT_LOGGED_IN) from None
    if not user or not sid or len(sid) > 128 or not sid.isalnum():
        raise AccessDenied(_NOT_LOGGED_IN)
    return user, sid


def set_cookie(response: web.StreamResponse, session: WebSession) -> None:
    """Hand the browser the session's cookie, to live no longer than the session can."""
    response.set_cookie(COOKIE, cookie_value(session), path="/", secure=True, httponly=True,
                        samesite="Strict")


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


def bearer(request: web.Request) -> str:
    """Return the `Authorization: Bearer` token, or "" when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def check_origin(request: web.Request, *, required: bool) -> None:
    """Refuse a request whose `Origin` is another site's (required: a websocket upgrade)."""
    origin = request.headers.get("Origin")
    if origin is None:
        if required:
            raise AccessDenied("the request names no Origin")
        return
    if urlsplit(origin).netloc.lower() != request.host.lower():
        raise AccessDenied(f"cross-origin request from {origin!r} refused")


@functools.lru_cache(maxsize=1024)
def _tls_der(cert_pem: str) -> bytes:
    """The session certificate as the revocation check reads it (parsed once, not per call)."""
    return x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(Encoding.DER)


@dataclass
class _Cached:
    session: WebSession
    fetched: datetime


@dataclass
class _UserClient:
    client: AuthClient
    tls_cert: str
    #: Dropped once past: the session's idle expiry as last seen, or its certificates' end.
    lapses: datetime


class WebSessions:
    """Find the web session a browser request speaks for, checking it as often as it is used."""

    def __init__(self, auth: AuthClient, clock: Clock,
                 revoked: Callable[[str, bytes], str | None] | None = None) -> None:
        self.auth = auth
        self.clock = clock
        self._revoked = revoked
        self._cache: dict[str, _Cached] = {}
        #: Auth API clients holding each web session's certificate, by session id.
        self._clients: dict[str, _UserClient] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def remember(self, session: WebSession) -> None:
        """Keep a session the auth server just answered with (login, renew)."""
        self._cache[session.id] = _Cached(session, self.clock.now())
        if len(self._cache) > 10_000:  # expired entries of abandoned sessions
            now = self.clock.now()
            self._cache = {k: v for k, v in self._cache.items()
                           if (now - v.fetched).total_seconds() < CACHE_SECONDS}

    def forget(self, session_id: str) -> None:
        """Drop a session that ended (logout, expiry, refusal), and its auth API client."""
        self._cache.pop(session_id, None)
        self._drop_client(session_id)

    def client(self, session: WebSession) -> AuthClient:
        """Return an auth API client acting as the session's user with its own certificate.

        One per session, kept until the session ends here (`forget`), lapses, or the proxy
        closes; the auth server judges each call as for any certificate of that user.
        """
        now = self.clock.now()
        for sid in [sid for sid, c in self._clients.items() if c.lapses <= now]:
            self._drop_client(sid)
        lapses = min(session.idle_expires, session.expires)
        entry = self._clients.get(session.id)
        # The auth server is checked against the CAs the proxy trusts now, not those of the
        # session's login: a CA rotation's update_servers must not cut browser sessions off.
        cas = self.auth.tls_ca_pems or [ca.encode() for ca in session.tls_ca_certs]
        if entry is not None and entry.tls_cert == session.tls_cert:
            entry.lapses = lapses
            if entry.client.tls_ca_pems != cas:
                entry.client.use_tls(ca_pems=cas)
            return entry.client
        self._drop_client(session.id)
        client = AuthClient.from_tls(session.tls_cert.encode(),
                                     session.tls_private_key.encode(), cas, self.auth.addrs)
        self._clients[session.id] = _UserClient(client, session.tls_cert, lapses)
        return client

    def _drop_client(self, session_id: str) -> None:
        entry = self._clients.pop(session_id, None)
        if entry is not None:  # forget() is called from sync code: close in the background
            task = asyncio.get_running_loop().create_task(entry.client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every user's auth API client (the proxy is closing)."""
        for sid in list(self._clients):
            self._drop_client(sid)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def from_cookie(self, request: web.Request) -> WebSession | None:
        """Return the live session the request's cookie names, or None (no cookie, gone)."""
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        try:
            user, sid = parse_cookie(value)
            return await self._get(user, sid)
        except (AccessDenied, NotFound):
            return None

    async def authenticate(self, request: web.Request) -> WebSession:
        """Return the session of a browser API call: cookie and bearer token must both match."""
        value = request.cookies.get(COOKIE)
        token = bearer(request)
        if not value or not token:
            raise AccessDenied(_NOT_LOGGED_IN)
        user, sid = parse_cookie(value)
        try:
            session = await self._get(user, sid)
        except NotFound:
            raise AccessDenied(_NOT_LOGGED_IN) from None
        check_token(session, token)
        return session

    async def _get(self, user: str, sid: str) -> WebSession:
        cached = self._cache.get(sid)
        if cached is None or cached.session.user != user \
                or (self.clock.now() - cached.fetched).total_seconds() >= CACHE_SECONDS:
            try:
                session = await self.auth.get_web_session(user, sid)
            except (AccessDenied, NotFound):
                self.forget(sid)
                raise
            self.remember(session)
        else:
            session = cached.session
        self._check_live(session, self.clock.now())
        return session

    def _check_live(self, session: WebSession, now: datetime) -> None:
        if session.idle_expires <= now or session.expires <= now:
            self.forget(session.id)
            raise AccessDenied("your web session has expired: log in again")
        if self._revoked is not None:
            reason = self._revoked(session.user, _tls_der(session.tls_cert))
            if reason is not None:
                self.forget(session.id)
                raise AccessDenied(f"access revoked: {reason}")


def check_token(session: WebSession, token: str) -> None:
    """Compare a bearer token with the session's in constant time."""
    if not bearer_matches(session.bearer_token, token):
        raise AccessDenied(_NOT_LOGGED_IN)


__all__ = ["CACHE_SECONDS", "COOKIE", "WebSessions", "bearer", "check_origin",
           "check_token", "clear_cookie", "cookie_value", "parse_cookie", "set_cookie"]
