"""The shared group committer: who shares a commit, who fails with whom, and what close sees."""

from __future__ import annotations

import asyncio

import pytest

from teleport.backend.groupcommit import GroupCommitter
from teleport.errors import CompareFailed, ConnectionProblem


class Store:
    """A commit function that records its groups and can be held at the door."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        #: A group holding this request fails as a whole (as a lost disk would fail it).
        self.poison = -1

    async def commit(self, group: list[int]) -> list[int | Exception]:
        self.groups.append(group)
        await self.gate.wait()
        if self.poison in group:
            raise ConnectionProblem("disk gone")
        return [CompareFailed(f"{n} is odd") if n % 2 else n * 10 for n in group]


def committer(store: Store, max_group: int = 0) -> GroupCommitter[int, int]:
    return GroupCommitter(store.commit, name="test", max_group=max_group,
                          closed=lambda: ConnectionProblem("closed"))


async def test_requests_arriving_during_a_commit_share_the_next() -> None:
    store = Store()
    store.gate.clear()
    commits = committer(store)
    first = asyncio.create_task(commits.submit(0))
    await asyncio.sleep(0.01)
    assert store.groups == [[0]]
    rest = [asyncio.create_task(commits.submit(n)) for n in (2, 4, 6)]
    await asyncio.sleep(0.01)
    assert not first.done()  # acknowledged only once its commit returns
    store.gate.set()
    assert await first == 0 and await asyncio.gather(*rest) == [20, 40, 60]
    assert store.groups == [[0], [2, 4, 6]]


async def test_a_refused_request_fails_alone() -> None:
    store = Store()
    commits = committer(store)
    outcomes = await asyncio.gather(*(commits.submit(n) for n in range(4)),
                                    return_exceptions=True)
    assert store.groups == [[0, 1, 2, 3]]
    assert outcomes[0] == 0 and outcomes[2] == 20
    assert [str(outcomes[1]), str(outcomes[3])] == ["1 is odd", "3 is odd"]


async def test_a_failed_commit_fails_its_group_only() -> None:
    store = Store()
    store.gate.clear()
    store.poison = 0
    commits = committer(store)
    doomed = asyncio.create_task(commits.submit(0))
    await asyncio.sleep(0.01)
    later = asyncio.create_task(commits.submit(2))
    await asyncio.sleep(0.01)
    store.gate.set()
    with pytest.raises(ConnectionProblem, match="disk gone"):
        await doomed
    assert await later == 20


async def test_max_group_splits_a_long_queue_in_order() -> None:
    store = Store()
    commits = committer(store, max_group=2)
    assert await asyncio.gather(*(commits.submit(n) for n in (0, 2, 4, 6, 8))) == [
        0, 20, 40, 60, 80]
    assert store.groups == [[0, 2], [4, 6], [8]]


async def test_a_cancelled_caller_leaves_its_request_committed() -> None:
    store = Store()
    store.gate.clear()
    commits = committer(store)
    caller = asyncio.create_task(commits.submit(4))
    await asyncio.sleep(0.01)
    caller.cancel()
    store.gate.set()
    await commits.wait()
    assert caller.cancelled() and store.groups == [[4]]


async def test_a_cancelled_commit_refuses_its_group_and_the_queue() -> None:
    store = Store()
    store.gate.clear()
    commits = committer(store)
    calls = [asyncio.create_task(commits.submit(0))]
    await asyncio.sleep(0.01)
    calls.append(asyncio.create_task(commits.submit(2)))
    await asyncio.sleep(0.01)
    for task in asyncio.all_tasks():
        if task.get_name() == "test":
            task.cancel()
    await commits.wait()
    for call in calls:
        with pytest.raises(ConnectionProblem, match="closed"):
            await call


# --- patience: patient requests wait for company, anything else goes at once -----------------

PATIENCE = 0.2


def patient_committer(store: Store) -> GroupCommitter[int, int]:
    return GroupCommitter(store.commit, name="test", closed=lambda: ConnectionProblem("closed"),
                          patience=PATIENCE)


async def test_an_idle_committer_commits_a_patient_request_at_once() -> None:
    store = Store()
    commits = patient_committer(store)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await commits.submit(2, patient=True) == 20
    assert loop.time() - started < PATIENCE / 2 and store.groups == [[2]]


async def test_patient_requests_after_a_commit_wait_for_its_period_and_share_a_group() -> None:
    """Under load a keep-alive's commit costs a transaction and an fsync each unless they
    gather: patient requests wait until `patience` after the last commit started."""
    store = Store()
    commits = patient_committer(store)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await commits.submit(0, patient=True)
    later = [asyncio.create_task(commits.submit(n, patient=True)) for n in (2, 4)]
    await asyncio.sleep(PATIENCE / 4)
    later.append(asyncio.create_task(commits.submit(6, patient=True)))
    await asyncio.sleep(PATIENCE / 4)
    assert store.groups == [[0]] and not any(task.done() for task in later)
    assert await asyncio.gather(*later) == [20, 40, 60]
    assert store.groups == [[0], [2, 4, 6]]
    assert loop.time() - started >= PATIENCE * 0.9


async def test_an_impatient_request_ends_the_wait_of_the_patient_ones() -> None:
    store = Store()
    commits = patient_committer(store)
    loop = asyncio.get_running_loop()
    await commits.submit(0, patient=True)
    waiting = asyncio.create_task(commits.submit(2, patient=True))
    await asyncio.sleep(0.01)
    started = loop.time()
    assert await commits.submit(4) == 40  # not patient: its group goes now, 2 with it
    assert await waiting == 20
    assert loop.time() - started < PATIENCE / 2 and store.groups == [[0], [2, 4]]


async def test_a_group_with_an_impatient_request_queued_does_not_wait() -> None:
    store = Store()
    store.gate.clear()
    commits = patient_committer(store)
    first = asyncio.create_task(commits.submit(0))
    await asyncio.sleep(0.01)  # committing, held at the gate
    queued = [asyncio.create_task(commits.submit(2)),
              asyncio.create_task(commits.submit(4, patient=True))]
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    store.gate.set()
    assert await first == 0 and await asyncio.gather(*queued) == [20, 40]
    assert loop.time() - started < PATIENCE / 2 and store.groups == [[0], [2, 4]]


async def test_a_committer_cancelled_while_waiting_refuses_the_queue() -> None:
    store = Store()
    commits = patient_committer(store)
    await commits.submit(0, patient=True)
    waiting = asyncio.create_task(commits.submit(2, patient=True))
    await asyncio.sleep(0.01)
    for task in asyncio.all_tasks():
        if task.get_name() == "test":
            task.cancel()
    await commits.wait()
    with pytest.raises(ConnectionProblem, match="closed"):
        await waiting
    assert store.groups == [[0]]
