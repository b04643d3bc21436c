"""Read teleport.yaml into a FileConfig; every problem is one line, `file:line: key.path: problem`.

The YAML is composed into its node tree first: the nodes carry line numbers, and pydantic's
error locations are walked through them to find the line a mistake is on. Scalars are handed
to the schema as the text the user wrote, so YAML 1.1 never turns `off` into False or
`1.10` into 1.1 behind the user's back; the schema parses numbers and yes/no itself.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from teleport.config import yamlsafe
from teleport.config.schema import CONFIG_ERROR, FileConfig
from teleport.errors import BadParameter

Loc = tuple[str | int, ...]

#: Placeholders of the manual's sample config, and what to write instead.
PLACEHOLDERS = {
    "NODE_NAME": "this host's name",
    "TELEPORT_PUBLIC_DNS_NAME": "the DNS name users reach the proxy by",
    "xxxx-token-xxxx": "a secret token of your own (or one from 'tctl tokens add')",
    "ca-pin-hash-goes-here": "the CA pin 'tctl status' prints on the auth server",
}

_NULL_TAG = "tag:yaml.org,2002:null"
_EXPECTED = {
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "path_type": "a path",
}


def load_file_config(path: str | Path) -> FileConfig:
    """Read and validate a config file, naming the file in every error."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadParameter(f"{p}: config file not found") from None
    except UnicodeDecodeError:
        raise BadParameter(f"{p}: config file is not UTF-8 text") from None
    except OSError as err:
        raise BadParameter(f"{p}: cannot read config file: {err.strerror}") from None
    return parse_file_config(text, str(p))


def parse_file_config(text: str, source: str = "<config>") -> FileConfig:
    """Validate YAML text so that a user sees the exact line and key of any mistake."""
    root = _compose(text, source)
    if root is None:
        return FileConfig()
    if not isinstance(root, yaml.MappingNode):
        raise BadParameter(_format(source, _line(root), (),
                                   f"expected a mapping of sections, got {_describe(root)}"))
    data = _plain(root, (), source, frozenset())
    try:
        return FileConfig.model_validate(data)
    except ValidationError as err:
        located = [_locate(e, root) for e in err.errors()]
        line, loc, problem = min(located, key=lambda item: item[0])
        raise BadParameter(_format(source, line, loc, problem)) from None


def _format(source: str, line: int, loc: Loc, problem: str) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return f"{source}:{line}: {path}: {problem}" if path else f"{source}:{line}: {problem}"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _describe(node: yaml.Node | None) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node is None or node.tag == _NULL_TAG:
        return "nothing"
    return repr(node.value)


# --- YAML syntax --------------------------------------------------------------------------------


def _compose(text: str, source: str) -> yaml.Node | None:
    """Build the node tree, turning tabs and syntax errors into located one-liners.

    The loader refuses aliases (a few hundred bytes of them expand to gigabytes) and control
    characters, which PyYAML reports without a line.
    """
    bad = yamlsafe.control_character(text)
    if bad is not None:
        line, name = bad
        readable = yamlsafe.CONTROL.sub(" ", text)  # so the section it is in can be named
        raise BadParameter(_format(source, line, _path_before(readable, line),
                                   f"control character {name} is not allowed"))
    tab = _first_tab_indent(text)
    loader = yamlsafe.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as err:
        line = yamlsafe.error_line(err, text)
        if tab is not None and tab <= line:
            raise _tab_error(text, tab, source) from None
        message = f"invalid YAML: {yamlsafe.problem(err)}"
        raise BadParameter(_format(source, line, _path_before(text, line), message)) from None
    finally:
        loader.dispose()
    if tab is not None:
        raise _tab_error(text, tab, source)
    return root


def _first_tab_indent(text: str) -> int | None:
    """Find the first line indented with a tab, which YAML forbids and editors hide."""
    for number, line in enumerate(text.splitlines(), start=1):
        body = line.lstrip(" \t")
        if body and not body.startswith("#") and "\t" in line[: len(line) - len(body)]:
            return number
    return None


def _tab_error(text: str, line: int, source: str) -> BadParameter:
    return BadParameter(_format(source, line, _path_before(text, line),
                                "tab used for indentation; indent with spaces"))


@dataclass
class _Frame:
    is_map: bool
    key: str | None = None
    in_value: bool = False
    index: int = -1


