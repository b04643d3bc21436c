from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.browser import browser as browser  # the headless Chromium fixture
from tests.e2e.cluster import Cluster, make_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One teleport process (auth + proxy + node) for a test module, stopped afterwards."""
    c = make_cluster(tmp_path_factory.mktemp("cluster"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def joe(cluster: Cluster) -> dict[str, object]:
    """A signed-up and logged-in user joe with logins joe and root."""
    password = "correct horse battery"
    totp = cluster.signup("joe", "joe,root", password)
    cluster.login("joe", password, totp)
    return {"password": password, "totp": totp}


@pytest.fixture(scope="module")
def os_joe() -> Iterator[pwd.struct_passwd]:
    """The OS account `joe` (created if missing, removed afterwards if we created it)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating OS users needs root and useradd")
    try:
        yield pwd.getpwnam("joe")
        return
    except KeyError:
        pass
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "joe"], check=True,
                   capture_output=True)
    try:
        yield pwd.getpwnam("joe")
    finally:
        subprocess.run(["userdel", "--remove", "--force", "joe"], capture_output=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.timeout(180))
