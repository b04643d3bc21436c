"""Shared audit storage (issue 19): recordings shipped to S3/GCS, and event search at scale per sink.

Run: .venv/bin/python bench/shared_audit.py [--events 1000000] [--runs 10] [--quick]
     [--sizes 1M,32M] [--recordings 8] [--stores dir,s3,gs] [--sinks file,postgresql,dynamodb]
     [--dynamo-events N] [--no-recordings] [--no-events]
Everything runs on 127.0.0.1 from this checkout (it imports tests/cloud_servers.py and
tests/postgres_server.py) and is stopped and removed at the end, even on Ctrl-C or SIGTERM.

Recordings: --recordings recordings of each size, written with the recorder's own writer
(teleport.events.recording.RecordingWriter; the output is incompressible, 32 KiB a print event),
are uploaded as a node uploads them (receive() of both parts, then commit()) into
- `dir`: SessionStore, the auth server's local disk (files fsynced, then renamed into place);
- `s3`: SharedSessionStore on `s3://bucket/prefix?endpoint=<moto>`: staged exactly as `dir`, then
  moved into the bucket by ship_one(), the shipper's step (multipart above 8 MiB);
- `gs`: the same on `gs://bucket/prefix` through gcp-storage-emulator.
Per store and size: the staging time (receive+commit), the ship time, MiB/s of the step that puts
the recording where it stays (ship_one for s3/gs, receive+commit for dir) and its ratio over dir's,
then MiB/s reading it back whole (open_recording, as a replay streams it; checked byte for byte).

Events: --events events (default 1,000,000) spread evenly over 30 days up to now, with 20 users
and the manual's event types, are written straight into each sink's storage exactly as its emit()
writes them (one emit at a time would take hours): day files of encode_line() lines for `file`
(FileLog), COPY into audit_events for `postgresql` (PostgresEvents, on tests/postgres_server.py,
then VACUUM ANALYZE as autovacuum would), batch_write_item of the sink's own items for `dynamodb`
(DynamoEvents, on moto). Then, --runs times each, searches through the sink's search() with the
EventQuery GET /v1/events builds: the newest page of 500 over the last day, the oldest page of
500 over the 30 days, session.start events of one user newest first (about 0.5% of events),
free text newest first (about 1%), and every page of 500 of one day oldest first. It prints p50
and p95 latency per sink and query (p95 is nearest rank: with 10 runs, the slowest), and checks
every page against the same query evaluated over the generated events in Python.

moto is a Python emulator: its DynamoDB and S3 figures measure the emulator on this machine, not
AWS. Its query reads every item of the table on every call, so DynamoDB gets --dynamo-events
(default 10,000) events instead of --events; the output says what one call cost per item.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import hashlib
import itertools
import json
import logging
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from teleport.errors import TeleportError
from teleport.events import emitter as ev
from teleport.events import recording as rec
from teleport.events.search import EventQuery, event_time

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.append(str(BENCH.parent))  # the tests' server harnesses
from common import BenchError, parse_size, percentile, positive_int, run_main  # noqa: E402

STORES = ("dir", "s3", "gs")
SINKS = ("file", "postgresql", "dynamodb")
BUCKET = "recordings"
NODE = "node-1"
#: Bytes of terminal output per print event of a generated recording.
PIECE = 32 * 1024
DAYS = 30
PAGE = 500
SEED = 19
DYNAMO_DEFAULT = 10_000
TABLE = "bench_audit"
MOTO_NOTE = ("moto is a Python emulator (one local process holding everything in memory): its "
             "S3 and DynamoDB figures measure the emulator on this machine, not AWS")


class _Skip(Exception):
    """A store or sink this machine cannot run (a missing server binary)."""


# --- recordings ----------------------------------------------------------------------------------


@dataclass
class StoreFigures:
    store: str
    size: int
    count: int
    nbytes: int = 0
    stage: float = 0.0
    ship: float = 0.0
    read: float = 0.0

    @property
    def put_seconds(self) -> float:
        """The step that puts the recording where it stays."""
        return self.stage if self.store == "dir" else self.ship


def make_recording(folder: Path, sid: str, size: int, block: bytes) -> None:
    """Write a recording of `size` bytes of output; one random MiB repeated is as incompressible
    to gzip (a 32 KiB window) as fresh random bytes, and costs no entropy."""
    writer = rec.RecordingWriter(folder, sid, {
        "user": "alice", "login": "root", "sid": sid, "server_id": NODE,
        "server_hostname": "node1", "time": datetime.now(timezone.utc).strftime(ev.TIME_FORMAT)})
    written = ms = 0
    while written < size:
        start = written % len(block)
        piece = block[start:start + min(PIECE, size - written)]
        writer.data(rec.PRINT, ms, piece)
        written += len(piece)
        ms += 10
    writer.close(ms, datetime.now(timezone.utc).strftime(ev.TIME_FORMAT))


async def _pieces(path: Path) -> AsyncIterator[bytes]:
    for piece in rec.read_file(path):
        yield piece


async def upload(store: Any, sid: str, source: Path) -> None:
    """Send a recording the way a node does: both parts, then the commit."""
    chunks, events = rec.paths(source, sid)
    await store.receive(sid, "chunks", NODE, _pieces(chunks))
    await store.receive(sid, "events", NODE, _pieces(events))
    if not await store.commit(sid, NODE, NODE):
        raise BenchError(f"recording {sid} was already stored")


Digest = tuple[int, str]


def _digest(pieces: Iterable[bytes]) -> Digest:
    h, n = hashlib.sha256(), 0
    for piece in pieces:
        h.update(piece)
        n += len(piece)
    return n, h.hexdigest()


def _digest_both(events: Iterable[bytes], chunks: Iterable[bytes]
                 ) -> tuple[Digest, Digest]:
    return _digest(events), _digest(chunks)


async def measure_store(name: str, store: Any, source: Path, sids: list[str],
                        size: int, expected: dict[str, tuple[Digest, Digest]]) -> StoreFigures:
    from teleport.events.shared_recordings import SharedSessionStore

    figures = StoreFigures(name, size, len(sids))
    for sid in sids:
        figures.nbytes += sum(p.stat().st_size for p in rec.paths(source, sid))
        start = time.perf_counter()
        await upload(store, sid, source)
        staged = time.perf_counter()
        figures.stage += staged - start
        if isinstance(store, SharedSessionStore):
            await asyncio.to_thread(store.ship_one, sid)
            figures.ship += time.perf_counter() - staged
            if store.exists(sid) or not await store.stored(sid):
                raise BenchError(f"{name}: recording {sid} did not move into the store")
    for sid in sids:
        start = time.perf_counter()
        events, chunks = await store.open_recording(sid)
        got = await asyncio.to_thread(_digest_both, events, chunks)
        figures.read += time.perf_counter() - start
        if got != expected[sid]:
            raise BenchError(f"{name}: recording {sid} read back differs from what was uploaded")
    return figures


@contextlib.contextmanager
def object_store(kind: str, root: Path) -> Iterator[str]:
    """Start the kind's emulator, set its credentials in the environment, yield the store URI."""
    from tests.cloud_servers import GcsEmulator, MotoServer, aws_env, gcs_env

    if kind == "s3":
        os.environ.update(aws_env())
        with MotoServer(root / "moto-s3.log") as moto:
            moto.make_bucket(BUCKET)
            yield f"s3://{BUCKET}/bench?endpoint={moto.url}"
    else:
        if not (Path(sys.executable).parent / "gcp-storage-emulator").exists():
            raise _Skip("gcp-storage-emulator is not installed in this venv")
        with GcsEmulator(root / "gcs.log") as emulator:
            emulator.make_bucket(BUCKET)
            os.environ.update(gcs_env(emulator))
            yield f"gs://{BUCKET}/bench"


