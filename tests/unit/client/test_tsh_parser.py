"""`tsh` builds only the subcommand parsers a command line names, and parses it as before.

Issue 20: building all fourteen subparsers cost as much as the rest of `tsh ls`'s argument
handling. Help and command lines that name no command still see every command.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from teleport.cli import tsh

LINES = [
    ["ls"], ["ls", "env=prod", "--cluster", "leaf"], ["--proxy", "p:3080", "ls"],
    ["ssh", "-t", "root@node", "ls", "-l"], ["--user", "ls", "ssh", "node"],
    ["scp", "-r", "a", "node:/tmp"], ["recordings", "ls"], ["sessions", "ls", "--cluster", "x"],
    ["mfa", "add", "--name", "key"], ["login", "--ttl", "2h", "--auth", "github"],
    ["--insecure", "play", "--speed", "2", "sid-1"], ["status"], ["version"], ["join", "sid"],
]


def _full_parser() -> argparse.ArgumentParser:
    return tsh._parser(["--help"])  # help needs every command: the full parser


@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_a_command_line_parses_as_with_every_command_built(argv: list[str]) -> None:
    assert tsh._parser(argv).parse_args(argv) == _full_parser().parse_args(argv)


def test_only_the_named_commands_are_built() -> None:
    choices = tsh._parser(["ssh", "node", "ls"])._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(choices) == ["ls", "ssh"]


@pytest.mark.parametrize("argv", [[], ["--help"], ["lss"], ["ls", "-h"]])
def test_help_and_unknown_commands_list_every_command(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", "from teleport.cli.tsh import main; main()",
                             *argv], capture_output=True, text=True, timeout=60)
    shown = result.stdout + result.stderr
    if argv == ["ls", "-h"]:  # the subcommand's own help
        assert "--cluster" in shown and result.returncode == 0
        return
    assert all(name in shown for name in tsh.COMMANDS), shown
