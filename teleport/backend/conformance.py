"""The one conformance suite every backend driver must pass.

Each check is `async def check_*(backend, clock)` against a fresh backend built on a FakeClock.
A driver's test module runs them all with two decorated lines::

    @pytest.mark.parametrize("check", CHECKS)
    async def test_conformance(check: str, tmp_path: Path) -> None:
        await run_check(check, lambda clock: SqliteBackend.open(tmp_path / "db", clock))

Drivers whose expiry follows the injected clock (memory, sqlite, postgres, dynamodb) also run EXPIRY_EVENT_CHECKS;
servers that expire items on their own time (etcd leases) cannot.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

from teleport.backend.base import Backend, Event, EventType, Item, range_end
from teleport.errors import AlreadyExists, BadParameter, CompareFailed, LimitExceeded, NotFound
from teleport.utils.clock import FakeClock

Check = Callable[[Backend, FakeClock], Awaitable[None]]
BackendFactory = Callable[[FakeClock], Backend | Awaitable[Backend]]

#: Seconds one check may take; a watcher that never delivers fails fast instead of hanging.
CHECK_TIMEOUT = 10.0


async def next_event(events: AsyncIterator[Event]) -> Event:
    """Wait for a watcher's next event, failing the check rather than hanging it."""
    return await asyncio.wait_for(anext(events), CHECK_TIMEOUT / 2)


async def _expect(events: AsyncIterator[Event], *expected: tuple[EventType, bytes]) -> list[Event]:
    got = [await next_event(events) for _ in expected]
    assert [(e.type, e.item.key) for e in got] == list(expected), got
    return got


async def _raises(kind: type[Exception], call: Awaitable[object]) -> None:
    try:
        await call
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}")


def _later(clock: FakeClock, seconds: float) -> datetime:
    return clock.now() + timedelta(seconds=seconds)


async def check_get_missing(backend: Backend, clock: FakeClock) -> None:
    await _raises(NotFound, backend.get(b"/missing"))


async def check_create(backend: Backend, clock: FakeClock) -> None:
    created = await backend.create(Item(b"/c/a", b"one"))
    assert created.revision
    assert await backend.get(b"/c/a") == created == Item(b"/c/a", b"one", None, created.revision)
    await _raises(AlreadyExists, backend.create(Item(b"/c/a", b"two")))
    assert (await backend.get(b"/c/a")).value == b"one"


async def check_put(backend: Backend, clock: FakeClock) -> None:
    await backend.put(Item(b"/p/a", b"one"))
    replaced = await backend.put(Item(b"/p/a", b"two"))
    assert await backend.get(b"/p/a") == replaced
    assert replaced.value == b"two"


async def check_update(backend: Backend, clock: FakeClock) -> None:
    await _raises(NotFound, backend.update(Item(b"/u/a", b"one")))
    await _raises(NotFound, backend.get(b"/u/a"))
    await backend.create(Item(b"/u/a", b"one"))
    updated = await backend.update(Item(b"/u/a", b"two"))
    assert await backend.get(b"/u/a") == updated
    assert updated.value == b"two"


async def check_compare_and_swap(backend: Backend, clock: FakeClock) -> None:
    await _raises(NotFound, backend.compare_and_swap(Item(b"/s/a", b"1"), Item(b"/s/a", b"2")))
    await backend.create(Item(b"/s/a", b"1"))
    await _raises(CompareFailed, backend.compare_and_swap(Item(b"/s/a", b"9"), Item(b"/s/a", b"2")))
    assert (await backend.get(b"/s/a")).value == b"1"
    swapped = await backend.compare_and_swap(Item(b"/s/a", b"1"), Item(b"/s/a", b"2"))
    assert swapped.value == b"2"
    assert await backend.get(b"/s/a") == swapped
    await _raises(BadParameter, backend.compare_and_swap(Item(b"/s/a", b"2"), Item(b"/s/b", b"3")))


