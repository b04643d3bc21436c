"""Live terminal sessions other users may join (`tsh join`): one PTY, several channels.

Joining works as in the real Teleport: the client opens a session channel, sends the
environment variable `TELEPORT_SESSION=<sid>`, asks for a PTY and a shell, and instead of a new
shell the node attaches the channel to that session's terminal. Output fans out to every party,
what any party types goes to the terminal (and the recording), and the owner's window size
rules. Only the owner and users whose roles' `join_sessions` name one of the owner's roles (the
preset `admin` names all) may join, judged with the roles the node last fetched. When the
owner's shell ends, joined parties get its exit status and are disconnected; a party too slow to
read the output is dropped rather than allowed to stall the session or grow the node's memory.

While it lives, each session is announced to the auth server (refreshed well within the auth
server's TTL), so `tsh sessions ls` finds it and a crashed node's sessions drop out on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

from teleport.api.auth_models import AnnouncedSession
from teleport.api.constants import SESSION_ENV
from teleport.errors import TeleportError
from teleport.events.emitter import SESSION_JOIN, SESSION_LEAVE
from teleport.rbac import rules
from teleport.rbac.subject import Subject
from teleport.utils.waits import wait_event

if TYPE_CHECKING:
    from teleport.srv.session import NodeSession

log = logging.getLogger("teleport.node")

#: The environment variable a client sets to join a session instead of starting a shell.
JOIN_ENV = SESSION_ENV
#: How often a live session's listing is refreshed; the auth server keeps it for 90 s.
ANNOUNCE_SECONDS = 30.0
#: Output a joined party may leave unread before it is dropped.
PARTY_BACKLOG = 1024 * 1024


class SessionRegistry(Protocol):
    """Where a node lists its live sessions: the auth client."""

    async def announce_session(self, sid: str, session: AnnouncedSession) -> None: ...

    async def end_session(self, sid: str) -> None: ...


class LiveSession:
    """One session's terminal and the users joined to it; registered on the node while it runs."""

    def __init__(self, owner: NodeSession) -> None:
        self.owner = owner
        self.node = owner.conn.node
        self.created = self.node.clock.now()
        self.parties: list[NodeSession] = []
        self._changed = asyncio.Event()
        self._ended = False
        self.node.live[owner.sid] = self
        if self.node.registry is not None:
            self.node.spawn(self._announce(self.node.registry), f"announce {owner.sid}")

    def join(self, party: NodeSession) -> None:
        """Attach a party's channel if its user may join; raise AccessDenied if not."""
        cert = party.identity.cert
        access = self.node.access(cert) if self.node.roles is not None else None
        rules.check_join(Subject.user(party.identity.user, cert.roles, access),
                         self.owner.identity.user, self.owner.identity.cert.roles, self.owner.sid)
        party.sid = self.owner.sid
        party.joined = self
        self.parties.append(party)
        self._changed.set()
        self.node.spawn(party._audit(SESSION_JOIN), f"join {self.owner.sid}")

    def leave(self, party: NodeSession) -> None:
        """Detach a party that hung up or fell behind."""
        if self._detach(party):
            self.node.spawn(party._audit(SESSION_LEAVE), f"leave {self.owner.sid}")

    def _detach(self, party: NodeSession) -> bool:
        if party not in self.parties:
            return False
        self.parties.remove(party)
        party.joined = None
        self._changed.set()
        return True

    def output(self, data: bytes) -> None:
        """Copy the terminal's output to every party, dropping the ones too far behind."""
        for party in list(self.parties):
            chan = party.chan
            assert chan is not None
            try:
                if chan.get_write_buffer_size() > PARTY_BACKLOG:
                    self.leave(party)
                    chan.write_stderr(b"\r\nteleport: too far behind the session's output\r\n")
                    chan.exit(1)
                else:
                    chan.write(data)
            except OSError:  # the party's channel is already closing
                self.leave(party)

    def input(self, data: bytes) -> None:
        """Type a party's keys into the shared terminal, recorded like the owner's."""
        self.owner.data_received(data, None)

    async def end(self, code: int) -> None:
        """Disconnect every party with the owner's exit status, auditing their leave."""
        self._ended = True
        self._changed.set()
        self.node.live.pop(self.owner.sid, None)
        for party in list(self.parties):
            self._detach(party)
            assert party.chan is not None
            with contextlib.suppress(OSError):
                # A signal's death is reported the shell's way: 128 + the signal number.
                party.chan.exit(code if code >= 0 else 128 - code)
            await party._audit(SESSION_LEAVE)

    def _listing(self) -> AnnouncedSession:
        owner = self.owner.identity
        return AnnouncedSession(
            user=owner.user, login=owner.login, server_hostname=self.node.nodename,
            created=self.created.isoformat().replace("+00:00", "Z"),
            parties=[owner.user, *(p.identity.user for p in self.parties)])

    async def _announce(self, registry: SessionRegistry) -> None:
        """Keep this session listed, updated when parties come and go, and unlist it at the end."""
        while not self._ended:
            self._changed.clear()
            try:
                await registry.announce_session(self.owner.sid, self._listing())
            except TeleportError as err:
                log.warning("cannot list session %s: %s", self.owner.sid, err)
            await wait_event(self._changed, ANNOUNCE_SECONDS)
        try:
            await registry.end_session(self.owner.sid)
        except TeleportError as err:
            log.warning("cannot unlist session %s: %s", self.owner.sid, err)
