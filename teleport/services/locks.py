"""Locks (`/locks/<name>`): stops on a user, a role or a node, kept until removed or expired."""

from __future__ import annotations

from datetime import datetime

from teleport.backend.base import Backend
from teleport.services.store import ResourceStore
from teleport.types.locks import Lock


class LockService:
    def __init__(self, backend: Backend) -> None:
        # A lock with an expiry is stored with it, so the backend drops it when it runs out.
        self.locks = ResourceStore(backend, Lock, "locks", noun="lock")

    async def in_force(self, now: datetime) -> list[Lock]:
        """Return the locks that hold at now."""
        return [lock for lock in await self.locks.list() if lock.in_force(now)]
