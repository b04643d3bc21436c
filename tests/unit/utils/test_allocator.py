"""`teleport start` runs on the C library's allocator (teleport.utils.allocator): the program
executes itself again, arguments and all, unless the operator chose an allocator; what it
starts in turn inherits the operator's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Asks for the C allocator, then prints the PYTHONMALLOC its interpreter started with (the
#: allocator it runs on), the one its children would inherit, and its arguments.
_PROGRAM = """\
import os, sys
from teleport.utils.allocator import exec_on_c_allocator
exec_on_c_allocator()
started = dict(entry.split(b"=", 1) for entry in open("/proc/self/environ", "rb").read().split(b"\\0")
               if b"=" in entry)
print(started.get(b"PYTHONMALLOC", b"-").decode(), os.environ.get("PYTHONMALLOC", "-"), sys.argv[1:])
"""


def _run(tmp_path: Path, **env: str) -> str:
    program = tmp_path / "program.py"
    program.write_text(_PROGRAM)
    base = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    return subprocess.run([sys.executable, str(program), "start", "-c", "x.yaml"],
                          env={**base, **env}, capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_the_program_runs_again_once_on_the_c_allocator_with_its_arguments(
        tmp_path: Path) -> None:
    assert _run(tmp_path) == "malloc - ['start', '-c', 'x.yaml']\n"


def test_an_allocator_the_operator_chose_is_kept_and_inherited(tmp_path: Path) -> None:
    assert _run(tmp_path, PYTHONMALLOC="pymalloc") == "pymalloc pymalloc ['start', '-c', 'x.yaml']\n"
