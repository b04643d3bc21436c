"""Stored records as `tctl nodes ls` and `users ls` read them: plain dataclasses decoded with
`utils.plain`, as the listings of `listing_models` are (apart from them so that `tsh ls` does not
build these classes too).

The auth API answers with whole resources (`types.resources`); these read the fields a listing
prints and ignore the rest, so that `tctl` need not build the resource models.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RecordMeta:
    """A record's name and static labels."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class LabelResult:
    """A dynamic label's last output."""

    result: str = ""


@dataclass(slots=True)
class HostFields:
    hostname: str
    addr: str = ""
    use_tunnel: bool = False
    cmd_labels: dict[str, LabelResult] = field(default_factory=dict)


@dataclass(slots=True)
class HostRecord:
    """A `node` record (`types.resources.Server`) as `tctl nodes ls` reads it."""

    metadata: RecordMeta
    spec: HostFields

    def all_labels(self) -> dict[str, str]:
        """Static and dynamic labels in one map, as `Server.all_labels`."""
        return {**self.metadata.labels, **{k: v.result for k, v in self.spec.cmd_labels.items()}}


@dataclass(slots=True)
class UserFields:
    roles: list[str] = field(default_factory=list)
    traits: dict[str, list[str]] = field(default_factory=dict)


@dataclass(slots=True)
class UserRecord:
    """A `user` record (`types.resources.User`) as `tctl users ls` reads it."""

    metadata: RecordMeta
    spec: UserFields

    @property
    def logins(self) -> list[str]:
        return self.spec.traits.get("logins", [])
