"""The gate holds a new SSH connection silent until its turn, then hands every byte on."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from teleport.api.throttle import Rate, Slot, Throttle
from teleport.sshutils.gate import Gate
from teleport.utils.clock import FakeClock


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        self.closed = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 4000) if name == "peername" else default


class _SSH(asyncio.Protocol):
    """Stands for asyncssh's connection, which writes its banner when it gets the transport."""

    def __init__(self, slot: Slot | None) -> None:
        self.slot = slot
        self.data = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"SSH-2.0-server\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.data += data


async def test_no_banner_before_its_turn_and_nothing_lost() -> None:
    clock = FakeClock()
    throttle = Throttle("test", [Rate(1.0, 1, 1)], 2, clock)
    made: list[_SSH] = []

    def make(slot: Slot | None) -> _SSH:
        made.append(_SSH(slot))
        return made[-1]

    first, second = _Transport(), _Transport()
    first_gate = Gate(throttle, make)
    first_gate.connection_made(first)
    assert first.written == b"SSH-2.0-server\r\n"  # the burst's token
    first_gate.data_received(b"SSH-2.0-client\r\n")  # a wrapper still feeding the gate
    assert made[0].data == b"SSH-2.0-client\r\n"

    gate = Gate(throttle, make)
    gate.connection_made(second)
    gate.data_received(b"SSH-2.0-client\r\n")
    assert second.written == b"" and len(made) == 1  # waiting: silent
    clock.advance(timedelta(seconds=1))
    throttle.wake()
    await asyncio.sleep(0)  # the waiter's callback
    assert second.written == b"SSH-2.0-server\r\n" and second.protocol is made[1]
    assert made[1].data == b"SSH-2.0-client\r\n" and made[1].slot is not None

    third = _Transport()
    Gate(throttle, make).connection_made(third)
    assert third.written == b"Exceeded MaxStartups\r\n" and third.closed  # 2 pending already
    made[0].slot.authenticated()  # type: ignore[union-attr]
    assert throttle.pending("192.0.2.1") == 1


async def test_a_peer_gone_while_waiting_gives_its_place_up() -> None:
    clock = FakeClock()
    throttle = Throttle("test", [Rate(1.0, 1, 1)], 5, clock)
    Gate(throttle, _SSH).connection_made(_Transport())
    gate = Gate(throttle, _SSH)
    gate.connection_made(_Transport())
    assert throttle.pending("192.0.2.1") == 2
    gate.connection_lost(None)
    assert throttle.pending("192.0.2.1") == 1
