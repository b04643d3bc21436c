"""The real CLIs at the edges of a pipe and of the wire: quiet on a closed pipe like `cat`, and
one `ERROR:` line for an answer that is not Teleport's."""

from __future__ import annotations

import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from teleport.keys import tls as tlskeys
from tests.e2e.cluster import BIN, Cluster
from tests.e2e.test_recording import _recorded_session, _wait_listed

#: What a shell reports for `cat` when its reader has gone (128 + SIGPIPE).
CLOSED_PIPE = 141


def _env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, **cluster.env}


def _with_reader_gone(cluster: Cluster, tool: str, *args: str) -> tuple[int, str]:
    """Run a CLI whose stdout reader has already gone: every write to it fails (EPIPE)."""
    proc = subprocess.Popen([str(BIN / tool), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(cluster))
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode(errors="replace")


def test_tctl_and_tsh_stop_quietly_when_the_reader_goes(cluster: Cluster,
                                                         joe: dict[str, Any]) -> None:
    for tool, args in [("tctl", ("-c", str(cluster.config), "audit", "events", "--since=1h")),
                       ("tctl", ("-c", str(cluster.config), "users", "ls")),
                       ("tctl", ("-c", str(cluster.config), "get", "users")),
                       ("tctl", ("-c", str(cluster.config), "auth", "export")),
                       ("tsh", ("ls",)),
                       ("tsh", ("recordings", "ls")),
                       # Printed outside the event loop: same quiet stop.
                       ("tctl", ("version",)), ("tsh", ("version",)), ("teleport", ("version",)),
                       ("teleport", ("configure",))]:
        code, err = _with_reader_gone(cluster, tool, *args)
        assert (code, err) == (CLOSED_PIPE, ""), (tool, args, err)


def test_tsh_play_stops_quietly_when_the_reader_goes(cluster: Cluster, joe: dict[str, Any]) -> None:
    sid = _recorded_session(cluster)
    _wait_listed(cluster, sid)
    for args in [("play", "--speed=1000", sid), ("play", "--format=json", sid)]:
        code, err = _with_reader_gone(cluster, "tsh", *args)
        assert (code, err) == (CLOSED_PIPE, ""), (args, err)


def test_piped_into_head_prints_one_line_and_no_error(cluster: Cluster,
                                                       joe: dict[str, Any]) -> None:
    for _ in range(3):
        cluster.tsh("ssh", "root@e2e-node", "true")
    command = (f"'{BIN / 'tctl'}' -c '{cluster.config}' audit events --since=1h "
               f"--format=json | head -1; '{BIN / 'tsh'}' ls | head -1")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60,
                            env=_env(cluster))
    first, second = result.stdout.splitlines()
    assert first.startswith("[") and second.startswith("Node Name"), result.stdout
    assert result.stderr == ""


class _NotTeleport(BaseHTTPRequestHandler):
    """An HTTPS server that is not a Teleport proxy: plain-text 404 for every path."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def not_teleport(tmp_path: Path) -> Iterator[str]:
    key, cert = tlskeys.self_signed_web_cert(["127.0.0.1"], now=datetime.now(timezone.utc))
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "cert.pem").write_bytes(cert)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotTeleport)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_tsh_against_a_server_that_is_not_teleport_is_one_error_line(
        cluster: Cluster, not_teleport: str) -> None:
    result = cluster.tsh("login", f"--proxy={not_teleport}", "--user=joe", "--insecure",
                         check=False)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ERROR: HTTP 404 from {not_teleport}: Not Found"), lines[0]
    assert "is it a Teleport proxy?" in lines[0]


def test_unknown_route_and_wrong_method_from_the_real_proxy_are_one_line_errors(
        cluster: Cluster, tmp_path: Path) -> None:
    """`tsh` reaches the web API's JSON errors through its one client path."""
    script = (
        "import asyncio, sys\n"
        "from teleport.client.webapi import WebClient\n"
        "from teleport.cli.common import run\n"
        "async def main():\n"
        f"    async with WebClient({cluster.web_addr!r}, insecure=True) as web:\n"
        "        await web.call(sys.argv[1], sys.argv[2])\n"
        "sys.exit(run(main()))\n")
    for method, path, expected in [("GET", "/webapi/nope", "ERROR: GET /webapi/nope: not found"),
                                   ("DELETE", "/webapi/ping",
                                    "ERROR: DELETE /webapi/ping: method not allowed")]:
        result = subprocess.run([str(BIN / "python"), "-c", script, method, path],
                                capture_output=True, text=True, timeout=60, env=_env(cluster))
        assert result.returncode != 0
        assert result.stderr.splitlines() == [expected], result.stderr
