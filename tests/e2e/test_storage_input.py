"""A store that cannot be used stops `teleport start` with one line naming it (issue 16).

Unreachable: exit 1, the address and the error. A wrong setting (a prefix without its '/', a
missing TLS file) or a refused login: one line naming the setting or the user, never the password: exit 2.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import BIN
from tests.postgres_server import PostgresServer

SECRET = "pw-not-in-any-message"


def start(tmp_path: Path, storage: str) -> tuple[int, str]:
    config = tmp_path / "teleport.yaml"
    config.write_text(f"""\
teleport:
  data_dir: {tmp_path / "data"}
  storage:
{storage}auth_service: {{enabled: yes, listen_addr: 127.0.0.1:0, cluster_name: store.test}}
ssh_service: {{enabled: no}}
proxy_service: {{enabled: no}}
""")
    out = subprocess.run([str(BIN / "teleport"), "start", "-c", str(config)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return out.returncode, lines[0]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def test_unreachable_etcd_is_one_line_naming_the_address(tmp_path: Path) -> None:
    code, line = start(tmp_path, "    type: etcd\n    peers: ['http://127.0.0.1:1']\n")
    assert code == 1
    assert "etcd at http://127.0.0.1:1 is unreachable" in line and "refused" in line


def test_unreachable_postgresql_is_one_line_without_the_password(tmp_path: Path) -> None:
    code, line = start(tmp_path, "    type: postgresql\n"
                       f"    conn_string: postgresql://teleport:{SECRET}@127.0.0.1:1/teleport\n")
    assert code == 1
    assert "127.0.0.1:1 is unreachable" in line and SECRET not in line


def test_wrong_postgresql_password_names_the_user_not_the_password(
        tmp_path: Path, postgres: PostgresServer) -> None:
    dsn = postgres.dsn(postgres.create_database(), password=SECRET)
    code, line = start(tmp_path, f"    type: postgresql\n    conn_string: '{dsn}'\n")
    assert code == 2
    assert "refused user 'teleport'" in line and SECRET not in line, line


@pytest.mark.parametrize("storage, expected", [
    ("    type: etcd\n    peers: ['http://127.0.0.1:1']\n    prefix: /teleport\n",
     "prefix '/teleport' must start and end with '/'"),
    ("    type: etcd\n    peers: ['http://127.0.0.1:1']\n    tls_ca_file: /nonexistent/ca.pem\n",
     "storage.tls_ca_file: cannot read /nonexistent/ca.pem"),
])
def test_a_wrong_setting_is_exit_2_naming_it(tmp_path: Path, storage: str, expected: str) -> None:
    code, line = start(tmp_path, storage)
    assert code == 2 and expected in line, line
