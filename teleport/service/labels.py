"""Dynamic node labels: run each label command on its period and keep its latest output.

A command that fails, hangs or is missing yields a visible `error: ...` value instead of
stopping the node: the operator sees it in `tsh ls` and in the log, and the other labels
keep refreshing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence

from teleport.config.schema import CommandLabel
from teleport.types.resources import CommandLabelValue
from teleport.utils.duration import format_duration

log = logging.getLogger("teleport.labels")

#: The longest one run may take, so a hung command cannot hold a child process for a whole period.
MAX_RUN_SECONDS = 30.0
#: Values show in `tsh ls` and are matched by roles: keep them to one short line.
MAX_VALUE_CHARS = 256
#: Output kept from each stream; the rest is read and dropped so the command never blocks on a pipe.
_KEEP_BYTES = 4096
_CHUNK = 65536


class DynamicLabels:
    """The latest value of each label command, refreshed by `run()`, read by the heartbeat."""

    def __init__(self, commands: Sequence[CommandLabel]) -> None:
        self._commands = list(commands)
        self._values: dict[str, str] = {label.name: "" for label in self._commands}

    async def run(self) -> None:
        """Refresh every label until cancelled (returns at once when there are none)."""
        async with asyncio.TaskGroup() as tasks:
            for label in self._commands:
                tasks.create_task(self._refresh_forever(label), name=f"label-{label.name}")

    def snapshot(self) -> dict[str, CommandLabelValue]:
        """Return the labels as the node's Server record carries them."""
        return {label.name: CommandLabelValue(period=format_duration(label.period),
                                              command=list(label.command),
                                              result=self._values[label.name])
                for label in self._commands}

    async def _refresh_forever(self, label: CommandLabel) -> None:
        """Run now, then once per period measured start to start so slow commands do not drift."""
        loop = asyncio.get_running_loop()
        period = label.period.total_seconds()
        while True:
            started = loop.time()
            try:
                async with asyncio.timeout(min(period, MAX_RUN_SECONDS)):
                    value, stderr = await _run_command(label.command)
            except TimeoutError:
                value, stderr = "error: timed out", ""
            value = value[:MAX_VALUE_CHARS]
            if value.startswith("error: ") and value != self._values[label.name]:
                # Once per change, not once per period: a broken command must not flood the log.
                log.warning("label %s: %s %s%s", label.name, label.command, value,
                            f" ({stderr})" if stderr else "")
            self._values[label.name] = value
            await asyncio.sleep(max(0.0, started + period - loop.time()))


async def _run_command(argv: list[str]) -> tuple[str, str]:
    """Return the output as one line, or an `error: ...` marker and the stderr that explains it."""
    try:
        # A new session makes the command a process group leader, so a timeout or shutdown
        # (both arrive as cancellation) kills whatever it started too, not only the child.
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        return f"error: command not found: {argv[0]}", ""
    except PermissionError:
        return f"error: permission denied: {argv[0]}", ""
    except OSError as err:
        return f"error: {argv[0]}: {err.strerror or err}", ""
    assert proc.stdout is not None and proc.stderr is not None
    finished = False
    try:
        out, errors, status = await asyncio.gather(
            _read_kept(proc.stdout), _read_kept(proc.stderr), proc.wait())
        finished = True
    finally:
        if not finished:
            # Kill the group even when the command itself has exited: a background child
            # still holding its output pipe is what kept us waiting.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    if status == 0:
        return _one_line(out), ""
    if status < 0:
        return f"error: killed by signal {-status}", _one_line(errors)
    return f"error: exit status {status}", _one_line(errors)


async def _read_kept(stream: asyncio.StreamReader) -> bytes:
    """Read a stream to its end, keeping only its start."""
    kept = b""
    while chunk := await stream.read(_CHUNK):
        if len(kept) < _KEEP_BYTES:
            kept += chunk[: _KEEP_BYTES - len(kept)]
    return kept


def _one_line(data: bytes) -> str:
    """Join non-blank lines with spaces and drop control characters that could mangle terminals."""
    text = data.decode("utf-8", errors="replace")
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return "".join(ch for ch in joined if ch.isprintable())[:MAX_VALUE_CHARS]
