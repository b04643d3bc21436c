"""What the auth API lists and the proxy's web API relays as it is: recorded sessions, live
sessions, the cluster's status. Apart from either API's models, so `tsh` reads these without
importing the auth API's.
"""

from __future__ import annotations

from teleport.api.wire import Answer


class RecordingInfo(Answer):
    """A recorded session as `tsh recordings ls` lists it."""

    sid: str
    user: str
    login: str
    server_id: str
    server_hostname: str
    start: str
    duration_ms: int
    complete: bool


class ActiveSession(Answer):
    """A live session as users list it to join (`tsh sessions ls`)."""

    sid: str
    user: str
    login: str
    server_hostname: str
    created: str
    parties: list[str] = []
    server_id: str = ""


# --- cluster status (the web UI's status page) ----------------------------------------------------

class ServerSummary(Answer):
    """An auth server or proxy as the status page lists it."""

    id: str
    hostname: str
    addr: str
    public_addr: str = ""


class ClusterStatus(Answer):
    """What `tctl status` tells an admin, and who is online."""

    cluster: str
    version: str
    ca_pin: str
    auth_servers: list[ServerSummary]
    proxies: list[ServerSummary]
    nodes_online: int
