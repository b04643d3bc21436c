"""Local users, their password hashes and OTP secrets (failed logins: `login_attempts`)."""

from __future__ import annotations

from datetime import datetime

from teleport.backend.base import Backend, Item, key, range_end
from teleport.errors import AlreadyExists, NotFound
from teleport.services.store import ResourceStore
from teleport.types.resources import User


class UserService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.users = ResourceStore(backend, User, "users", noun="user")

    def _secret_key(self, user: str, what: str) -> bytes:
        self.users.key(user)  # validates the name
        return key("user_secrets", user, what)

    async def delete_user(self, name: str) -> None:
        """Delete the user and every secret kept for it."""
        await self.users.delete(name)
        start = key("user_secrets", name) + b"/"
        await self.backend.delete_range(start, range_end(start))

    async def _get_secret(self, user: str, what: str) -> bytes:
        try:
            return (await self.backend.get(self._secret_key(user, what))).value
        except NotFound:
            raise NotFound(f"user {user!r} has no {what} set") from None

    async def set_password_hash(self, user: str, password_hash: bytes) -> None:
        await self.backend.put(Item(self._secret_key(user, "pwd"), password_hash))

    async def get_password_hash(self, user: str) -> bytes:
        return await self._get_secret(user, "pwd")

    async def set_totp_secret(self, user: str, secret: str) -> None:
        await self.backend.put(Item(self._secret_key(user, "totp"), secret.encode()))

    async def get_totp_secret(self, user: str) -> str:
        return (await self._get_secret(user, "totp")).decode()

    async def clear_credentials(self, user: str) -> None:
        """Forget the password hash and OTP secret (a reset): no login passes until new ones."""
        for what in ("pwd", "totp"):
            try:
                await self.backend.delete(self._secret_key(user, what))
            except NotFound:
                pass

    async def mark_totp_used(self, user: str, code: str, expires: datetime) -> bool:
        """Remember a used OTP code; return False if it was already used (replay)."""
        try:
            await self.backend.create(Item(self._secret_key(user, f"otp-used-{code}"), b"1", expires))
        except AlreadyExists:
            return False
        return True
