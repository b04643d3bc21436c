"""The auth server the unit tests of this package drive: memory backend, fake clock."""

from __future__ import annotations

import pytest

from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.utils.clock import FakeClock


@pytest.fixture
async def auth() -> AuthServer:
    clock = FakeClock()
    server = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                        AuthSettings(cluster_name="example.com"))
    await server.init()
    return server
