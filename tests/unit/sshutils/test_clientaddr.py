"""The proxy's signed line that tells a node the user's address: who may send it, and when."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta, timezone

import pytest

from teleport.api.throttle import Rate, Throttle
from teleport.errors import AccessDenied
from teleport.keys import ssh
from teleport.sshutils import clientaddr
from teleport.utils.clock import FakeClock

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
CLUSTER = "example.com"
NODE = "node-uuid"
CLIENT = ("203.0.113.7", 50022)


def _host(ca: bytes, role: str, cluster: str = CLUSTER) -> clientaddr.Signer:
    key = ssh.generate_private_key()
    cert = ssh.sign_host_cert(ca, ssh.public_key_of(key), host_uuid=f"{role.lower()}-uuid",
                              nodename=role.lower(), cluster=cluster,
                              principals=[f"{role.lower()}-uuid"], system_role=role,
                              valid_before=NOW + timedelta(hours=1))
    return clientaddr.Signer(key.decode(), cert)


@pytest.fixture(scope="module")
def ca() -> bytes:
    return ssh.generate_private_key()


def _verify(ca: bytes, line: bytes, now: datetime = NOW, node: str = NODE) -> tuple[str, int]:
    return clientaddr.verify(line, [ssh.public_key_of(ca)], cluster=CLUSTER, node_uuid=node,
                             now=now)


def test_a_proxy_names_the_user_to_the_node(ca: bytes) -> None:
    line = _host(ca, "Proxy").header(CLIENT, NODE, NOW)
    assert line.startswith(clientaddr.MAGIC) and line.endswith(b"\r\n")
    assert _verify(ca, line) == CLIENT


def test_only_a_proxy_of_this_cluster_may_name_an_address(ca: bytes) -> None:
    with pytest.raises(AccessDenied):  # a node's (or a user's own host's) certificate
        _verify(ca, _host(ca, "Node").header(CLIENT, NODE, NOW))
    other_ca = ssh.generate_private_key()
    with pytest.raises(AccessDenied, match="trusted authority"):
        _verify(ca, _host(other_ca, "Proxy").header(CLIENT, NODE, NOW))


def test_the_line_is_for_one_node_and_one_minute(ca: bytes) -> None:
    line = _host(ca, "Proxy").header(CLIENT, NODE, NOW)
    with pytest.raises(AccessDenied, match="another node"):
        _verify(ca, line, node="other-node")
    with pytest.raises(AccessDenied, match="stale"):
        _verify(ca, line, now=NOW + timedelta(minutes=2))


def test_a_changed_address_breaks_the_signature(ca: bytes) -> None:
    line = _host(ca, "Proxy").header(CLIENT, NODE, NOW)
    payload, signature, cert = line[len(clientaddr.MAGIC):].strip().split(b" ")
    forged = base64.urlsafe_b64encode(base64.urlsafe_b64decode(payload + b"==").replace(
        b"203.0.113.7", b"198.51.100.9")).rstrip(b"=")
    with pytest.raises(AccessDenied, match="bad signature"):
        _verify(ca, clientaddr.MAGIC + b" ".join((forged, signature, cert)) + b"\r\n")
    for broken in (b"", b"a b", b"!!! ### $$$"):
        with pytest.raises(AccessDenied):
            _verify(ca, clientaddr.MAGIC + broken + b"\r\n")


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False
        self.protocol: asyncio.BaseProtocol | None = None

    def abort(self) -> None:
        self.aborted = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 4000) if name == "peername" else default


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.extra: dict[str, object] = {}
        self.data = b""
        self.made = False

    def set_extra_info(self, **kwargs: object) -> None:
        self.extra.update(kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True

    def data_received(self, data: bytes) -> None:
        self.data += data


async def test_the_node_takes_ssh_as_is_and_a_checked_line_before_it(ca: bytes) -> None:
    def preamble() -> tuple[clientaddr.AddressPreamble, _Transport, list[_Conn]]:
        made: list[_Conn] = []

        def make(peer: tuple[str, int] | None, slot: object) -> _Conn:
            made.append(_Conn())
            if peer is not None:
                made[-1].set_extra_info(peername=peer)
            return made[-1]

        check = clientaddr.checker(trusted_host_cas=lambda: [ssh.public_key_of(ca)],
                                   cluster=CLUSTER, node_uuid=NODE, now=lambda: NOW)
        protocol = clientaddr.AddressPreamble(make, check)
        transport = _Transport()
        protocol.connection_made(transport)
        return protocol, transport, made

    protocol, transport, made = preamble()
    protocol.data_received(b"SSH-2.0-OpenSSH_9.2\r\n")
    assert made and made[0].made and made[0].data == b"SSH-2.0-OpenSSH_9.2\r\n"
    assert made[0].extra == {} and transport.protocol is made[0]

    protocol, transport, made = preamble()
    line = _host(ca, "Proxy").header(CLIENT, NODE, NOW)
    for piece in (line[:5], line[5:40], line[40:] + b"SSH-2.0-x\r\n"):
        protocol.data_received(piece)
    assert made[0].extra == {"peername": CLIENT} and made[0].data == b"SSH-2.0-x\r\n"

    protocol, transport, made = preamble()
    protocol.data_received(_host(ca, "Node").header(CLIENT, NODE, NOW))
    assert transport.aborted and not made


class _Written(_Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        self.closed = True


async def test_the_preamble_counts_by_tcp_peer_then_by_the_users_address(ca: bytes) -> None:
    """Silent connections count against their TCP source; a proxy's line moves the count to
    the user's address, so a proxy carrying many users is not one throttled source."""
    throttle = Throttle("node", [Rate(1.0, 10, 10)], max_pending=1, clock=FakeClock())
    check = clientaddr.checker(trusted_host_cas=lambda: [ssh.public_key_of(ca)],
                               cluster=CLUSTER, node_uuid=NODE, now=lambda: NOW)
    made: list[object] = []

    def make(peer: tuple[str, int] | None, slot: object) -> _Conn:
        made.append(slot)
        return _Conn()

    first = clientaddr.AddressPreamble(make, check, throttle=throttle)
    first.connection_made(_Written())
    assert throttle.pending("192.0.2.1") == 1  # the TCP peer, still silent
    second_transport = _Written()
    clientaddr.AddressPreamble(make, check, throttle=throttle).connection_made(second_transport)
    assert second_transport.written == b"Exceeded MaxStartups\r\n" and second_transport.closed
    first.data_received(_host(ca, "Proxy").header(CLIENT, NODE, NOW) + b"SSH-2.0-x\r\n")
    assert throttle.pending("192.0.2.1") == 0 and throttle.pending(CLIENT[0]) == 1
    assert made and made[0] is not None
