"""tsh's security-key browser flow: the link it prints and the callback the page comes back to
(a real server on 127.0.0.1, hit with a real HTTP client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from teleport.client.keyflow import KeyCallback, key_page_link
from teleport.errors import BadParameter
from teleport.utils.addr import HostPort

CREDENTIAL = {"id": "abc", "rawId": "abc", "type": "public-key",
              "response": {"clientDataJSON": "e30", "authenticatorData": "AA", "signature": "AA"}}


@pytest.fixture
async def server() -> AsyncIterator[KeyCallback]:
    async with KeyCallback() as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _callback(http: aiohttp.ClientSession, server: KeyCallback,
                    **query: str) -> tuple[int, str]:
    async with http.get(server.callback_url, params=query) as resp:
        return resp.status, await resp.text()


def test_the_link_leads_to_the_proxy_page_with_everything_in_the_fragment(
        server: KeyCallback) -> None:
    options = {"challenge": "c2VjcmV0", "rpId": "teleport.example.com"}
    link = key_page_link(HostPort("teleport.example.com", 443), "get", options, server,
                         "log in to main as alice")
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path, parts.query) == \
        ("https", "teleport.example.com:443", "/web/cli/webauthn", "")
    fragment = {k: v[0] for k, v in parse_qs(parts.fragment).items()}
    assert fragment["kind"] == "get"
    assert json.loads(fragment["options"]) == options
    assert fragment["callback"] == f"http://127.0.0.1:{server.port}/callback"
    assert fragment["state"] == server.state and len(server.state) >= 32


async def test_the_answer_with_the_state_is_taken(server: KeyCallback,
                                                  http: aiohttp.ClientSession) -> None:
    status, page = await _callback(http, server, state=server.state,
                                   response=json.dumps(CREDENTIAL))
    assert status == 200 and "you may close this window" in page
    assert await server.wait(1) == CREDENTIAL


async def test_another_state_is_refused_and_tsh_keeps_waiting(
        server: KeyCallback, http: aiohttp.ClientSession) -> None:
    waiting = asyncio.create_task(server.wait(5))
    for state in ("", "x" * 32, server.state[:-1]):
        status, page = await _callback(http, server, state=state,
                                       response=json.dumps(CREDENTIAL))
        assert status == 400 and "another tsh request" in page
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await _callback(http, server, state=server.state, response=json.dumps(CREDENTIAL))
    assert await waiting == CREDENTIAL


async def test_an_answer_that_is_not_a_credential_ends_with_one_line(
        server: KeyCallback, http: aiohttp.ClientSession) -> None:
    status, _ = await _callback(http, server, state=server.state, response="[1, 2]")
    assert status == 400
    with pytest.raises(BadParameter, match="not a credential"):
        await server.wait(1)
