"""The storage drivers side by side: sqlite (the one-machine design) against etcd and PostgreSQL.

Run: .venv/bin/python bench/backend.py [--drivers sqlite,etcd,postgresql] [--items 10000]
     [--runs 200] [--no-cluster]
In one run, against stores on this machine over loopback: sqlite in a temporary file
(WAL, synchronous=FULL, as `teleport start` opens it), a private etcd started from Debian's
`etcd-server` (/usr/bin/etcd, its WAL fsynced as by default) and a private PostgreSQL from Debian's
`postgresql` (initdb in a temporary directory, fsync on), both started like the tests start them
(tests/etcd_server.py, tests/postgres_server.py) and stopped at the end, even on Ctrl-C. Each
driver is the backend the auth server uses (teleport/backend/<driver>.py), driven through the
Backend interface from this one process, and measures:
- put and get of one key: --runs sequential calls each, p50 and p99 in ms (1 KiB values);
- writes/s: --items puts of 1 KiB from 32 concurrent writers, items / wall time;
- range read: get_range over those --items keys, p50 of 5 reads in ms;
- watch fan-out: 10 and then 100 watchers on the writer's backend (as an auth server's caches and
  streams are); 30 puts, each timed from the start of the put call to each watcher's event:
  p50 and p99 over every (write, watcher) pair, in ms. With etcd every watcher is its own etcd
  watch stream; sqlite and PostgreSQL feed their watchers from one in-process fan-out (PostgreSQL
  after its change feed). All watchers share this process's event loop: that cost is included.
Ratios are each figure over sqlite's (for times above 1 is slower than sqlite; for writes/s above
1 is faster). Then, unless --no-cluster, the cluster figure from bench/cache_propagation.py: how
long a node heartbeat and a role change take to reach a proxy's caches, polling against the watch
stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from teleport.backend.base import Backend, Event, EventType, Item, range_end
from teleport.errors import TeleportError

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.append(str(BENCH.parent))  # the tests' server harnesses: tests/*_server.py
from common import BenchError, percentile, positive_int, run_main  # noqa: E402

DRIVERS = ("sqlite", "etcd", "postgresql")
BASELINE = "sqlite"
VALUE = b"v" * 1024
WRITERS = 32
RANGE_READS = 5
FANOUTS = (10, 100)
WATCH_WRITES = 30
#: Seconds a write may take to reach every watcher before the run counts as failed.
WATCH_GIVE_UP = 30.0


@dataclass
class Figures:
    """One driver's results; times in seconds."""

    puts: list[float] = field(default_factory=list)
    gets: list[float] = field(default_factory=list)
    writes_per_second: float = 0.0
    range_reads: list[float] = field(default_factory=list)
    fanout: dict[int, list[float]] = field(default_factory=dict)


# --- the stores ----------------------------------------------------------------------------------


Opener = Callable[[], Awaitable[Backend]]


@contextlib.contextmanager
def store(driver: str, root: Path) -> Iterator[Opener]:
    """Start the driver's server (if it has one) under root; yield how to open a backend on it."""
    if driver == "sqlite":
        from teleport.backend.sqlite import SqliteBackend

        yield lambda: SqliteBackend.open(root / "backend.db")
    elif driver == "etcd":
        from teleport.backend.etcd import EtcdBackend, EtcdSettings
        from tests.etcd_server import ETCD, EtcdServer

        if not os.path.exists(ETCD):
            raise BenchError(f"{ETCD} is not installed (apt-get install etcd-server)")
        server = EtcdServer(root / "etcd")
        try:
            server.start()
            settings = EtcdSettings(peers=[server.url], prefix="/bench/")
            yield lambda: EtcdBackend.open(settings)
        finally:
            server.stop()
    else:
        from teleport.backend.postgres import PostgresBackend
        from tests.postgres_server import PostgresServer

        pg = PostgresServer(fsync=True)  # its own temporary directory, removed by cleanup()
        try:
            pg.start()
            dsn = pg.dsn(pg.create_database())
            yield lambda: PostgresBackend.open(dsn)
        finally:
            pg.cleanup()


# --- the measurements ----------------------------------------------------------------------------


