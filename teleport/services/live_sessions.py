"""Live sessions that nodes announce (`tsh sessions ls`, `tsh join`), each bound to its node.

A node refreshes its session while it runs and ends it when it stops; a node that crashes stops
refreshing, and its sessions expire. The node that first announced a session owns it: another
node can neither overwrite nor end it. Records keep the JSON the auth server wrote before this
service existed, under the same keys, so stored sessions survive an upgrade.

Ending a session leaves a marker beside it, under `/sessions/ended/`, until the session would
have expired anyway: a refresh that was already on its way when the session ended (a retried
request, a slow network) then finds the marker and is refused, instead of listing the ended
session again for a whole TTL.
"""

from __future__ import annotations

import builtins
from datetime import datetime

from pydantic import ValidationError

from teleport.backend.base import Backend, Item, key, range_end
from teleport.errors import AccessDenied, AlreadyExists, NotFound
from teleport.services.claims import claim
from teleport.types.resource import Model


class LiveSession(Model):
    """The stored record; server_id is the owning node, server_hostname its registered name."""

    sid: str
    user: str
    login: str
    server_id: str
    server_hostname: str
    created: str
    parties: list[str] = []


def _owner(item: Item) -> str:
    try:
        return LiveSession.model_validate_json(item.value).server_id
    except ValidationError:
        return ""  # unreadable: nobody may replace it; it expires with its TTL


class LiveSessionService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @staticmethod
    def _key(sid: str, state: str = "active") -> bytes:
        if not sid or "/" in sid:
            raise NotFound(f"session {sid!r} not found")
        return key("sessions", state, sid)

    async def announce(self, record: LiveSession, expires: datetime) -> None:
        """Store or refresh record until expires, for the node that first announced it.

        AccessDenied if another node owns the session, NotFound if it has ended.
        """
        sid = record.sid
        item = Item(self._key(sid), record.model_dump_json().encode(), expires)
        ended = NotFound(f"session {sid} has ended")
        # Unbounded tries: only the owner gets as far as the swap, so a failed swap means the
        # owner's own newer refresh landed; every refresh must succeed, none is lost.
        created = await claim(
            self.backend, item, record.server_id, _owner,
            refuse=lambda _: AccessDenied(f"session {sid} belongs to another node"),
            busy=f"session {sid} changed meanwhile, try again", vanished=ended, attempts=None)
        if created and await self._has_ended(sid):
            # end() writes its marker before it deletes, so a create that lands after the delete
            # sees the marker here; take the session back down.
            await self._forget(sid)
            raise ended

    async def end(self, sid: str, server_id: str) -> None:
        """Unlist a session; only its node may. Ending one that is gone does nothing."""
        try:
            stored = await self.backend.get(self._key(sid))
        except NotFound:
            return
        if _owner(stored) != server_id:
            raise AccessDenied(f"session {sid} belongs to another node")
        marker = Item(self._key(sid, "ended"), server_id.encode(), stored.expires)
        try:
            await self.backend.create(marker)
        except AlreadyExists:
            pass  # ended twice at once: the first marker stands
        await self._forget(sid)

    async def list(self, now: datetime) -> builtins.list[LiveSession]:
        """Return the sessions not expired at now, oldest first."""
        start = key("sessions", "active") + b"/"
        sessions = []
        for item in await self.backend.get_range(start, range_end(start)):
            if item.expires is not None and item.expires <= now:
                continue
            try:
                sessions.append(LiveSession.model_validate_json(item.value))
            except ValidationError:
                continue  # one unreadable record must not hide every other session
        return sorted(sessions, key=lambda s: (s.created, s.sid))

    async def _has_ended(self, sid: str) -> bool:
        try:
            await self.backend.get(self._key(sid, "ended"))
        except NotFound:
            return False
        return True

    async def _forget(self, sid: str) -> None:
        try:
            await self.backend.delete(self._key(sid))
        except NotFound:
            pass
