"""Auth API routes of trusted clusters: the root validating a leaf's token (relayed by its
proxy), its proxies reporting the leaves whose tunnels they hold, a leaf's proxies asking where
to dial, and every CA of one type (ours and the other clusters') for whoever checks
certificates. `tctl get/create/rm` of `trusted_cluster` and `remote_cluster` go through the
generic resource routes (`teleport.auth.api_resources`).
"""

from __future__ import annotations

from typing import Any

from teleport.api.auth_models import LeafCAs, LeafTunnel, TrustedClusterValidation
from teleport.auth.api import ADMIN, NODE, PROXY, USER, Call, route
from teleport.errors import BadParameter
from teleport.types.codec import to_dict


@route("POST", "/v1/trustedclusters/validate", [PROXY])
async def validate_trusted_cluster(call: Call) -> Any:
    """A leaf asks, through our proxy, to trust us with a `trusted_cluster` token."""
    body = await call.body(TrustedClusterValidation)
    return await call.auth.trusted_clusters.validate(body, body.remote_addr)


@route("GET", "/v1/trustedclusters/tunnels", [PROXY])
async def leaf_tunnels(call: Call) -> Any:
    """The roots a leaf's proxy keeps tunnels to (no tokens)."""
    return [LeafTunnel(name=tc.metadata.name, web_proxy_addr=tc.spec.web_proxy_addr,
                       tunnel_addr=tc.spec.tunnel_addr)
            for tc in await call.auth.trusted_clusters.tunnels()]


@route("POST", "/v1/remoteclusters/{name}/heartbeat", [PROXY])
async def remote_cluster_heartbeat(call: Call) -> Any:
    """A proxy of ours holds this leaf's tunnel (NotFound: the leaf was removed, drop it)."""
    await call.auth.trusted_clusters.heartbeat(call.param("name"))
    return {}


@route("PUT", "/v1/remoteclusters/{name}/authorities", [PROXY])
async def update_leaf_cas(call: Call) -> Any:
    """A proxy of ours relays a leaf's CAs as the leaf's proxy told them over its tunnel."""
    body = await call.body(LeafCAs)
    await call.auth.trusted_clusters.update_leaf_cas(call.param("name"),
                                                     body.certificate_authorities)
    return {}


@route("GET", "/v1/remoteclusters", [ADMIN, PROXY, USER], rule=("remote_cluster", "list"))
async def list_remote_clusters(call: Call) -> Any:
    """The leaves of this cluster with their status (`tsh clusters` through the proxy)."""
    return [to_dict(rc) for rc in await call.auth.trusted_clusters.list_remote()]


@route("GET", "/v1/authorities", [ADMIN, PROXY, NODE, USER])
async def list_authorities(call: Call) -> Any:
    """Every CA of one type (`?type=user|host|tls`), this cluster's and the trusted ones',
    public halves only: nodes trust a root's users, a root's proxy a leaf's tunnel."""
    ca_type = call.request.query.get("type", "")
    if ca_type not in ("user", "host", "tls"):
        raise BadParameter(f"unknown certificate authority type {ca_type!r}")
    return [to_dict(ca.without_secrets())
            for ca in await call.auth.certs.cas.store(ca_type).list()]
