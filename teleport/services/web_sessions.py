"""Browser sessions the auth server keeps for the proxies' web UI, one item per session.

A session lives under `/web/sessions/<user>/<id>` until its `idle_expires`, which the backend
enforces as the item's expiry: a page that stops renewing loses the session ten minutes later,
on every proxy at once. Renewing moves `idle_expires` forward, never past `expires` (the
certificates' end), with one compare-and-swap, so a renewal racing a logout cannot bring a
deleted session back. Keeping every session of a user under one prefix lets deleting or
locking the user end them all with one range delete.
"""

from __future__ import annotations

import builtins
import hmac
import re
import secrets
from datetime import datetime, timedelta

from pydantic import ValidationError

from teleport.backend.base import Backend, Item, key, range_end
from teleport.errors import CompareFailed, NotFound
from teleport.types.resource import Model, Time

#: How long a session lives without a renewal (Teleport's web idle timeout).
IDLE_TIMEOUT = timedelta(minutes=10)
_ID = re.compile(r"[0-9a-f]{64}")


class WebSessionRecord(Model):
    """The stored session: the browser's secrets and the keys the proxy acts with as the user."""

    id: str
    user: str
    created: Time
    #: The absolute end: the certificates expire then, and no renewal goes past it.
    expires: Time
    idle_expires: Time
    bearer_token: str
    ssh_private_key: str
    ssh_cert: str
    tls_private_key: str
    tls_cert: str
    tls_ca_certs: list[str]
    host_ca_keys: list[str]
    logins: list[str]
    roles: list[str]


def new_secret() -> str:
    """Return a fresh session id or bearer token: 32 random bytes in hex."""
    return secrets.token_hex(32)


def bearer_matches(expected: str, presented: str) -> bool:
    """Tell whether a presented bearer token is a session's, in constant time (the proxy asks).

    Compared as UTF-8 bytes: `compare_digest` refuses non-ASCII str, and a browser's header is
    whatever it sends.
    """
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogatepass"))


def idle_deadline(now: datetime, expires: datetime,
                  idle_timeout: timedelta = IDLE_TIMEOUT) -> datetime:
    """Return when a session used at now goes idle: now + the idle timeout, capped at expires."""
    return min(now + idle_timeout, expires)


class WebSessionService:
    def __init__(self, backend: Backend, idle_timeout: timedelta = IDLE_TIMEOUT) -> None:
        self.backend = backend
        self.idle_timeout = idle_timeout

    @staticmethod
    def _prefix(user: str) -> bytes:
        if not user or "/" in user:
            raise NotFound(f"user {user!r} has no web sessions")
        return key("web", "sessions", user) + b"/"

    def _key(self, user: str, session_id: str) -> bytes:
        if not _ID.fullmatch(session_id):
            raise NotFound("web session not found or expired")
        return self._prefix(user) + session_id.encode()

    async def create(self, record: WebSessionRecord) -> WebSessionRecord:
        """Store a new session until its idle_expires."""
        item = Item(self._key(record.user, record.id), record.model_dump_json().encode(),
                    record.idle_expires)
        await self.backend.create(item)
        return record

    async def _read(self, user: str, session_id: str, now: datetime) -> tuple[Item, WebSessionRecord]:
        gone = NotFound("web session not found or expired")
        try:
            item = await self.backend.get(self._key(user, session_id))
        except NotFound:
            raise gone from None
        try:
            record = WebSessionRecord.model_validate_json(item.value)
        except ValidationError:
            raise gone from None  # unreadable: as good as gone; it expires with its item
        if record.idle_expires <= now or record.user != user or record.id != session_id:
            raise gone
        return item, record

    async def get(self, user: str, session_id: str, now: datetime) -> WebSessionRecord:
        """Return a live session or raise NotFound (never was, logged out, idle, expired)."""
        return (await self._read(user, session_id, now))[1]

    async def renew(self, user: str, session_id: str, now: datetime) -> WebSessionRecord:
        """Move idle_expires to now + the idle timeout, capped at expires; NotFound when gone."""
        while True:
            item, record = await self._read(user, session_id, now)
            # Live (idle_expires > now) means expires > now too: the new deadline is ahead.
            idle = idle_deadline(now, record.expires, self.idle_timeout)
            if idle <= record.idle_expires:
                return record  # nothing to move (renewed twice at once, or at the cap)
            renewed = record.model_copy(update={"idle_expires": idle})
            try:
                await self.backend.compare_and_swap(
                    item, Item(item.key, renewed.model_dump_json().encode(), idle))
            except CompareFailed:
                continue  # another renewal landed first: judge again from what it wrote
            except NotFound:
                raise NotFound("web session not found or expired") from None
            return renewed

    async def delete(self, user: str, session_id: str) -> None:
        """End one session (logout); ending one that is gone does nothing."""
        try:
            await self.backend.delete(self._key(user, session_id))
        except NotFound:
            pass

    async def delete_all(self, user: str) -> None:
        """End every session of a user (deleted or locked)."""
        start = self._prefix(user)
        await self.backend.delete_range(start, range_end(start))

    async def list(self, user: str, now: datetime) -> builtins.list[WebSessionRecord]:
        """Return a user's live sessions, oldest first."""
        start = self._prefix(user)
        records = []
        for item in await self.backend.get_range(start, range_end(start)):
            try:
                record = WebSessionRecord.model_validate_json(item.value)
            except ValidationError:
                continue
            if record.idle_expires > now:
                records.append(record)
        return sorted(records, key=lambda r: (r.created, r.id))
