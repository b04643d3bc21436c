"""The cluster's public CA keys from the proxy, no login needed (they are public):

- `GET /webapi/auth/export[?type=user|host|tls]`: as `tctl auth export` prints them (Teleport
  serves the same path), for a stock `sshd` or `known_hosts` to trust the cluster, both keys
  during a rotation.
- `GET /webapi/authorities`: the public CA records with their rotation, for `tsh` to refresh its
  known_hosts and CA file as a rotation goes, and to say when its certificate's CA is about to
  be dropped (`teleport.client.trust`); and the host and TLS CAs of the leaf clusters that
  trust this one, each for its own cluster's hosts and auth server.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from aiohttp import ETag, web

from teleport.errors import BadParameter
from teleport.types.codec import to_dict

if TYPE_CHECKING:
    from teleport.proxy.web import WebProxy

CA_TYPES = ("user", "host", "tls")


class WebTrust:
    def __init__(self, proxy: WebProxy) -> None:
        self.proxy = proxy

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/webapi/auth/export", self.export)
        app.router.add_get("/webapi/authorities", self.authorities)

    async def export(self, request: web.Request) -> web.Response:
        wanted = request.query.get("type", "")
        if wanted and wanted not in CA_TYPES:
            raise BadParameter(f"type must be user, host or tls, not {wanted[:40]!r}")
        text = "".join([(await self.proxy.auth.get_ca(t)).export()
                        for t in ([wanted] if wanted else ["user", "host"])])
        return web.Response(text=text, content_type="text/plain")

    async def authorities(self, request: web.Request) -> web.Response:
        cas = [to_dict((await self.proxy.auth.get_ca(t)).without_secrets()) for t in CA_TYPES]
        # The leaves' host and TLS CAs too, each naming its cluster: tsh trusts each for its
        # own cluster's hosts only (`*.<leaf>` in known_hosts) and its auth server.
        cas += [to_dict(ca.without_secrets()) for t in ("host", "tls")
                for ca in await self.proxy.auth.list_cas(t)
                if ca.spec.cluster_name != self.proxy.cluster_name and not ca.spec.role_map]
        # Tagged with a digest of the records: a `tsh` that holds them already gets a 304 and
        # neither reads nor decodes them again (every command refreshes its trust).
        body = json.dumps(cas).encode()
        etag = ETag(hashlib.sha256(body).hexdigest()[:32])
        if any(tag.value in (etag.value, "*") for tag in request.if_none_match or ()):
            response = web.Response(status=304)
        else:
            response = web.Response(body=body, content_type="application/json")
        response.etag = etag
        return response
