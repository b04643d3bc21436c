"""Host identities are bound (issue 9, findings 7 and 8), through the real auth API.

A node's certificate proves which host it is; what it writes is stamped or checked against
that: audit events carry the caller's server id, the auth server's time and a fresh id;
recordings are bound to the host that uploads them, capped in size and cleaned up when never
committed; live sessions list under the node's registered name. A join token lets a host in,
not become a live host: its UUID, its name and the reserved cluster names are refused.
"""

from __future__ import annotations

import gzip
import json
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teleport.api.auth_models import AnnouncedSession
from teleport.auth.client import AuthClient
from teleport.auth.join import join
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.config import StaticToken
from teleport.errors import AccessDenied, AlreadyExists, LimitExceeded
from teleport.events.emitter import MemoryEmitter
from teleport.events.sessions_store import SessionStore
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.pin import ca_pin
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

#: A small cap so a test can go over it.
CAP = 64 * 1024
TOKEN = "static-tok-1"


@dataclass
class Api:
    auth: AuthServer
    addr: HostPort
    emitter: MemoryEmitter
    clock: FakeClock
    recordings: Path

    async def context(self, role: str, host_uuid: str) -> ssl.SSLContext:
        """Return a TLS client context holding a fresh identity of role for host_uuid."""
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=host_uuid, system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        return tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                            [c.encode() for c in certs.tls_ca_certs])

    async def client(self, role: str, host_uuid: str) -> AuthClient:
        return AuthClient([self.addr], await self.context(role, host_uuid), timeout=10,
                          cluster=self.auth.cluster_name)

    def leftovers(self) -> list[str]:
        """Partial uploads and claims the store holds (hidden files)."""
        return sorted(p.name for p in self.recordings.iterdir() if p.name.startswith("."))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    clock = FakeClock(datetime.now(timezone.utc))
    emitter = MemoryEmitter()
    recordings = tmp_path / "sessions" / "default"
    auth = AuthServer(MemoryBackend(clock), emitter, clock, AuthSettings(
        cluster_name="binding.test", recordings_dir=recordings, max_recording_bytes=CAP,
        static_tokens=(StaticToken(roles=frozenset({"node", "proxy"}), token=TOKEN),)))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield Api(auth, addr, emitter, clock, recordings)
    finally:
        await runner.cleanup()


# --- finding 7: audit events ------------------------------------------------------------------

async def test_a_node_cannot_forge_the_server_time_or_id_of_its_events(api: Api) -> None:
    forged = {"event": "exec", "user": "alice", "command": "id", "server_id": "victim-node",
              "time": "2001-01-01T00:00:00.000000Z", "uid": "00000000-forged"}
    async with await api.client("Node", "node-a") as node:
        await node.emit(forged)
        await node.emit(forged)
    stored = api.emitter.of_type("exec")
    assert len(stored) == 2
    for event in stored:
        assert event["server_id"] == "node-a"
        assert event["uid"] != "00000000-forged"
        assert event["time"] == api.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert event["command"] == "id"  # what the node reports is kept
    assert stored[0]["uid"] != stored[1]["uid"]


async def test_a_node_cannot_record_events_only_the_auth_server_records(api: Api) -> None:
    async with await api.client("Node", "node-a") as node:
        for event_type in ("user.login", "join"):
            with pytest.raises(AccessDenied, match="only the auth server"):
                await node.emit({"event": event_type, "user": "alice", "success": True})
    assert not api.emitter.of_type("user.login") and not api.emitter.of_type("join")


# --- finding 7: recordings ----------------------------------------------------------------------

def _recording(folder: Path, server_id: str, output: bytes = b"hello\n") -> dict[str, Path]:
    """Write a recording's two files as a node would, for a session on server_id."""
    sid = str(uuid.uuid4())
    events = [{"event": "session.start", "ms": 0, "version": 1, "sid": sid, "user": "alice",
               "login": "root", "server_id": server_id, "server_hostname": server_id,
               "namespace": "default", "size": "80:25", "time": "2026-01-01T00:00:00Z"},
              {"event": "print", "ms": 1, "offset": 0, "bytes": len(output)},
              {"event": "session.end", "ms": 2, "time": "2026-01-01T00:00:01Z"}]
    folder.mkdir(parents=True, exist_ok=True)
    chunks, events_file = folder / f"{sid}.chunks.gz", folder / f"{sid}.events.gz"
    chunks.write_bytes(gzip.compress(output))
    events_file.write_bytes(gzip.compress(b"".join(json.dumps(e).encode() + b"\n" for e in events)))
    return {"chunks": chunks, "events": events_file}


