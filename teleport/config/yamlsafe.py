"""The one way we read YAML that people hand us: `teleport.yaml` and `tctl create` files.

PyYAML's SafeLoader still expands aliases, so a few hundred bytes of nested `*a` references
("billion laughs") grow into gigabytes, and it reports a control character as a `ReaderError`
without a line. Our loader refuses anchors and aliases outright (no config or resource needs
them) and any control character, in the text or escaped in a value, each as one line:
`file:line: problem`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.error import Mark

from teleport.errors import BadParameter

# What the YAML reader refuses, plus DEL and the C1 controls it lets through (NEL included).
CONTROL = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# In values, escapes like "\x01" or "\e" can bring controls back; tab and newline are text.
_VALUE_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
NO_ALIASES = "YAML anchors and aliases (&name, *name) are not supported: write the value out"


def control_character(text: str) -> tuple[int, str] | None:
    """Return the line and name of the first control character in text, or None."""
    found = CONTROL.search(text)
    if found is None:
        return None
    return text.count("\n", 0, found.start()) + 1, _name(found.group())


def _name(char: str) -> str:
    return f"U+{ord(char):04X}"


class SafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses anchors, aliases and control characters in values."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        mark: Mark | None = event.start_mark
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, NO_ALIASES, mark)
        if isinstance(event, yaml.ScalarEvent) and (bad := _VALUE_CONTROL.search(event.value)):
            raise ComposerError(None, None, f"control character {_name(bad.group())} in a value",
                                mark)
        return super().compose_node(parent, index)


def check_text(text: str, source: str) -> None:
    """Refuse a control character in the raw text, naming its line (PyYAML names none)."""
    found = control_character(text)
    if found is not None:
        line, name = found
        raise BadParameter(f"{source}:{line}: control character {name} is not allowed in YAML")


def error_line(err: yaml.YAMLError, text: str) -> int:
    """Return the 1-based line a PyYAML error is about."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(err, "position", 0)  # a ReaderError (bad character) has no mark
    return text.count("\n", 0, position) + 1


def problem(err: yaml.YAMLError) -> str:
    """Describe a PyYAML error in one line, without its marks."""
    what = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    return " ".join((f"{what} ({context})" if context else str(what)).split())


def load_all(text: str, source: str) -> list[Any]:
    """Parse every document of text into plain data; empty documents are left out.

    Everything is parsed before anything is returned, so a caller never acts on the first
    documents of a file whose last one is broken.
    """
    check_text(text, source)
    loader = SafeLoader(text)
    try:
        docs = []
        while loader.check_data():
            doc = loader.get_data()
            if doc is not None:
                docs.append(doc)
        return docs
    except yaml.YAMLError as err:
        raise BadParameter(f"{source}:{error_line(err, text)}: invalid YAML: {problem(err)}") from None
    finally:
        loader.dispose()
