"""The join limiter: failures per source are limited, successes are not; one bound for all."""

from __future__ import annotations

from datetime import timedelta

import pytest

from teleport.api.ratelimit import JoinLimiter, JoinLimits
from teleport.api.throttle import Rate
from teleport.errors import LimitExceeded
from teleport.utils.clock import FakeClock

NAT = "198.51.100.7"
OTHER = "198.51.100.8"


def make(clock: FakeClock, *, failures: int = 3, total: int = 1_000_000) -> JoinLimiter:
    """Allow `failures` failed attempts per source, one more a minute; `total` in all."""
    return JoinLimiter(JoinLimits(failed_per_source=Rate(60.0, 1, failures),
                                  total=Rate(1.0, total, total)), clock)


def fail(limiter: JoinLimiter, host: str) -> None:
    attempt = limiter.admit(host)
    attempt.failed()
    attempt.close()


def test_successes_from_one_address_are_never_held_back() -> None:
    limiter = make(FakeClock(), failures=3)
    for _ in range(5000):  # a fleet behind one NAT address
        limiter.admit(NAT).close()
    assert not limiter.blocked(NAT)
    assert limiter._sources == {}  # a clean source costs nothing to remember


def test_failures_block_the_address_even_for_a_valid_token() -> None:
    limiter = make(FakeClock(), failures=3)
    for _ in range(3):
        fail(limiter, NAT)
    assert limiter.blocked(NAT)
    # Whatever the next request carries, it is refused before its token is looked at.
    with pytest.raises(LimitExceeded, match="failed join attempts from this address"):
        limiter.admit(NAT)
    limiter.admit(OTHER).close()  # another address is not affected
    assert not limiter.blocked(OTHER)


def test_a_blocked_address_gets_one_attempt_per_refill_and_is_clean_after_a_full_one() -> None:
    clock = FakeClock()
    limiter = make(clock, failures=3)
    for _ in range(3):
        fail(limiter, NAT)
    clock.advance(timedelta(seconds=61))  # one failure's worth back
    fail(limiter, NAT)
    with pytest.raises(LimitExceeded):
        limiter.admit(NAT)
    clock.advance(timedelta(minutes=3, seconds=1))
    assert not limiter.blocked(NAT)
    limiter.admit(NAT).close()
    assert NAT not in limiter._sources


def test_parallel_attempts_of_an_address_that_failed_cannot_overrun_its_budget() -> None:
    limiter = make(FakeClock(), failures=3)
    fail(limiter, NAT)  # two failures left
    first, second = limiter.admit(NAT), limiter.admit(NAT)
    with pytest.raises(LimitExceeded):
        limiter.admit(NAT)  # both in flight may still fail
    first.close()  # it succeeded: its place is free again
    limiter.admit(NAT).close()
    second.failed()
    second.close()
    limiter.admit(NAT).failed()
    assert limiter.blocked(NAT)


def test_owed_failures_are_capped_at_one_more_burst() -> None:
    clock = FakeClock()
    limiter = make(clock, failures=3)
    attempts = [limiter.admit(NAT) for _ in range(50)]  # a clean address, all at once
    for attempt in attempts:
        attempt.failed()
        attempt.close()
    # 3 owed at most: back to one attempt after 4 minutes, not 47.
    clock.advance(timedelta(minutes=4) - timedelta(seconds=1))
    assert limiter.blocked(NAT)
    clock.advance(timedelta(seconds=2))
    assert not limiter.blocked(NAT)


def test_an_ipv6_64_is_one_source() -> None:
    limiter = make(FakeClock(), failures=2)
    fail(limiter, "2001:db8:1:2::10")
    fail(limiter, "2001:db8:1:2::20")
    with pytest.raises(LimitExceeded):
        limiter.admit("2001:db8:1:2:ffff::1")
    limiter.admit("2001:db8:1:3::1").close()


def test_all_joins_together_are_bounded() -> None:
    clock = FakeClock()
    limiter = make(clock, total=10)
    for i in range(10):
        limiter.admit(f"192.0.2.{i}").close()
    with pytest.raises(LimitExceeded, match="too many joins"):
        limiter.admit("192.0.2.200")
    assert not limiter.blocked("192.0.2.200")  # the address itself did nothing wrong
    clock.advance(timedelta(seconds=0.2))  # two tokens back at 10 a second
    limiter.admit("192.0.2.200").close()


def test_a_refused_request_spends_nothing_of_the_total() -> None:
    limiter = make(FakeClock(), failures=1, total=2)
    fail(limiter, NAT)
    for _ in range(5):
        with pytest.raises(LimitExceeded):
            limiter.admit(NAT)
    limiter.admit(OTHER).close()  # the blocked address's refusals did not use the total up
