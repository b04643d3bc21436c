"""Versions as Teleport writes them, and the rule that an auth server is never older by major."""

from __future__ import annotations

import pytest

from teleport.errors import BadParameter
from teleport.utils.versions import Version, newer_major, parse_version


@pytest.mark.parametrize(("text", "version"), [
    ("0.1.0", Version(0, 1, 0)), ("v4.3.10", Version(4, 3, 10)),
    ("13.0.0-rc.1", Version(13, 0, 0)), ("2.0.1+build.5", Version(2, 0, 1)),
])
def test_versions_parse(text: str, version: Version) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["", "1", "1.2", "1.2.3.4", "01.2.3", "x.y.z", "1.2.3 ",
                                  "1.2.3\n", "9999999999.0.0", "1.2.3-" + "a" * 65])
def test_anything_else_is_one_line_naming_it(text: str) -> None:
    with pytest.raises(BadParameter) as err:
        parse_version(text)
    assert "\n" not in str(err.value) and "is not a version (MAJOR.MINOR.PATCH)" in str(err.value)


def test_only_a_newer_major_is_newer() -> None:
    assert newer_major("1.0.0", "0.9.9")
    assert newer_major("v5.0.0-rc.1", "4.4.0")
    assert not newer_major("0.9.0", "0.1.0")  # a newer minor of the same major is fine
    assert not newer_major("4.4.0", "4.4.0")
    assert not newer_major("3.2.1", "4.0.0")  # older nodes are the normal upgrade order
