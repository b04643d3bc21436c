"""What a root cluster's user may be on a leaf: their roles there, mapped through the leaf's role map.

A leaf trusts the root's certificate authorities, not the root's roles: the root says which roles
its user holds, the leaf's admin decides (in the trusted cluster's `role_map`) which of the
leaf's own roles each becomes, and only those leaf roles decide access on the leaf. A root role
no mapping matches grants nothing here. Pure (no I/O), as Teleport's role map: a `remote` of
`^...$` is a regular expression, anything else a glob (`*` any run of characters, each `*` a
capture), and a `local` takes the captures as `$1` or `${1}`, as Go's `Regexp.Expand` does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from teleport.errors import BadParameter
from teleport.types.trusted import RoleMapping

#: A reference in a local role: `$$`, `${name}` or `$name` (letters, digits, `_`), as Go reads it.
_REFERENCE = re.compile(r"\$(?:(\$)|\{(\w+)\}|(\w+))")


@functools.lru_cache(maxsize=256)
def _pattern(remote: str) -> re.Pattern[str]:
    """Compile a mapping's `remote`: `^...$` as written, else a glob whose `*`s capture."""
    if remote.startswith("^") and remote.endswith("$"):
        try:
            return re.compile(remote)
        except re.error as err:
            raise BadParameter(f"role_map remote {remote!r} is not a valid regular expression: "
                               f"{err}") from None
    return re.compile("(.*)".join(re.escape(part) for part in remote.split("*")))


def _expand(template: str, match: re.Match[str]) -> str:
    """Fill a local role with the match's captures; a group that did not take part is ""."""

    def group(ref: re.Match[str]) -> str:
        if ref.group(1):
            return "$"
        name = ref.group(2) or ref.group(3)
        if name.isascii() and name.isdigit() and (name == "0" or not name.startswith("0")):
            index = int(name)
            return (match.group(index) or "") if index <= (match.re.groups or 0) else ""
        named = match.re.groupindex.get(name)
        return (match.group(named) or "") if named is not None else ""

    return _REFERENCE.sub(group, template)


def map_roles(role_map: Sequence[RoleMapping], remote_roles: Sequence[str]) -> list[str]:
    """Return the local roles a root user's roles map to, each once, in first-seen order.

    No remote role at all counts as one empty role, which only a pattern like `*` matches (a
    root user may hold none and still be mapped). Raises BadParameter for an invalid regular
    expression only; `check_role_map` refuses those before a role map is stored.
    """
    roles: dict[str, None] = {}
    for mapping in role_map:
        pattern = _pattern(mapping.remote)
        for remote in remote_roles or [""]:
            match = pattern.fullmatch(remote)
            if match is None:
                continue
            for local in mapping.local:
                expanded = _expand(local, match)
                if expanded:
                    roles[expanded] = None
    return list(roles)


def check_role_map(role_map: Sequence[RoleMapping]) -> None:
    """Refuse a role map with an invalid regular expression or a `remote` mapped twice."""
    seen: set[str] = set()
    for mapping in role_map:
        if mapping.remote in seen:
            raise BadParameter(f"role_map remote {mapping.remote!r} is mapped twice: "
                               "list its local roles in one mapping")
        seen.add(mapping.remote)
        _pattern(mapping.remote)


def fixed_local_roles(role_map: Sequence[RoleMapping]) -> set[str]:
    """Return the local roles named outright (no `$`), which must exist on the leaf."""
    return {local for mapping in role_map for local in mapping.local if "$" not in local}
