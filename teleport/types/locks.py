"""The `lock` resource: a stop on a user, a role or a node, until it is removed or expires.

As in Teleport (`kind: lock`, `version: v2`, the name a UUID): a lock in force refuses new
logins, certificates and connections of what it targets and ends its live sessions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from teleport.types.resource import ZERO_TIME, Model, Resource, Time


class LockTarget(Model):
    """What a lock stops: exactly one of a user, a role or a node (its host UUID)."""

    user: str = ""
    role: str = ""
    node: str = ""

    @model_validator(mode="after")
    def _exactly_one(self) -> LockTarget:
        named = [f for f in ("user", "role", "node") if getattr(self, f)]
        if len(named) != 1:
            raise ValueError("a lock targets exactly one of user, role or node")
        return self

    def describe(self) -> str:
        """Say what the lock targets, as `user=joe`."""
        for field in ("user", "role", "node"):
            if getattr(self, field):
                return f"{field}={getattr(self, field)}"
        return ""


class LockSpec(Model):
    target: LockTarget
    message: str = ""
    #: When the lock stops holding; unset, it holds until removed (also in metadata.expires).
    expires: Time | None = None
    created_at: Time = ZERO_TIME
    created_by: str = ""


class Lock(Resource):
    kind: Literal["lock"] = "lock"
    version: Literal["v2"] = "v2"
    spec: LockSpec = Field(...)

    def in_force(self, now: datetime) -> bool:
        """Tell whether the lock holds at now (unset expiry: until removed)."""
        return self.spec.expires is None or self.spec.expires > now

    def reason(self) -> str:
        """The refusal users see: Teleport's words, with the lock's message when it has one."""
        text = f"lock targeting {self.spec.target.describe()} is in force"
        return f"{text}: {self.spec.message}" if self.spec.message else text
