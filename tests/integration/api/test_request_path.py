"""The one request path (`teleport.api.http`) through the real clients and the real servers.

Every failure a client can meet reaches its caller as one error of our tree, one line: unknown
routes, wrong methods and crashes of either API, answers of something that is not Teleport,
and a replay cut off mid-stream, which must neither be started again elsewhere nor end quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiohttp import web

from teleport.api import httpserver
from teleport.auth import api as auth_api
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.client.webapi import WebClient
from teleport.errors import BadParameter, ConnectionProblem, NotFound, TeleportError
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.proxy.web import WebProxy
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock

CLUSTER = "wire.test"


async def _crash(request: web.Request) -> web.Response:
    raise RuntimeError("a bug in a handler")


class CrashingProxy(WebProxy):
    """The real web proxy with one test-only route whose handler has a bug."""

    def make_app(self) -> web.Application:
        app = super().make_app()
        app.router.add_get("/webapi/test/crash", _crash)
        return app


@dataclass
class Wire:
    auth: AuthServer
    addr: HostPort
    server_ctx: ssl.SSLContext
    cas: list[bytes]
    proxy: WebProxy
    recordings: Path

    async def context(self, role: str) -> ssl.SSLContext:
        """A client TLS context holding a fresh identity of role."""
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=role.lower(), nodename=role.lower(), system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        return tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key, self.cas)

    async def client(self, role: str, addrs: list[HostPort] | None = None) -> AuthClient:
        return AuthClient(addrs or [self.addr], await self.context(role), timeout=10,
                          cluster=CLUSTER)

    def web(self, addr: str | None = None) -> WebClient:
        return WebClient(addr or f"127.0.0.1:{self.proxy.port}", insecure=True, timeout=10)


async def _serve(app: web.Application, ctx: ssl.SSLContext) -> tuple[web.AppRunner, HostPort]:
    runner = httpserver.make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    return runner, HostPort("127.0.0.1", runner.addresses[0][1])


@pytest.fixture
async def wire(tmp_path: Path) -> AsyncIterator[Wire]:
    clock = FakeClock(datetime.now(timezone.utc))
    recordings = tmp_path / "sessions" / "default"
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name=CLUSTER, recordings_dir=recordings))
    await auth.init()
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="auth-1", nodename="auth", system_role="Auth",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=["127.0.0.1"])
    cas = [c.encode() for c in certs.tls_ca_certs]
    server_ctx = tlsconfig.ssl_server_context(certs.tls_cert.encode(), tls_key, cas,
                                              require_client_cert=False)
    app = auth_api.make_app(auth)
    app.router.add_get("/v1/test/crash", _crash)  # test-only: a handler with a bug
    runner, addr = await _serve(app, server_ctx)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(runner.cleanup)
        wire = Wire(auth, addr, server_ctx, cas, None, recordings)  # type: ignore[arg-type]
        proxy_client = await wire.client("Proxy")
        stack.push_async_callback(proxy_client.close)
        web_key, web_cert = tlskeys.self_signed_web_cert(["127.0.0.1"], now=clock.now())
        wire.proxy = CrashingProxy(
            auth=proxy_client, cluster_name=CLUSTER, keypairs=[(web_key, web_cert)],
            client_ca_pems=lambda: cas, public_addr="127.0.0.1:3080",
            ssh_public_addr="127.0.0.1:3023", clock=clock)
        await wire.proxy.start("127.0.0.1", 0)
        stack.push_async_callback(wire.proxy.close)
        yield wire


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# --- the auth API and the web API: unknown route, wrong method, a bug -------------------------

async def test_auth_api_unknown_route_wrong_method_and_bug_are_one_line_errors(wire: Wire) -> None:
    async with await wire.client("Admin") as admin:
        with pytest.raises(NotFound) as missing:
            await admin.call("GET", "/v1/no/such/route")
        assert _one_line(missing.value) == "GET /v1/no/such/route: not found"
        with pytest.raises(BadParameter) as wrong:
            await admin.call("DELETE", "/v1/ping")
        assert _one_line(wrong.value) == "DELETE /v1/ping: method not allowed"
        with pytest.raises(TeleportError) as bug:
            await admin.call("GET", "/v1/test/crash")
        assert type(bug.value) is TeleportError
        assert _one_line(bug.value) == "internal error, see the auth server log"
        assert (await admin.ping()).cluster_name == CLUSTER  # the connection is still fine


async def test_web_api_unknown_route_wrong_method_and_bug_are_one_line_errors(wire: Wire) -> None:
    async with wire.web() as web_client:
        with pytest.raises(NotFound) as missing:
            await web_client.call("GET", "/webapi/no/such/route")
        assert _one_line(missing.value) == "GET /webapi/no/such/route: not found"
        with pytest.raises(BadParameter) as wrong:
            await web_client.call("DELETE", "/webapi/ping")
        assert _one_line(wrong.value) == "DELETE /webapi/ping: method not allowed"
        with pytest.raises(TeleportError) as bug:
            await web_client.call("GET", "/webapi/test/crash")
        assert type(bug.value) is TeleportError
        assert _one_line(bug.value) == "internal error, see the proxy log"


# --- something that is not Teleport on the port ---------------------------------------------

def _plain_text_app() -> web.Application:
    """aiohttp's own answers, as any non-Teleport HTTPS server on the port would give."""

    async def text_500(request: web.Request) -> web.Response:
        return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")

    async def html_200(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/v1/ping", html_200)
    app.router.add_get("/webapi/ping", html_200)
    app.router.add_get("/v1/users", text_500)
    app.router.add_get("/webapi/sites/{cluster}/nodes", text_500)
    app.router.add_post("/v1/ping", html_200)
    return app


@pytest.fixture
async def stranger(wire: Wire) -> AsyncIterator[HostPort]:
    """A plain aiohttp server with the auth server's own certificate: it passes the TLS check."""
    runner = web.AppRunner(_plain_text_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=wire.server_ctx)
    await site.start()
    try:
        yield HostPort("127.0.0.1", runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def test_text_answers_are_connection_problems_naming_status_and_server(
        wire: Wire, stranger: HostPort) -> None:
    async with await wire.client("Admin", [stranger]) as admin:
        with pytest.raises(ConnectionProblem) as missing:
            await admin.call("GET", "/v1/nope")
        assert _one_line(missing.value).startswith(f"HTTP 404 from {stranger}: Not Found")
        with pytest.raises(ConnectionProblem) as wrong:
            await admin.call("PUT", "/v1/ping", {})
        assert _one_line(wrong.value).startswith(f"HTTP 405 from {stranger}: Method Not Allowed")
        with pytest.raises(ConnectionProblem) as crash:
            await admin.list_users()
        assert _one_line(crash.value).startswith(f"HTTP 500 from {stranger}: Internal Server Error")
        assert "Server got itself in trouble" in str(crash.value)
        with pytest.raises(ConnectionProblem, match=f"HTTP 200 from {stranger}: .* is not JSON"):
            await admin.ping()
    async with wire.web(str(stranger)) as web_client:
        with pytest.raises(ConnectionProblem, match=f"HTTP 500 from {stranger}"):
            await web_client.list_nodes(CLUSTER)
        with pytest.raises(ConnectionProblem, match="is it a Teleport proxy"):
            await web_client.ping()


async def test_a_server_without_the_auth_name_is_refused_before_anything_is_sent(
        wire: Wire) -> None:
    """The TLS name check stays: a certificate of the same CA that is not the auth server's."""
    tls_key = tlskeys.generate_tls_key()
    certs = await wire.auth.certs.issue_host_certs(
        host_uuid="node-1", nodename="node-1", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=["127.0.0.1"])
    impostor_ctx = tlsconfig.ssl_server_context(certs.tls_cert.encode(), tls_key, wire.cas,
                                                require_client_cert=False)
    runner, impostor = await _serve(auth_api.make_app(wire.auth), impostor_ctx)
    try:
        async with await wire.client("Admin", [impostor]) as admin:
            with pytest.raises(ConnectionProblem, match="cannot reach the auth server"):
                await admin.list_users()
    finally:
        await runner.cleanup()


# --- a replay cut off mid-stream -------------------------------------------------------------

def _recording(folder: Path, output: bytes) -> tuple[str, dict[str, Path]]:
    sid = str(uuid.uuid4())
    events = [{"event": "session.start", "ms": 0, "version": 1, "sid": sid, "user": "alice",
               "login": "root", "server_id": "node", "server_hostname": "node",
               "namespace": "default", "size": "80:25", "time": "2026-01-01T00:00:00Z"},
              *({"event": "print", "ms": i, "offset": i * 4096, "bytes": 4096}
                for i in range(len(output) // 4096)),
              {"event": "session.end", "ms": 2, "time": "2026-01-01T00:00:01Z"}]
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"chunks": folder / f"{sid}.chunks.gz", "events": folder / f"{sid}.events.gz"}
    parts["chunks"].write_bytes(gzip.compress(output))
    parts["events"].write_bytes(
        gzip.compress(b"".join(json.dumps(e).encode() + b"\n" for e in events)))
    return sid, parts


class CuttingRelay:
    """A TCP relay to the auth server that dies after passing `budget` bytes of its answers."""

    def __init__(self, target: HostPort, budget: int) -> None:
        self.target = target
        self.budget = budget
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HostPort:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return HostPort("127.0.0.1", self._server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       budget: int | None) -> None:
            passed = 0
            while data := await src.read(4096):
                if budget is not None and passed + len(data) > budget:
                    break
                passed += len(data)
                dst.write(data)
                await dst.drain()

        up = asyncio.ensure_future(pipe(reader, up_writer, None))
        try:
            await pipe(up_reader, writer, self.budget)
        finally:
            up.cancel()
            for w in (writer, up_writer):
                w.transport.abort()  # killed, not closed: no TLS close_notify, no last chunk


async def _collect(stream: AsyncIterator[bytes], into: bytearray) -> None:
    async for piece in stream:
        into += piece


async def test_a_replay_cut_mid_stream_is_neither_duplicated_nor_truncated_quietly(
        wire: Wire, tmp_path: Path) -> None:
    output = bytes(range(256)) * 4096  # 1 MiB of output: the replay is several times the budget
    sid, parts = _recording(tmp_path / "spool", output)
    async with await wire.client("Node") as node:
        assert await node.upload_recording(sid, parts)
    async with await wire.client("Admin") as admin:
        whole = bytearray()
        await _collect(admin.stream_recording(sid), whole)
    assert len(whole) > 1024 * 1024

    relay = CuttingRelay(wire.addr, budget=256 * 1024)
    async with relay as dying, await wire.client("Admin", [dying, wire.addr]) as admin:
        got = bytearray()
        with pytest.raises(ConnectionProblem) as cut:
            await _collect(admin.stream_recording(sid), got)
    assert f"auth server {dying} broke off" in _one_line(cut.value)
    assert "mid-stream" in str(cut.value)
    assert 0 < len(got) < len(whole)
    assert bytes(got) == bytes(whole[:len(got)])  # a prefix: nothing replayed twice
    assert relay.connections == 1


async def test_an_auth_server_that_is_down_is_skipped_before_the_replay_starts(
        wire: Wire, tmp_path: Path) -> None:
    sid, parts = _recording(tmp_path / "spool", b"x" * 8192)
    async with await wire.client("Node") as node:
        assert await node.upload_recording(sid, parts)
    relay = CuttingRelay(wire.addr, budget=0)  # dies before the TLS handshake completes
    async with relay as dead, await wire.client("Admin", [dead, wire.addr]) as admin:
        got = bytearray()
        await _collect(admin.stream_recording(sid), got)
    assert got and b"session.end" in got


