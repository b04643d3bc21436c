"""Group commit: requests that arrive while one group is being committed share the next commit.

A store that flushes to disk (or waits for a server's WAL flush) on every commit pays that flush
once per group instead of once per request, and keeps the promise a request-per-commit store
makes: a request's await returns only after the commit that holds it. Groups commit one at a
time, in arrival order, so what a commit hands out (revisions, watch events) follows that order.

The commit function returns one outcome per request: its result, or the Exception that refused
that request alone (a failed condition). An exception raised by the commit function itself fails
the whole group. Used by the sqlite and PostgreSQL backends and the PostgreSQL audit log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")

#: A commit: the requests of one group, in arrival order, to one outcome each.
Commit = Callable[[list[A]], Awaitable[Sequence[R | Exception]]]


class GroupCommitter(Generic[A, R]):
    """Queue requests and commit them in groups from one task, started when the first arrives."""

    def __init__(self, commit: Commit[A, R], *, name: str, max_group: int = 0,
                 closed: Callable[[], Exception]) -> None:
        """closed makes the error given to a group whose commit was cancelled (on close);
        max_group 0 commits everything queued at once."""
        self._commit = commit
        self._name = name
        self._max_group = max_group
        self._closed = closed
        self._queue: list[tuple[A, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: A) -> R:
        """Queue request for the next group and return its outcome once that group committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._queue.append((request, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._commit_queued(), name=self._name)
        # Awaited bare, not shielded (a future less per write): a cancelled caller cancels
        # only its outcome, which the group then skips; the request stays queued and is
        # committed all the same, so a cancelled caller cannot undo a commit.
        return await done

    async def wait(self) -> None:
        """Return once every request queued so far has its outcome (for close())."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    async def _commit_queued(self) -> None:
        while self._queue:
            size = self._max_group or len(self._queue)
            group, self._queue = self._queue[:size], self._queue[size:]
            try:
                outcomes = await self._commit([request for request, _ in group])
            except BaseException as err:
                failed = err if isinstance(err, Exception) else self._closed()
                for _, done in group:
                    if not done.done():
                        done.set_exception(failed)
                if not isinstance(err, Exception):
                    for _, done in self._queue:  # nobody is left to commit them
                        if not done.done():
                            done.set_exception(failed)
                    self._queue = []
                    raise
                continue
            for (_, done), outcome in zip(group, outcomes, strict=True):
                if done.done():
                    continue
                if isinstance(outcome, Exception):
                    done.set_exception(outcome)
                else:
                    done.set_result(outcome)
