"""Trusted clusters: a leaf trusts a root's users, the root reaches the leaf's nodes.

On the leaf, `tctl create` of a `trusted_cluster` asks the root's proxy to validate its join
token (`POST /webapi/trustedclusters/validate`, TLS verified against the system's trust store):
the leaf sends its host, user and TLS CAs (public halves), the root keeps them under the
leaf's name with a `remote_cluster` record, and answers its own. The leaf keeps the root's CAs
with the resource's role map, active while `enabled` (else set aside, so nothing trusts them),
and its proxies keep a reverse tunnel to the root's proxy. Removing either side's record
removes the other cluster's CAs: the leaf's nodes refuse root users, the root's proxy drops the
leaf's tunnel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from teleport import __version__
from teleport.api.auth_models import TrustedClusterValidation, TrustedClusterValidationAnswer
from teleport.api.http import HTTPClient
from teleport.auth.access import lock_refusal
from teleport.auth.context import AuthContext, redact
from teleport.auth.hosts import TRUSTED_CLUSTER, Hosts
from teleport.errors import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    ConnectionProblem,
    NotFound,
    TeleportError,
)
from teleport.events import emitter as ev
from teleport.keys.identity import Identity
from teleport.keys.tls import issued_by
from teleport.keys.tlsconfig import tls_context, unverified_client_context
from teleport.rbac.rolemap import check_role_map, fixed_local_roles, map_roles
from teleport.rbac.roles import RoleSet
from teleport.services.authorities import CAService
from teleport.services.locks import LockService
from teleport.services.roles import RoleService
from teleport.services.store import ResourceStore
from teleport.types.codec import from_dict, to_dict
from teleport.types.resource import Metadata, Resource
from teleport.types.resources import CertAuthority
from teleport.types.trusted import RemoteCluster, RemoteClusterStatus, TrustedCluster
from teleport.utils.addr import parse_addr

log = logging.getLogger("teleport.auth")

CA_TYPES = ("host", "user", "tls")
#: A leaf whose proxy's tunnel has not been heard of for this long is listed offline (the
#: root's proxies report every `HEARTBEAT_INTERVAL`).
HEARTBEAT_INTERVAL = 5.0
OFFLINE_AFTER = timedelta(seconds=3 * HEARTBEAT_INTERVAL)
#: How long one read of the trusted roots' TLS CAs is reused by the auth API.
ROOTS_REUSE = 1.0
#: The web port of a root proxy named without one.
DEFAULT_WEB_PORT = 3080

#: A root's proxy's public CA records (its web address).
FetchRootCAs = Callable[[str], Awaitable[list[object]]]
#: How often a leaf reads its roots' CAs, and a root's proxy its leaves': shorter than any
#: phase of a rotation, so the other side trusts a new key before it signs.
ROOT_CA_REFRESH = 5.0
#: Ask a root cluster's proxy (its web address) to validate our request; its answer.
AskRoot = Callable[[str, TrustedClusterValidation], Awaitable[TrustedClusterValidationAnswer]]


async def root_cas(web_proxy_addr: str, *, insecure: bool = False) -> list[object]:
    """The public CA records a root's proxy lists (`GET /webapi/authorities`), over HTTPS
    checked as `ask_root` checks it."""
    http = _root_http(web_proxy_addr, insecure)
    try:
        answer = await http.call("GET", "/webapi/authorities")
    finally:
        await http.close()
    if not isinstance(answer, list):
        raise ConnectionProblem("the root's proxy answered its CAs with something else than a list")
    return answer


def _root_http(web_proxy_addr: str, insecure: bool) -> HTTPClient:
    addr = parse_addr(web_proxy_addr, DEFAULT_WEB_PORT)
    if insecure:
        ctx = unverified_client_context()
    else:
        ctx = tls_context(server=False)
        ctx.load_default_certs()  # SSL_CERT_FILE / SSL_CERT_DIR, else the system's CAs
    return HTTPClient([addr], ctx, peer=f"root cluster's proxy {addr}", timeout=15.0)


async def ask_root(web_proxy_addr: str, request: TrustedClusterValidation, *,
                   insecure: bool = False) -> TrustedClusterValidationAnswer:
    """Validate with the root's proxy over HTTPS, its certificate checked as a browser would
    (unless the leaf's admin started it `--insecure`)."""
    http = _root_http(web_proxy_addr, insecure)
    try:
        return await http.call("POST", "/webapi/trustedclusters/validate", request,
                               answer=TrustedClusterValidationAnswer)
    finally:
        await http.close()


class TrustedClusters:
    """Both sides of trust between clusters, each change audited where it is made."""

    def __init__(self, ctx: AuthContext, cas: CAService, hosts: Hosts, roles: RoleService,
                 locks: LockService, ask: AskRoot | None = None,
                 fetch: FetchRootCAs | None = None) -> None:
        backend = ctx.backend
        self.ctx = ctx
        self.cas = cas
        self.hosts = hosts
        self.roles = roles
        self.locks = locks
        insecure = ctx.settings.insecure
        self.ask: AskRoot = ask or functools.partial(ask_root, insecure=insecure)
        self.fetch: FetchRootCAs = fetch or functools.partial(root_cas, insecure=insecure)
        #: The trusted roots' TLS CAs as last read, and when (reused for ROOTS_REUSE seconds:
        #: every new connection to the auth API asks).
        self._roots: tuple[float, list[CertAuthority]] = (-ROOTS_REUSE, [])
        #: The read under way: callers that find the last one old share it (at a thousand
        #: requests a second, each started its own while the first waited on the store).
        self._roots_read: asyncio.Future[list[CertAuthority]] | None = None
        self.trusted = ResourceStore(backend, TrustedCluster, "trustedclusters",
                                     noun="trusted cluster")
        self.remote = ResourceStore(backend, RemoteCluster, "remoteClusters",
                                    noun="remote cluster")
        #: A disabled trusted cluster's CAs: kept, trusted by nothing.
        self.set_aside = {t: ResourceStore(backend, CertAuthority, "authorities", "deactivated",
                                           t, noun=f"deactivated {t} certificate authority")
                          for t in CA_TYPES}

    # --- the leaf's side ----------------------------------------------------------------------

    async def save(self, tc: TrustedCluster, actor: str, *, overwrite: bool) -> TrustedCluster:
        """Create (or change, with overwrite) a trusted cluster, validating with the root when
        its address or token is new; a change of `enabled` or the role map only re-files the
        root's CAs."""
        name = tc.metadata.name
        try:
            stored = await self._stored(name)
            if stored is not None and not overwrite:
                raise AlreadyExists(f"trusted cluster {name!r} already exists: use "
                                    "`tctl create -f` to change it")
            if stored is not None and not tc.spec.token:
                # `tctl get` prints no token: re-creating its output keeps the stored one.
                tc = tc.model_copy(update={"spec": tc.spec.model_copy(
                    update={"token": stored.spec.token})})
            await self._check(tc)
            if stored is None or _where(stored) != _where(tc):
                cas = await self._validate_with_root(tc)
            else:
                cas = await self._root_cas(name)
        except TeleportError as err:  # refused here or by the root, or the root unreachable
            await self.ctx.audit(ev.TRUSTED_CLUSTER_CREATE, actor, name=name, success=False,
                                 error=str(err))
            raise
        await self._file(cas, tc)
        saved = await self.trusted.put(tc)
        await self.ctx.audit(ev.TRUSTED_CLUSTER_CREATE, actor, name=name, success=True,
                             enabled=tc.spec.enabled)
        return saved

    async def _check(self, tc: TrustedCluster) -> None:
        if tc.metadata.name == self.ctx.cluster_name:
            raise BadParameter(f"trusted cluster {tc.metadata.name!r} is this cluster's own name")
        if not tc.spec.token:
            raise BadParameter("trusted cluster spec.token: the root cluster's join token is required")
        if not tc.spec.role_map:
            raise BadParameter("trusted cluster spec.role_map: map at least one root role to a "
                               "role of this cluster")
        check_role_map(tc.spec.role_map)
        try:
            await self.roles.require(sorted(fixed_local_roles(tc.spec.role_map)))
        except BadParameter as err:
            raise BadParameter(f"trusted cluster role_map: {err}") from None
        parse_addr(tc.spec.web_proxy_addr, DEFAULT_WEB_PORT)
        if tc.spec.tunnel_addr:
            parse_addr(tc.spec.tunnel_addr, 3024)

    async def _stored(self, name: str) -> TrustedCluster | None:
        try:
            return await self.trusted.get(name)
        except NotFound:
            return None

    async def _validate_with_root(self, tc: TrustedCluster) -> list[CertAuthority]:
        ours = [to_dict(await self.cas.get(t, self.ctx.cluster_name)) for t in CA_TYPES]
        request = TrustedClusterValidation(
            token=tc.spec.token, certificate_authorities=[
                to_dict(CertAuthority.model_validate(c).without_secrets()) for c in ours],
            teleport_version=__version__)
        answer = await self.ask(tc.spec.web_proxy_addr, request)
        cas = parse_cas(answer.certificate_authorities)
        root = cas[0].spec.cluster_name
        if root != tc.metadata.name:
            raise BadParameter(f"the root cluster at {tc.spec.web_proxy_addr} is named {root!r}: "
                               f"name the trusted_cluster resource {root!r}, not "
                               f"{tc.metadata.name!r}")
        return cas

    async def _root_cas(self, name: str) -> list[CertAuthority]:
        cas = []
        for ca_type in CA_TYPES:
            try:
                cas.append(await self.cas.get(ca_type, name))
            except NotFound:
                cas.append(await self.set_aside[ca_type].get(name))
        return cas

    async def _file(self, cas: Sequence[CertAuthority], tc: TrustedCluster) -> None:
        """Keep the root's CAs with the role map: trusted while enabled, else set aside."""
        for ca in cas:
            ca = ca.without_secrets()
            ca = ca.model_copy(update={"spec": ca.spec.model_copy(
                update={"role_map": list(tc.spec.role_map)})})
            active, aside = self.cas.store(ca.spec.type), self.set_aside[ca.spec.type]
            keep, drop = (active, aside) if tc.spec.enabled else (aside, active)
            await keep.put(ca)
            try:
                await drop.delete(ca.metadata.name)
            except NotFound:
                pass

    async def remove(self, name: str, actor: str) -> None:
        """Stop trusting a root: its CAs go at once, so its users are refused within seconds."""
        await self.trusted.get(name)
        await self._forget_cas(name)
        await self.trusted.delete(name)
        await self.ctx.audit(ev.TRUSTED_CLUSTER_DELETE, actor, name=name)

    async def _forget_cas(self, cluster: str) -> None:
        for ca_type in CA_TYPES:
            for store in (self.cas.store(ca_type), self.set_aside[ca_type]):
                try:
                    await store.delete(cluster)
                except NotFound:
                    pass

    async def tunnels(self) -> list[TrustedCluster]:
        """The enabled trusted clusters, without their tokens: where the leaf's proxies dial."""
        return [tc.without_secrets() for tc in await self.trusted.list() if tc.spec.enabled]

    # --- the leaf's auth API: a root's users ---------------------------------------------------

    async def root_tls_cas(self) -> list[CertAuthority]:
        """The TLS CAs of the roots we trust (enabled, with a role map): whose users' client
        certificates our auth API takes, as those users, with the roles the map gives them."""
        read_at, roots = self._roots
        if time.monotonic() - read_at < ROOTS_REUSE:
            return roots
        if self._roots_read is None or self._roots_read.done():
            self._roots_read = asyncio.ensure_future(self._read_roots())
        return await asyncio.shield(self._roots_read)

    async def _read_roots(self) -> list[CertAuthority]:
        started = time.monotonic()
        roots = [ca for ca in await self.cas.store("tls").list()
                 if ca.spec.cluster_name != self.ctx.cluster_name and ca.spec.role_map]
        self._roots = (started, roots)
        return roots

    async def issuing_root(self, der: bytes) -> CertAuthority | None:
        """The trusted root whose TLS CA issued a verified client certificate, or None (ours:
        the TLS layer trusts only our CA and the roots')."""
        for root in await self.root_tls_cas():
            if issued_by(der, [c.encode() for c in root.trusted_tls_certs()]):
                return root
        return None

    async def remote_user(self, identity: Identity, root: CertAuthority) -> tuple[Identity, RoleSet]:
        """A root's user as our roles see them: only users (no host or admin of the root), only
        under the root's own name, their roles mapped (none: refused), locks applied."""
        cluster = root.spec.cluster_name
        if identity.system_role or identity.cluster != cluster:
            raise AccessDenied(f"cluster {cluster!r}'s certificates are taken here for its "
                               "users only")
        mapped = map_roles(root.spec.role_map, identity.roles)
        if not mapped:
            raise AccessDenied(f"roles {', '.join(identity.roles) or '(none)'} of cluster "
                               f"{cluster!r} map to no role of this cluster")
        now = self.ctx.clock.now()
        reason = lock_refusal(await self.locks.in_force(now), now, user=identity.username,
                              roles=mapped)
        if reason is not None:
            raise AccessDenied(reason)
        roleset = RoleSet.of(mapped, await self.roles.by_name(), identity.traits)
        return dataclasses.replace(identity, roles=tuple(mapped),
                                   logins=tuple(roleset.logins())), roleset

    # --- the root's side ----------------------------------------------------------------------

    async def validate(self, request: TrustedClusterValidation,
                       remote_addr: str) -> TrustedClusterValidationAnswer:
        """Let a leaf with a `trusted_cluster` token trust us: keep its CAs, answer ours."""
        leaf = "?"
        try:
            # Parsed first, so that a refusal names the cluster that asked.
            cas = parse_cas(request.certificate_authorities)
            leaf = cas[0].spec.cluster_name
            await self.hosts.check_token(request.token, TRUSTED_CLUSTER)
            if leaf == self.ctx.cluster_name:
                raise BadParameter(f"a leaf cluster cannot have this cluster's name {leaf!r}")
            await self._check_new_leaf(leaf, cas)
        except (AccessDenied, BadParameter, AlreadyExists) as err:
            await self.ctx.audit(ev.TRUSTED_CLUSTER_VALIDATE, leaf, success=False,
                                 error=str(err), addr_remote=remote_addr,
                                 token=redact(request.token))
            if isinstance(err, AccessDenied):
                err.mark_audited()
            raise
        for ca in cas:
            await self.cas.store(ca.spec.type).put(ca)
        try:
            await self.remote.create(RemoteCluster(metadata=Metadata(name=leaf)))
        except AlreadyExists:
            pass
        await self.ctx.audit(ev.TRUSTED_CLUSTER_VALIDATE, leaf, success=True,
                             addr_remote=remote_addr, token=redact(request.token))
        ours = [to_dict((await self.cas.get(t, self.ctx.cluster_name)).without_secrets())
                for t in CA_TYPES]
        return TrustedClusterValidationAnswer(certificate_authorities=ours)

    async def _check_new_leaf(self, leaf: str, cas: Sequence[CertAuthority]) -> None:
        """A leaf name is taken by one cluster's keys: the same leaf may validate again (after
        removing its side, or with a new token), its CAs sharing a key with those we hold (a
        rotation since keeps one); another cluster of that name may not replace it."""
        for ca in cas:
            try:
                stored = await self.cas.get(ca.spec.type, leaf)
            except NotFound:
                continue
            held = {*stored.trusted_ssh_public_keys(), *stored.trusted_tls_certs()}
            if not held & {*ca.trusted_ssh_public_keys(), *ca.trusted_tls_certs()}:
                raise AlreadyExists(f"a cluster named {leaf!r} is already a leaf of this "
                                    f"cluster: remove it first with `tctl rm rc/{leaf}`")

    async def list_remote(self) -> list[RemoteCluster]:
        return [self._status(rc) for rc in await self.remote.list()]

    async def get_remote(self, name: str) -> RemoteCluster:
        return self._status(await self.remote.get(name))

    def _status(self, rc: RemoteCluster) -> RemoteCluster:
        online = rc.status.last_heartbeat >= self.ctx.clock.now() - OFFLINE_AFTER
        status = rc.status.model_copy(update={"connection": "online" if online else "offline"})
        return rc.model_copy(update={"status": status})

    async def heartbeat(self, name: str) -> None:
        """A proxy of ours holds the leaf's tunnel now (NotFound once the leaf was removed)."""
        rc = await self.remote.get(name)
        status = RemoteClusterStatus(connection="online", last_heartbeat=self.ctx.clock.now())
        await self.remote.put(rc.model_copy(update={"status": status}))

    async def update_leaf_cas(self, name: str, raw: Sequence[object]) -> None:
        """Keep a leaf's CAs as its proxy says them now (its rotations), for that leaf only."""
        await self.remote.get(name)
        cas = parse_cas(raw)
        if cas[0].spec.cluster_name != name:
            raise AccessDenied(f"leaf cluster {name!r} cannot speak for cluster "
                               f"{cas[0].spec.cluster_name!r}")
        if await self._changed(cas):
            for ca in cas:
                await self.cas.store(ca.spec.type).put(ca)
            log.info("Leaf cluster %s changed its certificate authorities (a rotation); "
                     "following.", name)

    async def _changed(self, cas: Sequence[CertAuthority]) -> bool:
        """Tell whether these CAs' keys differ from the ones stored (active or set aside)."""
        for ca in cas:
            try:
                stored = await self.cas.get(ca.spec.type, ca.spec.cluster_name)
            except NotFound:
                try:
                    stored = await self.set_aside[ca.spec.type].get(ca.spec.cluster_name)
                except NotFound:
                    return True
            if (stored.trusted_ssh_public_keys(), stored.trusted_tls_certs()) != \
                    (ca.trusted_ssh_public_keys(), ca.trusted_tls_certs()):
                return True
        return False

    async def follow_roots(self) -> None:
        """Keep the enabled roots' CAs as their proxies list them now (their rotations), every
        ROOT_CA_REFRESH seconds; a root away keeps what we have."""
        while True:
            for tc in await self.trusted.list():
                if not tc.spec.enabled:
                    continue
                try:
                    await self.refresh_root(tc)
                except TeleportError as err:
                    log.warning("cannot refresh the CAs of root cluster %s: %s",
                                tc.metadata.name, err)
            await asyncio.sleep(ROOT_CA_REFRESH)

    async def refresh_root(self, tc: TrustedCluster) -> None:
        name = tc.metadata.name
        listed = await self.fetch(tc.spec.web_proxy_addr)
        cas = parse_cas([c for c in listed if isinstance(c, dict)
                         and c.get("spec", {}).get("cluster_name") == name])
        if await self._changed(cas):
            await self._file(cas, tc)
            log.info("Root cluster %s changed its certificate authorities (a rotation); "
                     "following.", name)

    async def remove_remote(self, name: str, actor: str) -> None:
        """Stop trusting a leaf: its CAs and record go, our proxies drop its tunnel."""
        await self.remote.get(name)
        await self._forget_cas(name)
        await self.remote.delete(name)
        await self.ctx.audit(ev.REMOTE_CLUSTER_DELETE, actor, name=name)

    # --- the registry's stores ----------------------------------------------------------------

    def trusted_store(self) -> TrustedClusterStore:
        return TrustedClusterStore(self)

    def remote_store(self) -> RemoteClusterStore:
        return RemoteClusterStore(self)


def parse_cas(raw: Sequence[object]) -> list[CertAuthority]:
    """One cluster's host, user and TLS CAs, public halves only; anything else refused."""
    cas: list[CertAuthority] = []
    for item in raw:
        try:
            ca = from_dict(item)
        except (BadParameter, ValueError) as err:
            raise BadParameter(f"invalid certificate authority: {err}") from None
        if not isinstance(ca, CertAuthority):
            raise BadParameter("expected certificate authorities only")
        cas.append(ca.without_secrets())
    types = sorted(ca.spec.type for ca in cas)
    if types != sorted(CA_TYPES):
        raise BadParameter("expected one host, one user and one tls certificate authority")
    names = {ca.spec.cluster_name for ca in cas} | {ca.metadata.name for ca in cas}
    if len(names) != 1:
        raise BadParameter("the certificate authorities name different clusters")
    if not (cas[0].trusted_ssh_public_keys() or cas[0].trusted_tls_certs()):
        raise BadParameter("a certificate authority without keys")
    return sorted(cas, key=lambda ca: CA_TYPES.index(ca.spec.type))


def _where(tc: TrustedCluster) -> tuple[str, str, str]:
    return tc.spec.web_proxy_addr, tc.spec.tunnel_addr, tc.spec.token


class TrustedClusterStore:
    """`tctl get/create/rm trusted_cluster` on the leaf."""

    def __init__(self, part: TrustedClusters) -> None:
        self.part = part

    async def list(self) -> Sequence[Resource]:
        return await self.part.trusted.list()

    async def get(self, name: str) -> Resource:
        return await self.part.trusted.get(name)

    async def create(self, resource: Resource, actor: str) -> Resource:
        return await self.part.save(_trusted(resource), actor, overwrite=False)

    async def upsert(self, resource: Resource, actor: str) -> Resource:
        return await self.part.save(_trusted(resource), actor, overwrite=True)

    async def delete(self, name: str, actor: str) -> None:
        await self.part.remove(name, actor)

    async def with_secrets(self, resource: Resource) -> Resource:
        return await self.part.trusted.get(resource.metadata.name)


class RemoteClusterStore:
    """`tctl get/rm remote_cluster` on the root; a leaf's validation makes them."""

    def __init__(self, part: TrustedClusters) -> None:
        self.part = part

    async def list(self) -> Sequence[Resource]:
        return await self.part.list_remote()

    async def get(self, name: str) -> Resource:
        return await self.part.get_remote(name)

    async def create(self, resource: Resource, actor: str) -> Resource:
        raise BadParameter("a remote cluster is made by its leaf joining with a token "
                           "(trusted_cluster on the leaf), not by tctl create")

    upsert = create

    async def delete(self, name: str, actor: str) -> None:
        await self.part.remove_remote(name, actor)

    async def with_secrets(self, resource: Resource) -> Resource:
        return resource


def _trusted(resource: Resource) -> TrustedCluster:
    if not isinstance(resource, TrustedCluster):
        raise BadParameter(f"expected a trusted_cluster resource, not {resource.kind}")
    return resource
