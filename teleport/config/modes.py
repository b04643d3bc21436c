"""`auth_service.session_recording`: the mode, and the one function each question about it has.

The auth server announces the mode in its ping answer; nodes and proxies read it back with
`parse_mode` and ask `records_at` whether they record and `streams` how. Every place that
decides about recording goes through these, so a new mode is added here and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class SessionRecording(StrEnum):
    NODE = "node"
    PROXY = "proxy"
    OFF = "off"
    NODE_SYNC = "node-sync"
    PROXY_SYNC = "proxy-sync"


#: Where a host records: its `records_in` value (a node records at "node", a proxy at "proxy").
Recorder = Literal["node", "proxy"]

_AT: dict[SessionRecording, Recorder | None] = {
    SessionRecording.NODE: "node", SessionRecording.NODE_SYNC: "node",
    SessionRecording.PROXY: "proxy", SessionRecording.PROXY_SYNC: "proxy",
    SessionRecording.OFF: None,
}


def parse_mode(text: object) -> SessionRecording:
    """Read a mode from the wire; an unknown one records at the node, keeping the evidence."""
    try:
        return SessionRecording(str(text or "node"))
    except ValueError:
        return SessionRecording.NODE


def records_at(mode: SessionRecording) -> Recorder | None:
    """Return which host records sessions in this mode, or None when nothing is recorded."""
    return _AT[mode]


def streams(mode: SessionRecording) -> bool:
    """Tell whether recordings go to the auth server as they happen (`*-sync`), not at the end."""
    return mode in (SessionRecording.NODE_SYNC, SessionRecording.PROXY_SYNC)
