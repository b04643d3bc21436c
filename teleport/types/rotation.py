"""A CA's rotation: its phases, the one function that says which phase may follow which, and
the record kept in the CA's spec (`spec.rotation`, as Teleport writes it).

    standby ─► init ─► update_clients ─► update_servers ─► standby
                 │            │                 │
                 └────────────┴──► rollback ◄───┘ ─► standby

- init: a new key pair is trusted next to the old one; the old one still signs.
- update_clients: the new pair signs; both are trusted; hosts re-issue their identity and use
  it as clients (the certificates they present as servers are still the old CA's).
- update_servers: hosts present the new certificates as servers too.
- standby (from update_servers): the old pair is dropped; certificates it signed are refused.
- rollback: the old pair signs again, the new one is still trusted so hosts can re-issue;
  standby (from rollback) drops the new pair.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import Field

from teleport.errors import BadParameter
from teleport.types.resource import ZERO_TIME, Model, Time
from teleport.types.roles import Duration


class Phase(StrEnum):
    STANDBY = "standby"
    INIT = "init"
    UPDATE_CLIENTS = "update_clients"
    UPDATE_SERVERS = "update_servers"
    ROLLBACK = "rollback"


class Mode(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


#: Which phases may follow each phase; the first is the way forward.
NEXT: dict[Phase, tuple[Phase, ...]] = {
    Phase.STANDBY: (Phase.INIT,),
    Phase.INIT: (Phase.UPDATE_CLIENTS, Phase.ROLLBACK),
    Phase.UPDATE_CLIENTS: (Phase.UPDATE_SERVERS, Phase.ROLLBACK),
    Phase.UPDATE_SERVERS: (Phase.STANDBY, Phase.ROLLBACK),
    Phase.ROLLBACK: (Phase.STANDBY,),
}

DEFAULT_GRACE_PERIOD = timedelta(hours=48)


def check_transition(ca_type: str, current: Phase, wanted: Phase) -> None:
    """Refuse a phase that may not follow `current`, naming the ones that may."""
    allowed = NEXT[current]
    if wanted in allowed:
        return
    if current is Phase.STANDBY:
        raise BadParameter(f"the {ca_type} CA is not being rotated: start with --phase=init")
    if wanted is Phase.INIT:
        raise BadParameter(f"a rotation of the {ca_type} CA is in progress (phase {current}): "
                           f"finish it or roll it back first (next: {' or '.join(allowed)})")
    raise BadParameter(f"the {ca_type} CA is in phase {current}: the next phase is "
                       f"{' or '.join(allowed)}, not {wanted}")


class RotationSchedule(Model):
    """When an automatic rotation enters each phase."""

    update_clients: Time = ZERO_TIME
    update_servers: Time = ZERO_TIME
    standby: Time = ZERO_TIME

    @classmethod
    def spread(cls, start: datetime, grace_period: timedelta) -> RotationSchedule:
        """Thirds of the grace period: clients first, then servers, then the old CA goes."""
        third = grace_period / 3
        return cls(update_clients=start + third, update_servers=start + 2 * third,
                   standby=start + grace_period)

    def due(self, phase: Phase) -> datetime | None:
        """When an automatic rotation leaves `phase` for the next one (None: it does not)."""
        return {Phase.INIT: self.update_clients, Phase.UPDATE_CLIENTS: self.update_servers,
                Phase.UPDATE_SERVERS: self.standby}.get(phase)


class Rotation(Model):
    """`spec.rotation` of a CA."""

    state: Literal["standby", "in_progress"] = "standby"
    phase: Phase = Phase.STANDBY
    mode: Mode | Literal[""] = ""
    #: Names this rotation (a new one each time a rotation starts); hosts compare it with theirs.
    current_id: str = ""
    started: Time = ZERO_TIME
    grace_period: Duration = timedelta(0)
    last_rotated: Time = ZERO_TIME
    schedule: RotationSchedule = Field(default_factory=RotationSchedule)

    @property
    def in_progress(self) -> bool:
        return self.state == "in_progress"

    def ends(self) -> datetime | None:
        """When the old (or, rolling back, the new) keys stop being trusted, if known."""
        if not self.in_progress or self.grace_period == timedelta(0):
            return None
        return self.started + self.grace_period
