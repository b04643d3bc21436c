"""Who may still use the certificates they hold: the current-user check and the revocation list.

A certificate is a snapshot of its user at login and lives up to 30 hours, so deleting or
locking a user must be checked against the stored user, not the certificate. The auth API does
that on every call (`check_caller`); nodes and proxies, which must keep serving while the auth
server is down, poll a small list of revoked users instead (`Revocations`) and refuse, or hang up
on, certificates it names. Deletions leave a tombstone for as long as any certificate issued
before them can live, so a user created again under the same name does not revive old ones.
Locks (`tctl lock`, Teleport's `lock` resources) in force travel in the same list: a lock on a
user, on a role (judged by the roles a certificate carries) or on a node.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import weakref
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field

from teleport.backend.base import Backend, Item, key, range_end
from teleport.errors import AccessDenied, BadParameter, NotFound
from teleport.keys.identity import Identity
from teleport.keys.ssh import SSHCertInfo
from teleport.services.login_attempts import LOGIN_LOCK_MESSAGE
from teleport.types.locks import Lock
from teleport.types.resource import ZERO_TIME, Time
from teleport.types.resources import User

if TYPE_CHECKING:
    from teleport.auth.accounts import Accounts
    from teleport.auth.client import AuthClient

#: Certificates (SSH `valid_after`, X.509 `notBefore`) start this long before they were issued.
CERT_BACKDATE = timedelta(minutes=1)
#: How long a deletion is remembered: longer than the longest certificate (MAX_CERT_TTL, 30 h)
#: plus its backdating, after which every certificate issued before the deletion has expired.
TOMBSTONE_TTL = timedelta(hours=31)
#: How long the auth server reuses one computed list: every node polls it every few seconds.
LIST_REUSE_SECONDS = 1.0
_TOMBSTONES = ("access", "deleted")
#: Where deletions are remembered: the watch stream (`auth.api_watch`) reports them as user deletions.
TOMBSTONE_PREFIX = key(*_TOMBSTONES) + b"/"


# --- the stored user, now ---------------------------------------------------------------------

def is_user_locked(user: User, now: datetime) -> bool:
    """Tell whether a user is locked at now: `is_locked` until `lock_expires`, or for good if unset."""
    return user.spec.status.locked_at(now)


def revokes_access(user: User, now: datetime) -> bool:
    """Tell whether a lock ends the access of certificates already issued, not only logins.

    A lockout after failed logins (`LOGIN_LOCK_MESSAGE`) stops logins only, as in Teleport:
    otherwise anyone could cut a user's sessions by failing five logins in their name.
    """
    return is_user_locked(user, now) and user.spec.status.locked_message != LOGIN_LOCK_MESSAGE


def is_user_expired(user: User, now: datetime) -> bool:
    """Tell whether a user's `spec.expires` (unset: never) has passed."""
    return user.spec.expires > ZERO_TIME and user.spec.expires <= now


def user_refusal(user: User, now: datetime) -> str | None:
    """Return why a stored user's certificates are refused now (locked, expired), or None."""
    name = user.metadata.name
    if revokes_access(user, now):
        status = user.spec.status
        until = "" if status.lock_expires <= ZERO_TIME else \
            f" until {status.lock_expires:%Y-%m-%d %H:%M:%S} UTC"
        return f"user {name!r} is locked{until}" + \
            (f": {status.locked_message}" if status.locked_message else "")
    if is_user_expired(user, now):
        return f"user {name!r} expired at {user.spec.expires:%Y-%m-%d %H:%M:%S} UTC"
    return None


def check_user_active(user: User, now: datetime) -> None:
    """Raise AccessDenied if the stored user is locked (not by failed logins) or expired at now."""
    reason = user_refusal(user, now)
    if reason is not None:
        raise AccessDenied(reason)


def lock_refusal(locks: Iterable[Lock], now: datetime, *, user: str = "",
                 roles: Iterable[str] = (), node: str = "") -> str | None:
    """Return the reason of the first lock in force at now on the user, one of the roles, or
    the node (a host UUID), or None."""
    held = set(roles)
    for lock in locks:
        target = lock.spec.target
        if lock.in_force(now) and ((user and target.user == user) or
                                   (target.role and target.role in held) or
                                   (node and target.node == node)):
            return lock.reason()
    return None


