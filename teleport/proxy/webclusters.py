"""The proxy's web routes of trusted clusters:

- `POST /webapi/trustedclusters/validate`: a leaf's auth server asks to trust this cluster with
  a `trusted_cluster` token (no login: the token is the credential, relayed to the auth server
  with the caller's address; rate-limited per address as logins are);
- `GET /webapi/sites`: the clusters a logged-in user may pick, this one and its leaves, with
  their status (`tsh clusters`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from teleport.api import httpserver
from teleport.api.auth_models import TrustedClusterValidation
from teleport.api.web_models import ClusterInfo

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
