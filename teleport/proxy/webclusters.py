"""The proxy's web routes of trusted clusters:

- `POST /webapi/trustedclusters/validate`: a leaf's auth server asks to trust this cluster with
  a `trusted_cluster` token (no login: the token is the credential, relayed to the auth server
  with the caller's address; rate-limited per address as logins are);
- `GET /webapi/sites`: the clusters a logged-in user may pick, this one and its leaves, with
  their status (`tsh clusters`, the web UI's picker).

A browser session lists a leaf's nodes with its own certificate, from the leaf's auth server,
the way `tsh ls --cluster` does: through this proxy's own web port, whose auth relay sends TLS
naming the leaf's auth server over the leaf's tunnel (`leaf_nodes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from teleport.api import httpserver
from teleport.api.auth_models import TrustedClusterValidation, WebSession
from teleport.api.web_models import ClusterInfo
from teleport.auth.client import AuthClient
from teleport.errors import ConnectionProblem, NotFound
from teleport.keys.tlsconfig import ssl_client_context
from teleport.types.resources import Server

if TYPE_CHECKING:
    from teleport.proxy.web import WebProxy


class WebClusters:
    def __init__(self, proxy: WebProxy) -> None:
        self.proxy = proxy

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/webapi/trustedclusters/validate", self.validate)
        app.router.add_get("/webapi/sites", self.sites)

    async def validate(self, request: web.Request) -> web.Response:
        self.proxy.login_limiter.check(request.remote or "")
        body = httpserver.parse_model(TrustedClusterValidation,
                                      await httpserver.read_json(request))
        body = body.model_copy(update={"remote_addr": request.remote or ""})
        answer = await self.proxy.auth.validate_trusted_cluster(body)
        return httpserver.json_answer(answer)

    async def sites(self, request: web.Request) -> web.Response:
        await self.proxy.caller(request)  # logged-in users only
        now = self.proxy.clock.now()
        clusters = [ClusterInfo(name=self.proxy.cluster_name, status="online",
                                lastConnected=now, kind="root")]
        clusters += [ClusterInfo(name=rc.metadata.name, status=rc.status.connection,
                                 lastConnected=rc.status.last_heartbeat)
                     for rc in sorted(await self.proxy.auth.list_remote_clusters(),
                                      key=lambda rc: rc.metadata.name)]
        return web.json_response([c.model_dump(mode="json", by_alias=True) for c in clusters])


async def leaf_nodes(proxy: WebProxy, session: WebSession, leaf: str) -> list[Server]:
    """The leaf's nodes its auth server shows the session's user (after its role map)."""
    if proxy.self_addr is None:
        raise ConnectionProblem("this proxy's web port is not listening yet")
    cas = [c.encode() for ca in await proxy.auth.list_cas("tls")
           if ca.spec.cluster_name == leaf for c in ca.trusted_tls_certs()]
    if not cas:
        raise NotFound(f"cluster {leaf!r} is not a leaf of this cluster")
    ctx = ssl_client_context(session.tls_cert.encode(), session.tls_private_key.encode(), cas)
    async with AuthClient([proxy.self_addr], ctx, cluster=leaf) as client:
        return sorted(await client.list_servers("node"),
                      key=lambda s: (s.spec.hostname, s.metadata.name))
