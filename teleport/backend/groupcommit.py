"""Group commit: requests that arrive while one group is being committed share the next commit.

A store that flushes to disk (or waits for a server's WAL flush) on every commit pays that flush
once per group instead of once per request, and keeps the promise a request-per-commit store
makes: a request's await returns only after the commit that holds it. Groups commit one at a
time, in arrival order, so what a commit hands out (revisions, watch events) follows that order.

The commit function returns one outcome per request: its result, or the Exception that refused
that request alone (a failed condition). An exception raised by the commit function itself fails
the whole group. Used by the sqlite and PostgreSQL backends and the PostgreSQL audit log.

A store whose commits are fast gets groups of one, and pays a commit's fixed cost (a transaction,
a flush, a trip to its thread) per request. A request submitted as patient (a lease's keep-alive,
which has seconds to spare) lets the group wait: a group of patient requests only starts
`patience` seconds after the previous commit started, so under load they gather into a group
per period, and an idle store commits the first at once. An impatient request ends the wait.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")

#: A commit: the requests of one group, in arrival order, to one outcome each.
Commit = Callable[[list[A]], Awaitable[Sequence[R | Exception]]]


class GroupCommitter(Generic[A, R]):
    """Queue requests and commit them in groups from one task, started when the first arrives."""

    def __init__(self, commit: Commit[A, R], *, name: str, max_group: int = 0,
                 closed: Callable[[], Exception], patience: float = 0.0) -> None:
        """closed makes the error given to a group whose commit was cancelled (on close);
        max_group 0 commits everything queued at once; patience: seconds from the start of a
        commit before a group of only patient requests starts (0: at once)."""
        self._commit = commit
        self._name = name
        self._max_group = max_group
        self._closed = closed
        self._patience = patience
        #: (request, its outcome, whether it is patient), in arrival order.
        self._queue: list[tuple[A, asyncio.Future[R], bool]] = []
        self._task: asyncio.Task[None] | None = None
        #: Impatient requests in the queue: while there is one, no group waits.
        self._impatient = 0
        #: Loop time the last commit started, and the wait of patient requests, when on.
        self._started = -math.inf
        self._waiting: asyncio.Future[None] | None = None

    async def submit(self, request: A, *, patient: bool = False) -> R:
        """Queue request for the next group and return its outcome once that group committed
        (a group of patient requests may first wait out the committer's patience)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._queue.append((request, done, patient))
        if not patient:
            self._impatient += 1
            if self._waiting is not None and not self._waiting.done():
                self._waiting.set_result(None)  # the group goes now, the patient ones with it
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

    async def _wait_for_company(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let a group of patient requests wait until `patience` after the last commit
        started, or until an impatient request arrives."""
        until = self._started + self._patience
        if self._impatient or loop.time() >= until:
            return
        self._waiting = waiting = loop.create_future()
        timer = loop.call_at(until, _settle, waiting)
        try:
            await waiting
        finally:
            timer.cancel()
            self._waiting = None

    async def _commit_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if self._patience:
                try:
                    await self._wait_for_company(loop)
                except BaseException:  # cancelled: nobody is left to commit them
                    _fail(self._queue, self._closed())
                    self._queue, self._impatient = [], 0
                    raise
                self._started = loop.time()
            size = self._max_group or len(self._queue)
            group, self._queue = self._queue[:size], self._queue[size:]
            if self._impatient:
                self._impatient -= sum(1 for _, _, patient in group if not patient)
            try:
                outcomes = await self._commit([request for request, _, _ in group])
            except BaseException as err:
                failed = err if isinstance(err, Exception) else self._closed()
                _fail(group, failed)
                if not isinstance(err, Exception):
                    _fail(self._queue, failed)  # nobody is left to commit them
                    self._queue, self._impatient = [], 0
                    raise
                continue
            for (_, done, _), outcome in zip(group, outcomes, strict=True):
                if done.done():
                    continue
                if isinstance(outcome, Exception):
                    done.set_exception(outcome)
                else:
                    done.set_result(outcome)


def _fail(entries: list[tuple[A, asyncio.Future[R], bool]], err: Exception) -> None:
    for _, done, _ in entries:
        if not done.done():
            done.set_exception(err)


def _settle(waiting: asyncio.Future[None]) -> None:
    if not waiting.done():
        waiting.set_result(None)
