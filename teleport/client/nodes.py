"""Which nodes a user means: a label selector (`env=prod,role=db`) and the nodes it matches.

Apart from `fanout` and the SSH stack, so `tsh ls` reaches the proxy without importing asyncssh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from teleport.client.profile import Profile
from teleport.client.webapi import WebClient
from teleport.errors import BadParameter

if TYPE_CHECKING:
    from teleport.api.listing_models import NodeInfo


def parse_label_selector(host: str) -> dict[str, str] | None:
    """Read `k=v[,k2=v2]` as labels to match; None for a node name, UUID or address."""
    if "=" not in host:
        return None
    selector: dict[str, str] = {}
    for pair in host.split(","):
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not key:
            raise BadParameter(f"invalid label selector {host!r}: expected key=value[,key=value]")
        if selector.get(key, value) != value:
            raise BadParameter(f"invalid label selector {host!r}: {key} is given twice")
        selector[key] = value
    return selector


def format_selector(selector: dict[str, str]) -> str:
    """The selector as the user writes it, for messages."""
    return ",".join(f"{k}={v}" for k, v in selector.items())


async def matching_nodes(profile: Profile, selector: dict[str, str],
                         cluster: str = "") -> list[NodeInfo]:
    """List the nodes the proxy shows this user whose labels include every selector pair (of a
    leaf cluster: as the leaf's auth server shows them to us, after its role map)."""
    profile.check_valid()
    if cluster and cluster != profile.cluster:
        from teleport.client.authapi import leaf_auth_client

        async with await leaf_auth_client(profile, cluster) as leaf:
            nodes = sorted(await leaf.list_nodes(), key=lambda n: (n.name, n.id))
    else:
        async with WebClient.for_profile(profile) as web:
            nodes = await web.list_nodes(profile.cluster)
    return [n for n in nodes if all(n.labels.get(k) == v for k, v in selector.items())]
