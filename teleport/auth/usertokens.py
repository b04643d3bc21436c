"""User tokens: the links that set a password, for a new user (signup) or after a reset.

Both kinds are one `UserToken` resource that differ in `spec.usage` and lifetime, and both
are completed the same way (`Accounts.complete_signup`); a user holds at most one at a time,
so a lost link is replaced by issuing a new one, never kept alive beside it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from teleport.errors import BadParameter, NotFound
from teleport.services.login_attempts import LOGIN_LOCK_MESSAGE
from teleport.services.tokens import TokenService
from teleport.types.resources import LoginStatus, User

#: Teleport's defaults: a signup link lives 1 h (at most 48 h), a reset link 8 h.
SIGNUP_TOKEN_TTL = timedelta(hours=1)
MAX_SIGNUP_TOKEN_TTL = timedelta(hours=48)
RESET_TOKEN_TTL = timedelta(hours=8)
Usage = Literal["signup", "reset"]
SIGNUP: Usage = "signup"
RESET: Usage = "reset"


def signup_ttl(ttl: timedelta | None) -> timedelta:
    """Return the signup link's lifetime: the default, or one within (0, 48h]."""
    if ttl is None:
        return SIGNUP_TOKEN_TTL
    if ttl <= timedelta(0):
        raise BadParameter("--ttl must be positive")
    if ttl > MAX_SIGNUP_TOKEN_TTL:
        raise BadParameter("--ttl must be at most 48h")
    return ttl


async def delete_user_tokens(tokens: TokenService, user: str) -> int:
    """Delete every signup or reset token of a user (their OTP secrets too); return how many."""
    deleted = 0
    for token in await tokens.signup.list():
        if token.spec.user == user:
            try:
                await tokens.delete_signup(token.metadata.name)
            except NotFound:  # used or expired meanwhile: the same end
                continue
            deleted += 1
    return deleted


def without_login_lockout(user: User) -> User | None:
    """Return the user with a failed-login lockout lifted, or None if there is none to lift.

    An administrator's lock (any other message) stays: a reset replaces credentials, it does
    not overrule a decision to keep someone out (`tctl users unlock` does that).
    """
    status = user.spec.status
    if not status.is_locked or status.locked_message != LOGIN_LOCK_MESSAGE:
        return None
    return user.model_copy(update={"spec": user.spec.model_copy(
        update={"status": LoginStatus()})})
