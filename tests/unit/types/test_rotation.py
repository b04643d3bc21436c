"""The rotation phases: which may follow which, and what a refusal tells the admin."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from teleport.errors import BadParameter
from teleport.types.rotation import NEXT, Phase, RotationSchedule, check_transition

FORWARD = [Phase.STANDBY, Phase.INIT, Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS, Phase.STANDBY]


def test_the_forward_path_and_every_rollback_are_allowed() -> None:
    for current, wanted in zip(FORWARD, FORWARD[1:], strict=False):
        check_transition("user", current, wanted)
        assert NEXT[current][0] is wanted
    for current in (Phase.INIT, Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS):
        check_transition("host", current, Phase.ROLLBACK)
    check_transition("host", Phase.ROLLBACK, Phase.STANDBY)


@pytest.mark.parametrize(("current", "wanted", "message"), [
    (Phase.STANDBY, Phase.UPDATE_CLIENTS, "not being rotated: start with --phase=init"),
    (Phase.STANDBY, Phase.ROLLBACK, "not being rotated"),
    (Phase.INIT, Phase.INIT, "in progress \\(phase init\\).*next: update_clients or rollback"),
    (Phase.UPDATE_CLIENTS, Phase.INIT, "in progress"),
    (Phase.INIT, Phase.UPDATE_SERVERS, "next phase is update_clients or rollback, not update_servers"),
    (Phase.INIT, Phase.STANDBY, "next phase is update_clients or rollback, not standby"),
    (Phase.UPDATE_CLIENTS, Phase.STANDBY, "next phase is update_servers or rollback"),
    (Phase.ROLLBACK, Phase.UPDATE_CLIENTS, "next phase is standby, not update_clients"),
    (Phase.ROLLBACK, Phase.ROLLBACK, "next phase is standby"),
])
def test_a_phase_out_of_order_names_the_allowed_ones(current: Phase, wanted: Phase,
                                                    message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        check_transition("user", current, wanted)


def test_an_automatic_rotation_spreads_its_phases_over_the_grace_period() -> None:
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    schedule = RotationSchedule.spread(start, timedelta(hours=48))
    assert schedule.due(Phase.INIT) == start + timedelta(hours=16)
    assert schedule.due(Phase.UPDATE_CLIENTS) == start + timedelta(hours=32)
    assert schedule.due(Phase.UPDATE_SERVERS) == start + timedelta(hours=48)
    assert schedule.due(Phase.STANDBY) is None
    assert schedule.due(Phase.ROLLBACK) is None
