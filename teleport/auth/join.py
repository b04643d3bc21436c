"""Join a cluster with a token: check the auth server against the CA pin, get an identity.

Two requests. The first fetches the cluster's TLS CA over an unverified connection and checks
it against the pin; the second sends the token over a connection verified against that CA and
the auth server's name, so a token never reaches a server that cannot prove it is the auth
server of the pinned CA (a user's or node's certificate of the same CA does not pass).

Both requests name a host under `teleport.cluster.local` in their TLS SNI, so that a proxy's web
port relays them, unopened, to its auth server: a node that reaches only the proxy joins through
it with the same pin check, TLS ending at the auth server. An auth server ignores the SNI.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from teleport import __version__
from teleport.api.auth_models import JoinAnswer, JoinCA, JoinRequest
from teleport.api.http import HTTPClient
from teleport.auth.identity_file import IdentityFile
from teleport.errors import AccessDenied, ConnectionProblem
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.authname import RESERVED_DOMAIN, auth_server_name
from teleport.keys.pin import check_pins
from teleport.utils.addr import HostPort

T = TypeVar("T")

UNPINNED_WARNING = (
    "WARN [AUTH] Joining the cluster without a CA pin: the auth server's identity is not "
    "verified, so an attacker who can intercept traffic to it could impersonate it. Pass "
    "--ca-pin (shown by 'tctl status' and 'tctl nodes add') to verify it.")


@dataclass(frozen=True)
class JoinResult:
    identity: IdentityFile
    auth_servers: list[str]
    cluster_name: str
    #: The address the join went through (an auth server's, or a proxy's web port).
    via: HostPort


async def join(addrs: Sequence[HostPort], *, token: str, role: str, host_uuid: str,
               nodename: str, addresses: list[str], ca_pins: Sequence[str],
               warn: Callable[[str], None], version: str = __version__) -> JoinResult:
    """Join through the first auth server that answers; write nothing, return the identity.

    version: the teleport version the host says it runs, which the auth server checks.
    """
    problems: list[str] = []
    for addr in addrs:
        try:
            return await _join_one(addr, token=token, role=role, host_uuid=host_uuid,
                                   nodename=nodename, addresses=addresses, ca_pins=ca_pins,
                                   warn=warn, version=version)
        except ConnectionProblem as err:
            problems.append(str(err))
    raise ConnectionProblem("cannot join the cluster: " + "; ".join(problems or ["no auth server"]))


async def _join_one(addr: HostPort, *, token: str, role: str, host_uuid: str, nodename: str,
                    addresses: list[str], ca_pins: Sequence[str],
                    warn: Callable[[str], None], version: str) -> JoinResult:
    unverified = tlsconfig.unverified_client_context()
    # The cluster's name (and so the auth server's) is not known yet: the domain routes alone.
    ca = await _call(addr, unverified, "GET", "/v1/join/ca", answer=JoinCA,
                     server_hostname=RESERVED_DOMAIN)
    ca_certs = [c.encode() for c in ca.tls_ca_certs]
    cluster = ca.cluster_name
    if ca_pins:
        _check_any_pin(ca_certs, ca_pins, addr)
    else:
        warn(UNPINNED_WARNING)
    ssh_key = await asyncio.to_thread(sshkeys.generate_private_key, "ed25519")
    tls_key = await asyncio.to_thread(tlskeys.generate_tls_key)
    verified = tlsconfig.ssl_client_context(None, None, ca_certs)
    body = JoinRequest(token=token, role=role, host_uuid=host_uuid, nodename=nodename,
                       ssh_public_key=sshkeys.public_key_of(ssh_key),
                       tls_public_key=tlskeys.tls_public_key_pem(tls_key).decode(),
                       addresses=addresses, version=version)
    answer = await _call(addr, verified, "POST", "/v1/join", answer=JoinAnswer, body=body,
                         server_hostname=auth_server_name(cluster))
    identity = IdentityFile.from_issued(role, host_uuid, ssh_key, tls_key, answer)
    return JoinResult(identity, answer.auth_servers or [str(addr)], cluster, addr)


def _check_any_pin(ca_certs: list[bytes], pins: Sequence[str], addr: HostPort) -> None:
    for cert in ca_certs:
        try:
            check_pins(cert, pins)
            return
        except AccessDenied:
            continue
    raise AccessDenied(f"the certificate authority of {addr} does not match the CA pin; "
                       "refusing to join (check --ca-pin against 'tctl status')")


async def _call(addr: HostPort, ctx: ssl.SSLContext, method: str, path: str, *,
                answer: type[T], body: JoinRequest | None = None,
                server_hostname: str | None = None) -> T:
    """Send one joining request to one auth server through the one client path."""
    http = HTTPClient([addr], ctx, peer="auth server", server_hostname=server_hostname,
                      unreachable="")
    try:
        return await http.call(method, path, body, answer=answer)
    finally:
        await http.close()
