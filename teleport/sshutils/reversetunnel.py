"""The reverse tunnel's wire contract, shared by the proxy's tunnel server and the node's agent.

A node that cannot be reached dials the proxy (3024, or the multiplexed web port) as an SSH
client, authenticating with its host certificate, and keeps that connection open:
- it asks the proxy, with `tcpip-forward`, to forward `NODE_LISTEN` to it; the proxy then opens
  a `forwarded-tcpip` channel per user connection and the node serves SSH on it, so the user's
  SSH connection stays end to end between tsh (or OpenSSH) and the node, as through 3023;
- it opens `direct-tcpip` channels to `AUTH_TARGET`, which the proxy splices to the auth API:
  the node's mutual TLS with the auth server runs inside, so the proxy reads none of it.
Another proxy of the cluster may connect the same way with its own certificate, only to open
`direct-tcpip` channels to (node UUID, `PEER_PORT`) for nodes tunnelled here. The proxy of a
leaf cluster (a trusted cluster, its certificate signed by the leaf's host CA) connects the same
way and asks for `clusterdial.CLUSTER_LISTEN`: the root reaches the leaf's nodes through it.
Nothing else is accepted either way. The proxy's host key must be a proxy certificate of the
cluster's host CA, checked here before the node authenticates.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncssh

from teleport.config import sshalgos
from teleport.config.sshalgos import SSHAlgorithms
from teleport.errors import AccessDenied, BadParameter
from teleport.keys.ssh import SSHCertInfo, host_role, signed_by, verify_cert
from teleport.rbac import rules
from teleport.rbac.subject import Caller
from teleport.sshutils import clientconn
from teleport.sshutils.auth import key_line
from teleport.sshutils.clientconn import BulkClientConnection
from teleport.sshutils.flow import TUNNEL_PKTSIZE, WINDOW

#: The virtual listener the node asks the proxy to forward: connections to the node's SSH server.
NODE_LISTEN = ("@local-node", 3022)
#: Where a node's `direct-tcpip` channel asks to go to reach the auth API.
AUTH_TARGET = ("@remote-auth-server", 3025)
#: Another proxy's `direct-tcpip` to (node UUID, PEER_PORT) reaches that node over its tunnel
#: here: a proxy that has no tunnel from a node forwards the user's connection this way.
PEER_PORT = 3022
#: The agent's SSH software version: its identification line lets the proxy's multiplexed
#: web port send it to the tunnel server rather than the SSH proxy (`teleport.proxy.mux`).
CLIENT_VERSION = "Teleport-Tunnel"
TUNNEL_BANNER = b"SSH-2.0-" + CLIENT_VERSION.encode()
#: Keep-alives: a dead tunnel is noticed within KEEPALIVE_INTERVAL * (KEEPALIVE_COUNT + 1), and
#: an idle one stays open through balancers that cut idle connections after a minute.
KEEPALIVE_INTERVAL = 30.0
KEEPALIVE_COUNT = 2


def check_agent(cluster: str, remote_cas: Callable[[], Mapping[str, Sequence[str]]] = dict
                ) -> Callable[[SSHCertInfo, str], None]:
    """The proxy's rule for a tunnel agent's certificate (see `CertChecker.accept`).

    The CA that signed the certificate decides what it may be, not what it claims: the proxy
    of a leaf cluster whose host CA signed it (its own authority, checked against that CA), so
    a leaf can never register as one of our nodes; anything else the listener's CA check let
    in is ours, a node or a proxy of our cluster. (The rule runs again on a live tunnel's
    every channel: one of ours keeps working with a key a rotation has since dropped, a
    leaf's stops once that leaf is no longer trusted, its authority not ours.)
    """

    def accept(info: SSHCertInfo, login: str) -> None:
        role, authority = host_role(info)
        leaf = next((name for name, keys in remote_cas().items()
                     if name != cluster and signed_by(info, keys)), None)
        if leaf is None:
            rules.check_tunnel_peer(role, authority, info.key_id, info.principals,
                                    allowed=(Caller.NODE, Caller.PROXY), cluster=cluster,
                                    login=login)
            return
        rules.check_tunnel_peer(role, authority, info.key_id, info.principals,
                                allowed=(Caller.PROXY,), cluster=leaf, login=login)

    return accept


@dataclass(frozen=True)
class TunnelCredentials:
    """What a host dials a tunnel server with: a node's agent, or a proxy reaching a peer."""

    host_uuid: str
    private_key: str
    cert: str
    cluster: str
    trusted_host_cas: Callable[[], Sequence[str]]
    #: The SSH algorithms the host's teleport.yaml chose (`kex_algos`, `ciphers`, `mac_algos`).
    algorithms: SSHAlgorithms = sshalgos.DEFAULT


class TunnelClientConnection(BulkClientConnection):
    """The agent's side: accept only a proxy certificate of our cluster as the server's key
    (and, as every client of ours, no empty MSG_IGNORE per packet: `sshutils.clientconn`).

    asyncssh would also require the dialled name among the certificate's principals, but a
    node dials a load balancer's name that no proxy certificate carries; the proxy's identity
    is its certificate's host UUID (`proxy_uuid`), which the agent pool keys tunnels by.
    """

    #: Set by the pool before the handshake.
    trusted_host_cas: Callable[[], Sequence[str]]
    cluster: str
    now: Callable[[], datetime]
    proxy_uuid = ""

    def validate_server_host_key(self, key_data: bytes) -> asyncssh.SSHKey:
        try:
            info = verify_cert(key_line(key_data), list(self.trusted_host_cas()),
                               now=self.now(), cert_type="host")
            role, authority = host_role(info)
            rules.check_tunnel_peer(role, authority, info.key_id, info.principals,
                                    allowed=(Caller.PROXY,), cluster=self.cluster)
            key = asyncssh.import_public_key(info.public_key)
        except (AccessDenied, BadParameter, asyncssh.KeyImportError) as err:
            raise asyncssh.HostKeyNotVerifiable(f"the proxy's host key is not trusted: {err}") from None
        self.proxy_uuid = info.key_id
        return key


async def connect(sock: socket.socket, creds: TunnelCredentials, *, host: str, port: int,
                  now: Callable[[], datetime], wait: float = 15.0) -> TunnelClientConnection:
    """Run the agent's SSH handshake on a connected socket; the proxy checked, we logged in."""
    key = asyncssh.import_private_key(creds.private_key)
    options = asyncssh.SSHClientConnectionOptions(
        username=creds.host_uuid, client_version=CLIENT_VERSION,
        client_keys=[(key, asyncssh.import_certificate(creds.cert))],
        known_hosts=None, agent_path=None, config=None, preferred_auth=["publickey"],
        **sshalgos.asyncssh_kwargs(creds.algorithms, "client"), connect_timeout=wait,
        keepalive_interval=KEEPALIVE_INTERVAL, keepalive_count_max=KEEPALIVE_COUNT)

    def connection(*args: Any, **kwargs: Any) -> TunnelClientConnection:
        conn = TunnelClientConnection(*args, **kwargs)
        conn.trusted_host_cas, conn.cluster, conn.now = creds.trusted_host_cas, creds.cluster, now
        return conn

    conn = await clientconn.connect(host, port, options=options, sock=sock,
                                    connection=connection)
    return cast(TunnelClientConnection, conn)  # what `connection` makes


__all__ = ["AUTH_TARGET", "PEER_PORT", "CLIENT_VERSION", "TUNNEL_BANNER", "NODE_LISTEN", "TUNNEL_PKTSIZE", "WINDOW", "TunnelClientConnection",
           "TunnelCredentials", "check_agent", "connect", "host_role"]
