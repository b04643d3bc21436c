"""The `dir` audit log (day files) passes the conformance checks every searchable log must."""

from __future__ import annotations

from pathlib import Path

import pytest

from teleport.events.filelog import FileLog
from tests.audit_conformance import AuditLogConformance, OpenLog


class TestFileLog(AuditLogConformance):
    @pytest.fixture
    def open_log(self, tmp_path: Path) -> OpenLog:
        async def open_() -> FileLog:
            return FileLog(tmp_path / "log")
        return open_