def _sid(parts: dict[str, Path]) -> str:
    return parts["events"].name.removesuffix(".events.gz")


async def test_an_upload_over_the_cap_is_refused_with_413_and_leaves_no_files(
        api: Api, tmp_path: Path) -> None:
    parts = _recording(tmp_path / "spool", "node-a", os.urandom(CAP + 1))  # random: gzip can't shrink it
    sid = _sid(parts)
    ctx = await api.context("Node", "node-a")
    url = f"https://{api.addr}/v1/sessions/{sid}/recording/chunks"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
        async with http.put(url, data=parts["chunks"].read_bytes()) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "limit_exceeded"
    assert api.leftovers() == []
    async with await api.client("Node", "node-a") as node:
        with pytest.raises(LimitExceeded, match="larger than"):
            await node.upload_recording(sid, parts)
    assert list(api.recordings.iterdir()) == []


async def test_another_node_cannot_join_complete_or_overwrite_a_recording(
        api: Api, tmp_path: Path) -> None:
    parts = _recording(tmp_path / "spool", "node-a", b"the real session\n")
    sid = _sid(parts)
    base = f"/v1/sessions/{sid}/recording"
    async with await api.client("Node", "node-a") as owner, \
            await api.client("Node", "node-b") as other:
        await owner._stream_up(f"{base}/chunks", parts["chunks"])
        # node-b may neither add a part to node-a's upload nor commit it.
        with pytest.raises(AccessDenied, match="another host"):
            await other._stream_up(f"{base}/events", parts["events"])
        with pytest.raises(AccessDenied, match="another host"):
            await other.call("POST", f"{base}/complete")
        await owner._stream_up(f"{base}/events", parts["events"])
        assert (await owner.call("POST", f"{base}/complete"))["stored"] is True
        stored = (api.recordings / f"{sid}.chunks.gz").read_bytes()
        # Once stored, a second upload of the same session changes nothing.
        fake = _recording(tmp_path / "fake", "node-a", b"a forged session\n")
        for part in ("chunks", "events"):
            await other._stream_up(f"{base}/{part}", fake[part])
        assert (await other.call("POST", f"{base}/complete"))["stored"] is False
    assert (api.recordings / f"{sid}.chunks.gz").read_bytes() == stored
    assert api.leftovers() == []


async def test_a_node_cannot_upload_a_recording_of_another_servers_session(
        api: Api, tmp_path: Path) -> None:
    parts = _recording(tmp_path / "spool", "node-a")
    async with await api.client("Node", "node-b") as other:
        with pytest.raises(AccessDenied, match="another server"):
            await other.upload_recording(_sid(parts), parts)
    assert list(api.recordings.iterdir()) == []
    # A recording proxy records sessions on other nodes: its uploads are not bound to its UUID.
    async with await api.client("Proxy", "proxy-1") as proxy:
        assert await proxy.upload_recording(_sid(parts), parts)


async def test_partial_uploads_never_committed_are_removed(api: Api, tmp_path: Path) -> None:
    abandoned = _recording(tmp_path / "spool", "node-a")
    fresh = _recording(tmp_path / "spool", "node-a")
    async with await api.client("Node", "node-a") as node:
        for parts in (abandoned, fresh):
            await node._stream_up(f"/v1/sessions/{_sid(parts)}/recording/chunks", parts["chunks"])
    assert len(api.leftovers()) == 4  # a part and a claim each
    hours_ago = time.time() - 4 * 3600
    for path in api.recordings.glob(f".{_sid(abandoned)}*"):
        os.utime(path, (hours_ago, hours_ago))
    SessionStore(api.recordings)  # an auth server starting on the folder
    assert api.leftovers() == sorted(p.name for p in api.recordings.glob(f".{_sid(fresh)}*"))
    assert len(api.leftovers()) == 2


# --- finding 7: live sessions -------------------------------------------------------------------

def _live(hostname: str = "prod-db") -> AnnouncedSession:
    return AnnouncedSession(user="alice", login="root", server_hostname=hostname,
                            created="2026-01-01T00:00:00Z", parties=["alice"])


