"""Log lines as the manual shows them, JSON when asked, to the configured place."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from teleport.errors import BadParameter
from teleport.service import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_text_lines_carry_level_and_component(tmp_path: Path) -> None:
    path = tmp_path / "teleport.log"
    logs.configure(str(path), "INFO", "text", debug=False)
    logging.getLogger("teleport.auth").info("Auth service is starting on %s.", "0.0.0.0:3025")
    logging.getLogger("teleport").warning("process warning")
    logging.getLogger("teleport.node").debug("hidden at INFO")
    assert path.read_text().splitlines() == [
        "INFO [AUTH] Auth service is starting on 0.0.0.0:3025.", "WARN [PROC] process warning"]


def test_debug_flag_and_json_format(tmp_path: Path) -> None:
    path = tmp_path / "teleport.log"
    logs.configure(str(path), "ERROR", "json", debug=True)
    logging.getLogger("teleport.proxy").debug("routing %s", "node1")
    entry = json.loads(path.read_text())
    assert entry["level"] == "debu" and entry["component"] == "PROXY"
    assert entry["message"] == "routing node1" and entry["time"].endswith("Z")


def test_dump_ignores_severity(tmp_path: Path) -> None:
    path = tmp_path / "teleport.log"
    logs.configure(str(path), "ERROR", "text", debug=False)
    logging.getLogger("teleport").info("not shown")
    logs.dump("diagnostics: 3 tasks")
    assert path.read_text() == "INFO [PROC] diagnostics: 3 tasks\n"


def test_bad_output_and_severity_are_one_line_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BadParameter, match="cannot open log file"):
        logs.configure(str(blocker / "x.log"), "INFO", "text", debug=False)
    with pytest.raises(BadParameter, match="unknown log severity"):
        logs.configure("stderr", "LOUD", "text", debug=False)