async def _timed(call: Awaitable[object]) -> float:
    start = time.perf_counter()
    await call
    return time.perf_counter() - start


async def single_key(backend: Backend, runs: int, figures: Figures) -> None:
    keys = [f"/single/{i:03d}".encode() for i in range(100)]
    for key in keys:  # untimed: every key exists, connections are warm
        await backend.put(Item(key, VALUE))
    for i in range(runs):
        figures.puts.append(await _timed(backend.put(Item(keys[i % len(keys)], VALUE))))
    for i in range(runs):
        figures.gets.append(await _timed(backend.get(keys[(i * 37) % len(keys)])))


async def fill_and_range(backend: Backend, items: int, figures: Figures) -> None:
    prefix = b"/range/"
    todo = iter(range(items))

    async def writer() -> None:
        for i in todo:  # one shared iterator: each index is written once
            await backend.put(Item(prefix + f"{i:08d}".encode(), VALUE))

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    figures.writes_per_second = items / (time.perf_counter() - start)
    for _ in range(RANGE_READS):
        start = time.perf_counter()
        got = await backend.get_range(prefix, range_end(prefix))
        figures.range_reads.append(time.perf_counter() - start)
        if len(got) != items:
            raise BenchError(f"range read returned {len(got)} items, not {items}")


async def fanout(backend: Backend, watchers: int, writes: int) -> list[float]:
    """Time each write from its put call to its event at each of `watchers` watchers."""
    prefix = f"/watch/{watchers}/".encode()
    sent: dict[bytes, float] = {}
    seen: dict[bytes, int] = {}
    everyone = {key: asyncio.Event() for key in (prefix + b"%d" % i for i in range(writes))}
    took: list[float] = []
    streams = [await backend.watch([prefix]) for _ in range(watchers)]

    async def follow(events: AsyncIterator[Event], ready: asyncio.Event) -> None:
        async for event in events:
            now = time.perf_counter()
            if event.type == EventType.INIT:
                ready.set()
                continue
            key = event.item.key
            took.append(now - sent[key])
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == watchers:
                everyone[key].set()

    readies = [asyncio.Event() for _ in streams]
    tasks = [asyncio.create_task(follow(aiter(s), r)) for s, r in zip(streams, readies, strict=True)]
    try:
        async with asyncio.timeout(WATCH_GIVE_UP):
            await asyncio.gather(*(r.wait() for r in readies))
        for key, done in everyone.items():
            sent[key] = time.perf_counter()  # before the call: the call itself counts
            await backend.put(Item(key, VALUE))
            try:
                async with asyncio.timeout(WATCH_GIVE_UP):
                    await done.wait()
            except TimeoutError:
                raise BenchError(f"a write reached {seen.get(key, 0)} of {watchers} watchers "
                                 f"in {WATCH_GIVE_UP:.0f} s") from None
            await asyncio.sleep(0.01)  # writes apart, so each figure is one write's fan-out
    finally:
        for s in streams:
            await s.close()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)
              and not isinstance(r, asyncio.CancelledError)]
    if failed:
        raise BenchError(f"a watcher failed: {failed[0]}")
    return took


async def measure(open_backend: Opener, items: int, runs: int) -> Figures:
    figures = Figures()
    backend = await open_backend()
    try:
        await single_key(backend, runs, figures)
        await fill_and_range(backend, items, figures)
        for watchers in FANOUTS:
            figures.fanout[watchers] = await fanout(backend, watchers, WATCH_WRITES)
    finally:
        await backend.close()
    return figures


def run_driver(driver: str, items: int, runs: int) -> Figures:
    root = Path(tempfile.mkdtemp(prefix=f"teleport-bench-{driver}-"))
    try:
        with store(driver, root) as open_backend:
            return asyncio.run(measure(open_backend, items, runs))
    except (RuntimeError, TeleportError) as exc:  # the harnesses' and the drivers' errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BenchError(f"{driver}: {first}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the report ----------------------------------------------------------------------------------


