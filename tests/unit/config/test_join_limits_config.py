"""`auth_service.join_limits`: defaults, the values a file sets, one-line refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest

from teleport.config import StartFlags, make_config, parse_file_config
from tests.unit.config.errors import error_of


def test_defaults_limit_failures_per_source_and_all_joins() -> None:
    limits = make_config(None, StartFlags(roles="auth")).auth.join_limits
    assert (limits.failed_per_source.period, limits.failed_per_source.average,
            limits.failed_per_source.burst) == (timedelta(minutes=1), 10, 10)
    assert (limits.total.period, limits.total.average, limits.total.burst) == (
        timedelta(seconds=1), 200, 1000)


def test_the_file_sets_both_limits() -> None:
    file = parse_file_config("""\
auth_service:
  join_limits:
    failed_per_source: {period: 1h, average: 5, burst: 3}
    total: {period: 10s, average: 50, burst: 20}
""", "teleport.yaml")
    limits = make_config(file, StartFlags(roles="auth")).auth.join_limits
    assert (limits.failed_per_source.period, limits.failed_per_source.average,
            limits.failed_per_source.burst) == (timedelta(hours=1), 5, 3)
    assert (limits.total.period, limits.total.average, limits.total.burst) == (
        timedelta(seconds=10), 50, 20)
    # One limit given, the other keeps its default.
    file = parse_file_config("auth_service:\n  join_limits:\n"
                             "    total: {period: 1s, average: 1, burst: 1}\n", "teleport.yaml")
    assert make_config(file, StartFlags()).auth.join_limits.failed_per_source.burst == 10


@pytest.mark.parametrize(("value", "message"), [
    ("failed_per_source: {period: 0s, average: 1, burst: 1}",
     "failed_per_source.period: period must be longer than 0s"),
    ("failed_per_source: {period: 1m, average: 0, burst: 1}",
     "failed_per_source.average: input should be greater than or equal to 1"),
    ("total: {period: 1s, average: 10, burst: -1}",
     "total.burst: input should be greater than or equal to 1"),
    ("total: {period: 1s, average: 1.5, burst: 1}", "total.average: expected an integer"),
    ("total: {period: soon, average: 1, burst: 1}", "total.period: invalid duration 'soon'"),
    ("total: {average: 1, burst: 1}", "total.period: missing required key"),
    ("failures: {period: 1m, average: 1, burst: 1}", "join_limits.failures: unknown key"),
])
def test_bad_values_are_refused_at_load_in_one_line(value: str, message: str) -> None:
    error = error_of(f"auth_service:\n  join_limits:\n    {value}\n")
    assert error.startswith("teleport.yaml:3: auth_service.join_limits.")
    assert message in error
