"""Go-style durations (`1h0m0s`, `5m`, `90s`) as the manual and Teleport write them."""

from __future__ import annotations

import re
from datetime import timedelta

from teleport.errors import BadParameter

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
#: Go's time.Duration limit (2^63 ns, about 292 years): longer durations are refused at parse
#: time instead of overflowing later, deep inside whatever uses them.
MAX_DURATION = timedelta(microseconds=(2**63 - 1) // 1000)
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """Parse `1h0m0s`-style text; a bare `0` is zero. Raise BadParameter otherwise."""
    s = text.strip()
    if s in ("0", ""):
        if s == "":
            raise BadParameter("empty duration")
        return timedelta(0)
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    pos, seconds = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise BadParameter(f"invalid duration {text!r} (expected e.g. 1h0m0s, 5m, 30s)")
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not seconds <= MAX_DURATION.total_seconds():  # also catches inf from huge numbers
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise BadParameter(f"duration {shown!r} is too long (at most {format_duration(MAX_DURATION)})")
    return timedelta(seconds=sign * seconds)


def format_duration(value: timedelta) -> str:
    """Format like Go's time.Duration.String for whole seconds: `1h0m0s`, `5m0s`, `30s`."""
    total = int(value.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"
