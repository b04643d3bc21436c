"""How far reverse tunnels scale: N simulated nodes behind NAT, one auth and one proxy process.

Run: .venv/bin/python bench/tunnels.py [--nodes 200] [--tunnel-on-web] [--keep]
(`--nodes 2000` for the issue's figure). Starts, in a temporary directory, an auth-only
`teleport start` and a proxy-only one that joins it with a static token (two processes, so the
memory of each is its own), then from this one Python process N lightweight agents. Each agent
is a real node's tunnel side without the node's SSH server:
- its identity comes from a real `POST /v1/join` with the static token. The join limiter allows
  JOIN_BURST joins per client address, so agent i joins from its own loopback source address
  (127.0.x.y, a few agents each), as N separate hosts would; nothing is signed in this process;
- it dials the proxy's tunnel port with `teleport.service.tunnels.TunnelPool` (the node's own
  code: `reversetunnel.connect`, its host certificate, `tcpip-forward` for NODE_LISTEN);
- it announces itself (`PUT /v1/servers`, use_tunnel, addr "") every heartbeat interval with
  its own `AuthClient` (mutual TLS with its own X.509 certificate) through its own
  `AuthLoopback`, i.e. over a `direct-tcpip` channel of its tunnel to the auth server, as a
  node does. One TLS session per agent is the point: the auth server and proxy see N nodes.
Prints N, the join rate, the time until `tctl nodes ls` lists all N, its latency at N, the
VmRSS growth of the proxy and auth processes per tunnel and their CPU over 10 s of steady state
(agents only heartbeating). Targets (issue 12): N=2000 listed, `tctl nodes ls` < 1 s, proxy
memory < 100 KiB per idle tunnel. The agents' own CPU is this process's and is printed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BIN,
    BenchError,
    SplitCluster,
    fetch_join_ca,
    join_host,
    positive_int,
    proc_cpu_seconds,
    proc_status_kb,
    raise_fd_limit,
    run_main,
)
from common import source_address as common_source_address  # noqa: E402

from teleport import __version__  # noqa: E402
from teleport.auth.api import JOIN_BURST  # noqa: E402
from teleport.auth.client import AuthClient  # noqa: E402
from teleport.auth.identity_file import IdentityFile  # noqa: E402
from teleport.service.heartbeat import HEARTBEAT_INTERVAL, SERVER_TTL  # noqa: E402
from teleport.service.tunnels import AuthLoopback, TunnelPool, tunnel_addr  # noqa: E402
from teleport.sshutils.reversetunnel import TunnelCredentials  # noqa: E402
from teleport.types.resource import Metadata  # noqa: E402
from teleport.types.resources import Server, ServerSpec  # noqa: E402
from teleport.utils.addr import HostPort  # noqa: E402
from teleport.utils.clock import RealClock  # noqa: E402

CLUSTER = "tunnels.test"
TOKEN = "bench-tunnels-static-token"
#: Agents per loopback source address: below the join limiter's burst, so no join waits.
PER_ADDRESS = max(1, JOIN_BURST - 2)
IDLE_SECONDS = 10.0
POLL_SECONDS = 1.0


# --- joining: real POST /v1/join, one loopback source address per few agents ----------------

def source_address(index: int) -> str:
    """127.0.x.y for agent `index`: PER_ADDRESS agents share one (never 127.0.0.1)."""
    return common_source_address(index, PER_ADDRESS)


async def join_all(auth: HostPort, count: int, parallel: int) -> list[IdentityFile]:
    ca_certs = await fetch_join_ca(str(auth))
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> IdentityFile:
        async with gate:
            identity: IdentityFile = await join_host(
                str(auth), ca_certs, token=TOKEN, cluster=CLUSTER, nodename=f"sim-{i:05d}",
                source=source_address(i), addresses=[])
            return identity

    return list(await asyncio.gather(*(one(i) for i in range(count))))


# --- one simulated node: tunnel pool, auth loopback, heartbeats -------------------------------

@dataclass
class Agent:
    identity: IdentityFile
    index: int
    #: Told the time of every tunnel coming up (the last one is when all were up).
    on_up: Any = None
    up: asyncio.Event = field(default_factory=asyncio.Event)
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    heartbeats: int = 0
    failures: int = 0

    async def start(self, tunnel: HostPort, interval: float) -> None:
        ident = self.identity
        trusted = list(ident.host_ca_keys)
        creds = TunnelCredentials(host_uuid=ident.host_uuid, private_key=ident.ssh_private_key,
                                  cert=ident.ssh_cert, cluster=CLUSTER,
                                  trusted_host_cas=lambda: trusted)

        async def locate() -> HostPort:
            return tunnel

        async def no_ssh(sock: socket.socket, peer: tuple[str, int]) -> None:
            sock.close()  # no user connects in this benchmark

        def changed(connected: int) -> None:
            if connected:
                if not self.up.is_set() and self.on_up is not None:
                    self.on_up(time.perf_counter())
                self.up.set()
            else:
                self.up.clear()

        pool = await self.stack.enter_async_context(
            TunnelPool(locate, creds, RealClock(), no_ssh, on_change=changed))
        loopback = await self.stack.enter_async_context(AuthLoopback(pool))
        client = AuthClient.from_identity(ident, [loopback.addr])
        self.stack.push_async_callback(client.close)
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(pool.run(), name=f"sim-{self.index} tunnel"))
        self.tasks.append(loop.create_task(self._heartbeat(client, interval),
                                           name=f"sim-{self.index} heartbeat"))

    async def _heartbeat(self, client: AuthClient, interval: float) -> None:
        """As teleport.service.heartbeat, with a TTL of three intervals, once the tunnel is up."""
        ident = self.identity
        ttl = SERVER_TTL * (interval / HEARTBEAT_INTERVAL)
        clock = RealClock()
        while True:
            await self.up.wait()
            server = Server(kind="node", version="v2", metadata=Metadata(
                name=ident.host_uuid, expires=clock.now() + ttl),
                spec=ServerSpec(addr="", hostname=f"sim-{self.index:05d}", use_tunnel=True,
                                version=__version__))
            try:
                await client.upsert_server(server)
                self.heartbeats += 1
            except Exception:  # noqa: BLE001 - counted; the next beat tries again
                self.failures += 1
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.stack.aclose()


# --- measuring ----------------------------------------------------------------------------------

async def tctl_nodes(cluster: SplitCluster, *args: str) -> tuple[float, int]:
    """Run `tctl nodes ls` (or args); return (seconds, simulated nodes listed).

    In a thread, timed there: the agents' event loop may be busy (the ramp), and its delay in
    noticing that tctl exited is not tctl's latency.
    """
    args = args or ("nodes", "ls")

    def run() -> tuple[float, subprocess.CompletedProcess[str]]:
        start = time.perf_counter()
        result = subprocess.run(cluster.tctl_argv(*args), capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        return time.perf_counter() - start, result

    took, result = await asyncio.to_thread(run)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"`tctl {' '.join(args)}` exited {result.returncode}: {last}")
    listed = sum(1 for line in result.stdout.splitlines() if line.startswith("sim-"))
    return took, listed


def rss_kib(cluster: SplitCluster) -> dict[str, int]:
    return {name: proc_status_kb(cluster.pid(name), "VmRSS") for name in ("proxy", "auth")}


def cpu_seconds(cluster: SplitCluster) -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"proxy": proc_cpu_seconds(cluster.pid("proxy")),
            "auth": proc_cpu_seconds(cluster.pid("auth")),
            "agents": own.ru_utime + own.ru_stime}


async def poll_listed(cluster: SplitCluster, agents: list[Agent], start: float,
                      args: argparse.Namespace) -> tuple[float, int]:
    """Run `tctl nodes ls` until it lists every agent; return (seconds since start, listed)."""
    listed = 0
    while time.perf_counter() - start < args.timeout:
        cluster.check_alive()
        _, listed = await tctl_nodes(cluster)
        now = time.perf_counter() - start
        up = sum(a.up.is_set() for a in agents)
        print(f"  {now:6.1f} s: {up} tunnels up, {listed} listed", flush=True)
        if listed == len(agents):
            return now, listed
        await asyncio.sleep(POLL_SECONDS)
    raise BenchError(f"after {args.timeout:.0f}s only {listed} of {len(agents)} nodes were "
                     f"listed ({sum(a.up.is_set() for a in agents)} tunnels up)")


async def measure(cluster: SplitCluster, args: argparse.Namespace) -> None:
    n = args.nodes
    tunnel = await tunnel_addr(HostPort("127.0.0.1", cluster.ports["web"]))
    print(f"cluster: auth pid {cluster.pid('auth')}, proxy pid {cluster.pid('proxy')} "
          f"(separate processes), tunnels on {tunnel}"
          f"{' (multiplexed on the web port)' if cluster.tunnel_on_web else ' (own port)'}")
    print(f"identities: real joins with a static token, {PER_ADDRESS} per loopback source "
          f"address (join limiter burst {JOIN_BURST} per address)")
    t0 = time.perf_counter()
    identities = await join_all(HostPort("127.0.0.1", cluster.ports["auth"]), n, args.parallel)
    joined = time.perf_counter() - t0
    print(f"joined {n} nodes in {joined:.1f} s ({n / joined:.0f}/s)")
    cluster.check_alive()
    await asyncio.sleep(2)
    before = rss_kib(cluster)

    ups: list[float] = []
    agents = [Agent(ident, i, ups.append) for i, ident in enumerate(identities)]
    start = time.perf_counter()
    poll = asyncio.get_running_loop().create_task(poll_listed(cluster, agents, start, args))
    for agent in agents:
        await agent.start(tunnel, args.heartbeat)
        await asyncio.sleep(0)  # let handshakes and the poller run while the rest start
    try:
        listed_at, listed = await poll
        all_up = max(ups) - start
        print(f"all {n} tunnels up after {all_up:.1f} s (the last agent's tcpip-forward "
              f"accepted); first `tctl nodes ls` listing all {n} ended at {listed_at:.1f} s")

        # Steady state: let the ramp's backlog drain, then measure memory and idle CPU.
        await asyncio.sleep(args.settle)
        after = rss_kib(cluster)
        cpu0, w0 = cpu_seconds(cluster), time.perf_counter()
        await asyncio.sleep(IDLE_SECONDS)
        cpu1, wall = cpu_seconds(cluster), time.perf_counter() - w0
        beats = sum(a.heartbeats for a in agents)
        fails = sum(a.failures for a in agents)

        times, baseline = [], []
        for _ in range(args.runs):
            took, listed = await tctl_nodes(cluster)
            times.append(took)
            baseline.append((await tctl_nodes(cluster, "status"))[0])
        cluster.check_alive()
    finally:
        for agent in agents:
            await agent.stop()

    print()
    print(f"N (simulated tunnel nodes)          {n}")
    print(f"heartbeat interval                  {args.heartbeat:.0f} s "
          f"(node default {HEARTBEAT_INTERVAL:.0f} s): {n / args.heartbeat:.0f} PUT /v1/servers/s")
    print(f"time until all N listed             {listed_at:.1f} s (tunnels all up at {all_up:.1f} s; "
          f"polled every {POLL_SECONDS:.0f} s)")
    med = statistics.median(times)
    print(f"tctl nodes ls at N (median of {args.runs})    {med * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}; target < 1000; "
          f"{listed} listed on the last run)")
    print(f"tctl status, same time (median)     {statistics.median(baseline) * 1000:.0f} ms "
          "(tctl's start-up and one auth call: the floor under nodes ls)")
    for name in ("proxy", "auth"):
        delta = after[name] - before[name]
        print(f"{name} VmRSS                         {before[name] / 1024:.0f} -> "
              f"{after[name] / 1024:.0f} MiB: {delta / n:.1f} KiB per tunnel"
              f"{' (target < 100)' if name == 'proxy' else ''}")
    for name in ("proxy", "auth", "agents"):
        used = cpu1[name] - cpu0[name]
        print(f"{name + ' CPU while idle':<36}{used:.2f} s over {wall:.0f} s ({100 * used / wall:.0f}% "
              f"of one core)")
    print(f"heartbeats sent / failed (total)    {beats} / {fails}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=positive_int, default=200,
                        help="simulated tunnel nodes (default 200; the issue's target is 2000)")
    parser.add_argument("--tunnel-on-web", action="store_true",
                        help="multiplex the tunnel on the proxy's web port (default: own port)")
    parser.add_argument("--heartbeat", type=float, default=HEARTBEAT_INTERVAL,
                        help="seconds between an agent's heartbeats (default: the node's, "
                             f"{HEARTBEAT_INTERVAL:.0f}); the TTL stays three intervals")
    parser.add_argument("--parallel", type=positive_int, default=8,
                        help="joins in flight at once (default 8)")
    parser.add_argument("--runs", type=positive_int, default=5,
                        help="`tctl nodes ls` runs for the latency median (default 5)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to wait after all are listed before measuring (default 10)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up when not all are listed after this many seconds")
    parser.add_argument("--profile", choices=["auth", "proxy"], default="",
                        help="run that process under cProfile; keeps the directory with "
                             "<name>.prof (python -m pstats), slows that process down")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (configs, auth.log, proxy.log)")
    args = parser.parse_args()
    if args.heartbeat <= 0:
        parser.error("--heartbeat must be positive")
    for tool in ("teleport", "tctl"):
        if not (BIN / tool).exists():
            raise BenchError(f"{BIN / tool} not found; run with the project's python "
                             "(.venv/bin/python bench/tunnels.py)")
    # Each agent holds about five descriptors here and two in the proxy; children inherit.
    raise_fd_limit(6 * args.nodes + 1024)
    # The agents' pools log every tunnel going down at the end; only errors are news here.
    logging.getLogger("teleport").setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="teleport-bench-tunnels-"))
    cluster = SplitCluster(root, CLUSTER, TOKEN, tunnel_on_web=args.tunnel_on_web,
                           profile=args.profile)
    keep = args.keep or bool(args.profile)
    try:
        cluster.start()
        asyncio.run(measure(cluster, args))
    except BaseException:
        keep = True
        raise
    finally:
        cluster.stop()
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