async def check_compare_and_swap_revision(backend: Backend, clock: FakeClock) -> None:
    """An expected item with a revision also requires that revision, which catches A-B-A."""
    seen = await backend.put(Item(b"/s/a", b"1"))
    await backend.put(Item(b"/s/a", b"1"))
    await _raises(CompareFailed, backend.compare_and_swap(seen, Item(b"/s/a", b"2")))
    latest = await backend.get(b"/s/a")
    assert (await backend.compare_and_swap(latest, Item(b"/s/a", b"2"))).value == b"2"


async def check_delete(backend: Backend, clock: FakeClock) -> None:
    await _raises(NotFound, backend.delete(b"/d/a"))
    await backend.create(Item(b"/d/a", b"1"))
    await backend.delete(b"/d/a")
    await _raises(NotFound, backend.get(b"/d/a"))
    await _raises(NotFound, backend.delete(b"/d/a"))


async def check_delete_range(backend: Backend, clock: FakeClock) -> None:
    for k in (b"/r/a", b"/r/b", b"/r/c", b"/r/d", b"/s/a"):
        await backend.put(Item(k, b"x"))
    await backend.delete_range(b"/r/b", b"/r/d")
    left = await backend.get_range(b"/", range_end(b"/"))
    assert [i.key for i in left] == [b"/r/a", b"/r/d", b"/s/a"]
    await backend.delete_range(b"/q/", range_end(b"/q/"))
    await backend.delete_range(b"/r/", range_end(b"/r/"))
    assert [i.key for i in await backend.get_range(b"/", range_end(b"/"))] == [b"/s/a"]


async def check_get_range(backend: Backend, clock: FakeClock) -> None:
    keys = [b"/g/" + bytes([c]) for c in b"abcdefgh"]
    for k in random.sample(keys, len(keys)):
        await backend.put(Item(k, k[-1:]))
    await backend.put(Item(b"/g", b"outside"))
    await backend.put(Item(b"/h/a", b"outside"))
    everything = await backend.get_range(b"/g/", range_end(b"/g/"))
    assert [i.key for i in everything] == keys
    assert [i.value for i in everything] == [k[-1:] for k in keys]
    assert [i.key for i in await backend.get_range(b"/g/", range_end(b"/g/"), limit=3)] == keys[:3]
    assert [i.key for i in await backend.get_range(b"/g/b", b"/g/d")] == [b"/g/b", b"/g/c"]
    assert await backend.get_range(b"/g/d", b"/g/b") == []
    assert await backend.get_range(b"/z/", range_end(b"/z/")) == []


async def check_expiry(backend: Backend, clock: FakeClock) -> None:
    expires = clock.now() + timedelta(seconds=10)
    stored = await backend.put(Item(b"/e/temp", b"t", expires))
    assert stored.expires == expires
    assert (await backend.get(b"/e/temp")).expires == expires
    await backend.put(Item(b"/e/perm", b"p"))
    clock.advance(timedelta(seconds=9))
    assert [i.key for i in await backend.get_range(b"/e/", b"/e0")] == [b"/e/perm", b"/e/temp"]
    clock.advance(timedelta(seconds=1))
    await _raises(NotFound, backend.get(b"/e/temp"))
    assert [i.key for i in await backend.get_range(b"/e/", b"/e0")] == [b"/e/perm"]
    await _raises(NotFound, backend.update(Item(b"/e/temp", b"u")))
    await _raises(NotFound, backend.compare_and_swap(Item(b"/e/temp", b"t"), Item(b"/e/temp", b"u")))
    await _raises(NotFound, backend.delete(b"/e/temp"))
    await _raises(NotFound, backend.keep_alive(b"/e/temp", clock.now() + timedelta(hours=1)))
    await backend.create(Item(b"/e/temp", b"again"))
    assert (await backend.get(b"/e/temp")).value == b"again"


