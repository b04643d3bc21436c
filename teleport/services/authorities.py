"""Certificate authorities (user, host, TLS) and the cluster name they belong to."""

from __future__ import annotations

from teleport.backend.base import Backend
from teleport.services.store import ResourceStore
from teleport.types.resources import CertAuthority, ClusterName


class CAService:
    def __init__(self, backend: Backend) -> None:
        self.cluster_names = ResourceStore(backend, ClusterName, "cluster_configuration", noun="cluster name")
        self._stores = {
            t: ResourceStore(backend, CertAuthority, "authorities", t, noun=f"{t} certificate authority")
            for t in ("user", "host", "tls")
        }

    def store(self, ca_type: str) -> ResourceStore[CertAuthority]:
        return self._stores[ca_type]

    async def get(self, ca_type: str, cluster: str) -> CertAuthority:
        return await self._stores[ca_type].get(cluster)
