"""The auth API raises the cyclic collector's thresholds when it starts serving: with thousands
of nodes' connections, collections of the old generation every few seconds stalled every
heartbeat for a third of a second."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from teleport.auth import api as auth_api
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api


@pytest.fixture
def thresholds() -> Iterator[None]:
    """Python's own thresholds for the test, and the test process's back after it."""
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


async def test_serving_the_api_collects_garbage_less_often(thresholds: None) -> None:
    clock = FakeClock(datetime.now(timezone.utc))
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="gc.test"))
    await auth.init()
    runner, _ = await serve_auth_api(auth)
    try:
        assert gc.get_threshold() == auth_api.GC_THRESHOLDS
    finally:
        await runner.cleanup()


def test_higher_thresholds_and_a_disabled_collector_are_kept(thresholds: None) -> None:
    gc.set_threshold(50_000, 5, 10)
    auth_api.collect_less_often()
    assert gc.get_threshold() == (50_000, auth_api.GC_THRESHOLDS[1], 10)
    gc.set_threshold(0, 10, 10)  # disabled by whoever runs the process
    auth_api.collect_less_often()
    assert gc.get_threshold()[0] == 0


class _Cycle:
    """Garbage only the cyclic collector frees (it refers to itself)."""

    def __init__(self) -> None:
        self.me = self


def test_raising_the_thresholds_starts_the_old_generations_count_afresh(thresholds: None) -> None:
    """The imports' collections leave the old generation's turn near; a collection as the
    thresholds rise frees their garbage and restarts its count, so the first collection of the
    middle generation under load is not followed at once by a walk of every object."""
    gc.collect()
    gc.disable()  # nothing collects behind the test's back
    try:
        for _ in range(10):
            gc.collect(1)  # the old generation's count, as the imports leave it
        garbage = _Cycle()
        freed = weakref.ref(garbage)
        del garbage
        assert gc.get_count()[2] == 10 and freed() is not None
        auth_api.collect_less_often()
        assert freed() is None
        assert gc.get_count()[2] == 0
        again = _Cycle()
        kept = weakref.ref(again)
        del again
        auth_api.collect_less_often()  # already raised: a second server costs no collection
        assert kept() is not None
    finally:
        gc.enable()
        gc.collect()
