"""A lock holds until its expiry (or for good) and targets exactly one thing (no network)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from teleport.errors import BadParameter
from teleport.types.codec import parse_yaml
from teleport.types.locks import Lock, LockSpec, LockTarget
from teleport.types.resource import Metadata

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def test_a_lock_holds_until_its_expiry_or_for_good() -> None:
    forever = Lock(metadata=Metadata(name="a"), spec=LockSpec(target=LockTarget(user="joe")))
    assert forever.in_force(NOW) and forever.in_force(NOW + timedelta(days=3650))
    hour = Lock(metadata=Metadata(name="b"), spec=LockSpec(
        target=LockTarget(role="dev"), expires=NOW + timedelta(hours=1)))
    assert hour.in_force(NOW + timedelta(minutes=59))
    assert not hour.in_force(NOW + timedelta(hours=1))


def test_the_reason_names_the_target_and_the_message() -> None:
    lock = Lock(metadata=Metadata(name="c"), spec=LockSpec(
        target=LockTarget(node="uuid-1"), message="disk swap"))
    assert lock.reason() == "lock targeting node=uuid-1 is in force: disk swap"


@pytest.mark.parametrize("target", ["{}", "{user: joe, role: dev}"])
def test_a_lock_targets_exactly_one_thing(target: str) -> None:
    with pytest.raises(BadParameter, match="exactly one of user, role or node"):
        parse_yaml(f"kind: lock\nversion: v2\nmetadata: {{name: x}}\nspec: {{target: {target}}}\n")
