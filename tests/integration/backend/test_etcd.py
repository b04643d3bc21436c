"""The etcd backend against a real etcd (Debian's etcd-server): the shared conformance suite, then
what only a networked store can get wrong: restarts mid-watch, compaction, peers, TLS, auth."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teleport.backend import etcd as etcd_module
from teleport.backend import etcd_client
from teleport.backend.base import Event, EventType, Item, range_end
from teleport.backend.conformance import CHECKS, next_event, run_check
from teleport.backend.etcd import EtcdBackend, EtcdSettings
from teleport.errors import AccessDenied, BadParameter, ConnectionProblem, LimitExceeded
from teleport.utils.clock import FakeClock
from tests.etcd_server import EtcdServer, free_port
from tests.ports import refused_port

USER, PASSWORD = "teleport-user", "s3cret-pass"


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd for the module's tests; each test works under its own random prefix."""
    with EtcdServer(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd this test alone may stop, move and compact."""
    with EtcdServer(tmp_path / "etcd") as server:
        yield server


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with EtcdServer(tmp_path_factory.mktemp("etcd-tls"), tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with EtcdServer(tmp_path_factory.mktemp("etcd-auth"), user=(USER, PASSWORD)) as server:
        yield server


def settings(*peers: str, **options: Any) -> EtcdSettings:
    options.setdefault("prefix", f"/test-{secrets.token_hex(6)}/")
    return EtcdSettings(peers=list(peers), **options)


@pytest.mark.parametrize("check", CHECKS)
async def test_conformance(check: str, etcd: EtcdServer) -> None:
    chosen = settings(etcd.url)
    await run_check(check, lambda clock: EtcdBackend.open(chosen, clock))


async def _expect(events: AsyncIterator[Event], *expected: tuple[EventType, bytes, bytes]) -> None:
    got = [await next_event(events) for _ in expected]
    assert [(e.type, e.item.key, e.item.value) for e in got] == list(expected)


async def _away(server: EtcdServer, writes: list[Item], compact: bool = False) -> None:
    """Move the server to another port (out of the watcher's reach), write there, come back."""
    home = server.client_port
    await asyncio.to_thread(server.restart, free_port())
    async with await EtcdBackend.open(settings(server.url, prefix="/w/")) as elsewhere:
        for item in writes:
            if item.value:
                await elsewhere.put(item)
            else:
                await elsewhere.delete(item.key)
    if compact:
        await asyncio.to_thread(server.compact)
    await asyncio.to_thread(server.restart, home)


async def test_watch_resumes_after_restart_without_gap_or_duplicate(own_etcd: EtcdServer) -> None:
    async with await EtcdBackend.open(settings(own_etcd.url, prefix="/w/")) as backend:
        async with await backend.watch([b"/a/"]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            await backend.put(Item(b"/a/1", b"before"))
            await _expect(events, (EventType.PUT, b"/a/1", b"before"))
            # Written while the watcher cannot reach etcd: delivered once, in order, on return.
            await _away(own_etcd, [Item(b"/a/2", b"while away"), Item(b"/b/x", b"other"),
                                   Item(b"/a/1", b"")])
            await backend.put(Item(b"/a/3", b"after"))
            await _expect(events, (EventType.PUT, b"/a/2", b"while away"),
                          (EventType.DELETE, b"/a/1", b""), (EventType.PUT, b"/a/3", b"after"))
            # A plain restart on the same port, mid-watch.
            await asyncio.to_thread(own_etcd.restart)
            await backend.put(Item(b"/a/4", b"restarted"))
            await _expect(events, (EventType.PUT, b"/a/4", b"restarted"))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(events), 0.5)


async def test_compacted_history_ends_the_watch_with_limit_exceeded(own_etcd: EtcdServer) -> None:
    async with await EtcdBackend.open(settings(own_etcd.url, prefix="/w/")) as backend:
        async with await backend.watch([b"/a/"]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            await _away(own_etcd, [Item(b"/a/1", b"missed"), Item(b"/a/2", b"missed")],
                        compact=True)
            with pytest.raises(LimitExceeded, match="fell behind.*compacted.*watch again"):
                await next_event(events)
        # The reader's cure works: read again, watch again.
        assert [i.key for i in await backend.get_range(b"/a/", range_end(b"/a/"))] == [
            b"/a/1", b"/a/2"]
        async with await backend.watch([b"/a/"]) as watcher:
            assert (await next_event(aiter(watcher))).type is EventType.INIT


async def test_calls_ride_out_a_restart_then_give_up_in_one_line(
        own_etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async with await EtcdBackend.open(settings(own_etcd.url)) as backend:
        await asyncio.to_thread(own_etcd.stop)
        coming_back = asyncio.create_task(asyncio.to_thread(own_etcd.start))
        stored = await backend.put(Item(b"/k", b"v"))  # retried until etcd answers again
        await coming_back
        assert await backend.get(b"/k") == stored
        await asyncio.to_thread(own_etcd.stop)
        monkeypatch.setattr(etcd_client, "RETRY_WINDOW", 1.0)
        started = time.monotonic()
        with pytest.raises(ConnectionProblem,
                           match=f"^etcd at {own_etcd.url} is unreachable: connection refused$"):
            await backend.get(b"/k")
        assert time.monotonic() - started < 3


async def test_unreachable_peers_fail_open_fast_in_one_line() -> None:
    with refused_port() as first, refused_port() as second:
        peers = [f"http://127.0.0.1:{first}", f"http://127.0.0.1:{second}"]
        started = time.monotonic()
        with pytest.raises(ConnectionProblem) as caught:
            await EtcdBackend.open(settings(*peers))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"etcd at {peers[0]}, {peers[1]} is unreachable: ")
    assert "refused" in message.lower()


async def test_a_later_peer_serves_when_the_first_is_down(etcd: EtcdServer) -> None:
    with refused_port() as down:
        chosen = settings(f"http://127.0.0.1:{down}", etcd.url)
        async with await EtcdBackend.open(chosen) as backend:
            stored = await backend.put(Item(b"/k", b"v"))
            assert await backend.get(b"/k") == stored
            async with await backend.watch([b"/"]) as watcher:
                events = aiter(watcher)
                assert (await next_event(events)).type is EventType.INIT
                await backend.put(Item(b"/k", b"w"))
                await _expect(events, (EventType.PUT, b"/k", b"w"))


async def test_prefixes_isolate_backends(etcd: EtcdServer) -> None:
    base = f"/iso-{secrets.token_hex(4)}"
    async with (await EtcdBackend.open(settings(etcd.url, prefix=base + "/")) as one,
                await EtcdBackend.open(settings(etcd.url, prefix=base + "-b/")) as two):
        async with await one.watch([]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            await two.put(Item(b"/k", b"two's"))
            await one.put(Item(b"/k", b"one's"))
            await _expect(events, (EventType.PUT, b"/k", b"one's"))
        assert (await two.get(b"/k")).value == b"two's"
        assert [i.value for i in await one.get_range(b"", b"\xff")] == [b"one's"]
        await one.delete_range(b"", b"\xff")
        assert [i.value for i in await two.get_range(b"", b"\xff")] == [b"two's"]


async def test_wrong_password_is_access_denied_naming_the_user(auth_etcd: EtcdServer) -> None:
    with pytest.raises(AccessDenied) as caught:
        await EtcdBackend.open(settings(auth_etcd.url, username=USER, password="not-it"))
    assert USER in str(caught.value) and "not-it" not in str(caught.value)
    with pytest.raises(AccessDenied, match="requires a login"):
        await EtcdBackend.open(settings(auth_etcd.url))
    async with await EtcdBackend.open(
            settings(auth_etcd.url, username=USER, password=PASSWORD)) as backend:
        stored = await backend.put(Item(b"/k", b"v"))
        assert await backend.get(b"/k") == stored


async def test_a_login_survives_a_server_restart(auth_etcd: EtcdServer) -> None:
    """etcd forgets its auth tokens when it restarts: calls and watches log in again."""
    async with await EtcdBackend.open(
            settings(auth_etcd.url, username=USER, password=PASSWORD)) as backend:
        async with await backend.watch([b"/"]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            await asyncio.to_thread(auth_etcd.restart)
            await backend.put(Item(b"/k", b"after"))
            await _expect(events, (EventType.PUT, b"/k", b"after"))


async def test_ranges_page_and_skip_expired_items(
        etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_module, "RANGE_PAGE", 3)
    clock = FakeClock()
    async with await EtcdBackend.open(settings(etcd.url), clock) as backend:
        for n in range(10):
            expires = clock.now() + timedelta(seconds=5) if n % 3 == 0 else None
            await backend.put(Item(b"/r/%d" % n, b"v", expires))
        clock.advance(timedelta(seconds=5))
        live = [b"/r/%d" % n for n in range(10) if n % 3]
        assert [i.key for i in await backend.get_range(b"/r/", b"/r0")] == live
        assert [i.key for i in await backend.get_range(b"/r/", b"/r0", limit=4)] == live[:4]


async def test_tls_with_a_client_certificate(tls_etcd: EtcdServer) -> None:
    pki = tls_etcd.pki
    assert pki is not None
    chosen = settings(tls_etcd.url, tls_ca_file=pki.ca_file, tls_cert_file=pki.client_cert,
                      tls_key_file=pki.client_key)
    async with await EtcdBackend.open(chosen) as backend:
        async with await backend.watch([b"/"]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            await backend.put(Item(b"/k", b"v"))
            await _expect(events, (EventType.PUT, b"/k", b"v"))
    with pytest.raises(ConnectionProblem, match="requires a client certificate") as caught:
        await EtcdBackend.open(settings(tls_etcd.url, tls_ca_file=pki.ca_file))
    assert "\n" not in str(caught.value) and tls_etcd.url in str(caught.value)
    with pytest.raises(ConnectionProblem, match="not trusted.*tls_ca_file"):
        await EtcdBackend.open(settings(tls_etcd.url, tls_cert_file=pki.client_cert,
                                        tls_key_file=pki.client_key))
    # insecure: the server's certificate is accepted unverified.
    async with await EtcdBackend.open(settings(
            tls_etcd.url, insecure=True, tls_cert_file=pki.client_cert,
            tls_key_file=pki.client_key)) as backend:
        await backend.put(Item(b"/k", b"v"))


@pytest.mark.parametrize(("options", "message"), [
    ({"prefix": "/teleport"}, "prefix '/teleport' must end with '/'"),
    ({"tls_ca_file": Path("/nonexistent/ca.pem")}, "tls_ca_file '/nonexistent/ca.pem' does not"),
    ({"tls_cert_file": Path(__file__)}, "tls_cert_file and tls_key_file must be set together"),
    ({"username": "u"}, "username and password_file must be set together"),
    ({"max_client_msg_size": 0}, "etcd_max_client_msg_size_bytes must be positive"),
])
async def test_bad_settings_are_one_line(options: dict[str, Any], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        await EtcdBackend.open(settings("http://127.0.0.1:1", **options))
    with pytest.raises(BadParameter, match="not an http"):
        await EtcdBackend.open(settings("127.0.0.1:2379"))


async def test_values_over_the_message_limit_are_refused_before_sending(etcd: EtcdServer) -> None:
    async with await EtcdBackend.open(settings(etcd.url, max_client_msg_size=4096)) as small:
        await small.put(Item(b"/fits", b"x" * 3000))
        with pytest.raises(LimitExceeded, match=r"'/big' is \d+ bytes.*max_client_msg_size"):
            await small.put(Item(b"/big", b"x" * 5000))
        with pytest.raises(LimitExceeded):
            await small.create(Item(b"/big", b"x" * 5000))
        assert [i.key for i in await small.get_range(b"/", b"0")] == [b"/fits"]
    async with await EtcdBackend.open(settings(etcd.url)) as default:
        with pytest.raises(LimitExceeded, match=str(2 * 1024 * 1024)):
            await default.put(Item(b"/big", b"x" * (2 * 1024 * 1024)))


async def test_expiry_and_bytes_round_trip_exactly(etcd: EtcdServer) -> None:
    clock = FakeClock(datetime(2026, 5, 1, 12, 0, 0, 123457, tzinfo=timezone.utc))
    async with await EtcdBackend.open(settings(etcd.url), clock) as backend:
        expires = clock.now() + timedelta(minutes=5, microseconds=1)
        value = b"\x00tp1" + bytes(range(256))  # looks like the envelope itself
        await backend.put(Item(b"/x", value, expires))
        got = await backend.get(b"/x")
        assert (got.value, got.expires) == (value, expires)


async def test_the_server_deletes_expired_items_and_watchers_hear_it(etcd: EtcdServer) -> None:
    async with await EtcdBackend.open(settings(etcd.url)) as backend:
        async with await backend.watch([b"/t/"]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            soon = datetime.now(timezone.utc) + timedelta(seconds=1)
            await backend.put(Item(b"/t/a", b"v", soon))
            await _expect(events, (EventType.PUT, b"/t/a", b"v"))
            deleted = await asyncio.wait_for(anext(events), 8)
            assert (deleted.type, deleted.item.key) == (EventType.DELETE, b"/t/a")


async def test_resume_is_served_by_any_backend_on_the_store_until_compacted(
        own_etcd: EtcdServer) -> None:
    """A revision from one auth server resumes at another on the same etcd; compacted: refused."""
    chosen = settings(own_etcd.url)
    async with await EtcdBackend.open(chosen) as first, await EtcdBackend.open(chosen) as second:
        seen = await first.put(Item(b"/a/1", b"seen"))
        await first.put(Item(b"/a/2", b"missed"))
        async with await second.watch([b"/a/"], since=seen.revision) as watcher:
            await _expect(aiter(watcher), (EventType.INIT, b"", b""),
                          (EventType.PUT, b"/a/2", b"missed"))
        await asyncio.to_thread(own_etcd.compact)
        with pytest.raises(LimitExceeded, match="no longer has that revision"):
            await second.watch([b"/a/"], since=seen.revision)


async def test_writes_expiring_in_the_same_second_share_one_lease(own_etcd: EtcdServer) -> None:
    """One lease grant a second, not one a write: 200 heartbeats leave etcd a lease or two."""
    async with await EtcdBackend.open(settings(own_etcd.url)) as backend:
        expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=10)
        await asyncio.gather(*(backend.put(Item(b"/hb/%d" % n, b"v", expires))
                               for n in range(100)))
        for n in range(100):  # overwrites too: nothing is left behind per write
            await backend.put(Item(b"/hb/%d" % n, b"again", expires))
        async with aiohttp.ClientSession() as http, \
                http.post(own_etcd.url + "/v3/lease/leases", json={}) as answer:
            leases = (await answer.json()).get("leases", [])
        assert 1 <= len(leases) <= 2, leases
        assert len(await backend.get_range(b"/hb/", range_end(b"/hb/"))) == 100
