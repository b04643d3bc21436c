"""Join tokens for hosts and signup tokens for users, plus the signup OTP secrets."""

from __future__ import annotations

from teleport.backend.base import Backend, Item, key
from teleport.errors import NotFound
from teleport.services.store import ResourceStore
from teleport.types.resources import ProvisionToken, UserToken


class TokenService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.provision = ResourceStore(backend, ProvisionToken, "tokens", noun="token")
        self.signup = ResourceStore(backend, UserToken, "usertokens", noun="signup token")

    async def create_signup(self, token: UserToken, otp_secret: str) -> None:
        """Store a signup token and the OTP secret the new user will enroll; both expire together."""
        await self.signup.create(token)
        secret_key = key("usertoken_secrets", token.metadata.name)
        await self.backend.put(Item(secret_key, otp_secret.encode(), token.metadata.expires))

    async def signup_otp_secret(self, token: str) -> str:
        try:
            return (await self.backend.get(key("usertoken_secrets", token))).value.decode()
        except NotFound:
            raise NotFound("signup token not found or expired") from None

    async def claim_signup(self, token: str) -> None:
        """Burn a signup token before using it: one atomic delete, so only one caller wins."""
        try:
            await self.delete_signup(token)
        except NotFound:
            raise NotFound("signup token not found or expired") from None

    async def delete_signup(self, token: str) -> None:
        await self.signup.delete(token)
        try:
            await self.backend.delete(key("usertoken_secrets", token))
        except NotFound:
            pass
