"""Every write the auth API acknowledged survives SIGKILL of the auth server (issue 16).

A writer creates join tokens and users through the auth API as fast as it is allowed (paced at
1,000 a second) while the auth server is killed with SIGKILL and restarted several times; the
writes that got an answer must all be there afterwards. A write that got no answer may or may not
be there: only acknowledged ones count.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from teleport.auth.client import AuthClient
from teleport.auth.identity_file import IdentityFile
from teleport.errors import TeleportError
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from teleport.utils.addr import HostPort
from tests.e2e.cluster import BIN, pin_ports, stop_process, wait_started
from tests.etcd_server import EtcdServer
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.slow

RATE = 1000  # writes a second, all workers together
WORKERS = 32
KILLS = 3
RUN_BETWEEN_KILLS = 3.0  # seconds of writing before each kill


class AuthProcess:
    """An auth-only `teleport start` whose port stays the same across restarts."""

    def __init__(self, root: Path, storage: str) -> None:
        self.root = root
        root.mkdir(exist_ok=True)
        self.config = root / "teleport.yaml"
        self.data_dir = root / "data"
        self.config.write_text(f"""\
teleport:
  nodename: durability
  data_dir: {self.data_dir}
  log: {{output: stderr, severity: INFO}}
{storage}auth_service:
  enabled: yes
  cluster_name: durability.test
  listen_addr: 127.0.0.1:0
