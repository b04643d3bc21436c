"""The virtual authenticator harness, and the server's WebAuthn checks against a real browser.

A tiny page on http://localhost:<port> (a secure context, as WebAuthn requires) runs
navigator.credentials.create and .get in headless Chromium with a virtual CTAP2 authenticator;
what the browser answers goes to `teleport.auth.webauthn` unchanged. So the server module is
checked against the bytes Chromium really writes (client data, authenticator data, the
`none` attestation it substitutes, signature counters), not only against our software key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from selenium import webdriver

from teleport.auth.context import AuthContext, AuthSettings
from teleport.auth.webauthn import Webauthn
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied
from teleport.events.emitter import MemoryEmitter
from teleport.services.mfa_devices import MFADeviceService
from teleport.utils.clock import FakeClock
from tests.e2e import virtual_authenticator as va
from tests.e2e.browser import wait_visible

pytestmark = pytest.mark.slow

RP_ID = "localhost"
_PAGE = (b'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>WebAuthn</title>'
         b'</head><body><main><h1 id="ready">WebAuthn test page</h1></main></body></html>')


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(_PAGE)))
        self.end_headers()
        self.wfile.write(_PAGE)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def origin() -> Iterator[str]:
    """Serve the page on loopback; its origin is http://localhost:<port>."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Server:
    webauthn: Webauthn
    devices: MFADeviceService


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    clock = FakeClock(datetime.now(timezone.utc))
    backend = MemoryBackend(clock)
    devices = MFADeviceService(backend)
    yield Server(Webauthn(AuthContext(backend, MemoryEmitter(), clock, AuthSettings()), devices),
                 devices)
    await backend.close()


def _open(browser: webdriver.Chrome, origin: str) -> None:
    browser.get(origin + "/")
    wait_visible(browser, "#ready")


async def test_second_factor_key_registers_and_logs_in(browser: webdriver.Chrome, origin: str,
                                                       server: Server) -> None:
    _open(browser, origin)
    key = va.add(browser, transport="usb")
    options = await server.webauthn.begin_registration("alice", RP_ID, "Teleport")
    device = await server.webauthn.finish_registration("alice", "usb key", va.create(browser, options),
                                                       [origin], RP_ID)
    held = va.credentials(browser, key)
    assert [c.credential_id for c in held] == [device.spec.webauthn.credential_id_bytes]  # type: ignore[union-attr]
    assert held[0].rp_id == RP_ID and not held[0].resident

    counters = []
    for _ in range(2):  # the counter moves with each login and the server follows it
        assertion = va.get(browser, await server.webauthn.begin_login("alice", RP_ID))
        user, used = await server.webauthn.finish_login(assertion, [origin], RP_ID, user="alice")
        assert (user, used.id) == ("alice", device.id)
        assert used.spec.webauthn is not None
        counters.append(used.spec.webauthn.signature_counter)
        assert counters[-1] == va.credentials(browser, key)[0].sign_count
    assert 0 < counters[0] < counters[1], counters

    # The browser's own answers, refused for the reasons a user could meet.
    assertion = va.get(browser, await server.webauthn.begin_login("alice", RP_ID))
    with pytest.raises(AccessDenied, match="origin 'http://localhost:.*', expected https://proxy"):
        await server.webauthn.finish_login(assertion, ["https://proxy.example.com:3080"], RP_ID,
                                           user="alice")
    assertion = va.get(browser, await server.webauthn.begin_login("alice", RP_ID))
    await server.webauthn.finish_login(assertion, [origin], RP_ID, user="alice")
    with pytest.raises(AccessDenied, match="already used"):
        await server.webauthn.finish_login(assertion, [origin], RP_ID, user="alice")
    # The browser will not register the same key twice (excludeCredentials).
    with pytest.raises(RuntimeError, match="InvalidStateError"):
        va.create(browser, await server.webauthn.begin_registration("alice", RP_ID, "Teleport"))


async def test_passwordless_with_a_resident_key(browser: webdriver.Chrome, origin: str,
                                                server: Server) -> None:
    _open(browser, origin)
    key = va.add(browser, transport="internal", resident_key=True, user_verification=True,
                 user_verified=True)
    options = await server.webauthn.begin_registration("bob", RP_ID, "Teleport", resident_key=True)
    device = await server.webauthn.finish_registration("bob", "touch id", va.create(browser, options),
                                                       [origin], RP_ID)
    assert device.spec.webauthn is not None and device.spec.webauthn.resident_key
    held = va.credentials(browser, key)
    assert held[0].resident and held[0].user_handle == await server.devices.user_handle("bob")

    assertion = va.get(browser, await server.webauthn.begin_login(None, RP_ID))
    user, used = await server.webauthn.finish_login(assertion, [origin], RP_ID)
    assert (user, used.id) == ("bob", device.id)

    # A failed fingerprint: the browser answers without the UV flag only if asked to; here it
    # refuses outright, and nothing reaches the server.
    va.set_user_verified(browser, key, False)
    with pytest.raises(RuntimeError, match="NotAllowedError"):
        va.get(browser, await server.webauthn.begin_login(None, RP_ID))


async def test_removed_authenticator_keeps_no_credentials(browser: webdriver.Chrome, origin: str,
                                                          server: Server) -> None:
    _open(browser, origin)
    with va.virtual_authenticator(browser, transport="usb") as first:
        options = await server.webauthn.begin_registration("carol", RP_ID, "Teleport")
        await server.webauthn.finish_registration("carol", "first", va.create(browser, options),
                                                  [origin], RP_ID)
        assert len(va.credentials(browser, first)) == 1
    with pytest.raises(Exception, match="(?i)authenticator"):
        va.credentials(browser, first)  # gone with the authenticator
    second = va.add(browser, transport="usb")
    assert va.credentials(browser, second) == []
    options = await server.webauthn.begin_registration("carol", RP_ID, "Teleport")
    await server.webauthn.finish_registration("carol", "second", va.create(browser, options),
                                              [origin], RP_ID)
    assert [d.metadata.name for d in await server.devices.list("carol")] == ["first", "second"]
    # Only the second key is attached: logging in picks it among the two offered.
    assertion = va.get(browser, await server.webauthn.begin_login("carol", RP_ID))
    _, used = await server.webauthn.finish_login(assertion, [origin], RP_ID, user="carol")
    assert used.metadata.name == "second"
    assert json.loads(await server.webauthn.begin_login("carol", RP_ID))["allowCredentials"]
