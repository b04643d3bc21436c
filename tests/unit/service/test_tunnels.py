"""The node's tunnel states and reconnect waits: pure rules, no sockets (teleport.service.tunnels)."""

from __future__ import annotations

import itertools

import pytest

from teleport.errors import BadParameter
from teleport.metrics import REGISTRY
from teleport.service.tunnels import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    Tunnel,
    TunnelEvent,
    TunnelState,
    backoff,
    transition,
)

S, E = TunnelState, TunnelEvent
ALLOWED = {
    (S.DISCONNECTED, E.DIAL): S.CONNECTING,
    (S.CONNECTING, E.UP): S.CONNECTED,
    (S.CONNECTING, E.DOWN): S.DISCONNECTED,
    (S.CONNECTED, E.DOWN): S.DISCONNECTED,
}


def test_every_move_is_either_allowed_or_refused_loudly() -> None:
    for state, event in itertools.product(TunnelState, TunnelEvent):
        if (state, event) in ALLOWED:
            assert transition(state, event) == ALLOWED[state, event]
        else:
            with pytest.raises(BadParameter, match=f"a {state} tunnel cannot go {event}"):
                transition(state, event)


def _gauge(state: TunnelState) -> float:
    return REGISTRY.get_sample_value("teleport_reverse_tunnel_agents",
                                     {"state": state.value}) or 0.0


def test_a_tunnel_moves_its_count_between_states() -> None:
    tunnel = Tunnel()
    before = {state: _gauge(state) for state in TunnelState}
    tunnel.move(E.DIAL)
    assert tunnel.state == S.CONNECTING
    assert _gauge(S.CONNECTING) == before[S.CONNECTING] + 1
    assert _gauge(S.DISCONNECTED) == before[S.DISCONNECTED] - 1
    tunnel.move(E.UP)
    with pytest.raises(BadParameter):
        tunnel.move(E.UP)  # refused, and the counts stay where they were
    assert tunnel.state == S.CONNECTED
    assert _gauge(S.CONNECTED) == before[S.CONNECTED] + 1
    assert _gauge(S.CONNECTING) == before[S.CONNECTING]
    tunnel.move(E.DOWN)
    assert {state: _gauge(state) for state in TunnelState} == before


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 4, 5, 6, 10, 31, 64, 10_000])
def test_backoff_is_full_jitter_within_the_capped_exponential(attempt: int) -> None:
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 100))  # no huge ints here
    assert backoff(attempt, rand=lambda: 0.0) == 0.0
    assert backoff(attempt, rand=lambda: 0.5) == pytest.approx(ceiling / 2)
    top = backoff(attempt, rand=lambda: 0.999999)
    assert top <= ceiling and top == pytest.approx(ceiling, rel=1e-5)


def test_backoff_grows_then_stops_at_the_cap() -> None:
    waits = [backoff(n, rand=lambda: 1.0) for n in range(8)]
    assert waits[:3] == [BACKOFF_BASE, BACKOFF_BASE * 2, BACKOFF_BASE * 4]
    assert waits == sorted(waits) and waits[-1] == BACKOFF_CAP
