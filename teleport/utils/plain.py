"""Decode JSON answers into the plain dataclasses of `api.listing_models`, checking each field.

The listings are flat: strings, numbers, booleans, lists, string-keyed objects and nested
listings, so checking them takes a few lines and nothing at import. (pydantic's import and
schema build were more than half of `tsh ls`'s start-up; msgspec's import alone, for its uuid,
decimal and platform modules, a tenth.) As with the pydantic answers, unknown fields are
ignored (a newer server) and defaults fill what an older one leaves out.
"""

from __future__ import annotations

from dataclasses import MISSING, fields, is_dataclass
from typing import Any, get_args, get_origin, get_type_hints

_SCALARS: dict[Any, tuple[str, tuple[type, ...]]] = {
    str: ("string", (str,)), int: ("integer", (int,)), float: ("number", (int, float)),
    bool: ("boolean", (bool,)),
}
_HINTS: dict[type, dict[str, Any]] = {}


class Mismatch(ValueError):
    """The answer does not fit: `where` is the field's path (`0.labels.env`), empty for the
    whole body."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where or 'body'}: {problem}")
        self.where = where
        self.problem = problem


def is_plain(answer: Any) -> bool:
    """Whether `answer` is a listing (a dataclass) or a list of them."""
    args = get_args(answer)
    return is_dataclass(args[0] if get_origin(answer) is list and args else answer)


def convert(data: Any, answer: Any, where: str = "") -> Any:
    """Return `data` (parsed JSON) as `answer`; raise Mismatch naming the first field that does
    not fit."""
    origin = get_origin(answer)
    if origin is list:
        _expect(data, list, "array", where)
        (item,) = get_args(answer)
        return [convert(value, item, _at(where, i)) for i, value in enumerate(data)]
    if origin is dict:
        _expect(data, dict, "object", where)
        _, item = get_args(answer)
        return {key: convert(value, item, _at(where, key)) for key, value in data.items()}
    if isinstance(answer, type) and is_dataclass(answer):
        _expect(data, dict, "object", where)
        hints = _HINTS.get(answer) or _HINTS.setdefault(answer, get_type_hints(answer))
        given: dict[str, Any] = {}
        for field in fields(answer):
            if field.name in data:
                given[field.name] = convert(data[field.name], hints[field.name],
                                            _at(where, field.name))
            elif field.default is MISSING and field.default_factory is MISSING:
                raise Mismatch(where, f"missing field {field.name!r}")
        return answer(**given)
    name, kinds = _SCALARS[answer]  # KeyError: a listing field of a type not decoded here
    if not isinstance(data, kinds) or (isinstance(data, bool) and answer is not bool):
        raise Mismatch(where, f"expected {name}, got {_kind(data)}")
    return data


def _expect(data: Any, kind: type, name: str, where: str) -> None:
    if not isinstance(data, kind):
        raise Mismatch(where, f"expected {name}, got {_kind(data)}")


def _at(where: str, step: object) -> str:
    return f"{where}.{step}" if where else str(step)


def _kind(data: Any) -> str:
    """The JSON name of a parsed value's type."""
    if data is None:
        return "null"
    for name, kinds in _SCALARS.values():
        if isinstance(data, kinds) and (name == "boolean") == isinstance(data, bool):
            return name
    return "array" if isinstance(data, list) else "object" if isinstance(data, dict) else \
        type(data).__name__
