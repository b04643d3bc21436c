"""Durations are bounded when parsed (issue 9, finding 11b): no overflow deep inside a caller."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from teleport.errors import BadParameter
from teleport.utils.duration import MAX_DURATION, parse_duration


@pytest.mark.parametrize("text", ["99999999999999999h", "2562048h", "-99999999999999999h",
                                  "9" * 400 + "s", "1" + "0" * 30 + "ns"])
def test_durations_past_gos_limit_are_bad_parameters(text: str) -> None:
    with pytest.raises(BadParameter, match="too long") as info:
        parse_duration(text)
    assert len(str(info.value)) < 120  # the input is shortened, the message stays one short line


def test_the_longest_duration_still_works_with_dates() -> None:
    longest = parse_duration("2562047h")
    assert longest <= MAX_DURATION
    assert datetime.now(timezone.utc) + longest > datetime.now(timezone.utc)
    assert parse_duration("1h30m") == timedelta(minutes=90)
