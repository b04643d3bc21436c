"""The supervisor restarts failed loops with jittered backoff and leaves nothing running."""

from __future__ import annotations

import asyncio
import logging

import pytest

from teleport.utils.supervisor import Supervisor, backoff_delay


class Sleeps:
    """An injected sleep: records each restart delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def test_backoff_doubles_up_to_the_cap() -> None:
    ceilings = [backoff_delay(n, initial=1.0, cap=8.0, rand=lambda: 1.0) for n in range(1, 7)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize("failures", [1, 2, 5, 30])
def test_jitter_stays_within_the_upper_half_of_the_ceiling(failures: int) -> None:
    ceiling = min(60.0, 2.0 ** (failures - 1))
    low = backoff_delay(failures, initial=1.0, cap=60.0, rand=lambda: 0.0)
    high = backoff_delay(failures, initial=1.0, cap=60.0, rand=lambda: 0.999999)
    assert low == ceiling / 2 and ceiling / 2 < high <= ceiling
    drawn = {backoff_delay(failures, initial=1.0, cap=60.0) for _ in range(50)}
    assert all(ceiling / 2 <= d <= ceiling for d in drawn) and len(drawn) > 1


async def test_a_failing_loop_is_logged_reported_and_restarted_with_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    sleeps = Sleeps()
    failed: list[tuple[str, str]] = []
    recovered: list[str] = []
    calls = 0
    running = asyncio.Event()

    async def loop() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise KeyError(f"boom {calls}")  # not one of ours: must not die silently
        running.set()
        await asyncio.Event().wait()

    caplog.set_level(logging.ERROR, "teleport.supervisor")
    async with Supervisor("test", on_failure=lambda n, r: failed.append((n, r)),
                          on_recovery=recovered.append, sleep=sleeps, rand=lambda: 1.0,
                          initial=1.0, healthy_after=0.05) as tasks:
        tasks.supervise("beat", loop)
        await asyncio.wait_for(running.wait(), 5)
        assert sleeps.delays == [1.0, 2.0, 4.0]
        assert [n for n, _ in failed] == ["beat"] * 3
        assert "KeyError: 'boom 1'" in failed[0][1] and "restart 1" in failed[0][1]
        assert recovered == []  # restarted, but not yet for long enough
        await asyncio.sleep(0.1)
        assert recovered == ["beat"] and tasks.failures["beat"] == 0
    errors = [r for r in caplog.records if r.name == "teleport.supervisor"]
    assert len(errors) == 3 and all(r.exc_info for r in errors)
    assert "Traceback" in caplog.text and "boom 3" in caplog.text


async def test_backoff_starts_over_once_the_loop_ran_fine() -> None:
    sleeps = Sleeps()
    calls = 0

    async def loop() -> None:
        nonlocal calls
        calls += 1
        if calls in (2, 3):
            await asyncio.sleep(0.08)  # ran fine for longer than healthy_after
        if calls < 4:
            raise RuntimeError("again")

    async with Supervisor("test", sleep=sleeps, rand=lambda: 1.0, healthy_after=0.05) as tasks:
        task = tasks.supervise("flaky", loop)
        await asyncio.wait_for(task, 5)
    assert sleeps.delays == [1.0, 1.0, 1.0]


async def test_close_cancels_everything_and_leaves_nothing_running() -> None:
    before = asyncio.all_tasks()
    started = asyncio.Event()
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    tasks = Supervisor("test")
    await tasks.start()
    tasks.supervise("loop", lambda: forever("loop"))
    tasks.spawn(forever("work"), "work")
    await started.wait()
    assert sorted(tasks.names()) == ["loop", "work"]
    await tasks.close()
    assert sorted(cancelled) == ["loop", "work"]
    assert asyncio.all_tasks() == before
    # No owner after close: work is dropped instead of running as an orphan.
    assert tasks.spawn(forever("late"), "late") is None
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before


async def test_failed_work_is_logged_and_does_not_take_the_owner_down(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise ValueError("bad work")

    async def fine() -> int:
        return 7

    async with Supervisor("test") as tasks:
        failing, ok = tasks.spawn(broken(), "broken"), tasks.spawn(fine(), "fine")
        assert failing is not None and ok is not None
        assert await failing is None and await ok == 7
        assert tasks.running
    assert "test: broken failed: ValueError: bad work" in caplog.text
    assert "Traceback" in caplog.text


async def test_wait_gives_work_a_grace_period_then_reports_what_still_runs() -> None:
    async with Supervisor("test") as tasks:
        tasks.spawn(asyncio.sleep(0.01), "quick")
        assert await tasks.wait(5) == 0
        tasks.spawn(asyncio.sleep(10), "slow")
        assert await tasks.wait(0.01) == 1


async def test_work_needs_a_started_owner() -> None:
    tasks = Supervisor("test")
    with pytest.raises(RuntimeError, match="not started"):
        tasks.spawn(asyncio.sleep(0), "early")
    await tasks.close()
