"""Listings (`tsh ls` and its kin) decode without pydantic, and a bad answer is still one line.

Issue 20: pydantic's import and schema build were more than half of `tsh ls`'s start-up, so the
listings are dataclasses that `HTTPClient` decodes with msgspec. What a user sees must not
change: unknown fields are ignored (a newer server), defaults fill what an older one leaves out,
and a field of the wrong type or a missing one is a `ConnectionProblem` naming it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from teleport.api.http import HTTPClient
from teleport.api.listing_models import ClusterStatus, NodeInfo
from teleport.errors import ConnectionProblem

NODE = {"name": "db-1", "id": "9f1c", "addr": "10.0.0.5:3022"}


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True,
                   capture_output=True)
    return key, cert


@pytest.fixture
async def answering(certificate: tuple[Path, Path]
                    ) -> AsyncIterator[tuple[HTTPClient, list[Any]]]:
    """A TLS server on 127.0.0.1 that answers every request with the next queued JSON body."""
    key, cert = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    bodies: list[Any] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                raw = json.dumps(bodies.pop(0)).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client = HTTPClient([f"127.0.0.1:{port}"], ssl.create_default_context(cafile=str(cert)),
                        peer="proxy", server_hostname="localhost")
    try:
        yield client, bodies
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_a_listing_fills_defaults_and_ignores_unknown_fields(
        answering: tuple[HTTPClient, list[Any]]) -> None:
    client, bodies = answering
    bodies.append([{**NODE, "labels": {"env": "prod"}, "added_later": 1}, NODE])
    nodes = await client.call("GET", "/webapi/sites/one/nodes", answer=list[NodeInfo])
    assert nodes == [NodeInfo(name="db-1", id="9f1c", addr="10.0.0.5:3022", labels={"env": "prod"}),
                     NodeInfo(name="db-1", id="9f1c", addr="10.0.0.5:3022")]
    assert nodes[1].labels == {} and nodes[1].tunnel is False


async def test_a_field_of_the_wrong_type_is_named_in_one_line(
        answering: tuple[HTTPClient, list[Any]]) -> None:
    client, bodies = answering
    bodies.append([NODE, {**NODE, "labels": {"env": 7}}])
    with pytest.raises(ConnectionProblem) as caught:
        await client.call("GET", "/webapi/sites/one/nodes?query=x", answer=list[NodeInfo])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("proxy 127.0.0.1:")
    assert message.endswith("sent an unexpected answer to GET /webapi/sites/one/nodes: "
                            "1.labels: expected `str`, got `int`"), message


async def test_a_missing_field_is_named(answering: tuple[HTTPClient, list[Any]]) -> None:
    client, bodies = answering
    bodies.append({"cluster": "one", "version": "1", "ca_pin": "sha256:x", "auth_servers": [],
                   "proxies": [{"id": "p", "addr": "h:3080"}], "nodes_online": 0})
    with pytest.raises(ConnectionProblem,
                       match=r"GET /v1/status: proxies\.0: object missing required field "
                             r"`hostname`$"):
        await client.call("GET", "/v1/status", answer=ClusterStatus)


async def test_an_answer_that_is_not_a_list_is_refused(
        answering: tuple[HTTPClient, list[Any]]) -> None:
    client, bodies = answering
    bodies.append({"error": "not a list"})
    with pytest.raises(ConnectionProblem, match=r"nodes: body: expected `array`, got `object`$"):
        await client.call("GET", "/webapi/sites/one/nodes", answer=list[NodeInfo])


def test_the_listings_load_without_pydantic() -> None:
    probe = ("import sys, teleport.client.nodes, teleport.api.http; "
             "from teleport.api.listing_models import NodeInfo; "
             "import msgspec; msgspec.convert([{'name': 'a', 'id': 'b', 'addr': ''}], "
             "list[NodeInfo]); print(sorted(m for m in sys.modules if 'pydantic' in m))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout == "[]\n", result.stdout
