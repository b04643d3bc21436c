"""Terminal window sizes a client may ask for, clamped the same way on nodes and proxies."""

from __future__ import annotations

#: The largest terminal we set up. The kernel keeps window sizes in 16 bits, and a client asking
#: for 65,536 columns used to fail after openpty(), leaking both descriptors; no screen is
#: anywhere near this, so larger requests are clamped rather than refused.
MAX_TERM_CELLS = 10_000
#: Pixel sizes are 16-bit too.
MAX_PIXELS = 0xFFFF
DEFAULT_TERM_SIZE = (80, 24)


def clamp_term_size(cols: int, rows: int) -> tuple[int, int]:
    """Return a window size the kernel accepts: 0 means the default, the rest within 1..10000."""
    return (min(cols, MAX_TERM_CELLS) if cols > 0 else DEFAULT_TERM_SIZE[0],
            min(rows, MAX_TERM_CELLS) if rows > 0 else DEFAULT_TERM_SIZE[1])