async def check_not_locked(accounts: Accounts, user: User) -> None:
    """Raise AccessDenied with the lock's reason if a lock holds on the user or one of their
    stored roles."""
    now = accounts.ctx.clock.now()
    reason = lock_refusal(await accounts.locks.in_force(now), now, user=user.metadata.name,
                          roles=user.spec.roles)
    if reason is not None:
        raise AccessDenied(reason)


# --- what nodes and proxies poll --------------------------------------------------------------

class RevokedUser(BaseModel):
    """One reason to refuse a user's certificates."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    user: str
    reason: str
    #: Refuse only certificates issued at or before this time (a deletion); None: all of them.
    issued_before: Time | None = None
    #: Refuse until then (a lock's `lock_expires`); None: until the user is changed.
    until: Time | None = None

    def applies(self, issued: datetime, now: datetime) -> bool:
        if self.until is not None and self.until <= now:
            return False
        return self.issued_before is None or issued <= self.issued_before


class Revocations(BaseModel):
    """The auth server's list of users whose certificates no longer grant access (a wire payload).

    Unknown fields are ignored, so an older node keeps reading a newer auth server's answer.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    users: list[RevokedUser] = Field(default_factory=list)
    #: Locks in force when the list was made (each still ends at its own `spec.expires`).
    locks: list[Lock] = Field(default_factory=list)

    @cached_property
    def _by_user(self) -> dict[str, list[RevokedUser]]:
        index: dict[str, list[RevokedUser]] = {}
        for entry in self.users:
            index.setdefault(entry.user, []).append(entry)
        return index

    def refusal(self, user: str, issued: datetime, now: datetime,
                roles: Iterable[str] = ()) -> str | None:
        """Return why a certificate of user, carrying roles, issued at `issued` is refused now,
        or None. The certificate's roles decide role locks: a node has no stored user."""
        for entry in self._by_user.get(user, ()):
            if entry.applies(issued, now):
                return entry.reason
        return lock_refusal(self.locks, now, user=user, roles=roles)

    def ssh_refusal(self, cert: SSHCertInfo, now: datetime) -> str | None:
        """Return why a user's SSH certificate is refused now, or None."""
        return self.refusal(cert.key_id, ssh_cert_issued_at(cert), now, cert.roles)

    def node_refusal(self, host_uuid: str, now: datetime) -> str | None:
        """Return why a node (host UUID) is locked now, or None: it must serve no one."""
        return lock_refusal(self.locks, now, node=host_uuid)


def ssh_cert_issued_at(cert: SSHCertInfo) -> datetime:
    """Return when an SSH user certificate was issued (its start, less the backdating)."""
    return cert.valid_after + CERT_BACKDATE


def tls_cert_issued_at(der: bytes) -> datetime:
    """Return when an X.509 certificate was issued (its notBefore, less the backdating)."""
    try:
        return x509.load_der_x509_certificate(der).not_valid_before_utc + CERT_BACKDATE
    except ValueError as err:
        raise AccessDenied(f"invalid client certificate: {err}") from None


async def fetch_revocations(client: AuthClient) -> Revocations:
    """Ask the auth server for the revoked users (Node and Proxy identities)."""
    data = await client.call("GET", "/v1/revocations")
    try:
        return Revocations.model_validate(data)
    except ValueError as err:
        raise BadParameter(f"malformed revocation list from the auth server: {err}") from None


# --- on the auth server -----------------------------------------------------------------------

async def record_deletion(backend: Backend, name: str, now: datetime) -> None:
    """Remember that user name was deleted at now, for as long as its certificates can live."""
    body = json.dumps({"user": name, "deleted": now.isoformat()}).encode()
    await backend.put(Item(key(*_TOMBSTONES, name), body, now + TOMBSTONE_TTL))