async def test_live_sessions_are_bound_to_their_node_and_its_registered_name(api: Api) -> None:
    sid = str(uuid.uuid4())
    async with await api.client("Node", "node-a") as node_a, \
            await api.client("Node", "node-b") as node_b, \
            await api.client("Admin", "admin") as admin:
        await node_a.upsert_server(_server("node-a", "node-a-host"))
        await node_a.announce_session(sid, _live())
        with pytest.raises(AccessDenied, match="another node"):
            await node_b.announce_session(sid, _live())
        with pytest.raises(AccessDenied, match="another node"):
            await node_b.end_session(sid)
        with pytest.raises(AccessDenied):
            await node_b.list_active_sessions()
        listed, = await admin.list_active_sessions()
        # Listed under node-a's registered name, not the name it claimed.
        assert listed.server_id == "node-a" and listed.server_hostname == "node-a-host"
        await node_a.end_session(sid)
        assert await admin.list_active_sessions() == []


# --- finding 8: joining and announcing cannot take a live host's identity -----------------------

def _server(host_uuid: str, hostname: str, addr: str = "10.0.0.1:3022",
            expires: datetime | None = None) -> Server:
    return Server(kind="node", metadata=Metadata(name=host_uuid, expires=expires),
                  spec=ServerSpec(addr=addr, hostname=hostname))


async def _join(api: Api, host_uuid: str, nodename: str, addresses: list[str] | None = None) -> Any:
    pin = ca_pin((await api.auth.certs.get_ca("tls")).trusted_tls_certs()[0].encode())
    return await join([api.addr], token=TOKEN, role="Node", host_uuid=host_uuid,
                      nodename=nodename, addresses=addresses or [], ca_pins=[pin],
                      warn=lambda _: None)


async def _heartbeat(api: Api, client: AuthClient, host_uuid: str, hostname: str,
                     addr: str = "10.0.0.1:3022") -> None:
    expires = api.clock.now() + timedelta(seconds=15)
    await client.upsert_server(_server(host_uuid, hostname, addr, expires))


async def test_a_join_cannot_take_a_live_nodes_uuid_or_name(api: Api) -> None:
    async with await api.client("Node", "node-a") as node_a:
        await _heartbeat(api, node_a, "node-a", "db1")
    with pytest.raises(AlreadyExists, match="already online"):
        await _join(api, "node-a", "attacker")
    with pytest.raises(AlreadyExists, match="in use by host node-a"):
        await _join(api, "node-x", "DB1")
    refusals = [e for e in api.emitter.of_type("auth") if e.get("method") == "token"]
    assert len(refusals) == 2 and not any(e["success"] for e in refusals)
    assert not api.emitter.of_type("join")
    # Once the old host has been offline for its TTL, its UUID and name are free again.
    api.clock.advance(timedelta(seconds=16))
    result = await _join(api, "node-a", "db1")
    assert "db1" in sshkeys.parse_cert(result.identity.ssh_cert).principals


async def test_a_join_cannot_use_the_clusters_reserved_names(api: Api) -> None:
    with pytest.raises(AccessDenied, match="reserved"):
        await _join(api, "node-r", "auth.binding.test.teleport.cluster.local")
    with pytest.raises(AccessDenied, match="reserved"):
        await _join(api, "node-r", "fine", ["Teleport.Cluster.Local."])


async def test_a_heartbeat_cannot_claim_another_live_hosts_name(api: Api) -> None:
    async with await api.client("Node", "node-a") as node_a, \
            await api.client("Node", "node-b") as node_b:
        await _heartbeat(api, node_a, "node-a", "db1", "10.0.0.1:3022")
        await _heartbeat(api, node_b, "node-b", "web1", "10.0.0.2:3022")
        with pytest.raises(AlreadyExists, match="in use by host node-a"):
            await _heartbeat(api, node_b, "node-b", "db1", "10.6.6.6:3022")
        with pytest.raises(AccessDenied, match="reserved"):
            await _heartbeat(api, node_b, "node-b", "x.teleport.cluster.local")
        # node-a's address is not redirected, and node-b keeps its own name.
        nodes = {n.metadata.name: n.spec for n in await node_a.list_servers("node")}
        assert nodes["node-a"].hostname == "db1" and nodes["node-a"].addr == "10.0.0.1:3022"
        assert nodes["node-b"].hostname == "web1"
        # A host renaming itself frees its old name; a name is free once its host is gone.
        await _heartbeat(api, node_b, "node-b", "web2", "10.0.0.2:3022")
        await _heartbeat(api, node_a, "node-a", "web1", "10.0.0.1:3022")
        api.clock.advance(timedelta(seconds=16))
        await _heartbeat(api, node_b, "node-b", "web1", "10.0.0.2:3022")
