"""A node keeps its last revocation list and roles on disk for a restart during an auth outage."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from teleport.auth.access import Revocations, RevokedUser
from teleport.service.revocations import RevocationWatch
from teleport.types.presets import PRESETS
from teleport.utils.clock import FakeClock


def _watch(path: Path) -> RevocationWatch:
    client: Any = None  # never asked: only what is kept on disk is under test
    return RevocationWatch(client, FakeClock(), state=path)


def test_the_last_answer_is_kept_private_and_read_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "data" / "cache" / "access.json"
    first = _watch(path)
    assert first.roles is None  # nothing kept yet: the node refuses until it fetches
    first.current = Revocations(users=[RevokedUser(user="joe", reason="user 'joe' was deleted")])
    first.roles = {r.metadata.name: r for r in PRESETS}
    first._keep()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    inode = path.stat().st_ino
    first._keep()  # nothing changed: not written again
    assert path.stat().st_ino == inode

    again = _watch(path)
    assert again.roles == first.roles and again.current == first.current


def test_an_unreadable_kept_answer_is_ignored_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "access.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, "teleport.revocations"):
        watch = _watch(path)
    assert watch.roles is None and watch.current == Revocations()
    assert "ignoring the kept revocation list" in caplog.text
