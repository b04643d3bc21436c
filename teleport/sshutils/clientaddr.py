"""The user's address, carried from the proxy to a node it dials, signed by the proxy.

A node the proxy reaches over TCP sees the proxy's address, so its audit log (`session.start`,
`auth`) and `SSH_CLIENT` would name the proxy for every user, browser terminals included.
Before the SSH bytes, the proxy sends one line naming the user's address, signed with its host
key and carrying its host certificate:

    Teleport-Proxy-Client <payload> <signature> <certificate>\\r\\n   (each base64url)

where the payload is JSON `{"client": [host, port], "node": <node UUID>, "time": <unix s>}`.
The node takes the address only if the certificate is a *proxy* certificate of its cluster's
host CA, the signature is that key's over the payload, the payload names this node and its time
is within a minute; any other line closes the connection. A connection that starts with `SSH-`
(a client of the node's port itself) is served as before. Like the PROXY protocol, but no
balancer or client can forge it. (A line seen on the wire could be replayed to the same node
within the minute; that only changes which address the log shows.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncssh

from teleport.api.throttle import Slot, Throttle
from teleport.errors import AccessDenied, BadParameter
from teleport.keys.ssh import host_role, verify_cert
from teleport.rbac import rules
from teleport.rbac.subject import Caller
from teleport.sshutils import gate

log = logging.getLogger("teleport.ssh")

MAGIC = b"Teleport-Proxy-Client "
#: The whole line: a host certificate is well under this.
MAX_LINE = 16 * 1024
MAX_SKEW = timedelta(minutes=1)
#: How long a new connection may take to send its first bytes.
FIRST_BYTES_WAIT = 20.0

#: Check a header line (without MAGIC's framing removed) and return the address it carries.
Check = Callable[[bytes], tuple[str, int]]


@dataclass(frozen=True)
class Signer:
    """The proxy's host identity, which signs the addresses it hands to nodes."""

    private_key: str
    cert: str

    def header(self, client: tuple[str, int], node_uuid: str, now: datetime) -> bytes:
        """Return the line that tells node_uuid the user's address."""
        payload = json.dumps({"client": [client[0], client[1]], "node": node_uuid,
                              "time": int(now.timestamp())}, separators=(",", ":"),
                             sort_keys=True).encode()
        key = asyncssh.import_private_key(self.private_key)
        signature = key.sign(payload, key.sig_algorithms[0])
        return MAGIC + b" ".join(_b64(part) for part in (
            payload, signature, self.cert.strip().encode())) + b"\r\n"


def checker(*, trusted_host_cas: Callable[[], Sequence[str]], cluster: str, node_uuid: str,
            now: Callable[[], datetime]) -> Check:
    """Return the node's check of a header line (raises AccessDenied)."""

    def check(line: bytes) -> tuple[str, int]:
        return verify(line, trusted_host_cas(), cluster=cluster, node_uuid=node_uuid, now=now())

    return check


def verify(line: bytes, trusted_host_cas: Sequence[str], *, cluster: str, node_uuid: str,
           now: datetime) -> tuple[str, int]:
    """Return the address a proxy's header line carries, or raise AccessDenied saying why."""
    if not line.startswith(MAGIC):
        raise AccessDenied("not a client address line")
    parts = line[len(MAGIC):].strip().split(b" ")
    if len(parts) != 3:
        raise AccessDenied("malformed client address line")
    try:
        payload, signature, cert = (base64.urlsafe_b64decode(p + b"=" * (-len(p) % 4))
                                    for p in parts)
        info = verify_cert(cert.decode(), list(trusted_host_cas), now=now, cert_type="host")
    except (binascii.Error, ValueError, BadParameter) as err:
        raise AccessDenied(f"client address line: untrusted certificate ({err})") from None
    role, authority = host_role(info)
    rules.check_tunnel_peer(role, authority, info.key_id, info.principals,
                            allowed=(Caller.PROXY,), cluster=cluster)
    try:
        if not asyncssh.import_public_key(info.public_key).verify(payload, signature):
            raise AccessDenied("client address line: bad signature")
        data: Any = json.loads(payload)
        host, port = data["client"]
        node, stamp = data["node"], data["time"]
        ipaddress.ip_address(host)
    except (ValueError, KeyError, TypeError, asyncssh.KeyImportError):
        raise AccessDenied("client address line: malformed payload") from None
    if node != node_uuid:
        raise AccessDenied("client address line is for another node")
    if not isinstance(stamp, int) or abs(now.timestamp() - stamp) > MAX_SKEW.total_seconds():
        raise AccessDenied("client address line is stale")
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise AccessDenied("client address line: bad port")
    return host, port


class AddressPreamble(asyncio.Protocol):
    """Hold a new connection until its first bytes, then hand it to the SSH connection.

    SSH (`SSH-...`) goes straight on; a proxy's address line is checked first and the SSH
    connection then sees the user's address as its peer; anything else, or nothing within the
    wait, is closed.
    """

    def __init__(self, make: Callable[[tuple[str, int] | None, Slot | None], asyncio.Protocol],
                 check: Check, wait: float = FIRST_BYTES_WAIT,
                 throttle: Throttle | None = None) -> None:
        self._make = make
        self._check = check
        self._wait = wait
        #: Counts this connection as pending under its TCP peer while it waits for its first
        #: bytes, then under the user's address a proxy's line names (see `teleport.api.throttle`).
        self._throttle = throttle
        self._slot: Slot | None = None
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._handed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self._throttle is not None:
            peer = transport.get_extra_info("peername")
            self._slot = self._throttle.enter(peer[0] if peer else "")
            if self._slot is None:
                self._handed = True
                gate.refuse(transport)
                return
        self._timer = asyncio.get_running_loop().call_later(self._wait, transport.abort)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        probe = self._buffer[:len(MAGIC)]
        if not MAGIC.startswith(probe):
            self._hand(None, self._buffer)  # SSH or anything else: SSH's own parser decides
            return
        if len(probe) < len(MAGIC):
            return
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE:
                self._close("client address line too long")
            return
        try:
            peer = self._check(self._buffer[:end + 1])
        except AccessDenied as err:
            self._close(str(err))
            return
        self._hand(peer, self._buffer[end + 1:])

    def eof_received(self) -> bool | None:
        self._close("closed before it said anything")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._slot is not None:
            self._slot.release()

    def _hand(self, peer: tuple[str, int] | None, rest: bytes) -> None:
        assert self._transport is not None
        if self._timer is not None:
            self._timer.cancel()
        self._handed = True
        slot, self._slot = self._slot, None
        if slot is not None and peer is not None and not slot.move(peer[0]):
            # The user's address has too many unauthenticated connections here already.
            log.warning("closed a connection for %s: too many pending from that address", peer)
            self._transport.abort()
            return
        conn = self._make(peer, slot)
        self._transport.set_protocol(conn)
        conn.connection_made(self._transport)
        if rest:
            conn.data_received(rest)

    def _close(self, why: str) -> None:
        if self._transport is None or self._handed:
            return
        peer = self._transport.get_extra_info("peername")
        log.warning("closed a connection from %s: %s", peer, why)
        self._transport.abort()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


__all__ = ["MAGIC", "AddressPreamble", "Check", "Signer", "checker", "verify"]
