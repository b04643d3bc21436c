"""`tctl` reads what it needs of teleport.yaml (data directory, auth servers) from a cache entry
keyed by the file's content, and validates the whole file whenever that content is new.

Issue 20: validating the file builds the schema's pydantic models, more than everything else
`tctl nodes ls` does. A mistake must still be the same one line, and a changed file must never
be answered from an old entry.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from teleport.config import admin, runtime
from teleport.config.admin import AdminTarget, admin_target
from teleport.errors import BadParameter


def _config(path: Path, data_dir: Path, listen: str = "127.0.0.1:4025") -> Path:
    path.write_text(f"teleport:\n  data_dir: {data_dir}\nauth_service:\n  enabled: true\n"
                    f"  listen_addr: {listen}\nproxy_service:\n  enabled: false\n"
                    "ssh_service:\n  enabled: false\n")
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "teleport" / "config"


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.exists() else []


def test_the_first_call_validates_and_keeps_the_answer_private(tmp_path: Path, cache: Path) -> None:
    config = _config(tmp_path / "teleport.yaml", tmp_path / "data", "0.0.0.0:4025")
    assert admin_target(str(config), None) == AdminTarget(str(tmp_path / "data"), ["127.0.0.1:4025"])
    (entry,) = _entries(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert admin_target(str(config), None) == AdminTarget(str(tmp_path / "data"), ["127.0.0.1:4025"])


def test_a_known_file_is_read_without_the_schema(tmp_path: Path, cache: Path) -> None:
    config = _config(tmp_path / "teleport.yaml", tmp_path / "data")
    admin_target(str(config), None)
    probe = ("import sys; from teleport.config.admin import admin_target; "
             f"print(admin_target({str(config)!r}, None)); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'yaml'}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "XDG_CACHE_HOME": str(cache.parent.parent)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"AdminTarget(data_dir='{tmp_path / 'data'}', auth_addrs=['127.0.0.1:4025'])", "[]"]


def test_a_changed_file_is_validated_again(tmp_path: Path, cache: Path) -> None:
    config = _config(tmp_path / "teleport.yaml", tmp_path / "data")
    admin_target(str(config), None)
    _config(config, tmp_path / "other", "127.0.0.1:5025")
    assert admin_target(str(config), None) == AdminTarget(str(tmp_path / "other"), ["127.0.0.1:5025"])
    config.write_text(config.read_text() + "auth_servic:\n  enabled: true\n")
    with pytest.raises(BadParameter, match=r"teleport.yaml:10: auth_servic: unknown key"):
        admin_target(str(config), None)
    assert len(_entries(cache)) == 2  # a file with a mistake is never kept


def test_the_data_dir_flag_is_part_of_the_key(tmp_path: Path, cache: Path) -> None:
    config = _config(tmp_path / "teleport.yaml", tmp_path / "data")
    assert admin_target(str(config), None).data_dir == str(tmp_path / "data")
    assert admin_target(str(config), str(tmp_path / "flag")).data_dir == str(tmp_path / "flag")
    assert admin_target(str(config), None).data_dir == str(tmp_path / "data")


def test_a_missing_file_named_by_the_flag_is_an_error_though_the_defaults_are_known(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (admin, runtime):
        monkeypatch.setattr(module, "DEFAULT_CONFIG_PATH", tmp_path / "absent.yaml")
    assert admin_target(None, None).data_dir == "/var/lib/teleport"
    with pytest.raises(BadParameter, match="config file not found"):
        admin_target(str(tmp_path / "absent.yaml"), None)


@pytest.mark.parametrize("content", [b"not json", b'{"data_dir": 1, "auth_addrs": []}', b"{}"])
def test_a_damaged_entry_is_replaced(tmp_path: Path, cache: Path, content: bytes) -> None:
    config = _config(tmp_path / "teleport.yaml", tmp_path / "data")
    admin_target(str(config), None)
    (entry,) = _entries(cache)
    entry.write_bytes(content)
    assert admin_target(str(config), None).data_dir == str(tmp_path / "data")
    assert json.loads(entry.read_bytes())["data_dir"] == str(tmp_path / "data")


def test_a_cache_that_cannot_be_written_costs_only_the_validation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    config = _config(tmp_path / "teleport.yaml", tmp_path / "data")
    assert admin_target(str(config), None).data_dir == str(tmp_path / "data")
