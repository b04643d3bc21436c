"""Keep the CA public keys that nodes and proxies trust fresh, fetched from the auth API.

Besides this cluster's CAs: the user CAs of the root clusters this one trusts (with the role
map its admin gave them: a root user's roles become ours through it), and the host CAs of the
clusters on either side of a trust (a root's proxy to a leaf's agent, a leaf's to the root's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from teleport.auth.client import AuthClient
from teleport.auth.identity_file import IdentityFile
from teleport.errors import AccessDenied, NotFound, TeleportError
from teleport.keys.ssh import SSHCertInfo, signed_by
from teleport.rbac.rolemap import map_roles
from teleport.types.resources import CertAuthority
from teleport.utils.waits import wait_event

log = logging.getLogger("teleport.trust")
REFRESH_INTERVAL = 30.0


class TrustedCAs:
    """The latest user/host SSH CA keys and TLS CA certs; starts from the identity file."""

    def __init__(self, client: AuthClient, identity: IdentityFile) -> None:
        self.client = client
        self._user = list(identity.user_ca_keys)
        self._host = list(identity.host_ca_keys)
        self._tls = [c.encode() for c in identity.tls_ca_certs]
        #: The user CAs of the roots we trust (each with its role map), and every other
        #: cluster's host CA keys by cluster name.
        self._roots: list[CertAuthority] = []
        #: Every user CA key of ours this process has trusted: a live connection whose key a
        #: rotation since dropped is still one of our users (new ones are refused by the
        #: CA check itself), never a root's.
        self._ours_ever: list[str] = list(self._user)
        self._other_hosts: dict[str, list[str]] = {}
        self._wake = asyncio.Event()
        self._tls_changed: list[Callable[[], None]] = []

    def user_keys(self) -> list[str]:
        """Ours, and the trusted roots' (whose users our role map lets in)."""
        return [*self._user, *(k for ca in self._roots for k in ca.trusted_ssh_public_keys())]

    def local_user_keys(self) -> list[str]:
        return self._user

    def remote_host_keys(self) -> dict[str, list[str]]:
        """The host CA keys of the other clusters of a trust, by cluster name."""
        return self._other_hosts

    def local_roles(self, cert: SSHCertInfo) -> tuple[str, ...]:
        """The roles of ours a user certificate stands for: its own when our user CA signed
        it; a trusted root's user's after that root's role map (none: refused). A root's
        user whose trust was removed or disabled since is refused: live connections too."""
        if signed_by(cert, self._ours_ever):
            return cert.roles
        for root in self._roots:
            if signed_by(cert, root.trusted_ssh_public_keys()):
                mapped = map_roles(root.spec.role_map, cert.roles)
                if not mapped:
                    raise AccessDenied(
                        f"roles {', '.join(cert.roles) or '(none)'} of cluster "
                        f"{root.spec.cluster_name!r} map to no role of this cluster")
                return tuple(mapped)
        raise AccessDenied("certificate not signed by a trusted authority")

    def host_keys(self) -> list[str]:
        return self._host

    def tls_certs(self) -> list[bytes]:
        return self._tls

    def on_tls_change(self, call: Callable[[], None]) -> None:
        """Call call() after a refresh that changed the TLS CA certificates (a CA rotation's
        init and standby), e.g. to check new client certificates against them."""
        self._tls_changed.append(call)

    async def refresh(self) -> None:
        """Read every cluster's user and host CAs (two calls: ours among them) and our TLS CA;
        nothing changes unless all three answer."""
        tls_ca = await self.client.get_ca("tls")
        cluster = tls_ca.spec.cluster_name
        users, hosts = await self.client.list_cas("user"), await self.client.list_cas("host")
        user, host = _own(users, cluster), _own(hosts, cluster)
        self._user = user.trusted_ssh_public_keys()
        self._ours_ever += [k for k in self._user if k not in self._ours_ever]
        self._host = host.trusted_ssh_public_keys()
        self._roots = [ca for ca in users if ca.spec.cluster_name != cluster and ca.spec.role_map]
        self._other_hosts = {ca.spec.cluster_name: ca.trusted_ssh_public_keys()
                             for ca in hosts if ca.spec.cluster_name != cluster}
        tls = [c.encode() for c in tls_ca.trusted_tls_certs()]
        changed, self._tls = tls != self._tls, tls
        if changed:
            for call in self._tls_changed:
                call()

    def refresh_soon(self) -> None:
        """Refresh now rather than at the next interval: the CAs just changed (the proxy's
        watch-fed cache says so), and a rotated key must be trusted within a second."""
        self._wake.set()

    async def run(self) -> None:
        """Refresh forever; a failed refresh keeps the last known keys."""
        while True:
            await wait_event(self._wake, REFRESH_INTERVAL)
            self._wake.clear()
            try:
                await self.refresh()
            except TeleportError as err:
                log.warning("cannot refresh certificate authorities: %s", err)


def _own(cas: list[CertAuthority], cluster: str) -> CertAuthority:
    """Our cluster's CA among every cluster's of one type."""
    for ca in cas:
        if ca.spec.cluster_name == cluster:
            return ca
    raise NotFound(f"the auth server lists no CA of cluster {cluster!r}")
