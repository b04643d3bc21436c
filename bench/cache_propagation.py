"""How fast a change reaches a proxy's caches: polling (the old intervals) against the watch stream.

Run: .venv/bin/python bench/cache_propagation.py [--runs 5]
Starts, in this one process, a real auth server on a sqlite backend in a temporary directory and
its API on 127.0.0.1 (mutual TLS), then measures two changes as a proxy sees them, each `--runs`
times at a random moment:
- a node heartbeat (`PUT /v1/servers` through the API with the node's own certificate, its
  address changed each time) until the proxy's `CachedAuth` holds the new record: polled with a
  full re-read every 5 s (what the cache did before it followed the stream), then following the
  watch stream (`CachedAuth.run`);
- a role change (`save_role` on the auth server, as `tctl create -f` ends) until the proxy's role
  cache (`RevocationWatch.roles`, what nodes and proxies judge logins with) has it: its 3 s poll
  alone, then the poll with the watch stream as the process runs them.
Times run from the start of the change's call. Prints p50 and max in ms per change and mode, and
the poll/watch ratio of the p50s. Lead: fold
`measure` into bench/backend.py's cluster figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from teleport.auth import api as auth_api
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.sqlite import SqliteBackend
from teleport.cache import CachedAuth
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.service import revocations
from teleport.service.revocations import RevocationWatch
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.types.roles import Role
from teleport.utils.addr import HostPort
from teleport.utils.clock import RealClock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchError, run_main  # noqa: E402

CLUSTER = "bench.test"
#: The cache's poll before it followed the watch stream.
OLD_CACHE_INTERVAL = 5.0
#: A change not seen after this long is a failure, not a figure.
GIVE_UP = 30.0


class Auth:
    """A real auth server and its API on loopback, and identities for hosts to call it with."""

    def __init__(self, auth: AuthServer, runner: web.AppRunner, cas: list[bytes]) -> None:
        self.auth = auth
        self.runner = runner
        self.addr = HostPort("127.0.0.1", runner.addresses[0][1])
        self.cas = cas

    @classmethod
    async def start(cls, root: Path) -> Auth:
        clock = RealClock()
        backend = await SqliteBackend.open(root / "backend.db", clock)
        auth = AuthServer(backend, MemoryEmitter(), clock,
                          AuthSettings(cluster_name=CLUSTER, recordings_dir=root / "records"))
        await auth.init()
        key = tlskeys.generate_tls_key()
        certs = await auth.certs.issue_host_certs(
            host_uuid="auth-1", nodename="auth", system_role="Auth",
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(key), addresses=["127.0.0.1"])
        cas = [c.encode() for c in certs.tls_ca_certs]
        ctx = tlsconfig.ssl_server_context(certs.tls_cert.encode(), key, cas,
                                           require_client_cert=False)
        return cls(auth, await auth_api.serve(auth, ctx, "127.0.0.1", 0), cas)

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.auth.backend.close()

    async def client(self, role: str, host_uuid: str, cls: type[AuthClient] = AuthClient
                     ) -> AuthClient:
        """Return a client holding a fresh host identity of role (Node, Proxy)."""
        key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=host_uuid, system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(key), addresses=[])
        ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), key, self.cas)
        return cls([self.addr], ctx, timeout=10, cluster=CLUSTER)


async def _times(runs: int, change: Callable[[int], Awaitable[None]],
                 seen: Callable[[int], bool], spread: float) -> list[float]:
    """Make change i at a random moment (within spread seconds, a poll interval: the phase is
    random), and time until seen(i) holds, runs times."""
    took = []
    for i in range(1, runs + 1):
        await asyncio.sleep(random.uniform(0, spread))
        start = time.monotonic()  # the change's own call counts: it may return after the news
        await change(i)
        while not seen(i):
            if time.monotonic() - start > GIVE_UP:
                raise BenchError(f"change {i} not seen after {GIVE_UP:.0f} s")
            await asyncio.sleep(0.002)
        took.append(time.monotonic() - start)
    return took


async def _heartbeats(auth: Auth, runs: int, watched: bool) -> list[float]:
    node = await auth.client("Node", "bench-node")
    cache = await auth.client("Proxy", f"bench-proxy-{int(watched)}", CachedAuth)
    assert isinstance(cache, CachedAuth)

    async def poll() -> None:
        while True:
            await cache.refresh()
            await asyncio.sleep(OLD_CACHE_INTERVAL)

    async def heartbeat(i: int) -> None:
        await node.upsert_server(Server(kind="node", metadata=Metadata(
            name="bench-node", expires=auth.auth.clock.now() + timedelta(minutes=1)),
            spec=ServerSpec(addr=f"127.0.0.1:{30000 + i}", hostname="bench-node")))

    def seen(i: int) -> bool:
        return any(s.spec.addr == f"127.0.0.1:{30000 + i}" for s in cache.copy("node"))

    await heartbeat(0)
    task = asyncio.create_task(cache.run() if watched else poll())
    try:
        await _times(1, lambda i: asyncio.sleep(0), lambda i: seen(0), 0)  # the first copy
        return await _times(runs, heartbeat, seen, OLD_CACHE_INTERVAL)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await cache.close()
        await node.close()


async def _role_changes(auth: Auth, runs: int, watched: bool) -> list[float]:
    proxy = await auth.client("Proxy", f"bench-roles-{int(watched)}")
    roles = RevocationWatch(proxy, auth.auth.clock)

    def role(i: int) -> Role:
        return Role.model_validate({"kind": "role", "version": "v5",
                                    "metadata": {"name": "bench"},
                                    "spec": {"allow": {"logins": [f"login{i}"]}}})

    async def change(i: int) -> None:
        await auth.auth.resources.save_role(role(i), actor="bench", overwrite=True)

    def seen(i: int) -> bool:
        got = roles.roles.get("bench") if roles.roles is not None else None
        return got is not None and got.spec.allow.logins == [f"login{i}"]

    await change(0)
    tasks = [asyncio.create_task(roles.run())]
    if watched:
        tasks.append(asyncio.create_task(roles.watch()))
    try:
        await _times(1, lambda i: asyncio.sleep(0), lambda i: seen(0), 0)
        return await _times(runs, change, seen, revocations.REFRESH_INTERVAL)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await proxy.close()


async def measure(runs: int) -> dict[str, tuple[float, list[float], list[float]]]:
    """Return the poll interval and the (polled, watched) propagation times in seconds per
    change, on a fresh cluster."""
    root = Path(tempfile.mkdtemp(prefix="teleport-bench-cache-"))
    try:
        auth = await Auth.start(root)
        try:
            return {
                "node heartbeat": (OLD_CACHE_INTERVAL, await _heartbeats(auth, runs, False),
                                   await _heartbeats(auth, runs, True)),
                "role change": (revocations.REFRESH_INTERVAL,
                                await _role_changes(auth, runs, False),
                                await _role_changes(auth, runs, True)),
            }
        finally:
            await auth.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="changes per mode (default 5)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    logging.getLogger("teleport").setLevel(logging.ERROR)
    figures = asyncio.run(measure(args.runs))
    print(f"{'change reaching a proxy':<26}{'mode':<12}{'p50 ms':>10}{'max ms':>10}")
    for what, (interval, polled, watched) in figures.items():
        for mode, took in ((f"poll {interval:g} s", polled), ("watch", watched)):
            print(f"{what:<26}{mode:<12}{statistics.median(took) * 1000:>10.1f}"
                  f"{max(took) * 1000:>10.1f}")
    for what, (_, polled, watched) in figures.items():
        ratio = statistics.median(polled) / statistics.median(watched)
        print(f"{what}: the watch stream is {ratio:.0f}x faster (p50 poll / p50 watch)")


if __name__ == "__main__":
    run_main(main)
