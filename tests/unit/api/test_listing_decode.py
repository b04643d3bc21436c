"""Listings (`tsh ls` and its kin) decode without pydantic, and a bad answer is still one line.

Issue 20: pydantic's import and schema build were more than half of `tsh ls`'s start-up, so the
listings are dataclasses that `HTTPClient` decodes with `utils.plain`. What a user sees must not
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
from typing import Any

import pytest

from teleport.api import httpserver
from teleport.api.http import HTTPClient
from teleport.api.listing_models import (
    ActiveSession,
    ClusterStatus,
    NodeInfo,
    RecordingInfo,
    ServerSummary,
)
from teleport.api.record_listings import HostRecord, UserRecord
from teleport.errors import ConnectionProblem
from teleport.utils import plain

NODE = {"name": "db-1", "id": "9f1c", "addr": "10.0.0.5:3022"}


@pytest.fixture
async def answering(tls: tuple[ssl.SSLContext, ssl.SSLContext]
                    ) -> AsyncIterator[tuple[HTTPClient, list[Any]]]:
    """A TLS server on 127.0.0.1 that answers every request with the next queued JSON body."""
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

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls[0])
    port = server.sockets[0].getsockname()[1]
    client = HTTPClient([f"127.0.0.1:{port}"], tls[1], peer="proxy", server_hostname="localhost")
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
                            "1.labels.env: expected string, got integer"), message


async def test_a_missing_field_is_named(answering: tuple[HTTPClient, list[Any]]) -> None:
    client, bodies = answering
    bodies.append({"cluster": "one", "version": "1", "ca_pin": "sha256:x", "auth_servers": [],
                   "proxies": [{"id": "p", "addr": "h:3080"}], "nodes_online": 0})
    with pytest.raises(ConnectionProblem,
                       match=r"GET /v1/status: proxies\.0: missing field 'hostname'$"):
        await client.call("GET", "/v1/status", answer=ClusterStatus)


async def test_an_answer_that_is_not_a_list_is_refused(
        answering: tuple[HTTPClient, list[Any]]) -> None:
    client, bodies = answering
    bodies.append({"error": "not a list"})
    with pytest.raises(ConnectionProblem, match=r"nodes: body: expected array, got object$"):
        await client.call("GET", "/webapi/sites/one/nodes", answer=list[NodeInfo])


def test_the_listings_load_without_pydantic() -> None:
    probe = ("import sys, teleport.client.nodes, teleport.api.http; "
             "from teleport.utils import plain; from teleport.api.listing_models import NodeInfo; "
             "plain.convert([{'name': 'a', 'id': 'b', 'addr': ''}], list[NodeInfo]); "
             "print(sorted(m for m in sys.modules if 'pydantic' in m))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout == "[]\n", result.stdout


@pytest.mark.parametrize("listing", [
    NodeInfo(name="n", id="i", addr="a:1", labels={"k": "v"}, tunnel=True),
    RecordingInfo(sid="s", user="u", login="l", server_id="i", server_hostname="h",
                  start="2026-12-02T00:00:00Z", duration_ms=12, complete=False),
    ActiveSession(sid="s", user="u", login="l", server_hostname="h", created="c",
                  parties=["u", "v"], server_id="i"),
    ClusterStatus(cluster="c", version="1", ca_pin="sha256:x",
                  auth_servers=[ServerSummary(id="a", hostname="h", addr="h:3025")],
                  proxies=[], nodes_online=3),
])
def test_every_listing_comes_back_as_it_was_sent(listing: Any) -> None:
    """What a server sends (`json_answer`) decodes to an equal listing: every field type of
    every listing is one `plain` reads."""
    sent = json.loads(httpserver.json_answer([listing]).text or "")
    assert plain.convert(sent, list[type(listing)]) == [listing]


@pytest.mark.parametrize(("data", "answer", "where", "problem"), [
    ({"name": "n", "id": "i", "addr": "a", "tunnel": 1}, NodeInfo, "tunnel",
     "expected boolean, got integer"),
    ({"sid": "s", "user": "u", "login": "l", "server_id": "i", "server_hostname": "h",
      "start": "t", "duration_ms": True, "complete": False}, RecordingInfo, "duration_ms",
     "expected integer, got boolean"),
    ({"sid": "s", "user": "u", "login": "l", "server_hostname": "h", "created": "c",
      "parties": ["u", None]}, ActiveSession, "parties.1", "expected string, got null"),
    ([{"name": "n", "id": "i", "addr": "a", "labels": []}], list[NodeInfo], "0.labels",
     "expected object, got array"),
    ("nodes", list[NodeInfo], "", "expected array, got string"),
])
def test_a_value_of_another_json_type_is_named(data: Any, answer: Any, where: str,
                                               problem: str) -> None:
    with pytest.raises(plain.Mismatch) as caught:
        plain.convert(data, answer)
    assert (caught.value.where, caught.value.problem) == (where, problem)


def test_host_and_user_records_read_the_resources_as_the_models_do() -> None:
    """`tctl nodes ls` and `users ls` read the auth API's whole resources into records; what
    they print must be what the resource models say."""
    from teleport.types.codec import to_dict
    from teleport.types.resource import Metadata
    from teleport.types.resources import CommandLabelValue, Server, ServerSpec, User, UserSpec

    server = Server(metadata=Metadata(name="9f1c", labels={"env": "prod", "up": "static"}),
                    spec=ServerSpec(addr="10.0.0.5:3022", hostname="db-1", use_tunnel=True,
                                    cmd_labels={"up": CommandLabelValue(
                                        period="1m", command=["uptime"], result="3 days")}))
    user = User(metadata=Metadata(name="alice"),
                spec=UserSpec(roles=["access", "editor"], traits={"logins": ["root", "alice"]}))
    (host,) = plain.convert(json.loads(json.dumps([to_dict(server)])), list[HostRecord])
    (record,) = plain.convert(json.loads(json.dumps([to_dict(user)])), list[UserRecord])
    assert NodeInfo.of(host) == NodeInfo.of(server)
    assert NodeInfo.of(host).labels == {"env": "prod", "up": "3 days"}
    assert (record.metadata.name, record.logins, record.spec.roles) == (
        user.metadata.name, user.logins, user.spec.roles)
