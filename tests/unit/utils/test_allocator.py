"""`teleport start` runs on jemalloc (teleport.utils.allocator): the program executes itself
again, arguments and all, unless the operator chose an allocator; what it starts in turn
inherits the operator's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Asks for jemalloc, then prints whether it runs on it, the PYTHONMALLOC and MALLOC_CONF its
#: interpreter started with, the ones its children would inherit, and its arguments.
_PROGRAM = """\
import os, sys
from teleport.utils.allocator import exec_on_jemalloc
exec_on_jemalloc()
started = dict(entry.split(b"=", 1) for entry in open("/proc/self/environ", "rb").read().split(b"\\0")
               if b"=" in entry)
mapped = "libjemalloc" in open("/proc/self/maps").read()
print(mapped, started.get(b"PYTHONMALLOC", b"-").decode(), started.get(b"MALLOC_CONF", b"-").decode(),
      os.environ.get("PYTHONMALLOC", "-"), os.environ.get("MALLOC_CONF", "-"),
      os.environ.get("LD_PRELOAD", "-"), sys.argv[1:])
"""

def _run(tmp_path: Path, **env: str) -> str:
    program = tmp_path / "program.py"
    program.write_text(_PROGRAM)
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONMALLOC", "LD_PRELOAD", "MALLOC_CONF")}
    return subprocess.run([sys.executable, str(program), "start", "-c", "x.yaml"],
                          env={**base, **env}, capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_the_program_runs_again_once_on_jemalloc_with_its_arguments(tmp_path: Path) -> None:
    assert _run(tmp_path) == (
        "True malloc background_thread:true - - - ['start', '-c', 'x.yaml']\n")


def test_the_operators_jemalloc_tuning_is_kept_and_inherited(tmp_path: Path) -> None:
    assert _run(tmp_path, MALLOC_CONF="dirty_decay_ms:1000") == (
        "True malloc dirty_decay_ms:1000 - dirty_decay_ms:1000 - ['start', '-c', 'x.yaml']\n")


def test_an_allocator_the_operator_chose_is_kept_and_inherited(tmp_path: Path) -> None:
    assert _run(tmp_path, PYTHONMALLOC="pymalloc") == (
        "False pymalloc - pymalloc - - ['start', '-c', 'x.yaml']\n")