async def deleted_at(backend: Backend, name: str) -> datetime | None:
    """Return when user name was last deleted, if that is recent enough to matter."""
    try:
        item = await backend.get(key(*_TOMBSTONES, name))
    except NotFound:
        return None
    return _tombstone(item.value)[1]


def _tombstone(value: bytes) -> tuple[str, datetime]:
    doc: dict[str, Any] = json.loads(value)
    return str(doc["user"]), datetime.fromisoformat(doc["deleted"])


class _Memo:
    def __init__(self) -> None:
        self.when = -math.inf  # time.monotonic(): a test's frozen clock must not freeze the list
        self.value = Revocations()
        #: Bumped by `forget_revocations`; a list computed across a bump is not reused.
        self.generation = 0
        self.change: object = None


_memos: weakref.WeakKeyDictionary[Accounts, _Memo] = weakref.WeakKeyDictionary()


def forget_revocations(accounts: Accounts, change: object) -> None:
    """Build the next list afresh: a change was just announced on the watch stream, and the
    refresh it prompts must not be answered with a list built before the change. Every stream
    announces the same change; only the first forgets, so it costs one new list, not one each."""
    memo = _memos.setdefault(accounts, _Memo())
    if change != memo.change:
        memo.when, memo.generation, memo.change = -math.inf, memo.generation + 1, change


async def list_revocations(accounts: Accounts) -> Revocations:
    """Build the list nodes poll: deleted users (tombstones), locked and expired users, locks."""
    now = accounts.ctx.clock.now()
    memo = _memos.setdefault(accounts, _Memo())
    if time.monotonic() - memo.when < LIST_REUSE_SECONDS:
        return memo.value
    generation = memo.generation
    entries: list[RevokedUser] = []
    start = TOMBSTONE_PREFIX
    for item in await accounts.ctx.backend.get_range(start, range_end(start)):
        name, when = _tombstone(item.value)
        entries.append(RevokedUser(user=name, reason=f"user {name!r} was deleted",
                                   issued_before=when))
    for user in await accounts.list_users():
        reason = user_refusal(user, now)
        if reason is None:
            continue
        status = user.spec.status
        until = status.lock_expires if revokes_access(user, now) and \
            status.lock_expires > ZERO_TIME else None
        entries.append(RevokedUser(user=user.metadata.name, reason=reason, until=until))
    locks = await accounts.locks.in_force(now)
    revocations = Revocations(users=entries, locks=locks)
    if memo.generation == generation:  # else a change landed while reading: build it again next
        memo.when, memo.value = time.monotonic(), revocations
    return revocations


async def check_user(accounts: Accounts, name: str, issued: datetime) -> User:
    """Return the stored user a certificate issued at `issued` speaks for, or refuse.

    The user must exist, must not have been deleted since the certificate was issued (a user
    created again under the same name), must be neither locked nor expired, and no lock may
    hold on the user or one of their roles.
    """
    try:
        user = await accounts.get_user(name)
    except NotFound:
        raise AccessDenied(f"user {name!r} no longer exists") from None
    deleted = await deleted_at(accounts.ctx.backend, name)
    if deleted is not None and issued <= deleted:
        raise AccessDenied(f"user {name!r} was deleted after this certificate was issued")
    check_user_active(user, accounts.ctx.clock.now())
    await check_not_locked(accounts, user)
    return user


async def check_caller(accounts: Accounts, identity: Identity, issued: datetime) -> Identity:
    """Return a user's identity with the roles and traits stored now, or refuse (the caller
    derives the logins from the roles)."""
    name = identity.username
    user = await check_user(accounts, name, issued)
    return dataclasses.replace(
        identity, roles=tuple(user.spec.roles),
        traits={k: tuple(v) for k, v in user.spec.traits.items()})


async def check_named_user(accounts: Accounts, name: str) -> User:
    """Return the user a proxy acts for (`?user=`), or refuse one who no longer exists, is
    locked or expired."""
    try:
        user = await accounts.get_user(name)
    except NotFound:
        raise AccessDenied(f"user {name!r} no longer exists") from None
    check_user_active(user, accounts.ctx.clock.now())
    await check_not_locked(accounts, user)
    return user
