"""Label commands run for real, on short periods; failures become values, nothing is left running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from teleport.config.schema import CommandLabel
from teleport.service.labels import MAX_VALUE_CHARS, DynamicLabels


def _label(name: str, command: list[str], seconds: float = 3600) -> CommandLabel:
    # model_construct skips the config's one-minute floor, which protects hosts, not tests.
    return CommandLabel.model_construct(name=name, command=command,
                                        period=timedelta(seconds=seconds))


@contextlib.asynccontextmanager
async def _running(labels: DynamicLabels) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(labels.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        # Polling: the values are state the heartbeat reads, there is no event to wait on.
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _gone(pid: int) -> bool:
    """Tell whether a process no longer runs; a zombie waiting for init to reap it counts as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _results(labels: DynamicLabels) -> dict[str, str]:
    return {name: value.result for name, value in labels.snapshot().items()}


async def test_commands_run_at_once_and_output_becomes_the_value() -> None:
    labels = DynamicLabels([_label("greeting", ["echo", "  hello world  "]),
                            _label("arch", ["uname", "-m"])])
    assert _results(labels) == {"greeting": "", "arch": ""}
    async with _running(labels):
        await _until(lambda: all(_results(labels).values()))
    snap = labels.snapshot()
    assert snap["greeting"].result == "hello world"
    assert snap["greeting"].period == "1h0m0s"
    assert snap["greeting"].command == ["echo", "  hello world  "]


async def test_commands_rerun_on_their_period(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    labels = DynamicLabels([_label("runs", ["sh", "-c", f"echo x >> {counter}; wc -l < {counter}"],
                                   seconds=0.1)])
    async with _running(labels):
        await _until(lambda: _results(labels)["runs"] == "3")


async def test_multiline_and_control_characters_become_one_short_line() -> None:
    labels = DynamicLabels([
        _label("lines", ["printf", "a\\n\\n b \\n\\033[31mred\\n"]),
        _label("long", ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"]),
    ])
    async with _running(labels):
        await _until(lambda: all(_results(labels).values()))
    assert _results(labels) == {"lines": "a b [31mred", "long": "x" * MAX_VALUE_CHARS}


async def test_failures_become_error_values_and_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="teleport.labels")
    labels = DynamicLabels([
        _label("exit", ["sh", "-c", "echo oops >&2; exit 3"], seconds=0.05),
        _label("missing", ["no-such-binary-for-labels"], seconds=0.05),
        _label("killed", ["sh", "-c", "kill -TERM $$"]),
        _label("fine", ["echo", "ok"]),
    ])
    async with _running(labels):
        await _until(lambda: all(_results(labels).values()))
        await asyncio.sleep(0.3)  # several periods: still running, logged only once each
    assert _results(labels) == {
        "exit": "error: exit status 3",
        "missing": "error: command not found: no-such-binary-for-labels",
        "killed": "error: killed by signal 15",
        "fine": "ok",
    }
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("error: exit status 3 (oops)" in m for m in warnings) == 1
    assert sum("command not found" in m for m in warnings) == 1


async def test_a_hung_command_times_out_and_its_processes_are_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    labels = DynamicLabels([
        _label("hung", ["sh", "-c", f"echo $$ >> {pids}; exec sleep 10"], seconds=0.3),
        # sh exits at once, but its background child holds stdout open: the usual way to hang.
        _label("orphan", ["sh", "-c", f"sleep 10 & echo $! >> {pids}"], seconds=0.3),
    ])
    async with _running(labels):
        await _until(lambda: all(_results(labels).values()))
        assert _results(labels) == {"hung": "error: timed out", "orphan": "error: timed out"}
        started = [int(p) for p in pids.read_text().split()]
        await _until(lambda: all(_gone(pid) for pid in started))


async def test_cancelling_kills_running_commands_and_leaves_no_task(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    labels = DynamicLabels([_label(f"slow{i}", ["sh", "-c", f"echo $$ >> {pids}; exec sleep 10"])
                            for i in range(3)])
    before = asyncio.all_tasks()
    async with _running(labels):
        await _until(lambda: pids.exists() and len(pids.read_text().split()) == 3)
    started = [int(p) for p in pids.read_text().split()]
    assert all(_gone(pid) for pid in started)
    assert asyncio.all_tasks() == before
    assert _results(labels) == {"slow0": "", "slow1": "", "slow2": ""}


async def test_no_commands_means_nothing_to_run() -> None:
    labels = DynamicLabels([])
    await asyncio.wait_for(labels.run(), 1)
    assert labels.snapshot() == {}