def _path_before(text: str, line: int) -> Loc:
    """Name the section a broken line is in, from the parse events that came before it."""
    stack: list[_Frame] = []

    def value_done() -> None:
        if stack and stack[-1].is_map:
            stack[-1].in_value = False

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if event.start_mark is None or event.start_mark.line + 1 >= line:
                break
            if isinstance(event, yaml.CollectionEndEvent):
                stack.pop()
                value_done()
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            parent = stack[-1] if stack else None
            if parent is not None and parent.is_map and not parent.in_value:
                # a key; complex (non-scalar) keys are rejected later, so only keep the stack even
                parent.key = event.value if isinstance(event, yaml.ScalarEvent) else "?"
                parent.in_value = True
                if isinstance(event, yaml.CollectionStartEvent):
                    stack.append(_Frame(isinstance(event, yaml.MappingStartEvent)))
                continue
            if parent is not None and not parent.is_map:
                parent.index += 1
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append(_Frame(isinstance(event, yaml.MappingStartEvent)))
            else:
                value_done()
    except yaml.YAMLError:
        pass
    loc: list[str | int] = []
    for frame in stack:
        if frame.is_map and frame.in_value and frame.key is not None:
            loc.append(frame.key)
        elif not frame.is_map and frame.index >= 0:
            loc.append(frame.index)
    return tuple(loc)


# --- nodes to plain data -------------------------------------------------------------------------


def _plain(node: yaml.Node, loc: Loc, source: str, active: frozenset[int]) -> Any:
    """Turn nodes into dicts, lists and strings; a key with no value counts as left out."""
    if isinstance(node, yaml.ScalarNode):
        _check_placeholder(node, loc, source)
        return None if node.tag == _NULL_TAG else node.value
    if id(node) in active:
        raise BadParameter(_format(source, _line(node), loc, "recursive YAML alias"))
    active = active | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*loc, i), source, active) for i, item in enumerate(node.value)]
    result: dict[str, Any] = {}
    seen: set[str] = set()
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise BadParameter(_format(source, _line(key_node), loc, "keys must be plain text"))
        key = key_node.value
        if key in seen:
            raise BadParameter(_format(source, _line(key_node), (*loc, key), "duplicate key"))
        seen.add(key)
        value = _plain(value_node, (*loc, key), source, active)
        if value is not None:
            result[key] = value
    return result


def _check_placeholder(node: yaml.ScalarNode, loc: Loc, source: str) -> None:
    """Refuse the sample config's placeholders: a cluster must not start with a known token."""
    for placeholder, replacement in PLACEHOLDERS.items():
        if placeholder in str(node.value):
            raise BadParameter(_format(
                source, _line(node), loc,
                f"{placeholder} is a placeholder from the sample config: replace it with "
                f"{replacement}"))


# --- pydantic errors to lines --------------------------------------------------------------------


def _locate(error: ErrorDetails, root: yaml.Node) -> tuple[int, Loc, str]:
    """Walk an error's loc through the node tree to the line and key it is about."""
    node: yaml.Node = root
    key_node: yaml.Node | None = None
    walked: list[str | int] = []
    found = True
    for part in error["loc"]:
        if isinstance(part, str) and isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value
                         if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            walked.append(part)
            if pair is None:
                found = False
                break
            key_node, node = pair
        elif isinstance(part, int) and isinstance(node, yaml.SequenceNode) and part < len(
                node.value):
            walked.append(part)
            key_node, node = None, node.value[part]
        else:
            break
    line = _line(key_node if key_node is not None else node)
    return line, tuple(walked), _problem(error, node if found else None)


def _problem(error: ErrorDetails, node: yaml.Node | None) -> str:
    kind = error["type"]
    if kind == CONFIG_ERROR:
        return str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown key" + _suggestion(tuple(error["loc"]))
    if kind == "missing":
        return "needs a value" if node is not None else "missing required key"
    if kind in ("literal_error", "enum"):
        return f"expected {error.get('ctx', {}).get('expected')}, got {_describe(node)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(node)}"
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


def _suggestion(loc: Loc) -> str:
    """Point at the key a typo probably meant, e.g. `auth_server` for `auth_servers`."""
    model = _model_at(loc[:-1])
    if model is None or not isinstance(loc[-1], str):
        return ""
    # 0.85 catches `auth_server` and `listen_address` but not `app_service` -> `auth_service`
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.85)
    return f", did you mean '{close[0]}'?" if close else ""


def _model_at(loc: Loc) -> type[BaseModel] | None:
    annotation: Any = FileConfig
    for part in loc:
        if isinstance(part, int):
            continue
        model = _find_model(annotation)
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
    return _find_model(annotation)


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None
