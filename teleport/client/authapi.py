"""Reach the auth API as the logged-in `tsh` user, through the proxy's web port.

`tctl` away from the auth host has no Admin identity; it acts with the user's own TLS key and
certificate instead, so the user's roles decide what it may do, and the auth server audits
every refusal. The proxy relays TLS naming the auth server (SNI under `teleport.cluster.local`)
unopened, so TLS ends at the auth server and the client checks its name as on port 3025.
"""

from __future__ import annotations

from teleport.auth.client import AuthClient
from teleport.client.profile import Profile
from teleport.errors import AccessDenied, BadParameter, ConnectionProblem, NotFound
from teleport.keys.tls import identity_from_cert
from teleport.keys.tlsconfig import ssl_client_context
from teleport.utils.addr import parse_addr


def profile_auth_client(profile: Profile, leaf: str = "",
                        leaf_ca_pems: list[bytes] | None = None) -> AuthClient:
    """Return an AuthClient that presents the profile's certificate to the proxy's web address:
    to our auth server, or (leaf, with its TLS CA) to a leaf cluster's, which the proxy reaches
    over the leaf's tunnel and which judges us with its role map."""
    from datetime import datetime, timezone

    try:
        cert = profile.tls_cert_path.read_bytes()
        key = profile.tls_key_path.read_bytes()
        cas = profile.ca_path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"the keys of {profile.user}@{profile.web_proxy_addr} are missing, "
                       "run 'tsh login'") from None
    except PermissionError as err:
        raise BadParameter(f"cannot read {err.filename}: permission denied") from None
    identity = identity_from_cert(cert)
    if identity.expires is not None and identity.expires <= datetime.now(timezone.utc):
        raise AccessDenied("your certificate has expired, run 'tsh login'")
    ctx = ssl_client_context(cert, key, leaf_ca_pems if leaf and leaf_ca_pems else [cas])
    return AuthClient([parse_addr(profile.web_proxy_addr, 3080)], ctx,
                      cluster=leaf or identity.cluster)


async def leaf_auth_client(profile: Profile, leaf: str) -> AuthClient:
    """An AuthClient to a leaf cluster's auth server, trusting the leaf's TLS CA as the proxy
    lists it (`GET /webapi/authorities`)."""
    from teleport.client.trust import fetch_authorities
    from teleport.client.webapi import WebClient

    tls = (await fetch_authorities(profile)).get(f"tls:{leaf}")
    if tls is None:
        raise NotFound(f"cluster {leaf!r} is not a leaf of {profile.cluster!r} (see tsh clusters)")
    async with WebClient.for_profile(profile) as web:
        status = next((c.status for c in await web.clusters() if c.name == leaf), "offline")
    if status != "online":
        raise ConnectionProblem(f"cluster {leaf!r} is offline: its tunnel to "
                                f"{profile.cluster!r} is down (see tsh clusters)")
    return profile_auth_client(profile, leaf, [c.encode() for c in tls.trusted_tls_certs()])
