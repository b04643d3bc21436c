"""Sessions: stored recordings (`tsh play`) and live sessions (`tsh sessions ls`, `tsh join`).

Who may see which session is `teleport.rbac.rules`' to say; this part finds the owner.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from teleport.api.auth_models import AnnouncedSession
from teleport.auth.context import AuthContext
from teleport.errors import NotFound, NotSupported
from teleport.events.sessions_store import SessionStore
from teleport.events.shared_recordings import SharedSessionStore
from teleport.rbac import rules
from teleport.rbac.subject import Subject
from teleport.services.live_sessions import LiveSession, LiveSessionService
from teleport.services.presence import PresenceService

#: How long a live session stays listed after its node last refreshed it.
ACTIVE_SESSION_TTL = timedelta(seconds=90)


class Sessions:
    """Keeps recordings and the list of live sessions, and answers who may see them."""

    def __init__(self, ctx: AuthContext, presence: PresenceService,
                 live: LiveSessionService) -> None:
        self.ctx = ctx
        self.presence = presence
        self.live = live

    @functools.cached_property
    def recordings(self) -> SessionStore:
        """Open the recordings folder on first use, so hosts without one never create it."""
        settings = self.ctx.settings
        if settings.recordings_dir is None:
            raise NotSupported("this auth server does not store session recordings")
        if settings.recordings_store is not None:
            return SharedSessionStore(settings.recordings_dir, settings.recordings_store,
                                      max_bytes=settings.max_recording_bytes)
        return SessionStore(settings.recordings_dir, max_bytes=settings.max_recording_bytes)

    async def ship_recordings(self) -> None:
        """Run for as long as the server does when recordings go to a shared object store:
        move the ones this server received into it (`teleport.events.shared_recordings`)."""
        store = self.recordings
        if isinstance(store, SharedSessionStore):
            await store.ship()

    async def check_play(self, sid: str, subject: Subject) -> None:
        """Refuse to replay a recording to anyone the rules do not let see it."""
        summary = await self.recordings.summary(sid)
        rules.check_play(subject, summary.user, sid)

    # --- live sessions ------------------------------------------------------------------------

    async def announce(self, server_id: str, sid: str, session: AnnouncedSession) -> None:
        """Store a node's live session until it ends or its node stops refreshing it (a crash).

        The session is bound to the node that first announced it (`LiveSessionService`), and
        is listed under that node's registered host name, never a name the node claims.
        """
        record = LiveSession(**{**session.model_dump(), "sid": sid, "server_id": server_id,
                                "server_hostname": await self._registered_hostname(server_id)})
        await self.live.announce(record, self.ctx.clock.now() + ACTIVE_SESSION_TTL)

    async def _registered_hostname(self, server_id: str) -> str:
        """Return the host name a node announced in its heartbeat, or its UUID if it has none."""
        try:
            node = await self.presence.nodes.get(server_id)
        except NotFound:
            return server_id
        return node.spec.hostname if not node.expired(self.ctx.clock.now()) and \
            node.spec.hostname else server_id

    async def end(self, server_id: str, sid: str) -> None:
        """Forget a live session; only the node that runs it may end it."""
        await self.live.end(sid, server_id)

    async def list_active(self, subject: Subject,
                          roles_of: Callable[[str], Awaitable[Sequence[str]]]) -> list[LiveSession]:
        """List the live sessions the subject may see (and so join), oldest first; `roles_of`
        tells a session owner's roles as stored now (what `join_sessions` speaks of)."""
        return [s for s in await self.live.list(self.ctx.clock.now())
                if rules.may_list_live_session(subject, s.user, await roles_of(s.user))]
