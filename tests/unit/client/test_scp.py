"""`tsh scp` arguments: which side is remote, how remote paths reach the login's shell."""

from __future__ import annotations

import shlex

import pytest

from teleport.client.scp import ProgressBar, Remote, parse_remote, plan, remote_path
from teleport.errors import BadParameter


@pytest.mark.parametrize(("spec", "expected"), [
    ("root@node:/tmp/x", Remote("root", "node", "/tmp/x")),
    ("node:", Remote("me", "node", "")),
    ("root@env=prod,team=a:/x", Remote("root", "env=prod,team=a", "/x")),
    ("root@[::1]:/x", Remote("root", "[::1]", "/x")),
    ("./a:b", None), ("/abs:x", None), ("file.txt", None),
])
def test_remote_locations_are_read_as_scp_reads_them(spec: str, expected: Remote | None) -> None:
    assert parse_remote(spec, "me") == expected


@pytest.mark.parametrize("spec", ["@node:x", "a@b@c:x"])
def test_a_malformed_remote_location_is_a_clear_error(spec: str) -> None:
    with pytest.raises(BadParameter, match="expected \\[login@\\]host:path"):
        parse_remote(spec, "me")


def test_remote_paths_are_one_shell_word_and_keep_the_home() -> None:
    assert remote_path("") == "."
    assert remote_path("~") == "~"
    assert remote_path("~/a b") == "~/'a b'"
    for hostile in ["a b", "x; touch /tmp/pwned", "$(id)", "*.log", "-rf"]:
        assert shlex.split(remote_path(hostile)) == [hostile]


def test_the_direction_comes_from_which_side_is_remote() -> None:
    up = plan(["a", "b", "root@node:/dst"], "me")
    assert (up.upload, up.login, up.host, up.local, up.remote) == (True, "root", "node", ("a", "b"), ("/dst",))
    down = plan(["node:/x", "node:/y", "."], "me")
    assert (down.upload, down.login, down.local, down.remote) == (False, "me", (".",), ("/x", "/y"))


@pytest.mark.parametrize(("paths", "message"), [
    (["only"], "usage: tsh scp"),
    (["a", "b"], "one side of the copy must be remote"),
    (["n1:/a", "n2:/b"], "copying between two remote locations"),
    (["n1:/a", "root@n1:/b", "."], "same node with the same login"),
    (["n1:/a", "local", "."], "one side of the copy must be remote"),
])
def test_copies_scp_cannot_do_here_are_refused(paths: list[str], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        plan(paths, "me")


def test_the_progress_bar_ends_each_file_on_its_own_line() -> None:
    import os

    read, write = os.pipe()
    bar = ProgressBar(write)
    bar(b"/src/big.bin", b"dst", 0, 2 << 20)
    bar(b"/src/big.bin", b"dst", 2 << 20, 2 << 20)
    bar(b"/src/empty", b"dst", 0, 0)
    os.close(write)
    drawn = os.read(read, 65536).decode()
    os.close(read)
    lines = [frame.split("\x1b[K")[0] for frame in drawn.split("\r") if frame.strip()]
    assert lines[0].startswith("big.bin   0% |") and "(0.0/2.0 MB, " in lines[0]
    assert lines[1].startswith("big.bin 100% |" + "█" * 10)
    assert lines[2].startswith("empty 100% |")
    assert drawn.count("\n") == 2
