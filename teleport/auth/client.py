"""The one client of the auth API, used by proxies, nodes and tctl over mutual TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlencode

import aiohttp

from teleport.auth.identity_file import IdentityFile
from teleport.auth.server import IssuedCerts
from teleport.errors import ConnectionProblem, from_wire
from teleport.keys.tls import auth_server_name, identity_from_cert, ssl_client_context
from teleport.types.codec import from_dict, to_dict
from teleport.types.resource import Resource
from teleport.types.resources import CertAuthority, ProvisionToken, Server, User, UserToken
from teleport.utils.addr import HostPort
from teleport.utils.duration import format_duration


class AuthClient:
    """Call the auth servers of one cluster, accepting only a server that proves the auth role.

    Every connection checks the server's certificate for `auth_server_name(cluster)`, which the
    auth server alone is issued: a user's, node's or proxy's certificate of the same CA fails.
    """

    def __init__(self, addrs: list[HostPort], ssl_context: ssl.SSLContext,
                 timeout: float = 30.0, *, cluster: str) -> None:
        if not addrs:
            raise ConnectionProblem("no auth server address configured")
        self.addrs = addrs
        self.server_name = auth_server_name(cluster)
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=5)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_identity(cls, identity: IdentityFile, addrs: list[HostPort]) -> Self:
        ctx = ssl_client_context(identity.tls_cert.encode(), identity.tls_private_key.encode(),
                                 [c.encode() for c in identity.tls_ca_certs])
        return cls(addrs, ctx, cluster=identity_cluster(identity))

    async def __aenter__(self) -> AuthClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request, trying each auth server in order until one answers."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl))
        problems = []
        for addr in self.addrs:
            url = f"https://{addr}{path}"
            try:
                async with self._session.request(method, url, json=body,
                                                 server_hostname=self.server_name) as resp:
                    data = await resp.json(content_type=None)
                    if resp.status >= 400:
                        err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                        raise from_wire(err.get("code", ""), err.get("message", resp.reason or ""))
                    return data
            except (aiohttp.ClientConnectionError, TimeoutError, ssl.SSLError) as exc:
                problems.append(f"{addr}: {exc or type(exc).__name__}")
        raise ConnectionProblem("cannot reach the auth server: " + "; ".join(problems))

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/v1/ping")
        return result

    async def get_ca(self, ca_type: str) -> CertAuthority:
        return _typed(await self.call("GET", f"/v1/authorities/{_q(ca_type)}"), CertAuthority)

    async def list_users(self) -> list[User]:
        return [_typed(u, User) for u in await self.call("GET", "/v1/users")]

    async def get_user(self, name: str) -> User:
        return _typed(await self.call("GET", f"/v1/users/{_q(name)}"), User)

    async def upsert_user(self, user: User) -> User:
        return _typed(await self.call("PUT", "/v1/users", to_dict(user)), User)

    async def delete_user(self, name: str) -> None:
        await self.call("DELETE", f"/v1/users/{_q(name)}")

    async def create_user_signup(self, name: str, logins: list[str], roles: list[str]) -> UserToken:
        body = {"name": name, "logins": logins, "roles": roles}
        return _typed(await self.call("POST", "/v1/users/signup", body), UserToken)

    async def get_signup(self, token: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", f"/v1/signup/{_q(token)}")
        return result

    async def complete_signup(self, token: str, password: str, otp_code: str) -> User:
        body = {"password": password, "otp_code": otp_code}
        return _typed(await self.call("POST", f"/v1/signup/{_q(token)}/complete", body), User)

    async def authenticate_ssh(self, user: str, *, password: str, otp_code: str,
                               ssh_public_key: str, tls_public_key: bytes,
                               ttl: timedelta | None, remote_addr: str) -> IssuedCerts:
        body = {"password": password, "otp_code": otp_code, "ssh_public_key": ssh_public_key,
                "tls_public_key": tls_public_key.decode(), "remote_addr": remote_addr,
                "ttl": format_duration(ttl) if ttl else ""}
        data = await self.call("POST", f"/v1/users/{_q(user)}/ssh/authenticate", body)
        return IssuedCerts(**data)

    async def list_tokens(self) -> tuple[list[ProvisionToken], list[UserToken]]:
        data = await self.call("GET", "/v1/tokens")
        return ([_typed(t, ProvisionToken) for t in data["provision"]],
                [_typed(t, UserToken) for t in data["signup"]])

    async def search_events(self, since: datetime, until: datetime, types: list[str], user: str,
                            limit: int, start_key: str = "") -> tuple[list[dict[str, Any]], str]:
        """Return one page of audit events, oldest first, and the key of the next page ("" = done)."""
        stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
        params = {"from": since.astimezone(timezone.utc).strftime(stamp),
                  "to": until.astimezone(timezone.utc).strftime(stamp), "type": ",".join(types),
                  "user": user, "limit": str(limit), "start_key": start_key}
        data = await self.call("GET", "/v1/events?" + urlencode(params))
        return list(data["events"]), str(data["next_key"])

    async def create_token(self, roles: list[str], ttl: timedelta, token: str | None) -> ProvisionToken:
        body = {"roles": roles, "ttl": format_duration(ttl), "token": token or ""}
        return _typed(await self.call("POST", "/v1/tokens", body), ProvisionToken)

    async def delete_token(self, token: str) -> None:
        await self.call("DELETE", f"/v1/tokens/{_q(token)}")

    async def upsert_server(self, server: Server) -> None:
        await self.call("PUT", "/v1/servers", to_dict(server))

    async def list_servers(self, kind: str = "node") -> list[Server]:
        return [_typed(s, Server) for s in await self.call("GET", f"/v1/servers/{_q(kind)}")]

    async def emit(self, event: Any) -> None:
        """Send an audit event; makes the client an events.Emitter for nodes and proxies."""
        await self.call("POST", "/v1/events", dict(event))

    # --- session recordings (teleport.auth.api_sessions) -----------------------------------

    async def upload_recording(self, sid: str, parts: dict[str, Path]) -> bool:
        """Upload a recording's files; return False when the auth server already had it."""
        base = f"/v1/sessions/{_q(sid)}/recording"
        if (await self.call("GET", base))["stored"]:
            return False
        for part, path in parts.items():
            await self._stream_up(f"{base}/{_q(part)}", path)
        return bool((await self.call("POST", f"{base}/complete"))["stored"])

    async def _stream_up(self, path: str, source: Path) -> None:
        """PUT a file's bytes piece by piece to the first auth server that answers."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl))
        problems = []
        for addr in self.addrs:
            try:
                async with self._session.put(f"https://{addr}{path}", data=_file_pieces(source),
                                             server_hostname=self.server_name) as resp:
                    if resp.status >= 400:
                        err = (await resp.json(content_type=None) or {}).get("error", {})
                        raise from_wire(err.get("code", ""), err.get("message", resp.reason or ""))
                    return
            except (aiohttp.ClientConnectionError, TimeoutError, ssl.SSLError) as exc:
                problems.append(f"{addr}: {exc or type(exc).__name__}")
        raise ConnectionProblem("cannot reach the auth server: " + "; ".join(problems))

    async def list_recordings(self, user: str = "") -> list[dict[str, Any]]:
        """List the recordings user may play (a proxy names the user; others are themselves)."""
        query = f"?user={_q(user)}" if user else ""
        result: list[dict[str, Any]] = await self.call("GET", f"/v1/sessions{query}")
        return result

    async def stream_recording(self, sid: str, user: str = "") -> AsyncIterator[bytes]:
        """Yield a recording's replay stream (JSON lines) as it arrives."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl))
        query = f"?user={_q(user)}" if user else ""
        path = f"/v1/sessions/{_q(sid)}/stream{query}"
        # Replays can be long: only connecting is bounded by the usual timeout.
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=self._timeout.total)
        problems = []
        for addr in self.addrs:
            try:
                async with self._session.get(f"https://{addr}{path}", timeout=timeout,
                                             server_hostname=self.server_name) as resp:
                    if resp.status >= 400:
                        err = (await resp.json(content_type=None) or {}).get("error", {})
                        raise from_wire(err.get("code", ""), err.get("message", resp.reason or ""))
                    async for piece in resp.content.iter_any():
                        yield piece
                    return
            except (aiohttp.ClientConnectionError, TimeoutError, ssl.SSLError) as exc:
                problems.append(f"{addr}: {exc or type(exc).__name__}")
        raise ConnectionProblem("cannot reach the auth server: " + "; ".join(problems))

    # --- live sessions (teleport.auth.api_sessions) ------------------------------------------

    async def announce_session(self, session: dict[str, Any]) -> None:
        """List (or refresh) a live session of this node, so users can find and join it."""
        await self.call("PUT", f"/v1/active_sessions/{_q(session['sid'])}", session)

    async def end_session(self, sid: str) -> None:
        """Stop listing a live session of this node."""
        await self.call("DELETE", f"/v1/active_sessions/{_q(sid)}")

    async def list_active_sessions(self, user: str = "") -> list[dict[str, Any]]:
        """List the live sessions user may join (a proxy names the user; others are themselves)."""
        query = f"?user={_q(user)}" if user else ""
        result: list[dict[str, Any]] = await self.call("GET", f"/v1/active_sessions{query}")
        return result

    # --- recording proxy (teleport.auth.api_proxy) -------------------------------------------

    async def node_cert_for_proxy(self, node_id: str, public_key: str) -> str:
        """Get a short-lived host certificate for a registered node's names (Proxy only)."""
        result = await self.call("POST", "/v1/proxy/hostcert", {"node": node_id, "public_key": public_key})
        return str(result["cert"])

    async def user_cert_for_proxy(self, cert: str, public_key: str) -> str:
        """Get a short-lived copy of a user's certificate for our key (Proxy only)."""
        result = await self.call("POST", "/v1/proxy/usercert", {"cert": cert, "public_key": public_key})
        return str(result["cert"])


async def _file_pieces(path: Path, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """Read a file piece by piece off the event loop, so an upload never holds it whole."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while piece := await asyncio.to_thread(f.read, size):
            yield piece
    finally:
        f.close()


def identity_cluster(identity: IdentityFile) -> str:
    """Return the cluster an identity belongs to, read from its own certificate."""
    return identity_from_cert(identity.tls_cert.encode()).cluster


def _q(part: str) -> str:
    """Quote one path segment so a name can never change which route is called."""
    return quote(part, safe="")


def _typed(data: Any, model: type[Any]) -> Any:
    resource: Resource = from_dict(data, "auth server response")
    if not isinstance(resource, model):
        raise ConnectionProblem(f"auth server answered with a {resource.kind}, not {model.__name__}")
    return resource