ssh_service: {{enabled: no}}
proxy_service: {{enabled: no}}
""")
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        log_path = self.root / "teleport.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "teleport"), "start", "-c", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        ports = wait_started(log_path, self.process, offset)
        pin_ports(self.config, ports)
        self.port = ports["auth"]

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        stop_process(self.process)


class Writer:
    """Workers that each write the next name and remember the ones acknowledged."""

    def __init__(self, client: AuthClient) -> None:
        self.client = client
        self.acked_tokens: set[str] = set()
        self.acked_users: set[str] = set()
        self.failed = 0
        self._next = 0
        self._stop = asyncio.Event()

    async def _write_one(self, n: int) -> None:
        if n % 10 == 9:
            name = f"durable-user-{n}"
            await self.client.upsert_user(User(metadata=Metadata(name=name),
                                               spec=UserSpec(roles=["access"])))
            self.acked_users.add(name)
        else:
            name = f"durable-token-{n:08d}"
            await self.client.create_token(["node"], timedelta(hours=1), name)
            self.acked_tokens.add(name)

    async def _work(self) -> None:
        interval = WORKERS / RATE
        while not self._stop.is_set():
            started = time.monotonic()
            n, self._next = self._next, self._next + 1
            try:
                await self._write_one(n)
            except (TimeoutError, TeleportError, OSError, aiohttp.ClientError, ValueError):
                self.failed += 1  # not acknowledged: may or may not be stored
                await asyncio.sleep(0.2)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for _ in range(WORKERS):
                group.create_task(self._work())

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def etcd_storage(tmp_path: Path) -> Iterator[str]:
    """A real etcd with TLS client certificates, as the manual configures it."""
    with EtcdServer(tmp_path / "etcd", tls=True) as etcd:
        pki = etcd.pki
        yield (f"  storage:\n    type: etcd\n    peers: [{etcd.url}]\n"
               f"    prefix: /durability/\n    tls_ca_file: {pki.ca_file}\n"
               f"    tls_cert_file: {pki.client_cert}\n    tls_key_file: {pki.client_key}\n")


async def _until_up(client: AuthClient) -> None:
    async with asyncio.timeout(60):
        while True:
            try:
                await client.ping()
                return
            except (TeleportError, OSError):
                await asyncio.sleep(0.1)


async def run_kill_test(root: Path, storage: str) -> None:
    auth = AuthProcess(root, storage)
    auth.start()
    try:
        client = AuthClient.from_identity(IdentityFile.load(auth.data_dir, "Admin"),
                                          [HostPort("127.0.0.1", auth.port)])
        async with client:
            writer = Writer(client)
            started = time.monotonic()
            writing = asyncio.create_task(writer.run())
            down = 0.0
            for _ in range(KILLS):
                await asyncio.sleep(RUN_BETWEEN_KILLS)
                killed = time.monotonic()
                await asyncio.to_thread(auth.kill)
                await asyncio.to_thread(auth.start)
                down += time.monotonic() - killed
            await asyncio.sleep(RUN_BETWEEN_KILLS)
            writer.stop()
            await writing
            elapsed = time.monotonic() - started
            await _until_up(client)
            tokens, _ = await client.list_tokens()
            users = {u.metadata.name for u in await client.list_users()}
        stored = {t.metadata.name for t in tokens}
        acked = len(writer.acked_tokens) + len(writer.acked_users)
        print(f"\n{acked} writes acknowledged in {elapsed:.1f} s, {acked / (elapsed - down):.0f}/s "
              f"while up; {writer.failed} failed during {KILLS} SIGKILLs ({down:.1f} s down)")
        assert acked > 0
        assert writer.acked_tokens <= stored, sorted(writer.acked_tokens - stored)[:5]
        assert writer.acked_users <= users, sorted(writer.acked_users - users)[:5]
    finally:
        auth.stop()


@pytest.fixture
def postgres_storage() -> Iterator[str]:
    """A real PostgreSQL (fsync on, as in production) and a database of its own."""
    with PostgresServer(fsync=True) as server:
        yield f"  storage:\n    type: postgresql\n    conn_string: '{server.dsn(server.create_database())}'\n"


async def test_acknowledged_writes_survive_sigkill_on_sqlite(tmp_path: Path) -> None:
    await run_kill_test(tmp_path, "  storage: {type: dir}\n")


async def test_acknowledged_writes_survive_sigkill_on_etcd(tmp_path: Path,
                                                           etcd_storage: str) -> None:
    await run_kill_test(tmp_path, etcd_storage)


async def test_acknowledged_writes_survive_sigkill_on_postgresql(tmp_path: Path,
                                                                 postgres_storage: str) -> None:
    await run_kill_test(tmp_path, postgres_storage)


async def test_two_auth_servers_on_etcd_lose_nothing_and_keep_serving_while_one_is_killed(
        tmp_path: Path, etcd_storage: str) -> None:
    """Kill A, then B, then A: the writer moves to the other server and keeps being answered."""
    servers = [AuthProcess(tmp_path / name, etcd_storage) for name in ("a", "b")]
    try:
        for server in servers:
            server.start()
        admin = IdentityFile.load(servers[0].data_dir, "Admin")
        client = AuthClient.from_identity(admin, [HostPort("127.0.0.1", s.port) for s in servers])
        async with client:
            writer = Writer(client)
            writing = asyncio.create_task(writer.run())
            answered_while_down = []
            for victim in (servers[0], servers[1], servers[0]):
                await asyncio.sleep(RUN_BETWEEN_KILLS)
                await asyncio.to_thread(victim.kill)
                before = len(writer.acked_tokens)
                await asyncio.sleep(RUN_BETWEEN_KILLS)
                answered_while_down.append(len(writer.acked_tokens) - before)
                await asyncio.to_thread(victim.start)
            writer.stop()
            await writing
            tokens, _ = await client.list_tokens()
            users = {u.metadata.name for u in await client.list_users()}
        print(f"\nwrites answered while one auth server was down: {answered_while_down}; "
              f"{writer.failed} failed in all")
        assert all(n > 0 for n in answered_while_down), answered_while_down
        stored = {t.metadata.name for t in tokens}
        assert writer.acked_tokens <= stored, sorted(writer.acked_tokens - stored)[:5]
        assert writer.acked_users <= users, sorted(writer.acked_users - users)[:5]
    finally:
        for server in servers:
            server.stop()
