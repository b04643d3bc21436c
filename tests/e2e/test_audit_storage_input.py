"""Audit storage that cannot be used stops `teleport start` with one line naming it.

A URI no sink takes as written: exit 2, naming the URI. The first (searched) sink unreachable:
exit 1, naming where, never a password. Sinks after the first are opened on their first event,
so one that is down does not stop the start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cloud_servers import aws_env
from tests.e2e.test_storage_input import start

SECRET = "pw-not-in-any-message"


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aws_env().items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(("storage", "expected"), [
    ("    audit_sessions_uri: 's3://bucket/records?colour=red'\n",
     "audit_sessions_uri 's3://bucket/records?colour=red': unknown option 'colour'"),
    ("    audit_sessions_uri: 'ftp://bucket/records'\n",
     "audit_sessions_uri 'ftp://bucket/records': unsupported scheme"),
    ("    audit_events_uri: ['firestore://events']\n",
     "audit_events_uri 'firestore://events': Firestore is not supported yet"),
    ("    audit_events_uri: ['file:///tmp/x', 'dynamodb://t?region=us-east-1&ttl=1']\n",
     "audit_events_uri 'dynamodb://t?region=us-east-1&ttl=1'"),
    ("    audit_events_uri: ['stdout://', 'file:///tmp/x']\n",
     "the first URI is the one searched"),
    ("    audit_events_uri: ['postgresql://teleport@db/x?retention_period=soon']\n",
     "retention_period"),
])
def test_a_wrong_audit_uri_is_exit_2_naming_it(tmp_path: Path, storage: str,
                                               expected: str) -> None:
    code, line = start(tmp_path, storage)
    assert code == 2 and expected in line, line


def test_an_unreachable_first_sink_is_exit_1_without_the_password(tmp_path: Path) -> None:
    code, line = start(tmp_path, "    audit_events_uri: "
                       f"['postgresql://teleport:{SECRET}@127.0.0.1:1/audit']\n")
    assert code == 1 and "127.0.0.1:1" in line and SECRET not in line, line
    code, line = start(tmp_path, "    audit_events_uri: "
                       "['dynamodb://events?endpoint=http://127.0.0.1:1&region=us-east-1']\n")
    assert code == 1 and "events" in line, line
