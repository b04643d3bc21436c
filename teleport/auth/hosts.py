"""Hosts: join tokens (`tctl tokens`), joining, and the announcements behind `tctl nodes ls`."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

from teleport import __version__
from teleport.api.auth_models import IssuedCerts
from teleport.auth import passwords
from teleport.auth.certs import CertIssuer
from teleport.auth.context import AuthContext, redact
from teleport.errors import AccessDenied, AlreadyExists, BadParameter, NotFound, NotSupported
from teleport.events import emitter as ev
from teleport.rbac.subject import HOST_KINDS, Caller
from teleport.services.presence import PresenceService
from teleport.services.tokens import TokenService
from teleport.types.resource import Metadata
from teleport.types.resources import ProvisionToken, ProvisionTokenSpec, Server, UserToken
from teleport.utils.versions import newer_major

log = logging.getLogger("teleport.auth")
#: What a join token may be for, as `tctl tokens add --type` spells it: a host's role, or a
#: leaf cluster's trust in this one (`trusted_cluster`, which no host can join with).
TRUSTED_CLUSTER = "trusted_cluster"
JOIN_ROLES = frozenset({*(kind.lower() for kind in HOST_KINDS), TRUSTED_CLUSTER})
MAX_TOKEN_TTL = timedelta(days=365)
#: Names under this suffix identify the cluster's own services in certificates; no host takes them.
RESERVED_NAME_SUFFIX = "teleport.cluster.local"


class Hosts:
    """Lets hosts join with a token and keeps what they announce; every join is audited."""

    def __init__(self, ctx: AuthContext, tokens: TokenService, presence: PresenceService,
                 certs: CertIssuer) -> None:
        self.ctx = ctx
        self.tokens = tokens
        self.presence = presence
        self.certs = certs

    # --- tokens -------------------------------------------------------------------------------

    async def create_provision_token(self, roles: list[str], ttl: timedelta,
                                     token: str | None = None, *, actor: str = "") -> ProvisionToken:
        """Create an invitation for hosts of the given roles, usable until it expires."""
        wanted = {r.lower() for r in roles}
        if not wanted or not wanted <= JOIN_ROLES:
            raise BadParameter(f"invalid token roles {','.join(roles) or '(none)'}: "
                               f"use {', '.join(sorted(JOIN_ROLES))}")
        if ttl <= timedelta(0) or ttl > MAX_TOKEN_TTL:
            raise BadParameter(f"token TTL must be positive and at most {MAX_TOKEN_TTL}")
        if token is not None and (len(token) < 8 or not token.isprintable() or "/" in token):
            raise BadParameter("a token must be at least 8 printable characters without '/'")
        record = ProvisionToken(
            metadata=Metadata(name=token or secrets.token_hex(16), expires=self.ctx.clock.now() + ttl),
            spec=ProvisionTokenSpec(roles=sorted(wanted)))
        created = await self.tokens.provision.create(record)
        await self.ctx.audit(ev.JOIN_TOKEN_CREATE, actor, name=redact(record.metadata.name),
                             roles=record.spec.roles, join_method="token",
                             expires=record.metadata.expires.isoformat() if
                             record.metadata.expires else "")
        return created

    async def list_tokens(self) -> tuple[list[ProvisionToken], list[UserToken]]:
        now = self.ctx.clock.now()
        static = [ProvisionToken(metadata=Metadata(name=t.token),
                                 spec=ProvisionTokenSpec(roles=sorted(t.roles)))
                  for t in self.ctx.settings.static_tokens]
        dynamic = [t for t in await self.tokens.provision.list() if not t.expired(now)]
        signups = [t for t in await self.tokens.signup.list() if not t.expired(now)]
        return static + dynamic, signups

    async def delete_token(self, token: str, *, actor: str = "") -> None:
        raw = passwords.utf8(token, "token")
        if any(secrets.compare_digest(raw, t.token.encode())
               for t in self.ctx.settings.static_tokens):
            raise BadParameter("static tokens are set in the config file and cannot be deleted")
        try:
            await self.tokens.provision.delete(token)
            event_type = ev.JOIN_TOKEN_DELETE
        except NotFound:
            await self.tokens.delete_signup(token)
            event_type = ev.RESET_PASSWORD_TOKEN_DELETE
        await self.ctx.audit(event_type, actor, name=redact(token))

    # --- joining ------------------------------------------------------------------------------

    async def check_token(self, token: str, role: str) -> None:
        """Accept a static or unexpired dynamic token that allows the role; else AccessDenied."""
        roles: set[str] | None = None
        raw = passwords.utf8(token, "join token")
        for static in self.ctx.settings.static_tokens:
            if secrets.compare_digest(raw, static.token.encode()):
                roles = {r.lower() for r in static.roles}
        if roles is None:
            try:
                record = await self.tokens.provision.get(token)
            except NotFound:
                record = None
            if record is not None and not record.expired(self.ctx.clock.now()):
                roles = set(record.spec.roles)
        if roles is None:
            raise AccessDenied("the join token is invalid, expired or revoked")
        if role.lower() not in roles:
            raise AccessDenied(f"the join token does not allow the {role.lower()} role")

    async def register_host(self, *, token: str, host_uuid: str, nodename: str, role: str,
                            ssh_public_key: str, tls_public_key: bytes, addresses: list[str],
                            remote_addr: str, version: str = "") -> IssuedCerts:
        """Let a new host join with a token: check it, audit the decision, sign its identity.

        version: the host's teleport version ("" from hosts that do not say), which may not be
        of a newer major version than ours.
        """
        if role not in HOST_KINDS:
            raise BadParameter(f"a host cannot join as {role!r}")
        who = f"{nodename} ({host_uuid})"
        try:
            await self.check_token(token, role)
            check_version(HOST_KINDS[Caller(role)], version)
            await self._check_host_is_new(host_uuid, nodename, Caller(role), addresses)
        except (AccessDenied, AlreadyExists, NotSupported) as err:
            await self.ctx.audit(ev.AUTH, who, method="token", role=role, success=False,
                                 error=str(err), addr_remote=remote_addr, token=redact(token))
            if isinstance(err, AccessDenied):
                err.mark_audited()
            raise
        certs = await self.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=nodename, system_role=role,
            ssh_public_key=ssh_public_key, tls_public_key=tls_public_key, addresses=addresses)
        await self.ctx.audit(ev.HOST_JOIN, who, method="token", role=role, success=True,
                             addr_remote=remote_addr, token=redact(token))
        return certs

    async def reissue_host_certs(self, *, host_uuid: str, role: str, nodename: str,
                                 ssh_public_key: str, tls_public_key: bytes,
                                 addresses: list[str]) -> IssuedCerts:
        """Sign new certificates for a host that proves it holds valid ones (a CA rotation).

        UUID and role are the caller certificate's; the name and addresses it asks for are
        checked as at join: nothing reserved, and no name another live host holds.
        """
        if role not in (Caller.NODE, Caller.PROXY) or not host_uuid:
            raise AccessDenied(f"{role or 'this caller'} may not re-issue host certificates")
        check_not_reserved([nodename, *addresses])
        owner = await self.presence.hostname_owner(nodename) if nodename else None
        if owner is not None and owner != host_uuid:
            raise AlreadyExists(f"host name {nodename!r} is in use by host {owner}, which is "
                                "online")
        certs = await self.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=nodename, system_role=role,
            ssh_public_key=ssh_public_key, tls_public_key=tls_public_key, addresses=addresses)
        log.info("Re-issued the %s certificates of %s (%s).", role.lower(), nodename, host_uuid)
        return certs

    async def _check_host_is_new(self, host_uuid: str, nodename: str, role: Caller,
                                 addresses: list[str]) -> None:
        """Refuse a join that would take over a live host's UUID or name, or a reserved name.

        A token lets a host in, not become another one: until the old host has stopped
        announcing itself for its TTL, its UUID and name stay its own.
        """
        check_not_reserved([nodename, *addresses])
        kind = HOST_KINDS[role]
        try:
            existing = await self.presence.store(kind).get(host_uuid)
        except NotFound:
            existing = None
        if existing is not None and not existing.expired(self.ctx.clock.now()):
            raise AlreadyExists(
                f"a {kind.replace('_', ' ')} with UUID {host_uuid} is already online "
                f"({existing.spec.hostname}); a host rejoins under its UUID only after it has "
                "been offline for its heartbeat TTL")
        owner = await self.presence.hostname_owner(nodename) if nodename else None
        if owner is not None and owner != host_uuid:
            raise AlreadyExists(f"host name {nodename!r} is in use by host {owner}, which is "
                                "online: pick another nodename")

    # --- presence -----------------------------------------------------------------------------

    async def upsert_server(self, server: Server) -> None:
        """Store a host's announcement; its host name must be free or already its own, and
        a node or proxy may not be of a newer major version than this auth server."""
        host_uuid, hostname = server.metadata.name, server.spec.hostname
        check_not_reserved([hostname])
        if server.kind in ("node", "proxy"):  # auth servers of one store upgrade one by one
            check_version(server.kind, server.spec.version)
        store = self.presence.store(server.kind)
        try:
            previous: Server | None = await store.get(host_uuid)
        except NotFound:
            previous = None
        if hostname:
            await self.presence.claim_hostname(hostname, host_uuid, server.metadata.expires)
        await store.put(server)
        if previous is not None and previous.spec.hostname.lower() != hostname.lower():
            await self.presence.release_hostname(previous.spec.hostname, host_uuid)

    async def keep_alive_server(self, kind: str, host_uuid: str, expires: datetime) -> None:
        """Extend a host's unchanged announcement to expires (its heartbeat's keep-alive);
        NotFound when the record is gone, and the host must announce itself whole again.

        Nothing is checked again: the record was checked when it was announced whole."""
        await self.presence.keep_alive(kind, host_uuid, expires)

    async def list_servers(self, kind: str) -> list[Server]:
        now = self.ctx.clock.now()
        return [s for s in await self.presence.store(kind).list() if not s.expired(now)]

    async def list_servers_json(self, kind: str) -> bytes:
        """Return the live hosts of kind as a JSON array, to relay without decoding them."""
        return await self.presence.store(kind).list_json(self.ctx.clock.now())


def check_not_reserved(names: list[str]) -> None:
    """Refuse host names and addresses under the cluster's own reserved suffix."""
    for name in names:
        plain = name.lower().rstrip(".")
        if plain == RESERVED_NAME_SUFFIX or plain.endswith("." + RESERVED_NAME_SUFFIX):
            raise AccessDenied(f"{name!r} is reserved for the cluster's own identities: "
                               "a host may not use it as its name or address")


def check_version(kind: str, version: str) -> None:
    """Refuse a node or proxy of a newer major version than this auth server, naming both
    (the manual's component compatibility: the auth server is upgraded first); "" (a host
    that does not say) passes."""
    if not version:
        return
    try:
        newer = newer_major(version, __version__)
    except BadParameter as err:
        raise BadParameter(f"{kind.replace('_', ' ')} version: {err}") from None
    if newer:
        raise NotSupported(f"this {kind.replace('_', ' ')} runs teleport {version}, newer than "
                           f"its auth server's {__version__}: upgrade the auth server first "
                           "(it must be the same major version or newer)")
