"""Serve a real AuthServer's API over mutual TLS on loopback, the way the auth service does."""

from __future__ import annotations

from aiohttp import web

from teleport.api.httpserver import DEFAULT_DEADLINES, Deadlines
from teleport.auth import api as auth_api
from teleport.auth.server import AuthServer
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.utils.addr import HostPort


async def serve_auth_api(auth: AuthServer, deadlines: Deadlines = DEFAULT_DEADLINES,
                         ) -> tuple[web.AppRunner, HostPort]:
    """Give the auth server its own identity and serve its API on 127.0.0.1:0; caller cleans up."""
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="auth-1", nodename="auth", system_role="Auth",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=["127.0.0.1"])
    ctx = tlsconfig.ssl_server_context(certs.tls_cert.encode(), tls_key,
                                       [c.encode() for c in certs.tls_ca_certs], require_client_cert=False)
    runner = await auth_api.serve(auth, ctx, "127.0.0.1", 0, deadlines=deadlines)
    return runner, HostPort("127.0.0.1", runner.addresses[0][1])
