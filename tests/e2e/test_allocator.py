"""`teleport start` runs on jemalloc (teleport.utils.allocator): the program executes itself
again under the same pid, and what it starts inherits none of that."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster import Cluster, make_cluster

#: A dynamic label whose command the daemon runs: how many of the variables the daemon set for
#: itself the command sees.
INHERITED = ["sh", "-c", "env | grep -c -E '^(LD_PRELOAD|PYTHONMALLOC|MALLOC_CONF|TELEPORT_EXEC)'; true"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = make_cluster(tmp_path_factory.mktemp("allocator"))
    data = yaml.safe_load(cluster.config.read_text())
    data["ssh_service"]["commands"] = [{"name": "inherited", "command": INHERITED,
                                        "period": "1h"}]
    cluster.config.write_text(yaml.safe_dump(data, sort_keys=False))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_the_daemon_runs_on_jemalloc_under_the_pid_it_started_with(labelled: Cluster) -> None:
    assert labelled.process is not None
    pid = labelled.process.pid
    assert "/libjemalloc.so.2" in Path(f"/proc/{pid}/maps").read_text()
    started_with = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"PYTHONMALLOC=malloc" in started_with  # Python's objects use it too
    assert int((labelled.root / "teleport.pid").read_text()) == pid


def test_what_the_daemon_runs_inherits_none_of_its_allocator_settings(labelled: Cluster) -> None:
    deadline = time.monotonic() + 30
    while not (value := re.search(r"inherited=(\S+)", labelled.tctl("nodes", "ls").stdout)):
        assert time.monotonic() < deadline, "the label command's value never came"
        time.sleep(0.5)
    assert value[1] == "0"