def rows(figures: Figures, items: int) -> list[tuple[str, float]]:
    def ms(values: list[float], pct: float) -> float:
        return percentile(sorted(values), pct) * 1e3

    out = [("put p50 ms", ms(figures.puts, 50)), ("put p99 ms", ms(figures.puts, 99)),
           ("get p50 ms", ms(figures.gets, 50)), ("get p99 ms", ms(figures.gets, 99)),
           (f"range read {items} items ms", statistics.median(figures.range_reads) * 1e3)]
    for watchers, took in figures.fanout.items():
        out += [(f"watch x{watchers} p50 ms", ms(took, 50)),
                (f"watch x{watchers} p99 ms", ms(took, 99))]
    out.append((f"writes/s ({WRITERS} writers)", figures.writes_per_second))
    return out


def print_table(results: dict[str, Figures], items: int, runs: int) -> None:
    table = {driver: dict(rows(f, items)) for driver, f in results.items()}
    names = [name for name, _ in rows(next(iter(results.values())), items)]
    others = [d for d in results if d != BASELINE] if BASELINE in results else []
    print(f"backend drivers, loopback, {runs} single-key calls, {items} items of "
          f"{len(VALUE)} B, {WATCH_WRITES} writes per fan-out")
    width = max(len(n) for n in names) + 2
    print(f"{'':<{width}}" + "".join(f"{d:>12}" for d in results)
          + "".join(f"{d + ' x':>14}" for d in others))
    for name in names:
        line = f"{name:<{width}}" + "".join(f"{table[d][name]:>12.1f}" for d in results)
        for d in others:
            base = table[BASELINE][name]
            line += f"{table[d][name] / base:>14.2f}" if base else f"{'-':>14}"
        print(line)
    if others:
        print("x = the figure over sqlite's: for ms above 1 is slower, for writes/s above 1 is "
              "faster")


def cluster(runs: int) -> None:
    """The cluster figure, measured by bench/cache_propagation.py (not duplicated here)."""
    from cache_propagation import measure as propagation

    figures = asyncio.run(propagation(runs))
    print(f"\n{'change reaching a proxy':<26}{'mode':<12}{'p50 ms':>10}{'max ms':>10}"
          f"   ({runs} changes per mode, bench/cache_propagation.py)")
    for what, (interval, polled, watched) in figures.items():
        for mode, took in ((f"poll {interval:g} s", polled), ("watch", watched)):
            print(f"{what:<26}{mode:<12}{statistics.median(took) * 1e3:>10.1f}"
                  f"{max(took) * 1e3:>10.1f}")
        ratio = statistics.median(polled) / statistics.median(watched)
        print(f"{what}: the watch stream is {ratio:.0f}x faster (p50 poll / p50 watch)")


def drivers_arg(text: str) -> list[str]:
    chosen = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in chosen if d not in DRIVERS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown driver {', '.join(unknown) or '(none)'}: choose from {','.join(DRIVERS)}")
    return list(dict.fromkeys(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drivers", type=drivers_arg, default=list(DRIVERS),
                        help=f"comma-separated, from {','.join(DRIVERS)} (default all)")
    parser.add_argument("--items", type=positive_int, default=10_000,
                        help="items written by the concurrent writers and range-read (10000)")
    parser.add_argument("--runs", type=positive_int, default=200,
                        help="timed single-key puts and gets per driver (default 200)")
    parser.add_argument("--no-cluster", action="store_true",
                        help="skip the cache propagation figure (about a minute)")
    parser.add_argument("--cluster-runs", type=positive_int, default=5,
                        help="changes per mode for the cache propagation figure (default 5)")
    args = parser.parse_args()
    # A kill cleans up as Ctrl-C does: as SIGINT, which asyncio.run turns into a cancellation.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    logging.getLogger("teleport").setLevel(logging.ERROR)
    results: dict[str, Figures] = {}
    for driver in args.drivers:
        print(f"measuring {driver} ...", file=sys.stderr, flush=True)
        results[driver] = run_driver(driver, args.items, args.runs)
    print_table(results, args.items, args.runs)
    if not args.no_cluster:
        print("measuring cache propagation ...", file=sys.stderr, flush=True)
        cluster(args.cluster_runs)


if __name__ == "__main__":
    run_main(main)
