"""The one-line error a teleport.yaml text fails to load with, for the config tests."""

from __future__ import annotations

import pytest

from teleport.config import parse_file_config
from teleport.errors import BadParameter


def error_of(text: str) -> str:
    """Load text as teleport.yaml, expect BadParameter, and return its (single-line) message."""
    with pytest.raises(BadParameter) as info:
        parse_file_config(text, "teleport.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message
