"""The shape every resource shares, and the time format Teleport prints (zero = 0001-01-01)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)


def _to_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def format_time(value: datetime) -> str:
    """Format as RFC 3339 in UTC with a Z, the way resources print times."""
    value = value.astimezone(timezone.utc)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%SZ}"


Time = Annotated[datetime, BeforeValidator(_to_utc), PlainSerializer(format_time, return_type=str)]


class Model(BaseModel):
    """Frozen, strict about unknown keys: a typo in `tctl create` YAML is an error.

    Decoding keeps no strings (`cache_strings`): pydantic's default keeps the last 16,384 strings
    it read from JSON for the life of the process, and after a burst of node records those few
    survivors held the burst's memory (arenas) in the auth server.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, cache_strings=False)


class Metadata(Model):
    name: str = Field(min_length=1, max_length=253)
    namespace: str = "default"
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    expires: Time | None = None


class Resource(Model):
    kind: str
    version: str
    metadata: Metadata

    @property
    def name(self) -> str:
        return self.metadata.name

    def expired(self, now: datetime) -> bool:
        return self.metadata.expires is not None and self.metadata.expires <= now

    def without_secrets(self) -> Resource:
        """The resource as it may leave the auth server; kinds holding secrets override it."""
        return self