async def check_keep_alive(backend: Backend, clock: FakeClock) -> None:
    await _raises(NotFound, backend.keep_alive(b"/k/a", clock.now()))
    await backend.create(Item(b"/k/a", b"v", _later(clock, 10)))
    moved = clock.now() + timedelta(seconds=60)
    await backend.keep_alive(b"/k/a", moved)
    clock.advance(timedelta(seconds=30))
    item = await backend.get(b"/k/a")
    assert (item.value, item.expires) == (b"v", moved)
    clock.advance(timedelta(seconds=30))
    await _raises(NotFound, backend.get(b"/k/a"))


async def check_keep_alive_all(backend: Backend, clock: FakeClock) -> None:
    """Every item present is moved, even beside a missing one, which is NotFound."""
    await backend.create(Item(b"/ka/a", b"a", _later(clock, 10)))
    await backend.create(Item(b"/ka/b", b"b", _later(clock, 10)))
    moved = clock.now() + timedelta(seconds=60)
    await backend.keep_alive_all([b"/ka/a", b"/ka/b"], moved)
    await _raises(NotFound, backend.keep_alive_all([b"/ka/gone", b"/ka/a"],
                                                   moved + timedelta(seconds=5)))
    clock.advance(timedelta(seconds=62))
    assert [i.key for i in await backend.get_range(b"/ka/", b"/ka0")] == [b"/ka/a"]
    assert (await backend.get(b"/ka/a")).expires == moved + timedelta(seconds=5)


async def check_bad_items(backend: Backend, clock: FakeClock) -> None:
    await _raises(BadParameter, backend.put(Item(b"", b"v")))
    await _raises(BadParameter, backend.create(Item(b"", b"v")))
    naive = clock.now().replace(tzinfo=None) + timedelta(hours=1)
    await _raises(BadParameter, backend.put(Item(b"/b/a", b"v", naive)))
    await backend.put(Item(b"/b/a", b"v"))
    await _raises(BadParameter, backend.keep_alive(b"/b/a", naive))
    await _raises(BadParameter, backend.get_range(b"/", b"0", limit=-1))


async def check_revisions(backend: Backend, clock: FakeClock) -> None:
    revisions = [
        (await backend.create(Item(b"/v/a", b"1"))).revision,
        (await backend.put(Item(b"/v/a", b"1"))).revision,
        (await backend.update(Item(b"/v/a", b"2"))).revision,
        (await backend.compare_and_swap(Item(b"/v/a", b"2"), Item(b"/v/a", b"3"))).revision,
    ]
    assert all(revisions) and len(set(revisions)) == len(revisions), revisions
    assert (await backend.get(b"/v/a")).revision == revisions[-1]
    await backend.delete(b"/v/a")
    assert (await backend.create(Item(b"/v/a", b"1"))).revision not in revisions


async def check_watch_events_in_order(backend: Backend, clock: FakeClock) -> None:
    await backend.put(Item(b"/w/old", b"before the watch"))
    async with await backend.watch([b"/w/"]) as watcher:
        events = aiter(watcher)
        init = await next_event(events)
        assert init.type is EventType.INIT
        a = await backend.put(Item(b"/w/a", b"1"))
        await backend.create(Item(b"/w/b", b"2"))
        a2 = await backend.update(Item(b"/w/a", b"3"))
        await backend.delete(b"/w/b")
        await backend.put(Item(b"/w/c", b"4"))
        await backend.delete_range(b"/w/", range_end(b"/w/"))
        put, _, update, *_ = await _expect(
            events,
            (EventType.PUT, b"/w/a"), (EventType.PUT, b"/w/b"), (EventType.PUT, b"/w/a"),
            (EventType.DELETE, b"/w/b"), (EventType.PUT, b"/w/c"),
            (EventType.DELETE, b"/w/a"), (EventType.DELETE, b"/w/c"), (EventType.DELETE, b"/w/old"))
        assert (put.item.value, put.item.revision) == (b"1", a.revision)
        assert (update.item.value, update.item.revision) == (b"3", a2.revision)