async def run_recordings(root: Path, stores: list[str], sizes: list[int],
                         count: int) -> tuple[list[StoreFigures], list[str]]:
    from teleport.events.objectstore import open_object_store
    from teleport.events.sessions_store import SessionStore
    from teleport.events.shared_recordings import SharedSessionStore

    block = os.urandom(1 << 20)
    source = root / "node"
    source.mkdir()
    plan = {size: [str(uuid.uuid4()) for _ in range(count)] for size in sizes}
    warmup = str(uuid.uuid4())  # makes the bucket and the connections, untimed
    print(f"writing {count} recording(s) of each size ...", file=sys.stderr, flush=True)
    expected: dict[str, tuple[Digest, Digest]] = {}
    for size, sids in [*plan.items(), (PIECE, [warmup])]:
        for sid in sids:
            await asyncio.to_thread(make_recording, source, sid, size, block)
            chunks, events = rec.paths(source, sid)
            expected[sid] = (_digest(rec.read_file(events)), _digest(rec.read_file(chunks)))
    results: list[StoreFigures] = []
    skipped: list[str] = []
    for kind in stores:
        print(f"recordings into {kind} ...", file=sys.stderr, flush=True)
        with contextlib.ExitStack() as stack:
            try:
                if kind == "dir":
                    store: Any = SessionStore(root / "dir-store")
                else:
                    uri = stack.enter_context(object_store(kind, root))
                    remote = open_object_store(uri, region="us-east-1")
                    store = SharedSessionStore(root / f"{kind}-staging", remote)
            except _Skip as why:
                skipped.append(f"{kind}: {why}")
                continue
            await measure_store(kind, store, source, [warmup], PIECE, expected)
            for size, sids in plan.items():
                results.append(await measure_store(kind, store, source, sids, size, expected))
    return results, skipped


