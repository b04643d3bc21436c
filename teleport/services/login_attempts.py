"""Failed logins per user name, counted and locked in one atomic backend step.

Every attempt first reserves a slot with compare-and-swap, before the password is checked: an
attempt in flight counts as a failure until it succeeds, so however many attempts run at once
(on one auth server or on several sharing a backend), no more than `max_attempts` are ever
verified in a row without success, and once that many have failed nothing is let through until
the lock expires. Names that do not exist are counted the same way, so a lock reveals nothing
about which names exist.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import Field, ValidationError

from teleport.backend.base import Backend, Item, key
from teleport.errors import AlreadyExists, CompareFailed, NotFound
from teleport.types.resource import ZERO_TIME, Model, Time

#: An attempt whose server never reported back (it crashed) counts as failed after this long.
PENDING_TIMEOUT = timedelta(minutes=1)
#: Teleport's `locked_message` for a lock caused by failed logins (not by an administrator): it
#: stops logins only, certificates already issued keep working, or anyone could lock a user out
#: of their sessions by failing five logins.
LOGIN_LOCK_MESSAGE = "user has exceeded maximum failed login attempts"


class LoginAttempt(Model):
    id: str
    time: Time
    #: True while the attempt's password is being checked.
    pending: bool = True


class LoginAttempts(Model):
    """The stored record: recent attempts (failed or in flight) and the lock they caused."""

    attempts: list[LoginAttempt] = Field(default_factory=list)
    locked_until: Time = ZERO_TIME


@dataclass(frozen=True)
class LoginPolicy:
    max_attempts: int
    window: timedelta
    lock_duration: timedelta


class Locked(Exception):
    """The name is locked until `until`; carries no message meant for users."""

    def __init__(self, until: datetime) -> None:
        super().__init__(until)
        self.until = until


class LoginAttemptService:
    def __init__(self, backend: Backend, policy: LoginPolicy) -> None:
        self.backend = backend
        self.policy = policy

    def _key(self, name: str) -> bytes:
        if not name or "/" in name:
            raise NotFound(f"user {name!r} not found")
        return key("user_secrets", name, "login_attempts")

    def _fresh(self, record: LoginAttempts, now: datetime) -> LoginAttempts:
        """Drop what fell out of the window, end an expired lock, fail abandoned attempts."""
        policy = self.policy
        attempts = [a if not a.pending or a.time > now - PENDING_TIMEOUT
                    else a.model_copy(update={"pending": False})
                    for a in record.attempts if a.time > now - policy.window]
        locked_until = record.locked_until if record.locked_until > now else ZERO_TIME
        return self._maybe_lock(LoginAttempts(attempts=attempts, locked_until=locked_until), now)

    def _maybe_lock(self, record: LoginAttempts, now: datetime) -> LoginAttempts:
        failed = [a for a in record.attempts if not a.pending]
        if len(failed) < self.policy.max_attempts:
            return record
        # Lock and forget the failures; attempts still in flight keep their slots.
        return LoginAttempts(attempts=[a for a in record.attempts if a.pending],
                             locked_until=now + self.policy.lock_duration)

    async def _update(self, name: str, now: datetime,
                      change: Callable[[LoginAttempts], LoginAttempts]) -> LoginAttempts:
        """Apply change to the stored record atomically, retrying when another writer won."""
        item_key = self._key(name)
        while True:
            try:
                current: Item | None = await self.backend.get(item_key)
            except NotFound:
                current = None
            record = LoginAttempts()
            if current is not None:
                try:
                    record = LoginAttempts.model_validate_json(current.value)
                except ValidationError:
                    pass  # unreadable: start over rather than lock anyone out forever
            updated = change(self._fresh(record, now))
            if current is not None and updated == record:
                return updated  # nothing to write (a refusal while locked)
            expires = max(now + self.policy.window, updated.locked_until)
            item = Item(item_key, updated.model_dump_json().encode(), expires)
            try:
                if current is None:
                    await self.backend.create(item)
                else:
                    await self.backend.compare_and_swap(current, item)
            except (AlreadyExists, CompareFailed, NotFound):
                continue
            return updated

    async def reserve(self, name: str, now: datetime) -> str | None:
        """Take a slot for one attempt and return its id; None while all slots are in flight.

        Raises Locked if the name is locked.
        """
        attempt_id = secrets.token_hex(8)
        taken = False

        def change(record: LoginAttempts) -> LoginAttempts:
            nonlocal taken
            taken = False
            if record.locked_until > now:
                return record
            if len(record.attempts) >= self.policy.max_attempts:
                return record
            taken = True
            return record.model_copy(update={
                "attempts": [*record.attempts, LoginAttempt(id=attempt_id, time=now)]})

        record = await self._update(name, now, change)
        if record.locked_until > now:
            raise Locked(record.locked_until)
        return attempt_id if taken else None

    async def fail(self, name: str, attempt_id: str, now: datetime) -> datetime | None:
        """Turn the attempt into a failure; return the lock's end if this failure locked the name."""

        def change(record: LoginAttempts) -> LoginAttempts:
            others = [a for a in record.attempts if a.id != attempt_id]
            failed = LoginAttempt(id=attempt_id, time=now, pending=False)
            return self._maybe_lock(record.model_copy(update={"attempts": [*others, failed]}), now)

        record = await self._update(name, now, change)
        return record.locked_until if record.locked_until > now else None

    async def succeed(self, name: str, attempt_id: str, now: datetime) -> None:
        """Forget the failures (as Teleport does after a login); others in flight keep their slots."""
        await self._update(name, now, lambda r: r.model_copy(update={
            "attempts": [a for a in r.attempts if a.pending and a.id != attempt_id]}))

    async def cancel(self, name: str, attempt_id: str, now: datetime) -> None:
        """Give the slot back without counting it: the attempt was never decided."""
        await self._update(name, now, lambda r: r.model_copy(update={
            "attempts": [a for a in r.attempts if a.id != attempt_id]}))

    async def clear(self, name: str) -> None:
        """Forget every attempt and lock, for an administrator unlocking the user."""
        try:
            await self.backend.delete(self._key(name))
        except NotFound:
            pass