async def check_watch_prefixes(backend: Backend, clock: FakeClock) -> None:
    async with await backend.watch([b"/w/a/", b"/w/c/"]) as watcher:
        events = aiter(watcher)
        assert (await next_event(events)).type is EventType.INIT
        for k in (b"/w/b/x", b"/w/a/x", b"/w/a", b"/w/c/y", b"/x/a/"):
            await backend.put(Item(k, b"v"))
        await backend.delete(b"/w/b/x")
        await backend.delete(b"/w/a/x")
        await _expect(events, (EventType.PUT, b"/w/a/x"), (EventType.PUT, b"/w/c/y"),
                      (EventType.DELETE, b"/w/a/x"))


async def check_watch_everything(backend: Backend, clock: FakeClock) -> None:
    """An empty prefix list follows every key, which is what a full cache replica needs."""
    async with await backend.watch([]) as watcher:
        events = aiter(watcher)
        assert (await next_event(events)).type is EventType.INIT
        await backend.put(Item(b"/one", b"1"))
        await backend.put(Item(b"/two/2", b"2"))
        await _expect(events, (EventType.PUT, b"/one"), (EventType.PUT, b"/two/2"))


async def check_several_watchers(backend: Backend, clock: FakeClock) -> None:
    first, second, other = [await backend.watch(p) for p in ([b"/m/"], [b"/m/"], [b"/n/"])]
    streams = [aiter(w) for w in (first, second, other)]
    for events in streams:
        assert (await next_event(events)).type is EventType.INIT
    await backend.put(Item(b"/m/a", b"1"))
    await backend.put(Item(b"/n/a", b"2"))
    await backend.delete(b"/m/a")
    for events in streams[:2]:
        await _expect(events, (EventType.PUT, b"/m/a"), (EventType.DELETE, b"/m/a"))
    await _expect(streams[2], (EventType.PUT, b"/n/a"))
    for w in (first, second, other):
        await w.close()


async def check_watcher_close(backend: Backend, clock: FakeClock) -> None:
    closing, staying = await backend.watch([b"/x/"]), await backend.watch([b"/x/"])
    closing_events, staying_events = aiter(closing), aiter(staying)
    assert (await next_event(closing_events)).type is EventType.INIT
    await closing.close()
    await closing.close()
    await backend.put(Item(b"/x/a", b"1"))
    await _raises(StopAsyncIteration, next_event(closing_events))
    assert (await next_event(staying_events)).type is EventType.INIT
    await _expect(staying_events, (EventType.PUT, b"/x/a"))
    await staying.close()


async def check_close_ends_watchers(backend: Backend, clock: FakeClock) -> None:
    """Closing the backend ends every stream, so readers notice instead of waiting forever."""
    watcher = await backend.watch([b"/"])
    events = aiter(watcher)
    assert (await next_event(events)).type is EventType.INIT
    await backend.close()
    await backend.close()
    await _raises(StopAsyncIteration, next_event(events))


async def check_binary_keys_and_values(backend: Backend, clock: FakeClock) -> None:
    keys = [b"/bin/a", b"/bin/a\x00", b"/bin/\x00", b"/bin/\xff", b"/bin/\xff\xff",
            b"/bin/\x80\xfe", b"/bin/a/b", b"/bin/\xe2\x82"]
    values = {k: bytes(range(256)) + k for k in keys}
    values[b"/bin/a"] = b""
    async with await backend.watch([b"/bin/\xff"]) as watcher:
        events = aiter(watcher)
        assert (await next_event(events)).type is EventType.INIT
        for k in keys:
            await backend.put(Item(k, values[k]))
        await _expect(events, (EventType.PUT, b"/bin/\xff"), (EventType.PUT, b"/bin/\xff\xff"))
    for k in keys:
        assert (await backend.get(k)).value == values[k]
    listed = await backend.get_range(b"/bin/", range_end(b"/bin/"))
    assert [i.key for i in listed] == sorted(keys)
    assert [i.value for i in listed] == [values[k] for k in sorted(keys)]
    assert [i.key for i in await backend.get_range(b"/bin/\xff", range_end(b"/bin/\xff"))] == [
        b"/bin/\xff", b"/bin/\xff\xff"]


