"""Component versions: parse `MAJOR.MINOR.PATCH` and apply Teleport's compatibility rule.

The rule (the manual's "Component Compatibility" and "Upgrade Sequence"): the auth server is
upgraded first, so it must be the same major version as the nodes and proxies it serves, or
newer. A node or proxy of a newer major version may speak a protocol or store a format the auth
server does not know, so it is refused at join and at every heartbeat, naming both versions.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from teleport.errors import BadParameter

#: Semantic versions as Teleport writes them, with an optional `v` and pre-release or build tail.
_VERSION = re.compile(r"v?(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(?:[-+][0-9A-Za-z.+-]{1,64})?")


class Version(NamedTuple):
    major: int
    minor: int
    patch: int


def parse_version(text: str) -> Version:
    """Read `1.2.3` (or `v1.2.3-rc.1`); BadParameter naming the text if it is not one."""
    found = _VERSION.fullmatch(text)
    if found is None:
        shown = text if len(text) <= 40 and text.isprintable() else repr(text[:40])
        raise BadParameter(f"{shown!r} is not a version (MAJOR.MINOR.PATCH)")
    return Version(int(found[1]), int(found[2]), int(found[3]))


def newer_major(component: str, auth: str) -> bool:
    """Tell whether `component` is of a newer major version than the auth server's `auth`,
    which the rule refuses; BadParameter if `component` is not a version."""
    return parse_version(component).major > parse_version(auth).major