def _size_text(size: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= div:
            return f"{size / div:g} {unit}"
    return f"{size} B"


def print_recordings(results: list[StoreFigures], skipped: list[str]) -> None:
    print("recordings: uploaded as a node does (receive both parts, commit), then for s3/gs "
          "moved into the bucket by ship_one()")
    print(f"{'store':<6}{'size':>9}{'n':>4}{'MiB':>8}{'stage s':>9}{'ship s':>9}{'MiB/s':>9}"
          f"{'x dir':>7}{'read MiB/s':>12}{'x dir':>7}")
    base = {f.size: f for f in results if f.store == "dir"}
    for f in results:
        mib = f.nbytes / 2**20
        rate, read = mib / f.put_seconds, mib / f.read
        ref = base.get(f.size)
        x_put = f"{rate / (ref.nbytes / 2**20 / ref.put_seconds):7.2f}" if ref else f"{'-':>7}"
        x_read = f"{read / (ref.nbytes / 2**20 / ref.read):7.2f}" if ref else f"{'-':>7}"
        ship = f"{f.ship:9.2f}" if f.store != "dir" else f"{'-':>9}"
        print(f"{f.store:<6}{_size_text(f.size):>9}{f.count:>4}{mib:8.1f}{f.stage:9.2f}{ship}"
              f"{rate:9.1f}{x_put}{read:12.1f}{x_read}")
    print("MiB/s: ship_one for s3/gs, receive+commit for dir (fsync, rename); stage s is the "
          "same receive+commit on the s3/gs staging disk; read: open_recording streamed whole. "
          "x dir above 1 is faster than the local disk.")
    print(MOTO_NOTE + "; gcp-storage-emulator likewise measures the emulator, not GCS.")
    for line in skipped:
        print(f"skipped {line}")


# --- events: what is stored ----------------------------------------------------------------------


TYPES = [(ev.SESSION_START, 10), (ev.SESSION_END, 10), (ev.EXEC, 25), (ev.USER_LOGIN, 8),
         (ev.AUTH, 4), (ev.RESIZE, 12), (ev.SCP, 5), (ev.PORT_FORWARD, 5), (ev.SESSION_JOIN, 4),
         (ev.SESSION_LEAVE, 4), (ev.SFTP, 13)]
USERS = [f"user{i:02d}" for i in range(20)]
HOSTS = [f"node-{i:03d}" for i in range(50)]
#: One of these is looked for by the free-text query: 25% exec x 1/25 = 1% of events.
COMMANDS = ["ls -la /var/log", "df -h", "uptime", "cat /etc/os-release", "ps aux",
            "tail -n 100 /var/log/syslog", "systemctl restart nginx", "journalctl -u sshd",
            "free -m", "top -b -n 1", "du -sh /home/*", "ip addr", "ss -tlnp", "whoami",
            "kubectl get pods -A", "docker ps", "git pull", "make deploy", "crontab -l",
            "grep -r TODO /srv/app", "vim /etc/hosts", "sudo apt-get update", "netstat -an",
            "python3 manage.py migrate", "rsync -a /data /backup"]
TEXT = "SYSTEMCTL Restart"
FILTER_TYPE, FILTER_USER = ev.SESSION_START, "user07"


def generate(count: int, end: datetime, seed: int = SEED) -> Iterator[dict[str, Any]]:
    """Yield count events, oldest first, evenly spread over the DAYS before end (the last at end)."""
    rng = random.Random(seed)
    kinds, weights = zip(*TYPES, strict=True)
    cumulative = list(itertools.accumulate(weights))
    span = DAYS * 86_400_000_000
    start = end - timedelta(days=DAYS)

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    for i in range(count):
        kind = kinds[bisect.bisect(cumulative, rng.random() * cumulative[-1])]
        when = start + timedelta(microseconds=(i + 1) * span // count)
        host = rng.choice(HOSTS)
        event: dict[str, Any] = {"event": kind, "uid": uid(), "time": when.strftime(ev.TIME_FORMAT),
                                 "user": rng.choice(USERS)}
        if kind in (ev.USER_LOGIN, ev.AUTH):
            event.update(method="local", success=kind == ev.USER_LOGIN,
                         **({} if kind == ev.USER_LOGIN else {"error": "invalid credentials"}))
        else:
            event.update(login=rng.choice(("root", "ubuntu", "deploy")), server_id=uid(),
                         server_hostname=host, namespace="default")
            event["addr.remote"] = f"10.{rng.randrange(256)}.{rng.randrange(256)}.7:{rng.randrange(1024, 65535)}"
        if kind in (ev.SESSION_START, ev.SESSION_END, ev.RESIZE, ev.SESSION_JOIN, ev.SESSION_LEAVE):
            event.update(sid=uid(), size="120:40")
        elif kind == ev.EXEC:
            event.update(command=rng.choice(COMMANDS), exitCode=rng.choice((0, 0, 0, 1)))
        elif kind in (ev.SCP, ev.SFTP):
            event.update(path=f"/srv/app/file-{rng.randrange(1000)}.log", action="upload")
        elif kind == ev.PORT_FORWARD:
            event["addr.local"] = f"127.0.0.1:{rng.randrange(1024, 65535)}"
        yield event


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class Plan:
    """The queries of one run, and the one day paged through."""

    queries: dict[str, EventQuery]
    day: EventQuery

    @classmethod
    def make(cls, end: datetime) -> Plan:
        start = end - timedelta(days=DAYS)
        midnight = datetime.combine((start + timedelta(days=DAYS // 2)).date(),
                                    datetime.min.time(), timezone.utc)
        return cls({
            "newest 500, last day": EventQuery(end - timedelta(days=1), end, newest_first=True),
            "oldest 500, 30 days": EventQuery(start, end),
            "type+user, newest": EventQuery(start, end, types=frozenset({FILTER_TYPE}),
                                            user=FILTER_USER, newest_first=True),
            "text, newest": EventQuery(start, end, text=TEXT, newest_first=True),
        }, EventQuery(midnight, midnight + timedelta(days=1) - timedelta(microseconds=1)))


def reference(plan: Plan, events: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Evaluate every query over the generated events in Python: what each first page (and the
    whole paged day) must hold, as uids."""
    pages: dict[str, collections.deque[str] | list[str]] = {
        name: collections.deque(maxlen=q.limit) if q.newest_first else []
        for name, q in plan.queries.items()}
    day: list[str] = []
    for event in events:
        for name, q in plan.queries.items():
            page = pages[name]
            if (isinstance(page, collections.deque) or len(page) < q.limit) and q.matches(event):
                page.append(event["uid"])
        if plan.day.matches(event):
            day.append(event["uid"])
    out = {name: (list(reversed(page)) if isinstance(page, collections.deque) else page)
           for name, page in pages.items()}
    out["day"] = day
    return out


# --- events: filling each sink the way its emit() writes -----------------------------------------


def fill_file(folder: Path, events: Iterable[dict[str, Any]]) -> int:
    """Append encode_line() lines to the day file of each event's time, as FileLog.emit does."""
    from teleport.events.filelog import FILE_MODE, day_file_name, encode_line

    files: dict[Path, list[bytes]] = {}
    total = 0
    for chunk in batches(events, 50_000):
        for event in chunk:
            path = folder / day_file_name(event_time(event) or datetime.now(timezone.utc))
            files.setdefault(path, []).append(encode_line(event).encode())
        for path, lines in files.items():
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            try:
                data = b"".join(lines)
                rec.write_all(fd, data)
                total += len(data)
            finally:
                os.close(fd)
        files.clear()
    return total


async def fill_postgres(dsn: str, events: Iterable[dict[str, Any]]) -> int:
    """COPY the rows PostgresEvents.emit inserts (time, type, user, the file log's JSON text)."""
    import asyncpg

    from teleport.events.pgevents import TABLE as PG_TABLE

    conn = await asyncpg.connect(dsn)
    try:
        for batch in batches(events, 50_000):
            rows = [(event_time(e), e["event"], e["user"],
                     json.dumps(e, separators=(",", ":"), default=str)) for e in batch]
            await conn.copy_records_to_table(
                PG_TABLE, records=rows,
                columns=["event_time", "event_type", "username", "event_data"])
        await conn.execute(f"VACUUM ANALYZE {PG_TABLE}")
        return int(await conn.fetchval(f"SELECT pg_total_relation_size('{PG_TABLE}')"))
    finally:
        await conn.close()


def fill_dynamo(log: Any, clients: list[Any], events: Iterable[dict[str, Any]]) -> None:
    """batch_write_item the items DynamoEvents.emit puts (its own _item builder), 25 a call."""
    def write(job: tuple[int, list[dict[str, Any]]]) -> None:
        index, items = job
        pending = {TABLE: [{"PutRequest": {"Item": item}} for item in items]}
        for _ in range(20):
            answer = clients[index % len(clients)].batch_write_item(RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
            if not pending:
                return
            time.sleep(0.05)
        raise BenchError("DynamoDB left items unprocessed after 20 tries")

    with ThreadPoolExecutor(len(clients)) as pool:
        for chunk in batches(events, 10_000):
            items = [log.item(e) for e in chunk]  # stamps taken in order, as emit() takes them
            list(pool.map(write, enumerate(batches(items, 25))))


def query_call(log: Any, day: datetime, runs: int = 5) -> float:
    """Time one bare query call on the sink's index (one day, Limit 1); return the median."""
    from teleport.events.dynamoevents import DAY, INDEX

    took = []
    for _ in range(runs):
        start = time.perf_counter()
        log.client.query(TableName=TABLE, IndexName=INDEX, Limit=1,
                         KeyConditionExpression="#d = :d", ExpressionAttributeNames={"#d": DAY},
                         ExpressionAttributeValues={":d": {"S": day.date().isoformat()}})
        took.append(time.perf_counter() - start)
    return statistics.median(took)


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@contextlib.asynccontextmanager
async def sink(name: str, root: Path, count: int, end: datetime) -> AsyncIterator[tuple[Any, str]]:
    """Start the sink's server, open the log, fill it with count events; yield (log, fill line)."""
    events = generate(count, end)
    if name == "file":
        from teleport.events.filelog import FileLog

        log = FileLog(root / "log")
        start = time.perf_counter()
        nbytes = await asyncio.to_thread(fill_file, log.folder, events)
        took = time.perf_counter() - start
        yield log, f"{took:.1f} s ({count / took:,.0f} events/s), {nbytes / 2**20:,.0f} MiB of day files"
    elif name == "postgresql":
        from teleport.events.pgevents import PostgresEvents
        from tests.postgres_server import PostgresServer

        try:
            pg = PostgresServer(fsync=True)
        except RuntimeError as err:
            raise _Skip(str(err)) from None
        try:
            await asyncio.to_thread(pg.start)
            dsn = pg.dsn(await asyncio.to_thread(pg.create_database))
            pglog = await PostgresEvents.open(dsn)
            try:
                start = time.perf_counter()
                nbytes = await fill_postgres(dsn, events)
                took = time.perf_counter() - start
                yield pglog, (f"{took:.1f} s ({count / took:,.0f} events/s, COPY + VACUUM "
                              f"ANALYZE), table and index {nbytes / 2**20:,.0f} MiB "
                              "(shared_buffers 32MB, as tests/postgres_server.py starts it)")
            finally:
                await pglog.close()
        finally:
            await asyncio.to_thread(pg.cleanup)
    else:
        from teleport.events.dynamoevents import DynamoEvents
        from tests.cloud_servers import MotoServer, aws_env

        os.environ.update(aws_env())
        with MotoServer(root / "moto-dynamodb.log") as moto:
            assert moto.process is not None
            rss0 = _rss_kib(moto.process.pid)
            dlog = await DynamoEvents.open(f"dynamodb://{TABLE}?endpoint={moto.url}")
            try:
                clients = [moto.client("dynamodb") for _ in range(4)]
                start = time.perf_counter()
                await asyncio.to_thread(fill_dynamo, dlog, clients, events)
                took = time.perf_counter() - start
                grown = (_rss_kib(moto.process.pid) - rss0) / 1024
                yield dlog, (f"{took:.1f} s ({count / took:,.0f} events/s, batch_write_item), "
                             f"moto grew {grown:,.0f} MiB ({grown * 1024 / count:.1f} KiB/event)")
            finally:
                await dlog.close()


# --- events: searching ---------------------------------------------------------------------------


@dataclass
class SinkFigures:
    sink: str
    events: int
    fill: str
    took: dict[str, list[float]] = field(default_factory=dict)
    got: dict[str, int] = field(default_factory=dict)
    day_walks: list[float] = field(default_factory=list)
    day_pages: int = 0
    wrong: list[str] = field(default_factory=list)
    #: Seconds of one DynamoDB query call (Limit 1, one day), moto's cost per call.
    call: float = 0.0


def _check(figures: SinkFigures, what: str, got: list[str], want: list[str]) -> None:
    if got != want and len(figures.wrong) < 10:
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                  min(len(got), len(want)))
        figures.wrong.append(f"{figures.sink}: {what}: {len(got)} events, expected {len(want)}; "
                             f"first difference at #{at}")


async def measure_sink(log: Any, figures: SinkFigures, plan: Plan, want: dict[str, list[str]],
                       runs: int) -> None:
    for run in range(runs):
        for name, query in plan.queries.items():
            start = time.perf_counter()
            page = await log.search(query)
            figures.took.setdefault(name, []).append(time.perf_counter() - start)
            figures.got[name] = len(page.events)
            _check(figures, f"{name} (run {run + 1})", [e["uid"] for e in page.events], want[name])
        uids: list[str] = []
        key, pages, walk = "", 0, time.perf_counter()
        while True:
            start = time.perf_counter()
            page = await log.search(replace(plan.day, start_key=key))
            figures.took.setdefault("day, every page", []).append(time.perf_counter() - start)
            uids += [e["uid"] for e in page.events]
            pages += 1
            if not (key := page.next_key):
                break
            if pages > len(want["day"]) // PAGE + 2:
                figures.wrong.append(f"{figures.sink}: day paging does not end")
                break
        figures.day_walks.append(time.perf_counter() - walk)
        figures.day_pages = pages
        figures.got["day, every page"] = len(uids)
        _check(figures, f"day paging (run {run + 1})", uids, want["day"])


async def run_events(root: Path, sinks: list[str], count: int, dynamo_count: int,
                     runs: int) -> tuple[list[SinkFigures], list[str]]:
    end = datetime.now(timezone.utc).replace(microsecond=0)
    plan = Plan.make(end)
    wants: dict[int, dict[str, list[str]]] = {}
    results: list[SinkFigures] = []
    skipped: list[str] = []
    for name in sinks:
        n = dynamo_count if name == "dynamodb" else count
        if n not in wants:
            print(f"evaluating the queries over {n:,} generated events ...", file=sys.stderr,
                  flush=True)
            wants[n] = await asyncio.to_thread(reference, plan, generate(n, end))
        print(f"filling {name} with {n:,} events ...", file=sys.stderr, flush=True)
        try:
            async with sink(name, root, n, end) as (log, fill):
                print(f"searching {name} ...", file=sys.stderr, flush=True)
                figures = SinkFigures(name, n, fill)
                if name == "dynamodb":
                    figures.call = await asyncio.to_thread(query_call, log, plan.day.since)
                await measure_sink(log, figures, plan, wants[n], runs)
                results.append(figures)
        except _Skip as why:
            skipped.append(f"{name}: {why}")
    return results, skipped


def print_events(results: list[SinkFigures], skipped: list[str], runs: int, count: int) -> None:
    print(f"\nevent search through each sink's search() (EventQuery as GET /v1/events builds it), "
          f"pages of {PAGE}, events over {DAYS} days, {runs} run(s) per query")
    for f in results:
        print(f"fill {f.sink}: {f.events:,} events in {f.fill}")
    print(f"{'sink':<11}{'events':>10}  {'query':<21}{'got':>6}{'p50 ms':>10}{'p95 ms':>10}"
          f"{'x file':>8}")
    base = next((f for f in results if f.sink == "file"), None)
    for f in results:
        for name, took in f.took.items():
            s = sorted(took)
            p50 = statistics.median(s) * 1e3
            ratio = f"{'-':>8}"
            if base is not None and base.events == f.events and name in base.took:
                ratio = f"{p50 / (statistics.median(base.took[name]) * 1e3):8.2f}"
            print(f"{f.sink:<11}{f.events:>10,}  {name:<21}{f.got.get(name, 0):>6}{p50:10.1f}"
                  f"{percentile(s, 95) * 1e3:10.1f}{ratio}")
        print(f"{'':<23}one whole day: {f.day_pages} pages, "
              f"{statistics.median(f.day_walks) * 1e3:,.0f} ms (p50 of {len(f.day_walks)})")
    print(f"queries: newest/oldest are unfiltered; type+user = {FILTER_TYPE} of {FILTER_USER} "
          f"(~0.5% of events), text = {TEXT!r} (~1%), both over all {DAYS} days; day = one full "
          "day oldest first, every page (the p50/p95 are per page). x file: p50 over the file "
          "log's, same events only (above 1 is slower).")
    dyn = next((f for f in results if f.sink == "dynamodb"), None)
    if dyn is not None:
        per_item = dyn.call / dyn.events
        print(f"{MOTO_NOTE}.")
        if dyn.events < count:
            at_count = per_item * count
            print(f"DynamoDB got {dyn.events:,} events, not {count:,}: moto's query walks every "
                  f"item of the table on each call (its index is a scan and a sort), and one "
                  f"bare query call (one day, Limit 1) took {dyn.call * 1e3:,.0f} ms here, "
                  f"{per_item * 1e6:.0f} us per stored item: about {at_count:,.1f} s a call at "
                  f"{count:,} items"
                  + (", past boto's 30 s read timeout" if at_count > 30 else "")
                  + f", while a filtered search makes a call per day and per 500 items read "
                  f"(DynamoDB filters after reading): {DAYS + 1} to hundreds of calls a page.")
    wrong = [line for f in results for line in f.wrong]
    print("checked: every page equals the query evaluated over the generated events"
          if not wrong else "WRONG RESULTS (a product bug?):")
    for line in wrong:
        print(f"  {line}")
    for line in skipped:
        print(f"skipped {line}")


# --- main ----------------------------------------------------------------------------------------


def _choices(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        chosen = [c.strip() for c in text.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or '(none)'}: choose from {','.join(allowed)}")
        return list(dict.fromkeys(chosen))
    return parse


def _sizes(text: str) -> list[int]:
    return [parse_size(s) for s in text.split(",") if s.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=positive_int, default=None,
                        help="events per sink (default 1000000; --quick 20000)")
    parser.add_argument("--dynamo-events", type=positive_int, default=None,
                        help=f"events for DynamoDB on moto (default min(--events, "
                             f"{DYNAMO_DEFAULT}); --quick 5000)")
    parser.add_argument("--runs", type=positive_int, default=None,
                        help="runs of each search (default 10; --quick 3)")
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="recording sizes (default 1M,32M; --quick 256K,4M)")
    parser.add_argument("--recordings", type=positive_int, default=None,
                        help="recordings of each size per store (default 8; --quick 3)")
    parser.add_argument("--stores", type=_choices(STORES), default=list(STORES),
                        help=f"recording stores, from {','.join(STORES)} (default all)")
    parser.add_argument("--sinks", type=_choices(SINKS), default=list(SINKS),
                        help=f"event sinks, from {','.join(SINKS)} (default all)")
    parser.add_argument("--quick", action="store_true", help="small figures, for a first look")
    parser.add_argument("--no-recordings", action="store_true")
    parser.add_argument("--no-events", action="store_true")
    args = parser.parse_args()
    quick = args.quick
    events = args.events or (20_000 if quick else 1_000_000)
    dynamo = args.dynamo_events or min(events, 5_000 if quick else DYNAMO_DEFAULT)
    runs = args.runs or (3 if quick else 10)
    sizes = args.sizes or [parse_size(s) for s in (("256K", "4M") if quick else ("1M", "32M"))]
    count = args.recordings or (3 if quick else 8)
    # A kill cleans up as Ctrl-C does: as SIGINT, which asyncio.run turns into a cancellation.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    logging.getLogger("teleport").setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="teleport-bench-shared-"))
    try:
        if not args.no_recordings:
            figures, skipped = asyncio.run(run_recordings(root, args.stores, sizes, count))
            print_recordings(figures, skipped)
            sys.stdout.flush()
        if not args.no_events:
            results, skipped = asyncio.run(run_events(root, args.sinks, events, dynamo, runs))
            print_events(results, skipped, runs, events)
    except (RuntimeError, TeleportError) as exc:  # the harnesses' and the product's errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BenchError(first) from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