async def check_concurrent_writers(backend: Backend, clock: FakeClock) -> None:
    async def fill(writer: int) -> None:
        for n in range(5):
            await backend.put(Item(f"/cc/{writer:02}/{n}".encode(), b"v"))

    async def create_once() -> bool:
        try:
            await backend.create(Item(b"/cc-once", b"v"))
        except AlreadyExists:
            return False
        return True

    async def increment() -> None:
        while True:
            current = await backend.get(b"/cc-counter")
            try:
                bumped = Item(b"/cc-counter", b"%d" % (int(current.value) + 1))
                await backend.compare_and_swap(current, bumped)
                return
            except CompareFailed:
                continue

    await backend.put(Item(b"/cc-counter", b"0"))
    async with asyncio.TaskGroup() as group:
        for writer in range(10):
            group.create_task(fill(writer))
            group.create_task(increment())
        creates = [group.create_task(create_once()) for _ in range(10)]
    assert len(await backend.get_range(b"/cc/", range_end(b"/cc/"))) == 50
    assert sum(t.result() for t in creates) == 1
    assert (await backend.get(b"/cc-counter")).value == b"10"


async def check_concurrent_writes_watched_in_commit_order(backend: Backend, clock: FakeClock) -> None:
    """A watcher's last event for a key is the stored state, however writers interleave."""
    async with await backend.watch([b"/co/"]) as watcher:
        events = aiter(watcher)
        assert (await next_event(events)).type is EventType.INIT
        async with asyncio.TaskGroup() as group:
            for n in range(20):
                group.create_task(backend.put(Item(b"/co/same", b"%d" % n)))
        seen = [await next_event(events) for _ in range(20)]
        assert (await backend.get(b"/co/same")) == seen[-1].item
        assert sorted(e.item.value for e in seen) == sorted(b"%d" % n for n in range(20))


async def check_expiry_is_watched(backend: Backend, clock: FakeClock) -> None:
    """An item that expires is announced as a DELETE no later than the next write."""
    async with await backend.watch([b"/ex/"]) as watcher:
        events = aiter(watcher)
        assert (await next_event(events)).type is EventType.INIT
        await backend.put(Item(b"/ex/temp", b"t", _later(clock, 5)))
        clock.advance(timedelta(seconds=5))
        await backend.put(Item(b"/ex/next", b"n"))
        await _expect(events, (EventType.PUT, b"/ex/temp"), (EventType.DELETE, b"/ex/temp"),
                      (EventType.PUT, b"/ex/next"))


async def check_refused_writes_leave_concurrent_ones_in_place(backend: Backend,
                                                               clock: FakeClock) -> None:
    """Writes in flight together (a driver may commit them as one batch): each refused one
    fails alone, every other one is stored and watched, in order."""
    await backend.put(Item(b"/rw/taken", b"old"))
    async with await backend.watch([b"/rw/"]) as watcher:
        events = aiter(watcher)
        await _expect(events, (EventType.INIT, b""))
        results = await asyncio.gather(
            *(backend.create(Item(b"/rw/%02d" % n, b"new")) if n % 3 else
              backend.create(Item(b"/rw/taken", b"clash")) for n in range(30)),
            backend.delete(b"/rw/missing"), return_exceptions=True)
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 11 and all(isinstance(r, AlreadyExists | NotFound)
                                          for r in refused), refused
        stored = await backend.get_range(b"/rw/", range_end(b"/rw/"))
        assert [i.key for i in stored] == [b"/rw/%02d" % n for n in range(30) if n % 3] + \
            [b"/rw/taken"]
        assert (await backend.get(b"/rw/taken")).value == b"old"
        seen = [await asyncio.wait_for(anext(events), 5) for _ in range(20)]
        assert sorted(e.item.key for e in seen) == [b"/rw/%02d" % n for n in range(30) if n % 3]
        assert [int(e.item.revision) for e in seen] == sorted(int(e.item.revision) for e in seen)


