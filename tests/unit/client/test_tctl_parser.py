"""`tctl` builds only the subcommand parsers a command line names, imports only their modules,
and parses it as before.

Issue 20: the resource commands' module loads every resource model (pydantic), which `tctl
nodes ls` and `users ls` do not need. Help and command lines that name no command still see
every command.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from teleport.cli import tctl

LINES = [
    ["nodes", "ls"], ["-c", "/etc/t.yaml", "users", "ls"], ["--data-dir", "/d", "status"],
    ["users", "add", "bob", "root", "--roles", "access,editor", "--ttl", "2h"],
    ["users", "update", "bob", "--set-roles", "x"], ["get", "role/dev", "--format", "json"],
    ["get", "users"], ["create", "-f", "file.yaml"], ["rm", "role/dev"],
    ["lock", "--user", "bob", "--ttl", "1h"], ["tokens", "add", "--type", "node"],
    ["tokens", "rm", "tok"], ["nodes", "add", "--roles", "node,proxy"],
    ["auth", "rotate", "--manual", "--phase", "init"], ["auth", "export", "--type", "tls"],
    ["audit", "events", "--since", "1h", "--format", "json"], ["version"],
]


def _full_parser() -> argparse.ArgumentParser:
    return tctl._parser(["--help"])  # help needs every command: the full parser


@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_a_command_line_parses_as_with_every_command_built(argv: list[str]) -> None:
    assert tctl._parser(argv).parse_args(argv) == _full_parser().parse_args(argv)


def test_listing_nodes_or_users_imports_no_resource_model() -> None:
    probe = ("import sys; from teleport.cli import tctl; "
             "[tctl._parser(argv).parse_args(argv) for argv in (['nodes', 'ls'], ['users', 'ls'])]; "
             "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'teleport.types.'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


@pytest.mark.parametrize("argv", [[], ["--help"], ["nodse"], ["nodes"]])
def test_help_and_unknown_commands_list_every_command(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", "from teleport.cli.tctl import main; raise SystemExit(main())",
                             *argv], capture_output=True, text=True, timeout=60)
    shown = result.stdout + result.stderr
    assert result.returncode == (0 if argv == ["--help"] else 2)
    assert all(name in shown for name in tctl.COMMANDS), shown
