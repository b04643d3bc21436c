"""Certificate authorities and the certificates the auth server signs: hosts', users', and the
short-lived pair a recording proxy uses to stand between a user and a node."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from teleport.api.auth_models import IssuedCerts
from teleport.auth import access, authority
from teleport.auth.access import check_not_locked
from teleport.auth.context import AuthContext, unique
from teleport.errors import AccessDenied, BadParameter, NotFound
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys.identity import NO_LOGIN, Identity
from teleport.rbac.subject import SYSTEM_ROLES
from teleport.services.authorities import CAService
from teleport.services.presence import PresenceService
from teleport.types.resources import CertAuthority, User
from teleport.utils.addr import is_ip, parse_addr

if TYPE_CHECKING:
    from teleport.auth.accounts import Accounts
    from teleport.rbac.roles import RoleSet

#: What a user's roles allow, with the role definitions stored now (`Resources.roleset`).
RoleSetSource = Callable[[Sequence[str], Mapping[str, Sequence[str]]], Awaitable["RoleSet"]]

DEFAULT_CERT_TTL = timedelta(hours=12)
MAX_CERT_TTL = timedelta(hours=30)
MIN_CERT_TTL = timedelta(minutes=1)
#: How long the certificates a recording proxy obtains for one connection stay valid.
PROXY_CERT_TTL = timedelta(minutes=5)


class CertIssuer:
    """Holds the cluster's CAs (through `CAService`) and signs every certificate."""

    def __init__(self, ctx: AuthContext, cas: CAService, presence: PresenceService,
                 accounts: Accounts) -> None:
        self.ctx = ctx
        self.cas = cas
        self.presence = presence
        self.accounts = accounts
        #: Set by the auth server once its resources part exists (roles live there).
        self.roleset: RoleSetSource

    async def init(self) -> None:
        """Create the cluster name and CAs on first start; later starts load them."""
        wanted = self.ctx.settings.cluster_name
        self.ctx.cluster_name = await authority.ensure_cluster_name(self.cas, wanted)
        if wanted and wanted != self.ctx.cluster_name:
            raise BadParameter(
                f"cluster_name {wanted!r} does not match the stored name "
                f"{self.ctx.cluster_name!r}: renaming a cluster invalidates its keys")
        await authority.ensure_authorities(self.cas, self.ctx.cluster_name, self.ctx.clock,
                                           self.ctx.settings.ca_signature_algo)

    async def get_ca(self, ca_type: str, with_secrets: bool = False) -> CertAuthority:
        ca = await self.cas.get(ca_type, self.ctx.cluster_name)
        return ca if with_secrets else ca.without_secrets()

    async def _trust(self) -> tuple[list[str], list[str], list[str]]:
        host = await self.get_ca("host")
        user = await self.get_ca("user")
        tls = await self.get_ca("tls")
        return host.trusted_ssh_public_keys(), user.trusted_ssh_public_keys(), tls.trusted_tls_certs()

    async def issue_host_certs(self, *, host_uuid: str, nodename: str, system_role: str,
                               ssh_public_key: str, tls_public_key: bytes,
                               addresses: list[str]) -> IssuedCerts:
        """Sign a host's SSH and X.509 certificates for one system role."""
        if system_role not in SYSTEM_ROLES:
            raise BadParameter(f"unknown system role {system_role!r}")
        cluster = self.ctx.cluster_name
        principals = unique([host_uuid, f"{host_uuid}.{cluster}", nodename,
                             f"{nodename}.{cluster}", *addresses])
        host_ca = await self.get_ca("host", with_secrets=True)
        tls_ca = await self.get_ca("tls", with_secrets=True)
        now = self.ctx.clock.now()
        ssh_cert = await asyncio.to_thread(
            sshkeys.sign_host_cert, authority.ssh_signer(host_ca), ssh_public_key,
            rsa_hash=authority.ssh_hash(host_ca),
            host_uuid=host_uuid, nodename=nodename, cluster=cluster, principals=principals,
            system_role=system_role, valid_before=None)
        ca_key, ca_cert = authority.tls_signer(tls_ca)
        identity = Identity(username=host_uuid, roles=(system_role,),
                            cluster=cluster, system_role=system_role, host_uuid=host_uuid)
        dns = [n for n in principals if not is_ip(n)]
        ips = [n for n in principals if is_ip(n)]
        tls_cert = await asyncio.to_thread(
            tlskeys.issue_tls_cert, ca_key, ca_cert, tls_public_key, identity, now=now,
            not_after=now + authority.HOST_TLS_CERT_TTL, dns_names=dns, ip_addresses=ips)
        return await self._issued(ssh_cert, tls_cert)

    async def issue_user_certs(self, user: User, ssh_public_key: str, tls_public_key: bytes,
                               ttl: timedelta | None) -> IssuedCerts:
        """Sign a user's SSH and X.509 certificates with the logins and roles stored now."""
        await check_not_locked(self.accounts, user)  # a lock stops new certificates
        access = await self.roleset(user.spec.roles, user.spec.traits)
        # The roles' max_session_ttl caps what was asked, as in Teleport (silently: the
        # certificate's expiry shows what was granted).
        ttl = min(max(ttl or DEFAULT_CERT_TTL, MIN_CERT_TTL), MAX_CERT_TTL, access.max_session_ttl)
        now = self.ctx.clock.now()
        logins = access.logins()
        user_ca = await self.get_ca("user", with_secrets=True)
        tls_ca = await self.get_ca("tls", with_secrets=True)
        try:
            ssh_cert = await asyncio.to_thread(
                sshkeys.sign_user_cert, authority.ssh_signer(user_ca), ssh_public_key,
                rsa_hash=authority.ssh_hash(user_ca),
                key_id=user.metadata.name,
                # Never no principal at all: OpenSSH takes an empty list as "every login".
                principals=logins or [f"{NO_LOGIN}-{uuid.uuid4()}"],
                valid_after=now - timedelta(minutes=1),
                valid_before=now + ttl, roles=user.spec.roles,
                traits={k: v for k, v in user.spec.traits.items()},
                permit_port_forwarding=access.port_forwarding,
                permit_agent_forwarding=access.forward_agent)
        except ValueError as err:
            raise BadParameter(f"invalid SSH public key: {err}") from None
        ca_key, ca_cert = authority.tls_signer(tls_ca)
        identity = Identity(username=user.metadata.name, roles=tuple(user.spec.roles),
                            logins=tuple(logins), cluster=self.ctx.cluster_name,
                            traits={k: tuple(v) for k, v in user.spec.traits.items()},
                            route_to_cluster=self.ctx.cluster_name)
        tls_cert = await asyncio.to_thread(
            tlskeys.issue_tls_cert, ca_key, ca_cert, tls_public_key, identity,
            now=now, not_after=now + ttl)
        return await self._issued(ssh_cert, tls_cert)

    async def _issued(self, ssh_cert: str, tls_cert: bytes) -> IssuedCerts:
        host_keys, user_keys, tls_certs = await self._trust()
        return IssuedCerts(ssh_cert=ssh_cert, tls_cert=tls_cert.decode(), host_ca_keys=host_keys,
                           user_ca_keys=user_keys, tls_ca_certs=tls_certs)

    # --- recording proxy ----------------------------------------------------------------------

    async def issue_node_cert_for_proxy(self, node_id: str, ssh_public_key: str) -> str:
        """Sign a short-lived host cert for a registered node's names, for a recording proxy."""
        now = self.ctx.clock.now()
        try:
            node = await self.presence.nodes.get(node_id)
        except NotFound:
            node = None
        if node is None or node.expired(now):
            raise NotFound(f"node {node_id!r} is not registered") from None
        cluster = self.ctx.cluster_name
        names = [node_id, node.spec.hostname]
        principals = unique([p for name in names if name for p in (name, f"{name}.{cluster}")]
                            + [h for h in [_addr_host(node.spec.addr)] if h])
        host_ca = await self.get_ca("host", with_secrets=True)
        try:
            return await asyncio.to_thread(
                sshkeys.sign_host_cert, authority.ssh_signer(host_ca), ssh_public_key,
                rsa_hash=authority.ssh_hash(host_ca),
                host_uuid=node_id, nodename=node.spec.hostname or node_id, cluster=cluster,
                principals=principals, system_role="Node", valid_before=now + PROXY_CERT_TTL)
        except ValueError as err:
            raise BadParameter(f"invalid SSH public key: {err}") from None

    async def issue_user_cert_for_proxy(self, presented: str, ssh_public_key: str) -> str:
        """Re-issue a user's valid certificate for the proxy's key: same grants, shorter life."""
        _, user_keys, _ = await self._trust()
        now = self.ctx.clock.now()
        try:
            info = sshkeys.verify_cert(presented, user_keys, now=now, cert_type="user")
        except BadParameter as err:
            raise AccessDenied(f"invalid user certificate: {err}") from None
        # A deleted, locked or expired user, or a certificate older than a deletion, gets nothing.
        await access.check_user(self.accounts, info.key_id, access.ssh_cert_issued_at(info))
        user_ca = await self.get_ca("user", with_secrets=True)
        try:
            return await asyncio.to_thread(
                sshkeys.sign_user_cert, authority.ssh_signer(user_ca), ssh_public_key,
                rsa_hash=authority.ssh_hash(user_ca),
                key_id=info.key_id, principals=info.principals,
                valid_after=now - timedelta(minutes=1),
                valid_before=min(now + PROXY_CERT_TTL, info.valid_before),
                roles=info.roles, traits=info.traits, route_to_cluster=info.route_to_cluster,
                permit_port_forwarding="permit-port-forwarding" in info.extensions,
                permit_pty="permit-pty" in info.extensions,
                permit_agent_forwarding="permit-agent-forwarding" in info.extensions)
        except ValueError as err:
            raise BadParameter(f"invalid SSH public key: {err}") from None


def _addr_host(addr: str) -> str:
    if not addr:
        return ""
    try:
        return parse_addr(addr, 3022).host
    except BadParameter:
        return ""
