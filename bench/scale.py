"""How many heartbeating nodes one auth server carries (issue 20): N real joins, then measure.

Run: .venv/bin/python bench/scale.py [--nodes 1000[,5000,10000]] [--settle 10] [--keep]
For each N in turn, in a fresh temporary directory: an auth-only, a proxy-only and a real
SSH-only node `teleport start` (three processes, so the auth server's CPU and memory are its
own), a user logged in with `tsh login`, then N lightweight agents in worker processes of this
script (one event loop each). Each agent
- joins for real (`POST /v1/join` with the static token) from its own loopback source
  address (127.0.x.y, a few agents to an address: the join limiter and the handshake throttle
  count per address, as for separate hosts behind no NAT); nothing is signed here;
- heartbeats every interval (a direct node: its address, TTL three intervals) as
  `teleport.service.heartbeat` does: its whole record (`PUT /v1/servers`) first and after a
  failure, else a keep-alive (`PUT /v1/servers/keepalive`); sleep the interval after each answer, over
  its own keep-alive mutual TLS connection with its own host certificate, from its address.
  The request is written by hand (HTTP/1.1) instead of through `AuthClient`, so the generator
  costs little; the auth server sees the same request a node sends. A worker has at most
  `HANDSHAKES_PER_WORKER` TLS handshakes in flight, so its own delay never looks like the
  server's (the auth server resets handshakes its client does not finish in time).
Prints, per N: the join rate; the time until `tctl nodes ls` lists every node; over a window of
pure heartbeating the heartbeats/s that arrived, heartbeat p50/p99 (from writing the request to
reading the answer, as the node sees it), the auth process's CPU (median and p95 of per-second
samples, % of one core) and the agents' own CPU (a saturated generator shows here); then
under the same load the wall time of `tctl nodes ls` and `tsh ls` and whether each listed every
node, and `tsh ssh` to the real node; last the auth process's RSS before load, at its peak, when
the load stops, one minute later and `--settle` minutes later. Targets (issue 20, N=10,000):
auth CPU median under one core, heartbeat p99 < 100 ms, `tctl nodes ls` < 1 s, no node missing,
RSS within 10% of before ten minutes after the load stops.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BIN,
    NODENAME,
    BenchError,
    JoinRefused,
    SplitCluster,
    fetch_join_ca,
    join_host,
    percentile,
    positive_int,
    proc_cpu_seconds,
    proc_status_kb,
    raise_fd_limit,
    run_main,
    sigterm_as_interrupt,
    source_address,
)

from teleport import __version__  # noqa: E402
from teleport.api.presence_models import ServerKeepAlive  # noqa: E402
from teleport.auth.api import JOIN_BURST  # noqa: E402
from teleport.keys import tlsconfig  # noqa: E402
from teleport.keys.authname import auth_server_name  # noqa: E402
from teleport.service.heartbeat import HEARTBEAT_INTERVAL, SERVER_TTL  # noqa: E402
from teleport.types.codec import to_dict  # noqa: E402
from teleport.types.resource import Metadata  # noqa: E402
from teleport.types.resources import Server, ServerSpec  # noqa: E402
from teleport.utils.clock import RealClock  # noqa: E402

CLUSTER = "scale.test"
TOKEN = "bench-scale-static-token"
#: Agents per loopback source address: under the join limiter's per-address burst.
PER_ADDRESS = max(1, JOIN_BURST - 2)
#: What agents advertise as their SSH address; nobody dials it.
AGENT_PORT = 3022
#: Heartbeats one worker process is given at most per second (one event loop, one core).
BEATS_PER_WORKER = 800.0
REQUEST_TIMEOUT = 30.0
#: One join's whole exchange; tries before the run gives up on an agent.
JOIN_TIMEOUT = 60.0
JOIN_ATTEMPTS = 5
#: TLS handshakes one worker has in flight at once. Real nodes each have their own CPU; the
#: worker has one event loop for thousands of agents, and with every agent of the ramp mid-
#: handshake at once a starved worker answered the server's handshake messages after the
#: auth server's handshake deadline, which then reset those connections (thousands at
#: N=5,000 on a loaded machine): the generator's own delay, not the server's.
HANDSHAKES_PER_WORKER = 32
#: A worker above this share of one core delays its own heartbeats: its latencies lie.
SATURATED = 0.85


# --- the agents: worker processes, one event loop each ------------------------------------------

@dataclass(frozen=True)
class WorkerSpec:
    first: int
    count: int
    auth: tuple[str, int]
    ca_certs: list[bytes]
    interval: float
    #: The first heartbeats are spread over this many seconds.
    ramp: float
    parallel_joins: int


class Refused(BenchError):
    """The auth server answered with an error status (the connection stays usable)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthConn:
    """One agent's keep-alive HTTP/1.1 mutual-TLS connection to the auth server."""

    def __init__(self, spec: WorkerSpec, ctx: ssl.SSLContext, source: str,
                 gate: asyncio.Semaphore) -> None:
        self.spec = spec
        self.ctx = ctx
        self.source = source
        self.gate = gate
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Dial and shake hands unless connected (one of the worker's few handshakes at once)."""
        if self.writer is None:
            host, port = self.spec.auth
            async with self.gate:
                self.reader, self.writer = await asyncio.open_connection(
                    host, port, ssl=self.ctx, local_addr=(self.source, 0),
                    server_hostname=auth_server_name(CLUSTER))

    async def put(self, path: str, body: bytes) -> None:
        """Send one request and read its whole answer; raise on anything but 200."""
        await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(b"PUT %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (
                              path.encode(), self.spec.auth[0].encode(), self.spec.auth[1],
                              len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" not in headers:
            raise BenchError(f"answer {status} without Content-Length")
        answer = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        if status != 200:
            raise Refused(f"{status} {answer[:120].decode(errors='replace')}", status)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Worker:
    """Join `spec.count` agents, then heartbeat each until told to stop; answer the parent."""

    conn: multiprocessing.connection.Connection
    spec: WorkerSpec
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    failures: int = 0
    #: Keep-alives answered 404 (the record had expired), then sent whole.
    expired: int = 0
    last_error: str = ""
    #: Joins tried again after a timeout, a reset or a busy answer.
    join_retries: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    conns: list[AuthConn] = field(default_factory=list)
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(
        HANDSHAKES_PER_WORKER))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # uvloop leaves a reset handshake's inner future unread: the failure is counted in
        # `failures` already, so do not print a traceback per connection.
        loop.set_exception_handler(lambda lp, ctx: None if isinstance(
            ctx.get("exception"), ConnectionError) or str(ctx.get("message", "")).startswith(
                "Fatal error on SSL protocol") else lp.default_exception_handler(ctx))
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        def readable() -> None:
            try:
                inbox.put_nowait(self.conn.recv())
            except (EOFError, OSError):  # the parent is gone: stop
                loop.remove_reader(self.conn.fileno())
                inbox.put_nowait(("stop",))

        loop.add_reader(self.conn.fileno(), readable)
        # The loop made the pipe non-blocking; a long ramp's latencies (megabytes) then failed
        # to send with EAGAIN. Blocking writes are fine: the parent is reading.
        os.set_blocking(self.conn.fileno(), True)
        try:
            agents = await self._join_all()
        except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
            self.conn.send(("error", f"join failed: {exc}"))
            return
        self.conn.send(("joined", self.join_retries))
        while True:
            message = await inbox.get()
            if message[0] == "go":
                for ident, index in agents:
                    task = loop.create_task(self._beat(ident, index))
                    task.add_done_callback(self._ended)
                    self.tasks.append(task)
            elif message[0] == "stats":
                self.conn.send(("stats", self.latencies.tobytes(), self.failures,
                                self.last_error, time.process_time(), self.expired))
                self.latencies = array.array("d")
                self.failures = self.expired = 0
            elif message[0] == "stop":
                for task in self.tasks:
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                for c in self.conns:
                    c.close()
                await asyncio.sleep(0.1)  # let the TLS close_notify go out
                with contextlib.suppress(OSError):
                    self.conn.send(("stopped",))
                return

    def _ended(self, task: asyncio.Task[None]) -> None:
        """An agent's loop ends only when stopped: anything else is a bench bug, reported as
        the stats' last error (it once left every agent silent, and the run waiting)."""
        if not task.cancelled() and task.exception() is not None:
            self.failures += 1
            self.last_error = f"agent crashed: {task.exception()!r}"[:200]

    async def _join_all(self) -> list[tuple[Any, int]]:
        gate = asyncio.Semaphore(self.spec.parallel_joins)
        auth = f"{self.spec.auth[0]}:{self.spec.auth[1]}"

        async def one(i: int) -> tuple[Any, int]:
            src = source_address(i, PER_ADDRESS)
            attempt = 0
            while True:
                attempt += 1
                try:
                    # Bounded: aiohttp's own limit is five minutes, and a join stuck that
                    # long on a loaded machine is better tried again than waited for.
                    async with gate, asyncio.timeout(JOIN_TIMEOUT):
                        ident = await join_host(auth, self.spec.ca_certs, token=TOKEN,
                                                cluster=CLUSTER, nodename=f"sim-{i:05d}",
                                                source=src, addresses=[src])
                    return ident, i
                except (JoinRefused, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    # As a node does: a busy or rate-limiting server is tried again later. A
                    # 429 is the server pacing the fleet's joins (its total rate), not a
                    # failure: it costs no attempt (the fleet's --timeout still bounds it).
                    limited = isinstance(exc, JoinRefused) and exc.status == 429
                    if limited:
                        attempt -= 1
                    if attempt == JOIN_ATTEMPTS or (isinstance(exc, JoinRefused)
                                                    and not exc.transient):
                        raise BenchError(f"join of sim-{i:05d} failed after {attempt} "
                                         f"attempt(s): {type(exc).__name__}: {exc}") from exc
                    self.join_retries += 1
                    await asyncio.sleep(random.uniform(1, 2) * max(attempt, 1))

        first = self.spec.first
        return list(await asyncio.gather(*(one(i) for i in range(first,
                                                               first + self.spec.count))))

    async def _beat(self, ident: Any, index: int) -> None:
        """As `teleport.service.heartbeat.heartbeat_forever`: a beat every interval, a
        keep-alive while the last accepted expiry is ahead, else (and after a 404 on the same
        connection, or a failure) the whole record."""
        spec = self.spec
        src = source_address(index, PER_ADDRESS)
        ttl = SERVER_TTL * (spec.interval / HEARTBEAT_INTERVAL)
        clock = RealClock()
        spec_part = ServerSpec(addr=f"{src}:{AGENT_PORT}", hostname=f"sim-{index:05d}",
                               version=__version__)
        await asyncio.sleep(random.uniform(0, spec.ramp))
        # After the ramp's sleep: thousands of contexts built at once held the worker's loop
        # for a minute, and it missed the parent's questions.
        async with self.gate:  # contexts are built at the pace handshakes finish
            ctx = tlsconfig.ssl_client_context(ident.tls_cert.encode(),
                                               ident.tls_private_key.encode(),
                                               [c.encode() for c in ident.tls_ca_certs])
        conn = AuthConn(spec, ctx, src, self.gate)
        self.conns.append(conn)
        announced = False  # as `Heartbeat`: the whole record first and after a failure
        alive_until = clock.now()  # the last accepted expiry
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + spec.interval
            try:
                # Connected before the expiry is set: a record whose TTL was spent waiting for
                # the worker's handshake turn expired before its first keep-alive (404s).
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    await conn.connect()
            except Exception as exc:  # noqa: BLE001 - counted; the next beat redials
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                conn.close()
                await asyncio.sleep(max(0.0, due - loop.time()))
                continue
            now = clock.now()
            expires = now + ttl
            if announced and now < alive_until:
                path, body = "/v1/servers/keepalive", json.dumps(ServerKeepAlive(
                    kind="node", name=ident.host_uuid, expires=expires).model_dump(
                        mode="json")).encode()
            else:
                path, body = "/v1/servers", json.dumps(to_dict(Server(
                    kind="node", version="v2", spec=spec_part,
                    metadata=Metadata(name=ident.host_uuid, expires=expires)))).encode()
            start = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    try:
                        await conn.put(path, body)
                    except Refused as refused:
                        if refused.status != 404 or not announced:
                            raise
                        # The record expired: as `Heartbeat`, whole at once, same connection.
                        self.expired += 1
                        path, body = "/v1/servers", json.dumps(to_dict(Server(
                            kind="node", version="v2", spec=spec_part,
                            metadata=Metadata(name=ident.host_uuid, expires=expires)))).encode()
                        await conn.put(path, body)
                self.latencies.append(time.perf_counter() - start)
                announced, alive_until = True, expires
            except Exception as exc:  # noqa: BLE001 - counted; the next beat redials
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                announced = False
                if not isinstance(exc, Refused):
                    conn.close()
            await asyncio.sleep(max(0.0, due - loop.time()))


def worker_main(conn: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
    """Entry of a worker process: the parent alone handles Ctrl-C and cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("teleport").setLevel(logging.ERROR)
    try:
        import uvloop
        uvloop.install()  # the generator's cost is not what is measured: use the fast loop
    except ImportError:
        pass
    asyncio.run(Worker(conn, spec).run())


class Fleet:
    """The worker processes and their agents, as seen from the parent."""

    def __init__(self, n: int, workers: int, auth: tuple[str, int], ca_certs: list[bytes],
                 args: argparse.Namespace) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.pipes: list[multiprocessing.connection.Connection] = []
        per = math.ceil(n / workers)
        ramp = max(args.interval, n / args.ramp_rate)
        for first in range(0, n, per):
            spec = WorkerSpec(first, min(per, n - first), auth, ca_certs, args.interval, ramp,
                              max(1, args.parallel // workers))
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, spec), daemon=True,
                               name=f"scale-agents-{first}")
            proc.start()
            child.close()
            self.procs.append(proc)
            self.pipes.append(parent)
        self.cpu_mark = [0.0] * len(self.procs)
        #: Keep-alives that found their record expired, over the last stats() call's span.
        self.expired = 0

    def _ask(self, message: tuple[Any, ...], want: str, timeout: float) -> list[tuple[Any, ...]]:
        for pipe in self.pipes:
            if message:
                pipe.send(message)
        answers = []
        deadline = time.monotonic() + timeout
        for proc, pipe in zip(self.procs, self.pipes, strict=True):
            while not pipe.poll(0.5):
                if not proc.is_alive():
                    raise BenchError(f"agent worker {proc.name} exited ({proc.exitcode})")
                if time.monotonic() > deadline:
                    raise BenchError(f"agent worker {proc.name} did not answer {want!r} "
                                     f"within {timeout:.0f}s")
            answer = pipe.recv()
            if answer[0] == "error":
                raise BenchError(answer[1])
            answers.append(answer)
        return answers

    def wait_joined(self, timeout: float) -> int:
        """Wait for every worker's agents to join; return the joins tried again."""
        return sum(answer[1] for answer in self._ask((), "joined", timeout))

    def go(self) -> None:
        for pipe in self.pipes:
            pipe.send(("go",))

    def stats(self) -> tuple[list[float], int, str, list[float]]:
        """Latencies and failures since the last call, and each worker's CPU since then."""
        latencies: list[float] = []
        failures, error, cpu = 0, "", []
        self.expired = 0
        for i, (_, raw, failed, last, cpu_now, expired) in enumerate(
                self._ask(("stats",), "stats", 60)):
            self.expired += expired
            values = array.array("d")
            values.frombytes(raw)
            latencies += values
            failures += failed
            error = error or last
            cpu.append(cpu_now - self.cpu_mark[i])
            self.cpu_mark[i] = cpu_now
        return latencies, failures, error, cpu

    def stop(self) -> None:
        """Ask every worker to close its connections, then make sure they are gone."""
        with contextlib.suppress(BenchError, OSError, EOFError):
            self._ask(("stop",), "stopped", 30)
        for proc in self.procs:
            proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()


# --- measuring the auth process -----------------------------------------------------------------

class Sampler(threading.Thread):
    """Every second: the auth process's CPU over that second (% of one core) and its VmRSS."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="sampler")
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (time, cpu %, rss KiB)
        self.done = threading.Event()

    def run(self) -> None:
        last_t, last_cpu = time.monotonic(), proc_cpu_seconds(self.pid)
        while not self.done.wait(1.0):
            try:
                now, cpu = time.monotonic(), proc_cpu_seconds(self.pid)
                rss = proc_status_kb(self.pid, "VmRSS")
            except (OSError, BenchError):
                return  # the process is gone; the main thread reports it
            self.samples.append((now, 100 * (cpu - last_cpu) / (now - last_t), rss))
            last_t, last_cpu = now, cpu

    def cpu_between(self, start: float, end: float) -> list[float]:
        return sorted(c for t, c, _ in self.samples if start < t <= end)


@dataclass
class Listing:
    seconds: list[float]
    complete: bool
    shown: str


def timed(argv: list[str], env: dict[str, str] | None = None,
          timeout: float = 120) -> tuple[float, str]:
    """Run a CLI, return (wall seconds, stdout); a failure is one line naming the command."""
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                            stdin=subprocess.DEVNULL)
    took = time.perf_counter() - start
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"`{Path(argv[0]).name} {' '.join(argv[1:3])}` exited "
                         f"{result.returncode}: {last}")
    return took, result.stdout


def count_listed(stdout: str) -> tuple[int, bool]:
    """Simulated nodes in a listing, and whether the real node is in it too."""
    names = [line.split()[0] for line in stdout.splitlines() if line.strip()]
    return sum(1 for n in names if n.startswith("sim-")), NODENAME in names


def listing(argv: list[str], n: int, runs: int, env: dict[str, str] | None = None) -> Listing:
    times, complete, shown = [], True, ""
    for _ in range(runs):
        took, out = timed(argv, env)
        times.append(took)
        sims, real = count_listed(out)
        complete = complete and sims == n and real
        if sims != n or not real:
            shown = f"{sims + real} of {n + 1}"
    return Listing(times, complete, shown or f"all {n + 1}")


def wait_listed(cluster: SplitCluster, n: int, timeout: float) -> float:
    """Poll `tctl nodes ls` until it lists all N agents and the real node; return seconds."""
    start = time.perf_counter()
    sims = real = 0
    failed, error = 0, ""
    while time.perf_counter() - start < timeout:
        cluster.check_alive()
        try:
            _, out = timed(cluster.tctl_argv("nodes", "ls"))
        except BenchError as exc:  # the ramp's handshakes can crowd it out: not listed yet
            failed, error = failed + 1, str(exc)
            continue
        sims, real = count_listed(out)
        if sims == n and real:
            if failed:
                print(f"({failed} `tctl nodes ls` failed while waiting; last: {error})",
                      flush=True)
            return time.perf_counter() - start
        time.sleep(1.0)
    raise BenchError(f"after {timeout:.0f}s `tctl nodes ls` listed {sims} of {n} agents"
                     f"{'' if real else ' and not the real node'}; {failed} failed"
                     f"{f' (last: {error})' if error else ''}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


# --- one N --------------------------------------------------------------------------------------

def measure(n: int, args: argparse.Namespace) -> dict[str, str]:
    """Run the whole measurement at N nodes in a fresh cluster; print and return the figures."""
    root = Path(tempfile.mkdtemp(prefix=f"teleport-bench-scale-{n}-"))
    cluster = SplitCluster(root, CLUSTER, TOKEN, node=True)
    fleet: Fleet | None = None
    sampler: Sampler | None = None
    keep = args.keep

    def print_load() -> None:
        """Print what was measured under load (the variables are set by then)."""
        lat.sort()
        lat_busy.sort()
        expected = n / args.interval
        rate = len(lat) / window
        over = [(i + 1, 100 * c / window) for i, c in enumerate(agent_cpu)]
        busiest = max(p for _, p in over)
        print()
        print(f"N (joined, heartbeating nodes)        {n} (+1 real node)")
        print(f"heartbeats arrived                    {rate:.0f}/s of {expected:.0f}/s expected "
              f"({args.interval:g} s interval), {failed} failed"
              f"{f' (last: {error})' if error else ''}; {expired} found their record "
              f"expired ({ramp_expired} during the ramp)")
        if lat:
            print(f"heartbeat latency                     p50 {ms(statistics.median(lat))} ms, "
                  f"p99 {ms(percentile(lat, 99))} ms, max {ms(lat[-1])} ms (target p99 < 100)")
        if lat_busy:
            print(f"  ... while listing                   p50 {ms(statistics.median(lat_busy))} ms, "
                  f"p99 {ms(percentile(lat_busy, 99))} ms, {failed_busy} failed"
                  f"{f' (last: {error_busy})' if error_busy else ''}")
        if ramp_lat or ramp_fail:
            ramp_lat.sort()
            print(f"  ... during the ramp                 p50 {ms(statistics.median(ramp_lat)) if ramp_lat else '-'} ms, "
                  f"p99 {ms(percentile(ramp_lat, 99)) if ramp_lat else '-'} ms, {ramp_fail} failed"
                  f"{f' (last: {ramp_err})' if ramp_err else ''}")
        print(f"auth CPU (per-second samples)         median {statistics.median(cpu):.0f}%, "
              f"p95 {percentile(cpu, 95):.0f}% of one core over {len(cpu)} s (target median < 100%)")
        print(f"agents' CPU (this script's workers)   {100 * sum(agent_cpu) / window:.0f}% in total, "
              f"busiest worker {busiest:.0f}% of one core"
              f"{'  << SATURATED: raise --workers; latencies include its delay' if busiest > 100 * SATURATED else ''}")
        print(f"{f'tctl nodes ls (median of {args.runs})':<38}{ms(statistics.median(tctl.seconds))} ms "
              f"(max {ms(max(tctl.seconds))}), listed {tctl.shown} (target < 1000 ms, none missing)")
        print(f"{f'tsh ls (median of {args.runs})':<38}{ms(statistics.median(tsh.seconds))} ms "
              f"(max {ms(max(tsh.seconds))}), listed {tsh.shown}")
        ssh.sort()
        print(f"{f'tsh ssh {NODENAME} true ({args.runs} runs)':<38}"
              + (f"p50 {ms(statistics.median(ssh))} ms, max {ms(ssh[-1])} ms" if ssh else "")
              + (f"; {args.runs - len(ssh)} failed (last: {ssh_error})" if ssh_error else ""),
              flush=True)

    try:
        cluster.start()
        cluster.login()
        wait_listed(cluster, 0, 60)
        auth_pid = cluster.pid("auth")
        time.sleep(2)
        rss_before = proc_status_kb(auth_pid, "VmRSS")
        workers = args.workers or max(1, math.ceil(n / args.interval / BEATS_PER_WORKER))
        print(f"\n== N = {n}: auth pid {auth_pid}, proxy pid {cluster.pid('proxy')}, node pid "
              f"{cluster.pid('node')}; {workers} agent worker(s), {PER_ADDRESS} agents per "
              "loopback source address", flush=True)

        ca_certs = asyncio.run(fetch_join_ca(f"127.0.0.1:{cluster.ports['auth']}"))
        t0 = time.perf_counter()
        fleet = Fleet(n, workers, ("127.0.0.1", cluster.ports["auth"]), ca_certs, args)
        retries = fleet.wait_joined(args.timeout)
        joined = time.perf_counter() - t0
        print(f"joined {n} agents in {joined:.1f} s ({n / joined:.0f}/s, worker start-up "
              f"included), {retries} join(s) tried again", flush=True)

        sampler = Sampler(auth_pid)
        sampler.start()
        fleet.go()
        fleet.stats()  # CPU marks start here
        listed_after = wait_listed(cluster, n, args.timeout)
        print(f"all {n} listed {listed_after:.1f} s after the heartbeats started "
              f"(first beats spread over {max(args.interval, n / args.ramp_rate):.0f} s)",
              flush=True)
        time.sleep(args.interval)  # every agent has its connection and has beaten once more
        ramp_lat, ramp_fail, ramp_err, _ = fleet.stats()
        ramp_expired = fleet.expired

        w0 = time.monotonic()
        time.sleep(args.duration)
        lat, failed, error, agent_cpu = fleet.stats()
        expired = fleet.expired
        window = time.monotonic() - w0
        cpu = sampler.cpu_between(w0, time.monotonic())
        cluster.check_alive()
        print(f"heartbeat window of {window:.0f} s done; listing under load", flush=True)

        tctl = listing(cluster.tctl_argv("nodes", "ls"), n, args.runs)
        tsh = listing([str(BIN / "tsh"), "ls"], n, args.runs, cluster.env)
        ssh: list[float] = []
        ssh_error = ""
        for _ in range(args.runs):
            try:  # a failure is a figure too: the other figures are still printed
                ssh.append(timed([str(BIN / "tsh"), "ssh", f"root@{NODENAME}", "true"],
                                 cluster.env)[0])
            except BenchError as exc:
                ssh_error = str(exc)
        lat_busy, failed_busy, error_busy, _ = fleet.stats()
        cluster.check_alive()

        peak = proc_status_kb(auth_pid, "VmHWM")
        fleet.stop()
        fleet = None
        stopped = time.monotonic()
        rss_after = [("when the load stopped", proc_status_kb(auth_pid, "VmRSS"))]
        # The load's figures now: the RSS readings below take --settle minutes more.
        print_load()
        for minutes in sorted({m for m in (1.0, args.settle) if 0 < m <= args.settle}):
            print(f"waiting for +{minutes:g} min after the load stopped ...", flush=True)
            time.sleep(max(0.0, stopped + 60 * minutes - time.monotonic()))
            cluster.check_alive()
            rss_after.append((f"+{minutes:g} min after", proc_status_kb(auth_pid, "VmRSS")))
    except BaseException:
        keep = True
        raise
    finally:
        if sampler is not None:
            sampler.done.set()
        if fleet is not None:
            fleet.stop()
        cluster.stop()
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"auth RSS before load                  {mib(rss_before)}")
    print(f"auth RSS peak (VmHWM)                 {mib(peak)}")
    for label, value in rss_after:
        print(f"auth RSS {label:<28} {mib(value)} ({100 * (value / rss_before - 1):+.0f}% of "
              "before; target within 10% at +10 min)")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    return {
        "N": str(n), "beats/s": f"{len(lat) / window:.0f}/{n / args.interval:.0f}",
        "hb p50": ms(statistics.median(lat)) if lat else "-",
        "hb p99": ms(percentile(lat, 99)) if lat else "-",
        "auth cpu": f"{statistics.median(cpu):.0f}%", "cpu p95": f"{percentile(cpu, 95):.0f}%",
        "tctl ls": ms(statistics.median(tctl.seconds)) + ("" if tctl.complete else "!"),
        "tsh ls": ms(statistics.median(tsh.seconds)) + ("" if tsh.complete else "!"),
        "tsh ssh": ms(statistics.median(ssh)) if ssh else "failed",
        "rss": f"{rss_before // 1024}/{peak // 1024}/{rss_after[-1][1] // 1024}",
    }


def node_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of node counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"node counts must be at least 1: {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=node_counts, default=[1000],
                        help="N, or several run in turn: 1000,5000,10000 (default 1000)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="minutes to wait after the load stops for the last RSS reading "
                             "(default 10, as the issue; 0: read it when the load stops)")
    parser.add_argument("--duration", type=float, default=300.0,
                        help="seconds of pure heartbeating measured (default 300: the auth "
                             "server's long collector pauses come tens of seconds apart, so a "
                             "30-s window held none or one and its p99 swung from 62 to 657 ms "
                             "at 10,000 nodes)")
    parser.add_argument("--interval", type=float, default=HEARTBEAT_INTERVAL,
                        help=f"heartbeat interval (default the node's, {HEARTBEAT_INTERVAL:g} s)")
    parser.add_argument("--runs", type=positive_int, default=5,
                        help="runs of each of tctl nodes ls, tsh ls and tsh ssh (default 5)")
    parser.add_argument("--workers", type=int, default=0,
                        help="agent worker processes (default: one per "
                             f"{BEATS_PER_WORKER:.0f} heartbeats/s)")
    parser.add_argument("--parallel", type=positive_int, default=16,
                        help="joins in flight at once, over all workers (default 16)")
    parser.add_argument("--ramp-rate", type=float, default=250.0,
                        help="first heartbeats (each a new TLS connection) per second at most "
                             "while the fleet comes up (default 250: at 1000 a second the "
                             "handshakes alone took the auth server's core and `tctl` timed "
                             "out; spread over at least one interval)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="give up when joining or listing all takes longer (seconds)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directories (configs, auth.log, proxy.log, "
                             "node.log)")
    args = parser.parse_args()
    if args.interval <= 0 or args.duration <= 0 or args.ramp_rate <= 0 or args.settle < 0:
        parser.error("--interval, --duration and --ramp-rate must be positive, --settle >= 0")
    for tool in ("teleport", "tctl", "tsh"):
        if not (BIN / tool).exists():
            raise BenchError(f"{BIN / tool} not found; run with the project's python "
                             "(.venv/bin/python bench/scale.py)")
    # The auth process holds a connection per node; children inherit the limit.
    raise_fd_limit(max(args.nodes) + 4096)
    sigterm_as_interrupt()
    rows = [measure(n, args) for n in args.nodes]
    if len(rows) > 1:
        print("\nsummary (ms; RSS MiB before/peak/last; ! = a listing missed nodes)")
        cols = list(rows[0])
        widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
        print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
        for r in rows:
            print("  ".join(r[c].rjust(w) for c, w in zip(cols, widths, strict=True)))


if __name__ == "__main__":
    run_main(main)
