"""Join limits over the real API: a fleet behind one address joins, a guesser is stopped.

The auth API is served on loopback with its default `join_limits`; every caller here but
one comes from 127.0.0.1, as a fleet behind one NAT address would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import aiohttp
import pytest
from aiohttp import web

from teleport.api.auth_models import JoinRequest
from teleport.api.ratelimit import DEFAULT_JOIN_LIMITS
from teleport.auth.join import JoinResult, join
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.config import StaticToken
from teleport.errors import AccessDenied, LimitExceeded
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

TOKEN = "fleet-token-1"
FAILURES = DEFAULT_JOIN_LIMITS.failed_per_source.burst


@pytest.fixture
async def api() -> AsyncIterator[HostPort]:
    clock = FakeClock(datetime.now(timezone.utc))  # still: no failure is forgiven meanwhile
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="limits.test", static_tokens=(
                          StaticToken(roles=frozenset({"node"}), token=TOKEN),)))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield addr
    finally:
        await runner.cleanup()


async def _join(addr: HostPort, token: str, n: int) -> JoinResult:
    return await join([addr], token=token, role="Node", host_uuid=f"host-{n}",
                      nodename=f"node-{n}", addresses=["127.0.0.1"], ca_pins=[],
                      warn=lambda _: None)


async def _post_join(addr: HostPort, token: str, n: int, source: str = "127.0.0.1") -> int:
    """POST /v1/join from source (a client bound to that loopback address); the status."""
    body = JoinRequest(token=token, host_uuid=f"raw-{n}", nodename=f"raw-{n}", role="Node",
                       ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
                       tls_public_key=tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()).decode())
    connector = aiohttp.TCPConnector(ssl=tlsconfig.unverified_client_context(),
                                     local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(f"https://{addr}/v1/join", json=body.model_dump()) as resp:
            return resp.status


async def test_a_fleet_behind_one_address_joins_quickly(api: HostPort) -> None:
    count = 10 * FAILURES  # the old per-address limit let FAILURES / 2 hosts join a minute
    started = time.monotonic()
    results = await asyncio.gather(*(_join(api, TOKEN, n) for n in range(count)))
    assert len({r.identity.host_uuid for r in results}) == count
    assert time.monotonic() - started < 20


async def test_repeated_bad_tokens_block_the_address_even_for_a_valid_token(
        api: HostPort) -> None:
    for n in range(FAILURES):
        with pytest.raises(AccessDenied, match="invalid, expired or revoked"):
            await _join(api, f"guess-{n}", n)
    with pytest.raises(LimitExceeded, match="failed join attempts"):
        await _join(api, "guess-next", FAILURES)
    assert await _post_join(api, "guess-raw", 0) == web.HTTPTooManyRequests.status_code
    # A guesser that hits the right token now learns nothing: the address waits regardless.
    with pytest.raises(LimitExceeded):
        await _join(api, TOKEN, 100)
    # Another address is not affected.
    assert await _post_join(api, TOKEN, 1, source="127.0.0.2") == 200


async def test_malformed_join_requests_count_as_failures(api: HostPort) -> None:
    connector = aiohttp.TCPConnector(ssl=tlsconfig.unverified_client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        statuses = []
        for _ in range(FAILURES + 1):
            async with http.post(f"https://{api}/v1/join", json={"token": TOKEN}) as resp:
                statuses.append(resp.status)
    assert statuses == [400] * FAILURES + [429]
