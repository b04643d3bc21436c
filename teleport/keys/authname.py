"""The auth server's TLS name: only its certificate carries it, and every client of the auth API
checks for it. Apart from `tls` so that a client that only connects (`tctl`) does not import
cryptography's X.509 to name the server it expects.
"""

from __future__ import annotations

import hashlib
import re

from teleport.errors import BadParameter

#: Names under this domain are reserved for the auth server's identity; no other host gets one.
#: As a TLS server name (SNI) it also routes: the proxy's web port relays TLS naming it (or a
#: name under it) to the auth server (`teleport.proxy.mux`, `is_reserved_name`).
RESERVED_DOMAIN = "teleport.cluster.local"
_DNS_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def auth_server_name(cluster: str) -> str:
    """Name a cluster's auth server the way its certificate does and its clients check.

    The cluster is part of the name so that trusting several clusters' CAs one day never lets
    one cluster's auth server answer for another's. A cluster name that is not a DNS name is
    replaced by a hash of it, since TLS names must be.
    """
    if not cluster:
        raise BadParameter("the auth server's name needs a cluster name")
    label = cluster.lower()
    if len(label) > 200 or not _DNS_NAME.fullmatch(label):
        label = "h" + hashlib.sha256(cluster.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"auth.{label}.{RESERVED_DOMAIN}"


def is_reserved_name(name: str) -> bool:
    """Tell whether a host name is reserved for the auth server's certificate."""
    name = name.lower().rstrip(".")
    return name == RESERVED_DOMAIN or name.endswith("." + RESERVED_DOMAIN)
