"""The auth API port (3025) paces anonymous TLS handshakes per source, not certified callers.

A real in-process auth server with `connection_limits` of a burst of 2 (and no refill to
speak of) and at most 3 unauthenticated connections per source: callers with a client
certificate (nodes, proxies, tctl) get their token back and are never paced by their own
traffic; anonymous ones (joins) get two handshakes, then wait, then are closed at once.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from teleport.auth.identity_file import IdentityFile
from teleport.config import StartFlags, load_config
from teleport.keys import tlsconfig
from teleport.keys.authname import auth_server_name
from teleport.service.process import TeleportProcess

CLUSTER = "paced.example"
MAX_PENDING = 3


def _config(tmp_path: Path) -> Any:
    path = tmp_path / "teleport.yaml"
    path.write_text(f"""\
teleport:
  nodename: paced
  data_dir: {tmp_path / "data"}
  connection_limits:
    max_unauthenticated_per_source: {MAX_PENDING}
    rates:
      - period: 1h
        average: 1
        burst: 2
auth_service:
  enabled: yes
  cluster_name: {CLUSTER}
  listen_addr: 127.0.0.1:0
ssh_service:
  enabled: no
proxy_service:
  enabled: no
""")
    return load_config(StartFlags(config_path=str(path)))


async def _ping(port: int, ctx: ssl.SSLContext) -> bytes:
    """One HTTPS request on its own connection: the status line of the answer."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=auth_server_name(CLUSTER))
    try:
        writer.write(b"GET /v1/ping HTTP/1.1\r\nHost: auth\r\nConnection: close\r\n\r\n")
        return await reader.readline()
    finally:
        writer.close()


async def _handshake(port: int) -> asyncio.StreamWriter:
    """An anonymous TLS handshake (a joining host's), held open."""
    _, writer = await asyncio.open_connection("127.0.0.1", port,
                                              ssl=tlsconfig.unverified_client_context())
    return writer


async def test_3025_paces_anonymous_handshakes_but_not_certified_callers(tmp_path: Path) -> None:
    async with TeleportProcess(_config(tmp_path)) as process:
        port = process.ports["auth"]
        assert process.auth_mux is not None
        admin = IdentityFile.load(tmp_path / "data", "Admin")
        certified = tlsconfig.ssl_client_context(admin.tls_cert.encode(),
                                                 admin.tls_private_key.encode(),
                                                 [c.encode() for c in admin.tls_ca_certs])
        # tctl's connections, one after the other: far beyond the burst, none waits.
        async with asyncio.timeout(10):
            for _ in range(10):
                assert (await _ping(port, certified)).startswith(b"HTTP/1.1 200")

        # Other bytes are closed as the TLS server would, without spending a token.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        async with asyncio.timeout(5):
            try:
                assert await reader.read() == b""
            except ConnectionResetError:
                pass  # closed with our bytes unread
        writer.close()
        assert process.auth_mux.refused == {"ssh": 1}

        # Anonymous: the burst of two at once, then the third waits for a token.
        held = [await _handshake(port) for _ in range(2)]
        waiting = [asyncio.create_task(_handshake(port)) for _ in range(MAX_PENDING)]
        try:
            await asyncio.sleep(1.0)
            assert not any(t.done() for t in waiting)
            assert process.auth_mux.throttle is not None
            assert process.auth_mux.throttle.pending("127.0.0.1") == MAX_PENDING
            # Past max_unauthenticated_per_source: closed at once, before any handshake.
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                refused = await asyncio.wait_for(_handshake(port), 5)
            except (OSError, ssl.SSLError):
                pass
            else:
                refused.close()
                raise AssertionError("a connection past the pending limit got its handshake")
            assert loop.time() - start < 2
            assert process.auth_mux.refused.get("throttled") == 1
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            for writer in held:
                writer.close()
