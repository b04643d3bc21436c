"""Recognise the scp server commands (`scp -t path`, `scp -f path`) for the `scp` audit event."""

from __future__ import annotations

import os
import shlex
from typing import Literal, NamedTuple


class ScpRequest(NamedTuple):
    #: "write" when files come to this node (`-t`), "read" when they leave it (`-f`).
    action: Literal["read", "write"]
    path: str


def parse_scp(command: str) -> ScpRequest | None:
    """Return what an scp server command transfers, or None for any other command."""
    try:
        args = shlex.split(command)
    except ValueError:
        return None
    if not args or os.path.basename(args[0]) != "scp":
        return None
    flags: set[str] = set()
    paths: list[str] = []
    for arg in args[1:]:
        if arg.startswith("-") and arg != "--" and not paths:
            flags.update(arg[1:])
        elif arg != "--":
            paths.append(arg)
    if ("t" in flags) == ("f" in flags) or len(paths) != 1:
        return None
    return ScpRequest("write" if "t" in flags else "read", paths[0])