async def check_watch_resume(backend: Backend, clock: FakeClock) -> None:
    """A watch from a revision replays exactly the later changes under its prefixes, in order."""
    first = await backend.put(Item(b"/r/a", b"1"))
    await backend.put(Item(b"/r/b", b"2"))
    await backend.delete(b"/r/a")
    await backend.put(Item(b"/q/x", b"another prefix"))
    last = await backend.put(Item(b"/r/c", b"3"))
    async with await backend.watch([b"/r/"], since=first.revision) as watcher:
        events = aiter(watcher)
        got = await _expect(events, (EventType.INIT, b""), (EventType.PUT, b"/r/b"),
                            (EventType.DELETE, b"/r/a"), (EventType.PUT, b"/r/c"))
        revisions = [int(e.item.revision) for e in got[1:]]
        assert revisions == sorted(set(revisions)), revisions
        assert int(first.revision) < revisions[0] and revisions[-1] == int(last.revision)
        assert got[3].item.value == b"3"
        live = await backend.put(Item(b"/r/d", b"live"))
        await _expect(events, (EventType.PUT, b"/r/d"))
    # From the newest revision nothing is replayed: the next event is a live one.
    async with await backend.watch([b"/r/"], since=live.revision) as watcher:
        events = aiter(watcher)
        await _expect(events, (EventType.INIT, b""))
        await backend.delete(b"/r/b")
        await _expect(events, (EventType.DELETE, b"/r/b"))
    # A plain watch's INIT carries the revision it starts after: resuming there misses nothing.
    async with await backend.watch([b"/r/"]) as watcher:
        init = await anext(aiter(watcher))
    assert init.type is EventType.INIT and init.item.revision.isdigit(), init
    await backend.put(Item(b"/r/e", b"after"))
    async with await backend.watch([b"/r/"], since=init.item.revision) as watcher:
        await _expect(aiter(watcher), (EventType.INIT, b""), (EventType.PUT, b"/r/e"))


async def check_watch_resume_unknown_revision(backend: Backend, clock: FakeClock) -> None:
    """A revision the store never gave out (another store's, or garbage) is refused."""
    newest = await backend.put(Item(b"/u/a", b"1"))
    for since in (str(int(newest.revision) + 1000), "not-a-revision", "-1"):
        await _raises(LimitExceeded, backend.watch([b"/u/"], since=since))


def _by_name(*checks: Check) -> dict[str, Check]:
    return {c.__name__.removeprefix("check_"): c for c in checks}


CHECKS: dict[str, Check] = _by_name(
    check_get_missing, check_create, check_put, check_update, check_compare_and_swap,
    check_compare_and_swap_revision, check_delete, check_delete_range, check_get_range,
    check_expiry, check_keep_alive, check_keep_alive_all, check_bad_items, check_revisions,
    check_watch_events_in_order, check_watch_prefixes, check_watch_everything,
    check_several_watchers, check_watcher_close, check_close_ends_watchers,
    check_binary_keys_and_values, check_concurrent_writers,
    check_concurrent_writes_watched_in_commit_order, check_watch_resume,
    check_refused_writes_leave_concurrent_ones_in_place,
    check_watch_resume_unknown_revision,
)
EXPIRY_EVENT_CHECKS: dict[str, Check] = _by_name(check_expiry_is_watched)


async def run_check(name: str, make_backend: BackendFactory) -> None:
    """Run one named check on a fresh backend, then prove close() left no task running."""
    check = CHECKS.get(name) or EXPIRY_EVENT_CHECKS[name]
    clock = FakeClock()
    before = asyncio.all_tasks()
    made = make_backend(clock)
    backend = made if isinstance(made, Backend) else await made
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check(backend, clock)
    finally:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await backend.close()
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    if leftover:
        raise AssertionError(f"tasks still running after close(): {leftover}")
