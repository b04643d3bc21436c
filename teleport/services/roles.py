"""Roles (`/roles/<name>`): what users may reach and do, read by the auth server on every call."""

from __future__ import annotations

from collections.abc import Iterable

from teleport.backend.base import Backend
from teleport.errors import BadParameter
from teleport.services.store import ResourceStore
from teleport.types.roles import Role


class RoleService:
    def __init__(self, backend: Backend) -> None:
        self.roles = ResourceStore(backend, Role, "roles", noun="role")

    async def by_name(self) -> dict[str, Role]:
        """Return every stored role by name: what the evaluator looks roles up in."""
        return {r.metadata.name: r for r in await self.roles.list()}

    async def require(self, names: Iterable[str]) -> None:
        """Refuse names of roles that do not exist, so no user is stored holding one."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return
        stored = await self.by_name()
        missing = [n for n in wanted if n not in stored]
        if missing:
            raise BadParameter(f'role "{missing[0]}" does not exist: create it first '
                               "(tctl create) or use one of: " + ", ".join(sorted(stored)))
