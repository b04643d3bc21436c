"""The one client of the auth API, used by proxies, nodes and tctl over mutual TLS."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote, urlencode

from teleport.api import listing_models as listing
from teleport.api import record_listings as records
from teleport.api.http import HTTPClient
from teleport.auth.client_mfa import MFACalls
from teleport.errors import BadParameter, ConnectionProblem
from teleport.keys.authname import auth_server_name
from teleport.keys.tlsconfig import ssl_client_context
from teleport.types.shapes import AuditEvent, ResourceJSON
from teleport.utils.addr import HostPort
from teleport.utils.duration import format_duration
from teleport.utils.lazy import lazy_module

if TYPE_CHECKING:  # pydantic's models load with the first call that sends or reads one: `tctl
    # nodes ls` and `users ls` read listings only (`listing_models`)
    from teleport.api import auth_models as m
    from teleport.api import presence_models as presence
    from teleport.auth.identity_file import IdentityFile
    from teleport.types import codec, trusted
    from teleport.types import resources as res
    from teleport.types import roles as role_models
    from teleport.types.resource import Resource
else:
    m = lazy_module("teleport.api.auth_models")
    presence = lazy_module("teleport.api.presence_models")
    codec = lazy_module("teleport.types.codec")
    res = lazy_module("teleport.types.resources")
    role_models = lazy_module("teleport.types.roles")
    trusted = lazy_module("teleport.types.trusted")

#: A watch stream without a line (pings included) for this long is taken for dead.
WATCH_SILENCE = 45.0
#: Watch lines are a name, or one host record or CA's public keys; a longer one is not from a
#: Teleport auth server.
MAX_WATCH_LINE = 1024 * 1024


class AuthClient(MFACalls):
    """Call the auth servers of one cluster, accepting only a server that proves the auth role.

    Every connection checks the server's certificate for `auth_server_name(cluster)`, which the
    auth server alone is issued: a user's, node's or proxy's certificate of the same CA fails.
    """

    def __init__(self, addrs: list[HostPort], ssl_context: ssl.SSLContext,
                 timeout: float = 30.0, *, cluster: str) -> None:
        if not addrs:
            raise ConnectionProblem("no auth server address configured")
        self.server_name = auth_server_name(cluster)
        self._http = HTTPClient(addrs, ssl_context, peer="auth server", timeout=timeout,
                                server_hostname=self.server_name)
        self._addrs = list(addrs)
        #: The certificate, key and trusted CAs (PEM) behind the context, when known
        #: (`from_identity`), so that `use_tls` can change one of them.
        self._tls: tuple[bytes | None, bytes | None, list[bytes]] | None = None

    @property
    def addrs(self) -> list[HostPort]:
        """The auth servers tried in order (settable: a host learns new ones)."""
        return self._addrs

    @addrs.setter
    def addrs(self, addrs: list[HostPort]) -> None:
        self._addrs = list(addrs)
        self._http.addrs = [str(a) for a in addrs]

    @classmethod
    def from_identity(cls, identity: IdentityFile, addrs: list[HostPort]) -> Self:
        return cls.from_tls(identity.tls_cert.encode(), identity.tls_private_key.encode(),
                            [c.encode() for c in identity.tls_ca_certs], addrs,
                            cluster=identity.cluster_name())

    @classmethod
    def from_tls(cls, cert: bytes, key: bytes, ca_pems: Sequence[bytes],
                 addrs: list[HostPort], *, cluster: str = "") -> Self:
        """Call as the holder of this certificate (PEM) and key, trusting these TLS CAs; the
        cluster is the certificate's (read from it unless given). `use_tls` may change any of
        the three later."""
        if not cluster:
            from teleport.keys.tls import identity_from_cert

            cluster = identity_from_cert(cert).cluster
        client = cls(addrs, ssl_client_context(cert, key, ca_pems), cluster=cluster)
        client._tls = (cert, key, list(ca_pems))
        return client

    @property
    def tls_ca_pems(self) -> list[bytes]:
        """The TLS CA certificates the auth server is checked against now ([] if unknown)."""
        return list(self._tls[2]) if self._tls is not None else []

    def use_tls(self, *, cert: bytes | None = None, key: bytes | None = None,
                ca_pems: Sequence[bytes] | None = None) -> None:
        """Present another certificate and/or trust other TLS CAs on new connections (a CA
        rotation: the host's re-issued identity, the CA's new trusted certificates); calls and
        streams under way finish on the connections they have."""
        if self._tls is None:
            raise BadParameter("this auth client was not made from an identity: its "
                               "credentials cannot be changed")
        old_cert, old_key, old_cas = self._tls
        if (cert is None) != (key is None):
            raise BadParameter("a new certificate needs its key, and a new key its certificate")
        new = (cert or old_cert, key or old_key, list(ca_pems) if ca_pems is not None else old_cas)
        self._http.set_ssl_context(ssl_client_context(*new))
        self._tls = new

    async def __aenter__(self) -> AuthClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request, trying each auth server in order until one answers."""
        return await self._http.call(method, path, body)

    async def ping(self) -> m.PingAnswer:
        return await self._http.call("GET", "/v1/ping", answer=m.PingAnswer)

    async def cluster_status(self) -> listing.ClusterStatus:
        """Return the cluster's name, version, CA pin and online servers (admins only)."""
        return await self._http.call("GET", "/v1/status", answer=listing.ClusterStatus)

    async def get_ca(self, ca_type: str) -> res.CertAuthority:
        return _typed(await self.call("GET", f"/v1/authorities/{_q(ca_type)}"), res.CertAuthority)

    async def list_cas(self, ca_type: str) -> list[res.CertAuthority]:
        """Every CA of a type: this cluster's and the trusted clusters' (public halves)."""
        return [_typed(ca, res.CertAuthority) for ca in await self._http.call(
            "GET", f"/v1/authorities?type={_q(ca_type)}", answer=list[ResourceJSON])]

    # --- trusted clusters (teleport.auth.api_trust) -------------------------------------------

    async def validate_trusted_cluster(self, request: m.TrustedClusterValidation
                                       ) -> m.TrustedClusterValidationAnswer:
        """Relay a leaf's request to trust us (the root's proxy, for its web route)."""
        return await self._http.call("POST", "/v1/trustedclusters/validate", request,
                                     answer=m.TrustedClusterValidationAnswer)

    async def leaf_tunnels(self) -> list[m.LeafTunnel]:
        """The roots this (leaf) cluster's proxies keep tunnels to."""
        return await self._http.call("GET", "/v1/trustedclusters/tunnels",
                                     answer=list[m.LeafTunnel])

    async def remote_cluster_heartbeat(self, name: str) -> None:
        await self._http.call("POST", f"/v1/remoteclusters/{_q(name)}/heartbeat", {})

    async def update_leaf_cas(self, name: str, cas: Any) -> None:
        """Report a leaf's CAs as its proxy told them over the tunnel (a root's proxy)."""
        await self._http.call("PUT", f"/v1/remoteclusters/{_q(name)}/authorities",
                              {"certificate_authorities": cas})

    async def list_remote_clusters(self) -> list[trusted.RemoteCluster]:
        return [_typed(rc, trusted.RemoteCluster) for rc in await self._http.call(
            "GET", "/v1/remoteclusters", answer=list[ResourceJSON])]

    async def rotate(self, ca_type: str, *, mode: str, phase: str | None,
                     grace_period: str | None) -> list[res.CertAuthority]:
        """Start, step or roll back CA rotations (`tctl auth rotate`); the CAs as changed."""
        body = {"type": ca_type, "mode": mode, "phase": phase, "grace_period": grace_period}
        answer = await self.call("POST", "/v1/authorities/rotate", body)
        if not isinstance(answer, list):
            raise ConnectionProblem("auth server answered a rotation with something else than a list")
        return [_typed(item, res.CertAuthority) for item in answer]

    async def list_users(self) -> list[res.User]:
        return [_typed(u, res.User) for u in await self._http.call(
            "GET", "/v1/users", answer=list[ResourceJSON])]

    async def list_user_records(self) -> list[records.UserRecord]:
        """The users' names, roles and traits only (`tctl users ls`: no resource models)."""
        return await self._http.call("GET", "/v1/users", answer=list[records.UserRecord])

    async def get_user(self, name: str) -> res.User:
        return _typed(await self.call("GET", f"/v1/users/{_q(name)}"), res.User)

    async def upsert_user(self, user: res.User) -> res.User:
        return _typed(await self.call("PUT", "/v1/users", codec.to_dict(user)), res.User)

    async def delete_user(self, name: str) -> None:
        await self._http.call("DELETE", f"/v1/users/{_q(name)}", answer=m.Empty)

    async def unlock_user(self, name: str) -> None:
        """Clear a user's lock, failed-login lockout included, and their failed logins."""
        await self._http.call("POST", f"/v1/users/{_q(name)}/unlock", answer=m.Empty)

    async def create_user_signup(self, name: str, logins: list[str], roles: list[str],
                                 ttl: timedelta | None = None) -> res.UserToken:
        """Create a user and their signup link, valid for ttl (default 1h, at most 48h)."""
        body = m.SignupRequest(name=name, logins=logins, roles=roles,
                               ttl=format_duration(ttl) if ttl is not None else None)
        return _typed(await self.call("POST", "/v1/users/signup", body), res.UserToken)

    async def reset_user(self, name: str) -> res.UserToken:
        """Clear a user's password and OTP device; the answer's name is the 8h reset link's."""
        return _typed(await self.call("POST", f"/v1/users/{_q(name)}/reset"), res.UserToken)

    async def get_signup(self, token: str) -> m.SignupInfo:
        return await self._http.call("GET", f"/v1/signup/{_q(token)}", answer=m.SignupInfo)

    async def complete_signup(self, token: str, password: str, otp_code: str) -> res.User:
        body = m.CompleteSignupRequest(password=password, otp_code=otp_code)
        return _typed(await self.call("POST", f"/v1/signup/{_q(token)}/complete", body), res.User)

    async def authenticate_ssh(self, user: str, *, password: str, otp_code: str,
                               ssh_public_key: str, tls_public_key: bytes,
                               ttl: timedelta | None, remote_addr: str) -> m.IssuedCerts:
        body = m.LoginRequest(password=password, otp_code=otp_code, ssh_public_key=ssh_public_key,
                              tls_public_key=tls_public_key.decode(), remote_addr=remote_addr,
                              ttl=format_duration(ttl) if ttl else "")
        return await self._http.call("POST", f"/v1/users/{_q(user)}/ssh/authenticate", body,
                                     answer=m.IssuedCerts)

    async def list_tokens(self) -> tuple[list[res.ProvisionToken], list[res.UserToken]]:
        data = await self._http.call("GET", "/v1/tokens", answer=m.TokenList)
        return ([_typed(t, res.ProvisionToken) for t in data.provision],
                [_typed(t, res.UserToken) for t in data.signup])

    async def search_events(self, since: datetime, until: datetime, types: list[str], user: str,
                            limit: int, start_key: str = "", *, text: str = "",
                            newest_first: bool = False) -> tuple[list[AuditEvent], str]:
        """Return one page of audit events, oldest first (or newest), and the key of the next
        page ("" = done); text: a case-insensitive substring of the event's JSON."""
        stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
        params = {"from": since.astimezone(timezone.utc).strftime(stamp),
                  "to": until.astimezone(timezone.utc).strftime(stamp), "type": ",".join(types),
                  "user": user, "limit": str(limit), "start_key": start_key}
        if text:
            params["q"] = text
        if newest_first:
            params["order"] = "desc"
        page = await self._http.call("GET", "/v1/events?" + urlencode(params), answer=m.EventPage)
        return page.events, page.next_key

    async def create_token(self, roles: list[str], ttl: timedelta, token: str | None) -> res.ProvisionToken:
        body = m.TokenRequest(roles=roles, ttl=format_duration(ttl), token=token or "")
        return _typed(await self.call("POST", "/v1/tokens", body), res.ProvisionToken)

    async def delete_token(self, token: str) -> None:
        await self._http.call("DELETE", f"/v1/tokens/{_q(token)}", answer=m.Empty)

    async def upsert_server(self, server: res.Server) -> None:
        await self._http.call("PUT", "/v1/servers", codec.to_dict(server), answer=m.Empty)

    async def keep_alive_server(self, kind: str, name: str, expires: datetime) -> None:
        """Extend this host's unchanged record to expires; NotFound when it is gone."""
        body = presence.ServerKeepAlive(kind=kind, name=name, expires=expires)  # type: ignore[arg-type]
        await self._http.call("PUT", "/v1/servers/keepalive", body, answer=m.Empty)

    async def list_servers(self, kind: str = "node", user: str = "") -> list[res.Server]:
        """List live hosts of kind; the nodes a user's roles reach for a user (a proxy names
        the user it asks for)."""
        query = f"?user={_q(user)}" if user else ""
        return [_typed(s, res.Server) for s in await self._http.call(
            "GET", f"/v1/servers/{_q(kind)}{query}", answer=list[ResourceJSON])]

    async def list_nodes(self) -> list[listing.NodeInfo]:
        """The live nodes as lists show them (`tctl nodes ls`, `tsh ls --cluster`: no resource
        models)."""
        hosts = await self._http.call("GET", "/v1/servers/node", answer=list[records.HostRecord])
        return [listing.NodeInfo.of(host) for host in hosts]

    # --- resources of every registry kind (teleport.auth.api_resources) ----------------------

    async def list_resources(self, kind: str, *, with_secrets: bool = False) -> list[Resource]:
        """List the resources of a kind (`role`, `roles`...) the caller may list; a connector's
        client secret only `with_secrets`."""
        return [codec.from_dict(r, "auth server response") for r in await self._http.call(
            "GET", f"/v1/resources/{_q(kind)}{_secrets(with_secrets)}",
            answer=list[ResourceJSON])]

    async def get_resource(self, kind: str, name: str, *, with_secrets: bool = False) -> Resource:
        return codec.from_dict(await self.call(
            "GET", f"/v1/resources/{_q(kind)}/{_q(name)}{_secrets(with_secrets)}"),
            "auth server response")

    async def put_resource(self, resource: Resource, *, overwrite: bool) -> Resource:
        """Create a resource, or replace it with overwrite; AlreadyExists otherwise."""
        path = f"/v1/resources/{_q(resource.kind)}?overwrite={'true' if overwrite else 'false'}"
        return codec.from_dict(await self.call("PUT", path, codec.to_dict(resource)), "auth server response")

    async def delete_resource(self, kind: str, name: str) -> None:
        await self._http.call("DELETE", f"/v1/resources/{_q(kind)}/{_q(name)}", answer=m.Empty)

    async def list_roles(self) -> list[role_models.Role]:
        """Return every role (Node and Proxy: their role cache)."""
        return [_typed(r, role_models.Role) for r in await self._http.call(
            "GET", "/v1/roles", answer=list[ResourceJSON])]

    async def watch(self, kinds: Sequence[str], since: str = "") -> AsyncIterator[m.WatchEvent]:
        """Yield a `put` per resource of the kinds stored now, `init`, then a `put` or `delete`
        per change (Node and Proxy; locks, roles and users by name only: re-read what matters).
        With since (the last `revision` applied), `init` may come `resumed` with no snapshot.
        The stream never ends well: a break, an end, a garbled line or WATCH_SILENCE seconds
        without a line (pings included) is a ConnectionProblem."""
        query = urlencode({"kinds": ",".join(kinds)} | ({"since": since} if since else {}))
        pieces = self._http.stream("GET", f"/v1/watch?{query}", idle=WATCH_SILENCE)
        try:
            async for event in _watch_events(pieces):
                if event.type != "ping":
                    yield event
        finally:
            await pieces.aclose()

    async def emit(self, event: Any) -> None:
        """Send an audit event; makes the client an events.Emitter for nodes and proxies."""
        await self._http.call("POST", "/v1/events", dict(event), answer=m.Empty)

    # --- session recordings (teleport.auth.api_sessions) -----------------------------------

    async def upload_recording(self, sid: str, parts: dict[str, Path]) -> bool:
        """Upload a recording's files; return False when the auth server already had it."""
        base = f"/v1/sessions/{_q(sid)}/recording"
        if (await self._http.call("GET", base, answer=m.Stored)).stored:
            return False
        for part, path in parts.items():
            await self._stream_up(f"{base}/{_q(part)}", path)
        return (await self._http.call("POST", f"{base}/complete", answer=m.Stored)).stored

    async def _stream_up(self, path: str, source: Path) -> None:
        """PUT a file's bytes piece by piece (read afresh for each auth server tried)."""
        await self._http.upload("PUT", path, functools.partial(_file_pieces, source),
                                answer=m.Empty)

    async def stream_recording_part(self, sid: str, part: str,
                                    pieces: AsyncIterator[bytes]) -> None:
        """Send one part of a recording while it is written (`*-sync` modes); no time limit.

        The pieces can be sent once: if they break off mid-way the part is lost, and the
        recorder ends the session rather than store a recording with a hole.
        """
        sent = False

        async def tracked() -> AsyncIterator[bytes]:
            nonlocal sent
            async for piece in pieces:
                sent = True
                yield piece

        def body() -> AsyncIterator[bytes]:
            # The next auth server may take the part only if this one never got a byte of it.
            if sent:
                raise ConnectionProblem(f"the recording stream of session {sid} broke off")
            return tracked()

        await self._http.upload("PUT", f"/v1/sessions/{_q(sid)}/recording/{_q(part)}", body,
                                answer=m.Empty, streamed=True)

    async def complete_recording(self, sid: str) -> bool:
        """Commit a streamed recording; False when the auth server already had it."""
        return (await self._http.call("POST", f"/v1/sessions/{_q(sid)}/recording/complete",
                                      answer=m.Stored)).stored

    async def list_recordings(self, user: str = "") -> list[listing.RecordingInfo]:
        """List the recordings user may play (a proxy names the user; others are themselves)."""
        query = f"?user={_q(user)}" if user else ""
        return await self._http.call("GET", f"/v1/sessions{query}",
                                     answer=list[listing.RecordingInfo])

    def stream_recording(self, sid: str, user: str = "") -> AsyncIterator[bytes]:
        """Yield a recording's replay stream (JSON lines) as it arrives.

        Once a byte has arrived, a break is a ConnectionProblem: the replay is never started
        again on another auth server, so it is neither duplicated nor silently cut short.
        """
        query = f"?user={_q(user)}" if user else ""
        return self._http.stream("GET", f"/v1/sessions/{_q(sid)}/stream{query}")

    # --- live sessions (teleport.auth.api_sessions) ------------------------------------------

    async def announce_session(self, sid: str, session: m.AnnouncedSession) -> None:
        """List (or refresh) a live session of this node, so users can find and join it."""
        await self._http.call("PUT", f"/v1/active_sessions/{_q(sid)}", session, answer=m.Empty)

    async def end_session(self, sid: str) -> None:
        """Stop listing a live session of this node."""
        await self._http.call("DELETE", f"/v1/active_sessions/{_q(sid)}", answer=m.Empty)

    async def list_active_sessions(self, user: str = "") -> list[listing.ActiveSession]:
        """List the live sessions user may join (a proxy names the user; others are themselves)."""
        query = f"?user={_q(user)}" if user else ""
        return await self._http.call("GET", f"/v1/active_sessions{query}",
                                     answer=list[listing.ActiveSession])

    # --- a host's own certificates (teleport.auth.api_hosts) ---------------------------------

    async def reissue_host_certs(self, *, nodename: str, ssh_public_key: str,
                                 tls_public_key: bytes, addresses: list[str]) -> m.IssuedCerts:
        """Get this host's certificates again for new keys, signed by the CAs' active keys
        (Node and Proxy, following a CA rotation); UUID and role are our certificate's."""
        body = m.HostCertsRequest(nodename=nodename, ssh_public_key=ssh_public_key,
                                  tls_public_key=tls_public_key.decode(), addresses=addresses)
        return await self._http.call("POST", "/v1/hosts/certs", body, answer=m.IssuedCerts)

    # --- recording proxy (teleport.auth.api_proxy) -------------------------------------------

    async def node_cert_for_proxy(self, node_id: str, public_key: str) -> str:
        """Get a short-lived host certificate for a registered node's names (Proxy only)."""
        body = m.NodeCertRequest(node=node_id, public_key=public_key)
        return (await self._http.call("POST", "/v1/proxy/hostcert", body, answer=m.CertAnswer)).cert

    async def user_cert_for_proxy(self, cert: str, public_key: str) -> str:
        """Get a short-lived copy of a user's certificate for our key (Proxy only)."""
        body = m.UserCertRequest(cert=cert, public_key=public_key)
        return (await self._http.call("POST", "/v1/proxy/usercert", body, answer=m.CertAnswer)).cert

    # --- single sign-on (teleport.auth.api_sso) ---------------------------------------------

    async def start_sso_login(self, kind: str, body: m.SSOLoginStart) -> m.SSOLoginStarted:
        """Start a GitHub or OIDC login; answers the provider URL to send the browser to."""
        return await self._http.call("POST", f"/v1/sso/{_q(kind)}/requests", body,
                                     answer=m.SSOLoginStarted)

    async def complete_sso_login(self, kind: str, body: m.SSOCallback) -> m.SSOCallbackDone:
        """Relay what the provider sent to the proxy's callback (Proxy only)."""
        return await self._http.call("POST", f"/v1/sso/{_q(kind)}/callback", body,
                                     answer=m.SSOCallbackDone)

    # --- web sessions (teleport.auth.api_web) ------------------------------------------------

    async def create_web_session(self, user: str, password: str, otp_code: str,
                                 remote_addr: str) -> m.WebSession:
        """Log a browser user in; the session carries the keys to act as them (Proxy only)."""
        body = m.WebSessionCreate(password=password, otp_code=otp_code, remote_addr=remote_addr)
        return await self._http.call("POST", f"/v1/users/{_q(user)}/web/sessions", body,
                                     answer=m.WebSession)

    async def get_web_session(self, user: str, session_id: str) -> m.WebSession:
        """Return a live web session; NotFound when gone, AccessDenied when the user is not."""
        return await self._http.call("GET", _web_session_path(user, session_id),
                                     answer=m.WebSession)

    async def renew_web_session(self, user: str, session_id: str) -> m.WebSession:
        """Push a web session's idle expiry forward (never past its `expires`)."""
        return await self._http.call("POST", _web_session_path(user, session_id) + "/renew",
                                     answer=m.WebSession)

    async def delete_web_session(self, user: str, session_id: str) -> None:
        """Log a web session out; deleting one already gone succeeds."""
        await self._http.call("DELETE", _web_session_path(user, session_id), answer=m.Empty)


