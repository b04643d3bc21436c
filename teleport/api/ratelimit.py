"""A token bucket per client address, for the one API call that needs no certificate."""

from __future__ import annotations

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
