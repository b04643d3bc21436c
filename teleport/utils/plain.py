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
_PLANS: dict[type, list[tuple[str, Any, bool]]] = {}


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


def convert(data: Any, answer: Any) -> Any:
    """Return `data` (parsed JSON) as `answer`; raise Mismatch naming the first field that does
    not fit.

    The path to a field is built only on the way out of a mismatch: `tctl nodes ls` decodes
    ten thousand records, and a path string per field was most of the time.
    """
    scalar = _SCALARS.get(answer)
    if scalar is not None:
        name, kinds = scalar
        if not isinstance(data, kinds) or (data.__class__ is bool and answer is not bool):
            raise Mismatch("", f"expected {name}, got {_kind(data)}")
        return data
    origin = get_origin(answer)
    if origin is list:
        _expect(data, list, "array")
        (item,) = get_args(answer)
        return [_step(value, item, i) for i, value in enumerate(data)]
    if origin is dict:
        _expect(data, dict, "object")
        _, item = get_args(answer)
        return {key: _step(value, item, key) for key, value in data.items()}
    if isinstance(answer, type) and is_dataclass(answer):
        _expect(data, dict, "object")
        given: dict[str, Any] = {}
        for name, hint, required in _PLANS.get(answer) or _plan(answer):
            if name in data:
                given[name] = _step(data[name], hint, name)
            elif required:
                raise Mismatch("", f"missing field {name!r}")
        return answer(**given)
    raise KeyError(answer)  # a listing field of a type not decoded here


def _step(data: Any, answer: Any, step: object) -> Any:
    """Convert one element or field, naming it in front of a mismatch inside it."""
    try:
        return convert(data, answer)
    except Mismatch as err:
        raise Mismatch(f"{step}.{err.where}" if err.where else str(step), err.problem) from None


def _plan(cls: type) -> list[tuple[str, Any, bool]]:
    """Each field of a dataclass: its name, type and whether the JSON must carry it."""
    hints = get_type_hints(cls)
    plan = [(f.name, hints[f.name], f.default is MISSING and f.default_factory is MISSING)
            for f in fields(cls)]
    _PLANS[cls] = plan
    return plan


def _expect(data: Any, kind: type, name: str) -> None:
    if not isinstance(data, kind):
        raise Mismatch("", f"expected {name}, got {_kind(data)}")


def _kind(data: Any) -> str:
    """The JSON name of a parsed value's type."""
    if data is None:
        return "null"
    for name, kinds in _SCALARS.values():
        if isinstance(data, kinds) and (name == "boolean") == isinstance(data, bool):
            return name
    return "array" if isinstance(data, list) else "object" if isinstance(data, dict) else \
        type(data).__name__
