"""`tsh login`: new keys, certificates from the proxy's web API, saved as the profile."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from teleport.api.constants import PROXY_SSH_PORT, PROXY_WEB_PORT
from teleport.api.web_models import LoginResponse, WebPing
from teleport.client.profile import Profile, save_login
from teleport.client.webapi import WebClient, proxy_certificate
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.utils.addr import HostPort, parse_addr


@dataclass(frozen=True)
class LoginKeys:
    """The fresh private keys a login asks the cluster to certify."""

    ssh_key: bytes
    ssh_pub: str
    tls_key: bytes

    @property
    def tls_pub(self) -> str:
        return tlskeys.tls_public_key_pem(self.tls_key).decode()


async def new_keys() -> LoginKeys:
    """Generate the SSH and TLS keys of a login (in a thread: key generation is CPU work)."""
    ssh_key = await asyncio.to_thread(sshkeys.generate_private_key, "ed25519")
    tls_key = await asyncio.to_thread(tlskeys.generate_tls_key)
    return LoginKeys(ssh_key=ssh_key, ssh_pub=sshkeys.public_key_of(ssh_key), tls_key=tls_key)


def save_profile(web_addr: HostPort, ping: WebPing, resp: LoginResponse, user: str,
                 keys: LoginKeys, accepted: bytes | None) -> Profile:
    """Store a login's certificates as the current profile, whichever way the user logged in.

    `accepted` is the proxy certificate `--insecure` pinned (PEM), or None.
    """
    ssh_proxy = parse_addr(ping.proxy.ssh.public_addr, PROXY_SSH_PORT)
    if ssh_proxy.host in ("0.0.0.0", "::", ""):
        ssh_proxy = ssh_proxy._replace(host=web_addr.host)
    profile = Profile(web_proxy_addr=str(web_addr), ssh_proxy_addr=str(ssh_proxy), user=user,
                      cluster=resp.cluster_name)
    save_login(profile, ssh_key=keys.ssh_key, ssh_pub=keys.ssh_pub, ssh_cert=resp.cert,
               tls_key=keys.tls_key, tls_cert=resp.tls_cert, tls_cas=list(resp.trusted_ca),
               host_ca_keys=list(resp.host_signers),
               web_cert=accepted.decode() if accepted else None)
    return profile


async def login(proxy: str, user: str, password: str, otp_token: str, *,
                ttl: timedelta | None, insecure: bool) -> Profile:
    """Log in through the proxy and store the new certificates; return the new profile."""
    web_addr = parse_addr(proxy, PROXY_WEB_PORT)
    keys = await new_keys()
    # --insecure: accept the certificate the proxy presents now, and only it from here on (the
    # password included), rather than any certificate on every connection.
    accepted = await proxy_certificate(web_addr) if insecure else None
    async with WebClient(str(web_addr), insecure=False, pinned_cert=accepted) as web:
        ping = await web.ping()
        resp = await web.ssh_login(user, password, otp_token, keys.ssh_pub, keys.tls_pub, ttl)
    return save_profile(web_addr, ping, resp, user, keys, accepted)
