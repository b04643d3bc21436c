"""The proxy's cache against a real auth API on loopback: one auth server on port 0, with a fake
clock so records expire on demand, counting the requests it serves (`Api.requests`)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web

from teleport.api import httpserver
from teleport.auth import api as auth_api
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.cache import CachedAuth
from teleport.cache.replica import RETRY_MAX
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock


@dataclass
class Api:
    auth: AuthServer
    clock: FakeClock
    server_ctx: ssl.SSLContext
    port: int
    runner: web.AppRunner | None
    #: Requests served, by `METHOD path`, e.g. `GET /v1/servers/node`.
    requests: Counter[str] = field(default_factory=Counter)

    async def stop(self) -> None:
        """Take the auth API off the network, as if the auth server were down."""
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None

    async def start(self) -> None:
        """Serve the API again on the same port, as a restarted auth server would."""
        self.runner = await serve_counted(self.auth, self.server_ctx, self.port, self.requests)

    async def cache(self, retry_max: float = RETRY_MAX, also: tuple[int, ...] = ()
                    ) -> CachedAuth:
        """Return a cache holding a fresh Proxy identity, trying this API first, then the
        auth servers on the ports in also."""
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid="proxy-1", nodename="proxy", system_role="Proxy",
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                           [c.encode() for c in certs.tls_ca_certs])
        return CachedAuth([HostPort("127.0.0.1", p) for p in (self.port, *also)], ctx, timeout=5,
                          cluster=self.auth.cluster_name, retry_max=retry_max)

    async def announce(self, name: str, ttl: timedelta = timedelta(seconds=15)) -> None:
        await self.auth.hosts.upsert_server(Server(
            kind="node", metadata=Metadata(name=name, expires=self.clock.now() + ttl),
            spec=ServerSpec(addr="127.0.0.1:3022", hostname=name)))


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = FakeClock(datetime.now(timezone.utc))
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="cache.test"))
    await auth.init()
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="auth-1", nodename="auth", system_role="Auth",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=["127.0.0.1"])
    ctx = tlsconfig.ssl_server_context(certs.tls_cert.encode(), tls_key,
                                       [c.encode() for c in certs.tls_ca_certs],
                                       require_client_cert=False)
    requests: Counter[str] = Counter()
    runner = await serve_counted(auth, ctx, 0, requests)
    api = Api(auth, clock, ctx, runner.addresses[0][1], runner, requests)
    try:
        yield api
    finally:
        if api.runner is not None:
            await api.runner.cleanup()


async def serve_counted(auth: AuthServer, ctx: ssl.SSLContext, port: int,
                        requests: Counter[str]) -> web.AppRunner:
    """Serve the real auth API on 127.0.0.1:port, counting each request into requests."""
    app = auth_api.make_app(auth)

    @web.middleware
    async def count(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        requests[f"{request.method} {request.path}"] += 1
        return await handler(request)

    app.middlewares.insert(0, count)
    runner = httpserver.make_runner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    return runner


#: A change must reach the cache within this many seconds.
WITHIN = 1.0


@asynccontextmanager
async def following(api: Api, also: tuple[int, ...] = (), within: float = 5
                    ) -> AsyncIterator[CachedAuth]:
    """A cache following the stream (as the proxy runs it), once its first snapshot is in."""
    async with await api.cache(retry_max=0.5, also=also) as cache:
        task = asyncio.create_task(cache.run())
        try:
            await arrives(lambda: cache.live, "the first snapshot", within=within)
            yield cache
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def arrives(check: Callable[[], bool], what: str, within: float = WITHIN) -> float:
    """Wait until check() holds; return how long it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, f"{what} did not arrive within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start
