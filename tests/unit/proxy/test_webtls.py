"""Which configured certificate covers the name a browser asks for."""

from __future__ import annotations

import pytest

from teleport.proxy.webtls import covers


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("teleport.example.com", "teleport.example.com", True),
    ("teleport.example.com", "TELEPORT.example.com.", True),
    ("teleport.example.com", "example.com", False),
    ("*.example.com", "teleport.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("*.example.com", ".example.com", False),
])
def test_a_name_is_covered_exactly_or_by_a_one_label_wildcard(pattern: str, name: str,
                                                               expected: bool) -> None:
    assert covers(pattern, name) is expected
