"""Own a component's background tasks, so none runs without an owner and none dies silently.

One `Supervisor` per component (the process, each SSH listener, the recording spool, the
recording proxy) holds its tasks in an `asyncio.TaskGroup`:

- `supervise(name, run)` keeps a loop running: when `run()` raises anything (not only our own
  errors) the traceback is logged, `on_failure(name, reason)` is told (the process marks
  `/readyz` degraded naming the task), and `run()` is called again after an exponential backoff
  with jitter. Once a restarted loop has run for `healthy_after` seconds without failing,
  `on_recovery(name)` is told and the backoff starts over.
- `spawn(coro, name)` runs one piece of work (a session, an audit call); a failure is logged
  with its traceback and ends only that task.
- `close()` cancels everything and returns only when nothing of it is left running.

Every task's failure is caught inside its wrapper, so the TaskGroup never aborts its owner.
Layer 1: depends on asyncio and logging only, so every layer above may own one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("teleport.supervisor")

T = TypeVar("T")

#: First restart delay of a failed loop, in seconds, before jitter; doubled on every failure.
RESTART_INITIAL = 1.0
#: The longest wait between restarts: a loop that keeps failing is still retried every minute.
RESTART_MAX = 60.0
#: A restarted loop that runs this long without failing counts as healthy again.
HEALTHY_AFTER = 10.0


def backoff_delay(failures: int, *, initial: float = RESTART_INITIAL, cap: float = RESTART_MAX,
                  rand: Callable[[], float] = random.random) -> float:
    """Return the wait before restart number `failures` (1 is the first).

    The ceiling doubles from `initial` up to `cap`; the delay is drawn from its upper half, so
    restarts of many processes that failed together (auth went away) do not stay in step,
    and no restart comes sooner than half the ceiling.
    """
    ceiling = min(cap, initial * 2 ** max(0, failures - 1))
    return ceiling / 2 + rand() * ceiling / 2


class Supervisor:
    """The TaskGroup of one component; an async context manager."""

    def __init__(self, owner: str, *,
                 on_failure: Callable[[str, str], None] | None = None,
                 on_recovery: Callable[[str], None] | None = None,
                 initial: float = RESTART_INITIAL, cap: float = RESTART_MAX,
                 healthy_after: float = HEALTHY_AFTER,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        self.owner = owner
        self.on_failure = on_failure
        self.on_recovery = on_recovery
        self.initial = initial
        self.cap = cap
        self.healthy_after = healthy_after
        self._sleep = sleep
        self._rand = rand
        self._group = asyncio.TaskGroup()
        self._state = "new"
        #: Running tasks, each with whether it is a supervised loop (True) or one-shot work.
        self._tasks: dict[asyncio.Task[Any], bool] = {}
        #: Failures in a row of each supervised loop, for the backoff and the USR1 dump.
        self.failures: dict[str, int] = {}

    async def start(self) -> None:
        """Enter the TaskGroup; tasks can be added from now until close()."""
        if self._state != "new":
            raise RuntimeError(f"supervisor of {self.owner} was already started")
        await self._group.__aenter__()
        self._state = "running"

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def running(self) -> bool:
        return self._state == "running"

    def supervise(self, name: str, run: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
        """Keep `run()` running: restart it with backoff whenever it raises; done when it returns."""
        return self._add(self._keep(name, run), name, loop=True)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T | None] | None:
        """Run one piece of work owned by this component; a failure is logged, not raised.

        After close() there is no owner left: the work is dropped (and said so at debug level)
        rather than run as an orphan that nothing would wait for.
        """
        if self._state == "new":
            coro.close()
            raise RuntimeError(f"supervisor of {self.owner} is not started: cannot run {name}")
        if self._state != "running":
            coro.close()
            log.debug("%s is closing: dropped %s", self.owner, name)
            return None
        return self._add(self._once(name, coro), name, loop=False)

    def _add(self, coro: Coroutine[Any, Any, T], name: str, loop: bool) -> asyncio.Task[T]:
        if self._state != "running":
            coro.close()
            raise RuntimeError(f"supervisor of {self.owner} is not running: cannot run {name}")
        task = self._group.create_task(coro, name=name)
        self._tasks[task] = loop
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    async def _once(self, name: str, coro: Coroutine[Any, Any, T]) -> T | None:
        try:
            return await coro
        except Exception as err:
            log.error("%s: %s failed: %s", self.owner, name, _reason(err), exc_info=err)
            return None

    async def _keep(self, name: str, run: Callable[[], Awaitable[object]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            healthy = None
            if self.failures.get(name):
                healthy = loop.call_later(self.healthy_after, self._recovered, name)
            try:
                await run()
            except Exception as err:
                failures = self.failures.get(name, 0) + 1
                self.failures[name] = failures
                delay = backoff_delay(failures, initial=self.initial, cap=self.cap,
                                      rand=self._rand)
                reason = f"{_reason(err)}; restart {failures} in {delay:.1f}s"
                log.error("%s: %s failed: %s", self.owner, name, reason, exc_info=err)
                self._tell(self.on_failure, name, reason)
                await self._sleep(delay)
                continue
            else:
                if self.failures.get(name):
                    self._recovered(name)
                return
            finally:
                if healthy is not None:
                    healthy.cancel()

    def _recovered(self, name: str) -> None:
        self.failures[name] = 0
        log.info("%s: %s is running again", self.owner, name)
        self._tell(self.on_recovery, name)

    def _tell(self, callback: Callable[..., None] | None, *args: str) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("%s: reporting the state of %s failed", self.owner, args[0])

    def names(self) -> list[str]:
        """Return the running tasks' names, loops first, for the USR1 dump."""
        return [t.get_name() for t, loop in sorted(self._tasks.items(), key=lambda i: not i[1])]

    async def wait(self, grace: float) -> int:
        """Wait up to grace seconds for the one-shot work to finish; return how many still run."""
        work = [t for t, loop in self._tasks.items() if not loop]
        if not work:
            return 0
        _, pending = await asyncio.wait(work, timeout=grace)
        return len(pending)

    async def cancel_all(self) -> None:
        """Cancel every task now and wait for them; new work is still accepted."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        """Cancel every task and return once none is left; later work is dropped."""
        if self._state == "new":
            self._state = "closed"
        if self._state != "running":
            return
        self._state = "closing"
        for task in list(self._tasks):
            task.cancel()
        try:
            await self._group.__aexit__(None, None, None)
        finally:
            self._state = "closed"


def _reason(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


__all__ = ["HEALTHY_AFTER", "RESTART_INITIAL", "RESTART_MAX", "Supervisor", "backoff_delay"]
