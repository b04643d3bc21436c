"""`tsh play` and `tsh recordings ls`: list recorded sessions and replay them from the proxy.

The recording arrives as a stream of JSON lines (see `teleport.events.recording`) and is
replayed as it arrives, so a long session never sits in memory. A damaged recording is replayed
up to the damage, then reported on stderr with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator
from typing import Any

from teleport.api.listing_models import RecordingInfo
from teleport.client.profile import Profile
from teleport.client.webapi import WebClient
from teleport.errors import BadParameter
from teleport.events import recording as rec

EXIT_DAMAGED = 1
PAUSE_KEY = b" "


async def list_recordings(profile: Profile) -> list[RecordingInfo]:
    """Return the recorded sessions this login may play, oldest first."""
    async with WebClient.for_profile(profile) as web:
        return await web.list_recordings(profile.cluster)


@contextlib.asynccontextmanager
async def _replay_stream(profile: Profile, sid: str,
                         cluster: str) -> AsyncIterator[AsyncIterator[bytes]]:
    """The replay stream of a session of ours (from the proxy's web API), or of a leaf
    cluster's (from the leaf's auth server, as ourselves, through the proxy)."""
    if cluster and cluster != profile.cluster:
        from teleport.client.authapi import leaf_auth_client

        async with await leaf_auth_client(profile, cluster) as leaf:
            yield leaf.stream_recording(sid)
        return
    async with WebClient.for_profile(profile) as web:
        yield web.stream_recording(profile.cluster, sid)


async def session_events(profile: Profile, sid: str,
                         cluster: str = "") -> AsyncIterator[dict[str, Any]]:
    """Yield a recording's events as they arrive, `data` as bytes (cluster: a leaf's)."""
    rec.check_sid(sid)
    async with _replay_stream(profile, sid, cluster) as stream:
        pending = b""
        async for piece in stream:
            pending += piece
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield rec.from_wire_line(line)
        if pending.strip():
            yield {"event": rec.DAMAGED, "error": "the replay stream was cut short"}


def _damaged(sid: str, event: dict[str, Any]) -> int:
    print(f"ERROR: recording of session {sid} is damaged ({event.get('error', 'unknown')}); "
          "replayed up to the damage", file=sys.stderr)
    return EXIT_DAMAGED


async def print_json(profile: Profile, sid: str, cluster: str = "") -> int:
    """Print the session's events as one JSON array, output and input as text."""
    decoders = {kind: codecs.getincrementaldecoder("utf-8")("replace")
                for kind in (rec.PRINT, rec.INPUT)}
    code, first = 0, True
    sys.stdout.write("[")
    async for event in session_events(profile, sid, cluster):
        if isinstance(event.get("data"), bytes):
            event["data"] = decoders[event["event"]].decode(event["data"])
        sys.stdout.write(("\n" if first else ",\n") + json.dumps(event))
        first = False
        if event["event"] == rec.DAMAGED:
            code = _damaged(sid, event)
    sys.stdout.write("\n]\n")
    sys.stdout.flush()
    return code


class Pacer:
    """Keep the original timing, scaled by speed, minus the time spent paused."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise BadParameter(f"speed must be positive, got {speed}")
        self.speed = speed
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._paused_at: float | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()

    def toggle(self) -> None:
        """Pause, or resume where the replay stopped."""
        if self._paused_at is None:
            self._paused_at = self._loop.time()
            self._resumed.clear()
        else:
            self._start += self._loop.time() - self._paused_at
            self._paused_at = None
            self._resumed.set()

    async def wait_for(self, ms: int) -> None:
        """Return when the event at ms is due, checking for a pause every few ticks."""
        while True:
            await self._resumed.wait()
            left = self._start + ms / 1000 / self.speed - self._loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))


@contextlib.contextmanager
def _keys(pacer: Pacer) -> Iterator[None]:
    """Let the space bar pause and resume while stdin is a terminal."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd, termios.TCSANOW)
    loop = asyncio.get_running_loop()

    def on_key() -> None:
        with contextlib.suppress(OSError):
            if PAUSE_KEY in os.read(fd, 64):
                pacer.toggle()

    loop.add_reader(fd, on_key)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def play(profile: Profile, sid: str, speed: float = 1.0, cluster: str = "") -> int:
    """Write the session's output to this terminal with its original timing."""
    out = sys.stdout.buffer
    pacer = Pacer(speed)
    with _keys(pacer):
        async for event in session_events(profile, sid, cluster):
            if event["event"] == rec.DAMAGED:
                out.flush()
                return _damaged(sid, event)
            if event["event"] == rec.PRINT:
                await pacer.wait_for(int(event.get("ms", 0)))
                out.write(event["data"])
                out.flush()
    return 0
