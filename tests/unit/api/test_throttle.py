"""The per-source handshake throttle: pending cap, paced tokens, refunds, sources."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from teleport.api.throttle import Rate, Throttle, source_of
from teleport.metrics import HANDSHAKES_THROTTLED
from teleport.utils.clock import FakeClock


def make(clock: FakeClock, *, average: int = 2, burst: int = 2, max_pending: int = 100,
         period: float = 1.0) -> Throttle:
    return Throttle("test", [Rate(period, average, burst)], max_pending, clock)


async def test_burst_goes_at_once_then_one_per_token() -> None:
    clock = FakeClock()
    throttle = make(clock, average=2, burst=2)
    slots = [throttle.enter("192.0.2.1") for _ in range(4)]
    assert all(s is not None for s in slots)
    waiters = [s.take() for s in slots if s is not None]
    assert waiters[:2] == [None, None]  # the burst
    third, fourth = waiters[2], waiters[3]
    assert third is not None and fourth is not None
    throttle.wake()
    assert not third.done()  # no time passed, no token
    clock.advance(timedelta(seconds=0.5))  # 2 a second: one token
    throttle.wake()
    assert third.done() and not fourth.done()  # first come, first served
    clock.advance(timedelta(seconds=0.5))
    throttle.wake()
    assert fourth.done()


async def test_over_the_pending_cap_is_refused_until_one_leaves() -> None:
    throttle = make(FakeClock(), max_pending=3)
    before = HANDSHAKES_THROTTLED.labels("test", "refused")._value.get()
    slots = [throttle.enter("192.0.2.1") for _ in range(3)]
    assert throttle.enter("192.0.2.1") is None
    assert HANDSHAKES_THROTTLED.labels("test", "refused")._value.get() == before + 1
    assert throttle.enter("192.0.2.2") is not None  # another source has its own count
    first = slots[0]
    assert first is not None
    first.release()
    first.release()  # idempotent: counted once
    assert throttle.pending("192.0.2.1") == 2
    assert throttle.enter("192.0.2.1") is not None


async def test_authenticated_gives_its_token_back() -> None:
    clock = FakeClock()
    throttle = make(clock, average=1, burst=1)
    ok = throttle.enter("192.0.2.1")
    assert ok is not None and ok.take() is None
    waiting = throttle.enter("192.0.2.1")
    assert waiting is not None
    turn = waiting.take()
    assert turn is not None and not turn.done()
    ok.authenticated()  # logged in: not pending, and its token goes to the next in line
    assert turn.done()
    assert throttle.pending("192.0.2.1") == 1


async def test_unauthenticated_keep_their_token_spent() -> None:
    clock = FakeClock()
    throttle = make(clock, average=1, burst=1)
    first = throttle.enter("192.0.2.1")
    assert first is not None and first.take() is None
    first.release()  # closed without logging in (a scanner)
    second = throttle.enter("192.0.2.1")
    assert second is not None and second.take() is not None
    second.handshake_done()  # TLS up without a client certificate: no refund either
    third = throttle.enter("192.0.2.1")
    assert third is not None and third.take() is not None


async def test_a_waiter_that_closes_leaves_the_queue() -> None:
    clock = FakeClock()
    throttle = make(clock, average=1, burst=1)
    first, gone, last = (throttle.enter("192.0.2.1") for _ in range(3))
    assert first is not None and gone is not None and last is not None
    first.take()
    gone_turn, last_turn = gone.take(), last.take()
    assert gone_turn is not None and last_turn is not None
    gone.release()
    assert gone_turn.cancelled()
    clock.advance(timedelta(seconds=1))
    throttle.wake()
    assert last_turn.done() and not last_turn.cancelled()


async def test_ready_waits_in_real_time() -> None:
    throttle = Throttle("test", [Rate(1.0, 20, 1)], 10)  # monotonic clock, 50 ms a token
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(3):
        slot = throttle.enter("192.0.2.1")
        assert slot is not None
        await slot.ready()
        slot.release()
    assert 0.08 <= loop.time() - start < 1.0


async def test_moving_to_the_users_address() -> None:
    throttle = make(FakeClock(), max_pending=1)
    slot = throttle.enter("10.0.0.1")  # the proxy's address
    assert slot is not None and slot.move("198.51.100.7")  # the user's, a proxy vouched for
    assert throttle.pending("10.0.0.1") == 0 and throttle.pending("198.51.100.7") == 1
    other = throttle.enter("10.0.0.1")
    assert other is not None and not other.move("198.51.100.7")  # that user is at the cap
    assert throttle.pending("10.0.0.1") == 0
    slot.release()
    assert throttle.pending("198.51.100.7") == 0


async def test_several_rates_all_apply() -> None:
    clock = FakeClock()
    throttle = Throttle("test", [Rate(1.0, 10, 10), Rate(60.0, 3, 3)], 100, clock)
    turns = []
    for _ in range(4):
        slot = throttle.enter("192.0.2.1")
        assert slot is not None
        turns.append(slot.take())
    assert turns[:3] == [None, None, None] and turns[3] is not None  # the minute's 3
    clock.advance(timedelta(seconds=1))
    throttle.wake()
    assert not turns[3].done()  # the per-second bucket has tokens, the per-minute not yet
    clock.advance(timedelta(seconds=20))
    throttle.wake()
    assert turns[3].done()


async def test_refusals_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    throttle = make(clock, max_pending=1)
    assert throttle.enter("192.0.2.1") is not None
    with caplog.at_level(logging.WARNING, "teleport.throttle"):
        for _ in range(50):
            assert throttle.enter("192.0.2.1") is None
        assert len(caplog.records) == 1
        clock.advance(timedelta(seconds=61))
        assert throttle.enter("192.0.2.1") is None
    assert len(caplog.records) == 2
    assert "50 refused since" in caplog.records[1].getMessage()


def test_sources() -> None:
    assert source_of("192.0.2.1") == "192.0.2.1"
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_of("2001:db8:1:2:3:4:5:6") == source_of("2001:db8:1:2::9") == "2001:db8:1:2::/64"
