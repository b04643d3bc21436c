"""`tsh sessions ls` and `tsh join`: find live sessions and attach to one through the proxy.

The session list comes from the proxy's web API and names each session's node by UUID, so
joining dials that node through the proxy like `tsh ssh` and asks it, with the environment
variable `TELEPORT_SESSION`, to attach the terminal to the session rather than start a shell
(see `teleport.srv.party`). The node, not this list, decides who may join.
"""

from __future__ import annotations

from teleport.api.constants import SESSION_ENV
from teleport.api.listing_models import ActiveSession
from teleport.client.profile import Profile
from teleport.client.webapi import WebClient
from teleport.errors import NotFound
from teleport.events.recording import check_sid
from teleport.keys.ssh import parse_cert


async def list_sessions(profile: Profile, cluster: str = "") -> list[ActiveSession]:
    """Return the live sessions this login may join, oldest first (cluster: a leaf's, as its
    auth server lists them to us after its role map)."""
    if cluster and cluster != profile.cluster:
        from teleport.client.authapi import leaf_auth_client

        async with await leaf_auth_client(profile, cluster) as leaf:
            return await leaf.list_active_sessions()
    async with WebClient.for_profile(profile) as web:
        return await web.list_active_sessions(profile.cluster)


async def join(profile: Profile, sid: str, cluster: str = "") -> int:
    """Share a live session's terminal until it ends; return its exit status."""
    check_sid(sid)
    session = next((s for s in await list_sessions(profile, cluster) if s.sid == sid), None)
    if session is None:
        raise NotFound(f"session {sid} is not running, or you may not join it")
    from teleport.client import ssh  # the SSH stack, only to join (not to list)

    # Any login the certificate allows gets us onto the node: joining starts no shell as it.
    login = parse_cert(profile.ssh_cert()).principals[0]
    async with ssh.connect_node(profile, login, session.server_id, cluster=cluster) as conn:
        # The node attaches this terminal to the live one instead of starting a shell.
        return await ssh.session(conn, None, True, env={SESSION_ENV: sid})
