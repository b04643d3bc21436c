"""Dialling a leaf cluster's node through its tunnel: the one request line a root proxy sends.

A leaf cluster's proxy keeps a reverse tunnel to its root cluster's proxy (the agent side of
`teleport.sshutils.reversetunnel`, with its proxy certificate) and asks it to forward
`CLUSTER_LISTEN`. For each user connection to a leaf node, the root proxy opens a
`forwarded-tcpip` channel on that tunnel and writes one line before the user's SSH bytes:

    Teleport-Dial <base64url of JSON {"host": ..., "port": ..., "client": [host, port]}>\\n

The leaf proxy dials the node as it does for its own users (by name, UUID or address, over the
node's own tunnel when it has one, the user's address signed for the node) and answers one
line, `OK` or `ERR <reason>` (then it hangs up). Two targets are not nodes: `AUTH_TARGET`
(`@remote-auth-server:3025`), the leaf's auth server, for a root user's TLS to it; and
`CAS_TARGET`, after whose `OK` the leaf writes its host, user and TLS CAs (public halves, a JSON
list, at most `MAX_CAS` bytes) and hangs up, so the root follows the leaf's CA rotations. From there the channel carries the user's SSH
end to end to the leaf node, which authenticates the user against the root's user CA and
judges them with the leaf's roles after the role map: neither proxy reads the session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
from dataclasses import dataclass

from teleport.errors import BadParameter, ConnectionProblem

#: The virtual listener a leaf's proxy asks its root's proxy to forward.
CLUSTER_LISTEN = ("@remote-cluster", 3024)
PREFIX = b"Teleport-Dial "
#: A request or an answer longer than this is refused unread.
MAX_LINE = 4096
#: How long the leaf may take to dial its node and answer (its own dial waits 15 s at most).
ANSWER_TIMEOUT = 20.0
#: The target whose answer is the leaf's public CAs.
CAS_TARGET = ("@remote-cluster-cas", 0)
MAX_CAS = 1024 * 1024


@dataclass(frozen=True)
class DialRequest:
    """Which leaf node the user asked for, and the user's own address for its audit."""

    host: str
    port: int
    client: tuple[str, int] = ("", 0)

    def encode(self) -> bytes:
        payload = json.dumps({"host": self.host, "port": self.port, "client": list(self.client)})
        return PREFIX + base64.urlsafe_b64encode(payload.encode()) + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> DialRequest:
        """Parse a request line; anything else is a one-line BadParameter."""
        if not line.startswith(PREFIX):
            raise BadParameter("not a cluster dial request")
        try:
            data = json.loads(base64.urlsafe_b64decode(line[len(PREFIX):].strip()))
            host, port, client = data["host"], data["port"], data["client"]
            if not (isinstance(host, str) and host and isinstance(port, int)
                    and 0 <= port < 65536 and isinstance(client, list) and len(client) == 2
                    and isinstance(client[0], str) and isinstance(client[1], int)):
                raise ValueError("bad field types")
        except (ValueError, KeyError, TypeError, binascii.Error) as err:
            raise BadParameter(f"malformed cluster dial request: {err}") from None
        return cls(host, port, (client[0], client[1]))


async def read_line(sock: socket.socket) -> bytes:
    """Read one line from a non-blocking socket byte by byte, so what follows stays unread."""
    loop = asyncio.get_running_loop()
    line = bytearray()
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            while len(line) <= MAX_LINE:
                byte = await loop.sock_recv(sock, 1)
                if not byte:
                    raise ConnectionProblem("the cluster tunnel closed before a whole line")
                if byte == b"\n":
                    return bytes(line)
                line.extend(byte)
    except TimeoutError:
        raise ConnectionProblem("timed out waiting on the cluster tunnel") from None
    raise BadParameter("cluster dial line too long")


async def request(sock: socket.socket, want: DialRequest) -> None:
    """The root proxy's side: ask for a node on a fresh channel socket and read the answer."""
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, want.encode())
        answer = await read_line(sock)
    except OSError as err:
        raise ConnectionProblem(f"the cluster tunnel failed: {err}") from None
    if answer == b"OK":
        return
    reason = answer.removeprefix(b"ERR ").decode("utf-8", "replace").strip()
    raise ConnectionProblem(reason or "the leaf cluster refused the connection")


async def read_all(sock: socket.socket, limit: int = MAX_CAS) -> bytes:
    """Read to the end (the leaf's CAs), at most limit bytes, within ANSWER_TIMEOUT."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            while chunk := await loop.sock_recv(sock, 65536):
                data.extend(chunk)
                if len(data) > limit:
                    raise BadParameter("the leaf's answer is too long")
    except TimeoutError:
        raise ConnectionProblem("timed out waiting on the cluster tunnel") from None
    return bytes(data)


async def answer(sock: socket.socket, error: str | None) -> None:
    """The leaf proxy's side: say the node is connected, or why not (one line)."""
    line = b"OK\n" if error is None else b"ERR " + " ".join(error.split()).encode()[:MAX_LINE - 8] + b"\n"
    await asyncio.get_running_loop().sock_sendall(sock, line)
