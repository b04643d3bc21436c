"""Pace new handshakes per source address, so one address cannot make us do crypto at will.

Every SSH and HTTPS listener (node, proxy SSH, reverse tunnel, the proxy's web port, the auth
API) asks its `Throttle` before it says anything to a new connection: no SSH banner, no TLS
handshake yet. Two limits per source (an IPv4 address, an IPv6 /64):

- **pending**: connections of the source not yet authenticated (waiting for their turn, or
  mid-handshake or login). Past `max_pending` a new one is closed at once, as OpenSSH's
  `PerSourceMaxStartups` does.
- **rates**: token buckets (`connection_limits.rates`: `average` per `period`, `burst`) on new
  handshakes. A connection without a token is not refused but *waits* for one (FIFO), so
  ssh-audit's DHEat rate test sees few banners a second while a real client only waits.

A connection leaves `pending` once it authenticates (SSH user or host certificate accepted, TLS
with a verified client certificate) or its TLS handshake completes, or it closes; established
sessions are never limited. An *authenticated* handshake also gives its token back: sources
that log in (a fleet of nodes behind one NAT address redialling their tunnels, Ansible through
the proxy) are paced only by their own handshake time, while sources that never authenticate
(scanners, the DHEat attack) get the configured rate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from teleport.metrics import HANDSHAKES_THROTTLED
from teleport.utils.clock import Clock

log = logging.getLogger("teleport.throttle")

#: Sources remembered at most; idle sources with full buckets are forgotten first.
MAX_TRACKED = 10_000
#: A refused source is logged once per this many seconds, not once per connection.
LOG_EVERY = 60.0


@dataclass(frozen=True)
class Rate:
    """`average` new handshakes per `period` seconds, up to `burst` at once (Teleport's rate)."""

    period: float
    average: int
    burst: int

    @property
    def per_second(self) -> float:
        return self.average / self.period


#: 10 a second after a burst of 10: ssh-audit's 1.5 s rate test sees at most ~17 banners a
#: second (it flags more than 20), and no person or client waits on it.
DEFAULT_RATES: tuple[Rate, ...] = (Rate(period=1.0, average=10, burst=10),)
#: Unauthenticated connections per source at once; OpenSSH's MaxStartups starts refusing at 10
#: for all sources together.
DEFAULT_MAX_PENDING = 32


def source_of(host: str) -> str:
    """Name the source a peer address counts under: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host  # a Unix socket or a name: its own source
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class _Source:
    tokens: list[float]
    updated: float
    pending: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    timer: asyncio.TimerHandle | None = None
    refused: int = 0
    logged_at: float | None = None


class Throttle:
    """One listener's per-source limits on unauthenticated connections and handshake rate."""

    def __init__(self, name: str, rates: Sequence[Rate] = DEFAULT_RATES,
                 max_pending: int = DEFAULT_MAX_PENDING, clock: Clock | None = None) -> None:
        self.name = name
        self.rates = tuple(rates)
        self.max_pending = max_pending
        #: Tests move a fake clock; otherwise the monotonic one, which no clock step moves.
        self.clock = clock
        self._sources: dict[str, _Source] = {}
        # Touch the labelled series so /metrics shows them at zero from the start.
        for action in ("refused", "delayed"):
            HANDSHAKES_THROTTLED.labels(name, action)

    def enter(self, host: str) -> Slot | None:
        """Count a new connection from host as pending; None when its source has too many."""
        source = source_of(host)
        state = self._state(source)
        if state.pending >= self.max_pending:
            self._refused(source, state)
            return None
        state.pending += 1
        return Slot(self, source)

    def pending(self, host: str) -> int:
        """Unauthenticated connections of host's source right now."""
        state = self._sources.get(source_of(host))
        return state.pending if state is not None else 0

    def wake(self) -> None:
        """Hand due tokens to waiting connections now (a test that moved the clock)."""
        for source in list(self._sources):
            self._drain(source)

    # --- what a Slot calls ---------------------------------------------------------------

    def _take(self, source: str) -> asyncio.Future[None] | None:
        state = self._state(source)
        if not state.waiters and self._spend(state):
            return None
        HANDSHAKES_THROTTLED.labels(self.name, "delayed").inc()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        self._schedule(source, state)
        return waiter

    def _leave(self, source: str, waiter: asyncio.Future[None] | None, refund: bool) -> None:
        state = self._sources.get(source)
        if state is None:
            return
        state.pending -= 1
        if waiter is not None and not waiter.done():
            waiter.cancel()
            state.waiters.remove(waiter)
        if refund:
            self._refill(state)
            state.tokens = [min(float(r.burst), t + 1.0) for r, t in zip(self.rates, state.tokens, strict=True)]
        self._drain(source)

    # --- buckets ---------------------------------------------------------------------------

    def _state(self, source: str) -> _Source:
        state = self._sources.get(source)
        if state is None:
            if len(self._sources) >= MAX_TRACKED:
                self._forget_idle()
            state = _Source(tokens=[float(r.burst) for r in self.rates], updated=self._now())
            self._sources[source] = state
        return state

    def _now(self) -> float:
        return self.clock.now().timestamp() if self.clock is not None else time.monotonic()

    def _refill(self, state: _Source) -> None:
        now = self._now()
        elapsed = max(0.0, now - state.updated)
        state.tokens = [min(float(r.burst), t + elapsed * r.per_second)
                        for r, t in zip(self.rates, state.tokens, strict=True)]
        state.updated = now

    def _spend(self, state: _Source) -> bool:
        self._refill(state)
        if any(t < 1.0 for t in state.tokens):
            return False
        state.tokens = [t - 1.0 for t in state.tokens]
        return True

    def _drain(self, source: str) -> None:
        """Give tokens to waiters in order; wake again when the next one is due."""
        state = self._sources.get(source)
        if state is None:
            return
        while state.waiters and self._spend(state):
            state.waiters.popleft().set_result(None)
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if state.waiters:
            self._schedule(source, state)
        elif state.pending == 0 and self._full(state) and state.logged_at is None:
            del self._sources[source]

    def _schedule(self, source: str, state: _Source) -> None:
        if state.timer is not None:
            return
        self._refill(state)
        due = max((1.0 - t) / r.per_second for r, t in zip(self.rates, state.tokens, strict=True))
        state.timer = asyncio.get_running_loop().call_later(
            max(0.001, due), self._tick, source)

    def _tick(self, source: str) -> None:
        state = self._sources.get(source)
        if state is not None:
            state.timer = None
        self._drain(source)

    def _full(self, state: _Source) -> bool:
        self._refill(state)
        return all(t >= r.burst for r, t in zip(self.rates, state.tokens, strict=True))

    def _forget_idle(self) -> None:
        now = self._now()
        for source, state in list(self._sources.items()):
            if (state.pending == 0 and self._full(state)
                    and (state.logged_at is None or now - state.logged_at >= LOG_EVERY)):
                del self._sources[source]

    def _refused(self, source: str, state: _Source) -> None:
        HANDSHAKES_THROTTLED.labels(self.name, "refused").inc()
        state.refused += 1
        now = self._now()
        if state.logged_at is None or now - state.logged_at >= LOG_EVERY:
            log.warning("%s: refusing new connections from %s: it has %d unauthenticated "
                        "connections pending (connection_limits.max_unauthenticated_per_source);"
                        " %d refused since the last such line (one a minute)", self.name, source,
                        self.max_pending, state.refused)
            state.logged_at = now
            state.refused = 0


class Slot:
    """One connection's place among its source's pending connections."""

    def __init__(self, throttle: Throttle, source: str) -> None:
        self.throttle = throttle
        self.source = source
        self._waiter: asyncio.Future[None] | None = None
        self._took = False
        self._left = False

    def take(self) -> asyncio.Future[None] | None:
        """Spend a token: None when it was spent now, else a future done when it is."""
        if self._took or self._left:
            return None
        self._took = True
        self._waiter = self.throttle._take(self.source)
        return self._waiter

    async def ready(self) -> None:
        """Wait for this connection's token (spending it)."""
        waiter = self.take()
        if waiter is not None:
            await waiter

    def move(self, host: str) -> bool:
        """Count this connection under another source (the user's address a proxy vouched
        for); False, and no longer pending anywhere, when that source has too many."""
        if self._took:
            raise RuntimeError("a slot moves before it takes its token")
        other = self.throttle.enter(host)
        self.release()
        if other is None:
            return False
        self.source, self._left = other.source, False
        other._left = True  # its pending count is now this slot's
        return True

    def authenticated(self) -> None:
        """Stop counting as pending and give the token back: the peer proved who it is."""
        waiter = self._waiter
        self._leave(refund=self._took and (waiter is None or (waiter.done()
                                                               and not waiter.cancelled())))

    def handshake_done(self) -> None:
        """Stop counting as pending, keeping the token spent (TLS without a client cert)."""
        self._leave(refund=False)

    def release(self) -> None:
        """Stop counting as pending (closed, or refused): idempotent."""
        self._leave(refund=False)

    def _leave(self, refund: bool) -> None:
        if self._left:
            return
        self._left = True
        self.throttle._leave(self.source, self._waiter, refund)


__all__ = ["DEFAULT_MAX_PENDING", "DEFAULT_RATES", "Rate", "Slot", "Throttle", "source_of"]
