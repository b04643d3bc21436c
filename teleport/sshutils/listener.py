"""Listen for SSH with the settings the node and the proxy share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncssh

from teleport.sshutils.auth import CertAuthConnection, CertAuthServer

#: The prototype dropped SYNs at 200 concurrent clients with asyncio's default backlog of 100.
BACKLOG = 1024
#: AES-GCM first: it is hardware-accelerated and measured fastest; ChaCha20 for CPUs without AES-NI.
CIPHERS = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com",
           "aes128-ctr", "aes192-ctr", "aes256-ctr")
#: Per-channel receive window: the most a client can have in flight on one channel.
WINDOW = 2 * 1024 * 1024


def server_options(*, host_private_key: bytes, host_cert: str,
                   server_factory: Callable[[], CertAuthServer]) -> asyncssh.SSHServerConnectionOptions:
    """Build asyncssh options: host key with its certificate, user certs only, fast ciphers."""
    key = asyncssh.import_private_key(host_private_key)
    cert = asyncssh.import_certificate(host_cert)
    return asyncssh.SSHServerConnectionOptions(
        server_factory=server_factory,
        server_host_keys=asyncssh.load_keypairs([(key, cert)]),
        encryption_algs=list(CIPHERS),
        compression_algs=["none"],
        # Authentication is ours (see CertAuthConnection): no authorized_keys, GSS or host-based.
        authorized_client_keys=None, gss_host=None, known_client_hosts=None,
        # Terminals are real PTYs on the node; asyncssh's line editor would get in the way.
        line_editor=False, agent_forwarding=False, x11_forwarding=False,
        keepalive_interval=300, login_timeout=60)


async def listen(host: str, port: int, options: asyncssh.SSHServerConnectionOptions) -> asyncio.Server:
    """Start accepting SSH on host:port (0 picks a free port) with our connection class.

    asyncssh.listen() has no way to choose the connection class, so we create the asyncio
    server ourselves with the same factory shape it uses; asyncssh sets TCP_NODELAY itself.
    """
    loop = asyncio.get_running_loop()

    def connection() -> CertAuthConnection:
        return CertAuthConnection(loop, options)

    return await loop.create_server(connection, host, port, backlog=BACKLOG, reuse_address=True)


def bound_port(server: asyncio.Server) -> int:
    """Return the port a listener bound, for port 0."""
    return int(server.sockets[0].getsockname()[1])
