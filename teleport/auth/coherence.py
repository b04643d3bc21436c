"""Keep what an auth server remembers between calls true while other auth servers write the
same backend (several auth servers on etcd or PostgreSQL, the manual's "High Availability").

Almost everything the auth server answers is read from the backend on every call: users, roles,
locks, CAs (so a CA changed by another server, e.g. a future rotation, is used at once), tokens,
connectors, web sessions. Static tokens and the cluster's settings come from the config, which
every auth server of a cluster must share, and are never written, so nothing is duplicated; the
cluster name, the CAs and the preset roles are created with one create each (a second server
starting at once gets `AlreadyExists` and reads the winner's). Failed logins are counted with a
compare-and-swap in the backend (`services.login_attempts`), so the per-server lock in
`auth.logins` only saves work.

One thing is kept: the revocation list is reused for a second (`access.LIST_REUSE_SECONDS`),
since every node and proxy polls it. A change announced on this server's watch streams makes
it build the next one afresh; a change written through another auth server is seen here only
through the backend's watch, which `follow_changes` follows for as long as the server runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from teleport.auth import access
from teleport.backend.base import EventType, key
from teleport.errors import TeleportError

if TYPE_CHECKING:
    from teleport.auth.server import AuthServer

log = logging.getLogger("teleport.auth")
#: A lost backend watch is opened again after this long at first, doubling up to RETRY_MAX.
RETRY_MIN = 0.2
RETRY_MAX = 5.0


def revoking_prefixes(auth: AuthServer) -> list[bytes]:
    """Where the changes that change the revocation list are written: locks, roles, users
    and user deletions (the same prefixes the watch stream announces as such)."""
    return [key(*store.prefix) + b"/" for store in (
        auth.resources.locks.locks, auth.resources.roles.roles, auth.accounts.users.users)
    ] + [access.TOMBSTONE_PREFIX]


async def follow_changes(auth: AuthServer, *, retry_max: float = RETRY_MAX) -> None:
    """Forget the reused revocation list whenever a lock, role or user changes in the backend,
    whichever auth server wrote it, until cancelled. While the watch is lost the list is still
    rebuilt every `LIST_REUSE_SECONDS`; a new watch forgets it at once (changes were missed)."""
    delay, lost = RETRY_MIN, False
    while True:
        try:
            async with await auth.backend.watch(revoking_prefixes(auth)) as watcher:
                async for event in watcher:
                    if event.type is EventType.INIT:
                        if lost:
                            log.info("following the backend's changes again")
                        delay, lost = RETRY_MIN, False
                        access.forget_revocations(auth.accounts, object())
                        continue
                    # Keyed as the watch streams key it: one change forgets the list once.
                    access.forget_revocations(auth.accounts, (event.type, event.item.key,
                                                              event.item.revision))
        except TeleportError as err:  # the store is unreachable, or this watcher fell behind
            if not lost:
                log.warning("cannot follow the backend's changes, the revocation list is "
                            "rebuilt every %gs meanwhile: %s", access.LIST_REUSE_SECONDS, err)
            lost = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)


__all__ = ["follow_changes", "revoking_prefixes"]
