"""What the CLIs list on every call: nodes, recorded sessions, live sessions, the cluster's
status (the host and user records `tctl` reads are in `record_listings`). Plain dataclasses, not pydantic models: `tsh ls` and its kin decode them with
`utils.plain`, so a listing does not pay pydantic's import and schema build (more than half of
`tsh ls`'s start-up). Not frozen either: the methods `frozen` generates cost each class ~1 ms
of every start. The servers build them from checked records and send them as they are; every
other wire model is a pydantic model (`api.wire`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from teleport.api.record_listings import HostRecord
    from teleport.types.resources import Server


@dataclass(slots=True)
class NodeInfo:
    """A node as `tsh ls` lists it."""

    name: str
    id: str
    addr: str
    labels: dict[str, str] = field(default_factory=dict)
    #: Reached over its reverse tunnel (addr is empty): lists show `constants.TUNNEL_ADDR`.
    tunnel: bool = False

    @classmethod
    def of(cls, server: Server | HostRecord) -> NodeInfo:
        return cls(name=server.spec.hostname, id=server.metadata.name, addr=server.spec.addr,
                   labels=server.all_labels(), tunnel=server.spec.use_tunnel)


@dataclass(slots=True)
class RecordingInfo:
    """A recorded session as `tsh recordings ls` lists it."""

    sid: str
    user: str
    login: str
    server_id: str
    server_hostname: str
    start: str
    duration_ms: int
    complete: bool


@dataclass(slots=True)
class ActiveSession:
    """A live session as users list it to join (`tsh sessions ls`)."""

    sid: str
    user: str
    login: str
    server_hostname: str
    created: str
    parties: list[str] = field(default_factory=list)
    server_id: str = ""


# --- cluster status (the web UI's status page) ----------------------------------------------------

@dataclass(slots=True)
class ServerSummary:
    """An auth server or proxy as the status page lists it."""

    id: str
    hostname: str
    addr: str
    public_addr: str = ""


@dataclass(slots=True)
class ClusterStatus:
    """What `tctl status` tells an admin, and who is online."""

    cluster: str
    version: str
    ca_pin: str
    auth_servers: list[ServerSummary]
    proxies: list[ServerSummary]
    nodes_online: int


#: Any of the listings, as servers answer with them (`httpserver.json_answer`).
Listing = NodeInfo | RecordingInfo | ActiveSession | ServerSummary | ClusterStatus
