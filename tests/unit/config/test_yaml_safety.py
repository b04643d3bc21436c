"""The one YAML loader (issue 9, finding 13): no aliases, no control characters, one line each."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from teleport.config import parse_file_config, yamlsafe
from teleport.errors import BadParameter
from teleport.types.codec import parse_yaml

# The audit's 498-byte "billion laughs": nine levels of nine aliases, 9^9 strings once expanded.
ALIAS_BOMB = "teleport:\n  nodename: x\n" + "".join(
    f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9 if prev else ['"lol"'] * 9) + "]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi", strict=True))


def _config_error(text: str) -> str:
    with pytest.raises(BadParameter) as info:
        parse_file_config(text, "teleport.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_alias_bomb_is_refused_at_once_with_its_line() -> None:
    assert len(ALIAS_BOMB) < 600
    started = time.monotonic()
    message = _config_error(ALIAS_BOMB)
    assert time.monotonic() - started < 1
    assert message.startswith("teleport.yaml:3: ") and "aliases" in message


@pytest.mark.parametrize("text", [
    "teleport:\n  nodename: &name x\n",  # an anchor alone
    "defaults: &d {severity: INFO}\nteleport:\n  log:\n    <<: *d\n",  # a merge key
])
def test_anchors_and_aliases_are_refused(text: str) -> None:
    assert "YAML anchors and aliases" in _config_error(text)


@pytest.mark.parametrize(("text", "line", "char"), [
    ("teleport:\n  nodename: a\x01b\n", 2, "U+0001"),
    ("teleport:\n  nodename: x\n\x1b[31m\n", 3, "U+001B"),
    ("teleport:\n  nodename: a\x7fb\n", 2, "U+007F"),
    ("teleport:\n  nodename: a\x85b\n", 2, "U+0085"),
    ('teleport:\n  nodename: "a\\x07b"\n', 2, "U+0007"),  # escaped in a quoted value
    ('teleport:\n  nodename: "a\\eb"\n', 2, "U+001B"),
])
def test_control_characters_are_refused_with_their_line(text: str, line: int, char: str) -> None:
    message = _config_error(text)
    assert message.startswith(f"teleport.yaml:{line}: ") and f"control character {char}" in message
    assert "ReaderError" not in message


def test_tabs_newlines_and_unicode_text_are_still_fine() -> None:
    config = parse_file_config("teleport:\n  nodename: ünïcødé-host # comment\t\r\n")
    assert config.teleport.nodename == "ünïcødé-host"


def test_load_all_parses_every_document_before_returning_any() -> None:
    good = "kind: user\nversion: v2\nmetadata: {name: a}\nspec: {roles: [admin]}\n"
    assert len(yamlsafe.load_all(good + "---\n" + good, "f.yaml")) == 2
    with pytest.raises(BadParameter, match=r"^f\.yaml:7: invalid YAML: YAML anchors"):
        yamlsafe.load_all(good + "---\nkind: user\nmetadata: &m {name: b}\n", "f.yaml")
    with pytest.raises(BadParameter, match=r"^f\.yaml:7: invalid YAML: mapping values"):
        yamlsafe.load_all(good + "---\nkind: user\n  bad: indent: here\n", "f.yaml")


def test_tctl_resources_go_through_the_same_loader(tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match=r"^users\.yaml:1: control character U\+0007"):
        parse_yaml("kind: user\x07\n", "users.yaml")
    with pytest.raises(BadParameter, match=r"^users\.yaml:2: .*aliases"):
        parse_yaml(ALIAS_BOMB.replace("teleport:\n  nodename: x\n", "kind: user\n"), "users.yaml")
