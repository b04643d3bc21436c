"""Rate limits for calls that carry no certificate: the proxy's logins and the auth API's joins.

`RateLimiter` is a token bucket per key that every request spends from (the proxy's web
logins). `JoinLimiter` limits *failed* attempts per source address instead, so a fleet of
hosts behind one NAT address joins as fast as the auth server signs, while a guesser gets a
handful of wrong tokens a minute; one shared bucket bounds all joins together. A source that
spent its failure budget is refused even with a valid token (as Teleport's limiter does): a
guess that succeeds there would otherwise tell the guesser it was right.
"""

from __future__ import annotations

from dataclasses import dataclass

from teleport.api.throttle import Rate, source_of
from teleport.errors import LimitExceeded
from teleport.utils.clock import Clock

MAX_TRACKED = 10_000


class RateLimiter:
    def __init__(self, per_minute: int, burst: int, clock: Clock) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated at)

    def check(self, key: str) -> None:
        """Spend one token for key, or raise LimitExceeded."""
        now = self.clock.now().timestamp()
        tokens, updated = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens < 1.0:
            raise LimitExceeded("too many requests, slow down and try again in a minute")
        if len(self._buckets) >= MAX_TRACKED and key not in self._buckets:
            # Forget buckets that have refilled: they carry no state worth keeping.
            full = [k for k, (t, u) in self._buckets.items()
                    if t + (now - u) * self.rate >= self.burst]
            for k in full:
                del self._buckets[k]
        self._buckets[key] = (tokens - 1.0, now)


@dataclass(frozen=True)
class JoinLimits:
    """`auth_service.join_limits`: failed attempts per source, and all join requests."""

    failed_per_source: Rate = Rate(period=60.0, average=10, burst=10)
    #: Both join requests (CA, then the join) of every source; ~100 hosts a second.
    total: Rate = Rate(period=1.0, average=200, burst=1000)


DEFAULT_JOIN_LIMITS = JoinLimits()


@dataclass
class _Source:
    tokens: float
    updated: float
    #: Requests admitted against this budget and not finished yet.
    in_flight: int = 0


class JoinAttempt:
    """One admitted anonymous request: say `failed()` if it was refused, then `close()`."""

    def __init__(self, limiter: JoinLimiter, source: str, reserved: _Source | None) -> None:
        self._limiter = limiter
        self._source = source
        self._reserved = reserved

    def failed(self) -> None:
        """Charge a failure (wrong or expired token, malformed request) to the source."""
        self._limiter._fail(self._source)

    def close(self) -> None:
        if self._reserved is not None:
            self._reserved.in_flight -= 1
            self._reserved = None


class JoinLimiter:
    """Failed anonymous attempts per source (IPv4 address or IPv6 /64), and all attempts."""

    def __init__(self, limits: JoinLimits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        #: Only sources with a failure not yet refilled: a clean source costs no memory.
        self._sources: dict[str, _Source] = {}
        self._total = float(limits.total.burst)
        self._total_updated = self._now()

    def admit(self, host: str) -> JoinAttempt:
        """Let one anonymous request from host in, or raise LimitExceeded (429)."""
        source = source_of(host)
        state = self._refilled(source)
        if state is not None and state.tokens - state.in_flight < 1.0:
            raise LimitExceeded("too many failed join attempts from this address, "
                                "try again in a minute")
        self._refill_total()
        if self._total < 1.0:
            raise LimitExceeded("the auth server is taking too many joins, try again in a moment")
        self._total -= 1.0
        if state is not None:
            # A source that failed lately has each request in flight counted against what it
            # has left, so parallel guesses cannot overrun the budget before they fail.
            state.in_flight += 1
        return JoinAttempt(self, source, state)

    def blocked(self, host: str) -> bool:
        """Whether host's source is out of failures (for tests and the dump)."""
        state = self._refilled(source_of(host))
        return state is not None and state.tokens - state.in_flight < 1.0

    def _fail(self, source: str) -> None:
        rate = self.limits.failed_per_source
        state = self._refilled(source)
        if state is None:
            if len(self._sources) >= MAX_TRACKED:
                self._forget()
            state = self._sources[source] = _Source(float(rate.burst), self._now())
        # Failures past the budget (parallel ones from a clean source) are owed, up to one
        # more burst: a fleet that used a stale token is not locked out for hours.
        state.tokens = max(-float(rate.burst), state.tokens - 1.0)

    def _refilled(self, source: str) -> _Source | None:
        state = self._sources.get(source)
        if state is None:
            return None
        rate = self.limits.failed_per_source
        now = self._now()
        state.tokens = min(float(rate.burst),
                           state.tokens + max(0.0, now - state.updated) * rate.per_second)
        state.updated = now
        if state.tokens >= rate.burst and state.in_flight == 0:
            del self._sources[source]  # clean again
            return None
        return state

    def _refill_total(self) -> None:
        now = self._now()
        total = self.limits.total
        self._total = min(float(total.burst),
                          self._total + max(0.0, now - self._total_updated) * total.per_second)
        self._total_updated = now

    def _forget(self) -> None:
        """Make room: drop refilled sources, else the one that failed longest ago."""
        for source in list(self._sources):
            self._refilled(source)
        if len(self._sources) >= MAX_TRACKED:
            oldest = min(self._sources, key=lambda s: self._sources[s].updated)
            del self._sources[oldest]

    def _now(self) -> float:
        return self.clock.now().timestamp()