async def _watch_events(pieces: AsyncGenerator[bytes]) -> AsyncIterator[m.WatchEvent]:
    """Cut the stream's pieces into lines (a line may arrive in several pieces) and decode them."""
    buffer = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WATCH_SILENCE
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                piece = await anext(pieces)
        except StopAsyncIteration:
            raise ConnectionProblem("the auth server ended the watch stream") from None
        except TimeoutError:
            raise ConnectionProblem(f"the auth server's watch stream said nothing for "
                                    f"{WATCH_SILENCE:.0f} s") from None
        buffer += piece
        *lines, buffer = buffer.split(b"\n")
        if len(buffer) > MAX_WATCH_LINE:
            raise ConnectionProblem(f"the auth server's watch stream sent a line over "
                                    f"{MAX_WATCH_LINE // 1024} KiB: not a Teleport auth server?")
        for line in lines:
            try:
                event = m.WatchEvent.model_validate_json(line)
            except ValueError:
                raise ConnectionProblem("the auth server's watch stream sent a line that is not "
                                        f"a watch event: {line[:80]!r}") from None
            deadline = loop.time() + WATCH_SILENCE
            yield event


async def _file_pieces(path: Path, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """Read a file piece by piece off the event loop, so an upload never holds it whole."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while piece := await asyncio.to_thread(f.read, size):
            yield piece
    finally:
        f.close()


def _web_session_path(user: str, session_id: str) -> str:
    return f"/v1/users/{_q(user)}/web/sessions/{_q(session_id)}"


def _secrets(wanted: bool) -> str:
    return "?with_secrets=true" if wanted else ""


def _q(part: str) -> str:
    """Quote one path segment so a name can never change which route is called."""
    return quote(part, safe="")


def _typed(data: Any, model: type[Any]) -> Any:
    resource: Resource = codec.from_dict(data, "auth server response")
    if not isinstance(resource, model):
        raise ConnectionProblem(f"auth server answered with a {resource.kind}, not {model.__name__}")
    return resource
