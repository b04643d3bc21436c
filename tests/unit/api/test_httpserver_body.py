"""Reading a JSON body (`teleport.api.httpserver.read_json`): a body that came whole with its
head is read without arming the body deadline, one still on its way is read under it; both
decode as strictly as json.loads with NaN refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from teleport.api import httpserver
from teleport.errors import BadParameter

BODY = b'{"kind": "node", "name": "\\u00e9t\\u00e9"}'


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A plain-HTTP API on 127.0.0.1 answering the JSON body it read, with a 1 s deadline."""
    app = httpserver.make_app(component="test", max_body=1024,
                              deadlines=httpserver.Deadlines(headers=5.0, body=1.0))

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await httpserver.read_json(request))

    app.router.add_put("/echo", echo)
    runner = httpserver.make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.fixture
def timers(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """The deadlines asyncio.timeout was asked for from here on."""
    armed: list[float | None] = []
    original: Callable[[float | None], Any] = asyncio.timeout

    def counting(delay: float | None) -> Any:
        armed.append(delay)
        return original(delay)

    monkeypatch.setattr(asyncio, "timeout", counting)
    return armed


async def put(port: int, body: bytes, *, pause: float = 0.0) -> tuple[int, bytes]:
    """PUT /echo with body, its head first and the body after pause seconds when pause > 0."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        if pause:
            writer.write(head)
            await writer.drain()
            await asyncio.sleep(pause)
            writer.write(body)
        else:
            writer.write(head + body)
        answer_head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in answer_head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return int(answer_head.split()[1]), await reader.readexactly(length)
    finally:
        writer.close()


async def test_a_body_that_came_with_its_head_is_read_without_a_deadline_timer(
        port: int, timers: list[float | None]) -> None:
    """A heartbeat's small body always comes with its head: nothing can be late, and arming
    and cancelling a timer per request was a share of a busy auth server's CPU."""
    status, answer = await put(port, BODY)
    assert status == 200 and json.loads(answer) == json.loads(BODY)
    assert timers == []


async def test_a_body_still_on_its_way_is_read_under_the_body_deadline(
        port: int, timers: list[float | None]) -> None:
    status, answer = await put(port, BODY, pause=0.2)
    assert status == 200 and json.loads(answer) == json.loads(BODY)
    assert timers == [1.0]


@pytest.mark.parametrize("raw", [
    BODY, BODY.decode().encode("utf-16"), b"\xef\xbb\xbf" + BODY, BODY.decode().encode("utf-32-le"),
])
def test_bodies_decode_as_json_loads_decodes_bytes(raw: bytes) -> None:
    assert httpserver.parse_json_object(raw) == json.loads(raw)


@pytest.mark.parametrize(("raw", "error"), [
    (b'{"a": NaN}', "not valid JSON"), (b'{"a": -Infinity}', "not valid JSON"),
    (b'{"a": 1} x', "not valid JSON"), (b"\xff\xfe\x00", "not valid JSON"),
    (b"[1]", "must be a JSON object"), (b'{"a": "\\ud800"}', "not valid Unicode"),
])
def test_flawed_bodies_are_one_line_refusals(raw: bytes, error: str) -> None:
    with pytest.raises(BadParameter, match=error):
        httpserver.parse_json_object(raw)
